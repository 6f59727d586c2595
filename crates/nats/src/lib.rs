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

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{
    Config as StreamConfig, DiscardPolicy, LastRawMessageErrorKind, RetentionPolicy, StorageType,
};
use async_nats::jetstream::{self, AckKind};
use async_trait::async_trait;
use flashsale_core::{BatchId, BuyerId, OrderId, Reservation, SaleId, Timestamp};
use flashsale_service::ports::redact_password;
use flashsale_service::{
    BackendError, BackendResult, Enqueued, Queued, ReservationQueue, VoidOutcome,
};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::num::{NonZeroU64, NonZeroUsize};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::task::JoinSet;

const BACKEND: &str = "nats reservation queue";

/// The server's words for a full stream and for a subject that already holds its message
/// (nats-server `ErrMaxMsgs`, `ErrMaxBytes`, `ErrMaxMsgsPerSubject`). JetStream gives all of
/// them one error code (10077, "store failed"), so the description is what tells them apart.
const FULL_DESCRIPTIONS: [&str; 2] = ["maximum messages exceeded", "maximum bytes exceeded"];
const ALREADY_QUEUED_DESCRIPTION: &str = "maximum messages per subject exceeded";

/// A publish's outcome.
enum Published {
    Stored,
    /// A message with this id was stored before (the server's duplicate window), or the
    /// order's subject still holds one.
    Taken,
    Full,
}

/// A publish the server refused, or whose answer never came.
enum Refusal {
    SubjectTaken,
    Full,
    Failed(BackendError),
}

// A tombstone (`void`) is a message with an empty payload: no batch encodes to that.

/// The most bytes one reservation takes in a message (its JSON with the longest ids is about
/// 330): with the stream's byte limit it bounds the reservations the stream can hold.
pub const RESERVATION_BYTES_MAX: usize = 512;

/// Shortest wait worth a pull request; below it `take_batch` only looks at what is there.
const PULL_WAIT_MIN: Duration = Duration::from_millis(1);

/// `[nats]`: how the JetStream queue connects and what it creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetStreamQueueConfig {
    /// The stream, one per deployment; its subjects are `<stream>.res.<order id>`. Created if
    /// missing, its limits updated if present.
    pub stream: String,
    /// The durable pull consumer every node's order writers share.
    pub consumer: String,
    /// Most reservations held (queued or delivered, not yet acked) before `enqueue` answers
    /// `Full`. The stream's message limit. Not a key of `[nats]`: every queue's capacity is
    /// `queue.capacity_reservations`, which the binary sets here.
    #[serde(skip)]
    pub capacity_reservations: usize,
    /// How long a consumer may hold a delivered reservation before it is delivered again.
    /// Not a key of `[nats]`: the binary sets it from `queue.ack_deadline_ms`.
    #[serde(skip)]
    pub ack_deadline_ms: u64,
    /// Stream replicas (1 for a single server; 3 in a cluster for durability).
    pub replicas: NonZeroUsize,
    /// How long the server remembers a message id to drop a duplicate publish.
    pub duplicate_window_ms: NonZeroU64,
    /// How often `depth()` is reset from the server's count.
    pub depth_refresh_ms: NonZeroU64,
    /// How long a JetStream request (a publish ack, an ack's confirmation) may take. Past it the
    /// outcome is unknown.
    pub request_timeout_ms: NonZeroU64,
    /// How long connecting may take.
    pub connect_timeout_ms: NonZeroU64,
}

impl Default for JetStreamQueueConfig {
    fn default() -> Self {
        Self {
            stream: "FLASHSALE_RESERVATIONS".to_owned(),
            consumer: "order-writers".to_owned(),
            capacity_reservations: 100_000,
            ack_deadline_ms: 30_000,
            replicas: NonZeroUsize::MIN,
            duplicate_window_ms: NonZeroU64::new(120_000).expect("not zero"),
            depth_refresh_ms: NonZeroU64::new(1_000).expect("not zero"),
            request_timeout_ms: NonZeroU64::new(5_000).expect("not zero"),
            connect_timeout_ms: NonZeroU64::new(2_000).expect("not zero"),
        }
    }
}

/// NATS could not be reached, or the stream or consumer could not be set up. Names the server.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS at {url}: {message}")]
pub struct JetStreamQueueOpenError {
    pub url: String,
    pub message: String,
}

/// The queue's count of held reservations, see the crate docs.
#[derive(Debug, Default)]
struct DepthGauge {
    /// (value, generation): the generation moves with every local change, so a refresh can
    /// tell whether one happened while it asked the server.
    state: Mutex<(i64, u64)>,
    /// Local changes sent to the server and not yet counted.
    in_flight: AtomicUsize,
}

/// What this process has seen of batch sizes, to turn a message count into reservations.
#[derive(Debug, Default)]
struct BatchSizes {
    messages: AtomicU64,
    reservations: AtomicU64,
}

impl BatchSizes {
    fn saw(&self, reservations: usize) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.reservations
            .fetch_add(reservations as u64, Ordering::Relaxed);
    }

    /// Reservations per message at the sizes seen so far (1 before any).
    fn per_message(&self) -> f64 {
        let seen = self.messages.load(Ordering::Relaxed);
        if seen == 0 {
            return 1.0;
        }
        self.reservations.load(Ordering::Relaxed) as f64 / seen as f64
    }

    /// Reservations in `messages` messages, at the sizes seen so far.
    fn reservations_in(&self, messages: u64) -> u64 {
        (messages as f64 * self.per_message()).round() as u64
    }
}

/// A delivered batch this process has not answered yet.
struct InHand {
    message: jetstream::Message,
    /// How many reservations it holds.
    reservations: usize,
    /// Its reservations not yet acked.
    unacked: HashSet<OrderId>,
}

/// Deliveries this process handed out and has not answered: the messages by batch, and each
/// delivered reservation's batch.
#[derive(Default)]
struct Delivered {
    batches: HashMap<BatchId, InHand>,
    batch_of: HashMap<OrderId, BatchId>,
    /// Decoded batches a pull brought beyond what `take_batch` could hand out; the next
    /// `take_batch` starts with them.
    waiting: VecDeque<(BatchId, jetstream::Message, Vec<Reservation>)>,
}

/// Marks a local change in flight for as long as it lives.
struct InFlight<'a>(&'a DepthGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl DepthGauge {
    fn state(&self) -> MutexGuard<'_, (i64, u64)> {
        // The guarded data is two integers, always consistent: a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self)
    }

    fn add(&self, delta: i64) {
        let mut state = self.state();
        state.0 += delta;
        state.1 += 1;
    }

    fn get(&self) -> usize {
        usize::try_from(self.state().0).unwrap_or(0)
    }

    /// The generation to compare against after asking the server, or None if a local change
    /// is in flight now (the server's answer could not be told apart from it).
    fn refresh_start(&self) -> Option<u64> {
        let state = self.state();
        (self.in_flight.load(Ordering::SeqCst) == 0).then_some(state.1)
    }

    fn refresh_finish(&self, started: u64, server_count: u64) {
        let mut state = self.state();
        if self.in_flight.load(Ordering::SeqCst) == 0 && state.1 == started {
            state.0 = i64::try_from(server_count).unwrap_or(i64::MAX);
        }
    }
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

impl Shared {
    /// Copies an unreadable message to the dead-letter stream, then terminates it. If the copy
    /// fails the message stays, and comes back after the ack deadline for another try.
    async fn dead_letter(&self, message: jetstream::Message) {
        let sequence = message.info().map(|info| info.stream_sequence).unwrap_or(0);
        let copied = async {
            self.context
                .get_or_create_stream(StreamConfig {
                    name: self.dead_stream.clone(),
                    subjects: vec![format!("{}>", self.dead_subject_prefix)],
                    retention: RetentionPolicy::Limits,
                    num_replicas: self.replicas,
                    storage: StorageType::File,
                    ..StreamConfig::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Flashsale-Original-Subject", message.subject.as_str());
            self.context
                .publish_with_headers(
                    format!("{}{sequence}", self.dead_subject_prefix),
                    headers,
                    message.payload.clone(),
                )
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        };
        match copied.await {
            Ok(_) => {
                metrics::counter!("flashsale_requests_total", "layer" => "queue", "outcome" => "dead_lettered")
                    .increment(1);
                if let Err(error) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(%error, "could not terminate a dead-lettered message; it comes back and is copied again");
                }
            }
            Err(error) => {
                tracing::error!(%error, subject = %message.subject, "could not dead-letter an unreadable message; it stays queued")
            }
        }
    }

    fn delivered(&self) -> MutexGuard<'_, Delivered> {
        // Maps of handles; a panic elsewhere cannot leave them half-changed in a way that
        // matters (a lost handle means a redelivery after the ack deadline).
        self.delivered.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn refresh_depth(&self) {
        let Some(started) = self.depth.refresh_start() else {
            return;
        };
        match self.stream.get_info().await {
            Ok(info) => self
                .depth
                .refresh_finish(started, self.sizes.reservations_in(info.state.messages)),
            Err(e) => tracing::debug!(error = %e, "refreshing the queue depth failed"),
        }
    }

    /// Up to `max` messages the consumer has now, without waiting.
    async fn fetch_now(&self, max: usize) -> BackendResult<Vec<jetstream::Message>> {
        self.bounded(Duration::ZERO, async {
            let mut batch = self
                .consumer
                .fetch()
                .max_messages(max)
                .messages()
                .await
                .map_err(|e| BackendError::determinate(BACKEND, format!("pulling: {e}")))?;
            collect(&mut batch).await
        })
        .await
    }

    /// `pull`, given up after its own `wait` plus `pull_timeout`. Giving up is determinate for
    /// us: nothing was acknowledged, and whatever the server delivered comes back later.
    async fn bounded(
        &self,
        wait: Duration,
        pull: impl Future<Output = BackendResult<Vec<jetstream::Message>>>,
    ) -> BackendResult<Vec<jetstream::Message>> {
        let limit = wait + self.pull_timeout;
        tokio::time::timeout(limit, pull).await.unwrap_or_else(|_| {
            Err(BackendError::determinate(
                BACKEND,
                format!("pulling: no answer within {limit:?}"),
            ))
        })
    }

    /// One message, waiting up to `wait` for it.
    async fn wait_for_one(&self, wait: Duration) -> BackendResult<Vec<jetstream::Message>> {
        self.bounded(wait, async {
            let mut batch = self
                .consumer
                .batch()
                .max_messages(1)
                .expires(wait)
                .messages()
                .await
                .map_err(|e| BackendError::determinate(BACKEND, format!("pulling: {e}")))?;
            collect(&mut batch).await
        })
        .await
    }
}

async fn collect(
    batch: &mut jetstream::consumer::pull::Batch,
) -> BackendResult<Vec<jetstream::Message>> {
    use futures_util::StreamExt as _;
    let mut messages = Vec::new();
    while let Some(message) = batch.next().await {
        // A broken pull after some messages arrived: hand out what we have; the rest is
        // redelivered after the ack deadline.
        match message {
            Ok(message) => messages.push(message),
            Err(e) if messages.is_empty() => {
                return Err(BackendError::determinate(BACKEND, format!("pulling: {e}")));
            }
            Err(e) => {
                tracing::warn!(error = %e, "a pull ended early");
                break;
            }
        }
    }
    Ok(messages)
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

    /// Reads a publish that did not succeed: the server's refusals are answers or determinate
    /// errors; anything without an answer may have been stored.
    /// What a refused publish means.
    fn publish_refused(order: &str, e: &jetstream::context::PublishError) -> Refusal {
        let server_error = std::error::Error::source(e)
            .and_then(|source| source.downcast_ref::<jetstream::Error>());
        if let Some(server_error) = server_error {
            let described = server_error.to_string();
            if described.contains(ALREADY_QUEUED_DESCRIPTION) {
                return Refusal::SubjectTaken;
            }
            if FULL_DESCRIPTIONS.iter().any(|d| described.contains(d)) {
                return Refusal::Full;
            }
            return Refusal::Failed(BackendError::determinate(
                BACKEND,
                format!("publishing {order}: refused: {described}"),
            ));
        }
        Refusal::Failed(match e.kind() {
            // No stream answered, or the client refused before sending: nothing was stored.
            PublishErrorKind::StreamNotFound | PublishErrorKind::MaxPayloadExceeded => {
                BackendError::determinate(BACKEND, format!("publishing {order}: {e}"))
            }
            // No answer in time, the connection broke, or the answer was unreadable.
            _ => BackendError::indeterminate(BACKEND, format!("publishing {order}: {e}")),
        })
    }

    /// Publishes `payload` under the batch's subject with the batch id as message id.
    async fn publish(&self, batch: BatchId, payload: Vec<u8>) -> BackendResult<Published> {
        let id = batch.to_string();
        let pending = self
            .shared
            .context
            .send_publish(
                self.subject(batch),
                PublishMessage::build()
                    .message_id(&id)
                    .payload(payload.into()),
            )
            .await
            // Not handed to the connection: nothing was sent.
            .map_err(|e| BackendError::determinate(BACKEND, format!("publishing {id}: {e}")))?;
        Ok(match pending.await {
            Ok(ack) if ack.duplicate => Published::Taken,
            Ok(_) => Published::Stored,
            Err(e) => match Self::publish_refused(&id, &e) {
                Refusal::SubjectTaken => Published::Taken,
                Refusal::Full => Published::Full,
                Refusal::Failed(error) => return Err(error),
            },
        })
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

    /// Answers each message with `kind`, waiting for the server to confirm; returns the
    /// reservations of the messages it confirmed. `messages` holds each message with its
    /// reservation count.
    async fn answer(
        &self,
        messages: Vec<(jetstream::Message, usize)>,
        kind: AckKind,
    ) -> BackendResult<usize> {
        if messages.is_empty() {
            return Ok(0);
        }
        let total = messages.len();
        let mut answers = JoinSet::new();
        for (message, reservations) in messages {
            answers
                .spawn(async move { message.double_ack_with(kind).await.map(|()| reservations) });
        }
        let (mut confirmed, mut confirmed_messages) = (0, 0);
        let mut failure = None;
        while let Some(answer) = answers.join_next().await {
            match answer {
                Ok(Ok(reservations)) => {
                    confirmed += reservations;
                    confirmed_messages += 1;
                }
                Ok(Err(e)) => failure = Some(e.to_string()),
                Err(e) => failure = Some(e.to_string()),
            }
        }
        match failure {
            // The answer may have reached the server; if not, the delivery comes back after
            // the ack deadline, which the writers' idempotent inserts make harmless.
            Some(e) => Err(BackendError::indeterminate(
                BACKEND,
                format!("{confirmed_messages} of {total} answers confirmed: {e}"),
            )),
            None => Ok(confirmed),
        }
    }

    /// Hands out whole batches from `waiting` while they fit in `max` (always at least one),
    /// recording them as delivered; what does not fit stays waiting.
    fn hand_out(&self, delivered: &mut Delivered, max: usize) -> Vec<Reservation> {
        let mut out: Vec<Reservation> = Vec::new();
        while let Some((_, _, reservations)) = delivered.waiting.front() {
            if !out.is_empty() && out.len() + reservations.len() > max {
                break;
            }
            let Some((batch, message, reservations)) = delivered.waiting.pop_front() else {
                break;
            };
            let unacked: HashSet<OrderId> = reservations.iter().map(|r| r.order_id).collect();
            for order in &unacked {
                delivered.batch_of.insert(*order, batch);
            }
            delivered.batches.insert(
                batch,
                InHand {
                    message,
                    reservations: reservations.len(),
                    unacked,
                },
            );
            out.extend(reservations);
        }
        out
    }
}

fn spawn_depth_refresh(shared: Weak<Shared>, every: Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            // Only a weak handle between ticks: the task ends when the queue is dropped.
            let Some(shared) = shared.upgrade() else {
                return;
            };
            shared.refresh_depth().await;
        }
    });
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
        if max == 0 {
            return Ok(Vec::new());
        }
        {
            let mut delivered = self.shared.delivered();
            if !delivered.waiting.is_empty() {
                return Ok(self.hand_out(&mut delivered, max));
            }
        }
        // Pull about as many messages as `max` reservations fill, at the sizes seen so far.
        let per_message = self.shared.sizes.per_message().max(1.0);
        let pull = ((max as f64 / per_message).ceil() as usize).clamp(1, max);
        let mut messages = self.shared.fetch_now(pull).await?;
        if messages.is_empty() && wait >= PULL_WAIT_MIN {
            // A pull for one message returns as soon as it arrives; a pull for `pull` would sit
            // until `pull` arrived or `wait` ran out. Then take whatever else came meanwhile.
            messages = self.shared.wait_for_one(wait).await?;
            if !messages.is_empty() && pull > 1 {
                messages.extend(self.shared.fetch_now(pull - 1).await?);
            }
        }
        let mut delivered = self.shared.delivered();
        for message in messages {
            if message.payload.is_empty() {
                // A tombstone: nothing to write.
                tokio::spawn(async move { message.ack().await });
                continue;
            }
            let batch = self.batch_of_subject(&message.subject);
            match (batch, decode_batch(&message.payload)) {
                (Some(batch), Ok(reservations)) if !reservations.is_empty() => {
                    delivered.waiting.push_back((batch, message, reservations));
                }
                (_, decoded) => {
                    // Not ours, or corrupt: delivering it again would only fail again.
                    let error = decoded.err().map(|e| e.to_string()).unwrap_or_default();
                    tracing::error!(subject = %message.subject, %error, "an unreadable batch goes to the dead-letter stream");
                    let shared = self.shared.clone();
                    tokio::spawn(async move { shared.dead_letter(message).await });
                }
            }
        }
        Ok(self.hand_out(&mut delivered, max))
    }

    async fn ack(&self, orders: &[OrderId]) -> BackendResult<()> {
        let done: Vec<(jetstream::Message, usize)> = {
            let mut delivered = self.shared.delivered();
            let mut complete = Vec::new();
            for order in orders {
                let Some(batch) = delivered.batch_of.remove(order) else {
                    continue;
                };
                let Some(in_hand) = delivered.batches.get_mut(&batch) else {
                    continue;
                };
                in_hand.unacked.remove(order);
                if in_hand.unacked.is_empty() {
                    complete.push(batch);
                }
            }
            complete
                .into_iter()
                .filter_map(|batch| delivered.batches.remove(&batch))
                .map(|in_hand| (in_hand.message, in_hand.reservations))
                .collect()
        };
        let _in_flight = self.shared.depth.begin();
        let result = self.answer(done, AckKind::Ack).await;
        if let Ok(confirmed) = result {
            self.shared
                .depth
                .add(-i64::try_from(confirmed).unwrap_or(i64::MAX));
        }
        result.map(|_| ())
    }

    async fn nack(&self, orders: &[OrderId]) -> BackendResult<()> {
        let handed_back: Vec<(jetstream::Message, usize)> = {
            let mut delivered = self.shared.delivered();
            let batches: HashSet<BatchId> = orders
                .iter()
                .filter_map(|order| delivered.batch_of.get(order).copied())
                .collect();
            let mut messages = Vec::new();
            for batch in batches {
                if let Some(in_hand) = delivered.batches.remove(&batch) {
                    for order in &in_hand.unacked {
                        delivered.batch_of.remove(order);
                    }
                    messages.push((in_hand.message, 0));
                }
            }
            messages
        };
        self.answer(handed_back, AckKind::Nak(None))
            .await
            .map(|_| ())
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

fn decode(payload: &[u8]) -> BackendResult<Vec<Reservation>> {
    decode_batch(payload)
        .map_err(|e| BackendError::determinate(BACKEND, format!("unreadable stored batch: {e}")))
}

/// One sale's reservations in a batch message: each as order id, buyer, reserved at (unix ms)
/// and payment window (ms). Tuples and one sale id per group keep a message about a third the
/// size of full reservations in JSON: the server's work grows with the bytes it stores and
/// delivers.
#[derive(Serialize, Deserialize)]
struct WireSale {
    sale: SaleId,
    r: Vec<(OrderId, BuyerId, i64, i64)>,
}

/// A batch as one message's payload. Milliseconds, as the order stores keep them.
pub fn encode_batch(reservations: &[Reservation]) -> Result<Vec<u8>, String> {
    let mut sales: Vec<WireSale> = Vec::new();
    for r in reservations {
        let reserved_ms = unix_ms(r.reserved_at)?;
        let window_ms = unix_ms(r.expires_at)? - reserved_ms;
        let item = (r.order_id, r.buyer.clone(), reserved_ms, window_ms);
        match sales.iter_mut().find(|s| s.sale == r.sale_id) {
            Some(group) => group.r.push(item),
            None => sales.push(WireSale {
                sale: r.sale_id,
                r: vec![item],
            }),
        }
    }
    serde_json::to_vec(&sales).map_err(|e| e.to_string())
}

/// The reservations of a batch message (`encode_batch`); an error for anything else.
pub fn decode_batch(payload: &[u8]) -> Result<Vec<Reservation>, String> {
    let sales: Vec<WireSale> = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    let mut reservations = Vec::new();
    for group in sales {
        for (order_id, buyer, reserved_ms, window_ms) in group.r {
            let at = |ms: i64| {
                Timestamp::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                    .map_err(|e| format!("order {order_id}: {e}"))
            };
            if window_ms < 0 {
                return Err(format!("order {order_id}: a negative payment window"));
            }
            reservations.push(Reservation {
                order_id,
                sale_id: group.sale,
                buyer,
                reserved_at: at(reserved_ms)?,
                expires_at: at(reserved_ms.checked_add(window_ms).ok_or("overflow")?)?,
            });
        }
    }
    Ok(reservations)
}

fn unix_ms(at: Timestamp) -> Result<i64, String> {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("{at} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_round_trips_through_its_wire_form() {
        let at = Timestamp::from_unix_timestamp(1_900_000_000).expect("time")
            + time::Duration::milliseconds(123);
        let sale = |n| SaleId(uuid::Uuid::from_u128(n));
        let reservations: Vec<Reservation> = (0..5u128)
            .map(|n| {
                Reservation::new(
                    OrderId(uuid::Uuid::from_u128(100 + n)),
                    sale(n % 2),
                    BuyerId::parse(&format!("buyer-{n}")).expect("buyer"),
                    at + time::Duration::milliseconds(n as i64),
                    600,
                )
            })
            .collect();
        let wire = encode_batch(&reservations).expect("encodes");
        let mut back = decode_batch(&wire).expect("decodes");
        back.sort_by_key(|r| r.order_id);
        assert_eq!(back, reservations, "grouped by sale, nothing lost");
        let full = serde_json::to_vec(&reservations).expect("json");
        assert!(
            wire.len() * 2 < full.len(),
            "{} bytes against {} for full reservations",
            wire.len(),
            full.len()
        );
        for bad in [&b"[]x"[..], b"{}", b"[{\"sale\":1}]", b"", b"{not a batch"] {
            assert!(
                decode_batch(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn depth_refresh_is_ignored_when_a_local_change_overlaps() {
        let gauge = DepthGauge::default();
        gauge.add(3);
        let started = gauge.refresh_start().expect("idle");
        gauge.add(1);
        gauge.refresh_finish(started, 3);
        assert_eq!(gauge.get(), 4, "a stale server count must not win");

        let in_flight = gauge.begin();
        assert_eq!(gauge.refresh_start(), None);
        drop(in_flight);
        let started = gauge.refresh_start().expect("idle");
        gauge.refresh_finish(started, 7);
        assert_eq!(gauge.get(), 7, "another node's work shows up");
    }
}
