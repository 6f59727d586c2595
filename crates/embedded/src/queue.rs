//! `RedbQueue`: the embedded durable reservation queue, a redb file on local disk written by a
//! single group-commit thread, with an in-memory index for delivery.
//!
//! How it works:
//! - `enqueue` takes capacity slots for its batch, hands the batch to the committer thread and
//!   waits for its reply. The committer drains every request waiting (up to
//!   `commit_batch_max`), writes them all in one redb write transaction with immediate
//!   durability (one fsync), then indexes them in memory and replies to all. So a burst of
//!   buyers costs one fsync per group of batches, not one per buyer, and nobody hears `Durable`
//!   before the fsync returned. A batch is in one transaction, so it is durable all or none.
//! - Delivery state (queued, handed out until a deadline) lives only in memory: after a restart
//!   everything in the file is queued again, which is exactly the redelivery a crash calls for.
//! - `ack` drops reservations from the index at once and deletes them from the file through the
//!   same committer, so acks ride along in enqueue batches. A crash that loses an ack's delete
//!   only brings the reservation back once more; order writers insert idempotently, so that is
//!   harmless.

use async_trait::async_trait;
use flashsale_core::{BatchId, OrderId, Reservation};
use flashsale_service::{
    BackendError, BackendResult, Enqueued, Queued, ReservationQueue, VoidOutcome, faults,
};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

const BACKEND: &str = "redb reservation queue";

/// Order id (as u128) → the record (`Record`: the reservation and its batch) as JSON. JSON, not
/// a binary format: the queue holds at most `capacity_reservations` small records, and a
/// readable file helps when debugging.
const RESERVATIONS: TableDefinition<u128, &[u8]> = TableDefinition::new("reservations");

/// What one row of the file holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    batch: BatchId,
    reservation: Reservation,
}

/// `[queue]`: limits of the embedded queue (the JetStream queue takes its capacity and ack
/// deadline from the same section).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedbQueueConfig {
    /// Most reservations held (queued or delivered, not yet acked) before `enqueue` answers
    /// `Full`.
    pub capacity_reservations: usize,
    /// Most requests (enqueues and acks) written in one transaction, so one fsync.
    pub commit_batch_max: usize,
    /// Most requests waiting for the committer; enqueuers beyond it wait for room.
    pub commit_requests_waiting_max: usize,
    /// How long a consumer may hold a delivered reservation before it is delivered again.
    pub ack_deadline_ms: u64,
}

impl Default for RedbQueueConfig {
    fn default() -> Self {
        Self {
            capacity_reservations: 100_000,
            commit_batch_max: 2_048,
            commit_requests_waiting_max: 8_192,
            ack_deadline_ms: 30_000,
        }
    }
}

/// The queue file could not be opened or read. Names the file.
#[derive(Debug, thiserror::Error)]
#[error("reservation queue file {}: {message}", path.display())]
pub struct QueueOpenError {
    pub path: PathBuf,
    pub message: String,
}

/// One reservation known to the queue.
#[derive(Debug)]
struct Entry {
    batch: BatchId,
    reservation: Reservation,
    /// Handed to a consumer and not yet acked, nacked or timed out.
    delivered: bool,
    /// Bumped on every delivery state change; entries in `ready` / `in_flight` that carry an
    /// older generation are stale and skipped. This keeps every step O(1) without searching
    /// the queues.
    generation: u64,
}

/// The in-memory index. Guarded by a std mutex: each step is a few map and deque operations,
/// and no code path holds the guard across an `.await`.
#[derive(Debug, Default)]
struct Index {
    entries: HashMap<OrderId, Entry>,
    /// Deliverable, in order: (order, generation).
    ready: VecDeque<(OrderId, u64)>,
    /// Delivered, by deadline: (deadline, order, generation). Deadlines only grow (fixed ack
    /// deadline, monotonic clock), so the front is always the next to expire.
    in_flight: VecDeque<(Instant, OrderId, u64)>,
    /// Reservations held per batch, so a batch can be told apart from one never stored.
    batches: HashMap<BatchId, usize>,
    /// Tombstones (`ReservationQueue::void`): batch ids that may no longer be enqueued. Kept
    /// in memory only: the reconciler that writes them runs on shared backends, and a restart
    /// of the embedded default rebuilds the ledger without any pending reservation.
    voided: HashSet<BatchId>,
}

impl Index {
    fn insert(&mut self, batch: BatchId, reservation: Reservation) {
        let id = reservation.order_id;
        if self.entries.contains_key(&id) {
            return;
        }
        self.entries.insert(
            id,
            Entry {
                batch,
                reservation,
                delivered: false,
                generation: 0,
            },
        );
        *self.batches.entry(batch).or_default() += 1;
        self.ready.push_back((id, 0));
    }

    fn remove(&mut self, id: OrderId) -> bool {
        let Some(entry) = self.entries.remove(&id) else {
            return false;
        };
        if let Some(held) = self.batches.get_mut(&entry.batch) {
            *held -= 1;
            if *held == 0 {
                self.batches.remove(&entry.batch);
            }
        }
        true
    }

    /// Moves deliveries whose deadline passed back to `ready`.
    fn requeue_timed_out(&mut self, now: Instant) {
        while let Some(&(deadline, id, generation)) = self.in_flight.front() {
            if deadline > now {
                break;
            }
            self.in_flight.pop_front();
            if let Some(entry) = self.entries.get_mut(&id)
                && entry.delivered
                && entry.generation == generation
            {
                entry.delivered = false;
                entry.generation += 1;
                // To the front: it has waited longest.
                self.ready.push_front((id, entry.generation));
            }
        }
    }

    fn take(&mut self, max: usize, now: Instant, ack_deadline: Duration) -> Vec<Reservation> {
        self.requeue_timed_out(now);
        let mut out = Vec::new();
        while out.len() < max {
            let Some((id, generation)) = self.ready.pop_front() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            if entry.delivered || entry.generation != generation {
                continue;
            }
            entry.delivered = true;
            entry.generation += 1;
            self.in_flight
                .push_back((now + ack_deadline, id, entry.generation));
            out.push(entry.reservation.clone());
        }
        out
    }

    fn next_redelivery(&self) -> Option<Instant> {
        self.in_flight.front().map(|&(deadline, _, _)| deadline)
    }

    fn nack(&mut self, id: OrderId) {
        if let Some(entry) = self.entries.get_mut(&id)
            && entry.delivered
        {
            entry.delivered = false;
            entry.generation += 1;
            self.ready.push_front((id, entry.generation));
        }
    }
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

/// Why a commit failed, as the committer tells it.
#[derive(Debug, Clone)]
struct CommitFailure {
    /// True when the transaction surely was not committed.
    determinate: bool,
    message: String,
}

impl From<BackendError> for CommitFailure {
    fn from(error: BackendError) -> Self {
        Self {
            determinate: error.outcome_known,
            message: error.message,
        }
    }
}

impl CommitFailure {
    fn into_backend_error(self) -> BackendError {
        if self.determinate {
            BackendError::determinate(BACKEND, self.message)
        } else {
            BackendError::indeterminate(BACKEND, self.message)
        }
    }
}

type CommitReply = oneshot::Sender<Result<(), CommitFailure>>;

/// A request to the committer thread.
#[derive(Debug)]
enum Command {
    Enqueue {
        batch: BatchId,
        /// Each reservation with its encoded record.
        reservations: Vec<(Reservation, Vec<u8>)>,
        slots: Slots,
        reply: CommitReply,
    },
    Delete {
        orders: Vec<OrderId>,
        reply: CommitReply,
    },
    /// Handled by the committer, in order with the enqueues, so a void and an enqueue of the
    /// same id cannot both succeed.
    Void {
        batch: BatchId,
        reply: oneshot::Sender<VoidOutcome>,
    },
}

/// The embedded durable queue. See the module docs for how it works.
#[derive(Debug)]
pub struct RedbQueue {
    shared: Arc<Shared>,
    /// `None` only while dropping.
    requests: Option<mpsc::Sender<Command>>,
    committer: Option<JoinHandle<()>>,
    capacity: usize,
    ack_deadline: Duration,
    path: PathBuf,
}

impl RedbQueue {
    /// Opens (or creates) the queue file and loads every reservation in it as queued. Blocks
    /// while it reads the file; call it at start, not on a hot path.
    pub fn open(path: impl AsRef<Path>, config: RedbQueueConfig) -> Result<Self, QueueOpenError> {
        let path = path.as_ref().to_path_buf();
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

        // redb may panic on a file damaged outside of it; turn that into an error naming the
        // file instead of taking the process down.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load(&path)))
            .map_err(|panic| {
                fail(format!(
                    "the file is damaged (reading it panicked: {})",
                    panic_message(&panic)
                ))
            })?;
        let (db, records) = opened.map_err(fail)?;

        let shared = Arc::new(Shared {
            index: Mutex::new(Index::default()),
            slots_in_commit: AtomicUsize::new(0),
            arrivals: Notify::new(),
            commits: AtomicU64::new(0),
        });
        {
            // Everything in the file is queued again: whatever was delivered before a crash
            // was never acked. More than the capacity can be here if the capacity was lowered;
            // then enqueues answer Full until the backlog drains.
            let mut index = shared.index();
            for queued in records {
                index.insert(queued.batch, queued.reservation);
            }
        }

        let (requests, receiver) = mpsc::channel(config.commit_requests_waiting_max);
        let committer = {
            let shared = shared.clone();
            let batch_max = config.commit_batch_max;
            std::thread::Builder::new()
                .name("redb-queue-committer".into())
                .spawn(move || run_committer(db, receiver, shared, batch_max))
                .map_err(|e| fail(format!("cannot start the committer thread: {e}")))?
        };
        Ok(Self {
            shared,
            requests: Some(requests),
            committer: Some(committer),
            capacity: config.capacity_reservations,
            ack_deadline: Duration::from_millis(config.ack_deadline_ms),
            path,
        })
    }

    /// How many write transactions (each one fsync) the committer has made: shows that
    /// group commit batches.
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn send(&self, command: Command) -> BackendResult<()> {
        let requests = self
            .requests
            .as_ref()
            .ok_or_else(|| BackendError::determinate(BACKEND, "the queue is closing"))?;
        requests
            .send(command)
            .await
            .map_err(|_| BackendError::determinate(BACKEND, "the committer thread has stopped"))
    }
}

impl Drop for RedbQueue {
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
impl ReservationQueue for RedbQueue {
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
                return Err(voided(batch));
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
        // Serialized here, on the caller's thread, to keep the single committer lean.
        let mut encoded = Vec::with_capacity(wanted);
        for reservation in reservations {
            let (_, json) = encode_record(batch, &reservation)
                .map_err(|e| BackendError::determinate(BACKEND, e))?;
            encoded.push((reservation, json));
        }
        faults::point("redb_queue.enqueue.before_send", faults::Happened::No).await?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::Enqueue {
            batch,
            reservations: encoded,
            slots,
            reply,
        })
        .await?;
        match answer.await {
            Ok(Ok(())) => Ok(Enqueued::Durable),
            Ok(Err(failure)) => Err(failure.into_backend_error()),
            Err(_) => Err(BackendError::indeterminate(
                BACKEND,
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
        faults::point("redb_queue.ack.before", faults::Happened::No).await?;
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
            Ok(Err(failure)) => Err(failure.into_backend_error()),
            Err(_) => Err(BackendError::indeterminate(
                BACKEND,
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
            BackendError::indeterminate(BACKEND, "the committer stopped before answering")
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

/// Opens the file and reads every stored reservation.
fn load(path: &Path) -> Result<(Database, Vec<Queued>), String> {
    // The integrity check reads the whole file on open; the queue is bounded and small, and it
    // turns a damaged file into an error where a plain open may panic.
    let db = Database::builder()
        .set_check_integrity_on_open(true)
        .create(path)
        .map_err(|e| format!("cannot open it as a redb database: {e}"))?;
    {
        // Creates the table in a new file, so reads below and later never miss it.
        let txn = db
            .begin_write()
            .map_err(|e| format!("cannot write to it: {e}"))?;
        txn.open_table(RESERVATIONS)
            .map_err(|e| format!("cannot open the reservations table: {e}"))?;
        txn.commit()
            .map_err(|e| format!("cannot commit to it: {e}"))?;
    }
    let mut reservations = Vec::new();
    {
        use redb::ReadableDatabase;
        let txn = db
            .begin_read()
            .map_err(|e| format!("cannot read it: {e}"))?;
        let table = txn
            .open_table(RESERVATIONS)
            .map_err(|e| format!("cannot open the reservations table: {e}"))?;
        for row in table
            .iter()
            .map_err(|e| format!("cannot read the reservations: {e}"))?
        {
            let (key, value) = row.map_err(|e| format!("cannot read a reservation: {e}"))?;
            reservations.push(decode_record(key.value(), value.value())?);
        }
    }
    // Oldest first, so the backlog drains in the order buyers came.
    reservations.sort_by_key(|q| (q.reservation.reserved_at, q.reservation.order_id));
    Ok((db, reservations))
}

/// An enqueue of a batch the reconciler voided: as far as the caller knows, the outcome is
/// unknown (the units stay taken until the reconciler, which already settled them, says so).
fn voided(batch: BatchId) -> BackendError {
    BackendError::indeterminate(BACKEND, format!("batch {batch} was voided"))
}

/// One stored record back into its reservation and batch: the JSON that `enqueue` wrote,
/// under the key of its own order id. Anything else (damaged bytes, a record moved to another
/// key) is an error naming the key, never a panic. Public for the fuzz target `queue_record`.
pub fn decode_record(key: u128, json: &[u8]) -> Result<Queued, String> {
    let record: Record = serde_json::from_slice(json)
        .map_err(|e| format!("the reservation under key {key:x} is unreadable: {e}"))?;
    if record.reservation.order_id.0.as_u128() != key {
        return Err(format!(
            "the reservation under key {key:x} names order {}",
            record.reservation.order_id
        ));
    }
    Ok(Queued {
        batch: record.batch,
        reservation: record.reservation,
    })
}

/// How `enqueue` stores a reservation of `batch`: its key and its JSON. The inverse of
/// `decode_record`.
pub fn encode_record(batch: BatchId, reservation: &Reservation) -> Result<(u128, Vec<u8>), String> {
    #[derive(Serialize)]
    struct RecordRef<'a> {
        batch: BatchId,
        reservation: &'a Reservation,
    }
    let json = serde_json::to_vec(&RecordRef { batch, reservation })
        .map_err(|e| format!("cannot encode the reservation: {e}"))?;
    Ok((reservation.order_id.0.as_u128(), json))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// The committer thread: one write transaction per batch of waiting requests. A plain thread,
/// not a tokio task: every step blocks on the disk.
fn run_committer(
    db: Database,
    mut requests: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    batch_max: usize,
) {
    let mut batch: Vec<Command> = Vec::with_capacity(batch_max);
    // Ends when the queue handle is dropped and every request already sent is answered.
    while let Some(first) = requests.blocking_recv() {
        batch.push(first);
        while batch.len() < batch_max {
            match requests.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        commit_batch(&db, &mut batch, &shared);
    }
}

fn commit_batch(db: &Database, batch: &mut Vec<Command>, shared: &Shared) {
    // Skip what is indexed already (a retry of a durable batch) or repeated in this commit:
    // each order id is stored once.
    let mut writes: Vec<(u128, &[u8])> = Vec::new();
    let mut deletes: Vec<u128> = Vec::new();
    let mut void_replies = Vec::new();
    {
        let mut index = shared.index();
        let mut seen_orders = HashSet::new();
        let mut seen_batches = HashSet::new();
        for command in batch.iter() {
            match command {
                Command::Enqueue {
                    batch,
                    reservations,
                    ..
                } => {
                    if index.voided.contains(batch) {
                        continue;
                    }
                    seen_batches.insert(*batch);
                    for (reservation, json) in reservations {
                        let id = reservation.order_id;
                        if !index.entries.contains_key(&id) && seen_orders.insert(id) {
                            writes.push((id.0.as_u128(), json.as_slice()));
                        }
                    }
                }
                Command::Void { batch, .. } => {
                    let stored = index.batches.contains_key(batch)
                        || seen_batches.contains(batch)
                        || !index.voided.insert(*batch);
                    void_replies.push(if stored {
                        VoidOutcome::AlreadyStored
                    } else {
                        VoidOutcome::Voided
                    });
                }
                Command::Delete { orders, .. } => {
                    deletes.extend(orders.iter().map(|id| id.0.as_u128()))
                }
            }
        }
    }

    // A panic in a commit fails that batch (outcome unknown: it may have reached the disk),
    // not the committer thread, which every later enqueue needs.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        faults::blocking_point("redb_queue.commit.before", faults::Happened::No)
            .map_err(CommitFailure::from)?;
        write(db, &writes, &deletes)?;
        faults::blocking_point("redb_queue.commit.after", faults::Happened::Yes)
            .map_err(CommitFailure::from)
    }))
    .unwrap_or_else(|panic| {
        Err(CommitFailure {
            determinate: false,
            message: format!("the commit panicked: {}", panic_message(&*panic)),
        })
    });
    shared.commits.fetch_add(1, Ordering::Relaxed);

    let mut index = shared.index();
    let mut replies = Vec::with_capacity(batch.len());
    let mut void_replies = void_replies.into_iter();
    for command in batch.drain(..) {
        match command {
            Command::Enqueue {
                batch,
                reservations,
                slots,
                reply,
            } => {
                let answer = if index.voided.contains(&batch) && !index.batches.contains_key(&batch)
                {
                    Err(CommitFailure {
                        determinate: false,
                        message: voided(batch).message,
                    })
                } else {
                    if result.is_ok() {
                        for (reservation, _) in reservations {
                            index.insert(batch, reservation);
                        }
                    }
                    result.clone()
                };
                // Freed under the index lock, after indexing: an enqueue checking capacity
                // never sees this batch counted zero times.
                drop(slots);
                replies.push((reply, answer));
            }
            Command::Delete { reply, .. } => replies.push((reply, result.clone())),
            Command::Void { reply, .. } => {
                // Decided before the write, under the index lock; the tombstone needs no disk.
                let _ = reply.send(void_replies.next().unwrap_or(VoidOutcome::AlreadyStored));
            }
        }
    }
    drop(index);
    if result.is_ok() {
        shared.arrivals.notify_waiters();
    }
    for (reply, answer) in replies {
        // A caller that gave up waiting is fine: its reservation is durable (or not) anyway.
        let _ = reply.send(answer);
    }
}

fn write(db: &Database, writes: &[(u128, &[u8])], deletes: &[u128]) -> Result<(), CommitFailure> {
    let before_commit = |what: &str, e: &dyn std::fmt::Display| CommitFailure {
        determinate: true,
        message: format!("{what}: {e}"),
    };
    let mut txn = db
        .begin_write()
        .map_err(|e| before_commit("cannot begin a write", &e))?;
    // Immediate: the commit returns only after fsync, which is what makes `Durable` true.
    txn.set_durability(Durability::Immediate)
        .map_err(|e| before_commit("cannot set durability", &e))?;
    {
        let mut table = txn
            .open_table(RESERVATIONS)
            .map_err(|e| before_commit("cannot open the table", &e))?;
        // Deletes first: an order id enqueued again after its ack (in the same batch) must
        // stay, as it does in the index.
        for key in deletes {
            table
                .remove(key)
                .map_err(|e| before_commit("cannot delete", &e))?;
        }
        for &(key, json) in writes {
            table
                .insert(key, json)
                .map_err(|e| before_commit("cannot insert", &e))?;
        }
    }
    // A failed commit (say, fsync failed) may or may not have reached the disk.
    txn.commit().map_err(|e| CommitFailure {
        determinate: false,
        message: format!("commit failed: {e}"),
    })
}
