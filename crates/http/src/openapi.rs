//! The OpenAPI 3 document of the whole API, generated from the handlers' `#[utoipa::path]`
//! annotations and the body types, and served at `GET /api/openapi.json`.
//!
//! Every route the router registers must be listed in `paths(...)` below: the end-to-end test
//! `openapi::every_route_is_documented` probes the real router and fails on a route without
//! documentation, or documentation without a route.

use crate::error::ApiError;
use crate::handlers::{admin, buyers, events, line, operations};
use crate::wire::{ErrorBody, ErrorDetail, HealthBody};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::sync::LazyLock;
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response as ApiResponse, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema};

/// Name of the security scheme for admin routes (`Authorization: Bearer <admin token>`).
pub const ADMIN_TOKEN_SCHEME: &str = "admin_token";
/// Name of the security scheme for buyer routes (`Authorization: Bearer <buyer JWT>`).
pub const BUYER_JWT_SCHEME: &str = "buyer_jwt";

/// How long clients and caches may reuse the document, in seconds.
const OPENAPI_MAX_AGE_SECS: u32 = 60;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "flashsale",
        version = env!("CARGO_PKG_VERSION"),
        description = "A flash-sale engine. Every error is `{\"error\": {\"code\", \"message\"}}`; \
                       `Retry-After` comes with every 503 and with `request_in_progress` / \
                       `order_not_written`. Every route may also answer 503 `timeout` when a \
                       request takes too long, and 500 `internal` on a bug."
    ),
    paths(
        operations::healthz,
        operations::readyz,
        openapi_json,
        operations::render_metrics,
        buyers::sale_page,
        buyers::sale_status,
        buyers::buy,
        buyers::get_order,
        buyers::pay,
        buyers::dev_buyer_token,
        line::join,
        line::me,
        line::challenge,
        line::log,
        line::control,
        admin::create_sale,
        admin::list_sales,
        admin::get_sale,
        admin::patch_sale,
        admin::start_sale,
        admin::stop_sale,
        admin::recent_orders,
        admin::get_writers,
        admin::put_writers,
        admin::dashboard,
        events::sale_events,
    ),
    components(schemas(ErrorBody, ErrorDetail, HealthBody)),
    modifiers(&SecuritySchemes, &CommonErrors, &OptionalBodies),
    tags(
        (name = "operations", description = "Health, readiness and this document."),
        (name = "buyers", description = "The sale page, status, buying and paying."),
        (name = "line", description = "The fair line (waiting room) in front of a sale's buy path."),(name = "admin", description = "Creating and running sales (admin token)."),
        (name = "dev", description = "Demo and test helpers, off in production."),
    )
)]
pub struct ApiDoc;

/// Marks the bodies a route reads only when sent (`MaybeJson`): utoipa's attribute has no
/// way to say so.
struct OptionalBodies;

impl Modify for OptionalBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, Required};
        if let Some(RefOr::T(body)) = openapi
            .paths
            .paths
            .get_mut("/api/sales/{id}/line")
            .and_then(|item| item.post.as_mut())
            .and_then(|operation| operation.request_body.as_mut())
        {
            body.required = Some(Required::False);
        }
    }
}

/// Adds the two bearer schemes that the operations' `security(...)` refer to by name.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            ADMIN_TOKEN_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token from the server's configuration, compared in constant time.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            BUYER_JWT_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An HS256 JWT whose `sub` is the buyer id, issued by the shop's login \
                         (or by `POST /api/dev/buyer-token` in demos).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The error answers many routes share, stated once here instead of on every route, and
/// derived from what each operation declares:
/// - every route: 500 `internal`, and 503 `timeout` (the request timeout covers every route);
///   a route that documents its own 503 keeps it, with `timeout` added;
/// - a route with a security requirement: 401 `unauthorized`, worded for its scheme;
/// - a route that reads a JSON body (`ApiJson`): 413 `payload_too_large` and 415
///   `unsupported_media_type`.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                add_common_errors(operation);
            }
        }
    }
}

fn add_common_errors(operation: &mut Operation) {
    let schemes: Vec<String> = operation
        .security
        .iter()
        .flatten()
        .filter_map(|requirement| serde_json::to_value(requirement).ok())
        .filter_map(|value| {
            value
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>())
        })
        .flatten()
        .collect();
    let reads_body = operation.request_body.is_some();
    let responses = &mut operation.responses.responses;
    let mut add = |status: &str, response: ApiResponse| {
        responses
            .entry(status.to_owned())
            .or_insert(RefOr::T(response));
    };
    if schemes.iter().any(|s| s == ADMIN_TOKEN_SCHEME) {
        add(
            "401",
            error_response(
                "`unauthorized`: the admin token is missing or wrong.",
                false,
            ),
        );
    }
    if schemes.iter().any(|s| s == BUYER_JWT_SCHEME) {
        add(
            "401",
            error_response(
                "`unauthorized`: the buyer token is missing, invalid or expired.",
                false,
            ),
        );
    }
    if reads_body {
        add(
            "413",
            error_response(
                "`payload_too_large`: the body is larger than allowed.",
                false,
            ),
        );
        add(
            "415",
            error_response(
                "`unsupported_media_type`: send `Content-Type: application/json`.",
                false,
            ),
        );
    }
    add(
        "500",
        error_response("`internal`: a bug; the details were logged.", false),
    );
    const TIMEOUT: &str = "`timeout`: the request took too long.";
    match responses.get_mut("503") {
        Some(RefOr::T(own)) => {
            if !own.description.contains("`timeout`") {
                own.description = format!("{} {TIMEOUT}", own.description);
            }
            own.headers
                .entry("Retry-After".to_owned())
                .or_insert_with(|| RefOr::T(retry_after()));
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            responses.insert("503".to_owned(), RefOr::T(error_response(TIMEOUT, true)));
        }
    }
}

/// An error answer: the shared error body, with `Retry-After` when the client should retry.
fn error_response(description: &str, retries: bool) -> ApiResponse {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    );
    if retries {
        response = response.header("Retry-After", retry_after());
    }
    response.build()
}

fn retry_after() -> Header {
    HeaderBuilder::new()
        .schema(Some(<u32 as PartialSchema>::schema()))
        .description(Some("Seconds to wait before retrying."))
        .build()
}

/// The document as JSON, built once: it depends only on the code.
static OPENAPI_JSON: LazyLock<Result<String, String>> =
    LazyLock::new(|| ApiDoc::openapi().to_json().map_err(|e| e.to_string()));

/// The OpenAPI document of this API.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "This OpenAPI 3 document.", body = Object,
            headers(("Cache-Control" = String, description = "`public, max-age=60`"))),
        (status = 500, description = "`internal`: the document could not be built.", body = ErrorBody),
    )
)]
pub async fn openapi_json() -> Response {
    match &*OPENAPI_JSON {
        Ok(json) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_str(&format!("public, max-age={OPENAPI_MAX_AGE_SECS}"))
                        .unwrap_or_else(|_| HeaderValue::from_static("public")),
                ),
            ],
            json.clone(),
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "the OpenAPI document could not be serialized");
            ApiError::Internal.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn document() -> Value {
        serde_json::to_value(ApiDoc::openapi()).expect("document serializes")
    }

    /// The bounds in `schema(...)` attributes are literals; these are the constants the server
    /// checks (the end-to-end test `openapi::the_document_states_what_the_server_enforces`
    /// also sends values on both sides of each).
    #[test]
    fn documented_bounds_are_the_constants() {
        use flashsale_core::sale::*;
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        for schema in ["SaleSpec", "SalePatch"] {
            let field = |name: &str| &schemas[schema]["properties"][name];
            let bounds = |name: &str| {
                (
                    field(name)["minimum"].as_u64(),
                    field(name)["maximum"].as_u64(),
                )
            };
            assert_eq!(field("name")["pattern"], SALE_NAME_PATTERN, "{schema}");
            assert_eq!(field("name")["maxLength"], SALE_NAME_CHARS_MAX, "{schema}");
            assert_eq!(
                bounds("price_cents"),
                (Some(0), Some(SALE_PRICE_CENTS_MAX)),
                "{schema}"
            );
            assert_eq!(
                bounds("stock"),
                (Some(1), Some(u64::from(SALE_STOCK_UNITS_MAX))),
                "{schema}"
            );
            assert_eq!(
                bounds("per_buyer_limit"),
                (Some(1), Some(u64::from(SALE_PER_BUYER_LIMIT_MAX))),
                "{schema}"
            );
            assert_eq!(
                bounds("payment_window_secs"),
                (
                    Some(u64::from(PAYMENT_WINDOW_SECS_MIN)),
                    Some(u64::from(PAYMENT_WINDOW_SECS_MAX))
                ),
                "{schema}"
            );
        }
        {
            use flashsale_core::line::{ADMISSION_SECS_MAX, ADMISSION_SECS_MIN, ADMIT_PER_SEC_MAX};
            let room = &schemas["WaitingRoomSpec"]["properties"];
            assert_eq!(
                (
                    room["admission_secs"]["minimum"].as_u64(),
                    room["admission_secs"]["maximum"].as_u64()
                ),
                (
                    Some(u64::from(ADMISSION_SECS_MIN)),
                    Some(u64::from(ADMISSION_SECS_MAX))
                )
            );
            for field in ["pow_difficulty_bits", "pow_difficulty_bits_max"] {
                assert_eq!(
                    (
                        room[field]["minimum"].as_u64(),
                        room[field]["maximum"].as_u64()
                    ),
                    (
                        Some(0),
                        Some(u64::from(flashsale_core::pow::DIFFICULTY_BITS_MAX))
                    ),
                    "{field}"
                );
            }
            assert_eq!(
                doc["paths"]["/api/sales/{id}/line"]["post"]["requestBody"]["required"], false,
                "a join without a proof of work sends no body"
            );
            let join = &schemas["JoinRequest"]["properties"];
            assert_eq!(
                join["challenge"]["maxLength"].as_u64(),
                Some(flashsale_core::pow::CHALLENGE_CHARS as u64)
            );
            assert_eq!(
                join["nonce"]["maxLength"].as_u64(),
                Some(flashsale_core::pow::NONCE_BYTES_MAX as u64)
            );
            let rate = &schemas["AdmitRate"]["oneOf"][0];
            assert_eq!(rate["maximum"].as_u64(), Some(u64::from(ADMIT_PER_SEC_MAX)));
            assert_eq!(rate["minimum"].as_u64(), Some(1));
        }
        for schema in ["BuyerId", "PaymentId"] {
            assert_eq!(
                schemas[schema]["pattern"],
                flashsale_core::ids::ID_TEXT_PATTERN,
                "{schema}"
            );
            assert_eq!(
                schemas[schema]["maxLength"],
                flashsale_core::ids::ID_TEXT_BYTES_MAX,
                "{schema}"
            );
        }
        assert_eq!(
            schemas["WritersBody"]["properties"]["count"]["maximum"].as_u64(),
            Some(flashsale_service::writers::WRITERS_COUNT_MAX as u64)
        );
    }

    /// The shared error answers reach every operation they apply to.
    #[test]
    fn common_errors_are_on_every_route_they_apply_to() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                let responses = &operation["responses"];
                let described = |status: &str, code: &str| {
                    responses[status]["description"]
                        .as_str()
                        .is_some_and(|d| d.contains(&format!("`{code}`")))
                };
                assert!(described("500", "internal"), "{method} {path}");
                assert!(described("503", "timeout"), "{method} {path}");
                assert!(
                    responses["503"]["headers"]["Retry-After"].is_object(),
                    "{method} {path}"
                );
                let secured = operation["security"]
                    .as_array()
                    .is_some_and(|s| !s.is_empty());
                assert_eq!(described("401", "unauthorized"), secured, "{method} {path}");
                let reads_body = operation["requestBody"].is_object();
                assert_eq!(
                    described("413", "payload_too_large"),
                    reads_body,
                    "{method} {path}"
                );
                assert_eq!(
                    described("415", "unsupported_media_type"),
                    reads_body,
                    "{method} {path}"
                );
            }
        }
    }

    #[test]
    fn is_openapi_3_with_both_security_schemes() {
        let doc = document();
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        assert_eq!(doc["info"]["title"], "flashsale");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        for scheme in [ADMIN_TOKEN_SCHEME, BUYER_JWT_SCHEME] {
            assert_eq!(
                doc["components"]["securitySchemes"][scheme]["scheme"], "bearer",
                "{scheme}"
            );
        }
    }

    /// Every `security` requirement names a scheme that exists, and admin routes use the admin
    /// token while buyer routes use the JWT.
    #[test]
    fn security_matches_the_route_family() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                let schemes: Vec<&str> = operation["security"]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .flat_map(|r| r.as_object().into_iter().flat_map(|o| o.keys()))
                            .map(String::as_str)
                            .collect()
                    })
                    .unwrap_or_default();
                let expected: &[&str] = if path.starts_with("/api/admin/") {
                    &[ADMIN_TOKEN_SCHEME]
                } else if path.starts_with("/api/orders/")
                    || path.contains("/buy/")
                    || path.ends_with("/line")
                    || path.ends_with("/line/me")
                    || path.ends_with("/line/challenge")
                {
                    &[BUYER_JWT_SCHEME]
                } else {
                    &[]
                };
                assert_eq!(schemes, expected, "{method} {path}");
            }
        }
    }
}
