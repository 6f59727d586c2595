//! The embedded backends' settings: the queue file's limits.

use serde::{Deserialize, Serialize};

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
