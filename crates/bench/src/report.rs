//! The report: per round throughput, latency percentiles per outcome, layer counts, time to
//! sell out, orders written per second and the verdict; ratios against the peer as medians
//! over rounds. As text, JSON, and an HTML page with hand-written SVG plots.

use crate::BenchArgs;
use crate::api::Counters;
use crate::stats::{LATENCY_BUCKET_MS, Outcome, Percentiles, TIMELINE_BUCKET_MS, Tally};
use crate::verdict::Verdict;
use crate::waiting_room::bots::{BotShare, percent};
use crate::waiting_room::fairness::{Fairness, Winners};
use crate::waiting_room::pow::{PowReport, Solves};
use crate::waiting_room::{LineReport, POW_KIND, fairness_text, p_text};
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// One reading of the sale's counters during the run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub available: u64,
    pub queued: u64,
    pub written: u64,
    /// Queued + pending + paid: units held by orders.
    pub live: u64,
}

impl Sample {
    pub fn of(at: Duration, c: Counters) -> Self {
        Self {
            t_s: at.as_secs_f64(),
            available: c.available,
            queued: c.queued,
            written: c.written(),
            live: c.queued + c.pending_payment + c.paid,
        }
    }
}

/// One point of the plots.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub t_s: f64,
    pub per_sec: BTreeMap<&'static str, f64>,
}

/// A drain measured after the crowd (`--drain-writers`).
#[derive(Debug, Clone, Serialize)]
pub struct Drain {
    pub writers: usize,
    /// Reservations queued when the writers started.
    pub orders: u64,
    pub secs: f64,
    pub orders_per_sec: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    /// "flashsale" (the --target nodes), "versus" (the --versus nodes) or "peer".
    pub kind: &'static str,
    pub round: usize,
    pub sale_id: Option<String>,
    pub requests: u64,
    pub duration_s: f64,
    pub requests_per_sec: f64,
    pub latency: BTreeMap<&'static str, Percentiles>,
    pub statuses: BTreeMap<u16, u64>,
    pub status_polls: u64,
    pub payments: u64,
    /// First counter sample with nothing available, since the release.
    pub sold_out_after_s: Option<f64>,
    pub orders_written_per_sec_peak: f64,
    pub orders_written_per_sec_mean: f64,
    pub layers: Option<serde_json::Value>,
    pub metrics: Vec<(String, f64)>,
    pub verdict: Option<Verdict>,
    /// Requests per second per outcome, per 100 ms.
    pub throughput: Vec<Point>,
    /// p50/p99/max latency per second, in milliseconds.
    pub latency_over_time: Vec<Point>,
    pub samples: Vec<Sample>,
    /// The drain after the crowd, with `--drain-writers`.
    pub drain: Option<Drain>,
    /// The line, in a round with a waiting room.
    pub line: Option<LineReport>,
    /// Wins by join time among the members who arrived before the start (with
    /// `--waiting-room`, in the round with the line and in the one without).
    pub fairness: Option<Fairness>,
    pub winners: Option<Winners>,
    /// The bots' share of the units won (with `--waiting-room`, in every round).
    pub bots: Option<BotShare>,
    /// The proof of work, in the round through a line that asks one (`--pow-bits`).
    pub pow: Option<PowReport>,
}

impl RoundReport {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: &'static str,
        round: usize,
        tally: &Tally,
        duration_s: f64,
        sale_id: Option<String>,
        status_polls: u64,
        payments: u64,
        layers: Option<serde_json::Value>,
        metrics: Vec<(String, f64)>,
        samples: Vec<Sample>,
        verdict: Option<Verdict>,
    ) -> Self {
        let mut latency = BTreeMap::new();
        latency.insert("all", Percentiles::of(&tally.all()));
        for o in Outcome::ALL {
            latency.insert(o.label(), Percentiles::of(tally.histogram(o)));
        }
        let statuses = tally
            .statuses
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| (s as u16, *n))
            .collect();
        let scale = 1000.0 / TIMELINE_BUCKET_MS as f64;
        let throughput = tally
            .timeline
            .iter()
            .enumerate()
            .map(|(i, counts)| Point {
                t_s: (i as u64 * TIMELINE_BUCKET_MS) as f64 / 1000.0,
                per_sec: Outcome::ALL
                    .iter()
                    .map(|o| (o.label(), counts[*o as usize] as f64 * scale))
                    .collect(),
            })
            .collect();
        let latency_over_time = tally
            .latency_timeline
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let p = Percentiles::of(h);
                Point {
                    t_s: (i as u64 * LATENCY_BUCKET_MS) as f64 / 1000.0,
                    per_sec: [("p50", p.p50_ms), ("p99", p.p99_ms), ("max", p.max_ms)]
                        .into_iter()
                        .collect(),
                }
            })
            .collect();
        let (peak, mean) = written_rates(&samples);
        let requests = tally.total();
        Self {
            kind,
            round,
            sale_id,
            requests,
            duration_s,
            requests_per_sec: requests as f64 / duration_s.max(1e-9),
            latency,
            statuses,
            status_polls,
            payments,
            sold_out_after_s: samples.iter().find(|s| s.available == 0).map(|s| s.t_s),
            orders_written_per_sec_peak: peak,
            orders_written_per_sec_mean: mean,
            layers,
            metrics,
            verdict,
            throughput,
            latency_over_time,
            samples,
            drain: None,
            line: None,
            fairness: None,
            winners: None,
            bots: None,
            pow: None,
        }
    }
}

/// Peak (over about a second) and mean orders written per second, from the samples.
fn written_rates(samples: &[Sample]) -> (f64, f64) {
    let mut peak: f64 = 0.0;
    for (i, a) in samples.iter().enumerate() {
        if let Some(b) = samples[i..].iter().find(|b| b.t_s - a.t_s >= 0.95) {
            peak = peak.max((b.written - a.written) as f64 / (b.t_s - a.t_s));
        }
    }
    let first = samples.first().map(|s| s.written).unwrap_or(0);
    let last = samples.last().map(|s| s.written).unwrap_or(0);
    let start = samples.iter().rev().find(|s| s.written == first);
    let end = samples.iter().find(|s| s.written == last);
    let mean = match (start, end) {
        (Some(a), Some(b)) if b.t_s > a.t_s => (b.written - a.written) as f64 / (b.t_s - a.t_s),
        _ => 0.0,
    };
    (peak, mean)
}

/// Medians over rounds, ours as a ratio of the other's (the hello peer, or the --versus
/// deployment).
#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    pub ours_requests_per_sec: f64,
    pub peer_requests_per_sec: f64,
    pub throughput_ratio: f64,
    pub ours_p99_ms: f64,
    pub peer_p99_ms: f64,
    /// Ours ÷ peer: below 1 is better.
    pub p99_ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub mode: String,
    pub buyers: u64,
    pub connections: usize,
    pub rounds: Vec<RoundReport>,
    /// Ours against the hello peer.
    pub ratios: Option<Ratios>,
    /// Ours against the --versus deployment.
    pub versus_ratios: Option<Ratios>,
    /// Median over rounds of the drain rate, ours and theirs.
    pub drain_orders_per_sec: Option<f64>,
    pub versus_drain_orders_per_sec: Option<f64>,
    /// With `--waiting-room`: the bots' share of the units in each round, side by side.
    pub bot_shares: Vec<BotShares>,
}

/// The bots' share of the units won by the same crowd without the line, with it, and with it
/// plus proof of work (`--pow-bits`), for one round number; and what the bots paid for it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BotShares {
    pub round: usize,
    /// Bots ÷ members.
    pub bot_member_share: f64,
    pub without_line: Option<f64>,
    pub with_line: Option<f64>,
    /// The difficulty of the third round, when there was one.
    pub pow_bits: Option<u8>,
    pub with_line_and_pow: Option<f64>,
    /// The bots' CPU seconds solving, per place a bot got, per unit a bot won.
    pub bot_cpu_s: Option<f64>,
    pub bot_cpu_s_per_place: Option<f64>,
    pub bot_cpu_s_per_unit: Option<f64>,
    /// A person's solve on the bench machine (median CPU seconds).
    pub human_solve_cpu_s_median: Option<f64>,
}

impl BotShares {
    /// One per round number that has a round with the line and one without.
    pub fn of(rounds: &[RoundReport]) -> Vec<Self> {
        let mut numbers: Vec<usize> = rounds
            .iter()
            .filter(|r| r.bots.is_some())
            .map(|r| r.round)
            .collect();
        numbers.dedup();
        numbers
            .into_iter()
            .filter_map(|round| {
                let of = |kind: &str| {
                    rounds
                        .iter()
                        .find(|r| r.round == round && r.kind == kind)
                        .and_then(|r| r.bots.map(|b| (r, b)))
                };
                let (without, with) = (of("no line")?, of("waiting room")?);
                let pow = of(POW_KIND);
                let paid = pow.and_then(|(r, _)| r.pow.as_ref());
                Some(Self {
                    round,
                    bot_member_share: with.1.bot_member_share,
                    without_line: without.1.bot_share,
                    with_line: with.1.bot_share,
                    pow_bits: paid.map(|p| p.difficulty_bits),
                    with_line_and_pow: pow.and_then(|(_, b)| b.bot_share),
                    bot_cpu_s: paid.map(|p| p.bots.cpu_s),
                    bot_cpu_s_per_place: paid.and_then(|p| p.bot_cpu_s_per_place),
                    bot_cpu_s_per_unit: paid.and_then(|p| p.bot_cpu_s_per_unit),
                    human_solve_cpu_s_median: paid.and_then(|p| p.humans.cpu_s_median),
                })
            })
            .collect()
    }
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

impl Report {
    pub fn new(args: &BenchArgs) -> Self {
        Self {
            target: args.target.join(","),
            mode: match args.rate {
                None if args.waiting_room => format!(
                    "waiting room: the line opens {} s before the start, {} admitted/s, {} s to buy, the crowd stays {} s; then the same crowd without a line{}; up to {} connections",
                    args.line_lead_secs,
                    serde_json::to_string(&args.admit_per_sec).unwrap_or_default(),
                    args.admission_secs,
                    args.line_stay_secs,
                    if args.pow_bits > 0 {
                        format!(
                            "; then through a line asking {} bits of proof of work",
                            args.pow_bits
                        )
                    } else {
                        String::new()
                    },
                    args.connections
                ),
                None => format!("closed loop, {} connections", args.connections),
                Some(rate) => format!(
                    "open loop, {rate} buyers/s ({}x for the first {} s), up to {} connections",
                    args.spike_factor, args.spike_secs, args.connections
                ),
            },
            buyers: args.buyers,
            connections: args.connections,
            rounds: Vec::new(),
            ratios: None,
            versus_ratios: None,
            drain_orders_per_sec: None,
            versus_drain_orders_per_sec: None,
            bot_shares: Vec::new(),
        }
    }

    pub fn passed(&self) -> bool {
        self.rounds
            .iter()
            .filter_map(|r| r.verdict.as_ref())
            .all(Verdict::passed)
    }

    pub fn summarize(&mut self) {
        self.ratios = self.ratios_of("flashsale", "peer");
        self.versus_ratios = self.ratios_of("flashsale", "versus");
        let drain = |kind: &str| {
            let rates: Vec<f64> = self
                .rounds
                .iter()
                .filter(|r| r.kind == kind)
                .filter_map(|r| r.drain.as_ref().map(|d| d.orders_per_sec))
                .collect();
            (!rates.is_empty()).then(|| median(rates))
        };
        self.drain_orders_per_sec = drain("flashsale");
        self.versus_drain_orders_per_sec = drain("versus");
        self.bot_shares = BotShares::of(&self.rounds);
    }

    /// Medians over the rounds of `ours` against those of `theirs`, if both ran.
    fn ratios_of(&self, ours: &str, theirs: &str) -> Option<Ratios> {
        let of = |kind: &str, f: &dyn Fn(&RoundReport) -> f64| {
            median(
                self.rounds
                    .iter()
                    .filter(|r| r.kind == kind)
                    .map(f)
                    .collect(),
            )
        };
        if !self.rounds.iter().any(|r| r.kind == theirs) {
            return None;
        }
        let rps = |r: &RoundReport| r.requests_per_sec;
        let p99 = |r: &RoundReport| r.latency["all"].p99_ms;
        let (ours_rps, theirs_rps) = (of(ours, &rps), of(theirs, &rps));
        let (ours_p99, theirs_p99) = (of(ours, &p99), of(theirs, &p99));
        Some(Ratios {
            ours_requests_per_sec: ours_rps,
            peer_requests_per_sec: theirs_rps,
            throughput_ratio: ours_rps / theirs_rps.max(1e-9),
            ours_p99_ms: ours_p99,
            peer_p99_ms: theirs_p99,
            p99_ratio: ours_p99 / theirs_p99.max(1e-9),
        })
    }
}

/// The terminal report.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "flashsale bench: {} buyers against {}, {}",
        report.buyers, report.target, report.mode
    );
    for r in &report.rounds {
        let _ = writeln!(
            out,
            "\n== round {} · {}{} ==",
            r.round + 1,
            r.kind,
            r.sale_id
                .as_deref()
                .map(|s| format!(" · sale {s}"))
                .unwrap_or_default()
        );
        // In a round with a line the table is of the buys; the joins and polls are in its
        // line block.
        let what = if r.line.is_some() {
            "buy requests"
        } else {
            "requests"
        };
        let _ = writeln!(
            out,
            "{} {what} in {:.2} s = {:.0} req/s",
            r.requests, r.duration_s, r.requests_per_sec
        );
        let _ = writeln!(
            out,
            "{:>6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "answer", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for (label, p) in &r.latency {
            if p.count == 0 {
                continue;
            }
            let _ = writeln!(
                out,
                "{label:>6} {:>10} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
            );
        }
        let statuses: Vec<String> = r.statuses.iter().map(|(s, n)| format!("{s}:{n}")).collect();
        let _ = writeln!(out, "statuses (0 = no answer): {}", statuses.join(" "));
        if let Some(d) = &r.drain {
            let _ = writeln!(
                out,
                "drain: {} orders written by {} writers in {:.2} s = {:.0} orders/s",
                d.orders, d.writers, d.secs, d.orders_per_sec
            );
        }
        if r.kind != "peer" {
            let _ = writeln!(
                out,
                "status polls before go-live: {}; payments made: {}",
                r.status_polls, r.payments
            );
            let _ = writeln!(
                out,
                "sold out after: {}; orders written/s: peak {:.0}, mean {:.0}",
                r.sold_out_after_s
                    .map(|s| format!("{s:.2} s"))
                    .unwrap_or_else(|| "not sold out".into()),
                r.orders_written_per_sec_peak,
                r.orders_written_per_sec_mean
            );
        }
        if let Some(line) = &r.line {
            line_text(&mut out, line);
        }
        if let Some(w) = &r.winners {
            let _ = writeln!(
                out,
                "winners: {} of the {} members who arrived before the start; the {} who came in its last second (bots) won {}",
                w.wins, w.members, w.last_second_members, w.last_second_wins
            );
        }
        if let Some(f) = &r.fairness {
            for line in fairness_text(f) {
                let _ = writeln!(out, "{line}");
            }
        }
        if let Some(b) = &r.bots {
            let _ = writeln!(
                out,
                "bots: {} of the {} members ({}) came in the last second before the start; units won (orders accepted): bots {}, people {}; the bots' share {}",
                b.bots,
                b.bots + b.humans,
                percent(Some(b.bot_member_share)),
                b.bot_units,
                b.human_units,
                percent(b.bot_share)
            );
        }
        if let Some(p) = &r.pow {
            pow_text(&mut out, p);
        }
        if let Some(layers) = r.layers.as_ref().and_then(|l| l.as_object()) {
            let _ = writeln!(out, "layers (this sale, from the admin view):");
            for (name, n) in layers {
                let _ = writeln!(out, "  {name:<24} {n}");
            }
        }
        if let Some(verdict) = &r.verdict {
            let _ = writeln!(
                out,
                "verdict: {}",
                if verdict.passed() { "PASS" } else { "FAIL" }
            );
            for c in &verdict.checks {
                let mark = match c.passed {
                    Some(true) => "ok  ",
                    Some(false) => "FAIL",
                    None => "skip",
                };
                let _ = writeln!(out, "  {mark} {:<24} {}", c.name, c.detail);
            }
        }
    }
    for (name, ratios) in [
        ("vs hello peer", &report.ratios),
        ("vs the --versus deployment", &report.versus_ratios),
    ] {
        if let Some(x) = ratios {
            let _ = writeln!(
                out,
                "\n{name} (medians over rounds): throughput {:.0} / {:.0} req/s = {:.2}x; p99 {:.2} / {:.2} ms = {:.2}x",
                x.ours_requests_per_sec,
                x.peer_requests_per_sec,
                x.throughput_ratio,
                x.ours_p99_ms,
                x.peer_p99_ms,
                x.p99_ratio
            );
        }
    }
    contrast_text(&mut out, report);
    bots_text(&mut out, report);
    if let Some(ours) = report.drain_orders_per_sec {
        let _ = write!(out, "\ndrain (median over rounds): {ours:.0} orders/s");
        if let Some(theirs) = report.versus_drain_orders_per_sec {
            let _ = write!(out, "; the --versus deployment {theirs:.0} orders/s");
        }
        let _ = writeln!(out);
    }
    out
}

/// What the line round saw of the line.
fn line_text(out: &mut String, line: &LineReport) {
    let _ = writeln!(
        out,
        "line: {} of {} members joined ({} in the pre-queue, {} after the start; {} joins failed); joins p50 {:.2} ms p99 {:.2} ms; {} polls p50 {:.2} ms p99 {:.2} ms ({} failed); {} asked again at the end",
        line.joined,
        line.members,
        line.pre_queue,
        line.joined_after_start,
        line.join_failures,
        line.joins.p50_ms,
        line.joins.p99_ms,
        line.polls.count,
        line.polls.p50_ms,
        line.polls.p99_ms,
        line.poll_failures,
        line.roll_call
    );
    if let Some(server) = &line.server {
        let _ = writeln!(
            out,
            "line at the end: length {}, pre-queue {}, admitted up to {}, bought {}, passed {}, holding {}; {} members seen let through ({} told passed without having seen admitted); admitted buys answered 410: {}; admitted without a buy path: {}",
            server.length,
            server.pre_queue,
            server.admitted_up_to,
            server.bought,
            server.passed,
            server.holders,
            line.let_through,
            line.passed_unseen,
            line.admitted_sold_out,
            line.admitted_without_path
        );
    }
    let cheats: Vec<String> = line
        .cheats
        .iter()
        .map(|c| format!("{} {} ({} accepted)", c.kind, c.tries, c.wins))
        .collect();
    let _ = writeln!(out, "buys without an admission: {}", cheats.join(", "));
}

/// Seconds as a reader wants them: milliseconds below one second ("-" when none).
fn secs_text(secs: Option<f64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s < 1.0 => format!("{:.2} ms", s * 1000.0),
        Some(s) => format!("{s:.2} s"),
    }
}

/// What the proof of work cost, in the round through a line that asks one.
fn pow_text(out: &mut String, p: &PowReport) {
    let _ = writeln!(
        out,
        "proof of work: {} bits asked (the status showed {}); each solve timed by {}",
        p.difficulty_bits,
        p.status_difficulty_bits
            .map_or_else(|| "none".into(), |b| b.to_string()),
        p.cpu_clock
    );
    let solves = |out: &mut String, who: &str, s: &Solves| {
        let _ = writeln!(
            out,
            "  {who}: {} solves ({} gave up), {} tries, {:.3} CPU s in all; a solve's CPU median {}; challenge to nonce median {}, max {}; {} done after the start",
            s.solved,
            s.failed,
            s.tries,
            s.cpu_s,
            secs_text(s.cpu_s_median),
            secs_text(s.wall_s_median),
            secs_text(s.wall_s_max),
            s.done_after_start
        );
    };
    solves(out, "people (on the bench machine)", &p.humans);
    solves(out, &format!("bots (on {} cores)", p.bot_cores), &p.bots);
    let _ = writeln!(
        out,
        "  the bots got {} places ({} in the pre-queue, {} after the start) and won {} units: {} of CPU a place, {} a unit won",
        p.bot_places,
        p.bot_places_before_start,
        p.bot_places - p.bot_places_before_start,
        p.bot_units,
        secs_text(p.bot_cpu_s_per_place),
        secs_text(p.bot_cpu_s_per_unit)
    );
    let probes: Vec<String> = p
        .probes
        .iter()
        .map(|c| format!("{} {} ({} accepted)", c.kind, c.tries, c.wins))
        .collect();
    let _ = writeln!(
        out,
        "  challenges: {} asked, p50 {:.2} ms p99 {:.2} ms; {} members got no challenge or no nonce; {} joins refused as challenge_used (a double join's second tab); joins without a proof of the member's own: {}",
        p.challenges.count,
        p.challenges.p50_ms,
        p.challenges.p99_ms,
        p.challenge_failures,
        p.challenge_used_refusals,
        probes.join(", ")
    );
}

/// The bots' share of the units in each round, side by side, and what they paid.
fn bots_text(out: &mut String, report: &Report) {
    let units = |kind: &str, round: usize| {
        report
            .rounds
            .iter()
            .find(|r| r.round == round && r.kind == kind)
            .and_then(|r| r.bots)
            .map(|b| {
                format!(
                    "{} ({} of {})",
                    percent(b.bot_share),
                    b.bot_units,
                    b.bot_units + b.human_units
                )
            })
            .unwrap_or_else(|| "-".into())
    };
    for b in &report.bot_shares {
        let _ = write!(
            out,
            "\nbots' share of the units, round {} (the bots are {} of the crowd): without the line {}; with it {}",
            b.round + 1,
            percent(Some(b.bot_member_share)),
            units("no line", b.round),
            units("waiting room", b.round)
        );
        if let Some(bits) = b.pow_bits {
            let _ = write!(
                out,
                "; with it and {bits} bits of proof of work {}. The bots paid {:.3} CPU s solving: {} a place in line, {} a unit won; a person's solve took {} of CPU (median) on the bench machine",
                units(POW_KIND, b.round),
                b.bot_cpu_s.unwrap_or(0.0),
                secs_text(b.bot_cpu_s_per_place),
                secs_text(b.bot_cpu_s_per_unit),
                secs_text(b.human_solve_cpu_s_median)
            );
        }
        let _ = writeln!(out);
    }
}

/// Each round with a line beside the round without one that followed it.
fn contrast_text(out: &mut String, report: &Report) {
    for pair in report.rounds.windows(2) {
        let [with, without] = pair else { continue };
        if with.kind != "waiting room" || without.kind != "no line" {
            continue;
        }
        let figure = |r: &RoundReport| match (&r.fairness, &r.winners) {
            (Some(f), Some(w)) => format!(
                "chi² {:.2} (p {}), bots won {} of {} wins being {} of {} members",
                f.chi_square,
                p_text(f.p_value),
                w.last_second_wins,
                w.wins,
                w.last_second_members,
                w.members
            ),
            _ => "no figure (nobody won)".into(),
        };
        let _ = writeln!(
            out,
            "\nfairness, round {}: with the line {}; without it {}",
            with.round + 1,
            figure(with),
            figure(without)
        );
    }
}

/// Writes `index.html` (with inline SVG plots) and `report.json` into `dir`.
pub fn write_html(dir: &Path, report: &Report) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut html = String::from(
        "<!doctype html><meta charset=utf-8><title>flashsale bench</title>\
         <style>body{font:14px system-ui;margin:2em}pre{background:#f4f4f4;padding:1em}</style>\
         <h1>flashsale bench</h1>",
    );
    for r in &report.rounds {
        let _ = write!(html, "<h2>round {} · {}</h2>", r.round + 1, r.kind);
        html.push_str(&svg(
            "requests/s by answer (per 100 ms)",
            &r.throughput,
            &["202", "410", "409", "429", "503", "other"],
        ));
        html.push_str(&svg(
            "latency ms (per second)",
            &r.latency_over_time,
            &["p50", "p99", "max"],
        ));
    }
    let _ = write!(html, "<pre>{}</pre>", escape(&text(report)));
    std::fs::write(dir.join("index.html"), html)?;
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(report)?)?;
    Ok(())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const COLORS: [&str; 6] = ["#2a7", "#c33", "#e90", "#36c", "#a3c", "#777"];

/// A line chart of `series` over time, hand-written SVG.
fn svg(title: &str, points: &[Point], series: &[&str]) -> String {
    let (w, h, pad) = (800.0, 240.0, 40.0);
    let t_max = points.last().map(|p| p.t_s).unwrap_or(1.0).max(0.1);
    let y_max = points
        .iter()
        .flat_map(|p| series.iter().filter_map(|s| p.per_sec.get(s)))
        .fold(0.0_f64, |a, b| a.max(*b))
        .max(1e-9);
    let mut out = format!(
        "<figure><figcaption>{}</figcaption><svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}'>\
         <rect x='{pad}' y='0' width='{}' height='{}' fill='none' stroke='#ccc'/>\
         <text x='2' y='12' font-size='10'>{y_max:.0}</text><text x='{}' y='{}' font-size='10'>{t_max:.1} s</text>",
        escape(title),
        w - pad,
        h - pad,
        w - pad - 30.0,
        h - pad + 14.0
    );
    for (i, s) in series.iter().enumerate() {
        let coords: Vec<String> = points
            .iter()
            .filter_map(|p| {
                p.per_sec.get(s).map(|v| {
                    format!(
                        "{:.1},{:.1}",
                        pad + p.t_s / t_max * (w - pad),
                        (h - pad) - v / y_max * (h - pad)
                    )
                })
            })
            .collect();
        let color = COLORS[i % COLORS.len()];
        let _ = write!(
            out,
            "<polyline fill='none' stroke='{color}' points='{}'/><text x='{}' y='{}' font-size='11' fill='{color}'>{s}</text>",
            coords.join(" "),
            pad + 10.0 + i as f64 * 60.0,
            h - 8.0
        );
    }
    out.push_str("</svg></figure>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_shares_line_up_the_rounds_of_one_number() {
        let round = |kind: &'static str, number: usize, bot_units: u64| {
            let mut r = RoundReport::new(
                kind,
                number,
                &Tally::new(),
                1.0,
                None,
                0,
                0,
                None,
                Vec::new(),
                Vec::new(),
                None,
            );
            r.bots = Some(BotShare {
                bots: 20,
                humans: 80,
                bot_units,
                human_units: 10 - bot_units,
                bot_share: Some(bot_units as f64 / 10.0),
                bot_member_share: 0.2,
            });
            r
        };
        let mut paid = round(POW_KIND, 0, 1);
        paid.pow = Some(PowReport {
            difficulty_bits: 16,
            status_difficulty_bits: Some(16),
            cpu_clock: "test",
            bot_cores: 2,
            bots: Solves {
                cpu_s: 6.0,
                ..Solves::default()
            },
            humans: Solves {
                cpu_s_median: Some(0.006),
                ..Solves::default()
            },
            bot_places: 1000,
            bot_places_before_start: 100,
            bot_units: 1,
            bot_cpu_s_per_place: Some(0.006),
            bot_cpu_s_per_unit: Some(6.0),
            challenges: Percentiles::default(),
            challenge_failures: 0,
            proofs_sent: 5000,
            places_held: 5000,
            places_without_proof: 0,
            challenges_accepted_twice: 0,
            challenge_used_refusals: 0,
            line_length: Some(5000),
            probes: Vec::new(),
        });
        let rounds = vec![
            round("waiting room", 0, 2),
            round("no line", 0, 9),
            paid,
            // A second round number without the proof-of-work round.
            round("waiting room", 1, 3),
            round("no line", 1, 8),
        ];
        let shares = BotShares::of(&rounds);
        assert_eq!(shares.len(), 2);
        let first = &shares[0];
        assert_eq!(
            (first.without_line, first.with_line, first.with_line_and_pow),
            (Some(0.9), Some(0.2), Some(0.1))
        );
        assert_eq!(first.pow_bits, Some(16));
        assert_eq!(first.bot_cpu_s, Some(6.0));
        assert_eq!(first.bot_cpu_s_per_place, Some(0.006));
        assert_eq!(first.bot_cpu_s_per_unit, Some(6.0));
        assert_eq!(first.human_solve_cpu_s_median, Some(0.006));
        let second = &shares[1];
        assert_eq!((second.round, second.pow_bits), (1, None));
        assert_eq!(second.with_line_and_pow, None);
        let mut report = Report::new(&crate::tests::args(&["--waiting-room", "--pow-bits", "16"]));
        report.rounds = rounds;
        report.summarize();
        let text = text(&report);
        assert!(
            text.contains("without the line 90.0 % (9 of 10); with it 20.0 % (2 of 10); with it and 16 bits of proof of work 10.0 % (1 of 10)"),
            "{text}"
        );
        assert!(
            text.contains("6.00 ms a place in line, 6.00 s a unit won"),
            "{text}"
        );
        assert!(
            text.contains("the bots got 1000 places (100 in the pre-queue, 900 after the start)"),
            "{text}"
        );
        assert!(
            text.contains("then through a line asking 16 bits of proof of work"),
            "{text}"
        );
        assert_eq!(secs_text(None), "-");
        assert_eq!(secs_text(Some(0.0042)), "4.20 ms");
        assert_eq!(secs_text(Some(2.5)), "2.50 s");
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn written_rate_peak_and_mean() {
        let s = |t_s, written| Sample {
            t_s,
            available: 0,
            queued: 0,
            written,
            live: 0,
        };
        let samples = [
            s(0.0, 0),
            s(0.5, 0),
            s(1.5, 1000),
            s(2.5, 1500),
            s(3.0, 1500),
        ];
        let (peak, mean) = written_rates(&samples);
        assert_eq!(peak, 1000.0);
        assert_eq!(mean, 750.0);
    }
}
