//! Proof of work for a place in line, end to end: a challenge per buyer, a join that pays with
//! a solution, and every bad solution refused with its own 4xx and no change; on the embedded
//! default and across nodes sharing a Redis line.

use crate::support::{TestApp, error_code, read};
use flashsale_core::pow;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::Duration;

/// Cheap enough for a test (about 256 hashes), and still refuses most nonces.
const TEST_BITS: u8 = 8;

/// A sale whose line opens in a minute, starting in ten, asking `bits` of proof of work.
async fn sale_with_pow(app: &TestApp, bits: u8) -> String {
    let body = app
        .create_lined_sale(json!({}), json!({ "pow_difficulty_bits": bits }))
        .await;
    assert_eq!(body["waiting_room"]["pow_difficulty_bits"], bits, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn challenge(app: &TestApp, sale: &str, token: &str) -> (StatusCode, Value) {
    let response = app
        .http
        .get(app.url(&format!("/api/sales/{sale}/line/challenge")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    if response.status() == StatusCode::OK {
        assert_eq!(response.headers()["cache-control"], "no-store");
    }
    read(response).await
}

async fn join(app: &TestApp, sale: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = app
        .http
        .post(app.url(&format!("/api/sales/{sale}/line")))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await.unwrap()).await
}

async fn me(app: &TestApp, sale: &str, token: &str) -> (StatusCode, Value) {
    read(
        app.http
            .get(app.url(&format!("/api/sales/{sale}/line/me")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// A challenge solved as any client would: decimal nonces from 0.
fn solved(challenge: &Value) -> Value {
    let text = challenge["challenge"].as_str().unwrap();
    let bits = challenge["difficulty_bits"].as_u64().unwrap() as u8;
    let (nonce, _) = pow::solve(text, bits, 0, 1 << 24).expect("solvable");
    json!({ "challenge": text, "nonce": nonce })
}

/// A nonce that does not solve the challenge.
fn unsolved(challenge: &Value) -> Value {
    let text = challenge["challenge"].as_str().unwrap();
    let bits = challenge["difficulty_bits"].as_u64().unwrap() as u8;
    let nonce = (0u64..)
        .map(|n| n.to_string())
        .find(|nonce| !pow::solves(text, nonce, bits))
        .unwrap();
    json!({ "challenge": text, "nonce": nonce })
}

#[tokio::test]
async fn a_place_costs_a_solved_challenge_which_works_once() {
    let app = TestApp::spawn().await;
    let sale = sale_with_pow(&app, TEST_BITS).await;
    let (alice, bob, carol) = (
        app.buyer("pow-alice"),
        app.buyer("pow-bob"),
        app.buyer("pow-carol"),
    );
    // Before the line opens there is nothing to solve.
    let (status, body) = challenge(&app, &sale, &alice).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "line_not_open")
    );
    app.advance(Duration::minutes(2));
    assert_eq!(
        app.status(&sale).await["line"]["pow_difficulty_bits"],
        TEST_BITS
    );

    // Without a solution: refused, and nothing changed.
    let (status, body) = join(&app, &sale, &alice, None).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "challenge_required"),
        "{body}"
    );
    let (status, body) = me(&app, &sale, &alice).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_in_line")
    );

    let (status, theirs) = challenge(&app, &sale, &alice).await;
    assert_eq!(status, StatusCode::OK, "{theirs}");
    assert_eq!(theirs["difficulty_bits"], TEST_BITS);
    assert_eq!(
        theirs["challenge"].as_str().unwrap().len(),
        pow::CHALLENGE_CHARS
    );
    let expires_at = time::OffsetDateTime::parse(
        theirs["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(
        (expires_at - app.clock_now()).whole_seconds(),
        flashsale_service::CHALLENGE_EXPIRES_SECS
    );

    // Each bad solution has its own answer, and none takes a place.
    let (_, bobs) = challenge(&app, &sale, &bob).await;
    let other_sale = sale_with_pow(&app, TEST_BITS).await;
    app.advance(Duration::minutes(1));
    let (_, other_sales) = challenge(&app, &other_sale, &alice).await;
    let long_nonce = json!({
        "challenge": theirs["challenge"],
        "nonce": "7".repeat(pow::NONCE_BYTES_MAX + 1),
    });
    for (bad, status, code) in [
        (
            unsolved(&theirs),
            StatusCode::FORBIDDEN,
            "challenge_unsolved",
        ),
        (long_nonce, StatusCode::BAD_REQUEST, "invalid_request"),
        (solved(&bobs), StatusCode::FORBIDDEN, "challenge_invalid"),
        (
            solved(&other_sales),
            StatusCode::FORBIDDEN,
            "challenge_invalid",
        ),
        (
            json!({ "challenge": "x".repeat(44), "nonce": "1" }),
            StatusCode::FORBIDDEN,
            "challenge_invalid",
        ),
        (
            json!({ "challenge": "x".repeat(45), "nonce": "1" }),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({ "challenge": 5, "nonce": "1" }),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({ "challenge": theirs["challenge"], "nonce": "1", "extra": true }),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ] {
        let (got, body) = join(&app, &sale, &alice, Some(bad.clone())).await;
        assert_eq!((got, error_code(&body)), (status, code), "{bad}: {body}");
    }
    let (status, body) = read(
        app.http
            .post(app.url(&format!("/api/sales/{sale}/line")))
            .bearer_auth(&alice)
            .header("content-type", "text/plain")
            .body("hello")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    assert_eq!(me(&app, &sale, &alice).await.0, StatusCode::NOT_FOUND);

    // The solution buys a place; the same solution again is refused, the place stays; a
    // member's join without a solution tells the place.
    let paid = solved(&theirs);
    let (status, body) = join(&app, &sale, &alice, Some(paid.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "pre_queue");
    let (status, body) = join(&app, &sale, &alice, Some(paid)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "challenge_used"),
        "{body}"
    );
    let (status, body) = join(&app, &sale, &alice, None).await;
    assert_eq!(
        (status, &body["state"]),
        (StatusCode::OK, &json!("pre_queue"))
    );

    // An expired challenge, even solved, is refused.
    let (_, carols) = challenge(&app, &sale, &carol).await;
    app.advance(Duration::seconds(flashsale_service::CHALLENGE_EXPIRES_SECS));
    let (status, body) = join(&app, &sale, &carol, Some(solved(&carols))).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "challenge_expired"),
        "{body}"
    );
    assert_eq!(me(&app, &sale, &carol).await.0, StatusCode::NOT_FOUND);
    let summary = app.status(&sale).await;
    assert_eq!(summary["line"]["length"], 1, "{summary}");
}

#[tokio::test]
async fn a_sale_without_proof_of_work_hands_out_free_challenges_and_needs_none() {
    let app = TestApp::spawn().await;
    let sale = sale_with_pow(&app, 0).await;
    app.advance(Duration::minutes(2));
    assert_eq!(app.status(&sale).await["line"]["pow_difficulty_bits"], 0);
    let alice = app.buyer("free-alice");
    let (status, body) = challenge(&app, &sale, &alice).await;
    assert_eq!(
        (status, &body["difficulty_bits"]),
        (StatusCode::OK, &json!(0))
    );
    let (status, body) = join(&app, &sale, &alice, None).await;
    assert_eq!(
        (status, &body["state"]),
        (StatusCode::OK, &json!("pre_queue"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_challenge_works_once_across_nodes() {
    use crate::support::backends::{SharedBackends, until_every_node_has_the_line};

    let shared = SharedBackends::create().await;
    let (clock, nodes) = shared.nodes(2).await;
    let sale = sale_with_pow(&nodes[0], TEST_BITS).await;
    clock.advance(Duration::minutes(2));
    until_every_node_has_the_line(&nodes, &sale).await;
    let alice = nodes[0].buyer("nodes-pow-alice");
    // Issued by one node, checked by the other (one secret), used once across both.
    let (_, theirs) = challenge(&nodes[1], &sale, &alice).await;
    let paid = solved(&theirs);
    let (first, second) = tokio::join!(
        join(&nodes[0], &sale, &alice, Some(paid.clone())),
        join(&nodes[1], &sale, &alice, Some(paid.clone()))
    );
    let mut codes = [first, second].map(|(status, body)| {
        let code = if status == StatusCode::OK {
            body["state"].as_str().unwrap_or_default().to_owned()
        } else {
            error_code(&body).to_owned()
        };
        (status.as_u16(), code)
    });
    codes.sort();
    assert_eq!(
        codes,
        [
            (200, "pre_queue".to_owned()),
            (409, "challenge_used".to_owned())
        ]
    );
    let (status, body) = join(&nodes[1], &sale, &alice, None).await;
    assert_eq!(
        (status, &body["state"]),
        (StatusCode::OK, &json!("pre_queue"))
    );
    let bob = nodes[1].buyer("nodes-pow-bob");
    let (status, body) = join(&nodes[0], &sale, &bob, None).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "challenge_required")
    );
}

/// A flood of joins makes each new place dearer: one bit more at 1,000 joins a second across
/// the line, never past the sale's max, and back down once the flood stops. A challenge asks
/// the difficulty of the moment it was issued; the status shows the current one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_joins_raises_the_difficulty_up_to_its_max() {
    const FLOOD: usize = 1_000;
    let app = TestApp::spawn().await;
    let body = app
        .create_lined_sale(
            json!({}),
            json!({ "pow_difficulty_bits": 1, "pow_difficulty_bits_max": 2 }),
        )
        .await;
    let sale = body["id"].as_str().unwrap().to_owned();
    app.advance(Duration::minutes(2));
    let paid_join = |name: String| {
        let (app, sale) = (&app, &sale);
        async move {
            let token = app.buyer(&name);
            let (status, issued) = challenge(app, sale, &token).await;
            assert_eq!(status, StatusCode::OK, "{issued}");
            let (status, joined) = join(app, sale, &token, Some(solved(&issued))).await;
            assert_eq!(status, StatusCode::OK, "{joined}");
            issued["difficulty_bits"].as_u64().unwrap()
        }
    };
    let bits_now = || async {
        let (_, issued) = challenge(&app, &sale, &app.buyer("flood-asker")).await;
        let status = app.status(&sale).await;
        assert_eq!(
            status["line"]["pow_difficulty_bits"], issued["difficulty_bits"],
            "{status}"
        );
        issued["difficulty_bits"].as_u64().unwrap()
    };
    // The first join takes the join rate's first sample (the node's clock stands still).
    assert_eq!(paid_join("flood-first".to_owned()).await, 1);
    // A thousand more in the same second of the test's clock.
    let flood: Vec<_> = (0..FLOOD)
        .map(|n| paid_join(format!("flood-{n}")))
        .collect();
    let paid: Vec<u64> = futures_util::stream::iter(flood)
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(paid.iter().all(|bits| *bits == 1), "issued before the rise");
    assert_eq!(bits_now().await, 1, "the rate is sampled once a second");
    // A second later the next join moves the line, and the node samples 1,001 joins a second.
    app.advance(Duration::seconds(1));
    paid_join("flood-after".to_owned()).await;
    assert_eq!(bits_now().await, 2, "one bit more, and the max");
    // The flood is over: one join in the next second, and the difficulty is back at the base.
    app.advance(Duration::seconds(1));
    assert_eq!(paid_join("flood-calm".to_owned()).await, 2);
    assert_eq!(bits_now().await, 1);
}
