//! Cases for `WaitingLine`: the rules of `flashsale_core::line::Line`, held against a backend.
//! Where a case can, it replays the same calls on a `Line` in memory and asks for the same
//! answers, so a backend that keeps the line elsewhere (Redis) follows the reference exactly.

use super::*;
use crate::ports::{
    AdmitInputs, LineControl, LineId, LineRefused, LineTimes, Place, Standing, WaitingLine,
};
use flashsale_core::line::{AdmitRate, Line, LineEvent, Seed, draw_order};
use time::Duration as TimeDuration;

/// The cases' seed; the service derives a real one per sale.
const SEED: Seed = Seed([9; 32]);

/// A line that opens ten minutes before `t0()`, starts at `t0()` and ends an hour later, with
/// a minute to buy once admitted.
fn times() -> LineTimes {
    LineTimes {
        opens_at: t0() - TimeDuration::minutes(10),
        starts_at: t0(),
        ends_at: t0() + TimeDuration::hours(1),
        admission_secs: 60,
    }
}

fn member(sale: SaleId, n: usize) -> LineId {
    LineId::of(sale, &buyer(&format!("line-buyer-{n}")))
}

fn inputs(rate: u32, units_left: u64) -> AdmitInputs {
    AdmitInputs {
        rate_per_sec: rate,
        units_left,
        units_returnable: 0,
    }
}

fn at(secs: i64) -> Timestamp {
    t0() + TimeDuration::seconds(secs)
}

async fn set_up(line: &Arc<dyn WaitingLine>) -> SaleId {
    let sale = new_sale_id();
    line.set_up(sale, times()).await.expect("set up");
    sale
}

async fn join(line: &Arc<dyn WaitingLine>, sale: SaleId, who: LineId, now: Timestamp) -> Place {
    line.join(sale, who, SEED.draw_key(&who), now)
        .await
        .expect("join")
        .expect("joined")
}

/// Before it opens nobody joins; a sale the backend does not know is `NotSetUp`; after the end
/// nobody joins.
pub async fn line_joins_only_while_open(line: Arc<dyn WaitingLine>) {
    let sale = set_up(&line).await;
    let who = member(sale, 0);
    let key = SEED.draw_key(&who);
    assert_eq!(
        line.join(sale, who, key, at(-601)).await.expect("join"),
        Err(LineRefused::NotOpen)
    );
    assert_eq!(
        line.join(new_sale_id(), who, key, at(0))
            .await
            .expect("join"),
        Err(LineRefused::NotSetUp)
    );
    assert_eq!(
        line.advance(new_sale_id(), at(0), inputs(10, 10))
            .await
            .expect("advance"),
        Err(LineRefused::NotSetUp)
    );
    assert_eq!(
        line.join(sale, who, key, at(3600)).await.expect("join"),
        Err(LineRefused::Ended)
    );
    assert_eq!(line.place(sale, who, at(0)).await.expect("place"), Ok(None));
}

/// Joining twice keeps one place, before and after the start; the pre-queue is drawn in
/// seeded order at the start, and later joiners follow in arrival order.
pub async fn line_draw_is_the_seeded_order(line: Arc<dyn WaitingLine>) {
    let sale = set_up(&line).await;
    let early: Vec<LineId> = (0..40).map(|n| member(sale, n)).collect();
    for (n, who) in early.iter().enumerate() {
        let now = at(-300 + n as i64);
        assert_eq!(join(&line, sale, *who, now).await, Place::PreQueue);
        assert_eq!(join(&line, sale, *who, now).await, Place::PreQueue);
    }
    assert_eq!(
        line.place(sale, early[0], at(-1)).await.expect("place"),
        Ok(Some(Place::PreQueue))
    );
    let summary = line
        .advance(sale, at(-1), inputs(10, 100))
        .await
        .expect("advance")
        .expect("set up");
    assert_eq!((summary.length, summary.pre_queue), (40, 40));
    assert!(!summary.drawn);
    assert_eq!(
        summary.admitted_up_to, 0,
        "nobody is admitted before the start"
    );
    let late = member(sale, 1000);
    assert_eq!(join(&line, sale, late, at(1)).await, Place::Position(41));
    assert_eq!(join(&line, sale, late, at(2)).await, Place::Position(41));
    let expected = draw_order(&SEED, early.iter().copied());
    let drawn = line
        .members(sale, 1, 100)
        .await
        .expect("members")
        .expect("set up");
    assert_eq!(&drawn[..40], &expected[..]);
    assert_eq!(drawn[40], late);
    for (i, who) in expected.iter().enumerate() {
        assert_eq!(
            line.place(sale, *who, at(3)).await.expect("place"),
            Ok(Some(Place::Position(i as u64 + 1)))
        );
    }
    let page = line
        .members(sale, 11, 5)
        .await
        .expect("members")
        .expect("set up");
    assert_eq!(page, expected[10..15]);
}

/// The counter follows the rate (a full second's worth at the start) and stops where the units
/// left are all held; the summary says so. The same calls on the reference give the same
/// answers.
pub async fn line_admission_follows_rate_and_stock(line: Arc<dyn WaitingLine>) {
    let sale = set_up(&line).await;
    let mut reference = Line::new(times());
    for n in 0..100 {
        let who = member(sale, n);
        join(&line, sale, who, at(-5)).await;
        reference
            .join(who, SEED.draw_key(&who), at(-5))
            .expect("reference join");
    }
    let steps = [
        (at(0), inputs(10, 1000)),
        (at(0) + TimeDuration::milliseconds(500), inputs(10, 1000)),
        (at(10), inputs(10, 1000)),
        (at(11), inputs(1000, 30)),
        (at(12), inputs(1000, 30)),
        (at(61), inputs(5, 30)),
        (at(62), inputs(5, 30)),
    ];
    for (now, step) in steps {
        let summary = line
            .advance(sale, now, step)
            .await
            .expect("advance")
            .expect("set up");
        reference.advance(now, step);
        assert_eq!(summary, reference.summary(now), "at {now}");
    }
    let summary = reference.summary(at(62));
    assert!(
        summary.admitted_up_to > 30,
        "admissions that ended make room"
    );
}

/// An admission not used in time passes; a buy is recorded; each member's standing is the
/// reference's.
pub async fn line_unused_admission_passes(line: Arc<dyn WaitingLine>) {
    let sale = set_up(&line).await;
    let mut reference = Line::new(times());
    for n in 0..10 {
        let who = member(sale, n);
        join(&line, sale, who, at(-5)).await;
        reference
            .join(who, SEED.draw_key(&who), at(-5))
            .expect("join");
    }
    let step = |units| inputs(100, units);
    line.advance(sale, at(0), step(2))
        .await
        .expect("advance")
        .expect("set up");
    reference.advance(at(0), step(2));
    line.record_bought(sale, 1)
        .await
        .expect("bought")
        .expect("set up");
    line.record_bought(sale, 1)
        .await
        .expect("bought twice")
        .expect("set up");
    reference.record_bought(1);
    for now in [at(30), at(60), at(61)] {
        let summary = line
            .advance(sale, now, step(1))
            .await
            .expect("advance")
            .expect("set up");
        reference.advance(now, step(1));
        assert_eq!(summary, reference.summary(now), "at {now}");
        for n in 0..10 {
            let who = member(sale, n);
            assert_eq!(
                line.standing(sale, who, now, step(1))
                    .await
                    .expect("standing")
                    .expect("set up"),
                reference.standing(&who, now, step(1)),
                "member {n} at {now}"
            );
        }
    }
    let first = reference.members()[0];
    let second = reference.members()[1];
    assert_eq!(
        reference.standing(&first, at(61), step(1)),
        Some(Standing::Bought { position: 1 })
    );
    assert_eq!(
        reference.standing(&second, at(61), step(1)),
        Some(Standing::Passed { position: 2 })
    );
    assert_eq!(
        line.standing(sale, member(sale, 999), at(61), step(1))
            .await
            .expect("standing"),
        Ok(None),
        "someone who never joined has no standing"
    );
}

/// A returned unit admits the next position (back-fill); a paused line holds; control is
/// kept.
pub async fn line_backfills_and_pauses(line: Arc<dyn WaitingLine>) {
    let sale = set_up(&line).await;
    for n in 0..5 {
        join(&line, sale, member(sale, n), at(-5)).await;
    }
    let admitted =
        |summary: LineSummaryResult| summary.expect("advance").expect("set up").admitted_up_to;
    assert_eq!(admitted(line.advance(sale, at(0), inputs(100, 1)).await), 1);
    line.record_bought(sale, 1)
        .await
        .expect("bought")
        .expect("set up");
    assert_eq!(admitted(line.advance(sale, at(1), inputs(100, 0)).await), 1);
    // The order expires: its unit is back, and the next position is admitted for it.
    assert_eq!(admitted(line.advance(sale, at(2), inputs(100, 1)).await), 2);
    let paused = LineControl {
        paused: true,
        rate: Some(AdmitRate::Fixed(7)),
    };
    line.set_control(sale, paused)
        .await
        .expect("control")
        .expect("set up");
    let summary = line
        .advance(sale, at(70), inputs(100, 10))
        .await
        .expect("advance")
        .expect("set up");
    assert_eq!(summary.admitted_up_to, 2, "a paused line holds");
    assert_eq!(summary.control, paused);
    line.set_control(sale, LineControl::default())
        .await
        .expect("control")
        .expect("set up");
    assert_eq!(
        admitted(line.advance(sale, at(71), inputs(100, 10)).await),
        5
    );
}

type LineSummaryResult = BackendResult<Result<crate::ports::LineSummary, LineRefused>>;

/// Setting up again keeps the line; before it opens, the times may move.
pub async fn line_set_up_is_idempotent(line: Arc<dyn WaitingLine>) {
    let sale = set_up(&line).await;
    let who = member(sale, 0);
    join(&line, sale, who, at(-5)).await;
    line.set_up(sale, times()).await.expect("set up again");
    assert_eq!(
        line.place(sale, who, at(-4)).await.expect("place"),
        Ok(Some(Place::PreQueue))
    );
    // A sale not open yet moves: its line opens later.
    let other = new_sale_id();
    line.set_up(other, times()).await.expect("set up");
    let later = LineTimes {
        opens_at: at(-60),
        ..times()
    };
    line.set_up(other, later).await.expect("move");
    assert_eq!(
        line.join(other, who, SEED.draw_key(&who), at(-120))
            .await
            .expect("join"),
        Err(LineRefused::NotOpen)
    );
    // After the draw the start stays where the draw happened; the end still follows (a sale
    // stopped early).
    let stopped = LineTimes {
        starts_at: at(5),
        ends_at: at(10),
        ..times()
    };
    assert_eq!(
        join(&line, sale, member(sale, 1), at(1)).await,
        Place::Position(2)
    );
    line.set_up(sale, stopped).await.expect("stop early");
    assert_eq!(
        line.join(
            sale,
            member(sale, 2),
            SEED.draw_key(&member(sale, 2)),
            at(3)
        )
        .await
        .expect("join"),
        Ok(Place::Position(3)),
        "the start did not move back behind the draw"
    );
    assert_eq!(
        line.join(
            sale,
            member(sale, 3),
            SEED.draw_key(&member(sale, 3)),
            at(10)
        )
        .await
        .expect("join"),
        Err(LineRefused::Ended)
    );
}

/// Many concurrent joins after the start give a gap-free set of positions, one per member.
pub async fn line_concurrent_joins_are_gap_free(line: Arc<dyn WaitingLine>) {
    let sale = set_up(&line).await;
    for n in 0..50 {
        join(&line, sale, member(sale, n), at(-5)).await;
    }
    let joins = (50..550).map(|n| {
        let line = line.clone();
        tokio::spawn(async move {
            // Each member joins twice, at once: one place each.
            let who = member(sale, n);
            let (a, b) = tokio::join!(
                line.join(sale, who, SEED.draw_key(&who), at(1)),
                line.join(sale, who, SEED.draw_key(&who), at(1))
            );
            let (a, b) = (
                a.expect("join").expect("open"),
                b.expect("join").expect("open"),
            );
            assert_eq!(a, b, "one place per member");
            a
        })
    });
    let mut positions = Vec::new();
    for join in joins {
        match join.await.expect("task") {
            Place::Position(p) => positions.push(p),
            Place::PreQueue => panic!("a join after the start is not in the pre-queue"),
        }
    }
    positions.sort_unstable();
    assert_eq!(positions, (51..=550).collect::<Vec<u64>>());
    let summary = line
        .advance(sale, at(2), inputs(0, 0))
        .await
        .expect("advance")
        .expect("set up");
    assert_eq!((summary.length, summary.pre_queue), (550, 50));
}

/// A solved challenge buys one place, once: a newcomer without one is refused and changes
/// nothing, a member needs none, a used challenge is refused to everyone (its member too), and
/// of two joins racing with one challenge exactly one gets a place. As `Line::join_with`.
pub async fn line_a_challenge_buys_one_place_once(line: Arc<dyn WaitingLine>) {
    use flashsale_core::line::JoinProof;
    let sale = set_up(&line).await;
    let mut reference = Line::new(times());
    let calls: Vec<(usize, i64, JoinProof)> = vec![
        (0, -30, JoinProof::Missing),
        (0, -30, JoinProof::Solved([1; 16])),
        (0, -29, JoinProof::Missing),
        (0, -29, JoinProof::Solved([1; 16])),
        (1, -28, JoinProof::Solved([1; 16])),
        (1, -27, JoinProof::Solved([2; 16])),
        (2, -26, JoinProof::NotAsked),
        (3, 1, JoinProof::Missing),
        (3, 1, JoinProof::Solved([3; 16])),
        (3, 2, JoinProof::Solved([4; 16])),
        (3, 2, JoinProof::Missing),
        (4, 3, JoinProof::Solved([3; 16])),
    ];
    for (n, secs, proof) in calls {
        let who = member(sale, n);
        let key = SEED.draw_key(&who);
        let expected = reference
            .join_with(who, key, at(secs), proof)
            .map_err(LineRefused::from);
        let got = line
            .join_with(sale, who, key, at(secs), proof)
            .await
            .expect("join");
        assert_eq!(got, expected, "member {n} at {secs} s with {proof:?}");
    }
    assert_eq!(
        line.place(sale, member(sale, 4), at(3))
            .await
            .expect("place"),
        Ok(None),
        "a refused join left no place"
    );
    // Two newcomers race with one challenge: one place.
    let (a, b) = (member(sale, 5), member(sale, 6));
    let proof = JoinProof::Solved([5; 16]);
    let (first, second) = tokio::join!(
        line.join_with(sale, a, SEED.draw_key(&a), at(4), proof),
        line.join_with(sale, b, SEED.draw_key(&b), at(4), proof)
    );
    let answers = [first.expect("join"), second.expect("join")];
    assert_eq!(
        answers.iter().filter(|answer| answer.is_ok()).count(),
        1,
        "{answers:?}"
    );
    assert!(
        answers.contains(&Err(LineRefused::ChallengeUsed)),
        "{answers:?}"
    );
    let summary = line
        .advance(sale, at(5), inputs(0, 0))
        .await
        .expect("advance")
        .expect("set up");
    assert_eq!(summary.length, 5, "members 0 to 3 and one of the racers");
}

/// The join chain and the event chain hold what the reference `Line` holds, in its order:
/// first joins only (a repeat and a refused join add nothing), each member's receipt index,
/// the admissions with their shared times, first buys only, the admissions' ends (a buy noted
/// after one included), the line running out of units once per admission and its back-fill;
/// read whole or in pages.
pub async fn line_chains_follow_the_reference(line: Arc<dyn WaitingLine>) {
    let sale = set_up(&line).await;
    let mut reference = Line::new(times());
    let at_ms = |ms: i64| t0() + TimeDuration::milliseconds(ms);
    let mut joins = Vec::new();
    for n in 0..12 {
        joins.push((n, at_ms(-60_000 + 1_001 * n as i64)));
    }
    joins.push((3, at_ms(-1_000)));
    for n in 12..16 {
        joins.push((n, at_ms(250 * n as i64)));
    }
    for (n, now) in joins {
        let who = member(sale, n);
        let key = SEED.draw_key(&who);
        let expected = reference.join(who, key, now).map_err(LineRefused::from);
        assert_eq!(
            line.join(sale, who, key, now).await.expect("join"),
            expected
        );
    }
    assert_eq!(
        line.join(
            sale,
            member(sale, 99),
            SEED.draw_key(&member(sale, 99)),
            at(3600)
        )
        .await
        .expect("join"),
        Err(LineRefused::Ended),
        "a refused join is not on the chain"
    );
    for (now, step) in [
        (at_ms(5_000), inputs(3, 10)),
        (at_ms(5_400), inputs(3, 10)),
        (at_ms(7_000), inputs(3, 10)),
    ] {
        let expected = {
            reference.advance(now, step);
            reference.summary(now)
        };
        let got = line
            .advance(sale, now, step)
            .await
            .expect("advance")
            .expect("set up");
        assert_eq!(got.admitted_up_to, expected.admitted_up_to);
    }
    let mut bought = |position| {
        reference.record_bought(position);
        line.record_bought(sale, position)
    };
    for position in [2, 2, 1] {
        bought(position).await.expect("bought").expect("set up");
    }
    // The admissions end (positions 3 to 7 passed, then 4's buy is noted late), 8 and 9 are
    // admitted, the units run out, asked again nothing changes, one more comes back (8 and 9
    // hold two of the three free) and 10 is admitted for it, and the units run out again.
    let outcomes = [
        (at_ms(70_000), inputs(3, 2)),
        (at_ms(70_500), inputs(3, 0)),
        (at_ms(71_000), inputs(3, 0)),
        (at_ms(75_000), inputs(3, 3)),
        (at_ms(76_000), inputs(3, 0)),
    ];
    for (i, (now, step)) in outcomes.into_iter().enumerate() {
        reference.advance(now, step);
        let summary = line
            .advance(sale, now, step)
            .await
            .expect("advance")
            .expect("set up");
        assert_eq!(summary, reference.summary(now), "at {now}");
        if i == 0 {
            reference.record_bought(4);
            line.record_bought(sale, 4)
                .await
                .expect("bought")
                .expect("set up");
        }
    }
    for n in [0, 5, 11, 12, 15, 99] {
        let who = member(sale, n);
        assert_eq!(
            line.receipt(sale, who).await.expect("receipt"),
            Ok(reference.receipt_index(&who)),
            "member {n}"
        );
    }
    let all = line
        .join_records(sale, 1, 100)
        .await
        .expect("joins")
        .expect("set up");
    assert_eq!(all, reference.join_records(1, 100));
    assert_eq!(all.len(), 16);
    assert_eq!(
        line.join_records(sale, 3, 4)
            .await
            .expect("joins")
            .expect("set up"),
        reference.join_records(3, 4)
    );
    let events = line
        .events(sale, 1, 100)
        .await
        .expect("events")
        .expect("set up");
    assert_eq!(events, reference.events(1, 100));
    let count = |kind: fn(&LineEvent) -> bool| events.iter().filter(|e| kind(e)).count();
    assert_eq!(
        count(|e| matches!(e, LineEvent::Bought { .. })),
        3,
        "a repeated buy is not a second event: {events:?}"
    );
    assert_eq!(
        count(|e| matches!(e, LineEvent::Passed { .. })),
        1,
        "{events:?}"
    );
    assert_eq!(
        count(|e| matches!(e, LineEvent::SoldOut { .. })),
        2,
        "once per admission: {events:?}"
    );
    assert_eq!(
        line.events(sale, 2, 1)
            .await
            .expect("events")
            .expect("set up"),
        reference.events(2, 1)
    );
    assert_eq!(
        line.join_records(new_sale_id(), 1, 10)
            .await
            .expect("joins"),
        Err(LineRefused::NotSetUp)
    );
}

/// Expands into one `#[tokio::test]` per `WaitingLine` case. `$factory` is called once per
/// test, as `($factory)().await`, and must give `(Arc<dyn WaitingLine>, guard)`.
#[macro_export]
macro_rules! waiting_line_conformance {
    ($factory:expr) => {
        $crate::__conformance_cases!(
            line,
            $factory,
            [
                line_joins_only_while_open,
                line_draw_is_the_seeded_order,
                line_admission_follows_rate_and_stock,
                line_unused_admission_passes,
                line_backfills_and_pauses,
                line_set_up_is_idempotent,
                line_concurrent_joins_are_gap_free,
                line_a_challenge_buys_one_place_once,
                line_chains_follow_the_reference,
            ]
        );
    };
}
