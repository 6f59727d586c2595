//! The handlers, by audience: buyers, admins, and operations (health, readiness, metrics).
//! Handlers translate between HTTP and the service; the service decides. Their
//! `#[utoipa::path]` annotations feed the OpenAPI document, which is the only module that
//! looks at all of them.

pub mod admin;
pub mod buyers;
pub mod events;
pub mod line;
pub mod operations;

use crate::error::ApiError;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

type AppResult<T> = Result<T, ApiError>;

/// Answers that must not be kept by any cache: they are per buyer or change by the second.
fn no_store<T: IntoResponse>(body: T) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
