//! `JetStreamQueue`: the scaled-out reservation queue on NATS JetStream, the acknowledgement
//! point of a buy when nodes share the work.
//!
//! How the contract maps onto JetStream:
//! - One stream (`<stream>`) with **work-queue retention**: a message lives until a consumer
//!   acknowledges it, so what the stream holds is exactly "queued or delivered, not acked".
//! - **One message per batch** (`encode_batch`: its reservations grouped by sale, each as
//!   `[order id, buyer, reserved at, payment window]` in milliseconds, JSON), under the subject
//!   `<stream>.res.<batch id>`: one publish and one ack per batch, which is what makes a batch
//!   durable as one (and what batching buys: the server's work is per message, not per
//!   reservation). `find` is a get-last-message-for-subject, and at most one message per subject
//!   (discard new per subject) makes "already queued" a refusal we answer as `Durable`. The
//!   message id is the batch id too, so the server's duplicate window answers retries that
//!   arrive while the first publish is in flight. A batch of one (the classic design) is named
//!   after its order, so a message per reservation is the classic layout.
//! - The capacity: the stream's message limit is `capacity_reservations` with discard new (a
//!   full stream refuses the publish, which `enqueue` answers as `Full`), and its byte limit is
//!   `capacity_reservations` × `RESERVATION_BYTES_MAX`, which bounds the reservations it holds
//!   whatever the batch sizes.
//! - `enqueue` returns `Durable` only after the publish ack: the stream (on its replicas) holds it.
//! - One durable pull consumer shared by every node's writers, with explicit acks and
//!   `ack_wait` = the ack deadline: a batch whose consumer died is delivered again. A message is
//!   acked once every reservation of it is; `nack` of any of them is a NAK of the message,
//!   redelivered at once (with the rest of its batch: writers insert idempotently). Acks wait
//!   for the server's confirmation (double ack), so after the last `ack` of a batch returns it
//!   is gone from the stream. `take_batch` hands out whole messages, at least one; messages a
//!   pull brought beyond `max` wait in this process for the next `take_batch`.
//!
//! `depth()` cannot ask the server (it is not async): it reads a gauge of reservations that
//! this queue moves by its own enqueues and acks, and that a background task resets every
//! `depth_refresh_ms` from the stream's message count times the reservations per message this
//! process has seen, when no local change overlapped the request. So it is exact for a single
//! node at rest and lags (and estimates) other nodes' work by about one refresh interval.
//!
//! Durability note: nats-server 2.9 acknowledges a publish once the message is in the stream
//! (on a quorum of replicas when replicated), not after an fsync of each message; with one
//! replica a machine crash can lose the last unsynced writes. Run three replicas in production,
//! or a server ≥ 2.10 with `sync_interval: always`.
//!
//! Dead letters: a message under a reservation subject that does not decode (corrupt, or
//! published by something else) is copied to the stream `<stream>_DEAD` (subject
//! `<stream>.dead.<sequence>`, created on first use) and only then terminated, so nothing that
//! was acknowledged to anyone disappears; `flashsale_requests_total{layer="queue",
//! outcome="dead_lettered"}` counts them. A reservation that decodes but cannot be *written*
//! is never dead-lettered, however often it is delivered: the usual cause is the order store
//! being down, and an acknowledged order must stay on the path to the store until it is back
//! (`max_deliver` is unlimited; the writer lag gauge shows the backlog).

use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{
    Config as StreamConfig, DiscardPolicy, LastRawMessageErrorKind, RetentionPolicy, StorageType,
};
use async_trait::async_trait;
use flashsale_core::{BatchId, OrderId, Reservation};
use flashsale_service::ports::redact_password;
use flashsale_service::{
    BackendError, BackendResult, Enqueued, Queued, ReservationQueue, VoidOutcome,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod anchor;
mod config;
mod dead_letter;
mod delivery;
mod depth;
mod publish;
mod wire;

pub use config::JetStreamQueueConfig;
pub use wire::{RESERVATION_BYTES_MAX, decode_batch, encode_batch};

use delivery::Delivered;
use depth::{BatchSizes, DepthGauge, spawn_depth_refresh};
use publish::Published;
use wire::decode;

const BACKEND: &str = "nats reservation queue";

/// NATS could not be reached, or the stream or consumer could not be set up. Names the server.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS at {url}: {message}")]
pub struct JetStreamQueueOpenError {
    pub url: String,
    pub message: String,
}

struct Shared {
    context: jetstream::Context,
    stream: jetstream::stream::Stream,
    consumer: PullConsumer,
    subject_prefix: String,
    capacity: usize,
    depth: DepthGauge,
    sizes: BatchSizes,
    /// Deliveries this process handed out and has not acked or nacked yet. A std mutex: map
    /// inserts and removes, never held across an `.await`.
    delivered: Mutex<Delivered>,
    /// The dead-letter stream's name and its subjects' prefix (see the module docs).
    dead_stream: String,
    dead_subject_prefix: String,
    replicas: usize,
    /// Longest a pull may go unanswered beyond its own wait. A pull whose answer is lost (the
    /// server stopped or the connection was replaced meanwhile) would otherwise hold an order
    /// writer forever; its messages come back after the ack deadline.
    pull_timeout: Duration,
}

/// The JetStream reservation queue. Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct JetStreamQueue {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for JetStreamQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamQueue")
            .field("subject_prefix", &self.shared.subject_prefix)
            .field("capacity", &self.shared.capacity)
            .finish_non_exhaustive()
    }
}

impl JetStreamQueue {
    /// Connects to `url` (`nats://host:port`), creates or updates the stream and the consumer,
    /// and starts the depth refresh task on the current tokio runtime.
    pub async fn connect(
        url: &str,
        config: JetStreamQueueConfig,
    ) -> Result<Self, JetStreamQueueOpenError> {
        let fail = |message: String| JetStreamQueueOpenError {
            url: redact_password(url),
            message,
        };
        let name = &config.stream;
        if name.is_empty() || name.contains(['.', '*', '>', ' ', '/', '\\']) {
            return Err(fail(format!(
                "stream name {name:?} must be non-empty, without '.', '*', '>', spaces or slashes"
            )));
        }
        if config.capacity_reservations == 0 {
            return Err(fail("capacity_reservations must be at least 1".into()));
        }
        let capacity = i64::try_from(config.capacity_reservations)
            .map_err(|_| fail("capacity_reservations is too large".into()))?;
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_millis(config.connect_timeout_ms.get()))
            .connect(url)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let context = jetstream::context::ContextBuilder::new()
            .timeout(Duration::from_millis(config.request_timeout_ms.get()))
            .build(client);

        let subject_prefix = format!("{name}.res.");
        let stream_config = StreamConfig {
            name: name.clone(),
            subjects: vec![format!("{subject_prefix}*")],
            retention: RetentionPolicy::WorkQueue,
            max_messages: capacity,
            max_bytes: capacity.saturating_mul(RESERVATION_BYTES_MAX as i64),
            discard: DiscardPolicy::New,
            max_messages_per_subject: 1,
            discard_new_per_subject: true,
            duplicate_window: Duration::from_millis(config.duplicate_window_ms.get()),
            num_replicas: config.replicas.get(),
            storage: StorageType::File,
            ..StreamConfig::default()
        };
        context
            .create_or_update_stream(stream_config)
            .await
            .map_err(|e| fail(format!("setting up stream {name}: {e}")))?;
        let stream = context
            .get_stream(name)
            .await
            .map_err(|e| fail(format!("reading stream {name}: {e}")))?;
        let consumer: PullConsumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(config.consumer.clone()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_millis(config.ack_deadline_ms),
                // Unlimited: see "Dead letters" in the module docs.
                max_deliver: -1,
                // The server's default (1,000) would stall writers well below capacity.
                max_ack_pending: capacity,
                filter_subject: format!("{subject_prefix}*"),
                ..pull::Config::default()
            })
            .await
            .map_err(|e| fail(format!("setting up consumer {}: {e}", config.consumer)))?;
        let messages = stream.cached_info().state.messages;

        let shared = Arc::new(Shared {
            context,
            stream,
            consumer,
            subject_prefix,
            dead_stream: format!("{name}_DEAD"),
            dead_subject_prefix: format!("{name}.dead."),
            replicas: config.replicas.get(),
            capacity: config.capacity_reservations,
            depth: DepthGauge::default(),
            sizes: BatchSizes::default(),
            delivered: Mutex::new(Delivered::default()),
            pull_timeout: Duration::from_millis(config.request_timeout_ms.get()),
        });
        shared
            .depth
            .add(i64::try_from(messages).unwrap_or(i64::MAX));
        spawn_depth_refresh(
            Arc::downgrade(&shared),
            Duration::from_millis(config.depth_refresh_ms.get().max(10)),
        );
        Ok(Self { shared })
    }

    fn subject(&self, batch: BatchId) -> String {
        format!("{}{batch}", self.shared.subject_prefix)
    }

    /// The batch a message of the stream holds, from its subject.
    fn batch_of_subject(&self, subject: &str) -> Option<BatchId> {
        subject
            .strip_prefix(&self.shared.subject_prefix)
            .and_then(|id| BatchId::parse(id).ok())
    }
}

#[async_trait]
impl ReservationQueue for JetStreamQueue {
    async fn enqueue(
        &self,
        batch: BatchId,
        reservations: Vec<Reservation>,
    ) -> BackendResult<Enqueued> {
        let Some(first) = reservations.first().map(|r| r.order_id) else {
            return Ok(Enqueued::Durable);
        };
        let count = reservations.len();
        let payload = encode_batch(&reservations)
            .map_err(|e| BackendError::determinate(BACKEND, format!("encoding: {e}")))?;
        let _in_flight = self.shared.depth.begin();
        match self.publish(batch, payload).await? {
            Published::Stored => {
                self.shared.sizes.saw(count);
                self.shared.depth.add(count as i64);
                Ok(Enqueued::Durable)
            }
            Published::Full => Ok(Enqueued::Full),
            // Something was stored under this id before: this batch (a retry), or the
            // reconciler's tombstone. Only the first makes it durable.
            Published::Taken => match self.find(batch, first).await? {
                Some(_) => Ok(Enqueued::Durable),
                None => Err(BackendError::indeterminate(
                    BACKEND,
                    format!(
                        "publishing batch {batch}: the id was stored before and is not a queued \
                         batch (voided, or already written)"
                    ),
                )),
            },
        }
    }

    async fn void(&self, batch: BatchId) -> BackendResult<VoidOutcome> {
        Ok(match self.publish(batch, Vec::new()).await? {
            Published::Stored => VoidOutcome::Voided,
            Published::Taken => VoidOutcome::AlreadyStored,
            // A full stream stores nothing: the reconciler tries again on its next pass.
            Published::Full => {
                return Err(BackendError::determinate(
                    BACKEND,
                    format!("voiding batch {batch}: the stream is full"),
                ));
            }
        })
    }

    async fn take_batch(&self, max: usize, wait: Duration) -> BackendResult<Vec<Reservation>> {
        self.deliver(max, wait).await
    }

    async fn ack(&self, orders: &[OrderId]) -> BackendResult<()> {
        self.ack_delivered(orders).await
    }

    async fn nack(&self, orders: &[OrderId]) -> BackendResult<()> {
        self.nack_delivered(orders).await
    }

    async fn find(&self, batch: BatchId, order: OrderId) -> BackendResult<Option<Reservation>> {
        match self
            .shared
            .stream
            .get_last_raw_message_by_subject(&self.subject(batch))
            .await
        {
            Ok(message) if message.payload.is_empty() => Ok(None),
            Ok(message) => Ok(decode(&message.payload)?
                .into_iter()
                .find(|r| r.order_id == order)),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(BackendError::determinate(
                BACKEND,
                format!("finding {order} in batch {batch}: {e}"),
            )),
        }
    }

    async fn all_queued(&self) -> BackendResult<Vec<Queued>> {
        // Walk the stream by "next message for the subject filter at or after sequence n": one
        // request per batch held, and only at start-up.
        let filter = format!("{}*", self.shared.subject_prefix);
        let mut queued = Vec::new();
        let mut next = 1;
        loop {
            match self
                .shared
                .stream
                .get_first_raw_message_by_subject(&filter, next)
                .await
            {
                Ok(message) => {
                    if !message.payload.is_empty() {
                        let batch = self.batch_of_subject(&message.subject).ok_or_else(|| {
                            BackendError::determinate(
                                BACKEND,
                                format!("a message under {} names no batch", message.subject),
                            )
                        })?;
                        queued.extend(
                            decode(&message.payload)?
                                .into_iter()
                                .map(|reservation| Queued { batch, reservation }),
                        );
                    }
                    next = message.sequence + 1;
                }
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                    return Ok(queued);
                }
                Err(e) => {
                    return Err(BackendError::determinate(
                        BACKEND,
                        format!("listing queued reservations: {e}"),
                    ));
                }
            }
        }
    }

    fn depth(&self) -> usize {
        self.shared.depth.get()
    }

    fn capacity(&self) -> usize {
        self.shared.capacity
    }
}
