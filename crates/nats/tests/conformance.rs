//! Runs the `ReservationQueue` conformance suite against the real NATS server with JetStream,
//! each queue on a stream of its own that is deleted at the end.
//!
//! The server is `env::NATS`: `FLASHSALE_TEST_NATS_URL` (default `nats://127.0.0.1:4222`). A server
//! that cannot be reached fails the tests: a skipped backend test would read as a pass.

use flashsale_core::{BatchId, BuyerId, OrderId, Reservation, SaleId};
use flashsale_nats::{JetStreamQueue, JetStreamQueueConfig};
use flashsale_service::conformance::QueueSetup;
use flashsale_service::conformance::env::{NATS, clean_up_blocking, unique_name};
use flashsale_service::{BackendResult, Enqueued, ReservationQueue};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A stream of the test's own. Dropping it deletes the stream (and its consumer), and its
/// dead-letter stream if one was made.
struct TestStream {
    name: String,
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let name = self.name.clone();
        clean_up_blocking(async move {
            let deleted = async {
                let client = async_nats::connect(NATS.url()).await?;
                let jetstream = async_nats::jetstream::new(client);
                jetstream.delete_stream(&name).await?;
                // Made only by a test that dead-letters something.
                jetstream.delete_stream(format!("{name}_DEAD")).await.ok();
                Ok::<_, async_nats::Error>(())
            };
            if let Err(e) = deleted.await {
                eprintln!("could not delete test stream {name}: {e}");
            }
        });
    }
}

async fn fresh_queue(setup: QueueSetup) -> (JetStreamQueue, TestStream) {
    flashsale_nats::anchor::anchor_shared_account(&NATS.url())
        .await
        .unwrap_or_else(|e| panic!("{e} {}", NATS.hint()));
    let name = unique_name("FSTEST_");
    let config = JetStreamQueueConfig {
        stream: name.clone(),
        capacity_reservations: setup.capacity,
        ack_deadline_ms: u64::try_from(setup.ack_deadline.as_millis()).expect("deadline fits"),
        ..JetStreamQueueConfig::default()
    };
    let queue = JetStreamQueue::connect(&NATS.url(), config)
        .await
        .unwrap_or_else(|e| panic!("{e} {}", NATS.hint()));
    (queue, TestStream { name })
}

mod jetstream_queue {
    use super::*;

    flashsale_service::reservation_queue_conformance!(|setup: QueueSetup| async move {
        let (queue, stream) = fresh_queue(setup).await;
        (Arc::new(queue) as Arc<dyn ReservationQueue>, stream)
    });
}

/// A reservation enqueued as a batch of its own (the classic layout: one message each).
trait Alone {
    async fn enqueue_alone(&self, reservation: Reservation) -> BackendResult<Enqueued>;
    async fn find_alone(&self, order: OrderId) -> BackendResult<Option<Reservation>>;
}

impl Alone for JetStreamQueue {
    async fn enqueue_alone(&self, reservation: Reservation) -> BackendResult<Enqueued> {
        self.enqueue(BatchId::of_order(reservation.order_id), vec![reservation])
            .await
    }

    async fn find_alone(&self, order: OrderId) -> BackendResult<Option<Reservation>> {
        self.find(BatchId::of_order(order), order).await
    }
}

fn reservation(who: &str) -> Reservation {
    Reservation::new(
        OrderId(Uuid::now_v7()),
        SaleId(Uuid::now_v7()),
        BuyerId::parse(who).expect("buyer"),
        time::OffsetDateTime::from_unix_timestamp(1_900_000_000).expect("time"),
        600,
    )
}

#[tokio::test]
async fn connect_error_names_the_backend_and_the_url() {
    let error = JetStreamQueue::connect("nats://127.0.0.1:1", JetStreamQueueConfig::default())
        .await
        .expect_err("nothing listens on port 1");
    assert!(
        error
            .to_string()
            .starts_with("cannot connect to NATS at nats://127.0.0.1:1: "),
        "{error}"
    );
}

/// A second node on the same stream sees what the first queued, and a refused publish at
/// capacity leaves no trace: after room is made, the same reservation is stored for real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_stream_and_full_stores_nothing() {
    let (first, stream) = fresh_queue(QueueSetup {
        capacity: 2,
        ..QueueSetup::default()
    })
    .await;
    let second = JetStreamQueue::connect(
        &NATS.url(),
        JetStreamQueueConfig {
            stream: stream.name.clone(),
            capacity_reservations: 2,
            ack_deadline_ms: 60_000,
            ..JetStreamQueueConfig::default()
        },
    )
    .await
    .expect("second node");
    let (a, b, c) = (reservation("a"), reservation("b"), reservation("c"));
    assert_eq!(
        first.enqueue_alone(a.clone()).await.expect("enqueue"),
        Enqueued::Durable
    );
    assert_eq!(
        second.enqueue_alone(b.clone()).await.expect("enqueue"),
        Enqueued::Durable
    );
    assert_eq!(
        first.enqueue_alone(c.clone()).await.expect("enqueue"),
        Enqueued::Full
    );
    assert_eq!(
        second.find_alone(a.order_id).await.expect("find"),
        Some(a.clone())
    );

    let taken = second
        .take_batch(1, Duration::from_millis(500))
        .await
        .expect("take");
    assert_eq!(taken.len(), 1);
    second.ack(&[taken[0].order_id]).await.expect("ack");
    assert_eq!(
        first.enqueue_alone(c.clone()).await.expect("enqueue"),
        Enqueued::Durable
    );
    assert_eq!(
        first.find_alone(c.order_id).await.expect("find"),
        Some(c),
        "the earlier refusal did not poison the id"
    );
}

/// Not a benchmark, a sanity figure printed with `--nocapture`: concurrent publishes waiting
/// for their acks, then draining in batches; one reservation per message, then 32.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_and_drain_throughput_is_reported() {
    const TASKS: usize = 64;
    const PER_TASK: usize = 128;
    for per_message in [1, 32] {
        let (queue, _stream) = fresh_queue(QueueSetup::default()).await;
        let queue = Arc::new(queue);
        let started = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    for chunk in (0..PER_TASK).collect::<Vec<_>>().chunks(per_message) {
                        let batch: Vec<Reservation> = chunk
                            .iter()
                            .map(|n| reservation(&format!("b{task}-{n}")))
                            .collect();
                        let id = BatchId(Uuid::now_v7());
                        assert_eq!(
                            queue.enqueue(id, batch).await.expect("enqueue"),
                            Enqueued::Durable
                        );
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        let enqueued = started.elapsed();
        let total = TASKS * PER_TASK;
        assert_eq!(queue.depth(), total);
        let started = Instant::now();
        let mut drained = 0;
        while drained < total {
            let batch = queue
                .take_batch(500, Duration::from_millis(500))
                .await
                .expect("take");
            assert!(!batch.is_empty(), "drained {drained} of {total}");
            let ids: Vec<OrderId> = batch.iter().map(|r| r.order_id).collect();
            queue.ack(&ids).await.expect("ack");
            drained += ids.len();
        }
        let drain = started.elapsed();
        assert_eq!(queue.depth(), 0);
        eprintln!(
            "nats, {per_message} per message: {total} reservations from {TASKS} tasks: {:.0}/s ({enqueued:?}); drained with acks: {:.0}/s ({drain:?})",
            total as f64 / enqueued.as_secs_f64(),
            total as f64 / drain.as_secs_f64()
        );
    }
}

/// A message under a reservation subject that does not decode is never handed to a writer; it
/// is copied to the dead-letter stream with its subject, and only then removed from the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_message_goes_to_the_dead_letter_stream() {
    let (queue, stream) = fresh_queue(QueueSetup::default()).await;
    let good = reservation("good");
    queue.enqueue_alone(good.clone()).await.expect("enqueue");
    let client = async_nats::connect(NATS.url()).await.expect("connect");
    let jetstream = async_nats::jetstream::new(client);
    let subject = format!("{}.res.{}", stream.name, Uuid::new_v4());
    jetstream
        .publish(subject.clone(), "{not a reservation".into())
        .await
        .expect("publish")
        .await
        .expect("ack");

    let mut delivered = Vec::new();
    for _ in 0..3 {
        delivered.extend(
            queue
                .take_batch(10, Duration::from_millis(300))
                .await
                .expect("take"),
        );
    }
    assert_eq!(
        delivered,
        vec![good.clone()],
        "only the readable one is delivered"
    );

    let dead_name = format!("{}_DEAD", stream.name);
    let mut dead = None;
    for _ in 0..100 {
        if let Ok(mut dead_stream) = jetstream.get_stream(&dead_name).await
            && dead_stream.info().await.expect("info").state.messages == 1
        {
            dead = Some(dead_stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = dead.expect("the unreadable message reached the dead-letter stream");
    let kept = dead
        .get_first_raw_message_by_subject(&format!("{}.dead.>", stream.name), 1)
        .await
        .expect("dead letter");
    assert_eq!(&kept.payload[..], b"{not a reservation");
    let headers = kept.headers;
    assert_eq!(
        headers
            .get("Flashsale-Original-Subject")
            .map(|value| value.to_string()),
        Some(subject)
    );
    // Terminated in the queue once copied: only the readable reservation is left.
    queue.ack(&[good.order_id]).await.expect("ack");
    for _ in 0..100 {
        let mut main = jetstream.get_stream(&stream.name).await.expect("stream");
        if main.info().await.expect("info").state.messages == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the unreadable message was not removed from the queue");
}
