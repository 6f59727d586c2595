//! Handlers for the fair line: buyers join and ask where they stand; admins pause, resume and
//! re-rate it. The rules are the service's (`Shop::line_join`, `Shop::line_me`).

use super::{AppResult, no_store};
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson, Buyer, MaybeJson, PathOf};
use crate::wire::{
    ChallengeBody, ErrorBody, JoinRequest, LineBody, LineControlRequest, LineLogBody, LineMeBody,
    LogQuery,
};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use flashsale_core::SaleId;
use flashsale_core::line::LineControl;
use flashsale_core::pow::ChallengeRefused;
use flashsale_service::{
    JoinSolution, LOG_PAGE_DEFAULT, LOG_PAGE_RECORDS_MAX, LineOutcome, LogOutcome,
};
use std::sync::Arc;

#[utoipa::path(
    post,
    path = "/api/sales/{id}/line",
    tag = "line",
    security(("buyer_jwt" = [])),
    description = "Joins the sale's line, from its `opens_at` until the sale ends. Idempotent per \
                   buyer: joining again (any node, any tab) returns the same place. Before the \
                   start the place is in the pre-queue, drawn at the start; after it, the next \
                   position in arrival order.\n\n\
                   When the sale asks a proof of work (its status's `line.pow_difficulty_bits`, \
                   or its `waiting_room.pow_difficulty_bits_max`, above 0), a new place needs \
                   the body `{challenge, nonce}`: a challenge from `line/challenge` and a nonce \
                   (at most 64 bytes) such that SHA-256 of the UTF-8 bytes of the challenge \
                   followed by those of the nonce has at least `difficulty_bits` leading zero \
                   bits. The server checks the challenge's signature (this sale, this buyer), \
                   its expiry, the hash, and that the challenge has not bought a place before. \
                   A member joining again needs no body; a refused join changes nothing.",
    params(
        ("id" = String, Path, format = Uuid, description = "The sale id."),
    ),
    request_body(content = JoinRequest, description = "The proof of work, when the sale asks one; without one, send no body (no Content-Type)."),
    responses(
        (status = 200, description = "Where the buyer stands now (as `line/me`).", body = LineMeBody,
            headers(("Cache-Control" = String, description = "`no-store`"),
                    ("Retry-After" = u64, description = "Seconds to wait before asking `line/me`."))),
        (status = 400, description = "`invalid_request`: the body is malformed (a field missing, of the wrong type, or longer than stated).", body = ErrorBody),
        (status = 403, description = "`challenge_required`: a new place needs a proof of work; `challenge_invalid`: the challenge was not issued for this sale and buyer; `challenge_expired`: get a new one; `challenge_unsolved`: the hash has too few leading zero bits.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such sale; `no_line`: the sale has no waiting room.", body = ErrorBody),
        (status = 409, description = "`line_not_open`: before `opens_at`; `not_live`: the sale has ended; `challenge_used`: the challenge already bought a place (a challenge works once).", body = ErrorBody),
        (status = 503, description = "`line_lost`: the line's state was lost with its backend; `unavailable`: a backend failed.", body = ErrorBody),
    )
)]
pub async fn join(
    State(state): State<Arc<AppState>>,
    Buyer(buyer): Buyer,
    PathOf(sale): PathOf<SaleId>,
    MaybeJson(request): MaybeJson<JoinRequest>,
) -> AppResult<Response> {
    let solution = request.map(|request| JoinSolution {
        challenge: request.challenge,
        nonce: request.nonce,
    });
    let outcome = state
        .shop
        .line_join(sale, &buyer, solution.as_ref())
        .await?;
    answer(sale, outcome)
}

#[utoipa::path(
    get,
    path = "/api/sales/{id}/line/challenge",
    tag = "line",
    security(("buyer_jwt" = [])),
    description = "A proof-of-work challenge for this buyer's place in the sale's line, at the \
                   difficulty a new place costs now. Signed for this sale and this buyer, it \
                   expires (`expires_at`, 5 minutes) and buys one place. Costs the server no \
                   state. Solve it as `POST line` describes.",
    params(
        ("id" = String, Path, format = Uuid, description = "The sale id."),
    ),
    responses(
        (status = 200, description = "The challenge.", body = ChallengeBody,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 404, description = "`not_found`: no such sale; `no_line`: the sale has no waiting room.", body = ErrorBody),
        (status = 409, description = "`line_not_open`: before `opens_at`; `not_live`: the sale has ended.", body = ErrorBody),
    )
)]
pub async fn challenge(
    State(state): State<Arc<AppState>>,
    Buyer(buyer): Buyer,
    PathOf(sale): PathOf<SaleId>,
) -> AppResult<Response> {
    match state.shop.line_challenge(sale, &buyer) {
        Ok(challenge) => Ok(no_store(Json(ChallengeBody::from(challenge)))),
        Err(refused) => Err(refusal(refused)),
    }
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
            let body = LineMeBody::new(sale, *me);
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
        LineOutcome::ChallengeRequired => ApiError::ChallengeRequired,
        LineOutcome::ChallengeUsed => ApiError::ChallengeUsed,
        LineOutcome::Challenge(ChallengeRefused::Invalid) => ApiError::ChallengeInvalid,
        LineOutcome::Challenge(ChallengeRefused::Expired) => ApiError::ChallengeExpired,
        LineOutcome::Challenge(ChallengeRefused::Unsolved) => ApiError::ChallengeUnsolved,
    }
}

#[utoipa::path(
    get,
    path = "/api/sales/{id}/line/log",
    tag = "line",
    description = "The sale's line, published for anyone to check, once the sale has started \
                   (no buyer ids: line ids only). `part=joins` pages through the join chain \
                   (every member's first join, hash-chained: a buyer's receipt is their \
                   record's index and hash), `part=positions` through the line ids in position \
                   order (the pre-queue drawn with the seed, then arrival order), \
                   `part=events` through the event chain (admissions and buys). Every page \
                   carries the seed, its commitment, the pre-queue's size and both chains' \
                   heads. `flashsale verify-line` downloads and checks it all.",
    params(
        ("id" = String, Path, format = Uuid, description = "The sale id."),
        LogQuery,
    ),
    responses(
        (status = 200, description = "One page of the log.", body = LineLogBody,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "`invalid_request`: `part` is not `joins`, `positions` or `events`, `from` is below 1, or `limit` is not between 1 and 10000.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such sale; `no_line`: the sale has no waiting room.", body = ErrorBody),
        (status = 409, description = "`line_log_not_public`: the sale has not started.", body = ErrorBody),
        (status = 503, description = "`line_lost`: the line's state was lost with its backend; `unavailable`: a backend failed.", body = ErrorBody),
    )
)]
pub async fn log(
    State(state): State<Arc<AppState>>,
    PathOf(sale): PathOf<SaleId>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> AppResult<Response> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::InvalidRequest(format!(
            "{}; part must be joins, positions or events, from at least 1, limit 1 to {LOG_PAGE_RECORDS_MAX}",
            rejection.body_text()
        ))
    })?;
    let from = query.from.unwrap_or(1);
    let limit = query.limit.unwrap_or(LOG_PAGE_DEFAULT);
    if from == 0 || !(1..=LOG_PAGE_RECORDS_MAX).contains(&limit) {
        return Err(ApiError::InvalidRequest(format!(
            "from must be at least 1 and limit between 1 and {LOG_PAGE_RECORDS_MAX}"
        )));
    }
    match state
        .shop
        .line_log(sale, query.part.into(), from, limit)
        .await?
    {
        LogOutcome::Page { header, records } => Ok(no_store(Json(LineLogBody::new(
            sale, query.part, from, header, records,
        )))),
        LogOutcome::NotStarted => Err(ApiError::LogNotPublic),
        LogOutcome::Refused(outcome) => Err(refusal(outcome)),
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
