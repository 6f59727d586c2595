//! Cases for `ReservationQueue`. Each case takes the factory, since cases need different
//! setups (a small capacity, a short ack deadline).

use super::*;
use std::future::Future;

/// Reservations enqueued alone (each its own batch), for the cases about queue rules that do
/// not depend on batching.
trait EnqueueOne {
    async fn enqueue_one(&self, reservation: Reservation) -> BackendResult<Enqueued>;
    async fn find_one(&self, order: OrderId) -> BackendResult<Option<Reservation>>;
    /// `all_queued`, without the batches.
    async fn queued(&self) -> BackendResult<Vec<Reservation>>;
}

impl EnqueueOne for dyn ReservationQueue {
    async fn enqueue_one(&self, reservation: Reservation) -> BackendResult<Enqueued> {
        self.enqueue(BatchId::of_order(reservation.order_id), vec![reservation])
            .await
    }

    async fn find_one(&self, order: OrderId) -> BackendResult<Option<Reservation>> {
        self.find(BatchId::of_order(order), order).await
    }

    async fn queued(&self) -> BackendResult<Vec<Reservation>> {
        Ok(self
            .all_queued()
            .await?
            .into_iter()
            .map(|q| q.reservation)
            .collect())
    }
}

fn sorted_ids(reservations: &[Reservation]) -> Vec<OrderId> {
    let mut ids: Vec<OrderId> = reservations.iter().map(|r| r.order_id).collect();
    ids.sort();
    ids
}

/// A fresh queue and its guard. Fields drop in order: the queue before whatever it lives
/// in (its temp dir).
struct Fresh<G> {
    queue: Arc<dyn ReservationQueue>,
    _guard: G,
}

async fn fresh<F, Fut, G>(make: &F, setup: QueueSetup) -> Fresh<G>
where
    F: Fn(QueueSetup) -> Fut,
    Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
{
    let (queue, _guard) = make(setup).await;
    Fresh { queue, _guard }
}

/// Enqueued reservations are durable, then handed out by `take_batch` and found by `find`.
pub async fn queue_enqueue_then_take_batch<F, Fut, G>(make: F)
where
    F: Fn(QueueSetup) -> Fut,
    Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
{
    let backend = fresh(&make, QueueSetup::default()).await;
    let queue = &backend.queue;
    let sale = new_sale_id();
    let sent: Vec<Reservation> = (0..3)
        .map(|n| reservation(sale, &format!("b{n}"), t0(), 600))
        .collect();
    for r in &sent {
        assert_eq!(
            queue.enqueue_one(r.clone()).await.expect("enqueue"),
            Enqueued::Durable
        );
    }
    assert_eq!(queue.depth(), 3);
    assert_eq!(
        queue.find_one(sent[1].order_id).await.expect("find"),
        Some(sent[1].clone())
    );
    let mut got = queue
        .take_batch(10, Duration::from_millis(500))
        .await
        .expect("take");
    got.sort_by_key(|r| r.order_id);
    let mut expected = sent.clone();
    expected.sort_by_key(|r| r.order_id);
    assert_eq!(got, expected, "delivered exactly as enqueued");
    assert!(
        queue
            .take_batch(10, Duration::from_millis(50))
            .await
            .expect("take")
            .is_empty(),
        "delivered reservations are not handed out again while held"
    );
    assert_eq!(queue.depth(), 3, "delivered but not acked still counts");
    assert_eq!(queue.find_one(new_order_id()).await.expect("find"), None);
}

/// `take_batch` gives at most `max`, waits up to `wait` on an empty queue, and wakes early
/// when something arrives.
pub async fn queue_take_batch_max_and_wait<F, Fut, G>(make: F)
where
    F: Fn(QueueSetup) -> Fut,
    Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
{
    let backend = fresh(&make, QueueSetup::default()).await;
    let queue = &backend.queue;
    let started = tokio::time::Instant::now();
    assert!(
        queue
            .take_batch(5, Duration::from_millis(200))
            .await
            .expect("take")
            .is_empty()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "returned before the wait was over"
    );

    let sale = new_sale_id();
    for n in 0..5 {
        queue
            .enqueue_one(reservation(sale, &format!("b{n}"), t0(), 600))
            .await
            .expect("enqueue");
    }
    assert_eq!(
        queue
            .take_batch(2, Duration::from_millis(100))
            .await
            .expect("take")
            .len(),
        2
    );
    assert_eq!(
        queue
            .take_batch(10, Duration::from_millis(100))
            .await
            .expect("take")
            .len(),
        3
    );

    let waiter = {
        let queue = queue.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let got = queue
                .take_batch(10, Duration::from_secs(20))
                .await
                .expect("take");
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let late = reservation(sale, "late", t0(), 600);
    queue.enqueue_one(late.clone()).await.expect("enqueue");
    let (got, waited) = waiter.await.expect("waiter");
    assert_eq!(got, vec![late]);
    assert!(
        waited < Duration::from_secs(10),
        "the waiter was not woken: {waited:?}"
    );
}

/// At capacity the queue answers `Full` and stores nothing; an ack makes room again.
pub async fn queue_full_at_capacity<F, Fut, G>(make: F)
where
    F: Fn(QueueSetup) -> Fut,
    Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
{
    let backend = fresh(
        &make,
        QueueSetup {
            capacity: 4,
            ..QueueSetup::default()
        },
    )
    .await;
    let queue = &backend.queue;
    assert_eq!(queue.capacity(), 4);
    let sale = new_sale_id();
    let kept: Vec<Reservation> = (0..4)
        .map(|n| reservation(sale, &format!("b{n}"), t0(), 600))
        .collect();
    for r in &kept {
        assert_eq!(
            queue.enqueue_one(r.clone()).await.expect("enqueue"),
            Enqueued::Durable
        );
    }
    let refused = reservation(sale, "late", t0(), 600);
    assert_eq!(
        queue.enqueue_one(refused.clone()).await.expect("enqueue"),
        Enqueued::Full
    );
    assert_eq!(
        queue.find_one(refused.order_id).await.expect("find"),
        None,
        "Full stores nothing"
    );
    assert_eq!(queue.depth(), 4);
    assert_eq!(
        sorted_ids(&queue.queued().await.expect("all")),
        sorted_ids(&kept)
    );
    // Re-enqueuing something already queued is never a new entry; at capacity either answer
    // (it is durable already, or the queue refuses to look) is within the contract.
    queue.enqueue_one(kept[0].clone()).await.expect("enqueue");
    assert_eq!(queue.depth(), 4);

    let taken = queue
        .take_batch(1, Duration::from_millis(500))
        .await
        .expect("take");
    queue.ack(&[taken[0].order_id]).await.expect("ack");
    assert_eq!(
        queue.enqueue_one(refused.clone()).await.expect("enqueue"),
        Enqueued::Durable
    );
    assert_eq!(queue.depth(), 4);
}

/// Enqueuing a batch already queued stores it once: sequential retries, concurrent retries,
/// and a retry while the first copy is out with a consumer.
pub async fn queue_same_batch_stored_once<F, Fut, G>(make: F)
where
    F: Fn(QueueSetup) -> Fut,
    Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
{
    let backend = fresh(&make, QueueSetup::default()).await;
    let queue = &backend.queue;
    let sale = new_sale_id();
    let r = reservation(sale, "a", t0(), 600);
    assert_eq!(
        queue.enqueue_one(r.clone()).await.expect("enqueue"),
        Enqueued::Durable
    );
    assert_eq!(
        queue.enqueue_one(r.clone()).await.expect("enqueue"),
        Enqueued::Durable
    );
    assert_eq!(queue.depth(), 1);

    let twin = reservation(sale, "b", t0(), 600);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (queue, twin) = (queue.clone(), twin.clone());
            tokio::spawn(async move { queue.enqueue_one(twin).await.expect("enqueue") })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task"), Enqueued::Durable);
    }
    assert_eq!(queue.depth(), 2);
    assert_eq!(queue.queued().await.expect("all").len(), 2);

    let delivered = queue
        .take_batch(10, Duration::from_millis(500))
        .await
        .expect("take");
    assert_eq!(delivered.len(), 2);
    assert_eq!(
        queue.enqueue_one(r.clone()).await.expect("enqueue"),
        Enqueued::Durable
    );
    assert!(
        queue
            .take_batch(10, Duration::from_millis(50))
            .await
            .expect("take")
            .is_empty(),
        "a retry must not hand out a second copy"
    );
    queue.ack(&[r.order_id, twin.order_id]).await.expect("ack");
    assert_eq!(queue.depth(), 0);
    assert!(queue.queued().await.expect("all").is_empty());
}

/// Concurrent consumers never hold the same reservation at once, and together they drain
/// everything.
pub async fn queue_exclusive_delivery_to_concurrent_consumers<F, Fut, G>(make: F)
where
    F: Fn(QueueSetup) -> Fut,
    Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
{
    const RESERVATIONS: usize = 400;
    const CONSUMERS: usize = 8;
    let backend = fresh(&make, QueueSetup::default()).await;
    let queue = &backend.queue;
    let sale = new_sale_id();
    let producer = {
        let queue = queue.clone();
        tokio::spawn(async move {
            for n in 0..RESERVATIONS {
                let r = reservation(sale, &format!("b{n}"), t0(), 600);
                assert_eq!(
                    queue.enqueue_one(r).await.expect("enqueue"),
                    Enqueued::Durable
                );
            }
        })
    };
    let seen: Arc<Mutex<HashMap<OrderId, usize>>> = Arc::default();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|consumer| {
            let (queue, seen) = (queue.clone(), seen.clone());
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                loop {
                    let done = seen.lock().expect("seen").len() >= RESERVATIONS;
                    if done || tokio::time::Instant::now() > deadline {
                        break;
                    }
                    let batch = queue
                        .take_batch(16, Duration::from_millis(100))
                        .await
                        .expect("take");
                    let ids: Vec<OrderId> = batch.iter().map(|r| r.order_id).collect();
                    {
                        let mut seen = seen.lock().expect("seen");
                        for id in &ids {
                            if let Some(other) = seen.insert(*id, consumer) {
                                panic!("{id} was delivered to consumers {other} and {consumer}");
                            }
                        }
                    }
                    // Hold the batch a moment, as a writer would, so overlaps could show.
                    tokio::task::yield_now().await;
                    queue.ack(&ids).await.expect("ack");
                }
            })
        })
        .collect();
    producer.await.expect("producer");
    for consumer in consumers {
        consumer.await.expect("consumer");
    }
    assert_eq!(
        seen.lock().expect("seen").len(),
        RESERVATIONS,
        "everything was delivered"
    );
    assert_eq!(queue.depth(), 0);
    assert!(queue.queued().await.expect("all").is_empty());
}

/// `ack` removes for good (unknown ids are a no-op); `nack` hands back for immediate
/// redelivery.
pub async fn queue_ack_removes_and_nack_redelivers<F, Fut, G>(make: F)
where
    F: Fn(QueueSetup) -> Fut,
    Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
{
    let backend = fresh(&make, QueueSetup::default()).await;
    let queue = &backend.queue;
    let sale = new_sale_id();
    let (done, retry) = (
        reservation(sale, "a", t0(), 600),
        reservation(sale, "b", t0(), 600),
    );
    queue.enqueue_one(done.clone()).await.expect("enqueue");
    queue.enqueue_one(retry.clone()).await.expect("enqueue");
    assert_eq!(
        queue
            .take_batch(10, Duration::from_millis(500))
            .await
            .expect("take")
            .len(),
        2
    );

    queue
        .ack(&[done.order_id, new_order_id()])
        .await
        .expect("ack");
    assert_eq!(queue.find_one(done.order_id).await.expect("find"), None);
    assert_eq!(queue.depth(), 1);
    assert_eq!(queue.queued().await.expect("all"), vec![retry.clone()]);

    queue.nack(&[retry.order_id]).await.expect("nack");
    let again = queue
        .take_batch(10, Duration::from_millis(500))
        .await
        .expect("take");
    assert_eq!(
        again,
        vec![retry.clone()],
        "a nacked reservation comes back at once"
    );
    queue.ack(&[retry.order_id]).await.expect("ack");
    queue
        .ack(&[retry.order_id])
        .await
        .expect("second ack is a no-op");
    assert_eq!(queue.depth(), 0);
    assert!(
        queue
            .take_batch(10, Duration::from_millis(50))
            .await
            .expect("take")
            .is_empty()
    );
}

/// A consumer that dies holding a reservation: after the ack deadline it is delivered
/// again, and not before.
pub async fn queue_redelivers_after_ack_deadline<F, Fut, G>(make: F)
where
    F: Fn(QueueSetup) -> Fut,
    Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
{
    let ack_deadline = Duration::from_millis(400);
    let backend = fresh(
        &make,
        QueueSetup {
            ack_deadline,
            ..QueueSetup::default()
        },
    )
    .await;
    let queue = &backend.queue;
    let r = reservation(new_sale_id(), "a", t0(), 600);
    queue.enqueue_one(r.clone()).await.expect("enqueue");
    let delivered_at = tokio::time::Instant::now();
    assert_eq!(
        queue
            .take_batch(1, Duration::from_millis(500))
            .await
            .expect("take"),
        vec![r.clone()]
    );
    // The consumer "dies" here: no ack, no nack.
    let again = queue
        .take_batch(1, Duration::from_secs(20))
        .await
        .expect("take");
    assert_eq!(again, vec![r.clone()], "redelivered after the deadline");
    assert!(
        delivered_at.elapsed() >= ack_deadline - Duration::from_millis(50),
        "redelivered before the ack deadline: {:?}",
        delivered_at.elapsed()
    );
    assert_eq!(queue.queued().await.expect("all"), vec![r.clone()]);
    queue.ack(&[r.order_id]).await.expect("ack");
    assert_eq!(queue.depth(), 0);
}

/// `all_queued` and `find` see every unacknowledged reservation, delivered or not.
pub async fn queue_all_queued_and_find_include_delivered<F, Fut, G>(make: F)
where
    F: Fn(QueueSetup) -> Fut,
    Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
{
    let backend = fresh(&make, QueueSetup::default()).await;
    let queue = &backend.queue;
    let sale = new_sale_id();
    let sent: Vec<Reservation> = (0..3)
        .map(|n| reservation(sale, &format!("b{n}"), t0(), 600))
        .collect();
    for r in &sent {
        queue.enqueue_one(r.clone()).await.expect("enqueue");
    }
    let taken = queue
        .take_batch(1, Duration::from_millis(500))
        .await
        .expect("take");
    assert_eq!(taken.len(), 1);
    assert_eq!(
        queue.find_one(taken[0].order_id).await.expect("find"),
        Some(taken[0].clone())
    );
    assert_eq!(
        sorted_ids(&queue.queued().await.expect("all")),
        sorted_ids(&sent)
    );
    assert_eq!(queue.depth(), 3);
}

/// `void` leaves a stored reservation alone and says so; for an id never stored it writes
/// a tombstone that no enqueue can pass and that is never delivered, found or listed. A
/// second void (another node's reconciler) sees the tombstone.
pub async fn queue_void_blocks_a_late_enqueue<F, Fut, G>(make: F)
where
    F: Fn(QueueSetup) -> Fut,
    Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
{
    let backend = fresh(&make, QueueSetup::default()).await;
    let queue = &backend.queue;
    let sale = new_sale_id();
    let stored = reservation(sale, "stored", t0(), 600);
    let late = reservation(sale, "late", t0(), 600);
    assert_eq!(
        queue.enqueue_one(stored.clone()).await.expect("enqueue"),
        Enqueued::Durable
    );
    assert_eq!(
        queue
            .void(BatchId::of_order(stored.order_id))
            .await
            .expect("void"),
        VoidOutcome::AlreadyStored
    );
    assert_eq!(
        queue.find_one(stored.order_id).await.expect("find"),
        Some(stored.clone()),
        "a void never touches a stored reservation"
    );

    assert_eq!(
        queue
            .void(BatchId::of_order(late.order_id))
            .await
            .expect("void"),
        VoidOutcome::Voided
    );
    assert_eq!(queue.find_one(late.order_id).await.expect("find"), None);
    let error = queue
        .enqueue_one(late.clone())
        .await
        .expect_err("a voided id cannot become durable");
    assert!(!error.outcome_known, "{error}");
    assert_eq!(
        queue
            .void(BatchId::of_order(late.order_id))
            .await
            .expect("void"),
        VoidOutcome::AlreadyStored,
        "a second reconciler sees the first one's tombstone"
    );
    assert_eq!(
        sorted_ids(&queue.queued().await.expect("all")),
        vec![stored.order_id]
    );
    let mut delivered = Vec::new();
    for _ in 0..3 {
        delivered.extend(
            queue
                .take_batch(10, Duration::from_millis(200))
                .await
                .expect("take"),
        );
    }
    assert_eq!(delivered, vec![stored], "a tombstone is never delivered");
}

/// A batch is durable as one: every reservation of it is found in it (and in no other
/// batch), listed with its batch id, and delivered; enqueuing the batch again stores it once.
pub async fn queue_batch_is_durable_as_one<F, Fut, G>(make: F)
where
    F: Fn(QueueSetup) -> Fut,
    Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
{
    let backend = fresh(&make, QueueSetup::default()).await;
    let queue = &backend.queue;
    let sale = new_sale_id();
    let batch = BatchId(Uuid::now_v7());
    let sent: Vec<Reservation> = (0..3)
        .map(|n| reservation(sale, &format!("b{n}"), t0(), 600))
        .collect();
    assert_eq!(
        queue.enqueue(batch, sent.clone()).await.expect("enqueue"),
        Enqueued::Durable
    );
    assert_eq!(queue.depth(), 3);
    for r in &sent {
        assert_eq!(
            queue.find(batch, r.order_id).await.expect("find"),
            Some(r.clone())
        );
    }
    assert_eq!(
        queue
            .find(BatchId(Uuid::now_v7()), sent[0].order_id)
            .await
            .expect("find"),
        None,
        "found only in its own batch"
    );
    assert_eq!(queue.find(batch, new_order_id()).await.expect("find"), None);
    let mut listed = queue.all_queued().await.expect("all");
    listed.sort_by_key(|q| q.reservation.order_id);
    let mut expected: Vec<Queued> = sent
        .iter()
        .map(|r| Queued {
            batch,
            reservation: r.clone(),
        })
        .collect();
    expected.sort_by_key(|q| q.reservation.order_id);
    assert_eq!(listed, expected);
    assert_eq!(
        queue
            .enqueue(batch, sent.clone())
            .await
            .expect("enqueue again"),
        Enqueued::Durable
    );
    assert_eq!(queue.depth(), 3, "a repeated batch is stored once");
    assert_eq!(
        queue
            .enqueue(BatchId(Uuid::now_v7()), Vec::new())
            .await
            .expect("an empty batch"),
        Enqueued::Durable
    );
    let mut got = queue
        .take_batch(10, Duration::from_millis(500))
        .await
        .expect("take");
    got.sort_by_key(|r| r.order_id);
    let mut sorted = sent.clone();
    sorted.sort_by_key(|r| r.order_id);
    assert_eq!(got, sorted);
    queue.ack(&sorted_ids(&sent)).await.expect("ack");
    assert_eq!(queue.depth(), 0);
}

/// At capacity a batch is refused whole: `Full`, and none of it is stored.
pub async fn queue_full_refuses_a_whole_batch<F, Fut, G>(make: F)
where
    F: Fn(QueueSetup) -> Fut,
    Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
{
    let backend = fresh(
        &make,
        QueueSetup {
            capacity: 4,
            ..QueueSetup::default()
        },
    )
    .await;
    let queue = &backend.queue;
    let sale = new_sale_id();
    let kept: Vec<Reservation> = (0..4)
        .map(|n| reservation(sale, &format!("a{n}"), t0(), 600))
        .collect();
    for r in &kept {
        assert_eq!(
            queue.enqueue_one(r.clone()).await.expect("enqueue"),
            Enqueued::Durable
        );
    }
    let refused = BatchId(Uuid::now_v7());
    let batch: Vec<Reservation> = (0..2)
        .map(|n| reservation(sale, &format!("b{n}"), t0(), 600))
        .collect();
    assert_eq!(
        queue
            .enqueue(refused, batch.clone())
            .await
            .expect("enqueue"),
        Enqueued::Full
    );
    for r in &batch {
        assert_eq!(queue.find(refused, r.order_id).await.expect("find"), None);
    }
    assert_eq!(queue.depth(), 4);
    assert_eq!(
        sorted_ids(&queue.queued().await.expect("all")),
        sorted_ids(&kept)
    );
}

/// A batch bigger than `take_batch`'s `max` is delivered completely (in parts of at most
/// `max`, or whole where the backend keeps a batch as one unit), and once every part is
/// acked nothing of it comes back.
pub async fn queue_big_batch_is_delivered_completely<F, Fut, G>(make: F)
where
    F: Fn(QueueSetup) -> Fut,
    Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
{
    let backend = fresh(&make, QueueSetup::default()).await;
    let queue = &backend.queue;
    let sale = new_sale_id();
    let big: Vec<Reservation> = (0..5)
        .map(|n| reservation(sale, &format!("b{n}"), t0(), 600))
        .collect();
    let batch = BatchId(Uuid::now_v7());
    queue.enqueue(batch, big.clone()).await.expect("enqueue");
    let mut got = Vec::new();
    for _ in 0..big.len() {
        let part = queue
            .take_batch(2, Duration::from_millis(500))
            .await
            .expect("take");
        assert!(
            part.len() <= 2 || part.len() == big.len(),
            "a part is at most max, or the whole batch: {}",
            part.len()
        );
        queue.ack(&sorted_ids(&part)).await.expect("ack part");
        got.extend(part);
        if got.len() >= big.len() {
            break;
        }
    }
    assert_eq!(sorted_ids(&got), sorted_ids(&big), "delivered completely");
    assert_eq!(queue.depth(), 0);
    assert!(queue.all_queued().await.expect("all").is_empty());
    for r in &big {
        assert_eq!(queue.find(batch, r.order_id).await.expect("find"), None);
    }
    assert!(
        queue
            .take_batch(10, Duration::from_millis(100))
            .await
            .expect("take")
            .is_empty(),
        "nothing acked comes back"
    );
}

/// Expands into one `#[tokio::test]` per `ReservationQueue` case. `$factory` is a closure
/// `Fn(QueueSetup) -> impl Future<Output = (Arc<dyn ReservationQueue>, guard)>`, called for
/// each fresh queue a case needs.
#[macro_export]
macro_rules! reservation_queue_conformance {
    ($factory:expr) => {
        $crate::__conformance_cases!(@factory queue, $factory, [
            queue_enqueue_then_take_batch,
            queue_take_batch_max_and_wait,
            queue_full_at_capacity,
            queue_same_batch_stored_once,
            queue_exclusive_delivery_to_concurrent_consumers,
            queue_ack_removes_and_nack_redelivers,
            queue_redelivers_after_ack_deadline,
            queue_all_queued_and_find_include_delivered,
            queue_void_blocks_a_late_enqueue,
            queue_batch_is_durable_as_one,
            queue_full_refuses_a_whole_batch,
            queue_big_batch_is_delivered_completely,
        ]);
    };
}
