//! The buy path under pressure: a crowd racing for little stock, idempotent retries, the
//! per-buyer limit, credentials, and a full queue.

use crate::support::{TestApp, error_code};
use reqwest::StatusCode;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_buys_from_five_hundred_buyers_sell_exactly_the_stock() {
    let app = Arc::new(TestApp::spawn().await);
    let (sale, path) = app.live_sale(100, 2).await;
    let buyers: Vec<String> = (0..500).map(|n| app.buyer(&format!("buyer-{n}"))).collect();

    let mut tasks = Vec::new();
    for attempt in 0..2000 {
        let (app, path) = (app.clone(), path.clone());
        let buyer = attempt % 500;
        let token = buyers[buyer].clone();
        tasks.push(tokio::spawn(async move {
            let (code, body) = app.buy(&path, &token, &format!("key-{attempt}")).await;
            (buyer, code, body)
        }));
    }
    let mut accepted: HashMap<usize, Vec<String>> = HashMap::new();
    let mut codes: HashMap<StatusCode, usize> = HashMap::new();
    for task in tasks {
        let (buyer, code, body) = task.await.unwrap();
        *codes.entry(code).or_default() += 1;
        if code == StatusCode::ACCEPTED {
            // A buyer's repeats within the window get the same order back: count orders once.
            let order = body["order_id"].as_str().unwrap().to_owned();
            let orders = accepted.entry(buyer).or_default();
            if !orders.contains(&order) {
                orders.push(order);
            }
        } else {
            assert!(
                matches!(error_code(&body), "sold_out" | "limit_reached"),
                "unexpected answer {code}: {body}"
            );
        }
    }
    let total: usize = accepted.values().map(Vec::len).sum();
    assert_eq!(total, 100, "answers: {codes:?}");
    assert!(
        accepted.values().all(|orders| orders.len() <= 2),
        "a buyer got more than the limit"
    );

    let counters = app.wait_drained(&sale).await["counters"].clone();
    assert_eq!(counters["pending_payment"], 100);
    assert_eq!(counters["available"], 0);
    let mut seen = HashSet::new();
    for (buyer, orders) in &accepted {
        for id in orders {
            assert!(seen.insert(id.clone()), "order {id} acknowledged twice");
            let (code, order) = app.order(&buyers[*buyer], id).await;
            assert_eq!(
                (code, order["status"].as_str()),
                (StatusCode::OK, Some("pending_payment"))
            );
        }
    }
}

/// Fires 50 concurrent buys with different keys from one buyer; returns the distinct orders.
async fn fifty_concurrent_buys_from_one_buyer(
    app: Arc<TestApp>,
    limit: u32,
) -> (String, HashSet<String>) {
    let (sale, path) = app.live_sale(100, limit).await;
    let token = app.buyer("greedy");
    let tasks: Vec<_> = (0..50)
        .map(|n| {
            let (app, path, token) = (app.clone(), path.clone(), token.clone());
            tokio::spawn(async move { app.buy(&path, &token, &format!("k{n}")).await })
        })
        .collect();
    let mut orders = HashSet::new();
    for task in tasks {
        let (code, body) = task.await.unwrap();
        if code == StatusCode::ACCEPTED {
            orders.insert(body["order_id"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(
                (code, error_code(&body)),
                (StatusCode::CONFLICT, "limit_reached"),
                "{body}"
            );
        }
    }
    (sale, orders)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_buyer_firing_fifty_concurrent_buys_gets_at_most_the_limit() {
    // With every layer on, the buyer window folds the burst into one attempt.
    let app =
        Arc::new(TestApp::spawn_with(&[("FLASHSALE_FILTERS__BUYER_WINDOW_MS", "2000")]).await);
    let (sale, orders) = fifty_concurrent_buys_from_one_buyer(app.clone(), 3).await;
    assert_eq!(orders.len(), 1, "one real attempt per window: {orders:?}");
    let counters = app.wait_drained(&sale).await;
    assert_eq!(counters["counters"]["pending_payment"], 1);
    assert_eq!(counters["layers"]["window_hits"], 49);
    assert_eq!(counters["layers"]["stock_calls"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_window_the_ledger_alone_holds_the_limit_under_a_race() {
    // Window and buyer limiter off: 50 concurrent attempts reach the stock ledger at once.
    let app = Arc::new(
        TestApp::spawn_with(&[
            ("FLASHSALE_FILTERS__BUYER_WINDOW_MS", "0"),
            ("FLASHSALE_FILTERS__BUYER_RATE_PER_SEC", "0"),
        ])
        .await,
    );
    let (sale, orders) = fifty_concurrent_buys_from_one_buyer(app.clone(), 3).await;
    assert_eq!(orders.len(), 3);
    let view = app.wait_drained(&sale).await;
    assert_eq!(view["counters"]["pending_payment"], 3);
    assert_eq!(view["layers"]["stock_calls"], 50);
    assert_eq!(view["layers"]["limit_reached"], 47);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_the_same_idempotency_key_never_make_a_second_order() {
    let app = Arc::new(TestApp::spawn().await);
    let (sale, path) = app.live_sale(10, 5).await;
    let alice = app.buyer("alice");
    // Concurrent copies of one request: one wins, the rest see it in progress or accepted.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (app, path, alice) = (app.clone(), path.clone(), alice.clone());
            tokio::spawn(async move { app.buy(&path, &alice, "same-key").await })
        })
        .collect();
    let mut ids = HashSet::new();
    for task in tasks {
        let (code, body) = task.await.unwrap();
        match code {
            StatusCode::ACCEPTED => {
                ids.insert(body["order_id"].as_str().unwrap().to_owned());
            }
            StatusCode::CONFLICT => assert_eq!(error_code(&body), "request_in_progress"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ids.len(), 1);
    // Sequential retries, before and after the order is written: same order.
    let order_id = ids.into_iter().next().unwrap();
    let (code, body) = app.buy(&path, &alice, "same-key").await;
    assert_eq!(
        (code, body["order_id"].as_str()),
        (StatusCode::ACCEPTED, Some(order_id.as_str()))
    );
    app.wait_written(&alice, &order_id).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await; // past the buyer window
    let (code, body) = app.buy(&path, &alice, "same-key").await;
    assert_eq!(
        (code, body["order_id"].as_str()),
        (StatusCode::ACCEPTED, Some(order_id.as_str()))
    );
    assert_eq!(body["status"], "pending_payment");
    // The same key from another buyer is another request.
    let (code, body) = app.buy(&path, &app.buyer("bob"), "same-key").await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_ne!(body["order_id"].as_str(), Some(order_id.as_str()));
    let counters = app.wait_drained(&sale).await["counters"].clone();
    assert_eq!(
        (
            counters["pending_payment"].as_u64(),
            counters["available"].as_u64()
        ),
        (Some(2), Some(8))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked_and_orders_are_private() {
    let app = TestApp::spawn().await;
    let (sale, path) = app.live_sale(10, 1).await;
    let post = |token: Option<String>, key: Option<&'static str>| {
        let mut request = app.http.post(app.url(&path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        async move { crate::support::read(request.send().await.unwrap()).await }
    };
    let (code, body) = post(None, Some("k")).await;
    assert_eq!(
        (code, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (code, _) = post(Some("garbage".into()), Some("k")).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let now = app.clock_now();
    let alice_id = flashsale_core::BuyerId::parse("alice").unwrap();
    let expired = app.tokens.issue(
        &alice_id,
        now - time::Duration::hours(2),
        now - time::Duration::hours(1),
    );
    let (code, body) = post(Some(expired), Some("k")).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    let forged = flashsale_core::tokens::BuyerTokens::new(b"not-the-shop-secret-0123456789abcdef")
        .issue(&alice_id, now, now + time::Duration::hours(1));
    let (code, _) = post(Some(forged), Some("k")).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, body) = post(Some(app.buyer("alice")), None).await;
    assert_eq!(
        (code, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let (code, _) = post(Some(app.buyer("alice")), Some("has space")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);

    let alice = app.buyer("alice");
    let (code, body) = app.buy(&path, &alice, "k").await;
    assert_eq!(code, StatusCode::ACCEPTED);
    let order_id = body["order_id"].as_str().unwrap().to_owned();
    let bob = app.buyer("bob");
    assert_eq!(
        app.order(&bob, &order_id).await.0,
        StatusCode::NOT_FOUND,
        "queued order is private"
    );
    app.wait_written(&alice, &order_id).await;
    assert_eq!(
        app.order(&bob, &order_id).await.0,
        StatusCode::NOT_FOUND,
        "written order is private"
    );
    let (code, _) = app.pay(&bob, &order_id, "p").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(
        app.order(&alice, "not-a-uuid").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.sale(&sale).await["counters"]["paid"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_fails_fast_with_retry_after_and_takes_nothing() {
    // Shedding off, so the queue itself answers "full".
    let app = TestApp::spawn_with(&[
        ("FLASHSALE_QUEUE__CAPACITY_RESERVATIONS", "3"),
        ("FLASHSALE_WRITERS__COUNT", "0"),
        ("FLASHSALE_FILTERS__SHED_QUEUE_FILL_PERCENT_START", "100"),
        ("FLASHSALE_FILTERS__BUYER_WINDOW_MS", "0"),
    ])
    .await;
    let (sale, path) = app.live_sale(10, 10).await;
    let alice = app.buyer("alice");
    for n in 0..3 {
        assert_eq!(
            app.buy(&path, &alice, &format!("k{n}")).await.0,
            StatusCode::ACCEPTED
        );
    }
    let response = app
        .http
        .post(app.url(&path))
        .bearer_auth(&alice)
        .header("Idempotency-Key", "k3")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let (_, body) = crate::support::read(response).await;
    assert_eq!(error_code(&body), "overloaded");
    assert_eq!(
        app.sale(&sale).await["counters"]["available"],
        7,
        "the refused buy took no unit"
    );
    // Once writers drain the queue, the same request goes through.
    let (code, _) = app
        .admin(
            reqwest::Method::PUT,
            "/api/admin/writers",
            Some(serde_json::json!({"count": 1})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    app.wait_drained(&sale).await;
    assert_eq!(app.buy(&path, &alice, "k3").await.0, StatusCode::ACCEPTED);
}
