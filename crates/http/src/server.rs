//! The accept loop: every connection is bounded in number, in header time and in buffer
//! size, and a shutdown signal stops accepting and lets open requests finish.
//!
//! `axum::serve` installs no header-read timer (a slowloris holds a connection forever), so
//! this loop drives hyper's HTTP/1 connection directly with a timer and a header deadline.

use crate::error::{RETRY_AFTER_SECS, error_body};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Bounds on connections: the connection half of `HttpConfig` (`[http]` in the config file).
pub type ConnectionLimits = crate::HttpConfig;

/// The server's shutdown signal, put on every request by `serve` so long-lived responses (the
/// admin event stream) can end when it fires.
#[derive(Clone)]
pub struct ShutdownSignal(pub CancellationToken);

/// Serves `app` on `listener` until `shutdown` fires, then waits (bounded) for open requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.connections_max.get()));
    let tracker = TaskTracker::new();
    let limits = Arc::new(limits);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Over the connection cap: answer at once and close, rather than letting the
            // kernel backlog turn into a silent queue.
            tracker.spawn(refuse(stream));
            continue;
        };
        let app = app.clone();
        let limits = limits.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            // The peer address rides on each request for the per-client limiter, and the
            // shutdown signal for responses that stream (they end when it fires).
            let signal = ShutdownSignal(shutdown.clone());
            let app = app.map_request(
                move |mut request: axum::http::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    request.extensions_mut().insert(signal.clone());
                    request
                },
            );
            let service = TowerToHyperService::new(app);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms.get()))
                .max_buf_size(limits.header_bytes_max.max(8192))
                .max_headers(limits.headers_count_max.get());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    tracker.close();
    let grace = Duration::from_millis(limits.shutdown_grace_ms);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}

async fn refuse(mut stream: tokio::net::TcpStream) {
    let body = error_body(
        "overloaded",
        "too many open connections; retry after the given delay",
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {RETRY_AFTER_SECS}\r\ncache-control: no-store\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}
