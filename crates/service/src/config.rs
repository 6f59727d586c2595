//! The service's own configuration: what a `Shop` needs to know, and nothing it does not.
//! Each type is one section of the binary's config file, deserialized directly (the key names
//! are the field names); `config/default.toml` holds the defaults, and a test in the binary
//! fails if a `Default` here disagrees with it.

use crate::filters::FilterConfig;
use crate::writers::WriterConfig;
use serde::{Deserialize, Serialize};
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};

/// `[reaper]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaperConfig {
    /// Pause between sweeps for expired orders.
    pub interval_ms: NonZeroU64,
    /// Most orders expired in one store call.
    pub batch_max: NonZeroUsize,
}

impl Default for ReaperConfig {
    fn default() -> Self {
        Self {
            interval_ms: NonZeroU64::new(1000).expect("not zero"),
            batch_max: NonZeroUsize::new(500).expect("not zero"),
        }
    }
}

/// How buys that reach the stock ledger are made durable.
/// `reservations.design`: `"batched"` or `"classic"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Design {
    /// Concurrent buys share one stock-ledger call and one durable write (a group commit):
    /// while a batch is in flight the next one gathers, so batches grow with the load and a
    /// lone buy waits for nobody. Scaled out, the stock ledger also sells from leases.
    Batched,
    /// One stock-ledger call, one enqueue and one confirm per buy: the design most flash-sale
    /// systems use, kept as the baseline the benchmark compares against.
    Classic,
}

/// `[reservations]`: the reservation layer's pace, the design and, when batched, its limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationConfig {
    pub design: Design,
    /// Most buys in one batch (one ledger call, one durable write).
    pub batch_max: NonZeroUsize,
    /// Batches in flight at once on this node; more buys wait and join the next batch.
    pub batches_in_flight_max: NonZeroUsize,
    /// Scaled out and batched only: the most units one node's stock lease sets aside. The
    /// shop does not read it; the binary hands it to the stock ledger (`flashsale-redis`'s
    /// `LeaseConfig`), which is where leases live, while the file keeps it with the design
    /// it belongs to.
    pub lease_units_max: NonZeroU32,
    /// Scaled out and batched only: how long a lease its node stops renewing stays set aside.
    pub lease_ttl_ms: NonZeroU64,
}

impl Default for ReservationConfig {
    fn default() -> Self {
        Self {
            design: Design::Batched,
            batch_max: NonZeroUsize::new(256).expect("not zero"),
            batches_in_flight_max: NonZeroUsize::new(2).expect("not zero"),
            lease_units_max: NonZeroU32::new(64).expect("not zero"),
            lease_ttl_ms: NonZeroU64::new(3000).expect("not zero"),
        }
    }
}

/// Everything the service needs to know, and nothing it does not.
#[derive(Clone)]
pub struct ShopConfig {
    /// Secret for buy-path tokens.
    pub buy_path_secret: Vec<u8>,
    pub reservations: ReservationConfig,
    pub writers: WriterConfig,
    pub reaper: ReaperConfig,
    pub filters: FilterConfig,
    /// Longest graceful shutdown waits for the queue to drain.
    pub drain_timeout_ms: u64,
    /// Set when the backends are shared by several nodes (Redis, NATS, PostgreSQL); `None` for
    /// the embedded, single-node default.
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: how a node keeps in step with the others on shared backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// How often this node re-reads the sales from the order store (admin changes made on
    /// another node) and checks each live sale's stock ledger.
    pub sale_sync_ms: NonZeroU64,
    /// How long to wait, after finding a sale's ledger missing (Redis restarted empty), before
    /// rebuilding it from the store and the queue. Longer than any in-flight enqueue can take,
    /// so every reservation acknowledged before the loss is in the queue by then. For the same
    /// reason, also how long a reservation may stay pending before the reconciler settles it.
    pub rebuild_fence_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            sale_sync_ms: NonZeroU64::new(1000).expect("not zero"),
            rebuild_fence_ms: 10_000,
        }
    }
}
