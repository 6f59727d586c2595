//! Routes and handlers. Handlers translate between HTTP and the service; the service decides.

use crate::error::ApiError;
use crate::extract::{Admin, ApiJson, Buyer, ClientAddr, IdemKey, order_id, sale_id};
use crate::openapi::{ErrorBody, HealthBody};
use crate::{AppState, pages};
use axum::error_handling::HandleErrorLayer;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Json, Router};
use flashsale_core::{BuyerId, PaymentId, Sale, SalePatch, SaleSpec, Timestamp};
use flashsale_service::writers::WRITERS_COUNT_MAX;
use flashsale_service::{
    BuyOutcome, LayerCounts, OrderView, OrderViewStatus, PayAnswer, SaleCounters, SaleStatus,
    SaleView,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::ToSchema;

type AppResult<T> = Result<T, ApiError>;

/// Lifetime of a token issued by the development login, in seconds.
const DEV_TOKEN_TTL_SECS: i64 = 24 * 3600;
/// Most recent orders shown in the admin view.
const RECENT_ORDERS_MAX: usize = 50;
/// Most orders one admin listing may ask for with `?limit=` (the bench's verdict reads them all).
const LISTED_ORDERS_MAX: usize = 10_000;

pub fn router(state: Arc<AppState>) -> Router {
    let mut api = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/openapi.json", get(crate::openapi::openapi_json))
        .route("/sales/{id}", get(sale_page))
        .route("/admin", get(dashboard))
        .route("/api/sales/{id}/status", get(sale_status))
        .route("/api/sales/{id}/buy/{token}", post(buy))
        .route("/api/orders/{id}", get(get_order))
        .route("/api/orders/{id}/pay", post(pay))
        .route("/api/admin/sales", post(create_sale).get(list_sales))
        .route("/api/admin/sales/{id}", get(get_sale).patch(patch_sale))
        .route("/api/admin/sales/{id}/start", post(start_sale))
        .route("/api/admin/sales/{id}/stop", post(stop_sale))
        .route("/api/admin/sales/{id}/orders", get(recent_orders))
        .route("/api/admin/writers", get(get_writers).put(put_writers))
        .route(
            "/api/admin/sales/{id}/events",
            get(crate::events::sale_events),
        )
        .route("/metrics", get(crate::metrics::render))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::record_latency,
        ));
    if state.dev_login {
        api = api.route("/api/dev/buyer-token", post(dev_buyer_token));
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

/// A path parameter whose rejection is a plain 404.
pub struct PathOf<T>(pub T);

impl<T, S> FromRequestParts<S> for PathOf<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| PathOf(value))
            .map_err(|_| ApiError::NotFound)
    }
}

fn no_store<T: IntoResponse>(body: T) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The process is up.", body = HealthBody, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 503, description = "`timeout`: the request took too long.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 500, description = "`internal`: a bug; the details were logged.", body = ErrorBody),
    )
)]
async fn healthz() -> Response {
    no_store(Json(serde_json::json!({ "status": "ok" })))
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Recovered and not shutting down: ready for traffic.", body = HealthBody, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 503, description = "`unavailable`: still recovering or shutting down; or `timeout`.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 500, description = "`internal`: a bug; the details were logged.", body = ErrorBody),
    )
)]
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.shop.is_ready() {
        no_store(Json(serde_json::json!({ "status": "ready" })))
    } else {
        ApiError::Unavailable.into_response()
    }
}

// ----- buyers -----

#[utoipa::path(
    get,
    path = "/sales/{id}",
    tag = "buyers",
    params(
        ("id" = String, Path, format = Uuid, description = "The sale id."),
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier answer."),
    ),
    responses(
        (status = 200, description = "The sale page, identical for every visitor; live data comes from the status endpoint.",
            content_type = "text/html", body = String,
            headers(("ETag" = String), ("Cache-Control" = String, description = "`public, max-age=5`"))),
        (status = 304, description = "Not modified: `If-None-Match` matches the current ETag.",
            headers(("ETag" = String), ("Cache-Control" = String))),
        (status = 404, description = "`not_found`: no such sale.", body = ErrorBody),
        (status = 503, description = "`timeout`: the request took too long.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 500, description = "`internal`: a bug; the details were logged.", body = ErrorBody),
    )
)]
async fn sale_page(
    State(state): State<Arc<AppState>>,
    PathOf(id): PathOf<String>,
    headers: HeaderMap,
) -> AppResult<Response> {
    let sale = state.shop.sale(sale_id(&id)?).ok_or(ApiError::NotFound)?;
    let body = state
        .read_cache
        .page(sale.id, sale.version, || pages::render(&sale).into());
    Ok(pages::sale_page(&sale, body, &headers))
}

#[utoipa::path(
    get,
    path = "/admin",
    tag = "admin",
    description = "The admin dashboard: one static page that asks for the admin token and then \
                   uses the admin API and the sale event stream.",
    params(
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier answer."),
    ),
    responses(
        (status = 200, description = "The dashboard page (HTML with its script).",
            content_type = "text/html", body = String,
            headers(("ETag" = String), ("Cache-Control" = String, description = "`no-cache`"))),
        (status = 304, description = "Not modified: `If-None-Match` matches the current ETag.",
            headers(("ETag" = String), ("Cache-Control" = String))),
        (status = 503, description = "`timeout`: the request took too long.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 500, description = "`internal`: a bug; the details were logged.", body = ErrorBody),
    )
)]
async fn dashboard(headers: HeaderMap) -> Response {
    pages::dashboard_page(&headers)
}

#[derive(Serialize, ToSchema)]
struct StatusBody {
    #[schema(format = Uuid)]
    sale_id: String,
    phase: flashsale_core::Phase,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    server_time: Timestamp,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    starts_at: Timestamp,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    ends_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    buy_path: Option<String>,
}

pub fn buy_path(status: &SaleStatus) -> Option<String> {
    status
        .buy_token
        .as_ref()
        .map(|token| format!("/api/sales/{}/buy/{token}", status.sale_id))
}

#[utoipa::path(
    get,
    path = "/api/sales/{id}/status",
    tag = "buyers",
    params(
        ("id" = String, Path, format = Uuid, description = "The sale id."),
    ),
    responses(
        (status = 200, description = "Where the sale stands now; `buy_path` only while live. Rendered at most once per short interval for everyone.", body = StatusBody,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 404, description = "`not_found`: no such sale.", body = ErrorBody),
        (status = 503, description = "`timeout`: the request took too long.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 500, description = "`internal`: a bug; the details were logged.", body = ErrorBody),
    )
)]
async fn sale_status(
    State(state): State<Arc<AppState>>,
    PathOf(id): PathOf<String>,
) -> AppResult<Response> {
    let sale = sale_id(&id)?;
    // Rendered once per interval for everyone; `server_time` is then up to that old.
    let body = state.read_cache.status(sale, || {
        let status = state.shop.status(sale)?;
        let body = StatusBody {
            sale_id: status.sale_id.to_string(),
            phase: status.phase,
            server_time: status.server_time,
            starts_at: status.starts_at,
            ends_at: status.ends_at,
            buy_path: buy_path(&status),
        };
        serde_json::to_vec(&body).ok().map(bytes::Bytes::from)
    });
    let body = body.ok_or(ApiError::NotFound)?;
    Ok(no_store((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )))
}

#[derive(Serialize, ToSchema)]
struct OrderBody {
    /// The order id (the same id the 202 named `order_id`).
    #[schema(format = Uuid)]
    id: String,
    #[schema(format = Uuid)]
    sale_id: String,
    #[schema(value_type = crate::openapi::OrderViewStatusSchema)]
    status: OrderViewStatus,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: Timestamp,
}

impl From<OrderView> for OrderBody {
    fn from(view: OrderView) -> Self {
        Self {
            id: view.id.to_string(),
            sale_id: view.sale_id.to_string(),
            status: view.status,
            expires_at: view.expires_at,
        }
    }
}

#[utoipa::path(
    post,
    path = "/api/sales/{id}/buy/{token}",
    tag = "buyers",
    security(("buyer_jwt" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "The sale id."),
        ("token" = String, Path, description = "The buy-path token, from the status endpoint's `buy_path` while live."),
        ("Idempotency-Key" = String, Header, description = "1 to 128 printable ASCII characters. The same key from the same buyer always means the same order."),
    ),
    responses(
        (status = 202, description = "Reserved, and durable in the queue; poll `GET /api/orders/{order_id}`. A retry with the same Idempotency-Key answers the same `order_id`.", body = AcceptedBody,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "`invalid_request`: the Idempotency-Key header is missing or malformed.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: the buyer token is missing, invalid or expired.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such sale, or not its current buy path.", body = ErrorBody),
        (status = 409, description = "`not_live` (not started or over), `limit_reached` (the buyer already holds the per-buyer limit) or `request_in_progress` (this Idempotency-Key is still being handled).", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Only with `request_in_progress`."))),
        (status = 410, description = "`sold_out`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: over a per-client, per-buyer or per-sale admission limit.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 503, description = "`overloaded` (load shedding: the queue or the writers are behind), `unavailable` or `timeout`.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 500, description = "`internal`: a bug; the details were logged.", body = ErrorBody),
    )
)]
async fn buy(
    State(state): State<Arc<AppState>>,
    Buyer(buyer): Buyer,
    PathOf((id, token)): PathOf<(String, String)>,
    IdemKey(key): IdemKey,
    ClientAddr(client): ClientAddr,
) -> AppResult<Response> {
    let sale = sale_id(&id)?;
    match state.shop.buy(sale, &token, &buyer, &key, client).await? {
        BuyOutcome::Accepted { order_id, replay } => {
            // A replay reports where the order stands now; a fresh accept is always queued.
            let status = if replay {
                state.shop.order(&buyer, order_id).await?.map(|v| v.status)
            } else {
                None
            };
            let body = AcceptedBody {
                order_id: order_id.to_string(),
                status: status.unwrap_or(OrderViewStatus::Queued),
            };
            Ok(no_store((StatusCode::ACCEPTED, Json(body))))
        }
        BuyOutcome::UnknownBuyPath => Err(ApiError::NotFound),
        BuyOutcome::NotLive => Err(ApiError::NotLive),
        BuyOutcome::SoldOut => Err(ApiError::SoldOut),
        BuyOutcome::LimitReached => Err(ApiError::LimitReached),
        BuyOutcome::InProgress => Err(ApiError::RequestInProgress),
        BuyOutcome::Overloaded => Err(ApiError::Overloaded),
        BuyOutcome::RateLimited { retry_after_secs } => {
            Err(ApiError::RateLimited { retry_after_secs })
        }
    }
}

/// The 202 body: the order id and where it stands; poll `GET /api/orders/{order_id}`.
#[derive(Serialize, ToSchema)]
struct AcceptedBody {
    #[schema(format = Uuid)]
    order_id: String,
    #[schema(value_type = crate::openapi::OrderViewStatusSchema)]
    status: OrderViewStatus,
}

#[utoipa::path(
    get,
    path = "/api/orders/{id}",
    tag = "buyers",
    security(("buyer_jwt" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "The order id."),
    ),
    responses(
        (status = 200, description = "The order as its buyer sees it.", body = OrderBody, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 401, description = "`unauthorized`: the buyer token is missing, invalid or expired.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such order, or another buyer's.", body = ErrorBody),
        (status = 503, description = "`unavailable` (a backend failed) or `timeout`.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 500, description = "`internal`: a bug; the details were logged.", body = ErrorBody),
    )
)]
async fn get_order(
    State(state): State<Arc<AppState>>,
    Buyer(buyer): Buyer,
    PathOf(id): PathOf<String>,
) -> AppResult<Response> {
    let view = state
        .shop
        .order(&buyer, order_id(&id)?)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(no_store(Json(OrderBody::from(view))))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PayRequest {
    payment_id: PaymentId,
}

#[utoipa::path(
    post,
    path = "/api/orders/{id}/pay",
    tag = "buyers",
    security(("buyer_jwt" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "The order id."),
    ),
    request_body = PayRequest,
    responses(
        (status = 200, description = "Paid. The same payment id again gives the same answer.", body = OrderBody, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "`invalid_request`: not valid JSON for this type, or an unknown field; the message says what.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: the buyer token is missing, invalid or expired.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such order, or another buyer's.", body = ErrorBody),
        (status = 409, description = "`order_not_written` (accepted, still being written), `payment_window_closed`, `order_cancelled` or `already_paid` (paid with another payment id).", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Only with `order_not_written`."))),
        (status = 413, description = "`payload_too_large`: the body is larger than allowed.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: send `Content-Type: application/json`.", body = ErrorBody),
        (status = 503, description = "`unavailable` (a backend failed) or `timeout`.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 500, description = "`internal`: a bug; the details were logged.", body = ErrorBody),
    )
)]
async fn pay(
    State(state): State<Arc<AppState>>,
    Buyer(buyer): Buyer,
    PathOf(id): PathOf<String>,
    ApiJson(request): ApiJson<PayRequest>,
) -> AppResult<Response> {
    match state
        .shop
        .pay(&buyer, order_id(&id)?, &request.payment_id)
        .await?
    {
        PayAnswer::Paid(view) => Ok(no_store(Json(OrderBody::from(view)))),
        PayAnswer::NotFound => Err(ApiError::NotFound),
        PayAnswer::NotYetWritten => Err(ApiError::OrderNotWritten),
        PayAnswer::Expired => Err(ApiError::PaymentWindowClosed),
        PayAnswer::Cancelled => Err(ApiError::OrderCancelled),
        PayAnswer::PaidByOtherPayment => Err(ApiError::AlreadyPaid),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DevTokenRequest {
    buyer_id: BuyerId,
}

#[derive(Serialize, ToSchema)]
struct DevTokenBody {
    token: String,
    buyer_id: BuyerId,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: Timestamp,
}

#[utoipa::path(
    post,
    path = "/api/dev/buyer-token",
    tag = "dev",
    description = "Issues a buyer JWT for any buyer id. Exists only when the server runs with the development login (`--dev-login`, demos and tests); otherwise the route is absent and answers 404.",
    request_body = DevTokenRequest,
    responses(
        (status = 200, description = "A buyer token valid for a day.", body = DevTokenBody, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "`invalid_request`: not valid JSON for this type, or an unknown field; the message says what.", body = ErrorBody),
        (status = 404, description = "`not_found`: the development login is off.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is larger than allowed.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: send `Content-Type: application/json`.", body = ErrorBody),
        (status = 503, description = "`timeout`: the request took too long.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 500, description = "`internal`: a bug; the details were logged.", body = ErrorBody),
    )
)]
async fn dev_buyer_token(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<DevTokenRequest>,
) -> Response {
    let now = state.shop.now();
    let expires_at = now + time::Duration::seconds(DEV_TOKEN_TTL_SECS);
    let token = state.buyer_tokens.issue(&request.buyer_id, now, expires_at);
    no_store(Json(DevTokenBody {
        token,
        buyer_id: request.buyer_id,
        expires_at,
    }))
}

// ----- admin -----

#[derive(Serialize, ToSchema)]
pub struct SaleBody {
    #[schema(format = Uuid)]
    id: String,
    #[serde(flatten)]
    spec: SaleSpec,
    version: u32,
    phase: flashsale_core::Phase,
    #[schema(value_type = crate::openapi::SaleCountersSchema)]
    counters: SaleCounters,
    /// What each filtering layer did for this sale on this node.
    #[schema(value_type = crate::openapi::LayerCountsSchema)]
    layers: LayerCounts,
}

impl From<SaleView> for SaleBody {
    fn from(view: SaleView) -> Self {
        let Sale { id, spec, version } = view.sale;
        Self {
            id: id.to_string(),
            spec,
            version,
            phase: view.phase,
            counters: view.counters,
            layers: view.layers,
        }
    }
}

#[utoipa::path(
    post,
    path = "/api/admin/sales",
    tag = "admin",
    security(("admin_token" = [])),
    request_body = SaleSpec,
    responses(
        (status = 201, description = "The new sale.", body = SaleBody,
            headers(("Location" = String, description = "`/api/admin/sales/{id}`"), ("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "`invalid_request`: malformed JSON, an unknown field, or a field out of range; the message names the field.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: the admin token is missing or wrong.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is larger than allowed.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: send `Content-Type: application/json`.", body = ErrorBody),
        (status = 503, description = "`unavailable` (a backend failed) or `timeout`.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 500, description = "`internal`: a bug; the details were logged.", body = ErrorBody),
    )
)]
async fn create_sale(
    State(state): State<Arc<AppState>>,
    _: Admin,
    ApiJson(spec): ApiJson<SaleSpec>,
) -> AppResult<Response> {
    let view = state.shop.create_sale(spec).await?;
    let location = format!("/api/admin/sales/{}", view.sale.id);
    let mut response = no_store((StatusCode::CREATED, Json(SaleBody::from(view))));
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

#[utoipa::path(
    get,
    path = "/api/admin/sales",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every sale with its phase and counters.", body = Vec<SaleBody>, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 401, description = "`unauthorized`: the admin token is missing or wrong.", body = ErrorBody),
        (status = 503, description = "`unavailable` (a backend failed) or `timeout`.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 500, description = "`internal`: a bug; the details were logged.", body = ErrorBody),
    )
)]
async fn list_sales(State(state): State<Arc<AppState>>, _: Admin) -> AppResult<Response> {
    let views = state.shop.list_sales().await?;
    Ok(no_store(Json(
        views.into_iter().map(SaleBody::from).collect::<Vec<_>>(),
    )))
}

#[utoipa::path(
    get,
    path = "/api/admin/sales/{id}",
    tag = "admin",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "The sale id."),
    ),
    responses(
        (status = 200, description = "The sale with its phase and counters.", body = SaleBody, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 401, description = "`unauthorized`: the admin token is missing or wrong.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such sale.", body = ErrorBody),
        (status = 503, description = "`unavailable` (a backend failed) or `timeout`.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 500, description = "`internal`: a bug; the details were logged.", body = ErrorBody),
    )
)]
async fn get_sale(
    State(state): State<Arc<AppState>>,
    _: Admin,
    PathOf(id): PathOf<String>,
) -> AppResult<Response> {
    Ok(no_store(Json(SaleBody::from(
        state.shop.sale_view(sale_id(&id)?).await?,
    ))))
}

#[utoipa::path(
    patch,
    path = "/api/admin/sales/{id}",
    tag = "admin",
    description = "Changes any subset of the fields, only before the sale starts.",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "The sale id."),
    ),
    request_body = SalePatch,
    responses(
        (status = 200, description = "The edited sale.", body = SaleBody, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "`invalid_request`: malformed JSON, an unknown field, or a resulting field out of range; the message names the field.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: the admin token is missing or wrong.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such sale.", body = ErrorBody),
        (status = 409, description = "`sale_not_editable` (the sale has started: edits only before the start) or `conflict` (changed concurrently; reload and retry).", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is larger than allowed.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: send `Content-Type: application/json`.", body = ErrorBody),
        (status = 503, description = "`unavailable` (a backend failed) or `timeout`.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 500, description = "`internal`: a bug; the details were logged.", body = ErrorBody),
    )
)]
async fn patch_sale(
    State(state): State<Arc<AppState>>,
    _: Admin,
    PathOf(id): PathOf<String>,
    ApiJson(patch): ApiJson<SalePatch>,
) -> AppResult<Response> {
    let sale = sale_id(&id)?;
    let view = state.shop.patch_sale(sale, &patch).await?;
    state.read_cache.forget_status(sale);
    Ok(no_store(Json(SaleBody::from(view))))
}

#[utoipa::path(
    post,
    path = "/api/admin/sales/{id}/start",
    tag = "admin",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "The sale id."),
    ),
    responses(
        (status = 200, description = "The sale, live from now.", body = SaleBody, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 401, description = "`unauthorized`: the admin token is missing or wrong.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such sale.", body = ErrorBody),
        (status = 409, description = "`sale_not_editable` (already started or ended) or `conflict`.", body = ErrorBody),
        (status = 503, description = "`unavailable` (a backend failed) or `timeout`.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 500, description = "`internal`: a bug; the details were logged.", body = ErrorBody),
    )
)]
async fn start_sale(
    State(state): State<Arc<AppState>>,
    _: Admin,
    PathOf(id): PathOf<String>,
) -> AppResult<Response> {
    let sale = sale_id(&id)?;
    let view = state.shop.start_sale(sale).await?;
    state.read_cache.forget_status(sale);
    Ok(no_store(Json(SaleBody::from(view))))
}

#[utoipa::path(
    post,
    path = "/api/admin/sales/{id}/stop",
    tag = "admin",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "The sale id."),
    ),
    responses(
        (status = 200, description = "The sale, ended now (one that had not started never goes live).", body = SaleBody, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 401, description = "`unauthorized`: the admin token is missing or wrong.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such sale.", body = ErrorBody),
        (status = 409, description = "`sale_not_editable` (already ended) or `conflict`.", body = ErrorBody),
        (status = 503, description = "`unavailable` (a backend failed) or `timeout`.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 500, description = "`internal`: a bug; the details were logged.", body = ErrorBody),
    )
)]
async fn stop_sale(
    State(state): State<Arc<AppState>>,
    _: Admin,
    PathOf(id): PathOf<String>,
) -> AppResult<Response> {
    let sale = sale_id(&id)?;
    let view = state.shop.stop_sale(sale).await?;
    state.read_cache.forget_status(sale);
    Ok(no_store(Json(SaleBody::from(view))))
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AdminOrderBody {
    #[schema(format = Uuid)]
    order_id: String,
    buyer: BuyerId,
    status: flashsale_core::OrderStatus,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    reserved_at: Timestamp,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: Timestamp,
}

impl From<flashsale_core::Order> for AdminOrderBody {
    fn from(order: flashsale_core::Order) -> Self {
        Self {
            order_id: order.id.to_string(),
            buyer: order.buyer,
            status: order.status,
            reserved_at: order.reserved_at,
            expires_at: order.expires_at,
        }
    }
}

#[derive(Deserialize)]
struct OrdersQuery {
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/api/admin/sales/{id}/orders",
    tag = "admin",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "The sale id."),
        ("limit" = Option<usize>, Query, description = "How many orders, 1 to 10000 (default 50)."),
    ),
    responses(
        (status = 200, description = "The most recent orders of the sale, newest first (50 unless `limit` says otherwise).", body = Vec<AdminOrderBody>, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "`invalid_request`: `limit` is not between 1 and 10000.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: the admin token is missing or wrong.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such sale.", body = ErrorBody),
        (status = 503, description = "`unavailable` (a backend failed) or `timeout`.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 500, description = "`internal`: a bug; the details were logged.", body = ErrorBody),
    )
)]
async fn recent_orders(
    State(state): State<Arc<AppState>>,
    _: Admin,
    PathOf(id): PathOf<String>,
    query: Result<Query<OrdersQuery>, QueryRejection>,
) -> AppResult<Response> {
    let invalid =
        || ApiError::InvalidRequest(format!("limit: must be between 1 and {LISTED_ORDERS_MAX}"));
    let Query(query) = query.map_err(|_| invalid())?;
    let limit = query.limit.unwrap_or(RECENT_ORDERS_MAX);
    if !(1..=LISTED_ORDERS_MAX).contains(&limit) {
        return Err(invalid());
    }
    let orders = state.shop.recent_orders(sale_id(&id)?, limit).await?;
    let body: Vec<AdminOrderBody> = orders.into_iter().map(AdminOrderBody::from).collect();
    Ok(no_store(Json(body)))
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct WritersBody {
    count: usize,
}

#[utoipa::path(
    get,
    path = "/api/admin/writers",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Order writers running on this node.", body = WritersBody, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 401, description = "`unauthorized`: the admin token is missing or wrong.", body = ErrorBody),
        (status = 503, description = "`timeout`: the request took too long.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 500, description = "`internal`: a bug; the details were logged.", body = ErrorBody),
    )
)]
async fn get_writers(State(state): State<Arc<AppState>>, _: Admin) -> Response {
    no_store(Json(WritersBody {
        count: state.shop.writer_count(),
    }))
}

#[utoipa::path(
    put,
    path = "/api/admin/writers",
    tag = "admin",
    description = "Changes the number of order writers on this node, live.",
    security(("admin_token" = [])),
    request_body = WritersBody,
    responses(
        (status = 200, description = "The writer count now in force.", body = WritersBody, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "`invalid_request`: `count` out of 0 to 64, or malformed JSON.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: the admin token is missing or wrong.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is larger than allowed.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: send `Content-Type: application/json`.", body = ErrorBody),
        (status = 503, description = "`timeout`: the request took too long.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 500, description = "`internal`: a bug; the details were logged.", body = ErrorBody),
    )
)]
async fn put_writers(
    State(state): State<Arc<AppState>>,
    _: Admin,
    ApiJson(body): ApiJson<WritersBody>,
) -> AppResult<Response> {
    if body.count > WRITERS_COUNT_MAX {
        return Err(ApiError::InvalidRequest(format!(
            "count: must be between 0 and {WRITERS_COUNT_MAX}"
        )));
    }
    state.shop.set_writer_count(body.count).await;
    Ok(no_store(Json(WritersBody {
        count: state.shop.writer_count(),
    })))
}
