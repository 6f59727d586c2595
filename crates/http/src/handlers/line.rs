//! Handlers for the fair line: buyers join and ask where they stand; admins pause, resume and
//! re-rate it. The rules are the service's (`Shop::line_join`, `Shop::line_me`).

use super::{AppResult, no_store};
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson, Buyer, PathOf};
use crate::wire::{ErrorBody, LineBody, LineControlRequest, LineMeBody};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use flashsale_core::SaleId;
use flashsale_core::line::LineControl;
use flashsale_service::LineOutcome;
use std::sync::Arc;

#[utoipa::path(
    post,
    path = "/api/sales/{id}/line",
    tag = "line",
    security(("buyer_jwt" = [])),
    description = "Joins the sale's line, from its `opens_at` until the sale ends. Idempotent per \
                   buyer: joining again (any node, any tab) returns the same place. Before the \
                   start the place is in the pre-queue, drawn at the start; after it, the next \
                   position in arrival order.",
    params(
        ("id" = String, Path, format = Uuid, description = "The sale id."),
    ),
    responses(
        (status = 200, description = "Where the buyer stands now (as `line/me`).", body = LineMeBody,
            headers(("Cache-Control" = String, description = "`no-store`"),
                    ("Retry-After" = u64, description = "Seconds to wait before asking `line/me`."))),
        (status = 404, description = "`not_found`: no such sale; `no_line`: the sale has no waiting room.", body = ErrorBody),
        (status = 409, description = "`line_not_open`: before `opens_at`; `not_live`: the sale has ended.", body = ErrorBody),
        (status = 503, description = "`line_lost`: the line's state was lost with its backend; `unavailable`: a backend failed.", body = ErrorBody),
    )
)]
pub async fn join(
    State(state): State<Arc<AppState>>,
    Buyer(buyer): Buyer,
    PathOf(sale): PathOf<SaleId>,
) -> AppResult<Response> {
    let outcome = state.shop.line_join(sale, &buyer).await?;
    answer(sale, outcome)
}

#[utoipa::path(
    get,
    path = "/api/sales/{id}/line/me",
    tag = "line",
    security(("buyer_jwt" = [])),
    description = "Where the buyer stands: `pre_queue`, `waiting` (with `position`, `ahead` and \
                   `eta_secs`), `admitted` (with `buy_path`, valid until `admitted_until`), \
                   `passed`, `sold_out` or `bought`. Reads no order store; `poll_after_secs` \
                   (and `Retry-After`) says when to ask again.",
    params(
        ("id" = String, Path, format = Uuid, description = "The sale id."),
    ),
    responses(
        (status = 200, description = "Where the buyer stands now.", body = LineMeBody,
            headers(("Cache-Control" = String, description = "`no-store`"),
                    ("Retry-After" = u64, description = "Seconds to wait before asking again."))),
        (status = 404, description = "`not_found`: no such sale; `no_line`: the sale has no waiting room; `not_in_line`: this buyer has not joined.", body = ErrorBody),
        (status = 409, description = "`line_not_open`: before `opens_at`.", body = ErrorBody),
        (status = 503, description = "`line_lost`: the line's state was lost with its backend; `unavailable`: a backend failed.", body = ErrorBody),
    )
)]
pub async fn me(
    State(state): State<Arc<AppState>>,
    Buyer(buyer): Buyer,
    PathOf(sale): PathOf<SaleId>,
) -> AppResult<Response> {
    let outcome = state.shop.line_me(sale, &buyer).await?;
    answer(sale, outcome)
}

fn answer(sale: SaleId, outcome: LineOutcome) -> AppResult<Response> {
    match outcome {
        LineOutcome::Standing(me) => {
            let body = LineMeBody::new(sale, me);
            let wait = body.poll_after_secs();
            let mut response = no_store(Json(body));
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait));
            Ok(response)
        }
        refused => Err(refusal(refused)),
    }
}

fn refusal(outcome: LineOutcome) -> ApiError {
    match outcome {
        LineOutcome::Standing(_) => ApiError::Internal,
        LineOutcome::UnknownSale => ApiError::NotFound,
        LineOutcome::NoLine => ApiError::NoLine,
        LineOutcome::NotOpen => ApiError::LineNotOpen,
        LineOutcome::Ended => ApiError::NotLive,
        LineOutcome::NotInLine => ApiError::NotInLine,
        LineOutcome::Lost => ApiError::LineLost,
    }
}

#[utoipa::path(
    post,
    path = "/api/admin/sales/{id}/line",
    tag = "admin",
    security(("admin_token" = [])),
    description = "Pauses or resumes the line, or changes its admission rate, live. Absent \
                   fields stay as they are.",
    params(
        ("id" = String, Path, format = Uuid, description = "The sale id."),
    ),
    request_body = LineControlRequest,
    responses(
        (status = 200, description = "The line after the change.", body = LineBody,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "`invalid_request`: the body is malformed or the rate out of range.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such sale; `no_line`: the sale has no waiting room.", body = ErrorBody),
        (status = 503, description = "`line_lost` or `unavailable`.", body = ErrorBody),
    )
)]
pub async fn control(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    PathOf(sale): PathOf<SaleId>,
    ApiJson(request): ApiJson<LineControlRequest>,
) -> AppResult<Response> {
    if let Some(flashsale_core::line::AdmitRate::Fixed(rate)) = request.admit_per_sec
        && !(1..=flashsale_core::line::ADMIT_PER_SEC_MAX).contains(&rate)
    {
        return Err(ApiError::InvalidRequest(format!(
            "admit_per_sec: must be between 1 and {}, or \"auto\"",
            flashsale_core::line::ADMIT_PER_SEC_MAX
        )));
    }
    let current = state.shop.line_view(sale).await?.ok_or_else(|| {
        if state.shop.sale(sale).is_some() {
            ApiError::NoLine
        } else {
            ApiError::NotFound
        }
    })?;
    let before = current.summary.map(|s| s.control).unwrap_or_default();
    let control = LineControl {
        paused: request.paused.unwrap_or(before.paused),
        rate: request.admit_per_sec.or(before.rate),
    };
    if let Err(refused) = state.shop.set_line_control(sale, control).await? {
        return Err(refusal(refused));
    }
    let after = state.shop.line_view(sale).await?.ok_or(ApiError::NoLine)?;
    Ok(no_store(Json(LineBody::from(after))))
}
