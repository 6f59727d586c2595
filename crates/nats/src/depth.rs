//! `depth()` without asking the server: a gauge this process moves by its own enqueues and
//! acks, reset from the stream's message count by a background task when no local change
//! overlaps (see the crate docs).

use crate::Shared;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Weak};
use std::time::Duration;

/// The queue's count of held reservations, see the crate docs.
#[derive(Debug, Default)]
pub(crate) struct DepthGauge {
    /// (value, generation): the generation moves with every local change, so a refresh can
    /// tell whether one happened while it asked the server.
    state: Mutex<(i64, u64)>,
    /// Local changes sent to the server and not yet counted.
    in_flight: AtomicUsize,
}

/// What this process has seen of batch sizes, to turn a message count into reservations.
#[derive(Debug, Default)]
pub(crate) struct BatchSizes {
    messages: AtomicU64,
    reservations: AtomicU64,
}

impl BatchSizes {
    pub(crate) fn saw(&self, reservations: usize) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.reservations
            .fetch_add(reservations as u64, Ordering::Relaxed);
    }

    /// Reservations per message at the sizes seen so far (1 before any).
    pub(crate) fn per_message(&self) -> f64 {
        let seen = self.messages.load(Ordering::Relaxed);
        if seen == 0 {
            return 1.0;
        }
        self.reservations.load(Ordering::Relaxed) as f64 / seen as f64
    }

    /// Reservations in `messages` messages, at the sizes seen so far.
    pub(crate) fn reservations_in(&self, messages: u64) -> u64 {
        (messages as f64 * self.per_message()).round() as u64
    }
}

/// Marks a local change in flight for as long as it lives.
pub(crate) struct InFlight<'a>(&'a DepthGauge);

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

    pub(crate) fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self)
    }

    pub(crate) fn add(&self, delta: i64) {
        let mut state = self.state();
        state.0 += delta;
        state.1 += 1;
    }

    pub(crate) fn get(&self) -> usize {
        usize::try_from(self.state().0).unwrap_or(0)
    }

    /// The generation to compare against after asking the server, or None if a local change
    /// is in flight now (the server's answer could not be told apart from it).
    pub(crate) fn refresh_start(&self) -> Option<u64> {
        let state = self.state();
        (self.in_flight.load(Ordering::SeqCst) == 0).then_some(state.1)
    }

    pub(crate) fn refresh_finish(&self, started: u64, server_count: u64) {
        let mut state = self.state();
        if self.in_flight.load(Ordering::SeqCst) == 0 && state.1 == started {
            state.0 = i64::try_from(server_count).unwrap_or(i64::MAX);
        }
    }
}

impl Shared {
    pub(crate) async fn refresh_depth(&self) {
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
}

pub(crate) fn spawn_depth_refresh(shared: Weak<Shared>, every: Duration) {
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
