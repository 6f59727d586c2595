//! The group-commit writer: one thread that drains every waiting request into one commit of
//! the storage (one sync for many batches), then indexes and replies; and the `Storage` port
//! the two storages implement.

use super::{Shared, Slots, voided};
use crate::panic_message;
use flashsale_core::{BatchId, OrderId, Reservation};
use flashsale_service::{BackendError, VoidOutcome, faults};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, oneshot};

/// Why a commit failed, as the committer tells it.
#[derive(Debug, Clone)]
pub struct CommitFailure {
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
    pub(crate) fn into_backend_error(self, backend: &'static str) -> BackendError {
        if self.determinate {
            BackendError::determinate(backend, self.message)
        } else {
            BackendError::indeterminate(backend, self.message)
        }
    }

    /// A failure before anything could reach the disk.
    pub(crate) fn before_write(what: &str, e: &dyn std::fmt::Display) -> Self {
        Self {
            determinate: true,
            message: format!("{what}: {e}"),
        }
    }

    /// A failure after part of the commit may have reached the disk.
    pub(crate) fn unknown(message: String) -> Self {
        Self {
            determinate: false,
            message,
        }
    }
}

/// Where the queue's records are kept. Every method runs on the committer thread, except
/// `encode`, which runs on the enqueuing caller's.
pub trait Storage: Send + 'static {
    /// The backend's name in errors.
    const BACKEND: &'static str;

    /// Appends how a reservation of `batch` is stored to `out`.
    fn encode(batch: BatchId, reservation: &Reservation, out: &mut Vec<u8>) -> Result<(), String>;

    /// Makes one group durable: the records `writes` (as `encode` made them, under their
    /// order ids) stored, the reservations `deletes` acked. Returns the segment the records
    /// went to. Returns only after the sync: this is the acknowledgement point.
    fn commit(
        &mut self,
        writes: &[(OrderId, &[u8])],
        deletes: &[OrderId],
    ) -> Result<u64, CommitFailure>;

    /// After a commit was indexed: lets go of the space no held reservation needs.
    /// `holds(segment)` says whether any reservation is still held in that segment.
    fn tidy(&mut self, holds: &dyn Fn(u64) -> bool);

    /// Segment files on disk (1 for a single-file storage).
    fn segments(&self) -> u64;
}

pub(crate) type CommitReply = oneshot::Sender<Result<(), CommitFailure>>;

/// A request to the committer thread.
#[derive(Debug)]
pub(crate) enum Command {
    Enqueue {
        batch: BatchId,
        reservations: Vec<Reservation>,
        /// Their records, encoded one after the other: one buffer per batch, not one per
        /// reservation.
        records: Vec<u8>,
        /// Where each reservation's record ends in `records`.
        ends: Vec<usize>,
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

/// The committer thread: one write transaction per batch of waiting requests. A plain thread,
/// not a tokio task: every step blocks on the disk.
pub(crate) fn run_committer<S: Storage>(
    mut storage: S,
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
        commit_batch(&mut storage, &mut batch, &shared);
    }
}

fn commit_batch<S: Storage>(storage: &mut S, batch: &mut Vec<Command>, shared: &Shared) {
    // Skip what is indexed already (a retry of a durable batch) or repeated in this commit:
    // each order id is stored once.
    let mut writes: Vec<(OrderId, &[u8])> = Vec::new();
    let mut deletes: Vec<OrderId> = Vec::new();
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
                    records,
                    ends,
                    ..
                } => {
                    if index.voided.contains(batch) {
                        continue;
                    }
                    seen_batches.insert(*batch);
                    let mut start = 0;
                    for (reservation, &end) in reservations.iter().zip(ends) {
                        let id = reservation.order_id;
                        if !index.entries.contains_key(&id) && seen_orders.insert(id) {
                            writes.push((id, &records[start..end]));
                        }
                        start = end;
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
                Command::Delete { orders, .. } => deletes.extend_from_slice(orders),
            }
        }
    }

    // A panic in a commit fails that batch (outcome unknown: it may have reached the disk),
    // not the committer thread, which every later enqueue needs.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        faults::blocking_point("queue.commit.before", faults::Happened::No)
            .map_err(CommitFailure::from)?;
        let segment = storage.commit(&writes, &deletes)?;
        faults::blocking_point("queue.commit.after", faults::Happened::Yes)
            .map_err(CommitFailure::from)?;
        Ok(segment)
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
                ..
            } => {
                let answer = if index.voided.contains(&batch) && !index.batches.contains_key(&batch)
                {
                    Err(CommitFailure::unknown(voided(S::BACKEND, batch).message))
                } else {
                    if let Ok(segment) = result {
                        for reservation in reservations {
                            index.insert(batch, reservation, segment);
                        }
                    }
                    result.clone().map(drop)
                };
                // Freed under the index lock, after indexing: an enqueue checking capacity
                // never sees this batch counted zero times.
                drop(slots);
                replies.push((reply, answer));
            }
            Command::Delete { reply, .. } => replies.push((reply, result.clone().map(drop))),
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
    // After the replies: dropping consumed segments is no caller's business.
    storage.tidy(&|segment| held_in(shared, segment));
    shared.segments.store(storage.segments(), Ordering::Relaxed);
}

fn held_in(shared: &Shared, segment: u64) -> bool {
    shared.index().per_segment.contains_key(&segment)
}
