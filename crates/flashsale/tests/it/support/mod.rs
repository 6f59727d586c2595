//! Typed helpers for the end-to-end tests, in one place: `TestApp::spawn()` starts a server
//! in-process on port 0 with a fresh data dir and a manual clock, and wraps the API in methods
//! that read like the feature; `admin` is the admin API of any server by its URL, `process`
//! the real binary as a child, `backends` a test's slice of the shared engines, `env` where
//! those engines are.

pub mod admin;
pub mod backends;
pub mod env;
pub mod process;

pub use admin::AdminClient;

use flashsale::app::{self, RunningApp};
use flashsale::config::{Config, FlagOverrides};
use flashsale_core::BuyerId;
use flashsale_core::tokens::BuyerTokens;
use flashsale_service::ManualClock;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use time::OffsetDateTime;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const BUYER_SECRET: &str = "test-buyer-secret-0123456789abcdef0123";

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub tokens: BuyerTokens,
    pub app: Option<RunningApp>,
    pub config: Config,
    /// Kept alive so the data dir outlives the server.
    pub _dir: TempDir,
}

/// Environment for a test server: fast reaper, small writer idle wait, given overrides.
pub fn test_env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("FLASHSALE_ADMIN_TOKEN", ADMIN_TOKEN),
        ("FLASHSALE_BUYER_JWT_SECRET", BUYER_SECRET),
        ("FLASHSALE_REAPER__INTERVAL_MS", "50"),
        ("FLASHSALE_WRITERS__IDLE_WAIT_MS", "10"),
        ("FLASHSALE_SHUTDOWN__DRAIN_TIMEOUT_MS", "5000"),
        // A short buyer window: tests move the clock by hand, the window runs on real time.
        ("FLASHSALE_FILTERS__BUYER_WINDOW_MS", "50"),
        // No status micro-cache: tests move the clock and read the phase at once.
        ("FLASHSALE_FILTERS__STATUS_CACHE_MS", "0"),
    ];
    env.extend_from_slice(extra);
    env.into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    pub async fn spawn_with(extra_env: &[(&str, &str)]) -> Self {
        let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
        Self::spawn_on_clock(extra_env, clock).await
    }

    /// A server on the given clock: several nodes of one test share it, as real nodes share
    /// (near enough) one time.
    pub async fn spawn_on_clock(extra_env: &[(&str, &str)], clock: Arc<ManualClock>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let flags = FlagOverrides {
            listen: Some("127.0.0.1:0".into()),
            // A directory that does not exist yet, as on a first start.
            data_dir: Some(dir.path().join("data")),
            dev_login: Some(true),
            ..Default::default()
        };
        let config = Config::load(None, test_env(extra_env), &flags).expect("test config");
        let mut app = Self {
            base: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            clock,
            tokens: BuyerTokens::new(BUYER_SECRET.as_bytes()),
            app: None,
            config,
            _dir: dir,
        };
        app.start().await;
        app
    }

    /// Starts (or restarts) the server on the same data dir and clock.
    pub async fn start(&mut self) {
        let running = app::start_with_clock(&self.config, self.clock.clone())
            .await
            .expect("server starts");
        self.base = format!("http://{}", running.addr);
        self.app = Some(running);
    }

    /// Graceful stop: open requests finish, the queue drains.
    pub async fn stop(&mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn buyer(&self, name: &str) -> String {
        let now = self.clock_now();
        self.tokens.issue(
            &BuyerId::parse(name).expect("buyer id"),
            now,
            now + time::Duration::days(30),
        )
    }

    pub fn clock_now(&self) -> OffsetDateTime {
        use flashsale_service::Clock;
        self.clock.now()
    }

    pub fn advance(&self, by: time::Duration) {
        self.clock.advance(by);
    }

    /// The admin API of this server.
    pub fn admin_client(&self) -> AdminClient<'_> {
        AdminClient::new(&self.http, &self.base)
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.admin_client().call(method, path, body).await
    }

    /// Creates a sale whose line opens in a minute and which starts in ten (2 units, an hour
    /// long, limit 1, a 60 s payment window), with `sale`'s fields over those and `room`'s over
    /// the waiting room's `{opens_at, admit_per_sec: 10, admission_secs: 60}`. Answers the
    /// created sale.
    pub async fn create_lined_sale(&self, sale: Value, room: Value) -> Value {
        let now = self.clock_now();
        let starts_at = now + time::Duration::minutes(10);
        let mut waiting_room = serde_json::json!({
            "opens_at": rfc3339(now + time::Duration::minutes(1)),
            "admit_per_sec": 10,
            "admission_secs": 60,
        });
        for (field, value) in room.as_object().expect("room fields") {
            waiting_room[field] = value.clone();
        }
        let mut spec = serde_json::json!({
            "name": "Lined-up phone",
            "price_cents": 9900,
            "stock": 2,
            "starts_at": rfc3339(starts_at),
            "ends_at": rfc3339(starts_at + time::Duration::hours(1)),
            "per_buyer_limit": 1,
            "payment_window_secs": 60,
            "waiting_room": waiting_room,
        });
        for (field, value) in sale.as_object().expect("sale fields") {
            spec[field] = value.clone();
        }
        let (status, body) = self
            .admin(reqwest::Method::POST, "/api/admin/sales", Some(spec))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Creates a sale that starts `starts_in` from the test clock's now and runs an hour.
    pub async fn create_sale(
        &self,
        stock: u32,
        per_buyer_limit: u32,
        starts_in: time::Duration,
    ) -> String {
        let starts_at = self.clock_now() + starts_in;
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                "/api/admin/sales",
                Some(json!({
                    "name": "Test phone",
                    "price_cents": 9900,
                    "stock": stock,
                    "starts_at": rfc3339(starts_at),
                    "ends_at": rfc3339(starts_at + time::Duration::hours(1)),
                    "per_buyer_limit": per_buyer_limit,
                    "payment_window_secs": 600,
                })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("sale id").to_owned()
    }

    /// Creates a sale and starts it now; returns (sale id, buy path).
    pub async fn live_sale(&self, stock: u32, per_buyer_limit: u32) -> (String, String) {
        let id = self
            .create_sale(stock, per_buyer_limit, time::Duration::hours(1))
            .await;
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                &format!("/api/admin/sales/{id}/start"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let path = self.status(&id).await["buy_path"]
            .as_str()
            .expect("live sale has a buy path")
            .to_owned();
        (id, path)
    }

    pub async fn sale(&self, id: &str) -> Value {
        self.admin_client().sale(id).await
    }

    pub async fn status(&self, id: &str) -> Value {
        let response = self
            .http
            .get(self.url(&format!("/api/sales/{id}/status")))
            .send()
            .await
            .expect("status");
        assert_eq!(response.headers()["cache-control"], "no-store");
        read(response).await.1
    }

    pub async fn buy(&self, path: &str, token: &str, key: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .send()
            .await
            .expect("buy request");
        read(response).await
    }

    pub async fn order(&self, token: &str, id: &str) -> (StatusCode, Value) {
        read(
            self.http
                .get(self.url(&format!("/api/orders/{id}")))
                .bearer_auth(token)
                .send()
                .await
                .expect("order"),
        )
        .await
    }

    pub async fn pay(&self, token: &str, id: &str, payment_id: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url(&format!("/api/orders/{id}/pay")))
            .bearer_auth(token)
            .json(&json!({ "payment_id": payment_id }))
            .send()
            .await
            .expect("pay");
        read(response).await
    }

    /// Waits until the order has left the queue (written to the store).
    pub async fn wait_written(&self, token: &str, id: &str) -> Value {
        for _ in 0..500 {
            let (status, body) = self.order(token, id).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if body["status"] != "queued" {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("order {id} was never written");
    }

    /// Waits until the sale's queued counter is zero.
    pub async fn wait_drained(&self, sale: &str) -> Value {
        self.admin_client().wait_drained(sale).await
    }

    /// Lets the reaper run at least once more (it sweeps every 50 ms in tests).
    pub async fn let_reaper_run(&self) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

pub fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}
