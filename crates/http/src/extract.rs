//! Extractors that turn raw requests into validated values, answering in the error table when
//! they cannot: JSON bodies, buyer and admin credentials, the idempotency key, typed path ids.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use flashsale_core::tokens::{TokenError, admin_token_matches, bearer_token};
use flashsale_core::{BuyerId, IdempotencyKey};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

/// A JSON body whose rejections use the error table (types deny unknown fields themselves).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        // Bodies are read only here, so the limits on them live here too (a buy has no body
        // and pays nothing for them). A declared length over the limit is refused before
        // reading: the request would otherwise wait for bytes a hostile client never sends.
        let declared = declared_length(req.headers());
        if declared.is_some_and(|bytes| bytes > state.limits.body_bytes_max.get() as u64) {
            return Err(ApiError::PayloadTooLarge);
        }
        // A client that declares a body and then stalls would otherwise hold the request
        // until the overall timeout, and get a 5xx for its own doing.
        let wait = Duration::from_millis(state.limits.body_read_timeout_ms.get());
        match tokio::time::timeout(wait, axum::Json::<T>::from_request(req, state)).await {
            Err(_) => Err(ApiError::BodyTimeout),
            Ok(Ok(axum::Json(value))) => Ok(ApiJson(value)),
            Ok(Err(rejection)) => Err(json_rejection(rejection)),
        }
    }
}

/// An optional JSON body: none when the request declares no content type and no length (or a
/// length of 0); otherwise read and checked as [`ApiJson`] (so a body of another type is 415).
pub struct MaybeJson<T>(pub Option<T>);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for MaybeJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let headers = req.headers();
        let typed = headers.contains_key(axum::http::header::CONTENT_TYPE);
        let declared = declared_length(headers);
        let chunked = headers.contains_key(axum::http::header::TRANSFER_ENCODING);
        if !typed && !chunked && declared.unwrap_or(0) == 0 {
            return Ok(MaybeJson(None));
        }
        let ApiJson(value) = ApiJson::<T>::from_request(req, state).await?;
        Ok(MaybeJson(Some(value)))
    }
}

/// The body length a request declares (`Content-Length`), if it declares one that reads.
fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        JsonRejection::JsonDataError(e) => ApiError::InvalidRequest(clip(&e.body_text())),
        JsonRejection::JsonSyntaxError(e) => ApiError::InvalidRequest(clip(&e.body_text())),
        other => ApiError::InvalidRequest(clip(&other.body_text())),
    }
}

/// Error messages echo parts of the input; keep them short.
fn clip(text: &str) -> String {
    const MESSAGE_CHARS_MAX: usize = 300;
    text.chars().take(MESSAGE_CHARS_MAX).collect()
}

fn bearer(parts: &Parts) -> Option<&str> {
    bearer_token(parts.headers.get(AUTHORIZATION)?.to_str().ok()?)
}

/// The buyer named by a valid `Authorization: Bearer <JWT>`.
pub struct Buyer(pub BuyerId);

impl FromRequestParts<Arc<AppState>> for Buyer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized(
            "send the buyer token as Authorization: Bearer <token>",
        ))?;
        match state.buyer_tokens.verify(token, state.shop.now()) {
            Ok(buyer) => Ok(Buyer(buyer)),
            Err(TokenError::Expired) => Err(ApiError::Unauthorized("the buyer token has expired")),
            Err(TokenError::Invalid | TokenError::BadSubject) => {
                Err(ApiError::Unauthorized("the buyer token is not valid"))
            }
        }
    }
}

/// Proof that the request carries the admin token (compared in constant time).
pub struct Admin;

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized(
            "send the admin token as Authorization: Bearer <token>",
        ))?;
        if admin_token_matches(state.admin_token.expose_secret().as_bytes(), token) {
            Ok(Admin)
        } else {
            Err(ApiError::Unauthorized("the admin token is not valid"))
        }
    }
}

/// The `Idempotency-Key` header, required on buys.
pub struct IdemKey(pub IdempotencyKey);

impl<S: Send + Sync> FromRequestParts<S> for IdemKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let value = parts.headers.get("idempotency-key").ok_or_else(|| {
            ApiError::InvalidRequest("the Idempotency-Key header is required".into())
        })?;
        let text = value.to_str().map_err(|_| {
            ApiError::InvalidRequest("Idempotency-Key must be printable ASCII".into())
        })?;
        IdempotencyKey::parse(text)
            .map(IdemKey)
            .map_err(|e| ApiError::InvalidRequest(format!("Idempotency-Key {e}")))
    }
}

/// The client's address as the connection saw it (`None` when served without one, as in
/// tests that call the router directly). Behind a load balancer this is the balancer.
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
        Ok(ClientAddr(peer.map(|info| info.0.ip())))
    }
}

/// Path parameters as typed values (`SaleId`, `OrderId`, a tuple of them): anything that does
/// not parse is simply not found, a plain 404 from the error table.
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
