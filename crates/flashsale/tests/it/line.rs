//! The fair line end to end on the embedded default: join, the draw at the start, admission
//! in order, buying only with one's own admission, passing, back-fill, and the admins' control.

use crate::support::{TestApp, error_code, read, rfc3339};
use flashsale_core::line::{LineId, Seed, draw_order};
use flashsale_core::{BuyerId, SaleId};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::Duration;

/// A sale whose line opens in a minute and which starts in ten, with a 5 s payment window.
async fn sale_with_line(app: &TestApp, stock: u32, admit_per_sec: Value) -> String {
    let body = app
        .create_lined_sale(
            json!({ "stock": stock, "payment_window_secs": 5 }),
            json!({ "admit_per_sec": admit_per_sec }),
        )
        .await;
    assert_eq!(body["waiting_room"]["admission_secs"], 60, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn join(app: &TestApp, sale: &str, token: &str) -> (StatusCode, Value) {
    read(
        app.http
            .post(app.url(&format!("/api/sales/{sale}/line")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn me(app: &TestApp, sale: &str, token: &str) -> (StatusCode, Value) {
    let response = app
        .http
        .get(app.url(&format!("/api/sales/{sale}/line/me")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    if response.status() == StatusCode::OK {
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert!(response.headers().contains_key("retry-after"));
    }
    read(response).await
}

#[tokio::test]
async fn the_pre_queue_is_drawn_by_the_published_seed_and_admitted_in_order() {
    let app = TestApp::spawn().await;
    let sale = sale_with_line(&app, 3, json!(2)).await;
    let names: Vec<String> = (0..6).map(|n| format!("liner-{n}")).collect();
    let tokens: Vec<String> = names.iter().map(|n| app.buyer(n)).collect();

    // Before the line opens: nobody joins, and nothing of the draw is public.
    let (status, body) = join(&app, &sale, &tokens[0]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "line_not_open");
    let line = &app.status(&sale).await["line"];
    assert!(
        line["commitment"].is_null() && line["seed"].is_null(),
        "{line}"
    );
    assert!(app.status(&sale).await["buy_path"].is_null());

    // The line opens: the commitment is published, the seed is not.
    app.advance(Duration::minutes(2));
    let commitment = app.status(&sale).await["line"]["commitment"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(app.status(&sale).await["line"]["seed"].is_null());
    for token in &tokens {
        let (status, body) = join(&app, &sale, token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["state"], "pre_queue", "{body}");
        assert!(body["position"].is_null(), "{body}");
    }
    // Joining again keeps the one place.
    let (_, again) = join(&app, &sale, &tokens[3]).await;
    assert_eq!(again["state"], "pre_queue");

    // A buy before one's turn is refused before anything is touched.
    let (status, body) = app
        .buy(
            &format!("/api/sales/{sale}/buy/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            &tokens[0],
            "k0",
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(error_code(&body), "not_your_turn");

    // The start: the seed is revealed, matches the commitment, and orders the pre-queue.
    app.advance(Duration::minutes(8));
    let status = app.status(&sale).await;
    assert!(
        status["buy_path"].is_null(),
        "a sale with a line has no public buy path"
    );
    let seed = Seed::parse(status["line"]["seed"].as_str().unwrap()).unwrap();
    assert_eq!(seed.commitment(), commitment);
    let sale_id = SaleId::parse(&sale).unwrap();
    let ids: Vec<LineId> = names
        .iter()
        .map(|n| LineId::of(sale_id, &BuyerId::parse(n).unwrap()))
        .collect();
    let drawn = draw_order(&seed, ids.iter().copied());
    let mut by_position: Vec<usize> = vec![usize::MAX; names.len()];
    for (n, token) in tokens.iter().enumerate() {
        let (status, body) = me(&app, &sale, token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let position = body["position"].as_u64().unwrap();
        let expected = drawn.iter().position(|id| *id == ids[n]).unwrap() as u64 + 1;
        assert_eq!(
            position, expected,
            "{} is where the seeded draw puts them",
            names[n]
        );
        by_position[position as usize - 1] = n;
        // A full second's worth (2) is let through at the start. Of the 3 units the two
        // admitted may take two; the third is for position 3; the rest are out of reach
        // unless someone passes.
        assert_eq!(body["admitted_up_to"], 2, "{body}");
        let state = match position {
            1 | 2 => "admitted",
            3 => "waiting",
            _ => "sold_out",
        };
        assert_eq!(body["state"], state, "{body}");
    }

    // The first in line buys with their own buy path; the second cannot use it.
    let first = by_position[0];
    let second = by_position[1];
    let (_, first_me) = me(&app, &sale, &tokens[first]).await;
    let first_path = first_me["buy_path"].as_str().unwrap().to_owned();
    assert!(first_me["admitted_until"].is_string());
    let (status, body) = app.buy(&first_path, &tokens[second], "k1").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(error_code(&body), "not_your_turn");
    let (status, body) = app.buy(&first_path, &tokens[first], "k1").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // A retry of the accepted buy answers the same order.
    let (status, replay) = app.buy(&first_path, &tokens[first], "k1").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(replay["order_id"], body["order_id"]);

    // The second lets the admission run out: it passes, and the line moves on in order.
    let (_, second_me) = me(&app, &sale, &tokens[second]).await;
    let second_path = second_me["buy_path"].as_str().unwrap().to_owned();
    app.advance(Duration::seconds(61));
    let (_, second_me) = me(&app, &sale, &tokens[second]).await;
    assert_eq!(second_me["state"], "passed", "{second_me}");
    let (status, body) = app.buy(&second_path, &tokens[second], "k2").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (_, third_me) = me(&app, &sale, &tokens[by_position[2]]).await;
    assert_eq!(third_me["state"], "admitted", "{third_me}");
    assert!(third_me["admitted_up_to"].as_u64().unwrap() >= 3);

    // The admin view shows the line, and the layer that refused the turnless buys.
    let view = app.sale(&sale).await;
    assert_eq!(view["layers"]["not_your_turn"], 3, "{view}");
}

#[tokio::test]
async fn a_returned_unit_goes_to_the_next_in_line() {
    let app = TestApp::spawn().await;
    let sale = sale_with_line(&app, 1, json!(100)).await;
    app.advance(Duration::minutes(2));
    let tokens: Vec<String> = (0..3)
        .map(|n| app.buyer(&format!("backfill-{n}")))
        .collect();
    for token in &tokens {
        assert_eq!(join(&app, &sale, token).await.0, StatusCode::OK);
    }
    app.advance(Duration::minutes(8));
    let mut order = Vec::new();
    for token in &tokens {
        let (_, body) = me(&app, &sale, token).await;
        order.push((body["position"].as_u64().unwrap(), token.clone()));
    }
    order.sort();
    let (first, second, third) = (&order[0].1, &order[1].1, &order[2].1);
    // One unit: the first is admitted; the second may still get it if the first does not
    // pay; the third is out of reach.
    let (_, first_me) = me(&app, &sale, first).await;
    assert_eq!(first_me["state"], "admitted", "{first_me}");
    let (status, body) = app
        .buy(first_me["buy_path"].as_str().unwrap(), first, "only")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let order_id = body["order_id"].as_str().unwrap().to_owned();
    app.wait_written(first, &order_id).await;
    // Past this node's copy of the line (a quarter second).
    app.advance(Duration::milliseconds(300));
    let (_, second_me) = me(&app, &sale, second).await;
    assert_eq!(second_me["state"], "waiting", "{second_me}");
    let (_, third_me) = me(&app, &sale, third).await;
    assert_eq!(third_me["state"], "sold_out", "{third_me}");

    // The first does not pay: the order expires, its unit comes back, and the second is
    // admitted for it.
    app.advance(Duration::seconds(6));
    app.let_reaper_run().await;
    let mut admitted = false;
    for _ in 0..50 {
        app.advance(Duration::milliseconds(300));
        let (_, second_me) = me(&app, &sale, second).await;
        if second_me["state"] == "admitted" {
            admitted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(admitted, "the returned unit went to the next in line");
    let (_, third_me) = me(&app, &sale, third).await;
    assert_eq!(third_me["state"], "sold_out", "{third_me}");
}

#[tokio::test]
async fn the_admins_pause_and_re_rate_the_line() {
    let app = TestApp::spawn().await;
    let sale = sale_with_line(&app, 50, json!("auto")).await;
    app.advance(Duration::minutes(2));
    let control = |body: Value| {
        let app = &app;
        let sale = sale.clone();
        async move {
            app.admin(
                reqwest::Method::POST,
                &format!("/api/admin/sales/{sale}/line"),
                Some(body),
            )
            .await
        }
    };
    let (status, body) = control(json!({ "paused": true, "admit_per_sec": 1 })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["paused"], true, "{body}");
    assert_eq!(body["admit_per_sec"], 1, "{body}");
    let tokens: Vec<String> = (0..5).map(|n| app.buyer(&format!("paused-{n}"))).collect();
    for token in &tokens {
        assert_eq!(join(&app, &sale, token).await.0, StatusCode::OK);
    }
    app.advance(Duration::minutes(8));
    for token in &tokens {
        let (_, body) = me(&app, &sale, token).await;
        assert_eq!(
            body["state"], "waiting",
            "a paused line admits nobody: {body}"
        );
    }
    let (status, body) = control(json!({ "paused": false })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["admit_per_sec"], 1, "the rate stays as set: {body}");
    // Resuming lets through at most the second's worth held while paused, then one a second.
    assert_eq!(body["admitted_up_to"], 1, "{body}");
    app.advance(Duration::seconds(1));
    let mut admitted = 0;
    for token in &tokens {
        let (_, body) = me(&app, &sale, token).await;
        admitted += usize::from(body["state"] == "admitted");
    }
    assert_eq!(admitted, 2, "one at the resume, one a second after");
    // Bad control input changes nothing.
    let (status, body) = control(json!({ "admit_per_sec": 0 })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = control(json!({ "paused": "yes" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn line_input_is_checked_and_a_sale_without_one_has_none() {
    let app = TestApp::spawn().await;
    let now = app.clock_now();
    let starts_at = now + Duration::minutes(10);
    let base = json!({
        "name": "Phone",
        "price_cents": 9900,
        "stock": 5,
        "starts_at": rfc3339(starts_at),
        "ends_at": rfc3339(starts_at + Duration::hours(1)),
        "per_buyer_limit": 1,
        "payment_window_secs": 60,
    });
    let room = json!({
        "opens_at": rfc3339(now + Duration::minutes(1)),
        "admit_per_sec": 10,
        "admission_secs": 60,
    });
    let with_room = |change: &dyn Fn(&mut Value)| {
        let mut room = room.clone();
        change(&mut room);
        let mut body = base.clone();
        body["waiting_room"] = room;
        body
    };
    for (bad, field) in [
        (
            with_room(&|r| r["opens_at"] = json!(rfc3339(starts_at))),
            "waiting_room.opens_at",
        ),
        (
            with_room(&|r| r["admit_per_sec"] = json!(0)),
            "waiting_room.admit_per_sec",
        ),
        (
            with_room(&|r| r["admit_per_sec"] = json!("fast")),
            "admit_per_sec",
        ),
        (
            with_room(&|r| r["admission_secs"] = json!(5)),
            "waiting_room.admission_secs",
        ),
        (with_room(&|r| r["extra"] = json!(1)), "extra"),
    ] {
        let (status, body) = app
            .admin(reqwest::Method::POST, "/api/admin/sales", Some(bad))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(field),
            "{body}"
        );
    }
    let (status, _) = app
        .admin(reqwest::Method::GET, "/api/admin/sales", None)
        .await;
    assert_eq!(status, StatusCode::OK);

    // Without a waiting room there is no line.
    let (status, body) = app
        .admin(
            reqwest::Method::POST,
            "/api/admin/sales",
            Some(base.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let plain = body["id"].as_str().unwrap().to_owned();
    let token = app.buyer("someone");
    let (status, body) = join(&app, &plain, &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error_code(&body), "no_line");

    // A sale with a line may be edited until the line opens, then no more.
    let (status, body) = app
        .admin(
            reqwest::Method::POST,
            "/api/admin/sales",
            Some(with_room(&|_| {})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let lined = body["id"].as_str().unwrap().to_owned();
    let patch = |price: u64| Some(json!({ "price_cents": price }));
    let path = format!("/api/admin/sales/{lined}");
    let (status, body) = app.admin(reqwest::Method::PATCH, &path, patch(100)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.advance(Duration::minutes(2));
    let (status, body) = app.admin(reqwest::Method::PATCH, &path, patch(200)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "sale_not_editable");
    let (status, body) = me(&app, &lined, &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error_code(&body), "not_in_line");
}

#[tokio::test]
async fn a_restart_keeps_every_place_and_admission() {
    let mut app = TestApp::spawn().await;
    let sale = sale_with_line(&app, 5, json!(2)).await;
    app.advance(Duration::minutes(2));
    let tokens: Vec<String> = (0..4).map(|n| app.buyer(&format!("restart-{n}"))).collect();
    for token in &tokens {
        assert_eq!(join(&app, &sale, token).await.0, StatusCode::OK);
    }
    app.advance(Duration::minutes(8));
    let mut before = Vec::new();
    for token in &tokens {
        let (_, body) = me(&app, &sale, token).await;
        before.push((body["position"].clone(), body["state"].clone()));
    }
    app.stop().await;
    app.start().await;
    for (token, (position, state)) in tokens.iter().zip(&before) {
        let (status, body) = me(&app, &sale, token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(&body["position"], position, "{body}");
        assert_eq!(&body["state"], state, "{body}");
    }
    // A join after the restart takes the next place, not one of the kept ones.
    let (_, late) = join(&app, &sale, &app.buyer("restart-late")).await;
    assert_eq!(late["position"], 5, "{late}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_share_one_line() {
    use crate::support::backends::{SharedBackends, until_every_node_has_the_line};

    let shared = SharedBackends::create().await;
    let (clock, nodes) = shared.nodes(3).await;
    let sale = sale_with_line(&nodes[0], 2, json!(100)).await;
    clock.advance(Duration::minutes(2));
    until_every_node_has_the_line(&nodes, &sale).await;
    // Every buyer joins on every node, at once: one place each.
    let names: Vec<String> = (0..30).map(|n| format!("node-liner-{n}")).collect();
    let tokens: Vec<(usize, String)> = names
        .iter()
        .flat_map(|name| (0..3).map(move |n| (n, name.clone())))
        .map(|(n, name)| (n, nodes[n].buyer(&name)))
        .collect();
    let joins: Vec<_> = tokens
        .iter()
        .map(|(n, token)| join(&nodes[*n], &sale, token))
        .collect();
    for (status, body) in futures_util::future::join_all(joins).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    clock.advance(Duration::minutes(8));
    let mut positions = Vec::new();
    for (n, name) in names.iter().enumerate() {
        let node = &nodes[n % 3];
        let (_, body) = me(node, &sale, &node.buyer(name)).await;
        let position = body["position"].as_u64().unwrap();
        // The same place on every node.
        for other in &nodes {
            let (_, there) = me(other, &sale, &other.buyer(name)).await;
            assert_eq!(there["position"], position, "{there}");
        }
        positions.push((position, name.clone()));
    }
    positions.sort();
    let drawn: Vec<u64> = positions.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        drawn,
        (1..=30).collect::<Vec<u64>>(),
        "gap-free, one per buyer"
    );
    // The first in line buys on node 2 with the ticket node 0 gave.
    let first = &positions[0].1;
    let (_, first_me) = me(&nodes[0], &sale, &nodes[0].buyer(first)).await;
    assert_eq!(first_me["state"], "admitted", "{first_me}");
    let (status, body) = nodes[2]
        .buy(
            first_me["buy_path"].as_str().unwrap(),
            &nodes[2].buyer(first),
            "n",
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}
