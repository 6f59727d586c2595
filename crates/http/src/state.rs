//! What every handler shares: the shop, the credentials, the limits, and the per-process
//! parts of the edge (latency histograms, the read micro-cache, the event-stream cap).

use crate::RequestLimits;
use crate::metrics::RouteHistograms;
use crate::read_cache::ReadCache;
use flashsale_core::tokens::BuyerTokens;
use flashsale_service::Shop;
use secrecy::SecretString;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// What the handlers share.
pub struct AppState {
    pub shop: Arc<Shop>,
    pub buyer_tokens: BuyerTokens,
    pub admin_token: SecretString,
    /// Whether `POST /api/dev/buyer-token` issues tokens (demos and tests only).
    pub dev_login: bool,
    pub limits: RequestLimits,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub(crate) histograms: RouteHistograms,
    pub(crate) read_cache: ReadCache,
    pub(crate) event_streams: EventStreams,
}

impl AppState {
    /// Installs the metrics recorder (once per process) and builds the read micro-cache.
    /// `status_cache_ms` is how long one rendered status answer is reused (0: never).
    pub fn new(
        shop: Arc<Shop>,
        buyer_tokens: BuyerTokens,
        admin_token: SecretString,
        dev_login: bool,
        limits: RequestLimits,
        status_cache_ms: u64,
    ) -> Self {
        let handle = crate::metrics::install();
        let event_streams = EventStreams::new(limits.event_streams_max.get());
        Self {
            shop,
            buyer_tokens,
            admin_token,
            dev_login,
            limits,
            metrics: handle,
            histograms: RouteHistograms::register(),
            read_cache: ReadCache::new(status_cache_ms),
            event_streams,
        }
    }
}

/// The cap on open event streams: a stream holds one permit for as long as it runs.
pub struct EventStreams {
    pub(crate) permits: Arc<Semaphore>,
}

impl EventStreams {
    pub fn new(streams_max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(streams_max)),
        }
    }
}
