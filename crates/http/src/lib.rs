//! The HTTP edge of flashsale: routes, extractors, the error table, the sale page, the admin
//! dashboard with its event stream, and the bounded accept loop. This is the only crate that knows HTTP.

pub mod error;
pub mod extract;
mod handlers;
pub mod metrics;
pub mod openapi;
mod pages;
pub mod peer;
mod read_cache;
mod router;
pub mod server;
mod state;
pub mod wire;

use axum::Router;
use serde::{Deserialize, Serialize};
use std::num::{NonZeroU64, NonZeroUsize};
use std::sync::Arc;

pub use error::ApiError;
pub use handlers::events;
pub use server::{ConnectionLimits, serve};
pub use state::AppState;

/// `[http]`: bounds on connections (read by the accept loop, `server::serve`) and on single
/// requests (read by the handlers through `AppState::limits`). One type because the config
/// file states them as one section; `ConnectionLimits` and `RequestLimits` name the two uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Open connections at once; past it a new connection gets a 503 and is closed.
    pub connections_max: NonZeroUsize,
    /// Time a client has to send a request's headers (also bounds an idle keep-alive).
    pub header_read_timeout_ms: NonZeroU64,
    /// Bytes of buffered request head (line plus headers).
    pub header_bytes_max: usize,
    /// Headers in one request.
    pub headers_count_max: NonZeroUsize,
    /// Largest request body on any route.
    pub body_bytes_max: NonZeroUsize,
    /// Longest time one request may take before it is answered with 503 `timeout`.
    pub request_timeout_ms: NonZeroU64,
    /// Longest time a client may take to send a request body once its headers are in; past it
    /// the answer is 408 (the client's doing, so not a 5xx).
    pub body_read_timeout_ms: NonZeroU64,
    /// Admin event streams open at once on this node (each costs a store query a second).
    pub event_streams_max: NonZeroUsize,
    /// Longest life of one event stream; the dashboard then opens a new one.
    pub event_stream_secs_max: NonZeroU64,
    /// How long shutdown waits for open requests to finish.
    pub shutdown_grace_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            connections_max: NonZeroUsize::new(4096).expect("not zero"),
            header_read_timeout_ms: NonZeroU64::new(5000).expect("not zero"),
            header_bytes_max: 16 * 1024,
            headers_count_max: NonZeroUsize::new(64).expect("not zero"),
            body_bytes_max: NonZeroUsize::new(4096).expect("not zero"),
            request_timeout_ms: NonZeroU64::new(10_000).expect("not zero"),
            body_read_timeout_ms: NonZeroU64::new(5_000).expect("not zero"),
            event_streams_max: NonZeroUsize::new(4).expect("not zero"),
            event_stream_secs_max: NonZeroU64::new(3600).expect("not zero"),
            shutdown_grace_ms: 5000,
        }
    }
}

/// Bounds on single requests: the request half of `HttpConfig`.
pub type RequestLimits = HttpConfig;
/// The whole application as one axum router.
pub fn router(state: AppState) -> Router {
    router::router(Arc::new(state))
}
