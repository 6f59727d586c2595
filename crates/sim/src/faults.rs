//! Fault injection around the port models, in the manner of `Unreliable*` wrappers: each call
//! may be delayed, refused (determinate: nothing happened), lost before it arrived or lost
//! after it took effect (both indeterminate: the caller cannot tell), or never answered
//! because the node that made it died (fenced: the call hangs forever, like a dead process).

use crate::rng::SharedRng;
use crate::trace::Trace;
use async_trait::async_trait;
use flashsale_core::{
    BatchId, BuyerId, Order, OrderId, PaymentId, Reservation, ReserveOutcome, ReturnOutcome, Sale,
    SaleId, Timestamp,
};
use flashsale_service::{
    BackendError, BackendResult, Buy, Enqueued, Holding, LedgerEntry, OpenMode, Opened,
    OrderCounts, OrderStore, PayOutcome, PendingReservation, Queued, ReservationQueue, StockLedger,
    VoidOutcome,
};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Fault rates of one port, in percent of calls, drawn per seed.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultRates {
    /// A call is delayed (before it takes effect, and separately, its reply).
    pub delay_percent: u32,
    /// Refused: surely nothing happened.
    pub refuse_percent: u32,
    /// The request was lost: nothing happened, but the caller hears "unknown" after a timeout.
    pub lost_request_percent: u32,
    /// The reply was lost: it happened, but the caller hears "unknown" after a timeout.
    pub lost_reply_percent: u32,
}

/// Which port a wrapper guards (each has its own rates).
#[derive(Debug, Clone, Copy)]
pub enum Port {
    Stock,
    Queue,
    Store,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    None,
    Refuse,
    LostRequest,
    LostReply,
}

/// The fault plan of a run, shared by every wrapper of every node.
#[derive(Debug)]
pub struct Faults {
    rng: SharedRng,
    trace: Trace,
    stock: FaultRates,
    queue: FaultRates,
    store: FaultRates,
    /// Longest injected delay.
    delay_ms_max: u64,
    /// How long a lost request or reply keeps the caller waiting before "unknown".
    timeout_ms: u64,
    enabled: AtomicBool,
    /// The node whose calls are served; calls of any other node hang forever.
    alive_node: AtomicU64,
    injected: AtomicU64,
}

/// No node is alive (between a crash and the next start).
const NO_NODE: u64 = u64::MAX;

impl Faults {
    pub fn new(
        rng: SharedRng,
        trace: Trace,
        rates: [FaultRates; 3],
        delay_ms_max: u64,
        timeout_ms: u64,
    ) -> Self {
        let [stock, queue, store] = rates;
        Self {
            rng,
            trace,
            stock,
            queue,
            store,
            delay_ms_max,
            timeout_ms,
            enabled: AtomicBool::new(true),
            alive_node: AtomicU64::new(NO_NODE),
            injected: AtomicU64::new(0),
        }
    }

    /// Turns every fault off (the convergence phase). Fencing of dead nodes stays.
    pub fn disable(&self) {
        self.enabled.store(false, Ordering::Relaxed);
    }

    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// The node dies: its calls in flight and to come never answer.
    pub fn kill_nodes(&self) {
        self.alive_node.store(NO_NODE, Ordering::Relaxed);
    }

    pub fn set_alive(&self, node: u64) {
        self.alive_node.store(node, Ordering::Relaxed);
    }

    /// Hangs forever if `node` is dead: a dead process never hears back.
    async fn fence(&self, node: u64) {
        if self.alive_node.load(Ordering::Relaxed) != node {
            std::future::pending::<()>().await;
        }
    }

    /// A seeded pause: a few yields (lets ready tasks run in between) or a short sleep on the
    /// paused clock (lets timers fire in between).
    async fn maybe_pause(&self, rates: &FaultRates) {
        let pause = self.rng.with(|rng| {
            if !rng.chance(rates.delay_percent) {
                None
            } else if rng.chance(50) {
                Some(Err(rng.between(1, 3)))
            } else {
                Some(Ok(rng.between(1, self.delay_ms_max)))
            }
        });
        match pause {
            None => {}
            Some(Err(yields)) => {
                for _ in 0..yields {
                    tokio::task::yield_now().await;
                }
            }
            Some(Ok(ms)) => tokio::time::sleep(Duration::from_millis(ms)).await,
        }
    }

    fn draw(&self, rates: &FaultRates) -> Kind {
        let roll = self.rng.below(100) as u32;
        let refuse = rates.refuse_percent;
        let lost_request = refuse + rates.lost_request_percent;
        let lost_reply = lost_request + rates.lost_reply_percent;
        if roll < refuse {
            Kind::Refuse
        } else if roll < lost_request {
            Kind::LostRequest
        } else if roll < lost_reply {
            Kind::LostReply
        } else {
            Kind::None
        }
    }

    /// Runs `effect` (one call on a model) as the node `node` would see it through a faulty
    /// network.
    async fn call<T, F, Fut>(
        &self,
        node: u64,
        port: Port,
        op: &'static str,
        effect: F,
    ) -> BackendResult<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = BackendResult<T>>,
    {
        self.fence(node).await;
        if !self.enabled.load(Ordering::Relaxed) {
            let result = effect().await;
            self.fence(node).await;
            return result;
        }
        let rates = match port {
            Port::Stock => self.stock,
            Port::Queue => self.queue,
            Port::Store => self.store,
        };
        let backend = match port {
            Port::Stock => "simulated stock",
            Port::Queue => "simulated queue",
            Port::Store => "simulated order store",
        };
        let kind = self.draw(&rates);
        if kind != Kind::None {
            self.injected.fetch_add(1, Ordering::Relaxed);
            self.trace
                .push(|| format!("  fault n{node} {op}: {kind:?}"));
        }
        self.maybe_pause(&rates).await;
        self.fence(node).await;
        let timeout = Duration::from_millis(self.timeout_ms);
        let result = match kind {
            Kind::None => effect().await,
            Kind::Refuse => Err(BackendError::determinate(backend, format!("{op} refused"))),
            Kind::LostRequest => {
                tokio::time::sleep(timeout).await;
                Err(BackendError::indeterminate(
                    backend,
                    format!("{op} timed out"),
                ))
            }
            Kind::LostReply => {
                // Whatever it answered, the caller never hears it.
                let _answer = effect().await;
                self.fence(node).await;
                tokio::time::sleep(timeout).await;
                Err(BackendError::indeterminate(
                    backend,
                    format!("{op} timed out"),
                ))
            }
        };
        // The reply may be late, and a node that died meanwhile never hears it.
        self.fence(node).await;
        self.maybe_pause(&rates).await;
        self.fence(node).await;
        result
    }
}

/// A stock ledger as one node reaches it.
pub struct FaultyStock {
    pub inner: Arc<dyn StockLedger>,
    pub faults: Arc<Faults>,
    pub node: u64,
}

#[async_trait]
impl StockLedger for FaultyStock {
    async fn open_sale(
        &self,
        sale: SaleId,
        stock_total: u32,
        per_buyer_limit: u32,
        holdings: Vec<Holding>,
        mode: OpenMode,
    ) -> BackendResult<Opened> {
        self.faults
            .call(self.node, Port::Stock, "stock.open_sale", || {
                self.inner
                    .open_sale(sale, stock_total, per_buyer_limit, holdings, mode)
            })
            .await
    }

    async fn reserve(
        &self,
        sale: SaleId,
        batch: BatchId,
        buys: &[Buy],
    ) -> BackendResult<Vec<ReserveOutcome>> {
        self.faults
            .call(self.node, Port::Stock, "stock.reserve", || {
                self.inner.reserve(sale, batch, buys)
            })
            .await
    }

    async fn confirm(&self, sale: SaleId, batch: BatchId, orders: &[OrderId]) -> BackendResult<()> {
        self.faults
            .call(self.node, Port::Stock, "stock.confirm", || {
                self.inner.confirm(sale, batch, orders)
            })
            .await
    }

    async fn cancel_pending(&self, sale: SaleId, orders: &[OrderId]) -> BackendResult<()> {
        self.faults
            .call(self.node, Port::Stock, "stock.cancel_pending", || {
                self.inner.cancel_pending(sale, orders)
            })
            .await
    }

    async fn return_unit(&self, sale: SaleId, order: OrderId) -> BackendResult<ReturnOutcome> {
        self.faults
            .call(self.node, Port::Stock, "stock.return_unit", || {
                self.inner.return_unit(sale, order)
            })
            .await
    }

    async fn available(&self, sale: SaleId) -> BackendResult<u32> {
        self.faults
            .call(self.node, Port::Stock, "stock.available", || {
                self.inner.available(sale)
            })
            .await
    }

    async fn pending_orders(&self, sale: SaleId) -> BackendResult<Vec<PendingReservation>> {
        self.faults
            .call(self.node, Port::Stock, "stock.pending_orders", || {
                self.inner.pending_orders(sale)
            })
            .await
    }

    async fn entry(&self, sale: SaleId, order: OrderId) -> BackendResult<Option<LedgerEntry>> {
        self.faults
            .call(self.node, Port::Stock, "stock.entry", || {
                self.inner.entry(sale, order)
            })
            .await
    }
}

/// The durable queue as one node reaches it.
pub struct FaultyQueue {
    pub inner: Arc<dyn ReservationQueue>,
    pub faults: Arc<Faults>,
    pub node: u64,
}

#[async_trait]
impl ReservationQueue for FaultyQueue {
    async fn enqueue(
        &self,
        batch: BatchId,
        reservations: Vec<Reservation>,
    ) -> BackendResult<Enqueued> {
        self.faults
            .call(self.node, Port::Queue, "queue.enqueue", || {
                self.inner.enqueue(batch, reservations)
            })
            .await
    }

    async fn take_batch(&self, max: usize, wait: Duration) -> BackendResult<Vec<Reservation>> {
        self.faults
            .call(self.node, Port::Queue, "queue.take_batch", || {
                self.inner.take_batch(max, wait)
            })
            .await
    }

    async fn ack(&self, orders: &[OrderId]) -> BackendResult<()> {
        self.faults
            .call(self.node, Port::Queue, "queue.ack", || {
                self.inner.ack(orders)
            })
            .await
    }

    async fn nack(&self, orders: &[OrderId]) -> BackendResult<()> {
        self.faults
            .call(self.node, Port::Queue, "queue.nack", || {
                self.inner.nack(orders)
            })
            .await
    }

    async fn void(&self, batch: BatchId) -> BackendResult<VoidOutcome> {
        self.faults
            .call(self.node, Port::Queue, "queue.void", || {
                self.inner.void(batch)
            })
            .await
    }

    async fn find(&self, batch: BatchId, order: OrderId) -> BackendResult<Option<Reservation>> {
        self.faults
            .call(self.node, Port::Queue, "queue.find", || {
                self.inner.find(batch, order)
            })
            .await
    }

    async fn all_queued(&self) -> BackendResult<Vec<Queued>> {
        self.faults
            .call(self.node, Port::Queue, "queue.all_queued", || {
                self.inner.all_queued()
            })
            .await
    }

    fn depth(&self) -> usize {
        self.inner.depth()
    }

    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

/// The order store as one node reaches it.
pub struct FaultyStore {
    pub inner: Arc<dyn OrderStore>,
    pub faults: Arc<Faults>,
    pub node: u64,
}

#[async_trait]
impl OrderStore for FaultyStore {
    async fn create_sale(&self, sale: &Sale) -> BackendResult<()> {
        self.faults
            .call(self.node, Port::Store, "store.create_sale", || {
                self.inner.create_sale(sale)
            })
            .await
    }

    async fn update_sale(&self, sale: &Sale) -> BackendResult<bool> {
        self.faults
            .call(self.node, Port::Store, "store.update_sale", || {
                self.inner.update_sale(sale)
            })
            .await
    }

    async fn get_sale(&self, id: SaleId) -> BackendResult<Option<Sale>> {
        self.faults
            .call(self.node, Port::Store, "store.get_sale", || {
                self.inner.get_sale(id)
            })
            .await
    }

    async fn list_sales(&self) -> BackendResult<Vec<Sale>> {
        self.faults
            .call(self.node, Port::Store, "store.list_sales", || {
                self.inner.list_sales()
            })
            .await
    }

    async fn insert_orders(&self, batch: &[Reservation]) -> BackendResult<u64> {
        self.faults
            .call(self.node, Port::Store, "store.insert_orders", || {
                self.inner.insert_orders(batch)
            })
            .await
    }

    async fn get_order(&self, id: OrderId) -> BackendResult<Option<Order>> {
        self.faults
            .call(self.node, Port::Store, "store.get_order", || {
                self.inner.get_order(id)
            })
            .await
    }

    async fn pay(
        &self,
        id: OrderId,
        buyer: &BuyerId,
        payment: &PaymentId,
        now: Timestamp,
    ) -> BackendResult<PayOutcome> {
        self.faults
            .call(self.node, Port::Store, "store.pay", || {
                self.inner.pay(id, buyer, payment, now)
            })
            .await
    }

    async fn expire_due(&self, now: Timestamp, max: usize) -> BackendResult<Vec<Order>> {
        self.faults
            .call(self.node, Port::Store, "store.expire_due", || {
                self.inner.expire_due(now, max)
            })
            .await
    }

    async fn order_counts(&self, sale: SaleId) -> BackendResult<OrderCounts> {
        self.faults
            .call(self.node, Port::Store, "store.order_counts", || {
                self.inner.order_counts(sale)
            })
            .await
    }

    async fn holdings(&self, sale: SaleId) -> BackendResult<Vec<Holding>> {
        self.faults
            .call(self.node, Port::Store, "store.holdings", || {
                self.inner.holdings(sale)
            })
            .await
    }

    async fn recent_orders(&self, sale: SaleId, max: usize) -> BackendResult<Vec<Order>> {
        self.faults
            .call(self.node, Port::Store, "store.recent_orders", || {
                self.inner.recent_orders(sale, max)
            })
            .await
    }
}
