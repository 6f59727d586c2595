//! The JetStream queue's settings: where it connects, what it creates and its limits.

use serde::{Deserialize, Serialize};
use std::num::{NonZeroU64, NonZeroUsize};

/// `[nats]`: how the JetStream queue connects and what it creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetStreamQueueConfig {
    /// The stream, one per deployment; its subjects are `<stream>.res.<order id>`. Created if
    /// missing, its limits updated if present.
    pub stream: String,
    /// The durable pull consumer every node's order writers share.
    pub consumer: String,
    /// Most reservations held (queued or delivered, not yet acked) before `enqueue` answers
    /// `Full`. The stream's message limit. Not a key of `[nats]`: every queue's capacity is
    /// `queue.capacity_reservations`, which the binary sets here.
    #[serde(skip)]
    pub capacity_reservations: usize,
    /// How long a consumer may hold a delivered reservation before it is delivered again.
    /// Not a key of `[nats]`: the binary sets it from `queue.ack_deadline_ms`.
    #[serde(skip)]
    pub ack_deadline_ms: u64,
    /// Stream replicas (1 for a single server; 3 in a cluster for durability).
    pub replicas: NonZeroUsize,
    /// How long the server remembers a message id to drop a duplicate publish.
    pub duplicate_window_ms: NonZeroU64,
    /// How often `depth()` is reset from the server's count.
    pub depth_refresh_ms: NonZeroU64,
    /// How long a JetStream request (a publish ack, an ack's confirmation) may take. Past it the
    /// outcome is unknown.
    pub request_timeout_ms: NonZeroU64,
    /// How long connecting may take.
    pub connect_timeout_ms: NonZeroU64,
}

impl Default for JetStreamQueueConfig {
    fn default() -> Self {
        Self {
            stream: "FLASHSALE_RESERVATIONS".to_owned(),
            consumer: "order-writers".to_owned(),
            capacity_reservations: 100_000,
            ack_deadline_ms: 30_000,
            replicas: NonZeroUsize::MIN,
            duplicate_window_ms: NonZeroU64::new(120_000).expect("not zero"),
            depth_refresh_ms: NonZeroU64::new(1_000).expect("not zero"),
            request_timeout_ms: NonZeroU64::new(5_000).expect("not zero"),
            connect_timeout_ms: NonZeroU64::new(2_000).expect("not zero"),
        }
    }
}
