//! `flashsale bench` is itself tested: the same short run passes its verdict against a real
//! server and fails it against small servers written here that break one invariant each
//! (oversell, one request written as two orders, no per-buyer limit). The `--waiting-room`
//! run passes against the real server and against a small server whose line is
//! `core::line::Line`, and fails against that server made to cheat (a draw by arrival, buys
//! without a turn); the unit tests of `flashsale_bench::waiting_room::verdict` feed each line
//! check a forged observation of its own.

use crate::support::backends::SharedBackends;
use crate::support::{ADMIN_TOKEN, BUYER_SECRET, test_env};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flashsale::app;
use flashsale::config::{Config, FlagOverrides};
use flashsale_bench::BenchArgs;
use flashsale_bench::report::Report;
use flashsale_core::line::{
    AdmitInputs, AdmitRate, Line, LineId, LineTimes, Seed, Standing, eta_secs, poll_after_secs,
};
use flashsale_core::tokens::BuyerTokens;
use flashsale_core::{BuyerId, SaleId};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The one short run every server gets: 400 buyers for 200 units, limit 1, with double
/// clicks, repeats, cheaters and a 5 s payment window.
fn short_run(target: String) -> BenchArgs {
    BenchArgs {
        target: vec![target],
        versus: Vec::new(),
        drain_writers: None,
        admin_token: ADMIN_TOKEN.into(),
        buyer_jwt_secret: BUYER_SECRET.into(),
        sale: None,
        stock: 200,
        per_buyer_limit: 1,
        start_in_secs: 1,
        payment_window_secs: 5,
        buyers: 400,
        connections: 16,
        rate: None,
        spike_factor: 1.0,
        spike_secs: 1.0,
        duration_secs: None,
        double_click_share: 0.2,
        repeat_share: 0.2,
        cheater_share: 0.1,
        pay_share: 0.5,
        waiting_room: false,
        line_lead_secs: 10,
        admit_per_sec: AdmitRate::Fixed(200),
        admission_secs: 10,
        line_stay_secs: 30,
        last_second_share: 0.2,
        late_share: 0.1,
        never_buy_share: 0.2,
        pow_bits: 0,
        peer: None,
        rounds: 1,
        json: None,
        report: None,
        quiet: true,
    }
}

fn failed(report: &Report) -> Vec<&'static str> {
    report.rounds[0]
        .verdict
        .as_ref()
        .expect("a flashsale round has a verdict")
        .checks
        .iter()
        .filter(|c| c.passed == Some(false))
        .map(|c| c.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verdict_passes_on_the_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let flags = FlagOverrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().join("data")),
        dev_login: None,
        ..Default::default()
    };
    // The system clock: the bench waits for go-live and the payment window in real time.
    let config = Config::load(None, test_env(&[]), &flags).unwrap();
    let running = app::start(&config).await.unwrap();
    let mut args = short_run(format!("http://{}", running.addr));
    let out = dir.path().join("report");
    args.report = Some(out.clone());
    args.json = Some(dir.path().join("bench.json"));

    let report = flashsale_bench::run(&args).await.unwrap();

    let round = &report.rounds[0];
    let verdict = round.verdict.as_ref().unwrap();
    assert!(
        report.passed(),
        "{}",
        flashsale_bench::report::text(&report)
    );
    assert!(
        verdict.checks.iter().all(|c| c.passed == Some(true)),
        "{verdict:?}"
    );
    assert_eq!(verdict.counters.stock_total, 200);
    assert!(
        round.statuses.get(&202).is_some_and(|n| *n >= 200),
        "{:?}",
        round.statuses
    );
    assert!(
        round.statuses.contains_key(&401),
        "forged and expired tokens were refused"
    );
    assert!(
        round.statuses.contains_key(&404),
        "guessed paths were refused"
    );
    assert!(round.sold_out_after_s.is_some());
    assert!(
        verdict.counters.paid > 0 && verdict.counters.expired > 0,
        "{verdict:?}"
    );
    flashsale_bench::report::write_html(&out, &report).unwrap();
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("verdict: PASS"));
    running.stop().await;
}

/// A small `--waiting-room` run against a real server: 300 members for 40 units, joining over
/// 3 s before the start (60 bots in its last second, 30 after it), polling as told, buying when
/// admitted; a fifth never buy and half the winners leave their orders unpaid (5 s window), so
/// units come back within the 15 s the crowd stays. Every check passes, the line's four among
/// them, and the bots take the units only in the round without the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_room_run_passes_and_only_the_rush_favours_the_bots() {
    let dir = tempfile::tempdir().unwrap();
    let flags = FlagOverrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().join("data")),
        dev_login: None,
        ..Default::default()
    };
    let config = Config::load(None, test_env(&[]), &flags).unwrap();
    let running = app::start(&config).await.unwrap();
    let mut args = short_run(format!("http://{}", running.addr));
    args.waiting_room = true;
    args.buyers = 300;
    args.stock = 40;
    args.line_lead_secs = 3;
    args.line_stay_secs = 15;
    args.admit_per_sec = AdmitRate::Fixed(100);
    // Many cheaters, so that some of them are admitted and hand on or reuse their tickets.
    args.cheater_share = 0.3;

    let report = flashsale_bench::run(&args).await.unwrap();

    let text = flashsale_bench::report::text(&report);
    assert!(report.passed(), "{text}");
    let kinds: Vec<&str> = report.rounds.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, ["waiting room", "no line"], "{text}");
    let (with, without) = (&report.rounds[0], &report.rounds[1]);
    let verdict = with.verdict.as_ref().unwrap();
    for name in [
        "nobody_bought_without_admission",
        "admissions_followed_the_line",
        "draw_matches_seed",
        "returned_units_went_to_the_next",
        "orders_within_stock",
        "stock_conserved",
    ] {
        let check = verdict
            .check(name)
            .unwrap_or_else(|| panic!("{name}: {text}"));
        assert_eq!(check.passed, Some(true), "{name}: {text}");
    }
    let line = with.line.as_ref().unwrap();
    assert!(
        line.pre_queue > 200 && line.joined_after_start > 0,
        "{text}"
    );
    assert_eq!(line.join_failures, 0, "{text}");
    let tries = |kind: &str| line.cheats.iter().find(|c| c.kind == kind).unwrap().tries;
    assert!(tries("guessed ticket") > 0, "{text}");
    assert!(
        tries("someone else's ticket") + tries("ticket after its admission") > 0,
        "{text}"
    );
    assert!(
        with.statuses.contains_key(&403),
        "cheats were refused: {text}"
    );
    let server = line.server.unwrap();
    assert!(server.bought > 0 && server.passed > 0, "{text}");
    // Without the line the 48 or so bots who buy take the 40 units; with it the draw decides.
    let (fair, rush) = (
        with.fairness.as_ref().unwrap(),
        without.fairness.as_ref().unwrap(),
    );
    assert!(rush.p_value < 1e-6, "{text}");
    assert!(fair.p_value > 1e-6, "{text}");
    let bots = without.winners.unwrap();
    assert!(bots.last_second_wins * 4 >= bots.wins * 3, "{text}");
    running.stop().await;
}

/// `--pow-bits 8`, small: 150 members for 20 units, joining over 2 s, staying 3 s. After the
/// round with the line and the one without, the same crowd goes through a line whose sale asks
/// 8 bits of proof of work: every member gets a challenge and solves it (the bots on the bench's
/// cores in their last second) before it joins. The line's checks hold there too, every place
/// was paid for, no join without a proof of the member's own got in, a double join's second
/// tab was refused its used challenge, and the report gives the bots' share of the units in
/// all three rounds and the CPU seconds they paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proof_of_work_round_makes_every_place_paid_for() {
    let dir = tempfile::tempdir().unwrap();
    let flags = FlagOverrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().join("data")),
        dev_login: None,
        ..Default::default()
    };
    let config = Config::load(None, test_env(&[]), &flags).unwrap();
    let running = app::start(&config).await.unwrap();
    let mut args = short_run(format!("http://{}", running.addr));
    args.waiting_room = true;
    args.buyers = 150;
    args.stock = 20;
    args.line_lead_secs = 2;
    args.line_stay_secs = 3;
    args.admit_per_sec = AdmitRate::Fixed(100);
    args.cheater_share = 0.2;
    args.pow_bits = 8;

    let report = flashsale_bench::run(&args).await.unwrap();

    let text = flashsale_bench::report::text(&report);
    assert!(report.passed(), "{text}");
    let kinds: Vec<&str> = report.rounds.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        ["waiting room", "no line", "waiting room + pow"],
        "{text}"
    );
    let paid = &report.rounds[2];
    let verdict = paid.verdict.as_ref().unwrap();
    for name in [
        "nobody_bought_without_admission",
        "admissions_followed_the_line",
        "draw_matches_seed",
        "orders_within_stock",
        "stock_conserved",
        "every_place_paid_for",
    ] {
        let check = verdict
            .check(name)
            .unwrap_or_else(|| panic!("{name}: {text}"));
        assert_eq!(check.passed, Some(true), "{name}: {text}");
    }
    let line = paid.line.as_ref().unwrap();
    let pow = paid.pow.as_ref().unwrap();
    assert_eq!(pow.difficulty_bits, 8, "{text}");
    assert_eq!(pow.status_difficulty_bits, Some(8), "{text}");
    // Every member solved one challenge, and every member who joined had solved one.
    assert_eq!(line.join_failures, 0, "{text}");
    assert_eq!(line.joined, args.buyers, "{text}");
    assert_eq!(pow.bots.solved + pow.humans.solved, args.buyers, "{text}");
    assert_eq!(
        pow.bots.failed + pow.humans.failed + pow.challenge_failures,
        0
    );
    assert_eq!(pow.places_held, line.joined, "{text}");
    assert_eq!(pow.places_without_proof, 0, "{text}");
    assert_eq!(pow.proofs_sent, args.buyers, "{text}");
    assert_eq!(pow.line_length, Some(args.buyers), "{text}");
    assert_eq!(pow.challenges_accepted_twice, 0, "{text}");
    assert!(
        pow.challenge_used_refusals > 0,
        "double joins reuse one challenge: {text}"
    );
    // The bots paid in CPU, and what they got for it is in the report.
    assert!(pow.bots.solved > 0 && pow.bots.cpu_s > 0.0, "{text}");
    assert!(pow.humans.cpu_s_median.is_some_and(|s| s > 0.0), "{text}");
    assert!(pow.bot_places > 0, "{text}");
    assert!(pow.bot_cpu_s_per_place.is_some_and(|s| s > 0.0), "{text}");
    assert!(pow.bots.tries + pow.humans.tries >= args.buyers, "{text}");
    for probe in &pow.probes {
        assert!(probe.tries > 0 && probe.wins == 0, "{probe:?}: {text}");
    }
    assert!(paid.statuses.contains_key(&202), "{text}");
    // Each round gives the bots' share of the units, and the three stand side by side.
    for round in &report.rounds {
        let bots = round.bots.unwrap();
        assert_eq!(bots.bots + bots.humans, args.buyers, "{text}");
    }
    let shares = &report.bot_shares;
    assert_eq!(shares.len(), 1, "{text}");
    assert_eq!(shares[0].pow_bits, Some(8));
    assert!(shares[0].without_line.is_some() && shares[0].with_line_and_pow.is_some());
    assert!(
        text.contains("proof of work: 8 bits asked (the status showed 8)"),
        "{text}"
    );
    assert!(
        text.contains("with it and 8 bits of proof of work"),
        "{text}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["rounds"][2]["pow"]["bots"]["cpu_s"].as_f64().unwrap() > 0.0);
    assert!(
        json["bot_shares"][0]["bot_cpu_s_per_place"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(json["rounds"][1]["bots"]["bot_units"].is_u64());
    running.stop().await;
}

/// One run spreads the crowd over two scaled-out nodes, loads a classic deployment on the same
/// engines in the next round, and times each drain: every verdict passes, both ratios and both
/// drains are in the report, and the second node served its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_covers_two_nodes_a_classic_deployment_and_the_drain() {
    let batched = SharedBackends::create().await;
    let classic = SharedBackends::create().await;
    let dir = tempfile::tempdir().unwrap();
    let start = |env: Vec<(&str, &str)>, name: &str| {
        let flags = FlagOverrides {
            listen: Some("127.0.0.1:0".into()),
            data_dir: Some(dir.path().join(name)),
            dev_login: None,
            ..Default::default()
        };
        let config = Config::load(None, test_env(&env), &flags).unwrap();
        async move { app::start(&config).await.unwrap() }
    };
    let first = start(batched.env(), "a").await;
    let second = start(batched.env(), "b").await;
    let mut classic_env = classic.env();
    classic_env.push(("FLASHSALE_RESERVATIONS__DESIGN", "classic"));
    let baseline = start(classic_env, "c").await;

    let mut args = short_run(format!("http://{}", first.addr));
    args.target.push(format!("http://{}", second.addr));
    args.versus = vec![format!("http://{}", baseline.addr)];
    args.drain_writers = Some(2);
    args.pay_share = 0.0;
    let report = flashsale_bench::run(&args).await.unwrap();

    let text = flashsale_bench::report::text(&report);
    assert!(report.passed(), "{text}");
    let kinds: Vec<&str> = report.rounds.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, ["flashsale", "versus"]);
    assert!(report.versus_ratios.is_some(), "{text}");
    for round in &report.rounds {
        let drain = round.drain.as_ref().expect("a drain was timed");
        assert!(drain.orders > 0 && drain.orders_per_sec > 0.0, "{text}");
    }
    // The second node's own view of the sale: it took its share of the crowd.
    let sale = report.rounds[0].sale_id.clone().unwrap();
    let second_view: Value = reqwest::Client::new()
        .get(format!("http://{}/api/admin/sales/{sale}", second.addr))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        second_view["layers"]["stock_calls"].as_u64().unwrap() > 0,
        "{second_view}"
    );
    for running in [first, second, baseline] {
        running.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verdict_fails_on_a_server_that_oversells() {
    let report = run_against(Flaw::Oversell).await;
    assert!(!report.passed());
    let failed = failed(&report);
    assert!(failed.contains(&"orders_within_stock"), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verdict_fails_on_a_server_that_writes_one_request_twice() {
    let report = run_against(Flaw::DoubleWrite).await;
    assert!(!report.passed());
    let failed = failed(&report);
    assert!(failed.contains(&"every_202_is_one_order"), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verdict_fails_on_a_server_that_answers_one_key_with_two_orders() {
    let report = run_against(Flaw::NewIdPerRetry).await;
    assert!(!report.passed());
    let failed = failed(&report);
    assert!(failed.contains(&"every_202_is_one_order"), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verdict_fails_on_a_server_that_ignores_the_buyer_limit() {
    let report = run_against(Flaw::NoBuyerLimit).await;
    assert!(!report.passed());
    let failed = failed(&report);
    assert!(failed.contains(&"buyer_limit_held"), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verdict_passes_on_the_small_server_without_a_flaw() {
    // The control: the test server itself is right, so each failure above is its flaw's.
    let report = run_against(Flaw::None).await;
    assert!(
        report.passed(),
        "{}",
        flashsale_bench::report::text(&report)
    );
}

/// The small server's line is `core::line::Line`, the model every line backend follows: the
/// waiting-room run passes on it, so the two failures below are their flaws'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_line_checks_pass_on_the_small_server_with_an_honest_line() {
    let report = run_line_against(Flaw::None).await;
    let text = flashsale_bench::report::text(&report);
    assert!(report.passed(), "{text}");
    let verdict = report.rounds[0].verdict.as_ref().unwrap();
    for name in [
        "nobody_bought_without_admission",
        "admissions_followed_the_line",
        "draw_matches_seed",
        "returned_units_went_to_the_next",
        "line_log_checks_out",
    ] {
        assert_eq!(
            verdict.check(name).unwrap().passed,
            Some(true),
            "{name}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_line_checks_fail_on_a_server_whose_draw_is_by_arrival() {
    let report = run_line_against(Flaw::LineByArrival).await;
    assert!(!report.passed());
    // The published log shows it too: its positions are not the seeded draw of its joins.
    assert_eq!(
        failed(&report),
        ["draw_matches_seed", "line_log_checks_out"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_line_checks_fail_on_a_server_that_sells_without_a_turn() {
    let report = run_line_against(Flaw::LineWithoutTurn).await;
    assert!(!report.passed());
    let failed = failed(&report);
    assert!(
        failed.contains(&"nobody_bought_without_admission"),
        "{failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_order_listing_takes_a_limit() {
    let app = crate::support::TestApp::spawn().await;
    let (sale, path) = app.live_sale(10, 1).await;
    for n in 0..3 {
        let token = app.buyer(&format!("lister-{n}"));
        assert_eq!(app.buy(&path, &token, "k").await.0, StatusCode::ACCEPTED);
    }
    app.wait_drained(&sale).await;
    let list = |q: &'static str| {
        let app = &app;
        let sale = sale.clone();
        async move {
            app.admin(
                reqwest::Method::GET,
                &format!("/api/admin/sales/{sale}/orders{q}"),
                None,
            )
            .await
        }
    };
    let (status, body) = list("?limit=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_array().unwrap().len(), 2);
    assert_eq!(list("").await.1.as_array().unwrap().len(), 3);
    assert_eq!(list("?limit=10000").await.1.as_array().unwrap().len(), 3);
    for bad in ["?limit=0", "?limit=10001", "?limit=x"] {
        let (status, body) = list(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["error"]["code"], "invalid_request", "{bad}");
    }
}

// ----- a small flash-sale server with one chosen flaw -----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    None,
    /// Sells past the stock.
    Oversell,
    /// Writes every accepted order twice.
    DoubleWrite,
    /// A retry of the same key gets a new order.
    NewIdPerRetry,
    /// Lets a buyer hold any number of orders.
    NoBuyerLimit,
    /// Orders the line's pre-queue by arrival instead of by the seed's draw.
    LineByArrival,
    /// Sells on any ticket of a sale with a line, whoever's turn it is.
    LineWithoutTurn,
}

/// The small server's line: `core::line::Line` with a fixed seed and rate.
struct MiniLine {
    line: Line,
    sale: SaleId,
    seed: Seed,
    opens_at: OffsetDateTime,
    /// Joins so far: the order a draw by arrival uses.
    arrivals: u64,
}

/// The small server's admission rate, in buyers per second.
const MINI_ADMIT_PER_SEC: u32 = 1000;

fn ticket(position: u64) -> String {
    format!("ticket-{position}")
}

const PATH_TOKEN: &str = "the-real-path-token-22";

struct FlawedOrder {
    id: String,
    buyer: String,
    status: &'static str,
    reserved_at: OffsetDateTime,
    expires_at: OffsetDateTime,
}

#[derive(Default)]
struct FlawedSale {
    id: String,
    stock: u64,
    available: u64,
    limit: u64,
    window_secs: i64,
    starts_at: Option<OffsetDateTime>,
    ends_at: Option<OffsetDateTime>,
    orders: Vec<FlawedOrder>,
    keys: HashMap<(String, String), String>,
    line: Option<MiniLine>,
}

impl FlawedSale {
    /// Expires unpaid orders and returns their units, as a reaper would.
    fn sweep(&mut self, now: OffsetDateTime) {
        for o in &mut self.orders {
            if o.status == "pending_payment" && o.expires_at <= now {
                o.status = "expired";
                self.available += 1;
            }
        }
    }

    fn count(&self, status: &str) -> u64 {
        self.orders.iter().filter(|o| o.status == status).count() as u64
    }

    /// Sweeps, then moves the line as far as the units allow; what it was moved with.
    fn advance(&mut self, now: OffsetDateTime) -> AdmitInputs {
        self.sweep(now);
        let inputs = AdmitInputs {
            rate_per_sec: MINI_ADMIT_PER_SEC,
            units_left: self.available,
            units_returnable: self.stock - self.available,
        };
        if let Some(mini) = self.line.as_mut() {
            mini.line.advance(now, inputs);
        }
        inputs
    }

    /// Where a buyer stands, after advancing the line.
    fn standing(&mut self, buyer: &str, now: OffsetDateTime) -> Option<Standing> {
        let inputs = self.advance(now);
        let mini = self.line.as_ref()?;
        let line = LineId::of(mini.sale, &BuyerId::parse(buyer).ok()?);
        mini.line.standing(&line, now, inputs)
    }
}

struct Flawed {
    flaw: Flaw,
    tokens: BuyerTokens,
    sale: Mutex<FlawedSale>,
}

type Shared = State<Arc<Flawed>>;

fn ts(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap()
}

fn buyer_of(state: &Flawed, headers: &HeaderMap) -> Option<String> {
    let token = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    let buyer = state.tokens.verify(token, OffsetDateTime::now_utc()).ok()?;
    Some(buyer.as_str().to_owned())
}

async fn create(State(s): Shared, Json(spec): Json<Value>) -> Response {
    let mut sale = s.sale.lock().unwrap();
    let parse = |k: &str| OffsetDateTime::parse(spec[k].as_str().unwrap(), &Rfc3339).unwrap();
    let id = uuid::Uuid::new_v4();
    let line = spec.get("waiting_room").map(|room| {
        let opens_at = OffsetDateTime::parse(room["opens_at"].as_str().unwrap(), &Rfc3339).unwrap();
        MiniLine {
            line: Line::new(LineTimes {
                opens_at,
                starts_at: parse("starts_at"),
                ends_at: parse("ends_at"),
                admission_secs: room["admission_secs"].as_u64().unwrap() as u32,
            }),
            sale: SaleId(id),
            seed: Seed([7; 32]),
            opens_at,
            arrivals: 0,
        }
    });
    *sale = FlawedSale {
        id: id.to_string(),
        line,
        stock: spec["stock"].as_u64().unwrap(),
        available: spec["stock"].as_u64().unwrap(),
        limit: spec["per_buyer_limit"].as_u64().unwrap(),
        window_secs: spec["payment_window_secs"].as_i64().unwrap(),
        starts_at: Some(parse("starts_at")),
        ends_at: Some(parse("ends_at")),
        ..Default::default()
    };
    (StatusCode::CREATED, Json(json!({ "id": sale.id }))).into_response()
}

async fn admin_view(State(s): Shared) -> Json<Value> {
    let mut sale = s.sale.lock().unwrap();
    sale.sweep(OffsetDateTime::now_utc());
    Json(json!({
        "id": sale.id,
        "per_buyer_limit": sale.limit,
        "payment_window_secs": sale.window_secs,
        "counters": {
            "stock_total": sale.stock, "available": sale.available, "queued": 0,
            "pending_payment": sale.count("pending_payment"), "paid": sale.count("paid"),
            "expired": sale.count("expired"), "cancelled": 0,
        },
        "layers": {},
    }))
}

async fn status(State(s): Shared) -> Json<Value> {
    let sale = s.sale.lock().unwrap();
    let now = OffsetDateTime::now_utc();
    let live = sale.starts_at.is_some_and(|at| now >= at);
    let mut body = json!({
        "sale_id": sale.id,
        "phase": if live { "live" } else { "upcoming" },
        "server_time": ts(now),
        "starts_at": ts(sale.starts_at.unwrap()),
        "ends_at": ts(sale.ends_at.unwrap()),
    });
    if let Some(mini) = &sale.line {
        body["line"] = json!({
            "opens_at": ts(mini.opens_at),
            "admit_per_sec": MINI_ADMIT_PER_SEC,
            "paused": false,
            "lost": false,
        });
        if now >= mini.opens_at {
            body["line"]["commitment"] = json!(mini.seed.commitment());
        }
        if live {
            body["line"]["seed"] = json!(mini.seed.to_hex());
        }
    } else if live {
        body["buy_path"] = json!(format!("/api/sales/{}/buy/{PATH_TOKEN}", sale.id));
    }
    Json(body)
}

async fn join(State(s): Shared, headers: HeaderMap) -> Response {
    let now = OffsetDateTime::now_utc();
    let Some(buyer) = buyer_of(&s, &headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let mut sale = s.sale.lock().unwrap();
    let Some(mini) = sale.line.as_mut() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let line = LineId::of(mini.sale, &BuyerId::parse(&buyer).unwrap());
    mini.arrivals += 1;
    let key = if s.flaw == Flaw::LineByArrival {
        // The flaw: the draw key is the arrival number, so the pre-queue keeps arrival order.
        let mut key = [0; 32];
        key[24..].copy_from_slice(&mini.arrivals.to_be_bytes());
        key
    } else {
        mini.seed.draw_key(&line)
    };
    if mini.line.join(line, key, now).is_err() {
        return StatusCode::CONFLICT.into_response();
    }
    where_they_stand(&mut sale, &buyer, now)
}

/// The line's published log, made by the same core functions and wire type as the real
/// server's, from the small server's `Line` (with its flaws: a draw by arrival shows in it).
async fn line_log(State(s): Shared, Query(q): Query<HashMap<String, String>>) -> Response {
    use flashsale_http::wire::{LineLogBody, LogPartName};
    use flashsale_service::{LogHeader, LogRecords};
    let sale = s.sale.lock().unwrap();
    let Some(mini) = sale.line.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let number = |name: &str, default: usize| {
        q.get(name)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(default)
    };
    let (from, limit) = (number("from", 1).max(1), number("limit", 1000));
    let starts_at = mini.line.times().starts_at;
    let log = flashsale_core::line_log::publish(
        mini.sale,
        &mini.seed,
        flashsale_core::line::unix_ms(starts_at),
        mini.line.summary(OffsetDateTime::now_utc()).pre_queue,
        mini.line.join_records(1, usize::MAX),
        mini.line.members(),
        mini.line.events(1, usize::MAX),
    );
    let header = LogHeader {
        starts_at,
        commitment: log.commitment,
        seed: log.seed.expect("published"),
        pre_queue: log.pre_queue,
        joins_head: log.joins_head,
        events_head: log.events_head,
    };
    let (part, records) = match q.get("part").map(String::as_str) {
        Some("joins") => (
            LogPartName::Joins,
            LogRecords::Joins(log.joins.into_iter().skip(from - 1).take(limit).collect()),
        ),
        Some("positions") => (
            LogPartName::Positions,
            LogRecords::Positions(
                log.positions
                    .into_iter()
                    .skip(from - 1)
                    .take(limit)
                    .collect(),
            ),
        ),
        Some("events") => (
            LogPartName::Events,
            LogRecords::Events(log.events.into_iter().skip(from - 1).take(limit).collect()),
        ),
        _ => return StatusCode::BAD_REQUEST.into_response(),
    };
    Json(LineLogBody::new(
        mini.sale,
        part,
        from as u64,
        header,
        records,
    ))
    .into_response()
}

async fn line_me(State(s): Shared, headers: HeaderMap) -> Response {
    let Some(buyer) = buyer_of(&s, &headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let mut sale = s.sale.lock().unwrap();
    where_they_stand(&mut sale, &buyer, OffsetDateTime::now_utc())
}

/// `line/me`'s answer, from the line's standing.
fn where_they_stand(sale: &mut FlawedSale, buyer: &str, now: OffsetDateTime) -> Response {
    let Some(standing) = sale.standing(buyer, now) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mini = sale.line.as_ref().unwrap();
    let until_start = (sale.starts_at.unwrap() - now).whole_seconds().max(0) as u64;
    let (state, position, ahead, until) = match standing {
        Standing::PreQueue => ("pre_queue", None, None, None),
        Standing::Waiting { position, ahead } => ("waiting", Some(position), Some(ahead), None),
        Standing::Admitted { position, until } => ("admitted", Some(position), None, Some(until)),
        Standing::Passed { position } => ("passed", Some(position), None, None),
        Standing::SoldOut { position, ahead } => ("sold_out", Some(position), Some(ahead), None),
        Standing::Bought { position } => ("bought", Some(position), None, None),
    };
    let eta = match standing {
        Standing::PreQueue => until_start,
        _ => eta_secs(ahead.unwrap_or(0), MINI_ADMIT_PER_SEC),
    };
    let mut body = json!({
        "state": state,
        "position": position,
        "ahead": ahead,
        "admitted_up_to": mini.line.admitted_up_to(),
        "eta_secs": eta,
        "poll_after_secs": poll_after_secs(&standing, eta, until_start, mini.line.times().admission_secs),
    });
    if let (Some(position), Some(until)) = (position, until) {
        body["buy_path"] = json!(format!("/api/sales/{}/buy/{}", sale.id, ticket(position)));
        body["admitted_until"] = json!(ts(until));
    }
    Json(body).into_response()
}

async fn line_admin(State(s): Shared) -> Response {
    let mut sale = s.sale.lock().unwrap();
    let now = OffsetDateTime::now_utc();
    sale.advance(now);
    let Some(mini) = &sale.line else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let summary = mini.line.summary(now);
    Json(json!({
        "opens_at": ts(mini.opens_at),
        "admit_per_sec": MINI_ADMIT_PER_SEC,
        "paused": false,
        "lost": false,
        "length": summary.length,
        "pre_queue": summary.pre_queue,
        "admitted_up_to": summary.admitted_up_to,
        "holders": summary.holders,
        "bought": summary.bought,
        "passed": summary.passed(),
    }))
    .into_response()
}

async fn buy(
    State(s): Shared,
    Path((_, token)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let now = OffsetDateTime::now_utc();
    let Some(buyer) = buyer_of(&s, &headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let mut sale = s.sale.lock().unwrap();
    if sale.starts_at.is_none_or(|at| now < at) {
        return StatusCode::NOT_FOUND.into_response();
    }
    // A sale with a line sells only on the buyer's own ticket while admitted.
    let mut turn = None;
    if sale.line.is_some() {
        turn = match sale.standing(&buyer, now) {
            Some(Standing::Admitted { position, .. }) if token == ticket(position) => {
                Some(position)
            }
            // The flaw: any ticket will do.
            _ if s.flaw == Flaw::LineWithoutTurn => None,
            _ => return StatusCode::FORBIDDEN.into_response(),
        };
    } else if token != PATH_TOKEN {
        return StatusCode::NOT_FOUND.into_response();
    }
    let key = headers["idempotency-key"].to_str().unwrap().to_owned();
    sale.sweep(now);
    if let Some(id) = sale.keys.get(&(buyer.clone(), key.clone())).cloned() {
        if s.flaw != Flaw::NewIdPerRetry {
            return (StatusCode::ACCEPTED, Json(json!({ "order_id": id }))).into_response();
        }
        // The flaw: a retry of the same request is written as a fresh order.
        return write_order(&mut sale, s.flaw, buyer, key, now);
    }
    let live = sale
        .orders
        .iter()
        .filter(|o| o.buyer == buyer && o.status != "expired")
        .count() as u64;
    if live >= sale.limit && s.flaw != Flaw::NoBuyerLimit {
        return StatusCode::CONFLICT.into_response();
    }
    if sale.available == 0 && s.flaw != Flaw::Oversell {
        return StatusCode::GONE.into_response();
    }
    if let (Some(position), Some(mini)) = (turn, sale.line.as_mut()) {
        mini.line.record_bought(position);
    }
    write_order(&mut sale, s.flaw, buyer, key, now)
}

fn write_order(
    sale: &mut FlawedSale,
    flaw: Flaw,
    buyer: String,
    key: String,
    now: OffsetDateTime,
) -> Response {
    sale.available = sale.available.saturating_sub(1);
    let id = uuid::Uuid::new_v4().to_string();
    let copies = if flaw == Flaw::DoubleWrite { 2 } else { 1 };
    for _ in 0..copies {
        let expires_at = now + time::Duration::seconds(sale.window_secs);
        sale.orders.push(FlawedOrder {
            id: id.clone(),
            buyer: buyer.clone(),
            status: "pending_payment",
            reserved_at: now,
            expires_at,
        });
    }
    sale.keys.insert((buyer, key), id.clone());
    (
        StatusCode::ACCEPTED,
        Json(json!({ "order_id": id, "status": "queued" })),
    )
        .into_response()
}

async fn order(State(s): Shared, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let Some(buyer) = buyer_of(&s, &headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let mut sale = s.sale.lock().unwrap();
    sale.sweep(OffsetDateTime::now_utc());
    match sale.orders.iter().find(|o| o.id == id && o.buyer == buyer) {
        Some(o) => Json(json!({ "order_id": o.id, "status": o.status })).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn pay(State(s): Shared, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let Some(buyer) = buyer_of(&s, &headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let mut sale = s.sale.lock().unwrap();
    sale.sweep(OffsetDateTime::now_utc());
    let mut paid = false;
    for o in sale
        .orders
        .iter_mut()
        .filter(|o| o.id == id && o.buyer == buyer)
    {
        if o.status == "pending_payment" {
            o.status = "paid";
            paid = true;
        }
    }
    if paid {
        Json(json!({ "status": "paid" })).into_response()
    } else {
        StatusCode::CONFLICT.into_response()
    }
}

async fn orders(State(s): Shared, Query(q): Query<HashMap<String, usize>>) -> Json<Value> {
    let mut sale = s.sale.lock().unwrap();
    sale.sweep(OffsetDateTime::now_utc());
    let limit = q.get("limit").copied().unwrap_or(50);
    let rows: Vec<Value> = sale
        .orders
        .iter()
        .rev()
        .take(limit)
        .map(|o| {
            json!({
                "order_id": o.id, "buyer": o.buyer, "status": o.status,
                "reserved_at": ts(o.reserved_at), "expires_at": ts(o.expires_at),
            })
        })
        .collect();
    Json(Value::Array(rows))
}

async fn run_against(flaw: Flaw) -> Report {
    run_flawed(flaw, short_run).await
}

/// The short run through a line: 200 members for 30 units, joining over 3 s, staying 12 s.
async fn run_line_against(flaw: Flaw) -> Report {
    run_flawed(flaw, |target| {
        let mut args = short_run(target);
        args.waiting_room = true;
        args.buyers = 200;
        args.stock = 30;
        args.line_lead_secs = 3;
        args.line_stay_secs = 12;
        args.cheater_share = 0.3;
        args
    })
    .await
}

async fn run_flawed(flaw: Flaw, args: impl FnOnce(String) -> BenchArgs) -> Report {
    let state = Arc::new(Flawed {
        flaw,
        tokens: BuyerTokens::new(BUYER_SECRET.as_bytes()),
        sale: Mutex::new(FlawedSale::default()),
    });
    let app = Router::new()
        .route("/api/admin/sales", post(create))
        .route("/api/admin/sales/{id}", get(admin_view))
        .route("/api/admin/sales/{id}/orders", get(orders))
        .route("/api/sales/{id}/status", get(status))
        .route("/api/sales/{id}/buy/{token}", post(buy))
        .route("/api/sales/{id}/line", post(join))
        .route("/api/sales/{id}/line/me", get(line_me))
        .route("/api/sales/{id}/line/log", get(line_log))
        .route("/api/admin/sales/{id}/line", post(line_admin))
        .route("/api/orders/{id}", get(order))
        .route("/api/orders/{id}/pay", post(pay))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let report = flashsale_bench::run(&args(format!("http://{addr}")))
        .await
        .unwrap();
    server.abort();
    report
}
