//! What the reservation log (`LogQueue`'s storage) promises beyond the queue's conformance
//! suite: consumed segments are dropped whole and a held reservation keeps its own; a torn tail
//! is cut and everything before it kept; damage anywhere else refuses to open, naming the
//! segment; one process at a time.

use flashsale_core::{BatchId, BuyerId, OrderId, Reservation, SaleId};
use flashsale_embedded::queue::SEGMENT_BYTES_MAX;
use flashsale_embedded::{LogQueue, QueueConfig};
use flashsale_service::{Enqueued, ReservationQueue};
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::macros::datetime;
use uuid::Uuid;

fn reservation(n: u64) -> Reservation {
    Reservation::new(
        OrderId(Uuid::from_u128(u128::from(n) + 1)),
        SaleId(Uuid::from_u128(7)),
        BuyerId::parse(&format!("buyer-{n:06}")).expect("buyer"),
        datetime!(2030-01-01 12:00 UTC),
        600,
    )
}

fn config(capacity_reservations: usize) -> QueueConfig {
    QueueConfig {
        capacity_reservations,
        ..QueueConfig::default()
    }
}

/// The segment files in `dir`, oldest first.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

async fn enqueue_range(queue: &LogQueue, from: u64, to: u64) {
    let batch_size = 1_000;
    let mut n = from;
    while n < to {
        let end = (n + batch_size).min(to);
        let batch: Vec<Reservation> = (n..end).map(reservation).collect();
        assert_eq!(
            queue
                .enqueue(BatchId(Uuid::now_v7()), batch)
                .await
                .expect("enqueue"),
            Enqueued::Durable
        );
        n = end;
    }
}

/// Takes and acks every reservation except those `keep` says to hold (they stay delivered
/// and unacked).
async fn ack_all_but(queue: &LogQueue, keep: impl Fn(&Reservation) -> bool) {
    loop {
        let taken = queue
            .take_batch(5_000, Duration::from_millis(10))
            .await
            .expect("take");
        if taken.is_empty() {
            return;
        }
        let acked: Vec<OrderId> = taken
            .iter()
            .filter(|r| !keep(r))
            .map(|r| r.order_id)
            .collect();
        queue.ack(&acked).await.expect("ack");
    }
}

/// Segments are dropped by the committer after it answered the commit that consumed them:
/// waits (bounded) until the queue has `want` segments, and says how many it has.
async fn segments_settle_at(queue: &LogQueue, want: usize) -> usize {
    for _ in 0..200 {
        if queue.segments() == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    queue.segments()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumed_segments_are_dropped_and_a_held_reservation_keeps_its_own() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log_dir = dir.path().join("queue");
    // Enough reservations (about 94 bytes each) to fill more than one segment.
    let total = SEGMENT_BYTES_MAX / 90 + 5_000;
    let queue = LogQueue::open(&log_dir, config(total as usize + 10)).expect("open");
    let first = reservation(0);
    enqueue_range(&queue, 0, total).await;
    // The rotation happens in the tidy after the commit that passed the size.
    enqueue_range(&queue, total, total + 1).await;
    assert_eq!(segments_settle_at(&queue, 2).await, 2, "one rotation");
    assert_eq!(segment_files(&log_dir).len(), queue.segments());

    // Everything acked except the first reservation: its segment stays, every other segment
    // but the active one goes.
    ack_all_but(&queue, |r| r.order_id == first.order_id).await;
    assert_eq!(queue.depth(), 1);
    assert_eq!(
        segments_settle_at(&queue, 2).await,
        2,
        "the first segment (held) and the active one"
    );
    let files = segment_files(&log_dir);
    assert_eq!(files.len(), 2);
    assert!(files[0].ends_with("00000000000000000001.seg"), "{files:?}");

    // Its ack frees the first segment too.
    queue.ack(&[first.order_id]).await.expect("ack");
    assert_eq!(queue.depth(), 0);
    assert_eq!(segments_settle_at(&queue, 1).await, 1);
    assert_eq!(segment_files(&log_dir).len(), 1);

    drop(queue);
    let reopened = LogQueue::open(&log_dir, config(10)).expect("reopen");
    assert_eq!(reopened.depth(), 0, "every ack survived the reopen");
}

/// A crash in the middle of a write leaves part of a record at the end of the last segment:
/// it was never acknowledged, so it is cut and everything before it is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_and_everything_before_it_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log_dir = dir.path().join("queue");
    {
        let queue = LogQueue::open(&log_dir, config(100)).expect("open");
        enqueue_range(&queue, 0, 5).await;
    }
    let segment = segment_files(&log_dir).pop().expect("a segment");
    let synced = std::fs::metadata(&segment).expect("size").len();
    // Every cut of a whole further record, and garbage after it.
    let extra =
        flashsale_embedded::queue::encode_log_record(BatchId(Uuid::now_v7()), &reservation(9));
    for keep in [1, extra.len() / 2, extra.len() - 1] {
        let mut bytes = std::fs::read(&segment).expect("read");
        bytes.truncate(synced as usize);
        bytes.extend_from_slice(&extra[..keep]);
        std::fs::write(&segment, &bytes).expect("write");
        let queue = LogQueue::open(&log_dir, config(100)).expect("a torn tail opens");
        assert_eq!(queue.depth(), 5);
        drop(queue);
        assert_eq!(std::fs::metadata(&segment).expect("size").len(), synced);
    }
    // The log goes on after the cut.
    let queue = LogQueue::open(&log_dir, config(100)).expect("open");
    enqueue_range(&queue, 5, 6).await;
    drop(queue);
    assert_eq!(
        LogQueue::open(&log_dir, config(100)).expect("open").depth(),
        6
    );
}

/// A flipped byte followed by valid records is damage in what was acknowledged: refused,
/// naming the segment and the offset, and nothing is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_before_valid_records_refuses_to_open_naming_the_segment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log_dir = dir.path().join("queue");
    {
        let queue = LogQueue::open(&log_dir, config(100)).expect("open");
        for n in 0..5 {
            enqueue_range(&queue, n, n + 1).await;
        }
    }
    let segment = segment_files(&log_dir).pop().expect("a segment");
    let mut bytes = std::fs::read(&segment).expect("read");
    let length = bytes.len();
    bytes[8 + 20] ^= 0x40;
    std::fs::write(&segment, &bytes).expect("write");
    let error = LogQueue::open(&log_dir, config(100)).expect_err("damage in the middle");
    let message = error.to_string();
    assert!(
        message.contains(&segment.display().to_string()),
        "{message}"
    );
    assert!(message.contains("byte offset 8"), "{message}");
    assert_eq!(
        std::fs::metadata(&segment).expect("size").len(),
        length as u64,
        "nothing cut"
    );
}

/// Only the last segment can have been written when a crash came: a segment before it that
/// ends damaged is refused, however the damage looks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_segment_that_is_not_the_last_refuses_to_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log_dir = dir.path().join("queue");
    {
        let queue = LogQueue::open(&log_dir, config(100)).expect("open");
        enqueue_range(&queue, 0, 3).await;
    }
    let first = segment_files(&log_dir).pop().expect("a segment");
    // A second segment after it (a copy: what it holds does not matter here).
    std::fs::copy(&first, log_dir.join("00000000000000000002.seg")).expect("copy");
    let mut bytes = std::fs::read(&first).expect("read");
    bytes.truncate(bytes.len() - 1);
    std::fs::write(&first, &bytes).expect("write");
    let error = LogQueue::open(&log_dir, config(100)).expect_err("a damaged older segment");
    let message = error.to_string();
    assert!(message.contains("00000000000000000001.seg"), "{message}");
    assert!(message.contains("not the last"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_that_is_not_one_refuses_to_open_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log_dir = dir.path().join("queue");
    std::fs::create_dir_all(&log_dir).expect("dir");
    let path = log_dir.join("00000000000000000001.seg");
    std::fs::write(&path, vec![0xAB; 4096]).expect("garbage");
    let error = LogQueue::open(&log_dir, config(100)).expect_err("garbage");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
    assert!(
        error.to_string().contains("not a reservation log"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_cannot_append_to_the_same_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log_dir = dir.path().join("queue");
    let _first = LogQueue::open(&log_dir, config(100)).expect("open");
    let error = LogQueue::open(&log_dir, config(100)).expect_err("locked");
    assert!(error.to_string().contains("lock"), "{error}");
}
