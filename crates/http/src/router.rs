//! The router: every route with its handler, and the layers around them (latency histograms,
//! body limit, panic catcher, request timeout).

use crate::AppState;
use crate::error::ApiError;
use crate::handlers::{admin, buyers, events, line, operations};
use crate::openapi;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Router};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

pub fn router(state: Arc<AppState>) -> Router {
    let mut api = Router::new()
        .route("/healthz", get(operations::healthz))
        .route("/readyz", get(operations::readyz))
        .route("/api/openapi.json", get(openapi::openapi_json))
        .route("/sales/{id}", get(buyers::sale_page))
        .route("/admin", get(admin::dashboard))
        .route("/api/sales/{id}/status", get(buyers::sale_status))
        .route("/api/sales/{id}/buy/{token}", post(buyers::buy))
        .route("/api/sales/{id}/line", post(line::join))
        .route("/api/sales/{id}/line/me", get(line::me))
        .route("/api/sales/{id}/line/challenge", get(line::challenge))
        .route("/api/sales/{id}/line/log", get(line::log))
        .route("/api/admin/sales/{id}/line", post(line::control))
        .route("/api/orders/{id}", get(buyers::get_order))
        .route("/api/orders/{id}/pay", post(buyers::pay))
        .route(
            "/api/admin/sales",
            post(admin::create_sale).get(admin::list_sales),
        )
        .route(
            "/api/admin/sales/{id}",
            get(admin::get_sale).patch(admin::patch_sale),
        )
        .route("/api/admin/sales/{id}/start", post(admin::start_sale))
        .route("/api/admin/sales/{id}/stop", post(admin::stop_sale))
        .route("/api/admin/sales/{id}/orders", get(admin::recent_orders))
        .route(
            "/api/admin/writers",
            get(admin::get_writers).put(admin::put_writers),
        )
        .route("/api/admin/sales/{id}/events", get(events::sale_events))
        .route("/metrics", get(operations::render_metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            record_latency,
        ));
    if state.dev_login {
        api = api.route("/api/dev/buyer-token", post(buyers::dev_buyer_token));
    }
    let timeout = Duration::from_millis(state.limits.request_timeout_ms.get());
    api.fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.limits.body_bytes_max.get()))
        .layer(
            ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(|_| {
                    tracing::error!("a handler panicked");
                    ApiError::Internal.into_response()
                }))
                .layer(HandleErrorLayer::new(|error: BoxError| async move {
                    if error.is::<tower::timeout::error::Elapsed>() {
                        ApiError::Timeout
                    } else {
                        tracing::error!(%error, "middleware failed");
                        ApiError::Internal
                    }
                }))
                .timeout(timeout),
        )
        .with_state(state)
}

/// Middleware: records each request's latency under its route.
async fn record_latency(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let histogram = match request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
    {
        Some("/api/sales/{id}/buy/{token}") => &state.histograms.buy,
        Some("/api/sales/{id}/status") => &state.histograms.status,
        _ => &state.histograms.other,
    };
    let response = next.run(request).await;
    histogram.record(started.elapsed().as_secs_f64());
    response
}
