//! `flashsale bench --waiting-room`: the same crowd twice, once through a sale's fair line and
//! once rushing a sale without one, each judged, with the fairness figure of both.
//!
//! The round with the line: the bench creates a sale whose line opens `--line-lead-secs`
//! before the start; the crowd joins over that lead (the bots in its last second, some
//! members only after the start), polls `line/me` as told, and buys with its own buy path once
//! admitted; some never buy (their admissions pass), some leave their orders unpaid (the units
//! come back and go on down the line), some cheat. After the crowd has left (`--line-stay-secs`
//! after the start), the queue drains and the reaper runs, the shared invariants are checked
//! (`verdict::judge`), every member not done is asked once more (the roll call), the line is
//! read twice a quiet second apart, and the line's own checks run (`verdict.rs` here).
//!
//! The round without: `rush.rs`.
//!
//! With `--pow-bits N` (N > 0) a third round follows: the same crowd through a line whose sale
//! asks N bits of proof of work, each member solving a challenge before it joins (`pow.rs`:
//! the people over the lead, the bots all in their last second on the bench machine's cores).
//! It is judged like the round with the line, plus `every_place_paid_for`. Every round reports
//! the bots' share of the units (`bots.rs`).

pub mod bots;
pub mod fairness;
pub mod member;
pub mod plan;
pub mod pow;
pub mod rush;
pub mod verdict;
pub mod watch;
pub mod wins;

use crate::api::{Api, ORDERS_LISTED_MAX, layer_metrics, rfc3339};
use crate::client::Pool;
use crate::crowd::Signer;
use crate::report::RoundReport;
use crate::stats::{Percentiles, Recorder};
use crate::verdict::{Check, Evidence, judge};
use crate::{BenchArgs, Deployment, PAYMENTS_QUEUED_MAX, monitor, spawn_payers};
use anyhow::{Context, Result};
use bots::BotShare;
use fairness::{Fairness, Joiner, Winners};
use flashsale_core::SaleId;
use member::{CheatKind, LineCrowd, local};
use plan::LineShape;
use pow::PowCrowd;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use verdict::{Cheats, LineObservation, LineRead, Places, QuietSecond, Seen, State};

/// Time between creating the sale and its line opening, in seconds: the line is set up with
/// the sale, and the first joins should not race it.
const LINE_SET_UP_SECS: u64 = 1;
/// The roll call asks again, this long after its first pass, every member still told to wait
/// at or below a counter that pass saw, in milliseconds (longer than an answer can be stale).
const ROLL_CALL_RECHECK_MS: u64 = verdict::LINE_VIEW_STALE_MS_MAX + 250;
/// The quiet second: the line's rate bucket refills within a second, so after this long the
/// line owes a full second's admissions, in milliseconds.
const QUIET_SECOND_MS: u64 = 1200;

/// What the line round saw of the line, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct LineReport {
    /// Members in the crowd, and how many got an answer to their join.
    pub members: u64,
    pub joined: u64,
    pub pre_queue: u64,
    pub joined_after_start: u64,
    pub join_failures: u64,
    pub joins: Percentiles,
    pub polls: Percentiles,
    pub poll_failures: u64,
    /// Members asked again once the crowd had left.
    pub roll_call: u64,
    /// Members seen admitted (or passed, or bought).
    pub let_through: u64,
    /// Members told `passed` who never saw `admitted` (they polled too rarely for their turn).
    pub passed_unseen: u64,
    pub admitted_without_path: u64,
    pub admitted_sold_out: u64,
    /// The line as the admins' call showed it at the end.
    pub server: Option<LineRead>,
    pub cheats: Vec<Cheats>,
}

impl LineShape {
    pub fn of(args: &BenchArgs) -> Self {
        Self {
            lead: Duration::from_secs(args.line_lead_secs),
            stay: Duration::from_secs(args.line_stay_secs),
            last_second_share: args.last_second_share,
            late_share: args.late_share,
            never_buy_share: args.never_buy_share,
        }
    }
}

/// The kind of the round through a line that asks a proof of work.
pub const POW_KIND: &str = "waiting room + pow";

/// The round with the line; through a line asking `pow_bits` of proof of work if above 0.
pub(crate) async fn line_round(
    args: &BenchArgs,
    round: usize,
    deployment: &Deployment,
    signer: &Signer,
    pow_bits: u8,
) -> Result<RoundReport> {
    let (api, target) = (&deployment.api, &deployment.nodes[0]);
    let shape = crate::shape(args, round);
    let line = LineShape::of(args);
    let starts_at = OffsetDateTime::now_utc()
        + time::Duration::seconds(
            args.start_in_secs
                .max(args.line_lead_secs + LINE_SET_UP_SECS) as i64,
        );
    let opens_at = starts_at - time::Duration::seconds(args.line_lead_secs as i64);
    let ends_at = starts_at + time::Duration::hours(1);
    let mut room = serde_json::json!({
        "opens_at": rfc3339(opens_at),
        "admit_per_sec": args.admit_per_sec,
        "admission_secs": args.admission_secs,
    });
    if pow_bits > 0 {
        room["pow_difficulty_bits"] = pow_bits.into();
    }
    let sale_id = api
        .create_sale(
            args.stock,
            args.per_buyer_limit,
            starts_at,
            ends_at,
            args.payment_window_secs,
            Some(room),
        )
        .await?;
    let view = api.sale(&sale_id).await?;
    let per_buyer_limit = view["per_buyer_limit"].as_u64().unwrap_or(1);
    let payment_window_secs = view["payment_window_secs"].as_u64().unwrap_or(3600);
    let before = api.counters(&sale_id).await?;
    let (pay_tx, pay_rx) = mpsc::channel(PAYMENTS_QUEUED_MAX);
    let start = local(starts_at);
    let connections_per_node = (args.connections / deployment.nodes.len()).max(1);
    let crowd = Arc::new(LineCrowd {
        shape: shape.clone(),
        line: line.clone(),
        signer: signer.clone(),
        pools: deployment
            .nodes
            .iter()
            .map(|node| Pool::new(node.clone(), connections_per_node))
            .collect(),
        sale_id: sale_id.clone(),
        opened: local(opens_at),
        start,
        leave: start + line.stay,
        joins: Recorder::new(),
        polls: Recorder::new(),
        buys: Recorder::new(),
        seen: Default::default(),
        wins: wins::Wins::new(pay_tx),
        cheats: Default::default(),
        join_failures: Default::default(),
        poll_failures: Default::default(),
        admitted_without_path: Default::default(),
        admitted_sold_out: Default::default(),
        pow: (pow_bits > 0).then(|| PowCrowd::new(pow_bits)),
    });
    let (payers, paid) = spawn_payers(target, signer, &shape, Some(pay_rx));
    let stop = CancellationToken::new();
    let monitor = tokio::spawn(monitor(
        Api::new(target.clone(), &args.admin_token),
        sale_id.clone(),
        crowd.opened,
        stop.clone(),
    ));
    let watcher = {
        let (crowd, target) = (crowd.clone(), target.clone());
        tokio::spawn(async move { watch::watch(&crowd, &target).await })
    };
    let mut members = JoinSet::new();
    for member in 0..args.buyers {
        let crowd = crowd.clone();
        members.spawn(async move { crowd.live(member).await });
    }
    while members.join_next().await.is_some() {}
    let crowd_secs = crowd.since_open(Instant::now()).as_secs_f64();
    crowd.wins.close_payments();
    for payer in payers {
        let _ = payer.await;
    }
    stop.cancel();
    let samples = monitor.await.unwrap_or_default();
    let watched = watcher.await.context("the status watcher")??;

    let accepted = crowd.wins.take();
    let cheats = crowd.cheats.snapshot();
    let early_wins = cheats[CheatKind::BeforeStart as usize].wins;
    let mut verdict = judge(
        api,
        target,
        &Evidence {
            sale_id: &sale_id,
            shape: &shape,
            signer,
            accepted: &accepted,
            cheater_wins: crowd.cheats.wins() - early_wins,
            early_wins,
            before,
            starts_at,
            ends_at,
            per_buyer_limit,
            payment_window_secs,
            last_accept: accepted
                .iter()
                .map(|a| crowd.opened + a.at)
                .max()
                .unwrap_or(start),
            live_max_sampled: samples.iter().map(|s| s.live).max().unwrap_or(0),
        },
    )
    .await?;

    let roll_call = roll_call(&crowd).await;
    let quiet = quiet_second(api, &sale_id).await.ok();
    let orders = api.orders(&sale_id, ORDERS_LISTED_MAX).await?;
    let counters = api.counters(&sale_id).await?;
    let orders_complete =
        orders.len() as u64 >= counters.written() && orders.len() < ORDERS_LISTED_MAX;
    let shown_at_the_end = api
        .status(&mut crate::client::Conn::new(target.clone()), &sale_id)
        .await
        .is_ok_and(|status| !status["buy_path"].is_null());
    let seen = std::mem::take(&mut *crowd.seen.lock().unwrap_or_else(|p| p.into_inner()));
    let start_ms = crowd.since_open(start).as_millis() as u64;
    let observation = LineObservation {
        shape: &shape,
        sale: SaleId::parse(&sale_id).context("the created sale's id")?,
        admission_secs: u64::from(args.admission_secs),
        fresh: true,
        start_ms,
        seen: &seen,
        commitment_before: watched.commitment_before.clone(),
        commitment_changed: watched.commitment_changed,
        commitment_after: watched.commitment_after.clone(),
        seed: watched.seed.clone(),
        server: quiet.map(|q| q.after),
        cheats: &cheats,
        buy_path_shown: watched.buy_path_shown || shown_at_the_end,
        orders: &orders,
        orders_complete,
        quiet,
    };
    verdict.checks.extend(verdict::check(&observation));
    verdict
        .checks
        .push(line_log_check(target, observation.sale).await);

    let places = Places::of(&seen);
    let is_bot = |member: u64| line.plan(&shape, member).arrival == plan::Arrival::LastSecond;
    let bot_share = BotShare::of(args.buyers, is_bot, &accepted);
    let pow_report = crowd.pow.as_ref().map(|pow| {
        let held: Vec<(u64, bool, bool)> = places
            .pre_queue
            .keys()
            .map(|&m| (m, is_bot(m), true))
            .chain(
                places
                    .joined_after_draw
                    .keys()
                    .map(|&m| (m, is_bot(m), false)),
            )
            .collect();
        let (report, check) = pow.report(
            &held,
            bot_share.bot_units,
            watched.pow_difficulty_bits,
            quiet.map(|q| q.after.length),
        );
        verdict.checks.push(check);
        report
    });
    let winners: HashSet<u64> = accepted.iter().map(|a| a.buyer).collect();
    let joiners: Vec<(bool, Joiner)> = places
        .pre_queue
        .iter()
        .map(|(&member, &sent_ms)| {
            let bot = line.plan(&shape, member).arrival == plan::Arrival::LastSecond;
            let joined_s = (sent_ms as f64 - start_ms as f64) / 1000.0;
            let won = winners.contains(&member);
            (bot, Joiner { joined_s, won })
        })
        .collect();
    let line_report = LineReport {
        members: args.buyers,
        joined: (places.pre_queue.len() + places.joined_after_draw.len()) as u64,
        pre_queue: places.pre_queue.len() as u64,
        joined_after_start: places.joined_after_draw.len() as u64,
        join_failures: crowd.join_failures.load(Ordering::Relaxed),
        joins: Percentiles::of(&crowd.joins.snapshot().all()),
        polls: Percentiles::of(&crowd.polls.snapshot().all()),
        poll_failures: crowd.poll_failures.load(Ordering::Relaxed),
        roll_call,
        let_through: places.let_through.len() as u64,
        passed_unseen: places.passed_unseen() as u64,
        admitted_without_path: crowd.admitted_without_path.load(Ordering::Relaxed),
        admitted_sold_out: crowd.admitted_sold_out.load(Ordering::Relaxed),
        server: quiet.map(|q| q.after),
        cheats,
    };
    let fairness = fairness::by_join_time(&joiners.iter().map(|(_, j)| *j).collect::<Vec<_>>());

    let view = api.sale(&sale_id).await.unwrap_or_default();
    let metrics = layer_metrics(&api.metrics().await);
    let mut report = RoundReport::new(
        if pow_bits > 0 {
            POW_KIND
        } else {
            "waiting room"
        },
        round,
        &crowd.buys.snapshot(),
        crowd_secs,
        Some(sale_id),
        watched.polls,
        paid.load(Ordering::Relaxed),
        view.get("layers").cloned(),
        metrics,
        samples,
        Some(verdict),
    );
    report.line = Some(line_report);
    report.fairness = fairness;
    report.winners = Some(Winners::of(&joiners));
    report.bots = Some(bot_share);
    report.pow = pow_report;
    Ok(report)
}

/// Asks every member not done yet where it stands, then asks again, once answers can no
/// longer be stale, everyone still told to wait at or below a counter the first pass saw.
/// `line_log_checks_out`: the sale's published line log passes every check
/// `flashsale verify-line` makes (chains, heads, seed, draw, admissions).
async fn line_log_check(target: &crate::client::Target, sale: SaleId) -> Check {
    let (passed, detail) = match crate::verify_line::download(target, sale).await {
        Ok(log) => {
            let verdict = flashsale_core::line_log::verify(&log, None);
            let failed: Vec<String> = verdict
                .checks
                .iter()
                .filter_map(|c| {
                    c.outcome
                        .as_ref()
                        .err()
                        .map(|why| format!("{}: {why}", c.name))
                })
                .collect();
            if failed.is_empty() {
                (
                    true,
                    format!(
                        "{} joins ({} drawn), {} events: chains, heads, seed, draw and admissions check out",
                        log.joins.len(),
                        log.pre_queue,
                        log.events.len()
                    ),
                )
            } else {
                (false, failed.join("; "))
            }
        }
        Err(error) => (false, format!("the log could not be read: {error:#}")),
    };
    Check {
        name: "line_log_checks_out",
        passed: Some(passed),
        detail,
    }
}

/// The answers go with the others to the verdict. Returns how many were asked in all.
async fn roll_call(crowd: &Arc<LineCrowd>) -> u64 {
    let last: HashMap<u64, State> = {
        let seen = crowd.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut last: HashMap<u64, &Seen> = HashMap::new();
        for s in seen.iter() {
            let entry = last.entry(s.member).or_insert(s);
            if s.received_ms >= entry.received_ms {
                *entry = s;
            }
        }
        last.into_iter().map(|(m, s)| (m, s.state)).collect()
    };
    let open: Vec<u64> = last
        .into_iter()
        .filter(|(_, state)| !state.is_final())
        .map(|(m, _)| m)
        .collect();
    let first = ask_all(crowd, open).await;
    let counter = first.iter().map(|s| s.admitted_up_to).max().unwrap_or(0);
    let behind: Vec<u64> = first
        .iter()
        .filter(|s| s.state.not_yet() && s.position.is_some_and(|p| p <= counter))
        .map(|s| s.member)
        .collect();
    let again = if behind.is_empty() {
        0
    } else {
        tokio::time::sleep(Duration::from_millis(ROLL_CALL_RECHECK_MS)).await;
        ask_all(crowd, behind).await.len()
    };
    (first.len() + again) as u64
}

async fn ask_all(crowd: &Arc<LineCrowd>, members: Vec<u64>) -> Vec<Seen> {
    let mut asks = JoinSet::new();
    for member in members {
        let crowd = crowd.clone();
        asks.spawn(async move { crowd.roll_call(member).await });
    }
    let mut answers = Vec::new();
    while let Some(answer) = asks.join_next().await {
        if let Ok(Some(seen)) = answer {
            answers.push(seen);
        }
    }
    answers
}

/// The line read twice (advanced each time), a quiet second apart, with the units not
/// reserved around it.
async fn quiet_second(api: &Api, sale_id: &str) -> Result<QuietSecond> {
    let available_before = api.counters(sale_id).await?.available;
    let before = LineRead::of(&api.line(sale_id).await?);
    tokio::time::sleep(Duration::from_millis(QUIET_SECOND_MS)).await;
    let after = LineRead::of(&api.line(sale_id).await?);
    let available_after = api.counters(sale_id).await?.available;
    Ok(QuietSecond {
        before,
        after,
        available: available_before.min(available_after),
    })
}

/// The fairness figure and the last-second joiners' share, as text lines for the report.
pub fn fairness_text(fairness: &Fairness) -> Vec<String> {
    let mut lines = vec![format!(
        "fairness: wins by join-time decile among the {} members who joined before the start: chi² = {:.2}, df = {}, p = {}{}",
        fairness.members,
        fairness.chi_square,
        fairness.degrees_of_freedom,
        p_text(fairness.p_value),
        if fairness.small_counts {
            " (some bin expects fewer than 5 wins: rough)"
        } else {
            ""
        }
    )];
    lines.push(format!(
        "  {:>6} {:>18} {:>8} {:>6} {:>9}",
        "decile", "joined (s)", "members", "wins", "expected"
    ));
    for (i, bin) in fairness.bins.iter().enumerate() {
        lines.push(format!(
            "  {:>6} {:>18} {:>8} {:>6} {:>9.1}",
            i + 1,
            format!("{:.2}..{:.2}", bin.joined_from_s, bin.joined_to_s),
            bin.members,
            bin.wins,
            bin.expected
        ));
    }
    lines
}

/// A p-value as a reader wants it: three decimals, or a power of ten when tiny.
pub fn p_text(p: f64) -> String {
    if p >= 0.001 {
        format!("{p:.3}")
    } else {
        format!("{p:.1e}")
    }
}
