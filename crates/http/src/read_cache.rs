//! The per-sale micro-cache for reads: the status answer is rendered at most once per
//! interval per sale and the sale page once per sale version, then served from memory to
//! everyone. Neither touches a backend.

use bytes::Bytes;
use flashsale_core::SaleId;
use moka::sync::Cache;
use std::time::Duration;

/// Most sales whose rendered answers are kept.
const SALES_CACHED_MAX: u64 = 10_000;

pub struct ReadCache {
    /// `None` when the interval is 0 (render every time).
    status: Option<Cache<SaleId, Bytes>>,
    pages: Cache<(SaleId, u32), Bytes>,
}

impl ReadCache {
    pub fn new(status_cache_ms: u64) -> Self {
        let status = (status_cache_ms > 0).then(|| {
            Cache::builder()
                .max_capacity(SALES_CACHED_MAX)
                .time_to_live(Duration::from_millis(status_cache_ms))
                .build()
        });
        Self {
            status,
            pages: Cache::builder().max_capacity(SALES_CACHED_MAX).build(),
        }
    }

    /// The status body: cached, or rendered by `render` (concurrent misses render once).
    pub fn status(&self, sale: SaleId, render: impl FnOnce() -> Option<Bytes>) -> Option<Bytes> {
        match &self.status {
            Some(cache) => cache.optionally_get_with(sale, render),
            None => render(),
        }
    }

    /// Forgets a sale's status so an admin change shows at once on this node.
    pub fn forget_status(&self, sale: SaleId) {
        if let Some(cache) = &self.status {
            cache.invalidate(&sale);
        }
    }

    /// The sale page of one version; a version's page never changes.
    pub fn page(&self, sale: SaleId, version: u32, render: impl FnOnce() -> Bytes) -> Bytes {
        self.pages.get_with((sale, version), render)
    }
}
