//! The performance peer: an axum hello-world served by the same accept loop, runtime and
//! limits as flashsale, so a ratio against it measures flashsale's own work.
//!
//! `cargo run --release --example hello -- 127.0.0.1:8090`

use axum::Router;
use axum::routing::{get, post};
use flashsale_http::ConnectionLimits;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let app = Router::new()
        .route("/", get(|| async { "Hello, World!" }))
        .route("/{*path}", post(|| async { "Hello, World!" }));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("hello peer on {addr}");
    flashsale_http::serve(
        listener,
        app,
        ConnectionLimits::default(),
        CancellationToken::new(),
    )
    .await;
    Ok(())
}
