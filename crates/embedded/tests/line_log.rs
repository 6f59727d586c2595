//! The durable waiting line (`InProcessLine::open`): a restart keeps every place, admission,
//! buy and control; a torn tail is cut; damage in the middle refuses to open.

use flashsale_core::line::{
    AdmitInputs, AdmitRate, JoinRecord, LineControl, LineEvent, LineId, LineSummary, LineTimes,
    Place, Seed, Standing,
};
use flashsale_core::{BuyerId, SaleId, Timestamp};
use flashsale_embedded::InProcessLine;
use flashsale_service::WaitingLine;
use std::path::Path;
use std::sync::Arc;
use time::Duration;
use time::macros::datetime;

const T0: Timestamp = datetime!(2026-12-03 12:00 UTC);
const SEED: Seed = Seed([5; 32]);
/// The file's header, and a set-up record framed (8 + 57 bytes), and a join framed.
const HEADER_BYTES: u64 = 8;
const SET_UP_FRAME_BYTES: u64 = 65;
const JOIN_FRAME_BYTES: u64 = 101;

fn times() -> LineTimes {
    LineTimes {
        opens_at: T0 - Duration::minutes(10),
        starts_at: T0,
        ends_at: T0 + Duration::hours(1),
        admission_secs: 60,
    }
}

fn at(ms: i64) -> Timestamp {
    T0 + Duration::milliseconds(ms)
}

fn member(sale: SaleId, n: usize) -> LineId {
    LineId::of(
        sale,
        &BuyerId::parse(&format!("log-buyer-{n}")).expect("buyer id"),
    )
}

fn inputs(rate: u32, units_left: u64) -> AdmitInputs {
    AdmitInputs {
        rate_per_sec: rate,
        units_left,
        units_returnable: 0,
    }
}

fn open(path: &Path) -> Arc<InProcessLine> {
    Arc::new(InProcessLine::open(path).expect("open the line log"))
}

async fn set_up(line: &InProcessLine, sale: SaleId) {
    line.set_up(sale, times()).await.expect("set up");
}

async fn join(line: &InProcessLine, sale: SaleId, who: LineId, now: Timestamp) -> Place {
    line.join(sale, who, SEED.draw_key(&who), now)
        .await
        .expect("join")
        .expect("joined")
}

async fn advance(
    line: &InProcessLine,
    sale: SaleId,
    now: Timestamp,
    step: AdmitInputs,
) -> LineSummary {
    line.advance(sale, now, step)
        .await
        .expect("advance")
        .expect("set up")
}

/// Everything a caller can see of a line at `now`: each candidate's place and standing, the
/// members in order, and the summary (taken by an advance that cannot admit: the line is
/// paused, or not drawn).
#[derive(Debug, PartialEq)]
struct Seen {
    places: Vec<Option<Place>>,
    standings: Vec<Option<Standing>>,
    members: Vec<LineId>,
    summary: LineSummary,
    /// The chains.
    joins: Vec<JoinRecord>,
    events: Vec<LineEvent>,
}

async fn seen(line: &InProcessLine, sale: SaleId, candidates: &[LineId], now: Timestamp) -> Seen {
    let step = inputs(10, 25);
    let mut places = Vec::new();
    let mut standings = Vec::new();
    for who in candidates {
        places.push(
            line.place(sale, *who, now)
                .await
                .expect("place")
                .expect("set up"),
        );
        standings.push(
            line.standing(sale, *who, now, step)
                .await
                .expect("standing")
                .expect("set up"),
        );
    }
    let members = line
        .members(sale, 1, 10_000)
        .await
        .expect("members")
        .expect("set up");
    let summary = advance(line, sale, now, step).await;
    let joins = line
        .join_records(sale, 1, 10_000)
        .await
        .expect("joins")
        .expect("set up");
    let events = line
        .events(sale, 1, 10_000)
        .await
        .expect("events")
        .expect("set up");
    Seen {
        places,
        standings,
        members,
        summary,
        joins,
        events,
    }
}

#[tokio::test]
async fn a_restart_keeps_every_place_admission_buy_and_control() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("line.log");
    let sale = SaleId(uuid::Uuid::from_u128(1));
    let quiet = SaleId(uuid::Uuid::from_u128(2));
    let candidates: Vec<LineId> = (0..60).map(|n| member(sale, n)).collect();
    let early: Vec<LineId> = (0..5).map(|n| member(quiet, n)).collect();

    let line = open(&path);
    set_up(&line, sale).await;
    set_up(&line, quiet).await;
    for (n, who) in candidates[..30].iter().enumerate() {
        assert_eq!(
            join(&line, sale, *who, at(-60_000 + n as i64)).await,
            Place::PreQueue
        );
    }
    // A repeated join changes nothing.
    assert_eq!(
        join(&line, sale, candidates[0], at(-1_000)).await,
        Place::PreQueue
    );
    for who in &early {
        join(&line, quiet, *who, at(-1_000)).await;
    }
    // The first join after the start draws; the rest follow in arrival order.
    for (n, who) in candidates[30..50].iter().enumerate() {
        assert_eq!(
            join(&line, sale, *who, at(n as i64)).await,
            Place::Position(31 + n as u64)
        );
    }
    // A caller whose clock lags joins "before the start" after the draw: it still comes after
    // the drawn pre-queue, in arrival order, and stays there after a restart.
    assert_eq!(
        join(&line, sale, candidates[55], at(-5_000)).await,
        Place::Position(51)
    );
    assert_eq!(
        advance(&line, sale, at(100), inputs(10, 25))
            .await
            .admitted_up_to,
        10
    );
    assert_eq!(
        advance(&line, sale, at(600), inputs(10, 25))
            .await
            .admitted_up_to,
        15
    );
    line.record_bought(sale, 1)
        .await
        .expect("bought")
        .expect("set up");
    line.record_bought(sale, 3)
        .await
        .expect("bought")
        .expect("set up");
    let paused = LineControl {
        paused: true,
        rate: Some(AdmitRate::Fixed(7)),
    };
    line.set_control(sale, paused)
        .await
        .expect("control")
        .expect("set up");
    let now = at(2_000);
    let before = seen(&line, sale, &candidates, now).await;
    let quiet_before = seen(&line, quiet, &early, at(-500)).await;
    assert_eq!(before.summary.admitted_up_to, 15);
    assert_eq!(before.summary.bought, 2);
    assert_eq!(before.summary.control, paused);
    assert_eq!(before.members.len(), 51);
    assert!(!quiet_before.summary.drawn);
    drop(line);

    let line = open(&path);
    assert_eq!(seen(&line, sale, &candidates, now).await, before);
    assert_eq!(seen(&line, quiet, &early, at(-500)).await, quiet_before);

    // The reopened log takes new records after the old ones: resume, admit, join, reopen.
    line.set_control(sale, LineControl::default())
        .await
        .expect("control")
        .expect("set up");
    let later = at(30_000);
    assert_eq!(
        advance(&line, sale, later, inputs(10, 25))
            .await
            .admitted_up_to,
        25
    );
    assert_eq!(
        join(&line, sale, candidates[50], later).await,
        Place::Position(52)
    );
    let paused_again = LineControl {
        paused: true,
        rate: None,
    };
    line.set_control(sale, paused_again)
        .await
        .expect("control")
        .expect("set up");
    let after_resume = seen(&line, sale, &candidates, later).await;
    drop(line);
    let line = open(&path);
    assert_eq!(seen(&line, sale, &candidates, later).await, after_resume);

    // The admissions end and the units run out: both are chained, and kept.
    line.set_control(sale, LineControl::default())
        .await
        .expect("control")
        .expect("set up");
    let out = at(200_000);
    advance(&line, sale, out, inputs(10, 0)).await;
    let events = line
        .events(sale, 1, 10_000)
        .await
        .expect("events")
        .expect("set up");
    assert_eq!(
        events[events.len() - 2..],
        [
            LineEvent::Passed { up_to: 25 },
            LineEvent::SoldOut { after: 25 }
        ],
        "{events:?}"
    );
    // Paused again, so that `seen` cannot admit.
    line.set_control(sale, paused_again)
        .await
        .expect("control")
        .expect("set up");
    let ended = seen(&line, sale, &candidates, out).await;
    assert_eq!(ended.events, events, "asked again, nothing more is chained");
    drop(line);
    let line = open(&path);
    assert_eq!(seen(&line, sale, &candidates, out).await, ended);
}

/// Writes a log with a set-up and `joins` joins before the start; returns the sale.
async fn write_joins(path: &Path, joins: usize) -> SaleId {
    let sale = SaleId(uuid::Uuid::from_u128(3));
    let line = open(path);
    set_up(&line, sale).await;
    for n in 0..joins {
        join(&line, sale, member(sale, n), at(-10_000)).await;
    }
    sale
}

fn file_length(path: &Path) -> u64 {
    std::fs::metadata(path).expect("log metadata").len()
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_the_log_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("line.log");
    let sale = write_joins(&path, 10).await;
    let whole = file_length(&path);
    assert_eq!(
        whole,
        HEADER_BYTES + SET_UP_FRAME_BYTES + 10 * JOIN_FRAME_BYTES
    );
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    file.set_len(whole - 3).expect("tear the tail");
    drop(file);

    let line = open(&path);
    assert_eq!(
        file_length(&path),
        whole - JOIN_FRAME_BYTES,
        "the torn record is cut"
    );
    let summary = advance(&line, sale, at(-1_000), inputs(10, 10)).await;
    assert_eq!(summary.length, 9);
    let place = |n| {
        let line = line.clone();
        async move {
            line.place(sale, member(sale, n), at(-1_000))
                .await
                .expect("place")
                .expect("set up")
        }
    };
    assert_eq!(place(8).await, Some(Place::PreQueue));
    assert_eq!(place(9).await, None, "the torn join is gone");
    // The last joiner joins again; the log stays whole.
    join(&line, sale, member(sale, 9), at(-900)).await;
    drop(line);
    let line = open(&path);
    assert_eq!(
        advance(&line, sale, at(-800), inputs(10, 10)).await.length,
        10
    );
}

#[tokio::test]
async fn a_header_cut_short_is_a_new_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("line.log");
    std::fs::write(&path, b"FSLI").expect("write");
    let line = open(&path);
    let sale = SaleId(uuid::Uuid::from_u128(4));
    set_up(&line, sale).await;
    drop(line);
    assert_eq!(file_length(&path), HEADER_BYTES + SET_UP_FRAME_BYTES);
    drop(open(&path));
}

#[tokio::test]
async fn damage_in_the_middle_refuses_to_open_naming_file_and_offset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("line.log");
    write_joins(&path, 10).await;
    let mut bytes = std::fs::read(&path).expect("read");
    let third_join = HEADER_BYTES + SET_UP_FRAME_BYTES + 2 * JOIN_FRAME_BYTES;
    bytes[third_join as usize + 50] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");

    let error = InProcessLine::open(&path)
        .err()
        .expect("a damaged log is refused");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains(&format!("byte offset {third_join}")),
        "{message}"
    );
    assert_eq!(std::fs::read(&path).expect("read"), bytes, "nothing is cut");

    // A damaged length field is damage too, not a tail.
    bytes[third_join as usize + 50] ^= 0x01;
    bytes[third_join as usize] ^= 0x40;
    std::fs::write(&path, &bytes).expect("write");
    let message = InProcessLine::open(&path)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        message.contains(&format!("byte offset {third_join}")),
        "{message}"
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_line_log_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("line.log");
    std::fs::write(&path, b"this is not a line log at all").expect("write");
    let message = InProcessLine::open(&path)
        .err()
        .expect("refused")
        .to_string();
    assert!(message.contains("not a line log"), "{message}");
    std::fs::write(&path, b"nope").expect("write");
    assert!(InProcessLine::open(&path).is_err());
}

#[tokio::test]
async fn a_log_opens_once_at_a_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("line.log");
    let line = open(&path);
    let message = InProcessLine::open(&path)
        .err()
        .expect("refused while open")
        .to_string();
    assert!(message.contains("lock"), "{message}");
    drop(line);
    drop(open(&path));
}

#[tokio::test]
async fn a_record_that_does_not_fit_refuses_to_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("line.log");
    write_joins(&path, 2).await;
    // The same join twice: both frames valid, the second impossible.
    let mut bytes = std::fs::read(&path).expect("read");
    let first_join = (HEADER_BYTES + SET_UP_FRAME_BYTES) as usize;
    let join = bytes[first_join..first_join + JOIN_FRAME_BYTES as usize].to_vec();
    bytes.extend_from_slice(&join);
    std::fs::write(&path, &bytes).expect("write");
    let message = InProcessLine::open(&path)
        .err()
        .expect("refused")
        .to_string();
    let offset = HEADER_BYTES + SET_UP_FRAME_BYTES + 2 * JOIN_FRAME_BYTES;
    assert!(
        message.contains(&format!("byte offset {offset}")),
        "{message}"
    );
    assert!(message.contains("joins a second time"), "{message}");
}

#[tokio::test]
async fn concurrent_joins_share_syncs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("line.log");
    let line = open(&path);
    let sale = SaleId(uuid::Uuid::from_u128(5));
    set_up(&line, sale).await;
    let joins: Vec<_> = (0..256)
        .map(|n| {
            let line = line.clone();
            tokio::spawn(async move { join(&line, sale, member(sale, n), at(n as i64)).await })
        })
        .collect();
    let mut positions = Vec::new();
    for join in joins {
        match join.await.expect("task") {
            Place::Position(p) => positions.push(p),
            Place::PreQueue => panic!("a join after the start is not in the pre-queue"),
        }
    }
    positions.sort_unstable();
    assert_eq!(positions, (1..=256).collect::<Vec<u64>>());
    let commits = line.log_commits().expect("a durable line");
    assert!(commits >= 1);
    drop(line);
    let line = open(&path);
    let summary = advance(&line, sale, at(1_000), inputs(0, 0)).await;
    assert_eq!(summary.length, 256);
    eprintln!("256 concurrent joins took {commits} syncs");
}

/// A challenge that bought a place stays used after a restart: the log keeps it with the join.
#[tokio::test]
async fn a_restart_keeps_the_challenges_that_bought_places() {
    use flashsale_core::line::JoinProof;
    use flashsale_service::LineRefused;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("line.log");
    let sale = SaleId(uuid::Uuid::from_u128(3));
    let (alice, bob) = (member(sale, 1), member(sale, 2));
    let line = open(&path);
    set_up(&line, sale).await;
    let paid = JoinProof::Solved([7; 16]);
    assert_eq!(
        line.join_with(sale, alice, SEED.draw_key(&alice), at(-2_000), paid)
            .await
            .expect("join"),
        Ok(Place::PreQueue)
    );
    assert_eq!(
        line.join_with(
            sale,
            bob,
            SEED.draw_key(&bob),
            at(-1_000),
            JoinProof::Missing
        )
        .await
        .expect("join"),
        Err(LineRefused::ProofMissing)
    );
    drop(line);

    let line = open(&path);
    for who in [alice, bob] {
        assert_eq!(
            line.join_with(sale, who, SEED.draw_key(&who), at(-500), paid)
                .await
                .expect("join"),
            Err(LineRefused::ChallengeUsed),
            "used before the restart, used after it"
        );
    }
    assert_eq!(
        line.place(sale, alice, at(-500)).await.expect("place"),
        Ok(Some(Place::PreQueue))
    );
    assert_eq!(
        line.place(sale, bob, at(-500)).await.expect("place"),
        Ok(None),
        "the refused join left nothing to replay"
    );
}
