//! The whole life of a sale through HTTP: create → upcoming (no buy path) → live → buy →
//! order → pay; and buy → expire → stock back → someone else buys it.

use crate::support::{TestApp, error_code};
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_go_live_buy_and_pay() {
    let app = TestApp::spawn().await;
    let sale = app.create_sale(5, 1, time::Duration::seconds(30)).await;

    let status = app.status(&sale).await;
    assert_eq!(status["phase"], "upcoming");
    assert!(
        status.get("buy_path").is_none(),
        "no buy path before the start: {status}"
    );

    // The sale page is the same for everyone and cacheable.
    let page = app
        .http
        .get(app.url(&format!("/sales/{sale}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("public")
    );
    let etag = page.headers()["etag"].clone();
    assert!(page.text().await.unwrap().contains("Test phone"));
    let again = app
        .http
        .get(app.url(&format!("/sales/{sale}")))
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    app.advance(time::Duration::seconds(30));
    let status = app.status(&sale).await;
    assert_eq!(status["phase"], "live");
    let path = status["buy_path"].as_str().unwrap().to_owned();

    let alice = app.buyer("alice");
    let (code, accepted) = app.buy(&path, &alice, "k1").await;
    assert_eq!(code, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["status"], "queued");
    let order_id = accepted["order_id"].as_str().unwrap().to_owned();

    let order = app.wait_written(&alice, &order_id).await;
    assert_eq!(order["status"], "pending_payment");
    assert_eq!(order["sale_id"], sale.as_str());

    let (code, paid) = app.pay(&alice, &order_id, "pay-1").await;
    assert_eq!(code, StatusCode::OK, "{paid}");
    assert_eq!(paid["status"], "paid");
    // Paying again with the same payment id is the same answer; another id is a conflict.
    assert_eq!(
        app.pay(&alice, &order_id, "pay-1").await,
        (StatusCode::OK, paid)
    );
    let (code, body) = app.pay(&alice, &order_id, "pay-2").await;
    assert_eq!(
        (code, error_code(&body)),
        (StatusCode::CONFLICT, "already_paid")
    );

    let counters = app.sale(&sale).await["counters"].clone();
    assert_eq!(counters["stock_total"], 5);
    assert_eq!(counters["available"], 4);
    assert_eq!(counters["paid"], 1);
    assert_eq!(counters["pending_payment"], 0);
    assert_eq!(counters["queued"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_order_expires_and_its_unit_is_sold_again() {
    let app = TestApp::spawn().await;
    let (sale, path) = app.live_sale(1, 1).await;
    let (alice, bob) = (app.buyer("alice"), app.buyer("bob"));

    let (code, accepted) = app.buy(&path, &alice, "a1").await;
    assert_eq!(code, StatusCode::ACCEPTED);
    let alice_order = accepted["order_id"].as_str().unwrap().to_owned();
    app.wait_written(&alice, &alice_order).await;

    let (code, body) = app.buy(&path, &bob, "b1").await;
    assert_eq!((code, error_code(&body)), (StatusCode::GONE, "sold_out"));
    assert_eq!(app.status(&sale).await["phase"], "sold_out");

    // The payment window (600 s) passes; the reaper expires the order and returns the unit.
    app.advance(time::Duration::seconds(601));
    app.let_reaper_run().await;
    let (_, order) = app.order(&alice, &alice_order).await;
    assert_eq!(order["status"], "expired");
    let (code, body) = app.pay(&alice, &alice_order, "late").await;
    assert_eq!(
        (code, error_code(&body)),
        (StatusCode::CONFLICT, "payment_window_closed")
    );
    assert_eq!(app.status(&sale).await["phase"], "live");

    // Someone else buys the returned unit; it is returned exactly once, so only one can.
    let (code, body) = app.buy(&path, &bob, "b2").await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let carol = app.buyer("carol");
    let (code, body) = app.buy(&path, &carol, "c1").await;
    assert_eq!((code, error_code(&body)), (StatusCode::GONE, "sold_out"));
    // Alice's original request, retried, does not buy again.
    let (code, body) = app.buy(&path, &alice, "a1").await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(body["order_id"], alice_order.as_str());
    assert_eq!(body["status"], "expired");

    let counters = app.wait_drained(&sale).await["counters"].clone();
    assert_eq!(counters["expired"], 1);
    assert_eq!(counters["pending_payment"], 1);
    assert_eq!(counters["available"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_and_guessed_buy_paths_are_rejected() {
    let app = TestApp::spawn().await;
    let sale = app.create_sale(5, 1, time::Duration::minutes(10)).await;
    let alice = app.buyer("alice");
    for guess in ["buy", "AAAAAAAAAAAAAAAAAAAAAA", "x", &"A".repeat(200)] {
        let (code, body) = app
            .buy(&format!("/api/sales/{sale}/buy/{guess}"), &alice, "k")
            .await;
        assert_eq!(
            (code, error_code(&body)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{guess}"
        );
    }
    // Once live, the path handed out works; the old guesses still do not.
    app.advance(time::Duration::minutes(10));
    let path = app.status(&sale).await["buy_path"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, _) = app
        .buy(
            &format!("/api/sales/{sale}/buy/AAAAAAAAAAAAAAAAAAAAAA"),
            &alice,
            "k",
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _) = app.buy(&path, &alice, "k").await;
    assert_eq!(code, StatusCode::ACCEPTED);
    // After the end the path no longer sells.
    app.advance(time::Duration::hours(2));
    let bob = app.buyer("bob");
    let (code, body) = app.buy(&path, &bob, "k").await;
    assert_eq!(
        (code, error_code(&body)),
        (StatusCode::CONFLICT, "not_live")
    );
    assert_eq!(app.status(&sale).await["phase"], "ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_drains_the_queue_and_restart_keeps_everything() {
    let mut app = TestApp::spawn().await;
    let (sale, path) = app.live_sale(10, 5).await;
    // No writers: accepted reservations wait in the durable queue.
    let (code, _) = app
        .admin(
            reqwest::Method::PUT,
            "/api/admin/writers",
            Some(serde_json::json!({"count": 0})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let mut orders = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let token = app.buyer(name);
        let (code, body) = app.buy(&path, &token, "k1").await;
        assert_eq!(code, StatusCode::ACCEPTED);
        orders.push((token, body["order_id"].as_str().unwrap().to_owned()));
    }
    assert_eq!(
        app.order(&orders[0].0, &orders[0].1).await.1["status"],
        "queued"
    );
    app.stop().await;
    app.start().await;
    for (token, id) in &orders {
        let (code, order) = app.order(token, id).await;
        assert_eq!(
            (code, order["status"].as_str()),
            (StatusCode::OK, Some("pending_payment")),
            "{order}"
        );
    }
    let counters = app.sale(&sale).await["counters"].clone();
    assert_eq!(
        (
            counters["available"].as_u64(),
            counters["pending_payment"].as_u64()
        ),
        (Some(7), Some(3))
    );
}
