//! The embedded backends' settings: the queue's storage and limits.

use serde::{Deserialize, Serialize};

/// Which storage the embedded queue keeps its reservations in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueEngine {
    /// The reservation log: append-only segments, one append and one sync per group
    /// (`LogQueue`, in `<data_dir>/queue/`).
    #[default]
    Log,
    /// A redb file, the engine before the log (`RedbQueue`, `<data_dir>/queue.redb`). Kept for
    /// comparison; a data directory it wrote is imported into the log at start.
    Redb,
}

/// `[queue]`: limits of the embedded queue (the JetStream queue takes its capacity and ack
/// deadline from the same section).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Where the embedded default keeps its queue (`log` or `redb`).
    #[serde(default)]
    pub engine: QueueEngine,
    /// Most reservations held (queued or delivered, not yet acked) before `enqueue` answers
    /// `Full`.
    pub capacity_reservations: usize,
    /// Most requests (enqueues and acks) written in one commit, so one sync.
    pub commit_batch_max: usize,
    /// Most requests waiting for the committer; enqueuers beyond it wait for room.
    pub commit_requests_waiting_max: usize,
    /// How long a consumer may hold a delivered reservation before it is delivered again.
    pub ack_deadline_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            engine: QueueEngine::default(),
            capacity_reservations: 100_000,
            commit_batch_max: 2_048,
            commit_requests_waiting_max: 8_192,
            ack_deadline_ms: 30_000,
        }
    }
}
