//! Prometheus metrics: the recorder (one per process) and the request-latency histograms for
//! the buy and status routes (recorded by the router, rendered by `GET /metrics`). Counters
//! per filtering layer are recorded by the service (`flashsale_requests_total{layer, outcome}`).

use metrics::Histogram;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Bucket bounds of the latency histograms, in seconds: 100 µs to 5 s.
const LATENCY_BUCKETS_SECS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// How often histogram buffers are folded into buckets; without it they grow between scrapes.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle. If another
/// recorder was installed first, metrics go there and `/metrics` shows only what this
/// handle sees (nothing); that is logged once.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("flashsale_request_duration_seconds".into()),
                    &LATENCY_BUCKETS_SECS,
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics will be empty");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "flashsale_requests_total",
        "Buy-path requests by the filtering layer that answered them and its outcome; writer/written counts orders written, payment/paid and reaper/expired count those events."
    );
    metrics::describe_histogram!(
        "flashsale_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time from request to response, by route (buy, status, other)."
    );
    metrics::describe_gauge!(
        "flashsale_queue_depth",
        "Reservations in the durable queue, not yet written as orders."
    );
    metrics::describe_gauge!("flashsale_writers", "Order writers running on this node.");
    metrics::describe_gauge!(
        "flashsale_writers_giving_way",
        "Order writers pausing right now so a hot buy path has the cores (writers.give_way_ms)."
    );
    metrics::describe_gauge!(
        "flashsale_writer_lag_seconds",
        metrics::Unit::Seconds,
        "Age of the oldest reservation in the batch most recently written."
    );
}

/// Latency histograms, resolved once.
pub struct RouteHistograms {
    pub(crate) buy: Histogram,
    pub(crate) status: Histogram,
    pub(crate) other: Histogram,
}

impl RouteHistograms {
    pub fn register() -> Self {
        let route = |name: &'static str| metrics::histogram!("flashsale_request_duration_seconds", "route" => name);
        Self {
            buy: route("buy"),
            status: route("status"),
            other: route("other"),
        }
    }
}
