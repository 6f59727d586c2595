//! The in-memory delivery state: which reservations are queued, which are handed out and until
//! when, how many each batch holds, and the voided batches. Lost on a restart on purpose.

use flashsale_core::{BatchId, OrderId, Reservation};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

/// One reservation known to the queue.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) batch: BatchId,
    pub(crate) reservation: Reservation,
    /// Where its record is stored: the segment of the reservation log (always 0 in redb).
    pub(crate) segment: u64,
    /// Handed to a consumer and not yet acked, nacked or timed out.
    pub(crate) delivered: bool,
    /// Bumped on every delivery state change; entries in `ready` / `in_flight` that carry an
    /// older generation are stale and skipped. This keeps every step O(1) without searching
    /// the queues.
    pub(crate) generation: u64,
}

/// The in-memory index. Guarded by a std mutex: each step is a few map and deque operations,
/// and no code path holds the guard across an `.await`.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub(crate) entries: HashMap<OrderId, Entry>,
    /// Deliverable, in order: (order, generation).
    pub(crate) ready: VecDeque<(OrderId, u64)>,
    /// Delivered, by deadline: (deadline, order, generation). Deadlines only grow (fixed ack
    /// deadline, monotonic clock), so the front is always the next to expire.
    pub(crate) in_flight: VecDeque<(Instant, OrderId, u64)>,
    /// Reservations held per batch, so a batch can be told apart from one never stored.
    pub(crate) batches: HashMap<BatchId, usize>,
    /// Tombstones (`ReservationQueue::void`): batch ids that may no longer be enqueued. Kept
    /// in memory only: the reconciler that writes them runs on shared backends, and a restart
    /// of the embedded default rebuilds the ledger without any pending reservation.
    pub(crate) voided: HashSet<BatchId>,
    /// Reservations held per storage segment: a segment none is held in may be dropped.
    pub(crate) per_segment: BTreeMap<u64, usize>,
}

impl Index {
    pub(crate) fn insert(&mut self, batch: BatchId, reservation: Reservation, segment: u64) {
        let id = reservation.order_id;
        if self.entries.contains_key(&id) {
            return;
        }
        self.entries.insert(
            id,
            Entry {
                batch,
                reservation,
                segment,
                delivered: false,
                generation: 0,
            },
        );
        *self.batches.entry(batch).or_default() += 1;
        *self.per_segment.entry(segment).or_default() += 1;
        self.ready.push_back((id, 0));
    }

    pub(crate) fn remove(&mut self, id: OrderId) -> bool {
        let Some(entry) = self.entries.remove(&id) else {
            return false;
        };
        if let Some(held) = self.batches.get_mut(&entry.batch) {
            *held -= 1;
            if *held == 0 {
                self.batches.remove(&entry.batch);
            }
        }
        if let Some(held) = self.per_segment.get_mut(&entry.segment) {
            *held -= 1;
            if *held == 0 {
                self.per_segment.remove(&entry.segment);
            }
        }
        true
    }

    /// Moves deliveries whose deadline passed back to `ready`.
    pub(crate) fn requeue_timed_out(&mut self, now: Instant) {
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

    pub(crate) fn take(
        &mut self,
        max: usize,
        now: Instant,
        ack_deadline: Duration,
    ) -> Vec<Reservation> {
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

    pub(crate) fn next_redelivery(&self) -> Option<Instant> {
        self.in_flight.front().map(|&(deadline, _, _)| deadline)
    }

    pub(crate) fn nack(&mut self, id: OrderId) {
        if let Some(entry) = self.entries.get_mut(&id)
            && entry.delivered
        {
            entry.delivered = false;
            entry.generation += 1;
            self.ready.push_front((id, entry.generation));
        }
    }
}
