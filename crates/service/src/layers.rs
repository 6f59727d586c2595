//! The filtering layers' counts, listed once.
//!
//! `Layer` names every outcome a buy can have on its way through the layers; everything else
//! is derived from it: the per-sale counts the admin view shows (`LayerStats`, a counter array),
//! their JSON keys and their labels on the dashboard, the OpenAPI schema of `layers`, and the
//! Prometheus counters (`flashsale_requests_total{layer, outcome}`). `Counters::record` adds to
//! both the sale's count and the node's Prometheus counter in one call, so the two never
//! disagree about what was counted.
//!
//! `NodeOutcome` lists what is counted per node only (not per sale): outcomes met before a sale
//! is known, and events that are not buys (payments, expiries, reconciliation, writes).

use metrics::{Counter, Histogram};
use serde::ser::{Serialize, SerializeMap, Serializer};
use std::sync::atomic::{AtomicU64, Ordering};

/// One outcome of the filtering layers, counted per sale and (where it is a request's answer)
/// per node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// A buy in a sale with a line, without a valid admission for its buyer.
    NotYourTurn,
    /// The per-client limiter refused.
    ClientRateLimited,
    /// A repeat inside the buyer's window got the answer kept there.
    WindowHit,
    /// The sold-out flag answered without reaching the ledger.
    SoldOutShortCircuit,
    /// The per-buyer limiter refused.
    BuyerRateLimited,
    /// The sale's admission gate refused.
    SaleRateLimited,
    /// Load shedding refused as the queue filled.
    Shed,
    /// A buy reached the stock ledger (not an answer: the ledger's outcomes follow).
    StockCall,
    /// A call to the stock ledger: one per batch. Scaled out, one Redis round trip.
    LedgerCall,
    /// The ledger took a unit.
    Reserved,
    /// A repeat of a buy already reserved (answered with its 202).
    Duplicate,
    /// The ledger had no unit left.
    SoldOut,
    /// The buyer's per-sale limit was reached.
    LimitReached,
    /// The durable queue was full.
    QueueFull,
    /// The reservation is durable (the buyer heard 202).
    Queued,
}

impl Layer {
    /// Every layer, in the order the admin view, the schema and the dashboard list them.
    pub const ALL: [Layer; 15] = [
        Layer::NotYourTurn,
        Layer::ClientRateLimited,
        Layer::WindowHit,
        Layer::SoldOutShortCircuit,
        Layer::BuyerRateLimited,
        Layer::SaleRateLimited,
        Layer::Shed,
        Layer::StockCall,
        Layer::LedgerCall,
        Layer::Reserved,
        Layer::Duplicate,
        Layer::SoldOut,
        Layer::LimitReached,
        Layer::QueueFull,
        Layer::Queued,
    ];
    pub const COUNT: usize = Self::ALL.len();

    fn index(self) -> usize {
        self as usize
    }

    /// The key in the admin view's `layers` object (a contract: clients read these).
    pub const fn key(self) -> &'static str {
        match self {
            Layer::NotYourTurn => "not_your_turn",
            Layer::ClientRateLimited => "client_rate_limited",
            Layer::WindowHit => "window_hits",
            Layer::SoldOutShortCircuit => "sold_out_short_circuit",
            Layer::BuyerRateLimited => "buyer_rate_limited",
            Layer::SaleRateLimited => "sale_rate_limited",
            Layer::Shed => "shed",
            Layer::StockCall => "stock_calls",
            Layer::LedgerCall => "ledger_calls",
            Layer::Reserved => "reserved",
            Layer::Duplicate => "duplicates",
            Layer::SoldOut => "sold_out",
            Layer::LimitReached => "limit_reached",
            Layer::QueueFull => "queue_full",
            Layer::Queued => "queued",
        }
    }

    /// What the dashboard calls it.
    pub const fn label(self) -> &'static str {
        match self {
            Layer::NotYourTurn => "line (not your turn)",
            Layer::ClientRateLimited => "client limiter",
            Layer::WindowHit => "buyer window (repeats)",
            Layer::SoldOutShortCircuit => "sold-out flag",
            Layer::BuyerRateLimited => "buyer limiter",
            Layer::SaleRateLimited => "sale admission",
            Layer::Shed => "load shedding",
            Layer::StockCall => "reached the ledger",
            Layer::LedgerCall => "ledger calls (batches)",
            Layer::Reserved => "reserved (202)",
            Layer::Duplicate => "duplicates",
            Layer::SoldOut => "sold out at the ledger",
            Layer::LimitReached => "limit reached",
            Layer::QueueFull => "queue full",
            Layer::Queued => "made durable",
        }
    }

    /// The `(layer, outcome)` labels of its Prometheus counter; `None` for the two that count
    /// ledger traffic rather than answers (`flashsale_batch_buys` shows those per node).
    pub const fn metric(self) -> Option<(&'static str, &'static str)> {
        Some(match self {
            Layer::NotYourTurn => ("line", "not_your_turn"),
            Layer::ClientRateLimited => ("client_limiter", "rate_limited"),
            Layer::WindowHit => ("buyer_window", "hit"),
            Layer::SoldOutShortCircuit => ("sold_out_flag", "sold_out"),
            Layer::BuyerRateLimited => ("buyer_limiter", "rate_limited"),
            Layer::SaleRateLimited => ("sale_admission", "rate_limited"),
            Layer::Shed => ("load_shedding", "overloaded"),
            Layer::StockCall | Layer::LedgerCall => return None,
            Layer::Reserved => ("reservation", "reserved"),
            Layer::Duplicate => ("reservation", "duplicate"),
            Layer::SoldOut => ("reservation", "sold_out"),
            Layer::LimitReached => ("reservation", "limit_reached"),
            Layer::QueueFull => ("queue", "full"),
            Layer::Queued => ("queue", "queued"),
        })
    }
}

/// An outcome counted per node only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeOutcome {
    /// A buy to a path that names no sale, or with the wrong buy token.
    UnknownPath,
    /// A buy outside the sale's window.
    NotLive,
    /// A retry found its first attempt still in flight.
    InProgress,
    /// The durable queue refused or failed a batch.
    QueueFailed,
    /// A message no writer could read was set aside in the dead-letter stream.
    QueueDeadLettered,
    /// A writer wrote an order.
    Written,
    /// An order was paid.
    Paid,
    /// The reaper expired an order.
    Expired,
    /// The reconciler found a pending reservation durable and confirmed it.
    ReconciledConfirmed,
    /// The reconciler found a pending reservation not durable and gave its unit back.
    ReconciledReleased,
}

impl NodeOutcome {
    pub const ALL: [NodeOutcome; 10] = [
        NodeOutcome::UnknownPath,
        NodeOutcome::NotLive,
        NodeOutcome::InProgress,
        NodeOutcome::QueueFailed,
        NodeOutcome::QueueDeadLettered,
        NodeOutcome::Written,
        NodeOutcome::Paid,
        NodeOutcome::Expired,
        NodeOutcome::ReconciledConfirmed,
        NodeOutcome::ReconciledReleased,
    ];

    /// The `(layer, outcome)` labels of its Prometheus counter.
    pub const fn metric(self) -> (&'static str, &'static str) {
        match self {
            NodeOutcome::UnknownPath => ("buy_path", "unknown"),
            NodeOutcome::NotLive => ("phase", "not_live"),
            NodeOutcome::InProgress => ("reservation", "in_progress"),
            NodeOutcome::QueueFailed => ("queue", "failed"),
            NodeOutcome::QueueDeadLettered => ("queue", "dead_lettered"),
            NodeOutcome::Written => ("writer", "written"),
            NodeOutcome::Paid => ("payment", "paid"),
            NodeOutcome::Expired => ("reaper", "expired"),
            NodeOutcome::ReconciledConfirmed => ("reconciler", "confirmed"),
            NodeOutcome::ReconciledReleased => ("reconciler", "released"),
        }
    }

    /// Its Prometheus counter, resolved against the installed recorder. For a component that
    /// counts one outcome (a writer, the NATS dead-letter copier): resolve it once, then add.
    pub fn counter(self) -> Counter {
        let (layer, outcome) = self.metric();
        requests_counter(layer, outcome)
    }
}

fn requests_counter(layer: &'static str, outcome: &'static str) -> Counter {
    metrics::counter!("flashsale_requests_total", "layer" => layer, "outcome" => outcome)
}

/// What each layer did for one sale: exact per sale (the Prometheus counters are per node).
#[derive(Debug, Default)]
pub struct LayerStats {
    counts: [AtomicU64; Layer::COUNT],
}

impl LayerStats {
    pub fn add(&self, layer: Layer, n: u64) {
        self.counts[layer.index()].fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LayerCounts {
        LayerCounts {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
        }
    }
}

/// A snapshot of `LayerStats`. Serializes as an object with one key per layer, in `Layer::ALL`
/// order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerCounts {
    counts: [u64; Layer::COUNT],
}

impl LayerCounts {
    pub fn get(&self, layer: Layer) -> u64 {
        self.counts[layer.index()]
    }

    /// Sets one count (for tests and for building a view by hand).
    pub fn with(mut self, layer: Layer, count: u64) -> Self {
        self.counts[layer.index()] = count;
        self
    }

    /// Every layer with its count.
    pub fn iter(&self) -> impl Iterator<Item = (Layer, u64)> + '_ {
        Layer::ALL.iter().map(|&layer| (layer, self.get(layer)))
    }
}

impl Serialize for LayerCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(Layer::COUNT))?;
        for (layer, count) in self.iter() {
            map.serialize_entry(layer.key(), &count)?;
        }
        map.end()
    }
}

/// A node's counters: each layer's Prometheus counter and each node outcome's, resolved once
/// so the hot path only adds.
#[derive(Clone)]
pub struct Counters {
    layers: [Option<Counter>; Layer::COUNT],
    node: [Counter; NodeOutcome::ALL.len()],
    /// Buys per batch that reached the stock ledger (1 for every buy in the classic design).
    pub batch_buys: Histogram,
}

impl Counters {
    /// Resolves the counters against the installed recorder (install it first).
    pub fn register() -> Self {
        Self {
            layers: Layer::ALL.map(|layer| {
                layer
                    .metric()
                    .map(|(name, outcome)| requests_counter(name, outcome))
            }),
            node: NodeOutcome::ALL.map(NodeOutcome::counter),
            batch_buys: metrics::histogram!("flashsale_batch_buys"),
        }
    }

    /// Counts `n` of `layer` for the sale whose stats these are, and on the node.
    pub fn record(&self, stats: &LayerStats, layer: Layer, n: u64) {
        stats.add(layer, n);
        if let Some(counter) = &self.layers[layer.index()] {
            counter.increment(n);
        }
    }

    /// Counts one node outcome.
    pub fn node(&self, outcome: NodeOutcome, n: u64) {
        self.node[outcome as usize].increment(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_list_is_complete_and_in_declaration_order() {
        // `index` and the arrays rely on ALL being the enum in declaration order.
        for (i, layer) in Layer::ALL.iter().enumerate() {
            assert_eq!(layer.index(), i, "{layer:?}");
        }
        for (i, outcome) in NodeOutcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, i, "{outcome:?}");
        }
    }

    #[test]
    fn the_keys_are_the_admin_views_contract() {
        // Clients read these keys; renaming one is a breaking change.
        let keys: Vec<&str> = Layer::ALL.iter().map(|l| l.key()).collect();
        assert_eq!(
            keys,
            [
                "not_your_turn",
                "client_rate_limited",
                "window_hits",
                "sold_out_short_circuit",
                "buyer_rate_limited",
                "sale_rate_limited",
                "shed",
                "stock_calls",
                "ledger_calls",
                "reserved",
                "duplicates",
                "sold_out",
                "limit_reached",
                "queue_full",
                "queued",
            ]
        );
    }

    #[test]
    fn names_are_unique() {
        let keys: HashSet<_> = Layer::ALL.iter().map(|l| l.key()).collect();
        assert_eq!(keys.len(), Layer::COUNT);
        let metrics: Vec<_> = Layer::ALL
            .iter()
            .filter_map(|l| l.metric())
            .chain(NodeOutcome::ALL.iter().map(|o| o.metric()))
            .collect();
        let unique: HashSet<_> = metrics.iter().collect();
        assert_eq!(unique.len(), metrics.len(), "two outcomes share a counter");
    }

    #[test]
    fn counts_serialize_by_key_in_order() {
        let stats = LayerStats::default();
        stats.add(Layer::WindowHit, 3);
        stats.add(Layer::Queued, 2);
        stats.add(Layer::WindowHit, 1);
        let text = serde_json::to_string(&stats.snapshot()).unwrap();
        let positions: Vec<usize> = Layer::ALL
            .iter()
            .map(|l| text.find(&format!("\"{}\":", l.key())).unwrap())
            .collect();
        assert!(positions.is_sorted(), "{text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json.as_object().unwrap().len(), Layer::COUNT);
        assert_eq!(json["window_hits"], 4);
        assert_eq!(json["queued"], 2);
        assert_eq!(json["reserved"], 0);
    }
}
