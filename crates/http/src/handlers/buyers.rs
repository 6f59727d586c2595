//! Handlers for buyers: the sale page and status, buying, the order, paying, and the
//! development login that issues buyer tokens in demos and tests.

use super::{AppResult, no_store};
use crate::error::ApiError;
use crate::extract::{ApiJson, Buyer, ClientAddr, IdemKey, PathOf};
use crate::wire::{
    AcceptedBody, DevTokenBody, DevTokenRequest, ErrorBody, OrderBody, PayRequest, StatusBody,
};
use crate::{AppState, pages};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use flashsale_core::{OrderId, SaleId};
use flashsale_service::{BuyOutcome, OrderViewStatus, PayAnswer};
use std::sync::Arc;

/// Lifetime of a token issued by the development login, in seconds.
const DEV_TOKEN_TTL_SECS: i64 = 24 * 3600;

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
    )
)]
pub async fn sale_page(
    State(state): State<Arc<AppState>>,
    PathOf(sale): PathOf<SaleId>,
    headers: HeaderMap,
) -> AppResult<Response> {
    let sale = state.shop.sale(sale).ok_or(ApiError::NotFound)?;
    let body = state
        .read_cache
        .page(sale.id, sale.version, || pages::render(&sale).into());
    Ok(pages::sale_page(&sale, body, &headers))
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
    )
)]
pub async fn sale_status(
    State(state): State<Arc<AppState>>,
    PathOf(sale): PathOf<SaleId>,
) -> AppResult<Response> {
    // Rendered once per interval for everyone; `server_time` is then up to that old.
    let body = state.read_cache.status(sale, || {
        let body = StatusBody::from(state.shop.status(sale)?);
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

#[utoipa::path(
    post,
    path = "/api/sales/{id}/buy/{token}",
    tag = "buyers",
    security(("buyer_jwt" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "The sale id."),
        ("token" = String, Path, description = "The buy-path token, from the status endpoint's `buy_path` while live; for a sale with a line, the buyer's own, from `line/me`'s `buy_path` while admitted."),("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$",
            description = "1 to 128 printable ASCII characters, no spaces. The same key from the same buyer always means the same order."),
    ),
    responses(
        (status = 202, description = "Reserved, and durable in the queue; poll `GET /api/orders/{order_id}`. A retry with the same Idempotency-Key answers the same `order_id`.", body = AcceptedBody,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "`invalid_request`: the Idempotency-Key header is missing or malformed.", body = ErrorBody),
        (status = 403, description = "`not_your_turn`: the sale has a line, and this is not a valid admission of this buyer (none, ended, or another buyer's).", body = ErrorBody),
        (status = 404, description = "`not_found`: no such sale, or not its current buy path.", body = ErrorBody),(status = 409, description = "`not_live` (not started or over), `limit_reached` (the buyer already holds the per-buyer limit) or `request_in_progress` (this Idempotency-Key is still being handled).", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Only with `request_in_progress`."))),
        (status = 410, description = "`sold_out`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: over a per-client, per-buyer or per-sale admission limit.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 503, description = "`overloaded` (load shedding: the queue or the writers are behind) or `unavailable` (a backend failed).", body = ErrorBody),
    )
)]
pub async fn buy(
    State(state): State<Arc<AppState>>,
    Buyer(buyer): Buyer,
    IdemKey(key): IdemKey,
    // After the key, so a request with neither a good key nor a good sale id is answered 400
    // as it always was.
    PathOf((sale, token)): PathOf<(SaleId, String)>,
    ClientAddr(client): ClientAddr,
) -> AppResult<Response> {
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
        BuyOutcome::NotYourTurn => Err(ApiError::NotYourTurn),
    }
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
        (status = 404, description = "`not_found`: no such order, or another buyer's.", body = ErrorBody),
        (status = 503, description = "`unavailable`: a backend failed.", body = ErrorBody),
    )
)]
pub async fn get_order(
    State(state): State<Arc<AppState>>,
    Buyer(buyer): Buyer,
    PathOf(order): PathOf<OrderId>,
) -> AppResult<Response> {
    let view = state
        .shop
        .order(&buyer, order)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(no_store(Json(OrderBody::from(view))))
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
        (status = 404, description = "`not_found`: no such order, or another buyer's.", body = ErrorBody),
        (status = 409, description = "`order_not_written` (accepted, still being written), `payment_window_closed`, `order_cancelled` or `already_paid` (paid with another payment id).", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Only with `order_not_written`."))),
        (status = 503, description = "`unavailable`: a backend failed.", body = ErrorBody),
    )
)]
pub async fn pay(
    State(state): State<Arc<AppState>>,
    Buyer(buyer): Buyer,
    // Taken as a `Result` and checked after the body, so a bad body is answered first as it
    // always was.
    order: Result<PathOf<OrderId>, ApiError>,
    ApiJson(request): ApiJson<PayRequest>,
) -> AppResult<Response> {
    let PathOf(order) = order?;
    match state.shop.pay(&buyer, order, &request.payment_id).await? {
        PayAnswer::Paid(view) => Ok(no_store(Json(OrderBody::from(view)))),
        PayAnswer::NotFound => Err(ApiError::NotFound),
        PayAnswer::NotYetWritten => Err(ApiError::OrderNotWritten),
        PayAnswer::Expired => Err(ApiError::PaymentWindowClosed),
        PayAnswer::Cancelled => Err(ApiError::OrderCancelled),
        PayAnswer::PaidByOtherPayment => Err(ApiError::AlreadyPaid),
    }
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
    )
)]
pub async fn dev_buyer_token(
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
