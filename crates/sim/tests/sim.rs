//! The simulation as tests: many seeds, replay of one, determinism, and the canaries.
//!
//! - `FLASHSALE_SIM_SEEDS=100000 cargo test -p flashsale-sim --release --test sim --
//!   seeds_hold_every_invariant --exact --nocapture` runs a soak (default 1,000 seeds;
//!   `FLASHSALE_SIM_SEED_START` moves the range).
//! - `FLASHSALE_SIM_SEED=1234 cargo test -p flashsale-sim --test sim -- replay --exact --nocapture`
//!   replays one seed and prints its whole trace (`FLASHSALE_SIM_VARIANT=blind_expiry` for a
//!   canary's seed).

use flashsale_sim::{Stats, Variant, run_seed};
use std::time::Instant;

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|e| panic!("{name}={text} is not a number: {e}")),
    )
}

/// Seeds run by default: CI runs these on every push.
const CI_SEEDS: u64 = 1000;

#[test]
fn seeds_hold_every_invariant() {
    let count = env_u64("FLASHSALE_SIM_SEEDS").unwrap_or(CI_SEEDS);
    let start = env_u64("FLASHSALE_SIM_SEED_START").unwrap_or(0);
    let started = Instant::now();
    let mut total = Stats::default();
    for seed in start..start + count {
        let report = run_seed(seed, Variant::Correct);
        if report.violation.is_some() {
            panic!("{}", report.failure_message());
        }
        total.add(&report.stats);
    }
    eprintln!(
        "simulated seeds {start}..{} in {:.1?}: {total:?}",
        start + count,
        started.elapsed()
    );
}

#[test]
fn replay() {
    // Without a seed it replays the one that found the recovery bug (see `regressions.rs`).
    let seed = env_u64("FLASHSALE_SIM_SEED").unwrap_or(90);
    let variant = match std::env::var("FLASHSALE_SIM_VARIANT") {
        Ok(name) => Variant::parse(&name).unwrap_or_else(|| {
            panic!(
                "FLASHSALE_SIM_VARIANT={name}: use correct, check_then_act_reserve or blind_expiry"
            )
        }),
        Err(_) => Variant::Correct,
    };
    let report = run_seed(seed, variant);
    for line in &report.trace {
        println!("{line}");
    }
    println!("{:?}", report.stats);
    if report.violation.is_some() {
        panic!("{}", report.failure_message());
    }
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    for seed in [3, 42, 977] {
        let first = run_seed(seed, Variant::Correct);
        let second = run_seed(seed, Variant::Correct);
        assert!(
            first.trace.len() > 20,
            "seed {seed} did too little to compare"
        );
        assert_eq!(
            first.trace, second.trace,
            "seed {seed} ran differently twice"
        );
    }
}

/// Seeds a canary is given to be caught in.
const CANARY_SEEDS: u64 = 100;

/// The first seed whose run the checker fails, with its violation, and how many of the
/// seeds fail.
fn caught(variant: Variant) -> (Option<(u64, String)>, usize) {
    let violations: Vec<(u64, String)> = (0..CANARY_SEEDS)
        .filter_map(|seed| run_seed(seed, variant).violation.map(|v| (seed, v)))
        .collect();
    let count = violations.len();
    (violations.into_iter().next(), count)
}

#[test]
fn canary_check_then_act_reserve_is_caught_within_100_seeds() {
    let (first, count) = caught(Variant::CheckThenActReserve);
    let (seed, violation) =
        first.expect("a reserve that checks, yields and takes must be caught within 100 seeds");
    eprintln!(
        "check-then-act reserve: first caught at seed {seed} ({violation}); caught by {count} of {CANARY_SEEDS} seeds"
    );
    assert!(violation.contains("oversold"), "{violation}");
}

#[test]
fn canary_blind_expiry_is_caught_within_100_seeds() {
    let (first, count) = caught(Variant::BlindExpiry);
    let (seed, violation) =
        first.expect("an expiry that does not check the status must be caught within 100 seeds");
    eprintln!(
        "blind expiry: first caught at seed {seed} ({violation}); caught by {count} of {CANARY_SEEDS} seeds"
    );
    assert!(violation.contains("answered paid"), "{violation}");
}
