//! `SimQueue`: the durable reservation queue as in-memory data that survives simulated node
//! restarts (it stands for the redb file), with delivery state that does not (it stands for
//! the queue's in-memory index). Ack deadlines are measured on the simulated wall clock, so a
//! clock jump can make a batch a slow writer still holds come back to another writer.

use crate::clock::SimClock;
use async_trait::async_trait;
use flashsale_core::{BatchId, OrderId, Reservation, Timestamp};
use flashsale_service::{
    BackendError, BackendResult, Clock, Enqueued, Queued, ReservationQueue, VoidOutcome,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Debug, Clone)]
struct Entry {
    batch: BatchId,
    reservation: Reservation,
    /// Enqueue order; a redelivered entry keeps it, so it goes out before younger ones.
    seq: u64,
    /// Handed to a consumer until this time; `None` when deliverable.
    delivered_until: Option<Timestamp>,
}

#[derive(Debug, Default)]
struct State {
    next_seq: u64,
    entries: BTreeMap<OrderId, Entry>,
    /// Reconciler tombstones (`void`): batch ids that may no longer be enqueued.
    voided: BTreeSet<BatchId>,
}

#[derive(Debug)]
pub struct SimQueue {
    clock: Arc<SimClock>,
    capacity: usize,
    ack_deadline: time::Duration,
    state: Mutex<State>,
    arrivals: Notify,
}

impl SimQueue {
    pub fn new(clock: Arc<SimClock>, capacity: usize, ack_deadline: time::Duration) -> Self {
        Self {
            clock,
            capacity,
            ack_deadline,
            state: Mutex::new(State::default()),
            arrivals: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A node restart: what the queue had handed out is deliverable again, because the
    /// delivery state lived in the dead process.
    pub fn reopen(&self) {
        for entry in self.lock().entries.values_mut() {
            entry.delivered_until = None;
        }
        self.arrivals.notify_waiters();
    }

    /// Every queued reservation id, for the invariant checker.
    pub fn queued_ids(&self) -> Vec<(OrderId, Reservation)> {
        self.lock()
            .entries
            .iter()
            .map(|(id, e)| (*id, e.reservation.clone()))
            .collect()
    }

    /// Hands out up to `max` deliverable entries, oldest first, until the ack deadline.
    fn take_now(&self, max: usize) -> (Vec<Reservation>, Option<Timestamp>) {
        let now = self.clock.now();
        let mut state = self.lock();
        let mut ready: Vec<(u64, OrderId)> = state
            .entries
            .iter()
            .filter(|(_, e)| e.delivered_until.is_none_or(|until| until <= now))
            .map(|(id, e)| (e.seq, *id))
            .collect();
        ready.sort_unstable();
        let mut batch = Vec::new();
        for (_, id) in ready.into_iter().take(max) {
            if let Some(entry) = state.entries.get_mut(&id) {
                entry.delivered_until = Some(now + self.ack_deadline);
                batch.push(entry.reservation.clone());
            }
        }
        let next_redelivery = state
            .entries
            .values()
            .filter_map(|e| e.delivered_until)
            .filter(|until| *until > now)
            .min();
        (batch, next_redelivery)
    }
}

#[async_trait]
impl ReservationQueue for SimQueue {
    async fn enqueue(
        &self,
        batch: BatchId,
        reservations: Vec<Reservation>,
    ) -> BackendResult<Enqueued> {
        {
            let mut state = self.lock();
            if state.voided.contains(&batch) {
                return Err(BackendError::indeterminate(
                    "simulated queue",
                    "the batch was voided",
                ));
            }
            let new: Vec<Reservation> = reservations
                .into_iter()
                .filter(|r| !state.entries.contains_key(&r.order_id))
                .collect();
            // All or none.
            if state.entries.len() + new.len() > self.capacity {
                return Ok(Enqueued::Full);
            }
            for reservation in new {
                let seq = state.next_seq;
                state.next_seq += 1;
                state.entries.insert(
                    reservation.order_id,
                    Entry {
                        batch,
                        reservation,
                        seq,
                        delivered_until: None,
                    },
                );
            }
        }
        self.arrivals.notify_waiters();
        Ok(Enqueued::Durable)
    }

    async fn void(&self, batch: BatchId) -> BackendResult<VoidOutcome> {
        // The model keeps no dedupe window of acked ids: nothing in the simulation voids a
        // batch that was already written (the reconciler runs only on shared backends).
        let mut state = self.lock();
        if state.entries.values().any(|e| e.batch == batch) || !state.voided.insert(batch) {
            return Ok(VoidOutcome::AlreadyStored);
        }
        Ok(VoidOutcome::Voided)
    }

    async fn take_batch(&self, max: usize, wait: Duration) -> BackendResult<Vec<Reservation>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let until = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so an arrival in between still wakes us.
            let arrival = self.arrivals.notified();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            let (batch, next_redelivery) = self.take_now(max);
            if !batch.is_empty() {
                return Ok(batch);
            }
            let now = tokio::time::Instant::now();
            if now >= until {
                return Ok(Vec::new());
            }
            // A redelivery deadline is wall time; tokio's clock moves at the same rate.
            let wake_at = next_redelivery
                .map(|at| {
                    let wall_wait = (at - self.clock.now()).max(time::Duration::ZERO);
                    now + Duration::try_from(wall_wait).unwrap_or(Duration::ZERO)
                })
                .map_or(until, |at| at.min(until));
            let _ = tokio::time::timeout_at(wake_at, arrival).await;
        }
    }

    async fn ack(&self, orders: &[OrderId]) -> BackendResult<()> {
        let mut state = self.lock();
        for id in orders {
            state.entries.remove(id);
        }
        Ok(())
    }

    async fn nack(&self, orders: &[OrderId]) -> BackendResult<()> {
        {
            let mut state = self.lock();
            for id in orders {
                if let Some(entry) = state.entries.get_mut(id) {
                    entry.delivered_until = None;
                }
            }
        }
        self.arrivals.notify_waiters();
        Ok(())
    }

    async fn find(&self, batch: BatchId, order: OrderId) -> BackendResult<Option<Reservation>> {
        Ok(self
            .lock()
            .entries
            .get(&order)
            .filter(|e| e.batch == batch)
            .map(|e| e.reservation.clone()))
    }

    async fn all_queued(&self) -> BackendResult<Vec<Queued>> {
        let mut all: Vec<(u64, Queued)> = self
            .lock()
            .entries
            .values()
            .map(|e| {
                (
                    e.seq,
                    Queued {
                        batch: e.batch,
                        reservation: e.reservation.clone(),
                    },
                )
            })
            .collect();
        all.sort_by_key(|(seq, _)| *seq);
        Ok(all.into_iter().map(|(_, q)| q).collect())
    }

    fn depth(&self) -> usize {
        self.lock().entries.len()
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}
