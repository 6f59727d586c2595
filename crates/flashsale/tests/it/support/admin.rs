//! The admin API of a server known only by its base URL (an in-process `TestApp` or a spawned
//! binary): admin calls, a live sale, "wait until drained", the order listing.

use super::{ADMIN_TOKEN, read, rfc3339};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use time::OffsetDateTime;

/// Most orders the admin listing returns at once (the server's cap).
const ORDERS_LISTED_MAX: usize = 10_000;

pub struct AdminClient<'a> {
    pub http: &'a reqwest::Client,
    pub base: &'a str,
}

impl<'a> AdminClient<'a> {
    pub fn new(http: &'a reqwest::Client, base: &'a str) -> Self {
        Self { http, base }
    }

    /// One admin call with the admin token.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.expect("admin request")).await
    }

    /// An admin call that must succeed; its body.
    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (code, body) = self.call(method, path, body).await;
        assert!(code.is_success(), "{code}: {body}");
        body
    }

    /// The admin view of a sale (its counters and layers).
    pub async fn sale(&self, id: &str) -> Value {
        let (status, body) = self
            .call(Method::GET, &format!("/api/admin/sales/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Creates a sale of `stock` units (an hour's payment window) and starts it now; returns
    /// its id.
    pub async fn live_sale(&self, name: &str, stock: u64, per_buyer_limit: u32) -> String {
        let now = OffsetDateTime::now_utc();
        let body = self
            .ok(
                Method::POST,
                "/api/admin/sales",
                Some(json!({
                    "name": name, "price_cents": 100, "stock": stock,
                    "starts_at": rfc3339(now + time::Duration::hours(1)),
                    "ends_at": rfc3339(now + time::Duration::hours(2)),
                    "per_buyer_limit": per_buyer_limit, "payment_window_secs": 3600,
                })),
            )
            .await;
        let id = body["id"].as_str().expect("sale id").to_owned();
        self.ok(Method::POST, &format!("/api/admin/sales/{id}/start"), None)
            .await;
        id
    }

    /// Waits until the sale's queued counter is zero; returns the admin view.
    pub async fn wait_drained(&self, sale: &str) -> Value {
        for _ in 0..1000 {
            let view = self.sale(sale).await;
            if view["counters"]["queued"] == 0 {
                return view;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("sale {sale} never drained");
    }

    /// Every order of a sale (the listing at its cap).
    pub async fn orders(&self, sale: &str) -> Vec<Value> {
        let body = self
            .ok(
                Method::GET,
                &format!("/api/admin/sales/{sale}/orders?limit={ORDERS_LISTED_MAX}"),
                None,
            )
            .await;
        body.as_array().expect("an order listing").clone()
    }

    /// The public status of a sale.
    pub async fn status(&self, sale: &str) -> Value {
        read(
            self.http
                .get(format!("{}/api/sales/{sale}/status", self.base))
                .send()
                .await
                .expect("status"),
        )
        .await
        .1
    }
}
