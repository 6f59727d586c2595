//! The sale service: the buy flow, orders and payment, admin changes, the reaper and recovery.
//!
//! `Shop` composes the ports. It holds each sale's definition in memory (the status endpoint
//! and the buy path never read the store) and keeps the stock ledger in step with admin edits.

pub use crate::config::{ClusterConfig, Design, ReaperConfig, ReservationConfig, ShopConfig};
use crate::faults;
use crate::filters::{
    LayerCounts, LayerMetrics, LayerStats, Limiters, SaleGate, WindowKey, should_shed,
};
use crate::ports::{
    BackendError, Buy, Clock, Enqueued, Holding, OpenMode, Opened, OrderCounts, OrderStore,
    PayOutcome, PendingReservation, ReservationQueue, StockLedger, VoidOutcome,
};
use crate::ttl_cache::TtlCache;
use crate::writers::WriterPool;
use flashsale_core::sale::ChangeError;
use flashsale_core::tokens::BuyPathSigner;
use flashsale_core::{
    BatchId, BuyerId, IdempotencyKey, Order, OrderId, OrderStatus, PaymentId, Phase, Reservation,
    ReservationState, ReserveOutcome, ReturnOutcome, Sale, SaleId, SalePatch, SaleSpec, SpecError,
    Timestamp,
};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The ports a shop runs on.
#[derive(Clone)]
pub struct Backends {
    pub stock: Arc<dyn StockLedger>,
    pub queue: Arc<dyn ReservationQueue>,
    pub store: Arc<dyn OrderStore>,
    pub clock: Arc<dyn Clock>,
}

/// Something broke in the service (never a business answer).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("state is inconsistent: {0}")]
    Corrupt(String),
    /// A bug: a task panicked. What it held is as after a crash (see RELIABILITY.md).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The answer to a buy. Business answers, not errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuyOutcome {
    /// The reservation is durable; `replay` when this request was answered before.
    Accepted {
        order_id: OrderId,
        replay: bool,
    },
    /// No such sale, or the buy-path token is wrong (the two look the same from outside).
    UnknownBuyPath,
    NotLive,
    SoldOut,
    LimitReached,
    /// The same request is being handled right now; retry shortly.
    InProgress,
    /// The durable queue is full or filling (load shedding), or could not take the
    /// reservation; nothing was taken.
    Overloaded,
    /// Over a rate limit (client, buyer or sale); retry after this many seconds.
    RateLimited {
        retry_after_secs: u32,
    },
}

/// What an admin may be refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no such sale")]
    NotFound,
    #[error(transparent)]
    Invalid(#[from] SpecError),
    #[error(transparent)]
    Change(ChangeError),
    #[error("the sale was changed concurrently; reload and retry")]
    Conflict,
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<ChangeError> for AdminError {
    fn from(error: ChangeError) -> Self {
        match error {
            ChangeError::Invalid(spec) => AdminError::Invalid(spec),
            other => AdminError::Change(other),
        }
    }
}

impl From<BackendError> for AdminError {
    fn from(error: BackendError) -> Self {
        AdminError::Service(error.into())
    }
}

/// How an order looks to its buyer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderViewStatus {
    /// Accepted and durable, not yet written to the order store.
    Queued,
    PendingPayment,
    Paid,
    Expired,
    Cancelled,
}

impl From<OrderStatus> for OrderViewStatus {
    fn from(status: OrderStatus) -> Self {
        match status {
            OrderStatus::PendingPayment => OrderViewStatus::PendingPayment,
            OrderStatus::Paid => OrderViewStatus::Paid,
            OrderStatus::Expired => OrderViewStatus::Expired,
            OrderStatus::Cancelled => OrderViewStatus::Cancelled,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderView {
    pub id: OrderId,
    pub sale_id: SaleId,
    pub status: OrderViewStatus,
    pub expires_at: Timestamp,
}

/// The answer to a payment attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayAnswer {
    Paid(OrderView),
    NotFound,
    /// The order is accepted but not yet written; retry shortly.
    NotYetWritten,
    Expired,
    Cancelled,
    PaidByOtherPayment,
}

/// What the status endpoint shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleStatus {
    pub sale_id: SaleId,
    pub phase: Phase,
    pub server_time: Timestamp,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    /// The buy-path token; only while live.
    pub buy_token: Option<String>,
}

/// A sale with its live counters, for admins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleView {
    pub sale: Sale,
    pub phase: Phase,
    pub counters: SaleCounters,
    /// What each filtering layer did for this sale on this node.
    pub layers: LayerCounts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SaleCounters {
    pub stock_total: u32,
    pub available: u32,
    /// Accepted reservations not yet written as orders (derived: taken minus written).
    pub queued: u64,
    pub pending_payment: u64,
    pub paid: u64,
    pub expired: u64,
    pub cancelled: u64,
}

/// One sale as the hot path sees it; replaced on every admin change.
struct SaleSlot {
    sale: Sale,
    /// The buy-path token for the current schedule, derived once per version.
    buy_token: String,
    /// Set when a reservation found no stock; cleared when a unit comes back. Read without a
    /// lock by every buy once the sale is sold out.
    sold_out: AtomicBool,
    /// The admission bucket, sized from this version's stock.
    gate: SaleGate,
    shared: Arc<SaleShared>,
}

/// What outlives a sale's versions on this node.
#[derive(Default)]
struct SaleShared {
    stats: LayerStats,
    /// Orders accepted here (or restored at start), so a retry of an accepted request is
    /// answered 202 even after the sold-out flag stops calls to the ledger. Bounded by the
    /// units sold. Read by every refusal after the sell-out, written once per accept: a
    /// read-write lock, so the refusals never queue behind each other.
    accepted: RwLock<Accepted>,
}

#[derive(Default)]
struct Accepted {
    orders: HashSet<OrderId>,
    /// Their buyers: after the sell-out most requests come from buyers who never won, and
    /// looking up the buyer spares them deriving an order id (a SHA-256) to look up.
    buyers: HashSet<BuyerId>,
}

impl SaleShared {
    /// The order id of this request if it is one this node accepted.
    fn accepted_order(
        &self,
        sale: SaleId,
        buyer: &BuyerId,
        key: &IdempotencyKey,
    ) -> Option<OrderId> {
        let accepted = self.accepted.read().unwrap_or_else(|e| e.into_inner());
        if !accepted.buyers.contains(buyer) {
            return None;
        }
        let order = OrderId::derive(sale, buyer, key);
        accepted.orders.contains(&order).then_some(order)
    }

    fn remember_accepted<'a>(&self, orders: impl IntoIterator<Item = (OrderId, &'a BuyerId)>) {
        let mut accepted = self.accepted.write().unwrap_or_else(|e| e.into_inner());
        for (order, buyer) in orders {
            accepted.orders.insert(order);
            if !accepted.buyers.contains(buyer) {
                accepted.buyers.insert(buyer.clone());
            }
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Units taken for a batch that is not durable yet. Dropped while still armed (an early
/// return, a panic), it gives the units back from a task of its own; `keep` disarms it once
/// the enqueue starts, whose outcome decides.
struct PendingUnits {
    stock: Arc<dyn StockLedger>,
    slot: Arc<SaleSlot>,
    orders: Vec<OrderId>,
    armed: bool,
}

impl PendingUnits {
    fn new(stock: Arc<dyn StockLedger>, slot: Arc<SaleSlot>, orders: Vec<OrderId>) -> Self {
        Self {
            stock,
            slot,
            orders,
            armed: true,
        }
    }

    fn keep(&mut self) {
        self.armed = false;
    }

    /// The reservations surely did not become durable: the units go back now.
    async fn give_back(mut self) {
        self.armed = false;
        give_back(&*self.stock, &self.slot, &self.orders).await;
    }
}

impl Drop for PendingUnits {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (stock, slot) = (self.stock.clone(), self.slot.clone());
        let orders = std::mem::take(&mut self.orders);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { give_back(&*stock, &slot, &orders).await });
            }
            Err(_) => {
                tracing::error!(
                    units = orders.len(),
                    "no runtime to give units back; they stay taken until rebuild"
                )
            }
        }
    }
}

async fn give_back(stock: &dyn StockLedger, slot: &SaleSlot, orders: &[OrderId]) {
    match stock.cancel_pending(slot.sale.id, orders).await {
        Ok(()) => slot.sold_out.store(false, Ordering::Relaxed),
        Err(error) => {
            tracing::error!(%error, units = orders.len(), "could not give back units; they stay taken until the reconciler or a rebuild")
        }
    }
}

/// What the stock ledger and the queue know of an order the store does not have.
enum Unwritten {
    /// No ledger of this node's sales knows it for this buyer.
    Unknown,
    /// Waiting in the queue.
    Queued(Reservation),
    /// The ledger knows it, the queue does not hold it: written meanwhile, or never durable.
    NotQueued,
}

/// One buy waiting for its batch: the reservation it would become, and where its answer goes.
struct BuyRequest {
    slot: Arc<SaleSlot>,
    reservation: Reservation,
    answer: oneshot::Sender<Result<BuyOutcome, ServiceError>>,
}

impl BuyRequest {
    fn answer(self, outcome: Result<BuyOutcome, ServiceError>) {
        // A caller that went away (hung up, timed out) needs no answer; the batch went on.
        let _ = self.answer.send(outcome);
    }
}

/// The per-buyer window: (sale, buyer) → the answer a repeat gets.
type WindowCache = TtlCache<WindowKey, BuyOutcome>;

/// The sale service of one node.
pub struct Shop {
    backends: Backends,
    config: ShopConfig,
    signer: BuyPathSigner,
    // A std RwLock: read on every request, written only by admin changes; never held across
    // an await.
    sales: RwLock<HashMap<SaleId, Arc<SaleSlot>>>,
    // Serializes admin changes so the store, the ledger and the slot move together.
    admin: tokio::sync::Mutex<()>,
    writers: WriterPool,
    shutdown: CancellationToken,
    ready: AtomicBool,
    /// Raised while a reaper sweep may have expired orders without returning their units;
    /// the next sweep then looks for such orders first. Raised at start for the same reason.
    rescan_returns: AtomicBool,
    /// The reconciler's view: each pending reservation of an open sale and when this node
    /// first saw it pending (a monotonic instant: the deadline is about calls in flight, not
    /// about the sale's clock). A std mutex, never held across an await.
    pending_seen: std::sync::Mutex<HashMap<(SaleId, OrderId), std::time::Instant>>,
    /// The per-buyer window cache; `None` when its window is 0.
    window: Option<WindowCache>,
    limiters: Limiters,
    metrics: LayerMetrics,
    /// Where buys wait for their batch (`Design::Batched`); `None` in the classic design.
    batcher: Option<mpsc::Sender<BuyRequest>>,
    /// Sales whose end this node has seen and whose lease it gave back.
    leases_released: std::sync::Mutex<HashSet<SaleId>>,
}

impl Shop {
    /// Opens the shop: loads every sale and rebuilds the stock ledger from durable state only
    /// (orders in the store plus reservations still in the queue), then starts the writers and
    /// the reaper. Must be called inside a tokio runtime.
    pub async fn open(backends: Backends, config: ShopConfig) -> Result<Arc<Self>, ServiceError> {
        let signer = BuyPathSigner::new(&config.buy_path_secret);
        let writers = WriterPool::new(
            backends.queue.clone(),
            backends.store.clone(),
            backends.clock.clone(),
            config.writers.clone(),
        );
        let window = (config.filters.buyer_window_ms > 0).then(|| {
            TtlCache::new(
                Some(Duration::from_millis(config.filters.buyer_window_ms)),
                config.filters.buyer_window_entries_max,
            )
        });
        let reservations = config.reservations.clone();
        let (batcher, gathered) = match reservations.design {
            Design::Batched => {
                let (sender, receiver) = mpsc::channel(batcher_waiting_max(&reservations));
                (Some(sender), Some(receiver))
            }
            Design::Classic => (None, None),
        };
        let shop = Arc::new(Self {
            batcher,
            leases_released: std::sync::Mutex::new(HashSet::new()),
            window,
            limiters: Limiters::new(&config.filters),
            metrics: LayerMetrics::register(),
            signer,
            writers,
            backends,
            config,
            sales: RwLock::new(HashMap::new()),
            admin: tokio::sync::Mutex::new(()),
            shutdown: CancellationToken::new(),
            ready: AtomicBool::new(false),
            rescan_returns: AtomicBool::new(true),
            pending_seen: std::sync::Mutex::new(HashMap::new()),
        });
        shop.recover().await?;
        if let Some(gathered) = gathered {
            tokio::spawn(run_batcher(Arc::downgrade(&shop), gathered, reservations));
        }
        shop.writers.set_count(shop.config.writers.count).await;
        tokio::spawn(run_reaper(shop.clone()));
        if let Some(cluster) = shop.config.cluster.clone() {
            tokio::spawn(run_sync(Arc::downgrade(&shop), cluster));
        }
        shop.ready.store(true, Ordering::Release);
        Ok(shop)
    }

    async fn recover(&self) -> Result<(), ServiceError> {
        let sales = self.backends.store.list_sales().await?;
        let ids: Vec<SaleId> = sales.iter().map(|s| s.id).collect();
        let mut holdings = self.durable_holdings(&ids).await?;
        for sale in sales {
            let holdings = holdings.remove(&sale.id).unwrap_or_default();
            let known: Vec<(OrderId, BuyerId)> = holdings
                .iter()
                .map(|h| (h.order_id, h.buyer.clone()))
                .collect();
            faults::point("recovery.before_open_ledger", faults::Happened::No).await?;
            // IfAbsent: on shared backends other nodes may be selling from this ledger now.
            self.open_ledger(&sale, holdings, OpenMode::IfAbsent)
                .await?;
            if let Some(slot) = self.slot(sale.id) {
                slot.shared
                    .remember_accepted(known.iter().map(|(order, buyer)| (*order, buyer)));
            }
        }
        if !holdings.is_empty() {
            return Err(ServiceError::Corrupt(format!(
                "the queue holds reservations for {} unknown sale(s)",
                holdings.len()
            )));
        }
        Ok(())
    }

    /// Every durable holding of these sales: orders in the store plus reservations still in
    /// the queue (the rest of the queue's sales stay in the map, so the caller can tell). The
    /// queue is read first: a reservation a writer moves in between is then found in the
    /// store, never missed.
    ///
    /// Once an order is in the store, the store's status wins over the queue: a reservation
    /// stays queued after its order was written when the writer died (or lost its ack)
    /// before acking, and that order may since have expired and its unit been sold again.
    /// Counting it live would hold the unit twice (found by the simulation, seed 90: the
    /// restart then refused to open, "6 live reservations for a stock of 5").
    async fn durable_holdings(
        &self,
        sales: &[SaleId],
    ) -> Result<HashMap<SaleId, Vec<Holding>>, ServiceError> {
        let mut holdings: HashMap<SaleId, Vec<Holding>> = HashMap::new();
        for queued in self.backends.queue.all_queued().await? {
            let r = queued.reservation;
            holdings.entry(r.sale_id).or_default().push(Holding {
                order_id: r.order_id,
                buyer: r.buyer,
                live: true,
                batch: Some(queued.batch),
            });
        }
        for &sale in sales {
            let stored = self.backends.store.holdings(sale).await?;
            let written: HashSet<OrderId> = stored.iter().map(|h| h.order_id).collect();
            let sale_holdings = holdings.entry(sale).or_default();
            sale_holdings.retain(|h| !written.contains(&h.order_id));
            sale_holdings.extend(stored);
        }
        Ok(holdings)
    }

    async fn open_ledger(
        &self,
        sale: &Sale,
        holdings: Vec<Holding>,
        mode: OpenMode,
    ) -> Result<(), ServiceError> {
        let stock = &self.backends.stock;
        let opened = stock
            .open_sale(
                sale.id,
                sale.spec.stock,
                sale.spec.per_buyer_limit,
                holdings,
                mode,
            )
            .await?;
        if opened == Opened::AlreadyOpen {
            tracing::debug!(sale_id = %sale.id, "stock ledger already open; adopted it");
        }
        let available = stock.available(sale.id).await?;
        self.install(sale.clone(), available == 0);
        Ok(())
    }

    fn install(&self, sale: Sale, sold_out: bool) {
        let mut sales = self.sales.write().unwrap_or_else(|e| e.into_inner());
        let shared = sales
            .get(&sale.id)
            .map(|old| old.shared.clone())
            .unwrap_or_default();
        let slot = SaleSlot {
            buy_token: self.signer.token(sale.id, sale.spec.starts_at),
            sold_out: AtomicBool::new(sold_out),
            gate: SaleGate::new(&self.config.filters, sale.spec.stock),
            shared,
            sale,
        };
        sales.insert(slot.sale.id, Arc::new(slot));
    }

    /// The sales this node knows, in no particular order.
    fn sale_ids(&self) -> Vec<SaleId> {
        self.sales
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }

    fn slot(&self, id: SaleId) -> Option<Arc<SaleSlot>> {
        self.sales
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    pub fn now(&self) -> Timestamp {
        self.backends.clock.now()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.shutdown.is_cancelled()
    }

    /// The sale's definition, for the sale page.
    pub fn sale(&self, id: SaleId) -> Option<Sale> {
        self.slot(id).map(|slot| slot.sale.clone())
    }

    /// The status endpoint's answer; reads memory only.
    pub fn status(&self, id: SaleId) -> Option<SaleStatus> {
        let slot = self.slot(id)?;
        let now = self.now();
        let phase = slot.sale.phase(now, !slot.sold_out.load(Ordering::Relaxed));
        Some(SaleStatus {
            sale_id: id,
            phase,
            server_time: now,
            starts_at: slot.sale.spec.starts_at,
            ends_at: slot.sale.spec.ends_at,
            buy_token: (phase == Phase::Live).then(|| slot.buy_token.clone()),
        })
    }

    /// The buy flow: check the path and the phase, pass the filtering layers, take a unit,
    /// make the reservation durable, and only then accept. If it cannot be made durable, the
    /// unit goes back. `client` is the caller's address, for the per-client limiter.
    pub async fn buy(
        self: &Arc<Self>,
        sale_id: SaleId,
        buy_token: &str,
        buyer: &BuyerId,
        key: &IdempotencyKey,
        client: Option<IpAddr>,
    ) -> Result<BuyOutcome, ServiceError> {
        let Some(slot) = self.slot(sale_id) else {
            self.metrics.unknown_path.increment(1);
            return Ok(BuyOutcome::UnknownBuyPath);
        };
        if !bool::from(slot.buy_token.as_bytes().ct_eq(buy_token.as_bytes())) {
            self.metrics.unknown_path.increment(1);
            return Ok(BuyOutcome::UnknownBuyPath);
        }
        let stats = &slot.shared.stats;
        if let Err(retry_after_secs) = self.limiters.check_client(client) {
            bump(&stats.client_rate_limited);
            self.metrics.client_rate_limited.increment(1);
            return Ok(BuyOutcome::RateLimited { retry_after_secs });
        }
        let now = self.now();
        if !slot.sale.is_open(now) {
            self.metrics.not_live.increment(1);
            return Ok(BuyOutcome::NotLive);
        }
        let Some(window) = &self.window else {
            return self.attempt(&slot, buyer, key, now).await;
        };
        if slot.sold_out.load(Ordering::Relaxed) {
            // After the sell-out nobody new can win. Most of a spike arrives now: answer it
            // without inserting into the window (an insert costs more than this whole answer),
            // but a buyer already in the window still gets the answer kept there.
            if let Some(kept) = window.get(&(sale_id, buyer.clone())) {
                self.count_window_hit(stats);
                return Ok(kept);
            }
            return Ok(self.answer_sold_out(&slot, buyer, key));
        }
        // Concurrent repeats by one buyer wait for the one attempt in flight and share its
        // answer; later repeats within the window get it from memory. Errors are not kept.
        let (answer, fresh) = window
            .get_or_try_insert_with(
                &(sale_id, buyer.clone()),
                self.attempt(&slot, buyer, key, now),
            )
            .await?;
        if !fresh {
            self.count_window_hit(stats);
        }
        Ok(answer)
    }

    fn count_window_hit(&self, stats: &LayerStats) {
        bump(&stats.window_hits);
        self.metrics.window_hit.increment(1);
    }

    /// The answer once the sale's sold-out flag is up, without a ledger call: a replay of an
    /// order this node accepted is still that order; anything else is sold out.
    fn answer_sold_out(
        &self,
        slot: &SaleSlot,
        buyer: &BuyerId,
        key: &IdempotencyKey,
    ) -> BuyOutcome {
        if let Some(order_id) = slot.shared.accepted_order(slot.sale.id, buyer, key) {
            return BuyOutcome::Accepted {
                order_id,
                replay: true,
            };
        }
        bump(&slot.shared.stats.sold_out_short_circuit);
        self.metrics.sold_out_short_circuit.increment(1);
        BuyOutcome::SoldOut
    }

    /// One real attempt, behind the window cache. The order id is derived here, not before the
    /// window: most of a spike is answered by the window and never needs it.
    async fn attempt(
        self: &Arc<Self>,
        slot: &Arc<SaleSlot>,
        buyer: &BuyerId,
        key: &IdempotencyKey,
        now: Timestamp,
    ) -> Result<BuyOutcome, ServiceError> {
        let (stats, metrics) = (&slot.shared.stats, &self.metrics);
        let sale_id = slot.sale.id;
        if slot.sold_out.load(Ordering::Relaxed) {
            return Ok(self.answer_sold_out(slot, buyer, key));
        }
        let order_id = OrderId::derive(sale_id, buyer, key);
        if let Err(retry_after_secs) = self.limiters.check_buyer(buyer) {
            bump(&stats.buyer_rate_limited);
            metrics.buyer_rate_limited.increment(1);
            return Ok(BuyOutcome::RateLimited { retry_after_secs });
        }
        if let Err(retry_after_secs) = slot.gate.check() {
            bump(&stats.sale_rate_limited);
            metrics.sale_rate_limited.increment(1);
            return Ok(BuyOutcome::RateLimited { retry_after_secs });
        }
        let queue = &self.backends.queue;
        let shed_start = self.config.filters.shed_queue_fill_percent_start;
        if should_shed(queue.depth(), queue.capacity(), shed_start, order_id) {
            bump(&stats.shed);
            metrics.shed.increment(1);
            return Ok(BuyOutcome::Overloaded);
        }
        // From here the attempt is out of the caller's hands. A caller that goes away (the
        // client hung up, the request timed out) drops its future, and stopping between taking
        // a unit and hearing from the queue would strand the unit, or leave a durable
        // reservation unconfirmed: so the batch (a task of its own) owns the attempt, and the
        // caller only waits for the answer.
        let reservation = Reservation::new(
            order_id,
            sale_id,
            buyer.clone(),
            now,
            slot.sale.spec.payment_window_secs,
        );
        let (answer, answered) = oneshot::channel();
        let request = BuyRequest {
            slot: slot.clone(),
            reservation,
            answer,
        };
        match &self.batcher {
            Some(batcher) => {
                if batcher.try_send(request).is_err() {
                    // More buys wait for a batch than batches can take in time: fail fast.
                    bump(&stats.shed);
                    metrics.shed.increment(1);
                    return Ok(BuyOutcome::Overloaded);
                }
            }
            None => {
                let shop = Arc::clone(self);
                let batch = BatchId::of_order(order_id);
                tokio::spawn(async move { shop.run_batch(batch, vec![request]).await });
            }
        }
        answered.await.unwrap_or_else(|_| {
            // The batch task ended without answering: it panicked, or the shop shut down.
            tracing::error!(%order_id, "a buy attempt ended without an answer");
            Err(ServiceError::Internal(
                "a buy attempt ended without an answer".into(),
            ))
        })
    }

    /// Takes a unit for each buy of the batch (one ledger call), makes the reserved ones
    /// durable together (one enqueue), and answers each buyer; then confirms them. Every buy
    /// of the batch is of one sale. The classic design runs this with one buy per batch.
    ///
    /// The order matters: the 202s go out only after the enqueue said `Durable`, and the
    /// confirm after the 202s, off the buyers' wait. A confirm that never happens (the node
    /// died) leaves the reservations pending in a durable batch, which the reconciler (or a
    /// retry of the request) finds and confirms.
    async fn run_batch(self: Arc<Self>, batch: BatchId, requests: Vec<BuyRequest>) {
        let Some(first) = requests.first() else {
            return;
        };
        let slot = first.slot.clone();
        let (stats, metrics) = (&slot.shared.stats, &self.metrics);
        let sale_id = slot.sale.id;
        let (stock, queue) = (&self.backends.stock, &self.backends.queue);
        if let Err(error) = faults::point("shop.buy.before_reserve", faults::Happened::No).await {
            return answer_all(requests, Err(error.into()));
        }
        let buys: Vec<Buy> = requests
            .iter()
            .map(|r| Buy {
                order: r.reservation.order_id,
                buyer: r.reservation.buyer.clone(),
            })
            .collect();
        stats
            .stock_calls
            .fetch_add(buys.len() as u64, Ordering::Relaxed);
        bump(&stats.ledger_calls);
        metrics.batch_buys.record(buys.len() as f64);
        let outcomes = match stock.reserve(sale_id, batch, &buys).await {
            Ok(outcomes) if outcomes.len() == requests.len() => outcomes,
            Ok(outcomes) => {
                let error = ServiceError::Corrupt(format!(
                    "the stock ledger answered {} of {} buys",
                    outcomes.len(),
                    requests.len()
                ));
                return answer_all(requests, Err(error));
            }
            // Unknown outcome: some units may be taken, pending in a batch that never reaches
            // the queue; the reconciler (shared backends) or the rebuild at start settles them.
            Err(error) => return answer_all(requests, Err(error.into())),
        };
        let mut reserved = Vec::new();
        for (request, outcome) in requests.into_iter().zip(outcomes) {
            let order_id = request.reservation.order_id;
            match outcome {
                ReserveOutcome::Reserved => {
                    bump(&stats.reserved);
                    metrics.reserved.increment(1);
                    reserved.push(request);
                }
                ReserveOutcome::Duplicate(ReservationState::Pending) => {
                    // Asks the queue and the store: off the batch's path, it is rare.
                    let shop = Arc::clone(&self);
                    tokio::spawn(async move {
                        let answer = shop
                            .answer_pending_duplicate(
                                &request.slot,
                                order_id,
                                &request.reservation.buyer,
                            )
                            .await;
                        request.answer(answer);
                    });
                }
                ReserveOutcome::Duplicate(_) => {
                    bump(&stats.duplicates);
                    metrics.duplicate.increment(1);
                    request.answer(Ok(BuyOutcome::Accepted {
                        order_id,
                        replay: true,
                    }));
                }
                ReserveOutcome::SoldOut => {
                    bump(&stats.sold_out);
                    metrics.sold_out.increment(1);
                    request.slot.sold_out.store(true, Ordering::Relaxed);
                    request.answer(Ok(BuyOutcome::SoldOut));
                }
                ReserveOutcome::LimitReached => {
                    bump(&stats.limit_reached);
                    metrics.limit_reached.increment(1);
                    request.answer(Ok(BuyOutcome::LimitReached));
                }
            }
        }
        if reserved.is_empty() {
            return;
        }
        let orders: Vec<OrderId> = reserved.iter().map(|r| r.reservation.order_id).collect();
        // Until the enqueue starts nothing durable exists, so an early return or a panic gives
        // the units back.
        let mut units = PendingUnits::new(stock.clone(), slot.clone(), orders.clone());
        if let Err(error) = faults::point("shop.buy.after_reserve", faults::Happened::No).await {
            units.give_back().await;
            return answer_all(reserved, Err(error.into()));
        }
        let reservations: Vec<Reservation> =
            reserved.iter().map(|r| r.reservation.clone()).collect();
        // From here a panic is an unknown outcome: the units stay taken (see below).
        units.keep();
        match queue.enqueue(batch, reservations).await {
            Ok(Enqueued::Durable) => {
                if let Err(error) =
                    faults::point("shop.buy.after_enqueue", faults::Happened::Yes).await
                {
                    return answer_all(reserved, Err(error.into()));
                }
                slot.shared.remember_accepted(
                    reserved
                        .iter()
                        .map(|r| (r.reservation.order_id, &r.reservation.buyer)),
                );
                stats
                    .queued
                    .fetch_add(reserved.len() as u64, Ordering::Relaxed);
                metrics.queued.increment(reserved.len() as u64);
                for request in reserved {
                    let order_id = request.reservation.order_id;
                    request.answer(Ok(BuyOutcome::Accepted {
                        order_id,
                        replay: false,
                    }));
                }
                if let Err(error) = stock.confirm(sale_id, batch, &orders).await {
                    // The reservations are durable and will become orders. Ledger entries left
                    // pending are still returned on expiry, a retry of such a request finds
                    // its batch (`answer_pending_duplicate`), and the reconciler confirms them.
                    tracing::warn!(%error, units = orders.len(), "could not mark durable reservations confirmed");
                }
            }
            Ok(Enqueued::Full) => {
                stats
                    .queue_full
                    .fetch_add(reserved.len() as u64, Ordering::Relaxed);
                metrics.queue_full.increment(reserved.len() as u64);
                give_back(&**stock, &slot, &orders).await;
                answer_all(reserved, Ok(BuyOutcome::Overloaded));
            }
            Err(error) if error.outcome_known => {
                metrics.queue_failed.increment(reserved.len() as u64);
                tracing::warn!(%error, "durable queue refused a batch");
                give_back(&**stock, &slot, &orders).await;
                answer_all(reserved, Ok(BuyOutcome::Overloaded));
            }
            Err(error) => {
                metrics.queue_failed.increment(reserved.len() as u64);
                // The batch may be durable after all. Keeping the units taken can strand them
                // until the reconciler or the next rebuild, but giving them back could
                // oversell. If it is durable its orders' expiry returns the units.
                tracing::error!(%error, units = orders.len(), "durable queue outcome unknown; units held");
                answer_all(reserved, Ok(BuyOutcome::Overloaded));
            }
        }
    }

    /// A retry found its order id pending: the first attempt is in flight, or it ended with
    /// an unknown outcome. If the reservation is in the queue or the store it is durable
    /// after all, and the buyer gets the 202 the first attempt could not give.
    async fn answer_pending_duplicate(
        &self,
        slot: &SaleSlot,
        order_id: OrderId,
        buyer: &BuyerId,
    ) -> Result<BuyOutcome, ServiceError> {
        let batch = self
            .backends
            .stock
            .entry(slot.sale.id, order_id)
            .await?
            .and_then(|entry| entry.batch);
        let Some(batch) = batch else {
            self.metrics.in_progress.increment(1);
            return Ok(BuyOutcome::InProgress);
        };
        if !self.is_durable(batch, order_id).await? {
            self.metrics.in_progress.increment(1);
            return Ok(BuyOutcome::InProgress);
        }
        let stock = &self.backends.stock;
        if let Err(error) = stock.confirm(slot.sale.id, batch, &[order_id]).await {
            tracing::warn!(%error, %order_id, "could not mark a durable reservation confirmed");
        }
        slot.shared.remember_accepted([(order_id, buyer)]);
        bump(&slot.shared.stats.duplicates);
        self.metrics.duplicate.increment(1);
        Ok(BuyOutcome::Accepted {
            order_id,
            replay: true,
        })
    }

    /// The buyer's own order, or `None` (someone else's order looks the same as none).
    ///
    /// An order the writers have not written yet is found through the stock ledger, which
    /// knows the batch it waits in. The store is asked again after the queue: a writer may have
    /// moved the order from one to the other in between.
    pub async fn order(
        &self,
        buyer: &BuyerId,
        id: OrderId,
    ) -> Result<Option<OrderView>, ServiceError> {
        if let Some(order) = self.backends.store.get_order(id).await? {
            return Ok((&order.buyer == buyer).then(|| view(&order)));
        }
        let queued = match self.find_unwritten(buyer, id).await? {
            Unwritten::Unknown => return Ok(None),
            Unwritten::Queued(reservation) => Some(reservation),
            Unwritten::NotQueued => None,
        };
        if let Some(order) = self.backends.store.get_order(id).await? {
            return Ok((&order.buyer == buyer).then(|| view(&order)));
        }
        Ok(queued.map(|r| OrderView {
            id,
            sale_id: r.sale_id,
            status: OrderViewStatus::Queued,
            expires_at: r.expires_at,
        }))
    }

    /// Where the buyer's order `id` is when the store does not have it: the stock ledgers of
    /// this node's sales (newest first, usually one is live) say whether it exists and which
    /// batch it was taken for, and the queue whether that batch holds it. Someone else's order
    /// is `Unknown`.
    async fn find_unwritten(
        &self,
        buyer: &BuyerId,
        id: OrderId,
    ) -> Result<Unwritten, ServiceError> {
        let mut sales = self.sale_ids();
        // Sale ids are UUID v7: the newest sorts last.
        sales.sort_unstable_by(|a, b| b.cmp(a));
        for sale in sales.into_iter().take(ORDER_LOOKUP_SALES_MAX) {
            let Some(entry) = self.backends.stock.entry(sale, id).await? else {
                continue;
            };
            if &entry.buyer != buyer {
                return Ok(Unwritten::Unknown);
            }
            let queued = match entry.batch {
                Some(batch) => self.backends.queue.find(batch, id).await?,
                None => None,
            };
            return Ok(queued.map_or(Unwritten::NotQueued, Unwritten::Queued));
        }
        Ok(Unwritten::Unknown)
    }

    pub async fn pay(
        &self,
        buyer: &BuyerId,
        id: OrderId,
        payment: &PaymentId,
    ) -> Result<PayAnswer, ServiceError> {
        let now = self.now();
        Ok(
            match self.backends.store.pay(id, buyer, payment, now).await? {
                PayOutcome::Paid(order) => {
                    self.metrics.paid.increment(1);
                    PayAnswer::Paid(view(&order))
                }
                PayOutcome::PaidByOtherPayment => PayAnswer::PaidByOtherPayment,
                PayOutcome::Expired => PayAnswer::Expired,
                PayOutcome::Cancelled => PayAnswer::Cancelled,
                PayOutcome::NotFound => match self.find_unwritten(buyer, id).await? {
                    Unwritten::Queued(_) => PayAnswer::NotYetWritten,
                    // Known to the ledger but out of the queue: written since the store was
                    // asked, or never made durable. A retry tells which.
                    Unwritten::NotQueued => match self.backends.store.get_order(id).await? {
                        Some(_) => PayAnswer::NotYetWritten,
                        None => PayAnswer::NotFound,
                    },
                    Unwritten::Unknown => PayAnswer::NotFound,
                },
            },
        )
    }

    // ----- admin -----

    pub async fn create_sale(&self, spec: SaleSpec) -> Result<SaleView, AdminError> {
        let _admin = self.admin.lock().await;
        let sale = Sale::new(SaleId::new_v7(self.now()), spec)?;
        self.backends.store.create_sale(&sale).await?;
        self.open_ledger(&sale, Vec::new(), OpenMode::IfAbsent)
            .await?;
        self.view_of(&sale).await
    }

    pub async fn patch_sale(&self, id: SaleId, patch: &SalePatch) -> Result<SaleView, AdminError> {
        self.change_sale(id, |sale, now| sale.patched(patch, now))
            .await
    }

    pub async fn start_sale(&self, id: SaleId) -> Result<SaleView, AdminError> {
        self.change_sale(id, |sale, now| sale.started(now)).await
    }

    pub async fn stop_sale(&self, id: SaleId) -> Result<SaleView, AdminError> {
        self.change_sale(id, |sale, now| sale.stopped(now)).await
    }

    async fn change_sale(
        &self,
        id: SaleId,
        change: impl FnOnce(&Sale, Timestamp) -> Result<Sale, ChangeError>,
    ) -> Result<SaleView, AdminError> {
        let _admin = self.admin.lock().await;
        let slot = self.slot(id).ok_or(AdminError::NotFound)?;
        let changed = change(&slot.sale, self.now())?;
        if !self.backends.store.update_sale(&changed).await? {
            return Err(AdminError::Conflict);
        }
        let stock_rules_changed = changed.spec.stock != slot.sale.spec.stock
            || changed.spec.per_buyer_limit != slot.sale.spec.per_buyer_limit;
        if stock_rules_changed {
            // Only possible before the start, when no order exists; the holdings are read
            // anyway so a mistake here can never drop one.
            let holdings = self.backends.store.holdings(id).await?;
            self.open_ledger(&changed, holdings, OpenMode::Replace)
                .await?;
        } else {
            self.install(changed.clone(), slot.sold_out.load(Ordering::Relaxed));
        }
        self.view_of(&changed).await
    }

    pub async fn sale_view(&self, id: SaleId) -> Result<SaleView, AdminError> {
        let slot = self.slot(id).ok_or(AdminError::NotFound)?;
        self.view_of(&slot.sale).await
    }

    /// Forgets idle rate-limiter keys and expired window answers (called by the reaper's loop).
    pub fn housekeeping(&self) {
        self.limiters.forget_idle_keys();
        if let Some(window) = &self.window {
            window.forget_expired();
        }
    }

    pub async fn list_sales(&self) -> Result<Vec<SaleView>, AdminError> {
        let mut slots: Vec<Arc<SaleSlot>> = self
            .sales
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        slots.sort_by_key(|slot| slot.sale.id);
        let mut views = Vec::with_capacity(slots.len());
        for slot in slots {
            views.push(self.view_of(&slot.sale).await?);
        }
        Ok(views)
    }

    async fn view_of(&self, sale: &Sale) -> Result<SaleView, AdminError> {
        let available = self.backends.stock.available(sale.id).await?;
        let counts: OrderCounts = self.backends.store.order_counts(sale.id).await?;
        let taken = u64::from(sale.spec.stock - available.min(sale.spec.stock));
        let counters = SaleCounters {
            stock_total: sale.spec.stock,
            available,
            queued: taken.saturating_sub(counts.pending_payment + counts.paid),
            pending_payment: counts.pending_payment,
            paid: counts.paid,
            expired: counts.expired,
            cancelled: counts.cancelled,
        };
        let layers = self
            .slot(sale.id)
            .map(|slot| slot.shared.stats.snapshot())
            .unwrap_or_default();
        Ok(SaleView {
            sale: sale.clone(),
            phase: sale.phase(self.now(), available > 0),
            counters,
            layers,
        })
    }

    pub async fn recent_orders(&self, id: SaleId, max: usize) -> Result<Vec<Order>, AdminError> {
        self.slot(id).ok_or(AdminError::NotFound)?;
        Ok(self.backends.store.recent_orders(id, max).await?)
    }

    pub fn writer_count(&self) -> usize {
        self.writers.count()
    }

    pub async fn set_writer_count(&self, count: usize) {
        self.writers.set_count(count).await;
    }

    pub fn queue_depth(&self) -> usize {
        self.backends.queue.depth()
    }

    // ----- reaper -----

    /// One reaper sweep: expire every order whose payment window closed, and return each
    /// unit exactly once (the store's compare-and-set picks who expires an order; the
    /// ledger's `return_unit` is idempotent). Returns how many orders expired.
    ///
    /// The expiry and the return are two steps on two backends. When a sweep stops between
    /// them (an error, a panic, a crash of the node), the next sweep first gives back every
    /// unit of an order that is no longer live (`return_stranded_units`); `return_unit`
    /// makes that repeat harmless.
    pub async fn reap_once(&self) -> Result<usize, ServiceError> {
        if self.rescan_returns.swap(false, Ordering::AcqRel)
            && let Err(error) = self.return_stranded_units().await
        {
            self.rescan_returns.store(true, Ordering::Release);
            return Err(error);
        }
        // Raised for the whole sweep, so a sweep that stops anywhere leaves it raised.
        self.rescan_returns.store(true, Ordering::Release);
        let mut total = 0;
        let mut all_returned = true;
        loop {
            let expired = self
                .backends
                .store
                .expire_due(self.now(), self.config.reaper.batch_max.get())
                .await?;
            faults::point("reaper.after_expire", faults::Happened::Yes).await?;
            for order in &expired {
                all_returned &= self.return_unit_of(order.sale_id, order.id).await;
            }
            total += expired.len();
            if expired.len() < self.config.reaper.batch_max.get() {
                break;
            }
        }
        if all_returned {
            self.rescan_returns.store(false, Ordering::Release);
        }
        Ok(total)
    }

    /// Gives back the unit of an order that is no longer live; false if the ledger could not
    /// be reached (the next sweep tries again).
    async fn return_unit_of(&self, sale: SaleId, order: OrderId) -> bool {
        match self.backends.stock.return_unit(sale, order).await {
            Ok(ReturnOutcome::Returned) => {
                self.metrics.expired.increment(1);
                if let Some(slot) = self.slot(sale) {
                    slot.sold_out.store(false, Ordering::Relaxed);
                }
                true
            }
            Ok(ReturnOutcome::AlreadyReturned) => true,
            Ok(ReturnOutcome::Unknown) => {
                tracing::warn!(order_id = %order, "an order that is no longer live had no unit to return");
                true
            }
            Err(error) => {
                tracing::error!(%error, order_id = %order, "could not return a unit; the next sweep tries again");
                false
            }
        }
    }

    /// Gives back the unit of every order of an open sale that is no longer live. Run after a
    /// sweep that stopped halfway, and once at start (a node that died mid-sweep leaves units
    /// taken on a shared ledger). Sales that are not open are skipped: a unit returned there
    /// could not be sold, and a shared ledger keeps only the open sales.
    async fn return_stranded_units(&self) -> Result<(), ServiceError> {
        let now = self.now();
        let sales: Vec<SaleId> = self
            .sales
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|slot| slot.sale.is_open(now))
            .map(|slot| slot.sale.id)
            .collect();
        let mut failed = false;
        for sale in sales {
            for holding in self.backends.store.holdings(sale).await? {
                if !holding.live {
                    failed |= !self.return_unit_of(sale, holding.order_id).await;
                }
            }
        }
        if failed {
            return Err(ServiceError::Backend(BackendError::determinate(
                "stock ledger",
                "could not return every unit of a closed order",
            )));
        }
        Ok(())
    }

    // ----- keeping in step with other nodes (shared backends) -----

    /// One sync pass: installs sales created or changed on other nodes, lowers this node's
    /// sold-out flag where units came back through another node, and rebuilds the ledgers of
    /// live sales that the stock backend lost (after the fence; see `ClusterConfig`).
    pub async fn sync_once(&self, cluster: &ClusterConfig) -> Result<(), ServiceError> {
        let now = self.now();
        let sales = {
            // Under the admin lock, so a change made on this node meanwhile is never
            // overwritten by the older version read here.
            let _admin = self.admin.lock().await;
            let sales = self.backends.store.list_sales().await?;
            for sale in &sales {
                let current = self.slot(sale.id);
                if current
                    .as_ref()
                    .is_none_or(|slot| slot.sale.version < sale.version)
                {
                    let sold_out =
                        current.is_some_and(|slot| slot.sold_out.load(Ordering::Relaxed));
                    self.install(sale.clone(), sold_out);
                }
            }
            sales
        };
        self.release_ended_leases(&sales, now).await;
        let mut lost = Vec::new();
        let mut open = HashSet::new();
        for sale in sales {
            if sale.phase(now, true) == Phase::Ended {
                continue;
            }
            if let Err(error) = self.reconcile_pending(&sale, cluster).await {
                tracing::warn!(sale_id = %sale.id, %error, "could not reconcile pending reservations; will retry");
            }
            let sold_out = self
                .slot(sale.id)
                .is_some_and(|slot| slot.sold_out.load(Ordering::Relaxed));
            match self.backends.stock.available(sale.id).await {
                Ok(available) => {
                    open.insert(sale.id);
                    if available > 0
                        && sold_out
                        && let Some(slot) = self.slot(sale.id)
                    {
                        slot.sold_out.store(false, Ordering::Relaxed);
                    }
                }
                Err(error) => {
                    tracing::warn!(sale_id = %sale.id, %error, "stock ledger unavailable; buys of this sale get 503 until it is back");
                    lost.push(sale);
                }
            }
        }
        self.pending_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(sale, _), _| open.contains(sale));
        if lost.is_empty() {
            return Ok(());
        }
        // Every reserve of a lost ledger fails ("unknown sale"), so nothing new is taken while
        // we wait; what was acknowledged before the loss reaches the queue within the fence.
        tokio::time::sleep(Duration::from_millis(cluster.rebuild_fence_ms)).await;
        let ids: Vec<SaleId> = lost.iter().map(|s| s.id).collect();
        let mut holdings = self.durable_holdings(&ids).await?;
        for sale in lost {
            let holdings = holdings.remove(&sale.id).unwrap_or_default();
            let opened = self
                .backends
                .stock
                .open_sale(
                    sale.id,
                    sale.spec.stock,
                    sale.spec.per_buyer_limit,
                    holdings,
                    OpenMode::IfAbsent,
                )
                .await?;
            if opened == Opened::Installed {
                tracing::warn!(sale_id = %sale.id, "rebuilt the lost stock ledger from the order store and the queue");
            }
            let available = self.backends.stock.available(sale.id).await?;
            if let Some(slot) = self.slot(sale.id) {
                slot.sold_out.store(available == 0, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// The reconciler: settles reservations of `sale` that stayed pending longer than
    /// `cluster.rebuild_fence_ms` (longer than any enqueue can take), because the node that
    /// took them died between the take and the enqueue's answer, or the answer was unknown.
    ///
    /// A reservation found in the store or the queue is durable: confirm it. Otherwise void
    /// its order id in the queue, so a late enqueue of it can never become durable, and then
    /// give its unit back. If the queue says something was stored under the id before, look
    /// again: the reservation itself (confirm), or a tombstone another node's reconciler wrote
    /// (give the unit back, which is idempotent).
    async fn reconcile_pending(
        &self,
        sale: &Sale,
        cluster: &ClusterConfig,
    ) -> Result<(), ServiceError> {
        let pending = self.backends.stock.pending_orders(sale.id).await?;
        let deadline = Duration::from_millis(cluster.rebuild_fence_ms);
        let overdue: Vec<PendingReservation> = {
            let mut seen = self.pending_seen.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            let pending: HashSet<PendingReservation> = pending.into_iter().collect();
            let orders: HashSet<OrderId> = pending.iter().map(|p| p.order).collect();
            seen.retain(|(s, order), _| *s != sale.id || orders.contains(order));
            pending
                .into_iter()
                .filter(|p| {
                    let first_seen = *seen.entry((sale.id, p.order)).or_insert(now);
                    now.duration_since(first_seen) >= deadline
                })
                .collect()
        };
        let mut by_batch: HashMap<BatchId, Vec<OrderId>> = HashMap::new();
        for p in overdue {
            by_batch.entry(p.batch).or_default().push(p.order);
        }
        for (batch, orders) in by_batch {
            let (mut durable, mut unknown) = (Vec::new(), Vec::new());
            for order in orders {
                if self.is_durable(batch, order).await? {
                    durable.push(order);
                } else {
                    unknown.push(order);
                }
            }
            let mut released = Vec::new();
            if !unknown.is_empty() {
                match self.backends.queue.void(batch).await? {
                    VoidOutcome::Voided => released = unknown,
                    // The batch landed after all, or another node's reconciler voided it
                    // first: look again.
                    VoidOutcome::AlreadyStored => {
                        for order in unknown {
                            if self.is_durable(batch, order).await? {
                                durable.push(order);
                            } else {
                                released.push(order);
                            }
                        }
                    }
                }
            }
            // Released before confirmed: a confirm may mark the whole batch durable.
            let stock = &self.backends.stock;
            if !released.is_empty() {
                stock.cancel_pending(sale.id, &released).await?;
                self.metrics
                    .reconciled_released
                    .increment(released.len() as u64);
                if let Some(slot) = self.slot(sale.id) {
                    slot.sold_out.store(false, Ordering::Relaxed);
                }
                tracing::warn!(sale_id = %sale.id, %batch, units = released.len(), "reconciler gave back the units of reservations that never became durable");
            }
            if !durable.is_empty() {
                stock.confirm(sale.id, batch, &durable).await?;
                self.metrics
                    .reconciled_confirmed
                    .increment(durable.len() as u64);
                tracing::warn!(sale_id = %sale.id, %batch, units = durable.len(), "reconciler confirmed reservations left pending");
            }
        }
        Ok(())
    }

    /// Whether the reservation is in the queue (in its batch) or the store. The queue is asked
    /// first: a writer inserts the order before it acks the message, so this order of lookups
    /// never misses a reservation moving between the two (the other order did, and the
    /// reconciler gave back the unit of a written order: found by the scaled-out kill cycles).
    async fn is_durable(&self, batch: BatchId, order: OrderId) -> Result<bool, ServiceError> {
        Ok(self.backends.queue.find(batch, order).await?.is_some()
            || self.backends.store.get_order(order).await?.is_some())
    }

    /// Gives back this node's stock leases of sales that have ended, once per sale.
    async fn release_ended_leases(&self, sales: &[Sale], now: Timestamp) {
        for sale in sales {
            if sale.phase(now, true) != Phase::Ended {
                continue;
            }
            let newly_ended = self
                .leases_released
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(sale.id);
            if newly_ended && let Err(error) = self.backends.stock.release_lease(sale.id).await {
                tracing::warn!(sale_id = %sale.id, %error, "could not give back the stock lease of an ended sale; it comes back when it expires");
            }
        }
    }

    // ----- shutdown -----

    /// Graceful shutdown: stop the reaper, let the writers drain the queue (bounded by the
    /// drain timeout), then stop them.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        // The server has stopped taking requests: what this node holds beyond its reservations
        // goes back for the other nodes now, not when its leases expire.
        for sale in self.sale_ids() {
            if let Err(error) = self.backends.stock.release_lease(sale).await {
                tracing::warn!(sale_id = %sale, %error, "could not give back a stock lease at shutdown; it comes back when it expires");
            }
        }
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.config.drain_timeout_ms);
        if self.writers.count() == 0 {
            self.writers.set_count(1).await;
        }
        while self.backends.queue.depth() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.backends.queue.depth();
        if left > 0 {
            tracing::warn!(
                left,
                "shutting down with reservations still queued; they are durable and will be written at the next start"
            );
        }
        self.writers.stop_all().await;
    }
}

fn view(order: &Order) -> OrderView {
    OrderView {
        id: order.id,
        sale_id: order.sale_id,
        status: order.status.into(),
        expires_at: order.expires_at,
    }
}

/// Most of this node's sales `Shop::order` asks the stock ledger about for an order not yet
/// written: the newest ones, where orders are being written now.
const ORDER_LOOKUP_SALES_MAX: usize = 16;

fn answer_all(requests: Vec<BuyRequest>, outcome: Result<BuyOutcome, ServiceError>) {
    for request in requests {
        request.answer(outcome.clone());
    }
}

/// Buys that may wait for a batch before new ones are refused (503): enough to fill every
/// batch in flight twice over.
fn batcher_waiting_max(config: &ReservationConfig) -> usize {
    config.batch_max.get() * config.batches_in_flight_max.get() * 2
}

/// The group commit of the reservation layer: gathers the buys waiting when a batch slot is
/// free (at most `batch_max`, of one sale each) and runs them as one batch. While
/// `batches_in_flight_max` batches run, new buys wait and join the next one, so batches grow
/// with the load and a buy at a quiet moment runs alone at once. Ends when the shop is dropped.
async fn run_batcher(
    shop: Weak<Shop>,
    mut waiting: mpsc::Receiver<BuyRequest>,
    config: ReservationConfig,
) {
    let slots = Arc::new(Semaphore::new(config.batches_in_flight_max.get()));
    let batch_max = config.batch_max.get();
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = waiting.recv().await else {
            return;
        };
        let mut gathered = vec![first];
        while gathered.len() < batch_max {
            match waiting.try_recv() {
                Ok(request) => gathered.push(request),
                Err(_) => break,
            }
        }
        let Some(shop) = shop.upgrade() else {
            return;
        };
        let mut by_sale: HashMap<SaleId, Vec<BuyRequest>> = HashMap::new();
        for request in gathered {
            by_sale
                .entry(request.slot.sale.id)
                .or_default()
                .push(request);
        }
        let mut first_permit = Some(permit);
        for (_, requests) in by_sale {
            let permit = match first_permit.take() {
                Some(permit) => permit,
                // A second sale in the same gathering needs a slot of its own.
                None => match slots.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let shop = shop.clone();
            let batch = BatchId::new_v7(shop.now());
            tokio::spawn(async move {
                // A panic inside costs this batch (its callers hear "ended without an answer";
                // its units are as after a crash), never the batcher.
                shop.run_batch(batch, requests).await;
                drop(permit);
            });
        }
    }
}

/// How often the reaper's loop also forgets idle rate-limiter keys.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(10);

/// Runs `sync_once` every `sale_sync_ms` until the shop shuts down or is dropped.
async fn run_sync(shop: Weak<Shop>, cluster: ClusterConfig) {
    let interval = Duration::from_millis(cluster.sale_sync_ms.get().max(10));
    loop {
        let Some(cancelled) = shop.upgrade().map(|s| s.shutdown.clone()) else {
            return;
        };
        tokio::select! {
            _ = cancelled.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let Some(strong) = shop.upgrade() else { return };
        if let Err(error) = strong.sync_once(&cluster).await {
            tracing::warn!(%error, "sale sync failed; will retry");
        }
    }
}

async fn run_reaper(shop: Arc<Shop>) {
    let interval = Duration::from_millis(shop.config.reaper.interval_ms.get().max(10));
    let mut last_housekeeping = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shop.shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if last_housekeeping.elapsed() >= HOUSEKEEPING_INTERVAL {
            shop.housekeeping();
            last_housekeeping = tokio::time::Instant::now();
        }
        // A task per sweep, so a panic costs that sweep (the next one repairs it), not the
        // reaper.
        match tokio::spawn({
            let shop = shop.clone();
            async move { shop.reap_once().await }
        })
        .await
        {
            Ok(Ok(0)) => {}
            Ok(Ok(expired)) => tracing::info!(expired, "reaper expired unpaid orders"),
            Ok(Err(error)) => tracing::warn!(%error, "reaper sweep failed; will retry"),
            Err(error) => tracing::error!(%error, "reaper sweep failed inside; will retry"),
        }
    }
}
