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
use std::sync::Arc;

pub use error::ApiError;
pub use handlers::events;
pub use server::{ConnectionLimits, serve};
pub use state::AppState;

/// Bounds on single requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest request body on any route.
    pub body_bytes_max: usize,
    /// Longest time one request may take before it is answered with 503 `timeout`.
    pub request_timeout_ms: u64,
    /// Longest time a client may take to send a request body once its headers are in; past it
    /// the answer is 408 (the client's doing, so not a 5xx).
    pub body_read_timeout_ms: u64,
    /// Admin event streams open at once on this node (each costs a store query a second).
    pub event_streams_max: usize,
    /// Longest life of one event stream; the dashboard then opens a new one.
    pub event_stream_secs_max: u64,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            body_bytes_max: 4096,
            request_timeout_ms: 10_000,
            body_read_timeout_ms: 5_000,
            event_streams_max: 4,
            event_stream_secs_max: 3600,
        }
    }
}

/// The whole application as one axum router.
pub fn router(state: AppState) -> Router {
    router::router(Arc::new(state))
}
