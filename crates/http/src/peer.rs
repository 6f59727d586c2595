//! The performance peer: an axum hello-world that answers every request the load generator
//! sends, served by the same accept loop and limits as flashsale, so a ratio against it
//! measures flashsale's own work. Used by `examples/hello.rs` and `flashsale bench --peer`.

use crate::server::{ConnectionLimits, serve};
use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const HELLO: &str = "Hello, World!";

/// `GET /` and `POST` to any path answer "Hello, World!".
pub fn hello_router() -> Router {
    Router::new()
        .route("/", get(|| async { HELLO }))
        .route("/{*path}", post(|| async { HELLO }).get(|| async { HELLO }))
}

/// Serves the hello peer on `listener` with flashsale's default connection limits until
/// `shutdown` fires.
pub async fn serve_hello(listener: TcpListener, shutdown: CancellationToken) {
    serve(
        listener,
        hello_router(),
        ConnectionLimits::default(),
        shutdown,
    )
    .await;
}
