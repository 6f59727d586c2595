//! The HTTP edge of flashsale: routes, extractors, the error table, the sale page and the
//! bounded accept loop. This is the only crate that knows HTTP.

pub mod error;
pub mod extract;
mod pages;
mod routes;
pub mod server;

use axum::Router;
use flashsale_core::tokens::BuyerTokens;
use flashsale_service::Shop;
use secrecy::SecretString;
use std::sync::Arc;

pub use error::ApiError;
pub use server::{ConnectionLimits, serve};

/// Bounds on single requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest request body on any route.
    pub body_bytes_max: usize,
    /// Longest time one request may take before it is answered with 503 `timeout`.
    pub request_timeout_ms: u64,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            body_bytes_max: 4096,
            request_timeout_ms: 10_000,
        }
    }
}

/// What the handlers share.
pub struct AppState {
    pub shop: Arc<Shop>,
    pub buyer_tokens: BuyerTokens,
    pub admin_token: SecretString,
    /// Whether `POST /api/dev/buyer-token` issues tokens (demos and tests only).
    pub dev_login: bool,
    pub limits: RequestLimits,
}

/// The whole application as one axum router.
pub fn router(state: AppState) -> Router {
    routes::router(Arc::new(state))
}
