//! Writers give way to a hot buy path (issue 16), on the real queue and order store: they hold
//! back while buys are being made durable, for at most `give_way_ms` at a time, then drain;
//! never while the queue is past the give-way fill; and at once when the buy path is cold.

use flashsale_core::{BatchId, BuyerId, OrderId, Reservation, SaleId};
use flashsale_embedded::{LogQueue, QueueConfig, SqliteStore};
use flashsale_service::writers::{BuyHeat, GiveWay, WriterConfig, WriterPool};
use flashsale_service::{ReservationQueue, SystemClock};
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use uuid::Uuid;

const GIVE_WAY_MS: u64 = 2_000;

struct Setup {
    queue: Arc<LogQueue>,
    pool: WriterPool,
    heat: Arc<BuyHeat>,
    _dir: tempfile::TempDir,
}

async fn setup(capacity_reservations: usize) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = Arc::new(
        LogQueue::open(
            dir.path().join("queue"),
            QueueConfig {
                capacity_reservations,
                ..QueueConfig::default()
            },
        )
        .expect("queue"),
    );
    let store = SqliteStore::open(dir.path().join("orders.sqlite").to_str().expect("utf-8"))
        .await
        .expect("store");
    let heat = Arc::new(BuyHeat::default());
    let pool = WriterPool::new(
        queue.clone(),
        Arc::new(store),
        Arc::new(SystemClock),
        WriterConfig {
            count: 1,
            give_way_ms: GIVE_WAY_MS,
            ..WriterConfig::default()
        },
        GiveWay {
            heat: heat.clone(),
            queue_fill_percent_max: 25,
        },
    );
    Setup {
        queue,
        pool,
        heat,
        _dir: dir,
    }
}

async fn enqueue(queue: &LogQueue, count: usize) {
    let reservations: Vec<Reservation> = (0..count)
        .map(|n| {
            Reservation::new(
                OrderId(Uuid::now_v7()),
                SaleId(Uuid::from_u128(3)),
                BuyerId::parse(&format!("buyer-{n}")).expect("buyer"),
                OffsetDateTime::now_utc(),
                600,
            )
        })
        .collect();
    queue
        .enqueue(BatchId(Uuid::now_v7()), reservations)
        .await
        .expect("enqueue");
}

/// Keeps the buy path hot (a durable buy every 10 ms) until the returned guard drops.
fn keep_hot(heat: Arc<BuyHeat>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            heat.note();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

async fn drained_within(queue: &LogQueue, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if queue.depth() == 0 {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_hold_back_while_buys_are_hot_then_drain_within_the_bound() {
    let setup = setup(1_000).await;
    let heating = keep_hot(setup.heat.clone());
    enqueue(&setup.queue, 100).await;
    let started = Instant::now();
    setup.pool.set_count(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        setup.queue.depth(),
        100,
        "the writer took from the queue while the buy path was hot, within its pause"
    );
    // Still hot: the pause runs out and the writer drains anyway.
    let drained = drained_within(&setup.queue, Duration::from_millis(GIVE_WAY_MS * 3)).await;
    assert!(drained.is_some(), "the writer never drained a hot queue");
    assert!(
        started.elapsed() >= Duration::from_millis(GIVE_WAY_MS / 2),
        "drained after {:?}, before any pause",
        started.elapsed()
    );
    heating.abort();
    setup.pool.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_do_not_hold_back_a_queue_past_the_give_way_fill() {
    // 300 of 1,000 is 30 %, past the 25 % the writers give way under.
    let setup = setup(1_000).await;
    let heating = keep_hot(setup.heat.clone());
    enqueue(&setup.queue, 300).await;
    setup.pool.set_count(1).await;
    let drained = drained_within(&setup.queue, Duration::from_millis(GIVE_WAY_MS * 3)).await;
    assert!(
        drained.is_some_and(|took| took < Duration::from_millis(GIVE_WAY_MS)),
        "a queue past the give-way fill waited for a pause: {drained:?}"
    );
    heating.abort();
    setup.pool.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_write_at_once_when_the_buy_path_is_cold() {
    let setup = setup(1_000).await;
    setup.heat.note();
    // Cold again after BUY_PATH_HOT_MS.
    tokio::time::sleep(Duration::from_millis(300)).await;
    enqueue(&setup.queue, 100).await;
    setup.pool.set_count(1).await;
    let drained = drained_within(&setup.queue, Duration::from_millis(GIVE_WAY_MS * 3)).await;
    assert!(
        drained.is_some_and(|took| took < Duration::from_millis(GIVE_WAY_MS)),
        "a cold buy path still held the writer back: {drained:?}"
    );
    setup.pool.stop_all().await;
}
