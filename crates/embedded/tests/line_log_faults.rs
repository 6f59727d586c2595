//! The line log's fault point (`line_log.commit.before_sync`, between the write and the sync):
//! no answer comes before the sync, concurrent callers share one, and a failed sync fails the
//! log. Each test holds `fail::FailScenario` (a global lock), and nothing else in this file
//! runs a line log, so a configured point only touches the test that configured it.

use flashsale_core::line::{LineId, LineTimes, Place, Seed};
use flashsale_core::{BuyerId, SaleId, Timestamp};
use flashsale_embedded::InProcessLine;
use flashsale_service::WaitingLine;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::macros::datetime;

const POINT: &str = "line_log.commit.before_sync";
const T0: Timestamp = datetime!(2026-12-03 12:00 UTC);
const SEED: Seed = Seed([5; 32]);
const PAUSE: Duration = Duration::from_millis(300);

fn times() -> LineTimes {
    LineTimes {
        opens_at: T0 - time::Duration::minutes(10),
        starts_at: T0,
        ends_at: T0 + time::Duration::hours(1),
        admission_secs: 60,
    }
}

fn member(n: usize) -> LineId {
    LineId::of(
        sale(),
        &BuyerId::parse(&format!("fault-buyer-{n}")).expect("buyer id"),
    )
}

fn sale() -> SaleId {
    SaleId(uuid::Uuid::from_u128(9))
}

async fn join(line: &InProcessLine, n: usize) -> Result<Place, flashsale_service::BackendError> {
    let who = member(n);
    line.join(sale(), who, SEED.draw_key(&who), T0)
        .await
        .map(|answer| answer.expect("open"))
}

#[tokio::test]
async fn answers_wait_for_the_sync_and_share_it() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("temp dir");
    let line = Arc::new(InProcessLine::open(dir.path().join("line.log")).expect("open"));
    line.set_up(sale(), times()).await.expect("set up");
    let commits_before = line.log_commits().expect("durable");

    fail::cfg(POINT, &format!("return({})", PAUSE.as_millis())).expect("configure");
    let started = Instant::now();
    let joins: Vec<_> = (0..64)
        .map(|n| {
            let line = line.clone();
            tokio::spawn(async move { join(&line, n).await })
        })
        .collect();
    for join in joins {
        join.await.expect("task").expect("joined");
    }
    let waited = started.elapsed();
    fail::remove(POINT);
    assert!(
        waited >= PAUSE,
        "answered after {waited:?}, before the sync"
    );
    let commits = line.log_commits().expect("durable") - commits_before;
    // The first join's commit pauses; the others gather behind it into one or two more.
    assert!(commits <= 3, "64 joins took {commits} syncs");
    scenario.teardown();
}

#[tokio::test]
async fn a_failed_sync_fails_the_log_until_a_restart() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("line.log");
    let line = InProcessLine::open(&path).expect("open");
    line.set_up(sale(), times()).await.expect("set up");
    join(&line, 0).await.expect("joined");

    fail::cfg(POINT, "return").expect("configure");
    let unknown = join(&line, 1).await.expect_err("the sync failed");
    assert!(
        !unknown.outcome_known,
        "written but not synced: {unknown:?}"
    );
    fail::remove(POINT);
    let refused = join(&line, 2).await.expect_err("the log has failed");
    assert!(
        refused.outcome_known,
        "refused before any change: {refused:?}"
    );
    let refused = line
        .place(sale(), member(0), T0)
        .await
        .expect_err("refused");
    assert!(refused.outcome_known);
    drop(line);

    // The restart replays what reached the file: the first join surely, the second maybe
    // (it was written, the sync failed), the third never.
    let line = InProcessLine::open(&path).expect("reopen");
    let place = |n| line.place(sale(), member(n), T0);
    assert_eq!(place(0).await.expect("place"), Ok(Some(Place::Position(1))));
    assert_eq!(place(2).await.expect("place"), Ok(None));
    scenario.teardown();
}
