//! The Redis stock ledger's settings: how it connects, names its keys and sizes its leases.

use serde::{Deserialize, Serialize};
use std::num::NonZeroU64;

/// `[redis]`: how the Redis stock ledger connects and names its keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisStockConfig {
    /// Goes into every key (`{fs:<key_prefix>:<sale>}:...`), so deployments and tests sharing
    /// one Redis never see each other's sales. No braces: they would break the hash tag.
    pub key_prefix: String,
    /// How long one command may wait for its reply. Past it the outcome is unknown: the
    /// script may have run.
    pub response_timeout_ms: NonZeroU64,
    /// How long connecting (and reconnecting) may take.
    pub connect_timeout_ms: NonZeroU64,
    /// Stock leases for this node (the batched design); `None` takes every unit from the
    /// sale's counter (the classic design). Not a key of `[redis]`: the binary sets it from
    /// `reservations.lease_*` and the design.
    #[serde(skip)]
    pub lease: Option<LeaseConfig>,
}

impl Default for RedisStockConfig {
    fn default() -> Self {
        Self {
            key_prefix: "flashsale".to_owned(),
            response_timeout_ms: NonZeroU64::new(2_000).expect("not zero"),
            connect_timeout_ms: NonZeroU64::new(2_000).expect("not zero"),
            lease: None,
        }
    }
}

/// A node's stock leases (see the crate docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseConfig {
    /// Most units one lease sets aside; a lease takes at most an eighth of what is left.
    pub units_max: u32,
    /// A lease not renewed for this long (its node stopped selling, or died) goes back on sale.
    /// Each batch renews its node's lease.
    pub ttl_ms: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            units_max: 64,
            ttl_ms: 3_000,
        }
    }
}
