//! The admin dashboard page and its live feed (`GET /api/admin/sales/{id}/events`): served to
//! admins only, one event a second from the server's own counters, at most four streams at
//! once, and every stream ends as soon as the server shuts down.

use crate::support::{ADMIN_TOKEN, TestApp, error_code, read};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The server's default cap on open event streams (`http.event_streams_max`).
const STREAMS_MAX: usize = 4;

/// Reads server-sent events from a streaming response.
struct EventReader {
    response: reqwest::Response,
    buffer: String,
}

impl EventReader {
    async fn open(app: &TestApp, sale: &str) -> Self {
        let response = app
            .http
            .get(app.url(&format!("/api/admin/sales/{sale}/events")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["cache-control"], "no-store");
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next `sale` event's data, or `None` when the stream ended.
    async fn next(&mut self) -> Option<Value> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data = event
                    .lines()
                    .find_map(|line| line.strip_prefix("data: "))
                    .map(|data| serde_json::from_str(data).expect("event data is JSON"));
                if event.starts_with("event: sale\n") {
                    return data;
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), self.response.chunk())
                .await
                .expect("an event (or the end) within 5 s");
            match chunk {
                Ok(Some(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_one_static_page() {
    let app = TestApp::spawn().await;
    let page = app.http.get(app.url("/admin")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(page.headers()["cache-control"], "no-cache");
    let etag = page.headers()["etag"].clone();
    let html = page.text().await.unwrap();
    assert!(html.contains("flashsale · admin"), "{html}");
    assert!(!html.contains(ADMIN_TOKEN), "the page carries no secret");
    let again = app
        .http
        .get(app.url("/admin"))
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_is_for_admins_and_known_sales() {
    let app = TestApp::spawn().await;
    let sale = app.create_sale(5, 1, time::Duration::hours(1)).await;
    let path = format!("/api/admin/sales/{sale}/events");
    // Nobody, a wrong token, and a buyer's valid token: none of them is the admin token.
    for bearer in [
        None,
        Some("not-the-admin-token-at-all".to_owned()),
        Some(app.buyer("alice")),
    ] {
        let mut request = app.http.get(app.url(&path));
        if let Some(token) = &bearer {
            request = request.bearer_auth(token);
        }
        let (status, body) = read(request.send().await.unwrap()).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{bearer:?}"
        );
    }
    let (status, body) = app
        .admin(
            reqwest::Method::GET,
            "/api/admin/sales/01900000-0000-7000-8000-000000000000/events",
            None,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_shows_the_counters_move_every_second() {
    let app = TestApp::spawn().await;
    let (sale, path) = app.live_sale(5, 1).await;
    let mut events = EventReader::open(&app, &sale).await;

    let first = events.next().await.expect("a first event at once");
    assert_eq!(first["phase"], "live");
    assert_eq!(first["counters"]["available"], 5);
    assert_eq!(first["counters"]["stock_total"], 5);
    assert_eq!(first["layers"]["reserved"], 0);
    assert_eq!(first["recent_orders"], serde_json::json!([]));
    assert_eq!(first["writers"], 2);

    let alice = app.buyer("alice");
    let (status, accepted) = app.buy(&path, &alice, "k1").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let order = accepted["order_id"].as_str().unwrap();
    app.wait_written(&alice, order).await;

    // Within a few events: the unit is gone, the order is listed, the rate showed the buy.
    let mut saw_rate = false;
    let mut previous_at = Instant::now();
    for _ in 0..5 {
        let event = events.next().await.expect("events keep coming");
        let gap = previous_at.elapsed();
        previous_at = Instant::now();
        assert!(gap < Duration::from_millis(2500), "events {gap:?} apart");
        saw_rate |= event["layers_per_sec"]["reserved"].as_f64().unwrap() > 0.0;
        if event["counters"]["pending_payment"] == 1 && saw_rate {
            assert_eq!(event["counters"]["available"], 4);
            assert_eq!(event["layers"]["reserved"], 1);
            assert_eq!(event["recent_orders"][0]["order_id"], order);
            assert_eq!(event["recent_orders"][0]["buyer"], "alice");
            assert_eq!(event["recent_orders"][0]["status"], "pending_payment");
            return;
        }
    }
    panic!("the events never showed the order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_capped() {
    let app = TestApp::spawn().await;
    let sale = app.create_sale(5, 1, time::Duration::hours(1)).await;
    let mut open = Vec::new();
    for _ in 0..STREAMS_MAX {
        open.push(EventReader::open(&app, &sale).await);
    }
    let path = format!("/api/admin/sales/{sale}/events");
    let over = app
        .http
        .get(app.url(&path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(over.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(over.headers().contains_key("retry-after"));
    assert_eq!(error_code(&read(over).await.1), "overloaded");

    // A closed dashboard gives its place back (the feed notices within a tick).
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = app
            .http
            .get(app.url(&path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's place never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_end_when_the_server_shuts_down() {
    // A long grace period: a stream that held up the shutdown would show in the time taken.
    let mut app = TestApp::spawn_with(&[("FLASHSALE_HTTP__SHUTDOWN_GRACE_MS", "30000")]).await;
    let sale = app.create_sale(5, 1, time::Duration::hours(1)).await;
    let mut events = EventReader::open(&app, &sale).await;
    events.next().await.expect("a first event");

    let stopping = Instant::now();
    app.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?} for an open event stream",
        stopping.elapsed()
    );
    assert!(events.next().await.is_none(), "the stream ended");
}
