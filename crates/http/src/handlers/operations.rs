//! Handlers for operations: liveness, readiness and the Prometheus metrics.

use super::no_store;
use crate::AppState;
use crate::error::ApiError;
use crate::wire::{ErrorBody, HealthBody};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The process is up.", body = HealthBody, headers(("Cache-Control" = String, description = "`no-store`"))),
    )
)]
pub async fn healthz() -> Response {
    no_store(Json(serde_json::json!({ "status": "ok" })))
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Recovered and not shutting down: ready for traffic.", body = HealthBody, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 503, description = "`unavailable`: still recovering or shutting down.", body = ErrorBody),
    )
)]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.shop.is_ready() {
        no_store(Json(serde_json::json!({ "status": "ready" })))
    } else {
        ApiError::Unavailable.into_response()
    }
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition format: request counters per \
            filtering layer and outcome, queue depth, writers, writer lag, latency histograms.",
            content_type = "text/plain; version=0.0.4", body = String),
    )
)]
pub async fn render_metrics(State(state): State<Arc<AppState>>) -> Response {
    metrics::gauge!("flashsale_queue_depth").set(state.shop.queue_depth() as f64);
    metrics::gauge!("flashsale_writers").set(state.shop.writer_count() as f64);
    let body = state.metrics.render();
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}
