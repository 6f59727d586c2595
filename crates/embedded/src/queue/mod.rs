//! The embedded durable reservation queue: reservations written by a single group-commit
//! thread to local disk, with an in-memory index for delivery. Two storages sit under the same
//! queue: the reservation log (`LogQueue`, the default: append-only segment files, `log.rs`)
//! and a redb file (`RedbQueue`, the engine before it, kept so a data directory written by it
//! can still be opened and drained, `redb.rs`).
//!
//! How it works:
//! - `enqueue` takes capacity slots for its batch, hands the batch to the committer thread and
//!   waits for its reply. The committer drains every request waiting (up to
//!   `commit_batch_max`), writes them all with one sync (`Storage::commit`), then indexes them
//!   in memory and replies to all. So a burst of buyers costs one sync per group of batches,
//!   not one per buyer, and nobody hears `Durable` before the sync returned. A batch is in one
//!   commit, so it is durable all or none.
//! - Delivery state (queued, handed out until a deadline) lives only in memory: after a restart
//!   everything stored and not acked is queued again, which is exactly the redelivery a crash
//!   calls for.
//! - `ack` drops reservations from the index at once and records the ack through the same
//!   committer, so acks ride along in enqueue groups. A crash that loses an ack only brings the
//!   reservation back once more; order writers insert idempotently, so that is harmless.

use crate::panic_message;
use async_trait::async_trait;
use flashsale_core::{BatchId, OrderId, Reservation};
use flashsale_service::{
    BackendError, BackendResult, Enqueued, Queued, ReservationQueue, VoidOutcome, faults,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

mod committer;
mod index;
mod log;
mod log_record;
mod record;
mod redb;

pub use crate::config::{QueueConfig, QueueEngine};
pub use log::{LogStorage, SEGMENT_BYTES_MAX};
pub use log_record::{LogRecord, decode_log_record, encode_log_record};
pub use record::{decode_record, encode_record};
pub use redb::RedbStorage;

use committer::{Command, run_committer};
pub use committer::{CommitFailure, Storage};
use index::Index;

/// About one encoded reservation (a log record with a short buyer id is 94 bytes): the first
/// size of a batch's record buffer.
const RECORD_BYTES_TYPICAL: usize = 128;

/// The queue on the reservation log: the embedded default.
pub type LogQueue = DurableQueue<LogStorage>;
/// The queue on a redb file: the engine before the log.
pub type RedbQueue = DurableQueue<RedbStorage>;

/// The queue's storage could not be opened or read. Names the file or directory.
#[derive(Debug, thiserror::Error)]
#[error("reservation queue {}: {message}", path.display())]
pub struct QueueOpenError {
    pub path: PathBuf,
    pub message: String,
}

/// State shared by the queue handle and the committer thread.
#[derive(Debug)]
struct Shared {
    index: Mutex<Index>,
    /// Enqueues accepted but not yet indexed (waiting for or in a commit). Counted against the
    /// capacity so a burst cannot overshoot it while its commit is under way.
    slots_in_commit: AtomicUsize,
    /// Woken when reservations become deliverable.
    arrivals: Notify,
    commits: AtomicU64,
    /// Segment files on disk (the reservation log only).
    segments: AtomicU64,
}

impl Shared {
    fn index(&self) -> MutexGuard<'_, Index> {
        // A panic under the lock can only leave the index stale, never the file: the worst
        // outcome is a redelivery, which consumers already tolerate. So carry on.
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Capacity slots held by an enqueue until its batch is indexed (or it failed): one per
/// reservation. Freed on drop, so a cancelled enqueue future cannot leak capacity.
#[derive(Debug)]
struct Slots(Arc<Shared>, usize);

impl Drop for Slots {
    fn drop(&mut self) {
        self.0.slots_in_commit.fetch_sub(self.1, Ordering::AcqRel);
    }
}

/// The embedded durable queue on storage `S`. See the module docs for how it works.
#[derive(Debug)]
pub struct DurableQueue<S: Storage> {
    shared: Arc<Shared>,
    /// `None` only while dropping.
    requests: Option<mpsc::Sender<Command>>,
    committer: Option<JoinHandle<()>>,
    capacity: usize,
    ack_deadline: Duration,
    path: PathBuf,
    storage: std::marker::PhantomData<fn() -> S>,
}

impl RedbQueue {
    /// Opens (or creates) the redb file and loads every reservation in it as queued. Blocks
    /// while it reads the file; call it at start, not on a hot path.
    pub fn open(path: impl AsRef<Path>, config: QueueConfig) -> Result<Self, QueueOpenError> {
        let path = path.as_ref().to_path_buf();
        Self::start(path.clone(), config, || RedbStorage::open(&path))
    }
}

impl LogQueue {
    /// Opens (or creates) the reservation log in `dir` and loads every reservation stored and
    /// not acked as queued. Blocks while it reads the segments; call it at start.
    pub fn open(dir: impl AsRef<Path>, config: QueueConfig) -> Result<Self, QueueOpenError> {
        let dir = dir.as_ref().to_path_buf();
        Self::start(dir.clone(), config, || LogStorage::open(&dir))
    }

    /// The segment files on disk: shows that consumed segments are dropped.
    pub fn segments(&self) -> usize {
        self.shared.segments.load(Ordering::Relaxed) as usize
    }
}

impl<S: Storage> DurableQueue<S> {
    /// Checks the limits, opens the storage, indexes what it holds and starts the committer.
    fn start(
        path: PathBuf,
        config: QueueConfig,
        open: impl FnOnce() -> Result<(S, Vec<(Queued, u64)>), String>,
    ) -> Result<Self, QueueOpenError> {
        let fail = |message: String| QueueOpenError {
            path: path.clone(),
            message,
        };
        if config.capacity_reservations == 0 {
            return Err(fail("capacity_reservations must be at least 1".into()));
        }
        if config.commit_batch_max == 0 || config.commit_requests_waiting_max == 0 {
            return Err(fail(
                "commit_batch_max and commit_requests_waiting_max must be at least 1".into(),
            ));
        }
        if config.ack_deadline_ms == 0 {
            return Err(fail("ack_deadline_ms must be at least 1".into()));
        }

        // A storage may panic on a file damaged outside of it (redb does); turn that into an
        // error naming the file instead of taking the process down.
        let opened =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(open)).map_err(|panic| {
                fail(format!(
                    "the file is damaged (reading it panicked: {})",
                    panic_message(&panic)
                ))
            })?;
        let (storage, records) = opened.map_err(fail)?;

        let shared = Arc::new(Shared {
            index: Mutex::new(Index::default()),
            slots_in_commit: AtomicUsize::new(0),
            arrivals: Notify::new(),
            commits: AtomicU64::new(0),
            segments: AtomicU64::new(0),
        });
        {
            // Everything stored is queued again: whatever was delivered before a crash was
            // never acked. More than the capacity can be here if the capacity was lowered;
            // then enqueues answer Full until the backlog drains.
            let mut index = shared.index();
            for (queued, segment) in records {
                index.insert(queued.batch, queued.reservation, segment);
            }
        }

        let (requests, receiver) = mpsc::channel(config.commit_requests_waiting_max);
        let committer = {
            let shared = shared.clone();
            let batch_max = config.commit_batch_max;
            std::thread::Builder::new()
                .name("queue-committer".into())
                .spawn(move || run_committer(storage, receiver, shared, batch_max))
                .map_err(|e| fail(format!("cannot start the committer thread: {e}")))?
        };
        Ok(Self {
            shared,
            requests: Some(requests),
            committer: Some(committer),
            capacity: config.capacity_reservations,
            ack_deadline: Duration::from_millis(config.ack_deadline_ms),
            path,
            storage: std::marker::PhantomData,
        })
    }

    /// How many write transactions (each one fsync) the committer has made: shows that
    /// group commit batches.
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// The file (redb) or directory (log) the queue is stored in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn send(&self, command: Command) -> BackendResult<()> {
        let requests = self
            .requests
            .as_ref()
            .ok_or_else(|| BackendError::determinate(S::BACKEND, "the queue is closing"))?;
        requests
            .send(command)
            .await
            .map_err(|_| BackendError::determinate(S::BACKEND, "the committer thread has stopped"))
    }
}

impl<S: Storage> Drop for DurableQueue<S> {
    /// Lets the committer finish the requests already handed to it, then waits for it, so the
    /// file is closed (and its lock released) when the queue is gone: a reopen right after
    /// works. The wait is at most the commits already queued.
    fn drop(&mut self) {
        self.requests = None;
        if let Some(committer) = self.committer.take()
            && committer.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "the queue committer thread panicked");
        }
    }
}

#[async_trait]
impl<S: Storage> ReservationQueue for DurableQueue<S> {
    async fn enqueue(
        &self,
        batch: BatchId,
        reservations: Vec<Reservation>,
    ) -> BackendResult<Enqueued> {
        let Some(first) = reservations.first() else {
            return Ok(Enqueued::Durable);
        };
        let wanted = reservations.len();
        let slots = {
            let index = self.shared.index();
            if index
                .entries
                .get(&first.order_id)
                .is_some_and(|e| e.batch == batch)
            {
                // This batch is queued already (a retry).
                return Ok(Enqueued::Durable);
            }
            if index.voided.contains(&batch) {
                return Err(voided(S::BACKEND, batch));
            }
            // Checked and taken under the index lock, so two enqueues cannot both take the
            // last slots.
            let in_commit = self.shared.slots_in_commit.load(Ordering::Acquire);
            if index.entries.len() + in_commit + wanted > self.capacity {
                return Ok(Enqueued::Full);
            }
            self.shared
                .slots_in_commit
                .fetch_add(wanted, Ordering::AcqRel);
            Slots(self.shared.clone(), wanted)
        };
        // Encoded here, on the caller's thread, to keep the single committer lean.
        let mut records = Vec::with_capacity(wanted * RECORD_BYTES_TYPICAL);
        let mut ends = Vec::with_capacity(wanted);
        for reservation in &reservations {
            S::encode(batch, reservation, &mut records)
                .map_err(|e| BackendError::determinate(S::BACKEND, e))?;
            ends.push(records.len());
        }
        faults::point("queue.enqueue.before_send", faults::Happened::No).await?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::Enqueue {
            batch,
            reservations,
            records,
            ends,
            slots,
            reply,
        })
        .await?;
        match answer.await {
            Ok(Ok(())) => Ok(Enqueued::Durable),
            Ok(Err(failure)) => Err(failure.into_backend_error(S::BACKEND)),
            Err(_) => Err(BackendError::indeterminate(
                S::BACKEND,
                "the committer stopped before answering",
            )),
        }
    }

    async fn take_batch(&self, max: usize, wait: Duration) -> BackendResult<Vec<Reservation>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let until = Instant::now() + wait;
        loop {
            // Registered before looking, so an arrival between the look and the wait still
            // wakes us.
            let arrival = self.shared.arrivals.notified();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            let next_redelivery = {
                let mut index = self.shared.index();
                let batch = index.take(max, Instant::now(), self.ack_deadline);
                if !batch.is_empty() {
                    return Ok(batch);
                }
                index.next_redelivery()
            };
            if Instant::now() >= until {
                return Ok(Vec::new());
            }
            let wake_at = next_redelivery.map_or(until, |deadline| deadline.min(until));
            // Timing out is not an error here: it means "look again".
            let _ = tokio::time::timeout_at(wake_at, arrival).await;
        }
    }

    async fn ack(&self, orders: &[OrderId]) -> BackendResult<()> {
        faults::point("queue.ack.before", faults::Happened::No).await?;
        let removed: Vec<OrderId> = {
            let mut index = self.shared.index();
            orders
                .iter()
                .filter(|&&id| index.remove(id))
                .copied()
                .collect()
        };
        if removed.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.send(Command::Delete {
            orders: removed,
            reply,
        })
        .await?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            // The reservations are out of the index either way; if the delete did not reach
            // the file they come back after a restart, a harmless redelivery.
            Ok(Err(failure)) => Err(failure.into_backend_error(S::BACKEND)),
            Err(_) => Err(BackendError::indeterminate(
                S::BACKEND,
                "the committer stopped before answering",
            )),
        }
    }

    async fn nack(&self, orders: &[OrderId]) -> BackendResult<()> {
        {
            let mut index = self.shared.index();
            for &id in orders {
                index.nack(id);
            }
        }
        self.shared.arrivals.notify_waiters();
        Ok(())
    }

    async fn void(&self, batch: BatchId) -> BackendResult<VoidOutcome> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Void { batch, reply }).await?;
        answer.await.map_err(|_| {
            BackendError::indeterminate(S::BACKEND, "the committer stopped before answering")
        })
    }

    async fn find(&self, batch: BatchId, order: OrderId) -> BackendResult<Option<Reservation>> {
        Ok(self
            .shared
            .index()
            .entries
            .get(&order)
            .filter(|e| e.batch == batch)
            .map(|e| e.reservation.clone()))
    }

    async fn all_queued(&self) -> BackendResult<Vec<Queued>> {
        let mut all: Vec<Queued> = self
            .shared
            .index()
            .entries
            .values()
            .map(|e| Queued {
                batch: e.batch,
                reservation: e.reservation.clone(),
            })
            .collect();
        all.sort_by_key(|q| (q.reservation.reserved_at, q.reservation.order_id));
        Ok(all)
    }

    fn depth(&self) -> usize {
        self.shared.index().entries.len()
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}

/// An enqueue of a batch the reconciler voided: as far as the caller knows, the outcome is
/// unknown (the units stay taken until the reconciler, which already settled them, says so).
fn voided(backend: &'static str, batch: BatchId) -> BackendError {
    BackendError::indeterminate(backend, format!("batch {batch} was voided"))
}
