//! The group-commit writer: one thread that drains every waiting request into one redb write
//! transaction with immediate durability (one fsync for many batches), then indexes and
//! replies.

use super::record::RESERVATIONS;
use super::{BACKEND, Shared, Slots, voided};
use crate::panic_message;
use flashsale_core::{BatchId, OrderId, Reservation};
use flashsale_service::{BackendError, VoidOutcome, faults};
use redb::{Database, Durability};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, oneshot};

/// Why a commit failed, as the committer tells it.
#[derive(Debug, Clone)]
pub(crate) struct CommitFailure {
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
    pub(crate) fn into_backend_error(self) -> BackendError {
        if self.determinate {
            BackendError::determinate(BACKEND, self.message)
        } else {
            BackendError::indeterminate(BACKEND, self.message)
        }
    }
}

pub(crate) type CommitReply = oneshot::Sender<Result<(), CommitFailure>>;

/// A request to the committer thread.
#[derive(Debug)]
pub(crate) enum Command {
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

/// The committer thread: one write transaction per batch of waiting requests. A plain thread,
/// not a tokio task: every step blocks on the disk.
pub(crate) fn run_committer(
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

pub(crate) fn commit_batch(db: &Database, batch: &mut Vec<Command>, shared: &Shared) {
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

pub(crate) fn write(
    db: &Database,
    writes: &[(u128, &[u8])],
    deletes: &[u128],
) -> Result<(), CommitFailure> {
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
