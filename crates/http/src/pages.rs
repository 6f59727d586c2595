//! The sale page: static HTML, identical for every visitor, cacheable with an ETag. Everything
//! that changes (phase, server time, the buy path) comes from the no-store status endpoint.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flashsale_core::Sale;

const SALE_TEMPLATE: &str = include_str!("../assets/sale.html");

/// How long browsers and CDNs may reuse the page without asking, in seconds.
const SALE_PAGE_MAX_AGE_SECS: u32 = 5;

/// The page changes only when the sale does (its version) or the binary does.
fn etag(sale: &Sale) -> String {
    format!(
        "\"{}-{}-{}\"",
        sale.id,
        sale.version,
        env!("CARGO_PKG_VERSION")
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
        .replace("{{STOCK}}", &spec.stock.to_string())
        .replace("{{LIMIT}}", &spec.per_buyer_limit.to_string())
}

/// The page response for `sale` with its pre-rendered `body`, or 304 when the client has it.
pub fn sale_page(sale: &Sale, body: bytes::Bytes, request_headers: &HeaderMap) -> Response {
    let tag = etag(sale);
    let cache_control = HeaderValue::from_str(&format!("public, max-age={SALE_PAGE_MAX_AGE_SECS}"))
        .unwrap_or_else(|_| HeaderValue::from_static("public"));
    let etag_value =
        HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
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
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_in_names() {
        assert_eq!(
            escape_html("<b>\"A&B'</b>"),
            "&lt;b&gt;&quot;A&amp;B&#39;&lt;/b&gt;"
        );
    }
}
