//! The performance peer: an axum hello-world served by the same accept loop, runtime and
//! limits as flashsale, so a ratio against it measures flashsale's own work.
//! (`flashsale bench --peer hello` serves the same peer in-process.)
//!
//! `cargo run --release --example hello -- 127.0.0.1:8090`

use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("hello peer on {addr}");
    flashsale_http::peer::serve_hello(listener, CancellationToken::new()).await;
    Ok(())
}
