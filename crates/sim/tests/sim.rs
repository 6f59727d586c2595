//! The simulation as tests: many seeds, replay of one, determinism, and the canaries.
//!
//! - `FLASHSALE_SIM_SEEDS=100000 cargo test -p flashsale-sim --release -- seeds` runs a soak
//!   (default 1,000 seeds; `FLASHSALE_SIM_SEED_START` moves the range).
//! - `FLASHSALE_SIM_SEED=1234 cargo test -p flashsale-sim -- replay --nocapture` replays one
//!   seed and prints its whole trace (`FLASHSALE_SIM_VARIANT=blind_expiry` for a canary).

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
    let Some(seed) = env_u64("FLASHSALE_SIM_SEED") else {
        // Without a seed there is nothing to replay; the test passes as a no-op.
        return;
    };
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

/// The first seed (of 100) whose run the checker fails, with its violation.
fn first_caught(variant: Variant) -> Option<(u64, String)> {
    (0..100).find_map(|seed| {
        run_seed(seed, variant)
            .violation
            .map(|violation| (seed, violation))
    })
}

#[test]
fn canary_check_then_act_reserve_is_caught_within_100_seeds() {
    let (seed, violation) = first_caught(Variant::CheckThenActReserve)
        .expect("a reserve that checks, yields and takes must be caught within 100 seeds");
    eprintln!("check-then-act reserve caught at seed {seed}: {violation}");
    assert!(violation.contains("oversold"), "{violation}");
}

#[test]
fn canary_blind_expiry_is_caught_within_100_seeds() {
    let (seed, violation) = first_caught(Variant::BlindExpiry)
        .expect("an expiry that does not check the status must be caught within 100 seeds");
    eprintln!("blind expiry caught at seed {seed}: {violation}");
    assert!(violation.contains("answered paid"), "{violation}");
}
