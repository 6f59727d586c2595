//! The per-sale micro-cache for reads: the status answer is rendered at most once per
//! interval per sale and the sale page once per sale version, then served from memory to
//! everyone. Neither touches a backend.

use bytes::Bytes;
use flashsale_core::SaleId;
use flashsale_service::ttl_cache::TtlCache;
use std::time::Duration;

/// Most sales whose rendered answers are kept.
const SALES_CACHED_MAX: u64 = 10_000;

pub struct ReadCache {
    /// `None` when the interval is 0 (render every time).
    status: Option<TtlCache<SaleId, Bytes>>,
    pages: TtlCache<(SaleId, u32), Bytes>,
}

impl ReadCache {
    pub fn new(status_cache_ms: u64) -> Self {
        let status = (status_cache_ms > 0).then(|| {
            TtlCache::new(
                Some(Duration::from_millis(status_cache_ms)),
                SALES_CACHED_MAX,
            )
        });
        Self {
            status,
            pages: TtlCache::new(None, SALES_CACHED_MAX),
        }
    }

    /// The status body: cached, or rendered by `render` (concurrent misses render once).
    pub fn status(&self, sale: SaleId, render: impl FnOnce() -> Option<Bytes>) -> Option<Bytes> {
        match &self.status {
            Some(cache) => cache.get_or_insert_with(&sale, render),
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
        self.pages
            .get_or_insert_with(&(sale, version), || Some(render()))
            .unwrap_or_default()
    }
}
