//! The security matrix (issue 6, part 6): every route × {anonymous, buyer A, buyer B, forged
//! token, expired token, admin}. Admin routes need the admin token, a buyer sees and pays only
//! their own orders, the development login exists only when enabled, and secrets never appear
//! in error bodies or logs.

use crate::support::process::ServerProcess;
use crate::support::{ADMIN_TOKEN, BUYER_SECRET, TestApp, read};
use flashsale_core::BuyerId;
use flashsale_core::tokens::BuyerTokens;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    BuyerA,
    BuyerB,
    Forged,
    Expired,
    Admin,
}

const EVERYONE: [Who; 6] = [
    Who::Anonymous,
    Who::BuyerA,
    Who::BuyerB,
    Who::Forged,
    Who::Expired,
    Who::Admin,
];

/// What a route answers: the same to everyone, or by who asks.
enum Expect {
    Public(u16),
    AdminOnly(u16),
    /// Buyers with a valid token get the status; everyone else 401.
    AnyBuyer(u16),
    /// Only buyer A (the owner) gets the status; B gets 404 (no hint that it exists); the rest 401.
    OwnerA(u16),
}

impl Expect {
    fn status_for(&self, who: Who) -> u16 {
        match (self, who) {
            (Expect::Public(status), _) => *status,
            (Expect::AdminOnly(status), Who::Admin) => *status,
            (Expect::AdminOnly(_), _) => 401,
            (Expect::AnyBuyer(status), Who::BuyerA | Who::BuyerB) => *status,
            (Expect::AnyBuyer(_), _) => 401,
            (Expect::OwnerA(status), Who::BuyerA) => *status,
            (Expect::OwnerA(_), Who::BuyerB) => 404,
            (Expect::OwnerA(_), _) => 401,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_identity_as_it_should() {
    let app = TestApp::spawn().await;
    let (sale, path) = app.live_sale(100, 5).await;
    let (token_a, token_b) = (app.buyer("buyer-a"), app.buyer("buyer-b"));
    let (status, body) = app.buy(&path, &token_a, "setup").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let order_a = body["order_id"].as_str().unwrap().to_owned();
    app.wait_written(&token_a, &order_a).await;
    let forged = BuyerTokens::new(b"not-the-shop-secret-0123456789abcdef").issue(
        &BuyerId::parse("buyer-a").unwrap(),
        app.clock_now(),
        app.clock_now() + time::Duration::hours(1),
    );
    let expired = app.tokens.issue(
        &BuyerId::parse("buyer-a").unwrap(),
        app.clock_now() - time::Duration::hours(2),
        app.clock_now() - time::Duration::seconds(1),
    );
    let bearer = |who: Who| -> Option<String> {
        match who {
            Who::Anonymous => None,
            Who::BuyerA => Some(token_a.clone()),
            Who::BuyerB => Some(token_b.clone()),
            Who::Forged => Some(forged.clone()),
            Who::Expired => Some(expired.clone()),
            Who::Admin => Some(ADMIN_TOKEN.to_owned()),
        }
    };
    let starts = crate::support::rfc3339(app.clock_now() + time::Duration::hours(1));
    let ends = crate::support::rfc3339(app.clock_now() + time::Duration::hours(2));
    let new_sale = json!({
        "name": "Matrix", "price_cents": 100, "stock": 1, "starts_at": starts, "ends_at": ends,
        "per_buyer_limit": 1, "payment_window_secs": 60,
    });
    // (method, path, body, expectation). Buys use a key per identity, so each is a new order.
    let routes: Vec<(Method, String, Option<Value>, Expect)> = vec![
        (Method::GET, "/healthz".into(), None, Expect::Public(200)),
        (Method::GET, "/readyz".into(), None, Expect::Public(200)),
        (
            Method::GET,
            "/api/openapi.json".into(),
            None,
            Expect::Public(200),
        ),
        (Method::GET, "/metrics".into(), None, Expect::Public(200)),
        // The dashboard page is static and public; everything it shows comes from admin routes.
        (Method::GET, "/admin".into(), None, Expect::Public(200)),
        (
            Method::GET,
            format!("/sales/{sale}"),
            None,
            Expect::Public(200),
        ),
        (
            Method::GET,
            format!("/api/sales/{sale}/status"),
            None,
            Expect::Public(200),
        ),
        (Method::POST, path.clone(), None, Expect::AnyBuyer(202)),
        (
            Method::GET,
            format!("/api/orders/{order_a}"),
            None,
            Expect::OwnerA(200),
        ),
        (
            Method::POST,
            format!("/api/orders/{order_a}/pay"),
            Some(json!({"payment_id": "pay-a"})),
            Expect::OwnerA(200),
        ),
        (
            Method::GET,
            "/api/admin/sales".into(),
            None,
            Expect::AdminOnly(200),
        ),
        (
            Method::POST,
            "/api/admin/sales".into(),
            Some(new_sale),
            Expect::AdminOnly(201),
        ),
        (
            Method::GET,
            format!("/api/admin/sales/{sale}"),
            None,
            Expect::AdminOnly(200),
        ),
        (
            Method::PATCH,
            format!("/api/admin/sales/{sale}"),
            Some(json!({"name": "Renamed"})),
            // Live sales cannot be edited: the admin gets the business answer, others 401.
            Expect::AdminOnly(409),
        ),
        (
            Method::GET,
            format!("/api/admin/sales/{sale}/orders"),
            None,
            Expect::AdminOnly(200),
        ),
        (
            Method::POST,
            format!("/api/admin/sales/{sale}/start"),
            None,
            Expect::AdminOnly(409),
        ),
        (
            Method::GET,
            "/api/admin/writers".into(),
            None,
            Expect::AdminOnly(200),
        ),
        (
            Method::PUT,
            "/api/admin/writers".into(),
            Some(json!({"count": 2})),
            Expect::AdminOnly(200),
        ),
        (
            Method::POST,
            format!("/api/admin/sales/{sale}/stop"),
            None,
            Expect::AdminOnly(200),
        ),
    ];
    let mut mismatches = String::new();
    let mut checked = 0;
    for (method, route, body, expect) in &routes {
        for who in EVERYONE {
            let mut request = app.http.request(method.clone(), app.url(route));
            if let Some(token) = bearer(who) {
                request = request.bearer_auth(token);
            }
            if route.contains("/buy/") {
                request = request.header("Idempotency-Key", format!("matrix-{who:?}"));
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let (status, answer) = read(request.send().await.unwrap()).await;
            checked += 1;
            let wanted = expect.status_for(who);
            if status.as_u16() != wanted {
                let _ = writeln!(
                    mismatches,
                    "{method} {route} as {who:?}: {status}, wanted {wanted}: {answer}"
                );
            }
            let text = answer.to_string();
            for secret in [ADMIN_TOKEN, BUYER_SECRET] {
                assert!(!text.contains(secret), "{method} {route} leaked a secret");
            }
        }
    }
    // The dashboard's event stream (admin only) streams for up to an hour, so its admin answer
    // is checked by its status line alone; everyone else gets 401 at once.
    let events = format!("/api/admin/sales/{sale}/events");
    for who in EVERYONE {
        let mut request = app.http.get(app.url(&events));
        if let Some(token) = bearer(who) {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let wanted = Expect::AdminOnly(200).status_for(who);
        if response.status().as_u16() != wanted {
            let _ = writeln!(
                mismatches,
                "GET {events} as {who:?}: {}, wanted {wanted}",
                response.status()
            );
        }
        checked += 1;
    }
    assert!(mismatches.is_empty(), "{mismatches}");
    assert_eq!(checked, (routes.len() + 1) * EVERYONE.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_development_login_exists_only_when_enabled() {
    let with = TestApp::spawn().await; // test servers turn it on
    let response = with
        .http
        .post(with.url("/api/dev/buyer-token"))
        .json(&json!({"buyer_id": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // The same configuration with the login off (as `flashsale serve` has it by default).
    let mut config = with.config.clone();
    config.dev_login = false;
    let dir = tempfile::tempdir().unwrap();
    config.data_dir = dir.path().join("data");
    config.listen = "127.0.0.1:0".parse().unwrap();
    let running = flashsale::app::start(&config).await.unwrap();
    let response = with
        .http
        .post(format!("http://{}/api/dev/buyer-token", running.addr))
        .json(&json!({"buyer_id": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    running.stop().await;
}

/// Runs the real binary with debug logs, sends requests carrying wrong and right secrets, and
/// checks that no secret appears in what it logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs() {
    let dir = tempfile::tempdir().unwrap();
    let buy_path_secret = "log-test-buy-path-secret-0123456789abcdef";
    let server = ServerProcess::start(
        dir.path(),
        &[("FLASHSALE_BUY_PATH_SECRET", buy_path_secret)],
        "debug",
    )
    .await;
    let base = server.base.clone();
    let http = reqwest::Client::new();
    let tokens = BuyerTokens::new(BUYER_SECRET.as_bytes());
    let now = time::OffsetDateTime::now_utc();
    let buyer = tokens.issue(
        &BuyerId::parse("alice").unwrap(),
        now,
        now + time::Duration::hours(1),
    );
    let wrong_admin = format!("{ADMIN_TOKEN}-but-wrong");
    for (path, token) in [
        ("/api/admin/sales", ADMIN_TOKEN),
        ("/api/admin/sales", wrong_admin.as_str()),
        ("/api/admin/sales", buyer.as_str()),
        (
            "/api/orders/00000000-0000-0000-0000-000000000000",
            buyer.as_str(),
        ),
        (
            "/api/orders/00000000-0000-0000-0000-000000000000",
            ADMIN_TOKEN,
        ),
    ] {
        http.get(format!("{base}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
    }
    // SIGTERM, so the logs of a graceful stop are included.
    let pid = server.child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let output = tokio::time::timeout(std::time::Duration::from_secs(20), server.logs_at_exit())
        .await
        .expect("the server stops on SIGTERM");
    assert!(
        output.contains("flashsale serving"),
        "debug logs were captured: {output}"
    );
    for secret in [ADMIN_TOKEN, BUYER_SECRET, buy_path_secret, buyer.as_str()] {
        assert!(!output.contains(secret), "a secret appeared in the logs");
    }
}
