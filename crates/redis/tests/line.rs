//! What only the Redis line promises beyond the conformance suite (`conformance.rs` runs that):
//! a lost line says so, nodes share one line, and the scripts follow `Line` step by step
//! through long seeded runs, clocks that lag included.
//!
//! The server is `env::REDIS`, as in `conformance.rs`; each test has a key prefix of its own.

use flashsale_core::line::{
    AdmitInputs, AdmitRate, Line, LineControl, LineId, LineTimes, Place, Seed,
};
use flashsale_core::{BuyerId, SaleId, Timestamp};
use flashsale_redis::{RedisLine, RedisStockConfig};
use flashsale_service::conformance::env::REDIS;
use flashsale_service::{LineRefused, WaitingLine};
use std::collections::HashSet;
use std::sync::Arc;
use time::Duration;
use uuid::Uuid;

mod support;

use support::TestPrefix;

const SEED: Seed = Seed([3; 32]);

fn t0() -> Timestamp {
    Timestamp::from_unix_timestamp(1_900_000_000).expect("a valid time")
}

fn at_ms(ms: i64) -> Timestamp {
    t0() + Duration::milliseconds(ms)
}

/// Opens ten minutes before `t0()`, runs an hour; admissions last `admission_secs`.
fn times(admission_secs: u32) -> LineTimes {
    LineTimes {
        opens_at: t0() - Duration::minutes(10),
        starts_at: t0(),
        ends_at: t0() + Duration::hours(1),
        admission_secs,
    }
}

fn member(sale: SaleId, n: usize) -> LineId {
    LineId::of(sale, &BuyerId::parse(&format!("buyer-{n}")).expect("buyer"))
}

/// A node: its own connection to the line under `prefix`.
async fn node(prefix: &TestPrefix) -> RedisLine {
    let config = RedisStockConfig {
        key_prefix: prefix.prefix.clone(),
        ..RedisStockConfig::default()
    };
    RedisLine::connect(&REDIS.url(), config)
        .await
        .unwrap_or_else(|e| panic!("{e} {}", REDIS.hint()))
}

fn inputs(rate: u32, units_left: u64) -> AdmitInputs {
    AdmitInputs {
        rate_per_sec: rate,
        units_left,
        units_returnable: 0,
    }
}

#[tokio::test]
async fn a_lost_line_answers_not_set_up_never_an_empty_line() {
    let prefix = TestPrefix::new();
    let line = node(&prefix).await;
    let sale = SaleId(Uuid::now_v7());
    line.set_up(sale, times(60)).await.expect("set up");
    let who = member(sale, 0);
    let key = SEED.draw_key(&who);
    assert_eq!(
        line.join(sale, who, key, at_ms(-5_000))
            .await
            .expect("join"),
        Ok(Place::PreQueue)
    );
    // Redis restarts empty: every key of the sale is gone.
    prefix.delete_keys().expect("delete the keys");
    let now = at_ms(1_000);
    let not_set_up = Some(LineRefused::NotSetUp);
    assert_eq!(
        line.join(sale, who, key, now).await.expect("join").err(),
        not_set_up
    );
    assert_eq!(
        line.place(sale, who, now).await.expect("place").err(),
        not_set_up
    );
    assert_eq!(
        line.advance(sale, now, inputs(10, 10))
            .await
            .expect("advance")
            .err(),
        not_set_up
    );
    assert_eq!(
        line.standing(sale, who, now, inputs(10, 10))
            .await
            .expect("standing")
            .err(),
        not_set_up
    );
    assert_eq!(
        line.record_bought(sale, 1).await.expect("bought").err(),
        not_set_up
    );
    assert_eq!(
        line.set_control(sale, LineControl::default())
            .await
            .expect("control")
            .err(),
        not_set_up
    );
    assert_eq!(
        line.members(sale, 1, 10).await.expect("members").err(),
        not_set_up
    );
    assert_eq!(
        line.members(sale, 1, 0).await.expect("members").err(),
        not_set_up
    );
}

#[tokio::test]
async fn a_line_set_up_over_the_pieces_of_a_lost_one_starts_empty() {
    let prefix = TestPrefix::new();
    let line = node(&prefix).await;
    let sale = SaleId(Uuid::now_v7());
    line.set_up(sale, times(60)).await.expect("set up");
    let who = member(sale, 0);
    line.join(sale, who, SEED.draw_key(&who), at_ms(-5_000))
        .await
        .expect("join")
        .expect("joined");
    // Only the meta is lost (an eviction, a partial restore): the members are still there.
    let client = redis::Client::open(REDIS.url()).expect("client");
    let mut connection = client.get_connection().expect("connection");
    redis::cmd("DEL")
        .arg(format!("{{fs:{}:{sale}}}:line:meta", prefix.prefix))
        .query::<()>(&mut connection)
        .expect("delete the meta");
    line.set_up(sale, times(60)).await.expect("set up again");
    assert_eq!(
        line.place(sale, who, at_ms(-4_000)).await.expect("place"),
        Ok(None),
        "a member of the lost line does not come back"
    );
    let summary = line
        .advance(sale, at_ms(-4_000), inputs(10, 10))
        .await
        .expect("advance")
        .expect("set up");
    assert_eq!(summary.length, 0);
    // Nor does its record in the join chain, or its receipt.
    assert_eq!(
        line.join_records(sale, 1, 10).await.expect("joins"),
        Ok(vec![])
    );
    assert_eq!(line.receipt(sale, who).await.expect("receipt"), Ok(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_share_one_line() {
    const JOINS: usize = 1_000;
    let prefix = TestPrefix::new();
    let nodes = [
        node(&prefix).await,
        node(&prefix).await,
        node(&prefix).await,
    ];
    let sale = SaleId(Uuid::now_v7());
    for line in &nodes {
        // Every node sets the line up at its start: one line.
        line.set_up(sale, times(60)).await.expect("set up");
    }
    let joins: Vec<_> = (0..JOINS)
        .map(|n| {
            let line = nodes[n % nodes.len()].clone();
            tokio::spawn(async move {
                let who = member(sale, n);
                let place = line
                    .join(sale, who, SEED.draw_key(&who), at_ms(1_000))
                    .await
                    .expect("join")
                    .expect("open");
                (who, place)
            })
        })
        .collect();
    let mut by_position = vec![None; JOINS];
    for join in joins {
        let (who, place) = join.await.expect("task");
        let Place::Position(position) = place else {
            panic!("a join after the start is not in the pre-queue");
        };
        let slot = position
            .checked_sub(1)
            .and_then(|i| by_position.get_mut(usize::try_from(i).ok()?))
            .unwrap_or_else(|| panic!("position {position} is beyond 1..={JOINS}"));
        assert_eq!(*slot, None, "position {position} given twice");
        *slot = Some(who);
    }
    let listed = nodes[1]
        .members(sale, 1, JOINS + 10)
        .await
        .expect("members")
        .expect("set up");
    let expected: Vec<LineId> = by_position
        .into_iter()
        .map(|w| w.expect("gap-free"))
        .collect();
    assert_eq!(listed, expected, "the members in position order, each once");
    let distinct: HashSet<_> = listed.iter().collect();
    assert_eq!(distinct.len(), JOINS);
    for (line, n) in nodes.iter().zip([0, 499, 999]) {
        assert_eq!(
            line.place(sale, expected[n], at_ms(2_000))
                .await
                .expect("place"),
            Ok(Some(Place::Position(n as u64 + 1))),
            "every node sees the same place"
        );
    }
}

/// xorshift64: a seeded sequence, so a failing run can be replayed by its seed.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Long seeded runs of every operation, on two nodes whose clocks disagree, against `Line` in
/// memory: each answer must be the reference's. Short admissions, sub-second steps, pauses,
/// a zero rate and units that run out and come back reach every branch of the scripts (each
/// boundary comparison was checked by flipping it: the run fails).
#[tokio::test]
async fn the_scripts_follow_the_reference_step_by_step() {
    // Times on a 250 ms grid meet the boundaries exactly (an admission ending at `now`, one a
    // second after the last); the 1 ms grid reaches the rest.
    for (seed, grain_ms) in [(1, 250), (2, 250), (3, 1), (4, 1)] {
        let prefix = TestPrefix::new();
        let nodes = [node(&prefix).await, node(&prefix).await];
        let sale = SaleId(Uuid::now_v7());
        let times = times(10);
        nodes[0].set_up(sale, times).await.expect("set up");
        let mut reference = Line::new(times);
        let mut dice = Dice(0x9E37_79B9_7F4A_7C15 ^ seed);
        let mut joined = 0;
        let mut now_ms: i64 = -3_000;
        let mut last_inputs = inputs(10, 10);
        for step in 0..600 {
            let line = &nodes[dice.below(2) as usize];
            // This node's clock: up to two seconds behind the line's time.
            now_ms += grain_ms * dice.below(700 / grain_ms as u64) as i64;
            let now = at_ms(now_ms - grain_ms * dice.below(2_000 / grain_ms as u64) as i64);
            let context = format!("seed {seed}, step {step}, at {now}");
            match dice.below(10) {
                0..=2 => {
                    let n = if joined > 0 && dice.below(4) == 0 {
                        dice.below(joined) as usize
                    } else {
                        joined += 1;
                        joined as usize - 1
                    };
                    let who = member(sale, n);
                    let key = SEED.draw_key(&who);
                    let expected = reference.join(who, key, now).map_err(LineRefused::from);
                    let got = line.join(sale, who, key, now).await.expect("join");
                    assert_eq!(got, expected, "join, {context}");
                }
                3..=5 => {
                    last_inputs = AdmitInputs {
                        rate_per_sec: [0, 1, 3, 10, 50][dice.below(5) as usize],
                        units_left: dice.below(30),
                        units_returnable: dice.below(4),
                    };
                    reference.advance(now, last_inputs);
                    let got = line
                        .advance(sale, now, last_inputs)
                        .await
                        .expect("advance")
                        .expect("set up");
                    assert_eq!(got, reference.summary(now), "advance, {context}");
                }
                6 => {
                    let admitted = reference.admitted_up_to();
                    if admitted > 0 {
                        let position = 1 + dice.below(admitted);
                        reference.record_bought(position);
                        let got = line.record_bought(sale, position).await.expect("bought");
                        assert_eq!(got, Ok(()), "bought, {context}");
                    }
                }
                7 => {
                    let control = LineControl {
                        paused: dice.below(3) == 0,
                        rate: [None, Some(AdmitRate::Auto), Some(AdmitRate::Fixed(7))]
                            [dice.below(3) as usize],
                    };
                    reference.set_control(control);
                    let got = line.set_control(sale, control).await.expect("control");
                    assert_eq!(got, Ok(()), "control, {context}");
                }
                _ => {
                    let who = member(sale, dice.below(joined + 1) as usize);
                    reference.draw_if_due(now);
                    let expected = reference.standing(&who, now, last_inputs);
                    let got = line
                        .standing(sale, who, now, last_inputs)
                        .await
                        .expect("standing")
                        .expect("set up");
                    assert_eq!(got, expected, "standing, {context}");
                    let place = line.place(sale, who, now).await.expect("place");
                    assert_eq!(place, Ok(reference.place(&who)), "place, {context}");
                }
            }
        }
        let members = nodes[1]
            .members(sale, 1, 10_000)
            .await
            .expect("members")
            .expect("set up");
        assert_eq!(members, reference.members(), "seed {seed}: the members");
        assert!(
            reference.summary(at_ms(now_ms)).admitted_up_to > 0,
            "seed {seed}: the run admitted someone"
        );
    }
}

#[tokio::test]
async fn members_page_across_the_draw_and_the_late_joiners() {
    let prefix = TestPrefix::new();
    let line = node(&prefix).await;
    let sale = SaleId(Uuid::now_v7());
    line.set_up(sale, times(60)).await.expect("set up");
    let mut reference = Line::new(times(60));
    for n in 0..30 {
        if n == 20 {
            // A repeat join before the draw with another key keeps the first: nobody moves in
            // the draw by joining again.
            let first = member(sale, 0);
            reference.join(first, [0; 32], at_ms(-500)).expect("join");
            line.join(sale, first, [0; 32], at_ms(-500))
                .await
                .expect("join again")
                .expect("open");
        }
        let who = member(sale, n);
        let now = if n < 20 { at_ms(-1_000) } else { at_ms(1_000) };
        reference.join(who, SEED.draw_key(&who), now).expect("join");
        line.join(sale, who, SEED.draw_key(&who), now)
            .await
            .expect("join")
            .expect("open");
    }
    let all = reference.members();
    for (from, limit) in [
        (1, 30),
        (0, 5),
        (18, 5),
        (20, 1),
        (21, 100),
        (30, 1),
        (31, 5),
        (5, 0),
    ] {
        let got = line
            .members(sale, from, limit)
            .await
            .expect("members")
            .expect("set up");
        let start = usize::try_from(from.saturating_sub(1)).expect("small");
        let expected: Vec<LineId> = all.iter().skip(start).take(limit).copied().collect();
        assert_eq!(got, expected, "from {from}, limit {limit}");
    }
}

#[tokio::test]
async fn a_line_that_opens_at_its_start_is_refused() {
    let prefix = TestPrefix::new();
    let line = node(&prefix).await;
    let wrong = LineTimes {
        opens_at: t0(),
        ..times(60)
    };
    let error = line
        .set_up(SaleId(Uuid::now_v7()), wrong)
        .await
        .expect_err("opens at the start");
    assert!(error.outcome_known, "{error}");
}

/// The counter is one per sale: nodes racing to advance at the same moment admit one
/// second's worth between them, not one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_advancing_at_once_admit_once() {
    let prefix = TestPrefix::new();
    let nodes: Vec<Arc<RedisLine>> = vec![
        Arc::new(node(&prefix).await),
        Arc::new(node(&prefix).await),
        Arc::new(node(&prefix).await),
    ];
    let sale = SaleId(Uuid::now_v7());
    nodes[0].set_up(sale, times(60)).await.expect("set up");
    for n in 0..100 {
        let who = member(sale, n);
        nodes[n % 3]
            .join(sale, who, SEED.draw_key(&who), at_ms(-1_000))
            .await
            .expect("join")
            .expect("open");
    }
    // Every node advances at the start, at once: one second's worth goes through, once.
    let advances: Vec<_> = nodes
        .iter()
        .map(|line| {
            let line = line.clone();
            tokio::spawn(async move { line.advance(sale, t0(), inputs(10, 1_000)).await })
        })
        .collect();
    for advance in advances {
        advance
            .await
            .expect("task")
            .expect("advance")
            .expect("set up");
    }
    let summary = nodes[2]
        .advance(sale, t0(), inputs(10, 1_000))
        .await
        .expect("advance")
        .expect("set up");
    assert_eq!(summary.admitted_up_to, 10);
}

/// The boundaries, each against the reference: an admission ends exactly `admission_secs`
/// after its time (it holds no unit at that instant, whether or not an advance ended it), and
/// an admission a second or more after the last has a time of its own.
#[tokio::test]
async fn admissions_end_exactly_at_their_end() {
    let prefix = TestPrefix::new();
    let line = node(&prefix).await;
    let sale = SaleId(Uuid::now_v7());
    line.set_up(sale, times(10)).await.expect("set up");
    let mut reference = Line::new(times(10));
    let members: Vec<LineId> = (0..4).map(|n| member(sale, n)).collect();
    for who in &members {
        reference
            .join(*who, SEED.draw_key(who), at_ms(-1_000))
            .expect("join");
        line.join(sale, *who, SEED.draw_key(who), at_ms(-1_000))
            .await
            .expect("join")
            .expect("open");
    }
    let one_unit = inputs(100, 1);
    let check = |now: Timestamp, reference: &Line| {
        let expected: Vec<_> = members
            .iter()
            .map(|who| reference.standing(who, now, one_unit))
            .collect();
        let line = &line;
        let members = &members;
        async move {
            for (who, expected) in members.iter().zip(expected) {
                let got = line
                    .standing(sale, *who, now, one_unit)
                    .await
                    .expect("standing")
                    .expect("set up");
                assert_eq!(got, expected, "at {now}");
            }
        }
    };
    for now in [at_ms(0), at_ms(1_000), at_ms(11_000)] {
        reference.advance(now, one_unit);
        let got = line
            .advance(sale, now, one_unit)
            .await
            .expect("advance")
            .expect("set up");
        assert_eq!(got, reference.summary(now), "advance at {now}");
        // Standing at the instant the admission ends, before any advance ends it.
        let ends = now + Duration::seconds(10);
        check(ends - Duration::milliseconds(1), &reference).await;
        check(ends, &reference).await;
    }
    assert!(
        reference.admitted_up_to() >= 2,
        "an admission ended and the next one was made"
    );
}
