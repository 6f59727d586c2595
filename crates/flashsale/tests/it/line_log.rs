//! A line anyone can check, end to end: receipts in the join answer and `line/me`, the chain
//! heads in the status, `line/log` published from the start, and `flashsale verify-line`
//! passing an honest line and catching tampered copies of it; embedded and across nodes.

use crate::support::{TestApp, error_code, read};
use flashsale_bench::client::Target;
use flashsale_bench::verify_line::{VerifyLineArgs, check, download};
use flashsale_core::line::{JoinRecord, LineEvent, Seed, draw_order};
use flashsale_core::line_log::{PublishedEvent, verify};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::Duration;

/// A sale of `stock` units whose line opens in a minute, starting in ten; orders wait an hour
/// for payment, so none expires (and returns its unit) while a test moves the clock.
async fn sale_with_line(app: &TestApp, stock: u32) -> String {
    let body = app
        .create_lined_sale(
            json!({ "stock": stock, "payment_window_secs": 3600 }),
            json!({ "admit_per_sec": 2 }),
        )
        .await;
    body["id"].as_str().unwrap().to_owned()
}

async fn line_call(app: &TestApp, method: reqwest::Method, path: &str, token: &str) -> Value {
    let (status, body) = read(
        app.http
            .request(method, app.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

async fn line_me(app: &TestApp, sale: &str, token: &str) -> Value {
    let path = format!("/api/sales/{sale}/line/me");
    line_call(app, reqwest::Method::GET, &path, token).await
}

async fn log_page(app: &TestApp, sale: &str, query: &str) -> (StatusCode, Value) {
    read(
        app.http
            .get(app.url(&format!("/api/sales/{sale}/line/log?{query}")))
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn args(app: &TestApp, sale: &str, receipt: Option<&str>) -> VerifyLineArgs {
    VerifyLineArgs {
        url: app.url(""),
        sale: sale.to_owned(),
        receipt: receipt.map(str::to_owned),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_line_checks_out_with_every_receipt_and_tampering_is_caught() {
    let app = TestApp::spawn().await;
    let sale = sale_with_line(&app, 3).await;
    app.advance(Duration::minutes(2));
    let names: Vec<String> = (0..8).map(|n| format!("checked-{n}")).collect();
    let mut receipts = Vec::new();
    for (n, name) in names.iter().enumerate() {
        if n == 6 {
            // The last two join after the start, in arrival order.
            app.advance(Duration::minutes(8));
        }
        let path = format!("/api/sales/{sale}/line");
        let joined = line_call(&app, reqwest::Method::POST, &path, &app.buyer(name)).await;
        assert_eq!(joined["receipt"]["index"], n + 1, "{joined}");
        let again = line_call(&app, reqwest::Method::POST, &path, &app.buyer(name)).await;
        assert_eq!(
            again["receipt"], joined["receipt"],
            "a member keeps their receipt"
        );
        receipts.push(joined["receipt"]["hash"].as_str().unwrap().to_owned());
        if n == 0 {
            // Before the start the log is not public.
            let (status, body) = log_page(&app, &sale, "part=joins").await;
            assert_eq!(
                (status, error_code(&body)),
                (StatusCode::CONFLICT, "line_log_not_public")
            );
        }
    }
    // The first admitted buys; line/me carries the same receipt.
    let mut bought = false;
    for name in &names {
        let token = app.buyer(name);
        let me = line_me(&app, &sale, &token).await;
        assert!(receipts.contains(&me["receipt"]["hash"].as_str().unwrap().to_owned()));
        if me["state"] == "admitted" && !bought {
            let (status, body) = app.buy(me["buy_path"].as_str().unwrap(), &token, "k").await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            bought = true;
        }
    }
    assert!(bought);
    // The buy reaches the line off the 202's path: wait until the event chain has it.
    let mut events = 0;
    for _ in 0..200 {
        let (_, page) = log_page(&app, &sale, "part=events").await;
        events = page["events"].as_array().map_or(0, |e| {
            e.iter().filter(|event| event["kind"] == "bought").count()
        });
        if events == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(events, 1, "the buy is on the event chain");

    // The admissions end: the next two are admitted for the two units left and buy them; the
    // line then runs out of units. Each outcome is chained (polls move the line).
    app.advance(Duration::seconds(61));
    let mut kinds = Vec::new();
    let mut buyers = std::collections::HashSet::new();
    for _ in 0..200 {
        for name in &names {
            let token = app.buyer(name);
            let me = line_me(&app, &sale, &token).await;
            if me["state"] == "admitted" && buyers.insert(name.clone()) {
                let (status, body) = app.buy(me["buy_path"].as_str().unwrap(), &token, "k").await;
                assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            }
        }
        let (_, page) = log_page(&app, &sale, "part=events").await;
        kinds = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect();
        if kinds.iter().filter(|k| *k == "bought").count() == 3
            && kinds.contains(&"sold_out".to_owned())
        {
            break;
        }
        // A node moves its line once its copy of the summary is a quarter second old.
        app.advance(Duration::seconds(1));
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(
        kinds,
        [
            "admitted", "bought", "passed", "admitted", "bought", "bought", "sold_out"
        ],
        "position 2 passed, 3 and 4 bought the last two units"
    );

    // Bad queries are 400s.
    for query in [
        "part=nope",
        "part=joins&limit=0",
        "part=joins&limit=10001",
        "part=joins&from=0",
        "",
    ] {
        let (status, body) = log_page(&app, &sale, query).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{query}: {body}"
        );
    }
    // Paging: the same records whole or in pieces.
    let (_, whole) = log_page(&app, &sale, "part=joins").await;
    let (_, piece) = log_page(&app, &sale, "part=joins&from=3&limit=2").await;
    assert_eq!(piece["joins"][0], whole["joins"][2]);
    assert_eq!(piece["joins"].as_array().unwrap().len(), 2);
    assert_eq!(whole["pre_queue"], 6);
    assert_eq!(whole["joins_head"]["length"], 8);
    let status = app.status(&sale).await;
    assert_eq!(
        status["line"]["joins_head"], whole["joins_head"],
        "{status}"
    );

    // The honest line checks out, with every receipt, each telling its holder's outcome; a
    // stranger's hash is not in it.
    let mut outcomes = Vec::new();
    for receipt in &receipts {
        let verdict = check(&args(&app, &sale, Some(receipt))).await.unwrap();
        assert!(verdict.passed(), "{verdict:#?}");
        let told = verdict.checks.last().unwrap().outcome.clone().unwrap();
        outcomes.push(told.split(": ").nth(1).unwrap_or_default().to_owned());
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            "admitted (event #1), bought (event #2)",
            "admitted (event #1), passed (event #3)",
            "admitted (event #4), bought (event #5)",
            "admitted (event #4), bought (event #6)",
            "sold out (event #7)",
            "sold out (event #7)",
            "sold out (event #7)",
            "sold out (event #7)",
        ]
    );
    let stranger = "ab".repeat(32);
    let verdict = check(&args(&app, &sale, Some(&stranger))).await.unwrap();
    assert_eq!(verdict.failed(), ["receipt in the join chain"]);

    // Tampered copies of the downloaded log: each is caught.
    let sale_id = flashsale_core::SaleId::parse(&sale).unwrap();
    let honest = download(&Target::parse(&app.url("")).unwrap(), sale_id)
        .await
        .unwrap();
    assert!(verify(&honest, None).passed());
    let mut moved = honest.clone();
    moved.joins.swap(1, 2);
    assert!(!verify(&moved, None).passed(), "a record moved");
    let mut inserted = honest.clone();
    let late = JoinRecord {
        line: flashsale_core::line::LineId([9; 32]),
        joined_at_ms: honest.starts_at_ms + 1,
    };
    inserted.joins.insert(
        2,
        flashsale_core::line_log::PublishedJoin {
            index: 3,
            record: late,
            hash: flashsale_core::line_log::join_hash(&honest.joins[1].hash, &late),
        },
    );
    inserted.pre_queue += 1;
    assert!(
        verify(&inserted, None)
            .failed()
            .contains(&"pre-queue joined before the start"),
        "a join inserted after the start"
    );
    let mut reseeded = honest.clone();
    reseeded.seed = Some(Seed([1; 32]).to_hex());
    assert!(
        verify(&reseeded, None)
            .failed()
            .contains(&"seed matches the commitment"),
        "a changed seed"
    );
    let mut skipped = honest.clone();
    skipped.positions.remove(0);
    assert!(!verify(&skipped, None).passed(), "a skipped position");
    let mut skipped_admission = honest.clone();
    let admission: &mut PublishedEvent = skipped_admission
        .events
        .iter_mut()
        .find(|e| matches!(e.event, LineEvent::Admitted { .. }))
        .unwrap();
    admission.from = Some(2);
    assert!(
        !verify(&skipped_admission, None).passed(),
        "an admission skipping position 1"
    );
    // What the honest log says is what the core's rules say: the seeded draw of the first six.
    let seed = Seed::parse(honest.seed.as_deref().unwrap()).unwrap();
    assert_eq!(
        honest.positions[..6],
        draw_order(&seed, honest.joins[..6].iter().map(|j| j.record.line))[..]
    );
}

/// The binary: exit 0 and a verdict for an honest line; non-zero for a receipt not in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verify_line_command_prints_a_verdict_and_fails_on_a_missing_receipt() {
    let app = TestApp::spawn().await;
    let sale = sale_with_line(&app, 2).await;
    app.advance(Duration::minutes(2));
    let joined = line_call(
        &app,
        reqwest::Method::POST,
        &format!("/api/sales/{sale}/line"),
        &app.buyer("cli-checked"),
    )
    .await;
    app.advance(Duration::minutes(8));
    let run = |receipt: String| {
        let (url, sale) = (app.url(""), sale.clone());
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_flashsale"))
                .args([
                    "verify-line",
                    "--url",
                    &url,
                    "--sale",
                    &sale,
                    "--receipt",
                    &receipt,
                ])
                .output()
                .await
                .expect("run flashsale verify-line")
        }
    };
    let good = run(joined["receipt"]["hash"].as_str().unwrap().to_owned()).await;
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(stdout.contains("checks out"), "{stdout}");
    assert!(
        stdout.contains("ok    receipt in the join chain: join #1"),
        "{stdout}"
    );
    let bad = run("00".repeat(32)).await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stdout).contains("FAIL  receipt in the join chain"));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does NOT check out"));
}

/// Scaled out: joins on three nodes make one chain; any node publishes it, and it checks out
/// with a receipt handed out by another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_share_one_chain() {
    use crate::support::backends::{SharedBackends, until_every_node_has_the_line};

    let shared = SharedBackends::create().await;
    let (clock, nodes) = shared.nodes(3).await;
    let sale = sale_with_line(&nodes[0], 2).await;
    clock.advance(Duration::minutes(2));
    until_every_node_has_the_line(&nodes, &sale).await;
    let joins = (0..12).map(|n| {
        let node = &nodes[n % 3];
        let sale = sale.clone();
        async move {
            let path = format!("/api/sales/{sale}/line");
            line_call(
                node,
                reqwest::Method::POST,
                &path,
                &node.buyer(&format!("chained-{n}")),
            )
            .await
        }
    });
    let answers = futures_util::future::join_all(joins).await;
    let mut indexes: Vec<u64> = answers
        .iter()
        .map(|a| a["receipt"]["index"].as_u64().unwrap())
        .collect();
    indexes.sort_unstable();
    assert_eq!(
        indexes,
        (1..=12).collect::<Vec<u64>>(),
        "one chain, no fork"
    );
    clock.advance(Duration::minutes(8));
    for (n, answer) in answers.iter().enumerate() {
        let receipt = answer["receipt"]["hash"].as_str().unwrap();
        let verdict = check(&args(&nodes[(n + 1) % 3], &sale, Some(receipt)))
            .await
            .unwrap();
        assert!(verdict.passed(), "{verdict:#?}");
    }
}
