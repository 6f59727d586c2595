//! Order writers: tasks that move reservations from the durable queue into the order store in
//! batches. Their number can change while the server runs.
//!
//! **Writers give way during the spike.** A reservation's 202 needs only the durable queue; the
//! order store can be written later (the seed's peak shaving). Writers and the buy path share
//! the node's cores, so while the buy path is hot (it made a reservation durable in the last
//! `BUY_PATH_HOT_MS`) a writer pauses before taking its next batch, for at most
//! `[writers] give_way_ms` at a time and only while the queue is less than half as full as where
//! shedding starts. When the pause runs out while the buy path is still hot, the writer drains
//! the backlog (until a take finds less than a full batch waiting) before it gives way again.
//! So the writers' lag stays within about `give_way_ms` plus one drain, the queue never fills
//! into shedding for it, and the admin's writer count stays the upper bound.

use crate::faults;
use crate::ports::{Clock, OrderStore, ReservationQueue};
use flashsale_core::OrderId;
use serde::{Deserialize, Serialize};
use std::num::{NonZeroU64, NonZeroUsize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Most writers one node may run; more only contend for the same order store.
pub const WRITERS_COUNT_MAX: usize = 64;

/// The buy path is hot while it made a reservation durable this recently.
pub const BUY_PATH_HOT_MS: u64 = 100;

/// How often a writer that gives way looks again.
const GIVE_WAY_POLL_MS: u64 = 20;

/// When the buy path last made reservations durable, on the real monotonic clock (this is
/// about sharing the CPU now, not about the shop's clock). Written once per accepted batch.
#[derive(Debug)]
pub struct BuyHeat {
    epoch: Instant,
    /// Milliseconds after `epoch`, plus one (0: never).
    last_ms: AtomicU64,
}

impl Default for BuyHeat {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl BuyHeat {
    /// The buy path made reservations durable just now.
    pub fn note(&self) {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Whether the buy path made reservations durable within the last `BUY_PATH_HOT_MS`.
    pub fn is_hot(&self) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        last != 0 && now.saturating_sub(last) < BUY_PATH_HOT_MS
    }
}

/// When writers give way to the buy path (module docs).
#[derive(Debug, Clone)]
pub struct GiveWay {
    pub heat: Arc<BuyHeat>,
    /// Writers give way only while the queue is fuller than this, in percent of its capacity.
    pub queue_fill_percent_max: u32,
}

/// `[writers]`: the order writers that move reservations from the queue to the order store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriterConfig {
    /// Writers started with the server.
    pub count: usize,
    /// Most reservations written in one store transaction.
    pub batch_max: NonZeroUsize,
    /// How long a writer waits on an empty queue before checking for shutdown again.
    pub idle_wait_ms: NonZeroU64,
    /// After writing less than a full batch, how long a writer waits before taking again, so
    /// a steady trickle is written in fewer, larger transactions (and fewer queue requests)
    /// instead of one per arrival. The orders wait that much longer; the 202s do not.
    pub linger_ms: u64,
    /// Longest pause after a failed write before trying again.
    pub retry_backoff_ms_max: u64,
    /// Longest a writer pauses at a time while the buy path is hot (module docs); 0 never
    /// pauses.
    #[serde(default)]
    pub give_way_ms: u64,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            count: 2,
            batch_max: NonZeroUsize::new(5000).expect("not zero"),
            idle_wait_ms: NonZeroU64::new(50).expect("not zero"),
            linger_ms: 10,
            retry_backoff_ms_max: 2000,
            give_way_ms: 1000,
        }
    }
}

/// What one writer step did; the loop around it decides how to pace itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Nothing was queued.
    Idle,
    /// A batch was written (`new` of `taken` were new orders; the rest were redeliveries).
    Wrote {
        taken: usize,
        new: u64,
        oldest_reserved_at: flashsale_core::Timestamp,
    },
    /// Writing failed; the batch was handed back for redelivery.
    Failed,
}

/// One writer step: take a batch, write it idempotently, and only then acknowledge it. A crash
/// between the write and the ack repeats a harmless insert.
pub async fn write_one_batch(
    queue: &dyn ReservationQueue,
    store: &dyn OrderStore,
    config: &WriterConfig,
) -> WriteOutcome {
    let batch = match queue
        .take_batch(
            config.batch_max.get(),
            Duration::from_millis(config.idle_wait_ms.get()),
        )
        .await
    {
        Ok(batch) if batch.is_empty() => return WriteOutcome::Idle,
        Ok(batch) => batch,
        Err(error) => {
            tracing::warn!(%error, "order writer could not take from the queue");
            return WriteOutcome::Failed;
        }
    };
    let ids: Vec<OrderId> = batch.iter().map(|r| r.order_id).collect();
    let written = match faults::point("writer.after_take", faults::Happened::No).await {
        Ok(()) => store.insert_orders(&batch).await,
        Err(error) => Err(error),
    };
    match written {
        Ok(new) => {
            // The store's contract: at most one new order per reservation given. More would
            // count written orders that do not exist (the written metric, and the queued
            // figure derived from the store's counts, would drift). Cheap, so always on.
            assert!(
                new <= batch.len() as u64,
                "the order store wrote {new} new orders from {} reservations",
                batch.len()
            );
            if let Err(error) = faults::point("writer.after_insert", faults::Happened::Yes).await {
                // As if the writer died between the write and the ack: the batch is
                // delivered again after the ack deadline, and its insert is a no-op.
                tracing::warn!(%error, "order writer stopped before acknowledging");
                return WriteOutcome::Failed;
            }
            if let Err(error) = queue.ack(&ids).await {
                // The orders are written; an unacked batch is delivered again and its insert
                // is a no-op.
                tracing::warn!(%error, "order writer could not acknowledge a written batch");
            }
            let oldest_reserved_at = batch
                .iter()
                .map(|r| r.reserved_at)
                .min()
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            WriteOutcome::Wrote {
                taken: batch.len(),
                new,
                oldest_reserved_at,
            }
        }
        Err(error) => {
            tracing::warn!(%error, batch = batch.len(), "order writer could not write a batch");
            if let Err(error) = queue.nack(&ids).await {
                tracing::warn!(%error, "order writer could not hand a failed batch back");
            }
            WriteOutcome::Failed
        }
    }
}

struct Writer {
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

/// The writers of one node.
pub struct WriterPool {
    queue: Arc<dyn ReservationQueue>,
    store: Arc<dyn OrderStore>,
    clock: Arc<dyn Clock>,
    config: WriterConfig,
    // A std mutex: held only to push or pop handles, never across an await.
    writers: Mutex<Vec<Writer>>,
    /// The writers' lag as the last batch written or idle turn saw it, in ms (what the
    /// `flashsale_writer_lag_seconds` gauge shows); the line's "auto" rate reads it.
    lag_ms: Arc<AtomicU64>,
    give_way: GiveWay,
}

impl WriterPool {
    /// How far the writers run behind the buyers' 202s, in ms, as last seen.
    pub fn lag_ms(&self) -> u64 {
        self.lag_ms.load(Ordering::Relaxed)
    }
    pub fn new(
        queue: Arc<dyn ReservationQueue>,
        store: Arc<dyn OrderStore>,
        clock: Arc<dyn Clock>,
        config: WriterConfig,
        give_way: GiveWay,
    ) -> Self {
        Self {
            queue,
            store,
            clock,
            config,
            lag_ms: Arc::default(),
            writers: Mutex::new(Vec::new()),
            give_way,
        }
    }

    /// The buy path tells the writers here when it made reservations durable.
    pub fn heat(&self) -> &BuyHeat {
        &self.give_way.heat
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Writer>> {
        self.writers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts or stops writers until `count` run, and returns once the stopped ones have
    /// finished their current batch (so nothing taken is left unwritten, and a caller that
    /// sets zero knows no writer is still running). Must be called inside a tokio runtime.
    pub async fn set_count(&self, count: usize) {
        let count = count.min(WRITERS_COUNT_MAX);
        let stopped: Vec<Writer> = {
            let mut writers = self.lock();
            let keep = count.min(writers.len());
            let stopped = writers.split_off(keep);
            while writers.len() < count {
                let cancel = CancellationToken::new();
                let handle = tokio::spawn(run_writer(
                    self.queue.clone(),
                    self.store.clone(),
                    self.clock.clone(),
                    self.config.clone(),
                    self.lag_ms.clone(),
                    self.give_way.clone(),
                    cancel.clone(),
                ));
                writers.push(Writer { cancel, handle });
            }
            stopped
        };
        join(stopped).await;
        metrics::gauge!("flashsale_writers").set(count as f64);
        tracing::info!(writers = count, "order writer count set");
    }

    /// Stops every writer and waits for each to finish its batch.
    pub async fn stop_all(&self) {
        let writers: Vec<Writer> = std::mem::take(&mut *self.lock());
        join(writers).await;
    }
}

async fn join(writers: Vec<Writer>) {
    for writer in &writers {
        writer.cancel.cancel();
    }
    for writer in writers {
        let _ = writer.handle.await;
    }
}

async fn run_writer(
    queue: Arc<dyn ReservationQueue>,
    store: Arc<dyn OrderStore>,
    clock: Arc<dyn Clock>,
    config: WriterConfig,
    lag_ms: Arc<AtomicU64>,
    give_way: GiveWay,
    cancel: CancellationToken,
) {
    let written = crate::layers::NodeOutcome::Written.counter();
    let lag = metrics::gauge!("flashsale_writer_lag_seconds");
    let giving_way = metrics::gauge!("flashsale_writers_giving_way");
    let mut backoff_ms = 10;
    // Set when a pause ran out with the buy path still hot: drain the backlog before pausing
    // again.
    let mut draining = false;
    while !cancel.is_cancelled() {
        if config.give_way_ms > 0 && !draining && give_way.heat.is_hot() {
            giving_way.increment(1.0);
            let ran_out = pause_while_hot(queue.as_ref(), &config, &give_way, &cancel).await;
            giving_way.decrement(1.0);
            draining = ran_out;
            if cancel.is_cancelled() {
                break;
            }
        }
        // Each batch runs as a task of its own, so a panic costs that batch (it is delivered
        // again after the ack deadline), not the writer.
        let batch = tokio::spawn({
            let (queue, store, config) = (queue.clone(), store.clone(), config.clone());
            async move { write_one_batch(queue.as_ref(), store.as_ref(), &config).await }
        });
        let outcome = batch.await.unwrap_or_else(|error| {
            tracing::error!(%error, "an order writer's batch failed inside; it will be delivered again");
            WriteOutcome::Failed
        });
        match outcome {
            WriteOutcome::Wrote {
                taken,
                new,
                oldest_reserved_at,
            } => {
                backoff_ms = 10;
                // Less than a full batch was waiting: caught up, free to give way again.
                if taken < config.batch_max.get() {
                    draining = false;
                }
                written.increment(new);
                // How far the writers run behind the buyers' 202s: the age of the oldest
                // reservation in the batch just written.
                let behind = (clock.now() - oldest_reserved_at).as_seconds_f64().max(0.0);
                lag.set(behind);
                lag_ms.store((behind * 1000.0) as u64, Ordering::Relaxed);
                if taken < config.batch_max.get() && config.linger_ms > 0 {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(config.linger_ms)) => {}
                    }
                }
            }
            WriteOutcome::Idle => {
                backoff_ms = 10;
                draining = false;
                lag.set(0.0);
                lag_ms.store(0, Ordering::Relaxed);
            }
            WriteOutcome::Failed => {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
                }
                backoff_ms = (backoff_ms * 2).min(config.retry_backoff_ms_max.max(10));
            }
        }
    }
}

/// Pauses while the buy path is hot, for at most `give_way_ms`, and only while the queue stays
/// under the give-way fill. Returns whether the pause ran out with the buy path still hot.
async fn pause_while_hot(
    queue: &dyn ReservationQueue,
    config: &WriterConfig,
    give_way: &GiveWay,
    cancel: &CancellationToken,
) -> bool {
    let until = Instant::now() + Duration::from_millis(config.give_way_ms);
    let fill_max = u64::from(give_way.queue_fill_percent_max);
    loop {
        let fill_percent = (queue.depth() as u64 * 100) / (queue.capacity().max(1) as u64);
        if !give_way.heat.is_hot() || fill_percent >= fill_max || cancel.is_cancelled() {
            return false;
        }
        if Instant::now() >= until {
            return true;
        }
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(GIVE_WAY_POLL_MS)) => {}
        }
    }
}
