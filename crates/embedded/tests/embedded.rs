//! Tests of what only the embedded backends promise: the queue survives a reopen, group
//! commit batches many enqueues into few syncs, damaged files fail with a clear error, and
//! the SQLite store keeps its data across a reopen. The queue's tests run on both of its
//! storages (the reservation log and redb), each in a module of that name.

use flashsale_core::{BatchId, BuyerId, OrderId, OrderStatus, Reservation, SaleId};
use flashsale_embedded::{LogQueue, QueueConfig, QueueOpenError, RedbQueue, SqliteStore};
use flashsale_service::{BackendResult, Enqueued, OrderStore, PayOutcome, ReservationQueue};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use time::macros::datetime;
use uuid::Uuid;

/// One storage of the embedded queue, opened in a test's directory.
trait Engine: ReservationQueue + Sized + 'static {
    fn open_in(dir: &Path, config: QueueConfig) -> Result<Self, QueueOpenError>;
    fn commits(&self) -> u64;
}

impl Engine for RedbQueue {
    fn open_in(dir: &Path, config: QueueConfig) -> Result<Self, QueueOpenError> {
        RedbQueue::open(dir.join("queue.redb"), config)
    }
    fn commits(&self) -> u64 {
        RedbQueue::commits(self)
    }
}

impl Engine for LogQueue {
    fn open_in(dir: &Path, config: QueueConfig) -> Result<Self, QueueOpenError> {
        LogQueue::open(dir.join("queue"), config)
    }
    fn commits(&self) -> u64 {
        LogQueue::commits(self)
    }
}

/// Runs each generic queue test on both storages.
macro_rules! on_both_engines {
    ($($test:ident),* $(,)?) => {
        mod log {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test::<flashsale_embedded::LogQueue>().await
                }
            )*
        }
        mod redb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test::<flashsale_embedded::RedbQueue>().await
                }
            )*
        }
    };
}

on_both_engines!(
    queue_survives_reopen_and_forgets_acked,
    group_commit_batches_concurrent_enqueues,
    queue_commit_batches_respect_the_batch_max,
    queue_refuses_zero_limits,
    cancelled_enqueues_do_not_leak_capacity,
    a_batch_that_does_not_fit_is_refused_whole,
);

fn reservation(n: usize) -> Reservation {
    Reservation::new(
        OrderId(Uuid::now_v7()),
        SaleId(Uuid::from_u128(7)),
        BuyerId::parse(&format!("buyer-{n}")).expect("buyer"),
        datetime!(2030-01-01 12:00 UTC),
        600,
    )
}

/// Enqueues a reservation as a batch of its own, as the classic design does.
trait EnqueueAlone {
    fn enqueue_alone(
        &self,
        reservation: Reservation,
    ) -> impl Future<Output = BackendResult<Enqueued>> + Send + '_;
}

impl<Q: ReservationQueue> EnqueueAlone for Q {
    fn enqueue_alone(
        &self,
        reservation: Reservation,
    ) -> impl Future<Output = BackendResult<Enqueued>> + Send + '_ {
        self.enqueue(BatchId::of_order(reservation.order_id), vec![reservation])
    }
}

fn sorted(mut reservations: Vec<Reservation>) -> Vec<Reservation> {
    reservations.sort_by_key(|r| r.order_id);
    reservations
}

async fn queue_survives_reopen_and_forgets_acked<Q: Engine>() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sent: Vec<Reservation> = (0..5).map(reservation).collect();
    {
        let queue = Q::open_in(dir.path(), QueueConfig::default()).expect("open");
        for r in &sent {
            assert_eq!(
                queue.enqueue_alone(r.clone()).await.expect("enqueue"),
                Enqueued::Durable
            );
        }
        // One delivered and acked (gone for good), one delivered and never acked (a consumer
        // that died with the process): it must come back.
        let taken = queue
            .take_batch(2, Duration::from_secs(1))
            .await
            .expect("take");
        assert_eq!(taken.len(), 2);
        queue.ack(&[taken[0].order_id]).await.expect("ack");
    }
    let queue = Q::open_in(dir.path(), QueueConfig::default()).expect("reopen");
    let expected: Vec<Reservation> = sent
        .iter()
        .filter(|r| r.order_id != sent[0].order_id)
        .cloned()
        .collect();
    assert_eq!(
        sorted(
            queue
                .all_queued()
                .await
                .expect("all")
                .into_iter()
                .map(|q| q.reservation)
                .collect()
        ),
        sorted(expected.clone())
    );
    assert_eq!(queue.depth(), 4);
    let redelivered = queue
        .take_batch(10, Duration::from_secs(1))
        .await
        .expect("take");
    assert_eq!(
        sorted(redelivered),
        sorted(expected),
        "all unacked reservations are deliverable again"
    );
}

async fn group_commit_batches_concurrent_enqueues<Q: Engine>() {
    const ENQUEUES: usize = 1_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = Arc::new(Q::open_in(dir.path(), QueueConfig::default()).expect("open"));
    let tasks: Vec<_> = (0..ENQUEUES)
        .map(|n| {
            let queue = queue.clone();
            tokio::spawn(async move { queue.enqueue_alone(reservation(n)).await.expect("enqueue") })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task"), Enqueued::Durable);
    }
    assert_eq!(queue.depth(), ENQUEUES);
    let commits = queue.commits();
    assert!(commits >= 1);
    assert!(
        commits <= (ENQUEUES / 10) as u64,
        "{ENQUEUES} enqueues took {commits} commits: group commit is not batching"
    );
}

async fn queue_commit_batches_respect_the_batch_max<Q: Engine>() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = QueueConfig {
        commit_batch_max: 8,
        ..QueueConfig::default()
    };
    let queue = Arc::new(Q::open_in(dir.path(), config).expect("open"));
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let queue = queue.clone();
            tokio::spawn(async move { queue.enqueue_alone(reservation(n)).await.expect("enqueue") })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    assert!(
        queue.commits() >= 200 / 8,
        "a commit held more than commit_batch_max requests: {}",
        queue.commits()
    );
}

#[tokio::test]
async fn redb_queue_refuses_a_garbage_file_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("queue.redb");
    std::fs::write(&path, vec![0xAB; 64 * 1024]).expect("write garbage");
    let error = RedbQueue::open(&path, QueueConfig::default()).expect_err("garbage must not open");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
}

#[tokio::test]
async fn redb_queue_refuses_a_truncated_file_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("queue.redb");
    {
        let queue = RedbQueue::open(&path, QueueConfig::default()).expect("open");
        for n in 0..200 {
            queue.enqueue_alone(reservation(n)).await.expect("enqueue");
        }
    }
    let full_len = std::fs::metadata(&path).expect("metadata").len();
    for len in [full_len / 2, full_len / 5, 100] {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open file");
        file.set_len(len).expect("truncate");
        drop(file);
        let error = RedbQueue::open(&path, QueueConfig::default())
            .expect_err("a truncated file must not open");
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
    }
}

async fn queue_refuses_zero_limits<Q: Engine>() {
    let dir = tempfile::tempdir().expect("temp dir");
    for config in [
        QueueConfig {
            capacity_reservations: 0,
            ..QueueConfig::default()
        },
        QueueConfig {
            commit_batch_max: 0,
            ..QueueConfig::default()
        },
        QueueConfig {
            ack_deadline_ms: 0,
            ..QueueConfig::default()
        },
    ] {
        assert!(Q::open_in(dir.path(), config).is_err());
    }
}

async fn cancelled_enqueues_do_not_leak_capacity<Q: Engine>() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = QueueConfig {
        capacity_reservations: 4,
        ..QueueConfig::default()
    };
    let queue = Arc::new(Q::open_in(dir.path(), config).expect("open"));
    // Callers that give up at once (a client hanging up): their futures are dropped mid-way.
    for n in 0..50 {
        let enqueue = queue.enqueue_alone(reservation(n));
        let _ = tokio::time::timeout(Duration::from_micros(1), enqueue).await;
    }
    // Whatever did become durable is indexed; drain it and the full capacity is usable again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let taken = queue
        .take_batch(100, Duration::from_millis(100))
        .await
        .expect("take");
    let ids: Vec<OrderId> = taken.iter().map(|r| r.order_id).collect();
    queue.ack(&ids).await.expect("ack");
    assert_eq!(queue.depth(), 0);
    for n in 100..104 {
        assert_eq!(
            queue.enqueue_alone(reservation(n)).await.expect("enqueue"),
            Enqueued::Durable
        );
    }
    assert_eq!(
        queue
            .enqueue_alone(reservation(200))
            .await
            .expect("enqueue"),
        Enqueued::Full
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_keeps_orders_across_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nested-is-fine.sqlite");
    let path = path.to_str().expect("utf-8 path").to_owned();
    let r = reservation(1);
    {
        let store = SqliteStore::open(&path).await.expect("open");
        assert_eq!(
            store
                .insert_orders(std::slice::from_ref(&r))
                .await
                .expect("insert"),
            1
        );
        let now = datetime!(2030-01-01 12:01 UTC);
        let payment = flashsale_core::PaymentId::parse("pay-1").expect("payment");
        assert!(matches!(
            store
                .pay(r.order_id, &r.buyer, &payment, now)
                .await
                .expect("pay"),
            PayOutcome::Paid(_)
        ));
        store.close().await;
    }
    // Reopening runs the migrations again: they must be a no-op on a migrated file.
    let store = SqliteStore::open(&format!("sqlite://{path}"))
        .await
        .expect("reopen by URL");
    let order = store
        .get_order(r.order_id)
        .await
        .expect("get")
        .expect("order kept");
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(store.insert_orders(&[r]).await.expect("insert"), 0);
}

#[tokio::test]
async fn sqlite_store_refuses_in_memory_databases() {
    let error = SqliteStore::open("sqlite::memory:")
        .await
        .expect_err("in-memory refused");
    assert!(error.to_string().contains("sqlite::memory:"), "{error}");
}

/// The embedded queue counts reservations exactly: a batch that does not fit in the room left
/// is refused whole, and one that fits is taken whole.
async fn a_batch_that_does_not_fit_is_refused_whole<Q: Engine>() {
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = Q::open_in(
        dir.path(),
        QueueConfig {
            capacity_reservations: 5,
            ..QueueConfig::default()
        },
    )
    .expect("open");
    let first: Vec<Reservation> = (0..3).map(reservation).collect();
    assert_eq!(
        queue
            .enqueue(BatchId(Uuid::now_v7()), first)
            .await
            .expect("enqueue"),
        Enqueued::Durable
    );
    let too_big = BatchId(Uuid::now_v7());
    let three: Vec<Reservation> = (3..6).map(reservation).collect();
    assert_eq!(
        queue
            .enqueue(too_big, three.clone())
            .await
            .expect("enqueue"),
        Enqueued::Full
    );
    for r in &three {
        assert_eq!(queue.find(too_big, r.order_id).await.expect("find"), None);
    }
    let two: Vec<Reservation> = three[..2].to_vec();
    assert_eq!(
        queue
            .enqueue(BatchId(Uuid::now_v7()), two)
            .await
            .expect("enqueue"),
        Enqueued::Durable
    );
    assert_eq!(queue.depth(), 5);
}
