//! Routes and handlers. Handlers translate between HTTP and the service; the service decides.

use crate::error::ApiError;
use crate::extract::{Admin, ApiJson, Buyer, IdemKey, order_id, sale_id};
use crate::{AppState, pages};
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Json, Router};
use flashsale_core::{BuyerId, PaymentId, Sale, SalePatch, SaleSpec, Timestamp};
use flashsale_service::writers::WRITERS_COUNT_MAX;
use flashsale_service::{
    BuyOutcome, OrderView, OrderViewStatus, PayAnswer, SaleCounters, SaleStatus, SaleView,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

type AppResult<T> = Result<T, ApiError>;

/// Lifetime of a token issued by the development login, in seconds.
const DEV_TOKEN_TTL_SECS: i64 = 24 * 3600;
/// Most recent orders shown in the admin view.
const RECENT_ORDERS_MAX: usize = 50;

pub fn router(state: Arc<AppState>) -> Router {
    let mut api = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/sales/{id}", get(sale_page))
        .route("/api/sales/{id}/status", get(sale_status))
        .route("/api/sales/{id}/buy/{token}", post(buy))
        .route("/api/orders/{id}", get(get_order))
        .route("/api/orders/{id}/pay", post(pay))
        .route("/api/admin/sales", post(create_sale).get(list_sales))
        .route("/api/admin/sales/{id}", get(get_sale).patch(patch_sale))
        .route("/api/admin/sales/{id}/start", post(start_sale))
        .route("/api/admin/sales/{id}/stop", post(stop_sale))
        .route("/api/admin/sales/{id}/orders", get(recent_orders))
        .route("/api/admin/writers", get(get_writers).put(put_writers));
    if state.dev_login {
        api = api.route("/api/dev/buyer-token", post(dev_buyer_token));
    }
    let timeout = Duration::from_millis(state.limits.request_timeout_ms);
    api.fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.limits.body_bytes_max))
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

async fn healthz() -> Response {
    no_store(Json(serde_json::json!({ "status": "ok" })))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.shop.is_ready() {
        no_store(Json(serde_json::json!({ "status": "ready" })))
    } else {
        ApiError::Unavailable.into_response()
    }
}

// ----- buyers -----

async fn sale_page(
    State(state): State<Arc<AppState>>,
    PathOf(id): PathOf<String>,
    headers: HeaderMap,
) -> AppResult<Response> {
    let sale = state.shop.sale(sale_id(&id)?).ok_or(ApiError::NotFound)?;
    Ok(pages::sale_page(&sale, &headers))
}

#[derive(Serialize)]
struct StatusBody {
    sale_id: String,
    phase: flashsale_core::Phase,
    #[serde(with = "time::serde::rfc3339")]
    server_time: Timestamp,
    #[serde(with = "time::serde::rfc3339")]
    starts_at: Timestamp,
    #[serde(with = "time::serde::rfc3339")]
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

async fn sale_status(
    State(state): State<Arc<AppState>>,
    PathOf(id): PathOf<String>,
) -> AppResult<Response> {
    let status = state.shop.status(sale_id(&id)?).ok_or(ApiError::NotFound)?;
    Ok(no_store(Json(StatusBody {
        sale_id: status.sale_id.to_string(),
        phase: status.phase,
        server_time: status.server_time,
        starts_at: status.starts_at,
        ends_at: status.ends_at,
        buy_path: buy_path(&status),
    })))
}

#[derive(Serialize)]
struct OrderBody {
    order_id: String,
    sale_id: String,
    status: OrderViewStatus,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: Timestamp,
}

impl From<OrderView> for OrderBody {
    fn from(view: OrderView) -> Self {
        Self {
            order_id: view.id.to_string(),
            sale_id: view.sale_id.to_string(),
            status: view.status,
            expires_at: view.expires_at,
        }
    }
}

async fn buy(
    State(state): State<Arc<AppState>>,
    Buyer(buyer): Buyer,
    PathOf((id, token)): PathOf<(String, String)>,
    IdemKey(key): IdemKey,
) -> AppResult<Response> {
    let sale = sale_id(&id)?;
    match state.shop.buy(sale, &token, &buyer, &key).await? {
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
    }
}

/// The 202 body: the order id and where it stands; poll `GET /api/orders/{order_id}`.
#[derive(Serialize)]
struct AcceptedBody {
    order_id: String,
    status: OrderViewStatus,
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayRequest {
    payment_id: PaymentId,
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DevTokenRequest {
    buyer_id: BuyerId,
}

#[derive(Serialize)]
struct DevTokenBody {
    token: String,
    buyer_id: BuyerId,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: Timestamp,
}

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

#[derive(Serialize)]
pub struct SaleBody {
    id: String,
    #[serde(flatten)]
    spec: SaleSpec,
    version: u32,
    phase: flashsale_core::Phase,
    counters: SaleCounters,
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
        }
    }
}

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

async fn list_sales(State(state): State<Arc<AppState>>, _: Admin) -> AppResult<Response> {
    let views = state.shop.list_sales().await?;
    Ok(no_store(Json(
        views.into_iter().map(SaleBody::from).collect::<Vec<_>>(),
    )))
}

async fn get_sale(
    State(state): State<Arc<AppState>>,
    _: Admin,
    PathOf(id): PathOf<String>,
) -> AppResult<Response> {
    Ok(no_store(Json(SaleBody::from(
        state.shop.sale_view(sale_id(&id)?).await?,
    ))))
}

async fn patch_sale(
    State(state): State<Arc<AppState>>,
    _: Admin,
    PathOf(id): PathOf<String>,
    ApiJson(patch): ApiJson<SalePatch>,
) -> AppResult<Response> {
    Ok(no_store(Json(SaleBody::from(
        state.shop.patch_sale(sale_id(&id)?, &patch).await?,
    ))))
}

async fn start_sale(
    State(state): State<Arc<AppState>>,
    _: Admin,
    PathOf(id): PathOf<String>,
) -> AppResult<Response> {
    Ok(no_store(Json(SaleBody::from(
        state.shop.start_sale(sale_id(&id)?).await?,
    ))))
}

async fn stop_sale(
    State(state): State<Arc<AppState>>,
    _: Admin,
    PathOf(id): PathOf<String>,
) -> AppResult<Response> {
    Ok(no_store(Json(SaleBody::from(
        state.shop.stop_sale(sale_id(&id)?).await?,
    ))))
}

#[derive(Serialize)]
struct AdminOrderBody {
    order_id: String,
    buyer: BuyerId,
    status: flashsale_core::OrderStatus,
    #[serde(with = "time::serde::rfc3339")]
    reserved_at: Timestamp,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: Timestamp,
}

async fn recent_orders(
    State(state): State<Arc<AppState>>,
    _: Admin,
    PathOf(id): PathOf<String>,
) -> AppResult<Response> {
    let orders = state
        .shop
        .recent_orders(sale_id(&id)?, RECENT_ORDERS_MAX)
        .await?;
    let body: Vec<AdminOrderBody> = orders
        .into_iter()
        .map(|o| AdminOrderBody {
            order_id: o.id.to_string(),
            buyer: o.buyer,
            status: o.status,
            reserved_at: o.reserved_at,
            expires_at: o.expires_at,
        })
        .collect();
    Ok(no_store(Json(body)))
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WritersBody {
    count: usize,
}

async fn get_writers(State(state): State<Arc<AppState>>, _: Admin) -> Response {
    no_store(Json(WritersBody {
        count: state.shop.writer_count(),
    }))
}

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
