//! The pages people see, served from assets compiled into the binary (no build step):
//! the sale page (static HTML, identical for every visitor, cacheable with an ETag; everything
//! that changes — phase, server time, the buy path — comes from the no-store status endpoint)
//! and the admin dashboard (one static page; it asks for the admin token and keeps it in the
//! tab's sessionStorage, never in a URL).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flashsale_core::Sale;
use std::sync::LazyLock;

const SALE_TEMPLATE: &str = include_str!("../assets/sale.html");
const DASHBOARD: &str = include_str!("../assets/admin.html");

/// How long browsers and CDNs may reuse the sale page without asking, in seconds.
const SALE_PAGE_MAX_AGE_SECS: u32 = 5;

/// FNV-1a: a stable fingerprint of an asset, so an ETag changes whenever its bytes do (a
/// rebuilt binary with the same version number must not be answered 304 with the old page).
const fn fingerprint(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

const SALE_TEMPLATE_FINGERPRINT: u64 = fingerprint(SALE_TEMPLATE.as_bytes());
static DASHBOARD_ETAG: LazyLock<String> =
    LazyLock::new(|| format!("\"admin-{:016x}\"", fingerprint(DASHBOARD.as_bytes())));

/// The page changes only when the sale does (its version) or the template does.
fn etag(sale: &Sale) -> String {
    format!(
        "\"{}-{}-{:016x}\"",
        sale.id, sale.version, SALE_TEMPLATE_FINGERPRINT
    )
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn render(sale: &Sale) -> String {
    let spec = &sale.spec;
    let price = format!("{}.{:02}", spec.price_cents / 100, spec.price_cents % 100);
    SALE_TEMPLATE
        .replace("{{SALE_ID}}", &sale.id.to_string())
        .replace("{{NAME}}", &escape_html(&spec.name))
        .replace("{{PRICE}}", &price)
        .replace(
            "{{UNITS}}",
            &match spec.stock {
                1 => "1 unit".to_owned(),
                n => format!("{n} units"),
            },
        )
        .replace("{{LIMIT}}", &spec.per_buyer_limit.to_string())
}

/// The page response for `sale` with its pre-rendered `body`, or 304 when the client has it.
pub fn sale_page(sale: &Sale, body: bytes::Bytes, request_headers: &HeaderMap) -> Response {
    let cache_control = HeaderValue::from_str(&format!("public, max-age={SALE_PAGE_MAX_AGE_SECS}"))
        .unwrap_or_else(|_| HeaderValue::from_static("public"));
    html(&etag(sale), cache_control, body, request_headers)
}

/// The admin dashboard. `no-cache`: browsers revalidate (a cheap 304) so a new binary's
/// dashboard is seen at once; it holds no data, only the page and its script.
pub fn dashboard_page(request_headers: &HeaderMap) -> Response {
    html(
        &DASHBOARD_ETAG,
        HeaderValue::from_static("no-cache"),
        bytes::Bytes::from_static(DASHBOARD.as_bytes()),
        request_headers,
    )
}

fn html(
    tag: &str,
    cache_control: HeaderValue,
    body: bytes::Bytes,
    request_headers: &HeaderMap,
) -> Response {
    let etag_value =
        HeaderValue::from_str(tag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    let matches = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    if matches {
        return (
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag_value),
                (header::CACHE_CONTROL, cache_control),
            ],
        )
            .into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::ETAG, etag_value),
            (header::CACHE_CONTROL, cache_control),
            // The pages are never framed: no clickjacking of the buy or admin buttons.
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget: the sale page and its script under ~50 KiB together.
    const SALE_PAGE_BYTES_MAX: usize = 50 * 1024;

    #[test]
    fn sale_page_is_small() {
        assert!(
            SALE_TEMPLATE.len() < SALE_PAGE_BYTES_MAX,
            "sale.html is {} bytes",
            SALE_TEMPLATE.len()
        );
    }

    #[test]
    fn every_placeholder_is_filled() {
        let page = render(&Sale {
            id: flashsale_core::SaleId(uuid::Uuid::nil()),
            spec: flashsale_core::SaleSpec {
                name: "A <b>phone</b>".into(),
                price_cents: 19_905,
                stock: 100,
                starts_at: time::OffsetDateTime::UNIX_EPOCH,
                ends_at: time::OffsetDateTime::UNIX_EPOCH + time::Duration::hours(1),
                per_buyer_limit: 2,
                payment_window_secs: 120,
                waiting_room: None,
            },
            version: 1,
        });
        assert!(!page.contains("{{"), "an unfilled placeholder");
        assert!(page.contains("199.05") && page.contains("A &lt;b&gt;phone"));
        assert!(page.contains("100 units in this sale"));
    }

    #[test]
    fn escapes_markup_in_names() {
        assert_eq!(
            escape_html("<b>\"A&B'</b>"),
            "&lt;b&gt;&quot;A&amp;B&#39;&lt;/b&gt;"
        );
    }
}
