//! `JetStreamQueue`: the scaled-out reservation queue on NATS JetStream, the acknowledgement
//! point of a buy when nodes share the work.
//!
//! How the contract maps onto JetStream:
//! - One stream (`<stream>`) with **work-queue retention**: a message lives until a consumer
//!   acknowledges it, so what the stream holds is exactly "queued or delivered, not acked", and
//!   its message limit is the queue's capacity (`max_messages` + discard new: a full stream
//!   refuses the publish, which `enqueue` answers as `Full`).
//! - One subject per reservation, `<stream>.res.<order id>`, so `find` is a get-last-message-
//!   for-subject, and at most one message per subject (discard new per subject) makes "already
//!   queued" a refusal we answer as `Durable`. The message id is the order id too, so the
//!   server's duplicate window answers retries that arrive while the first publish is in flight.
//! - `enqueue` returns `Durable` only after the publish ack: the stream (on its replicas) holds it.
//! - One durable pull consumer shared by every node's writers, with explicit acks and
//!   `ack_wait` = the ack deadline: a reservation whose consumer died is delivered again.
//!   `nack` is a NAK, redelivered at once. Acks wait for the server's confirmation (double
//!   ack), so after `ack` returns the reservation is gone from the stream.
//!
//! `depth()` cannot ask the server (it is not async): it reads a gauge that this queue moves by
//! its own enqueues and acks, and that a background task resets from the stream's message count
//! every `depth_refresh_ms` when no local change overlapped the request. So it is exact for a
//! single node at rest and lags other nodes' work by about one refresh interval.
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
use flashsale_core::{OrderId, Reservation};
use flashsale_service::ports::redact_password;
use flashsale_service::{BackendError, BackendResult, Enqueued, ReservationQueue, VoidOutcome};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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

// A tombstone (`void`) is a message with an empty payload: no reservation encodes to that.

/// Shortest wait worth a pull request; below it `take_batch` only looks at what is there.
const PULL_WAIT_MIN: Duration = Duration::from_millis(1);

/// How the JetStream queue connects and what it creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JetStreamQueueConfig {
    /// The stream, one per deployment; its subjects are `<stream>.res.<order id>`. Created if
    /// missing, its limits updated if present.
    pub stream: String,
    /// The durable pull consumer every node's order writers share.
    pub consumer: String,
    /// Most reservations held (queued or delivered, not yet acked) before `enqueue` answers
    /// `Full`. The stream's message limit.
    pub capacity_reservations: usize,
    /// How long a consumer may hold a delivered reservation before it is delivered again.
    pub ack_deadline_ms: u64,
    /// Stream replicas (1 for a single server; 3 in a cluster for durability).
    pub replicas: usize,
    /// How long the server remembers a message id to drop a duplicate publish.
    pub duplicate_window_ms: u64,
    /// How often `depth()` is reset from the server's count.
    pub depth_refresh_ms: u64,
    /// How long a JetStream request (a publish ack, an ack's confirmation) may take. Past it the
    /// outcome is unknown.
    pub request_timeout_ms: u64,
    /// How long connecting may take.
    pub connect_timeout_ms: u64,
}

impl Default for JetStreamQueueConfig {
    fn default() -> Self {
        Self {
            stream: "FLASHSALE_RESERVATIONS".to_owned(),
            consumer: "order-writers".to_owned(),
            capacity_reservations: 100_000,
            ack_deadline_ms: 30_000,
            replicas: 1,
            duplicate_window_ms: 120_000,
            depth_refresh_ms: 1_000,
            request_timeout_ms: 5_000,
            connect_timeout_ms: 2_000,
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
    /// Deliveries this process handed out and has not acked or nacked yet, by order id. A std
    /// mutex: a map insert or remove, never held across an `.await`.
    in_hand: Mutex<HashMap<OrderId, jetstream::Message>>,
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

    fn in_hand(&self) -> MutexGuard<'_, HashMap<OrderId, jetstream::Message>> {
        // A map of handles; a panic elsewhere cannot leave it half-changed.
        self.in_hand.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn refresh_depth(&self) {
        let Some(started) = self.depth.refresh_start() else {
            return;
        };
        match self.stream.get_info().await {
            Ok(info) => self.depth.refresh_finish(started, info.state.messages),
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
            .connection_timeout(Duration::from_millis(config.connect_timeout_ms))
            .connect(url)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let context = jetstream::context::ContextBuilder::new()
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .build(client);

        let subject_prefix = format!("{name}.res.");
        let stream_config = StreamConfig {
            name: name.clone(),
            subjects: vec![format!("{subject_prefix}*")],
            retention: RetentionPolicy::WorkQueue,
            max_messages: capacity,
            discard: DiscardPolicy::New,
            max_messages_per_subject: 1,
            discard_new_per_subject: true,
            duplicate_window: Duration::from_millis(config.duplicate_window_ms),
            num_replicas: config.replicas.max(1),
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
            replicas: config.replicas.max(1),
            capacity: config.capacity_reservations,
            depth: DepthGauge::default(),
            in_hand: Mutex::new(HashMap::new()),
            pull_timeout: Duration::from_millis(config.request_timeout_ms),
        });
        shared
            .depth
            .add(i64::try_from(messages).unwrap_or(i64::MAX));
        spawn_depth_refresh(
            Arc::downgrade(&shared),
            Duration::from_millis(config.depth_refresh_ms.max(10)),
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

    /// Publishes `payload` under the order's subject with the order id as message id.
    async fn publish(&self, order: OrderId, payload: Vec<u8>) -> BackendResult<Published> {
        let id = order.to_string();
        let pending = self
            .shared
            .context
            .send_publish(
                self.subject(order),
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

    fn subject(&self, order: OrderId) -> String {
        format!("{}{order}", self.shared.subject_prefix)
    }

    /// Removes what this process holds of `orders` and answers each delivery with `kind`,
    /// waiting for the server to confirm; returns how many it confirmed.
    async fn answer(&self, orders: &[OrderId], kind: AckKind) -> BackendResult<usize> {
        let messages: Vec<jetstream::Message> = {
            let mut in_hand = self.shared.in_hand();
            orders.iter().filter_map(|id| in_hand.remove(id)).collect()
        };
        if messages.is_empty() {
            return Ok(0);
        }
        let mut answers = JoinSet::new();
        for message in messages {
            answers.spawn(async move { message.double_ack_with(kind).await });
        }
        let mut confirmed = 0;
        let mut failure = None;
        while let Some(answer) = answers.join_next().await {
            match answer {
                Ok(Ok(())) => confirmed += 1,
                Ok(Err(e)) => failure = Some(e.to_string()),
                Err(e) => failure = Some(e.to_string()),
            }
        }
        match failure {
            // The answer may have reached the server; if not, the delivery comes back after
            // the ack deadline, which the writers' idempotent inserts make harmless.
            Some(e) => Err(BackendError::indeterminate(
                BACKEND,
                format!("{confirmed} of {} answers confirmed: {e}", orders.len()),
            )),
            None => Ok(confirmed),
        }
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
    async fn enqueue(&self, reservation: Reservation) -> BackendResult<Enqueued> {
        let payload = serde_json::to_vec(&reservation)
            .map_err(|e| BackendError::determinate(BACKEND, format!("encoding: {e}")))?;
        let order = reservation.order_id;
        let _in_flight = self.shared.depth.begin();
        match self.publish(order, payload).await? {
            Published::Stored => {
                self.shared.depth.add(1);
                Ok(Enqueued::Durable)
            }
            Published::Full => Ok(Enqueued::Full),
            // Something was stored under this id before: this reservation (a retry), or the
            // reconciler's tombstone. Only the first makes it durable.
            Published::Taken => match self.find(order).await? {
                Some(_) => Ok(Enqueued::Durable),
                None => Err(BackendError::indeterminate(
                    BACKEND,
                    format!(
                        "publishing {order}: the id was stored before and is not a queued \
                         reservation (voided, or already written)"
                    ),
                )),
            },
        }
    }

    async fn void(&self, order: OrderId) -> BackendResult<VoidOutcome> {
        Ok(match self.publish(order, Vec::new()).await? {
            Published::Stored => VoidOutcome::Voided,
            Published::Taken => VoidOutcome::AlreadyStored,
            // A full stream stores nothing: the reconciler tries again on its next pass.
            Published::Full => {
                return Err(BackendError::determinate(
                    BACKEND,
                    format!("voiding {order}: the stream is full"),
                ));
            }
        })
    }

    async fn take_batch(&self, max: usize, wait: Duration) -> BackendResult<Vec<Reservation>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut messages = self.shared.fetch_now(max).await?;
        if messages.is_empty() && wait >= PULL_WAIT_MIN {
            // A pull for one message returns as soon as it arrives; a pull for `max` would sit
            // until `max` arrived or `wait` ran out. Then take whatever else came meanwhile.
            messages = self.shared.wait_for_one(wait).await?;
            if !messages.is_empty() && max > 1 {
                messages.extend(self.shared.fetch_now(max - 1).await?);
            }
        }
        let mut reservations = Vec::with_capacity(messages.len());
        let mut in_hand = self.shared.in_hand();
        for message in messages {
            if message.payload.is_empty() {
                // A tombstone: nothing to write.
                tokio::spawn(async move { message.ack().await });
                continue;
            }
            match serde_json::from_slice::<Reservation>(&message.payload) {
                Ok(reservation) => {
                    in_hand.insert(reservation.order_id, message);
                    reservations.push(reservation);
                }
                Err(e) => {
                    // Not ours, or corrupt: delivering it again would only fail again.
                    tracing::error!(subject = %message.subject, error = %e, "an unreadable reservation goes to the dead-letter stream");
                    let shared = self.shared.clone();
                    tokio::spawn(async move { shared.dead_letter(message).await });
                }
            }
        }
        Ok(reservations)
    }

    async fn ack(&self, orders: &[OrderId]) -> BackendResult<()> {
        let _in_flight = self.shared.depth.begin();
        let result = self.answer(orders, AckKind::Ack).await;
        if let Ok(confirmed) = result {
            self.shared
                .depth
                .add(-i64::try_from(confirmed).unwrap_or(i64::MAX));
        }
        result.map(|_| ())
    }

    async fn nack(&self, orders: &[OrderId]) -> BackendResult<()> {
        self.answer(orders, AckKind::Nak(None)).await.map(|_| ())
    }

    async fn find(&self, order: OrderId) -> BackendResult<Option<Reservation>> {
        match self
            .shared
            .stream
            .get_last_raw_message_by_subject(&self.subject(order))
            .await
        {
            Ok(message) if message.payload.is_empty() => Ok(None),
            Ok(message) => decode(&message.payload).map(Some),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(BackendError::determinate(
                BACKEND,
                format!("finding {order}: {e}"),
            )),
        }
    }

    async fn all_queued(&self) -> BackendResult<Vec<Reservation>> {
        // Walk the stream by "next message for the subject filter at or after sequence n": one
        // request per reservation held, at most `capacity`, and only at start-up.
        let filter = format!("{}*", self.shared.subject_prefix);
        let mut reservations = Vec::new();
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
                        reservations.push(decode(&message.payload)?);
                    }
                    next = message.sequence + 1;
                }
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                    return Ok(reservations);
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

fn decode(payload: &[u8]) -> BackendResult<Reservation> {
    serde_json::from_slice(payload).map_err(|e| {
        BackendError::determinate(BACKEND, format!("unreadable stored reservation: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
