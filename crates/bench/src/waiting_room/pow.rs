//! `--pow-bits N`: the third round of `--waiting-room`, the same crowd through a line whose sale
//! asks a proof of work of `N` bits (`waiting_room.pow_difficulty_bits`). Every member, before
//! its first join, GETs `line/challenge`, finds a nonce with `flashsale_core::pow::solve` (the
//! reference solver: decimal nonces from 0) and joins with `{challenge, nonce}`.
//!
//! **Where the work runs, and why that is the model.** A solve is CPU work, so it runs on
//! tokio's blocking pool (`spawn_blocking`), never on the async workers that carry the crowd's
//! requests, and each solve's cost is read from the thread's own CPU clock
//! (`CLOCK_THREAD_CPUTIME_ID`, around the solve, on the thread that ran it; where the bench
//! cannot read that clock it takes the wall time of the solve on that thread, and the report
//! names the clock it used: [`CPU_CLOCK`]).
//! - *People* solve on their own devices, in parallel with everyone else. The bench's people
//!   arrive spread over the lead (minutes in a real sale, `--line-lead-secs` here), so their
//!   solves are spread too and each gets a core of the bench machine as it comes: a person's
//!   solve costs it a few milliseconds of lateness at most, far from the start.
//! - *Bots* solve on their owner's cores, modelled as the bench machine's own
//!   (`std::thread::available_parallelism`, [`PowCrowd::bot_cores`]): at most that many bot
//!   solves run at once, the rest wait for a core in order. The bots arrive in the last second
//!   before the start (`plan.rs`), so all of their solves fall into that second: they pay in CPU
//!   seconds, and in lateness, since a bot whose solve finishes after the start joins after the
//!   start, behind the whole pre-queue (the line's arrival order after the draw). The report
//!   says how many bot solves finished after the start, and how many bots still got into the
//!   pre-queue.
//!
//! On one machine the bots' cores are also the server's and the bench's: the bots' burst slows
//! everything around the start a little, as it would not if the bots ran elsewhere. The CPU
//! seconds are each solving thread's own, so they do not depend on that; the lateness does (the
//! bots get about their fair part of the cores, not all of them). The bots of this model fetch
//! their challenges in their last second like everything else they do; a bot that fetched its
//! challenges when the line opened (a challenge lasts five minutes) could solve them during the
//! lead and pay in CPU only.
//!
//! **What the round adds to the verdict.** The line's own checks run as in the round without
//! proof of work (the same `verdict::check`), plus `every_place_paid_for` ([`check`]): every
//! place the crowd was seen to hold belongs to a member who sent a solved challenge, the line
//! is no longer than the members who sent one, a challenge sent twice at once (a double join's
//! two tabs) was accepted once, and no probe got a place without a proof of its own. The probes
//! are the cheaters': before their real join each tries to join with no proof, with a nonce
//! that does not solve its challenge, and (from a friend's account) with its own solved
//! challenge, which is bound to the buyer it was issued to.

use super::verdict::Cheats;
use crate::report::median;
use crate::stats::{Percentiles, Recorder};
use crate::verdict::Check;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The clock each solve's cost is read from.
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub const CPU_CLOCK: &str = "thread CPU time (CLOCK_THREAD_CPUTIME_ID) of the solving thread";
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub const CPU_CLOCK: &str =
    "wall time of the solve on its blocking thread (no thread CPU clock read on this platform)";

/// A solve gives up after this many times the expected tries (2^bits) without a nonce: the
/// chance of that is e^-256, so it only bounds a solver gone wrong.
const TRIES_FACTOR_BITS: u32 = 8;

/// The CPU time this thread has run so far, where the bench can read it.
#[cfg(any(target_os = "linux", target_os = "macos"))]
fn thread_cpu() -> Option<Duration> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Some(Duration::new(
        u64::try_from(t.tv_sec).ok()?,
        u32::try_from(t.tv_nsec).ok()?,
    ))
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn thread_cpu() -> Option<Duration> {
    None
}

/// One member's solve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Solve {
    pub member: u64,
    pub bot: bool,
    /// Whether a nonce was found (within `2^(bits + 8)` tries).
    pub solved: bool,
    pub tries: u64,
    /// The solving thread's CPU time (see [`CPU_CLOCK`]).
    pub cpu: Duration,
    /// From the challenge in hand to the nonce found, waiting for a core included.
    pub wall: Duration,
    /// The nonce was found after the sale's start.
    pub done_after_start: bool,
}

/// What the proof-of-work round's members share.
pub struct PowCrowd {
    /// The difficulty the sale asks.
    pub bits: u8,
    /// How many bot solves may run at once: the bots' owner's cores, modelled as the bench
    /// machine's.
    pub bot_cores: usize,
    bot_permits: Semaphore,
    pub solves: Mutex<Vec<Solve>>,
    /// `GET line/challenge`, each timed.
    pub challenges: Recorder,
    /// Members who found no challenge after every try, or no nonce.
    pub challenge_failures: AtomicU64,
    /// Members who sent a solved challenge in a join (whatever the answer).
    pub proofs_sent: Mutex<HashSet<u64>>,
    /// Per member, the joins carrying its solved challenge answered 2xx (more than one: the
    /// challenge worked twice).
    pub proofs_accepted: Mutex<HashMap<u64, u32>>,
    /// Joins answered 409 `challenge_used` (the second tab of a double join).
    pub challenge_used: AtomicU64,
    /// Joins without a proof of the member's own, by how: tries and 2xx answers.
    probes: [(AtomicU64, AtomicU64); 3],
}

/// How a probe tries to join without paying for its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// No body at all.
    NoProof,
    /// The member's own challenge with a nonce that does not solve it.
    Unsolved,
    /// The member's solved challenge, sent from a friend's account.
    Borrowed,
}

impl Probe {
    const ALL: [Probe; 3] = [Probe::NoProof, Probe::Unsolved, Probe::Borrowed];

    fn label(self) -> &'static str {
        match self {
            Probe::NoProof => "no proof",
            Probe::Unsolved => "a nonce that does not solve",
            Probe::Borrowed => "another buyer's solved challenge",
        }
    }
}

impl PowCrowd {
    pub fn new(bits: u8) -> Self {
        let bot_cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            bits,
            bot_cores,
            bot_permits: Semaphore::new(bot_cores),
            solves: Mutex::default(),
            challenges: Recorder::new(),
            challenge_failures: AtomicU64::new(0),
            proofs_sent: Mutex::default(),
            proofs_accepted: Mutex::default(),
            challenge_used: AtomicU64::new(0),
            probes: Default::default(),
        }
    }

    /// Solves `challenge` at `bits` on the blocking pool (a bot waits for one of the bots'
    /// cores first), records the solve, and returns the nonce. `start` is the sale's start.
    pub async fn solve(
        &self,
        member: u64,
        bot: bool,
        challenge: String,
        bits: u8,
        start: Instant,
    ) -> Option<String> {
        let in_hand = Instant::now();
        let _core = if bot {
            Some(self.bot_permits.acquire().await.ok()?)
        } else {
            None
        };
        let tries_max = 1u64
            .checked_shl(u32::from(bits) + TRIES_FACTOR_BITS)
            .unwrap_or(u64::MAX);
        let (found, cpu) = tokio::task::spawn_blocking(move || {
            let (cpu_before, wall_before) = (thread_cpu(), Instant::now());
            let found = flashsale_core::pow::solve(&challenge, bits, 0, tries_max);
            let cpu = match (cpu_before, thread_cpu()) {
                (Some(before), Some(after)) => after.saturating_sub(before),
                _ => wall_before.elapsed(),
            };
            (found, cpu)
        })
        .await
        .ok()?;
        let done = Instant::now();
        self.solves
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Solve {
                member,
                bot,
                solved: found.is_some(),
                tries: found.as_ref().map_or(tries_max, |(_, tries)| *tries),
                cpu,
                wall: done - in_hand,
                done_after_start: done > start,
            });
        found.map(|(nonce, _)| nonce)
    }

    pub fn probed(&self, probe: Probe, accepted: bool) {
        let (tries, wins) = &self.probes[probe as usize];
        tries.fetch_add(1, Ordering::Relaxed);
        wins.fetch_add(u64::from(accepted), Ordering::Relaxed);
    }

    pub fn probes(&self) -> Vec<Cheats> {
        Probe::ALL
            .iter()
            .map(|&probe| {
                let (tries, wins) = &self.probes[probe as usize];
                Cheats {
                    kind: probe.label(),
                    tries: tries.load(Ordering::Relaxed),
                    wins: wins.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    pub fn proof_sent(&self, member: u64) {
        self.proofs_sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(member);
    }

    pub fn proof_accepted(&self, member: u64) {
        *self
            .proofs_accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(member)
            .or_default() += 1;
    }

    /// The round's figures and its check, once the crowd has gone. `held` is every member the
    /// crowd saw holding a place: (member, bot, joined before the start).
    pub fn report(
        &self,
        held: &[(u64, bool, bool)],
        bot_units: u64,
        status_bits: Option<u64>,
        line_length: Option<u64>,
    ) -> (PowReport, Check) {
        let solves = self.solves.lock().unwrap_or_else(|p| p.into_inner());
        let proofs_sent = self.proofs_sent.lock().unwrap_or_else(|p| p.into_inner());
        let accepted = self
            .proofs_accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let bots = Solves::of(solves.iter().filter(|s| s.bot));
        let humans = Solves::of(solves.iter().filter(|s| !s.bot));
        let bot_places = held.iter().filter(|(_, bot, _)| *bot).count() as u64;
        let bot_places_before_start = held.iter().filter(|(_, bot, pre)| *bot && *pre).count();
        let report = PowReport {
            difficulty_bits: self.bits,
            status_difficulty_bits: status_bits,
            cpu_clock: CPU_CLOCK,
            bot_cores: self.bot_cores,
            bot_cpu_s_per_place: per(bots.cpu_s, bot_places),
            bot_cpu_s_per_unit: per(bots.cpu_s, bot_units),
            bots,
            humans,
            bot_places,
            bot_places_before_start: bot_places_before_start as u64,
            bot_units,
            challenges: Percentiles::of(&self.challenges.snapshot().all()),
            challenge_failures: self.challenge_failures.load(Ordering::Relaxed),
            proofs_sent: proofs_sent.len() as u64,
            places_held: held.len() as u64,
            places_without_proof: held
                .iter()
                .filter(|(m, ..)| !proofs_sent.contains(m))
                .count() as u64,
            challenges_accepted_twice: accepted.values().filter(|n| **n > 1).count() as u64,
            challenge_used_refusals: self.challenge_used.load(Ordering::Relaxed),
            line_length,
            probes: self.probes(),
        };
        let check = check(&report);
        (report, check)
    }
}

/// The solves of one class of members (bots or people).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Solves {
    /// Solves that found a nonce, and those that gave up.
    pub solved: u64,
    pub failed: u64,
    /// Hashes tried in all.
    pub tries: u64,
    /// CPU seconds of all solves ([`CPU_CLOCK`]).
    pub cpu_s: f64,
    pub cpu_s_median: Option<f64>,
    /// From the challenge in hand to the nonce found, waiting for a core included.
    pub wall_s_median: Option<f64>,
    pub wall_s_max: Option<f64>,
    /// Solves that finished after the sale's start.
    pub done_after_start: u64,
}

impl Solves {
    pub fn of<'a>(solves: impl Iterator<Item = &'a Solve>) -> Self {
        let solves: Vec<&Solve> = solves.collect();
        let secs = |f: &dyn Fn(&Solve) -> Duration| -> Vec<f64> {
            solves.iter().map(|s| f(s).as_secs_f64()).collect()
        };
        let (cpu, wall) = (secs(&|s| s.cpu), secs(&|s| s.wall));
        let some = !solves.is_empty();
        Self {
            solved: solves.iter().filter(|s| s.solved).count() as u64,
            failed: solves.iter().filter(|s| !s.solved).count() as u64,
            tries: solves.iter().map(|s| s.tries).sum(),
            cpu_s: cpu.iter().sum(),
            cpu_s_median: some.then(|| median(cpu.clone())),
            wall_s_median: some.then(|| median(wall.clone())),
            wall_s_max: wall.iter().copied().reduce(f64::max),
            done_after_start: solves.iter().filter(|s| s.done_after_start).count() as u64,
        }
    }
}

/// `total` spread over `n` (none when `n` is 0).
pub fn per(total: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| total / n as f64)
}

/// The proof-of-work round's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PowReport {
    /// What the sale asked (`--pow-bits`), and what its status's `line.pow_difficulty_bits`
    /// showed.
    pub difficulty_bits: u8,
    pub status_difficulty_bits: Option<u64>,
    /// How each solve's seconds were measured.
    pub cpu_clock: &'static str,
    /// How many bot solves ran at once (the bench machine's cores).
    pub bot_cores: usize,
    pub bots: Solves,
    /// The people's solves; `humans.cpu_s_median` is a person's solve on the bench machine.
    pub humans: Solves,
    /// Bots the crowd saw holding a place, those of them in the pre-queue (their solve done
    /// before the start), and the units bots won.
    pub bot_places: u64,
    pub bot_places_before_start: u64,
    pub bot_units: u64,
    /// The bots' CPU seconds (`bots.cpu_s`) per place a bot got, and per unit a bot won.
    pub bot_cpu_s_per_place: Option<f64>,
    pub bot_cpu_s_per_unit: Option<f64>,
    /// `GET line/challenge` latencies, and members who got no challenge or no nonce.
    pub challenges: Percentiles,
    pub challenge_failures: u64,
    /// Members who sent a solved challenge, and the places the crowd was seen to hold.
    pub proofs_sent: u64,
    pub places_held: u64,
    /// Places held by members who never sent a solved challenge: must be 0.
    pub places_without_proof: u64,
    /// Members whose one challenge was accepted by two joins: must be 0.
    pub challenges_accepted_twice: u64,
    /// Joins refused 409 `challenge_used` (a double join's second tab sends the same one).
    pub challenge_used_refusals: u64,
    /// The line's length at the end (the admins' line call).
    pub line_length: Option<u64>,
    /// Joins without a proof of the member's own: every one must be refused.
    pub probes: Vec<Cheats>,
}

/// `every_place_paid_for`: every place is a member's who sent a solved challenge, the line is
/// no longer than those members, a challenge bought one place, and no probe bought any.
pub fn check(report: &PowReport) -> Check {
    let mut problems = Vec::new();
    if report.places_without_proof > 0 {
        problems.push(format!(
            "{} members held a place without having sent a solved challenge",
            report.places_without_proof
        ));
    }
    if let Some(length) = report.line_length
        && length > report.proofs_sent
    {
        problems.push(format!(
            "the line holds {length} members, but only {} sent a solved challenge",
            report.proofs_sent
        ));
    }
    if report.challenges_accepted_twice > 0 {
        problems.push(format!(
            "{} challenges were accepted by two joins",
            report.challenges_accepted_twice
        ));
    }
    let accepted: Vec<String> = report
        .probes
        .iter()
        .filter(|p| p.wins > 0)
        .map(|p| format!("{} {}", p.kind, p.wins))
        .collect();
    if !accepted.is_empty() {
        problems.push(format!(
            "joins without a proof of the member's own were accepted ({})",
            accepted.join(", ")
        ));
    }
    let tries: u64 = report.probes.iter().map(|p| p.tries).sum();
    let kinds: Vec<String> = report
        .probes
        .iter()
        .map(|p| format!("{} {}", p.kind, p.tries))
        .collect();
    let mut detail = format!(
        "{} places held, each by a member who sent a solved challenge at {} bits; line length {} ≤ {} members who sent one; {} challenges sent twice at once refused as used; {} of {tries} joins without a proof of the member's own accepted ({})",
        report.places_held,
        report.difficulty_bits,
        report
            .line_length
            .map_or_else(|| "unknown".into(), |l| l.to_string()),
        report.proofs_sent,
        report.challenge_used_refusals,
        report.probes.iter().map(|p| p.wins).sum::<u64>(),
        kinds.join(", ")
    );
    if !problems.is_empty() {
        detail.push_str(&format!("; {}", problems.join("; ")));
    }
    Check {
        name: "every_place_paid_for",
        passed: Some(problems.is_empty()),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solve(member: u64, bot: bool, cpu_ms: u64, wall_ms: u64, late: bool) -> Solve {
        Solve {
            member,
            bot,
            solved: true,
            tries: 100,
            cpu: Duration::from_millis(cpu_ms),
            wall: Duration::from_millis(wall_ms),
            done_after_start: late,
        }
    }

    fn report() -> PowReport {
        let solves = [
            solve(1, false, 4, 5, false),
            solve(2, false, 6, 7, false),
            solve(3, false, 5, 30, false),
            solve(7, true, 6, 6, false),
            solve(8, true, 6, 12, true),
            Solve {
                solved: false,
                ..solve(9, true, 8, 20, true)
            },
        ];
        let bots = Solves::of(solves.iter().filter(|s| s.bot));
        PowReport {
            difficulty_bits: 8,
            status_difficulty_bits: Some(8),
            cpu_clock: CPU_CLOCK,
            bot_cores: 2,
            bot_cpu_s_per_place: per(bots.cpu_s, 2),
            bot_cpu_s_per_unit: per(bots.cpu_s, 0),
            bots,
            humans: Solves::of(solves.iter().filter(|s| !s.bot)),
            bot_places: 2,
            bot_places_before_start: 1,
            bot_units: 0,
            challenges: Percentiles::default(),
            challenge_failures: 1,
            proofs_sent: 5,
            places_held: 5,
            places_without_proof: 0,
            challenges_accepted_twice: 0,
            challenge_used_refusals: 1,
            line_length: Some(5),
            probes: vec![Cheats {
                kind: "no proof",
                tries: 3,
                wins: 0,
            }],
        }
    }

    #[test]
    fn solves_sum_the_cpu_and_take_medians_per_class() {
        let r = report();
        assert_eq!((r.bots.solved, r.bots.failed, r.bots.tries), (2, 1, 300));
        assert!((r.bots.cpu_s - 0.020).abs() < 1e-9, "{}", r.bots.cpu_s);
        assert_eq!(r.bots.done_after_start, 2);
        assert_eq!(r.bots.wall_s_max, Some(0.020));
        assert!((r.bot_cpu_s_per_place.unwrap() - 0.010).abs() < 1e-9);
        assert_eq!(r.bot_cpu_s_per_unit, None, "no unit won: no cost per unit");
        assert_eq!(r.humans.cpu_s_median, Some(0.005));
        assert_eq!(r.humans.wall_s_median, Some(0.007));
        assert_eq!(r.humans.done_after_start, 0);
        let none = Solves::of([].iter());
        assert_eq!(
            (none.cpu_s, none.cpu_s_median, none.wall_s_max),
            (0.0, None, None)
        );
        assert_eq!(per(3.0, 4), Some(0.75));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_solve_finds_a_nonce_off_the_async_workers_and_counts_its_cpu() {
        let crowd = PowCrowd::new(10);
        assert!(crowd.bot_cores >= 1);
        let started = Instant::now();
        let later = started + Duration::from_secs(3600);
        let (bot, person) = tokio::join!(
            crowd.solve(1, true, "challenge-one".into(), 10, later),
            crowd.solve(2, false, "challenge-two".into(), 10, started)
        );
        let (bot, person) = (bot.unwrap(), person.unwrap());
        assert!(flashsale_core::pow::solves("challenge-one", &bot, 10));
        assert!(flashsale_core::pow::solves("challenge-two", &person, 10));
        let solves = crowd.solves.lock().unwrap().clone();
        assert_eq!(solves.len(), 2);
        for s in &solves {
            assert!(s.solved && s.tries >= 1, "{s:?}");
            assert!(s.cpu > Duration::ZERO, "{s:?}");
            assert!(s.wall >= Duration::ZERO, "{s:?}");
        }
        let bot = solves.iter().find(|s| s.bot).unwrap();
        assert!(!bot.done_after_start, "{bot:?}");
        let person = solves.iter().find(|s| !s.bot).unwrap();
        assert!(person.done_after_start, "{person:?}");
        // The tries are the reference solver's own count.
        let (_, tries) = flashsale_core::pow::solve("challenge-one", 10, 0, u64::MAX).unwrap();
        assert_eq!(bot.tries, tries);
    }

    #[test]
    fn every_place_paid_for_passes_and_fails_on_each_problem() {
        let ok = check(&report());
        assert_eq!(ok.name, "every_place_paid_for");
        assert_eq!(ok.passed, Some(true), "{}", ok.detail);
        assert!(ok.detail.contains("0 of 3 joins"), "{}", ok.detail);
        let fails = |change: &dyn Fn(&mut PowReport), says: &str| {
            let mut r = report();
            change(&mut r);
            let c = check(&r);
            assert_eq!(c.passed, Some(false), "{}", c.detail);
            assert!(c.detail.contains(says), "{says}: {}", c.detail);
        };
        fails(&|r| r.places_without_proof = 1, "without having sent");
        fails(&|r| r.line_length = Some(6), "only 5 sent");
        fails(
            &|r| r.challenges_accepted_twice = 1,
            "accepted by two joins",
        );
        fails(&|r| r.probes[0].wins = 1, "no proof 1");
    }
}
