//! The one error table of the HTTP edge: every error code maps to one status here, and every
//! error body is `{"error": {"code", "message"}}`. Internals are logged once and never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flashsale_service::{AdminError, ServiceError};
use serde::Serialize;
use std::borrow::Cow;

/// Seconds a client is told to wait before retrying an overloaded or in-progress request.
pub const RETRY_AFTER_SECS: u32 = 1;

/// Every error a client can receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    NotFound,
    MethodNotAllowed,
    Unauthorized(&'static str),
    Forbidden(&'static str),
    /// The request is malformed; the message says which part and why.
    InvalidRequest(String),
    UnsupportedMediaType,
    PayloadTooLarge,
    /// The client did not send its body in time.
    BodyTimeout,
    NotLive,
    SoldOut,
    LimitReached,
    RequestInProgress,
    OrderNotWritten,
    PaymentWindowClosed,
    OrderCancelled,
    AlreadyPaid,
    SaleNotEditable(String),
    Conflict,
    /// A buy in a sale with a line, without a valid admission for this buyer.
    NotYourTurn,
    /// The sale has no waiting room.
    NoLine,
    /// `line/me` of a buyer who has not joined.
    NotInLine,
    LineNotOpen,
    /// The line's state is gone from its backend.
    LineLost,
    /// A newcomer's join without the proof of work the sale asks.
    ChallengeRequired,
    /// The challenge was not issued here for this sale and buyer, or is malformed.
    ChallengeInvalid,
    ChallengeExpired,
    /// The nonce does not solve the challenge.
    ChallengeUnsolved,
    /// The challenge already bought a place.
    ChallengeUsed,
    /// The line's log before the sale has started.
    LogNotPublic,
    Overloaded,
    /// Over a rate limit; retry after this many seconds.
    RateLimited {
        retry_after_secs: u32,
    },
    Timeout,
    /// A backend failed; the details were logged.
    Unavailable,
    /// A bug; the details were logged.
    Internal,
}

impl ApiError {
    /// The table: (status, code, message) for each error.
    fn parts(&self) -> (StatusCode, &'static str, Cow<'static, str>) {
        use ApiError::*;
        match self {
            NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such resource".into(),
            ),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this method is not allowed here".into(),
            ),
            Unauthorized(why) => (StatusCode::UNAUTHORIZED, "unauthorized", (*why).into()),
            Forbidden(why) => (StatusCode::FORBIDDEN, "forbidden", (*why).into()),
            InvalidRequest(why) => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                why.clone().into(),
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json".into(),
            ),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than allowed".into(),
            ),
            BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time".into(),
            ),
            NotLive => (
                StatusCode::CONFLICT,
                "not_live",
                "the sale is not live".into(),
            ),
            SoldOut => (StatusCode::GONE, "sold_out", "the sale is sold out".into()),
            LimitReached => (
                StatusCode::CONFLICT,
                "limit_reached",
                "you already hold the most units one buyer may buy in this sale".into(),
            ),
            RequestInProgress => (
                StatusCode::CONFLICT,
                "request_in_progress",
                "a request with this Idempotency-Key is still being handled; retry shortly".into(),
            ),
            OrderNotWritten => (
                StatusCode::CONFLICT,
                "order_not_written",
                "the order is accepted and still being written; retry shortly".into(),
            ),
            PaymentWindowClosed => (
                StatusCode::CONFLICT,
                "payment_window_closed",
                "the time to pay for this order has run out".into(),
            ),
            OrderCancelled => (
                StatusCode::CONFLICT,
                "order_cancelled",
                "the order was cancelled".into(),
            ),
            AlreadyPaid => (
                StatusCode::CONFLICT,
                "already_paid",
                "the order was paid with another payment id".into(),
            ),
            SaleNotEditable(why) => (
                StatusCode::CONFLICT,
                "sale_not_editable",
                why.clone().into(),
            ),
            Conflict => (
                StatusCode::CONFLICT,
                "conflict",
                "the resource changed concurrently; reload and retry".into(),
            ),
            NotYourTurn => (
                StatusCode::FORBIDDEN,
                "not_your_turn",
                "this sale has a line: join it, and buy with the buy path line/me gives you once it is your turn".into(),
            ),
            NoLine => (
                StatusCode::NOT_FOUND,
                "no_line",
                "this sale has no waiting room".into(),
            ),
            NotInLine => (
                StatusCode::NOT_FOUND,
                "not_in_line",
                "you have not joined this sale's line; join it first".into(),
            ),
            LineNotOpen => (
                StatusCode::CONFLICT,
                "line_not_open",
                "the line is not open yet; the sale status says when it opens".into(),
            ),
            LineLost => (
                StatusCode::SERVICE_UNAVAILABLE,
                "line_lost",
                "the line's state was lost; places cannot be told until the shop decides".into(),
            ),
            ChallengeRequired => (
                StatusCode::FORBIDDEN,
                "challenge_required",
                "a new place in this line costs a proof of work: GET line/challenge, find a nonce whose SHA-256 (challenge, then nonce) has difficulty_bits leading zero bits, and join with {\"challenge\", \"nonce\"}".into(),
            ),
            ChallengeInvalid => (
                StatusCode::FORBIDDEN,
                "challenge_invalid",
                "the challenge is not one this shop issued for this sale and buyer; GET line/challenge for yours".into(),
            ),
            ChallengeExpired => (
                StatusCode::FORBIDDEN,
                "challenge_expired",
                "the challenge has expired; GET line/challenge for a new one".into(),
            ),
            ChallengeUnsolved => (
                StatusCode::FORBIDDEN,
                "challenge_unsolved",
                "the nonce does not solve the challenge: SHA-256 of the challenge then the nonce needs difficulty_bits leading zero bits".into(),
            ),
            LogNotPublic => (
                StatusCode::CONFLICT,
                "line_log_not_public",
                "the line's log is published once the sale has started (the draw and its seed come with the start)".into(),
            ),
            ChallengeUsed => (
                StatusCode::CONFLICT,
                "challenge_used",
                "this challenge already bought a place in line, which stays yours (see line/me); a challenge works once".into(),
            ),Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too busy right now; retry after the given delay".into(),
            ),
            RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; retry after the given delay".into(),
            ),
            Timeout => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "the request took too long; retry after the given delay".into(),
            ),
            Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "a backend is unavailable; retry after the given delay".into(),
            ),
            Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "an internal error occurred".into(),
            ),
        }
    }

    /// Seconds for the `Retry-After` header, for the errors that carry one.
    fn retry_after(&self) -> Option<u32> {
        match self {
            ApiError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            _ if self.retries_after_default() => Some(RETRY_AFTER_SECS),
            _ => None,
        }
    }

    fn retries_after_default(&self) -> bool {
        matches!(
            self,
            ApiError::Overloaded
                | ApiError::Timeout
                | ApiError::Unavailable
                | ApiError::LineLost
                | ApiError::RequestInProgress
                | ApiError::OrderNotWritten
        )
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    pub fn code(&self) -> &'static str {
        self.parts().1
    }
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

/// The JSON body of an error; also used by the connection-limit answer written by hand.
/// Serialized from borrowed parts in one allocation: a refusal is most of a spike's answers.
pub fn error_body(code: &str, message: &str) -> String {
    let envelope = ErrorEnvelope {
        error: ErrorDetail { code, message },
    };
    serde_json::to_string(&envelope).unwrap_or_else(|_| {
        String::from(r#"{"error":{"code":"internal","message":"an internal error occurred"}}"#)
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            error_body(code, &message),
        )
            .into_response();
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Backend(error) => {
                tracing::warn!(%error, "request failed on a backend");
                ApiError::Unavailable
            }
            ServiceError::Corrupt(why) => {
                tracing::error!(%why, "inconsistent state");
                ApiError::Internal
            }
            ServiceError::Internal(why) => {
                tracing::error!(%why, "request failed inside");
                ApiError::Internal
            }
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> Self {
        match error {
            AdminError::NotFound => ApiError::NotFound,
            AdminError::Invalid(spec) => ApiError::InvalidRequest(spec.to_string()),
            AdminError::Change(change) => ApiError::SaleNotEditable(change.to_string()),
            AdminError::Conflict => ApiError::Conflict,
            AdminError::Service(error) => error.into(),
        }
    }
}
