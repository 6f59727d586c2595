//! The sale service: the buy flow, orders and payment, admin changes, the reaper and recovery.
//!
//! `Shop` composes the ports. It holds each sale's definition in memory (the status endpoint
//! and the buy path never read the store) and keeps the stock ledger in step with admin edits.

use crate::ports::{
    BackendError, Clock, Enqueued, Holding, OrderCounts, OrderStore, PayOutcome, ReservationQueue,
    StockLedger,
};
use crate::writers::{WriterConfig, WriterPool};
use flashsale_core::sale::ChangeError;
use flashsale_core::tokens::BuyPathSigner;
use flashsale_core::{
    BuyerId, IdempotencyKey, Order, OrderId, OrderStatus, PaymentId, Phase, Reservation,
    ReservationState, ReserveOutcome, ReturnOutcome, Sale, SaleId, SalePatch, SaleSpec, SpecError,
    Timestamp,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaperConfig {
    /// Pause between sweeps for expired orders.
    pub interval_ms: u64,
    /// Most orders expired in one store call.
    pub batch_max: usize,
}

impl Default for ReaperConfig {
    fn default() -> Self {
        Self {
            interval_ms: 1000,
            batch_max: 500,
        }
    }
}

/// Everything the service needs to know, and nothing it does not.
#[derive(Clone)]
pub struct ShopConfig {
    /// Secret for buy-path tokens.
    pub buy_path_secret: Vec<u8>,
    pub writers: WriterConfig,
    pub reaper: ReaperConfig,
    /// Longest graceful shutdown waits for the queue to drain.
    pub drain_timeout_ms: u64,
}

/// The ports a shop runs on.
#[derive(Clone)]
pub struct Backends {
    pub stock: Arc<dyn StockLedger>,
    pub queue: Arc<dyn ReservationQueue>,
    pub store: Arc<dyn OrderStore>,
    pub clock: Arc<dyn Clock>,
}

/// Something broke in the service (never a business answer).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("state is inconsistent: {0}")]
    Corrupt(String),
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
    /// The durable queue is full, or could not take the reservation; nothing was taken.
    Overloaded,
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

/// One sale as the hot path sees it.
struct SaleSlot {
    sale: Sale,
    /// The buy-path token for the current schedule, derived once per version.
    buy_token: String,
    /// Set when a reservation found no stock; cleared when a unit comes back.
    sold_out: AtomicBool,
}

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
            config.writers.clone(),
        );
        let shop = Arc::new(Self {
            signer,
            writers,
            backends,
            config,
            sales: RwLock::new(HashMap::new()),
            admin: tokio::sync::Mutex::new(()),
            shutdown: CancellationToken::new(),
            ready: AtomicBool::new(false),
        });
        shop.recover().await?;
        shop.writers.set_count(shop.config.writers.count).await;
        tokio::spawn(run_reaper(shop.clone()));
        shop.ready.store(true, Ordering::Release);
        Ok(shop)
    }

    async fn recover(&self) -> Result<(), ServiceError> {
        let sales = self.backends.store.list_sales().await?;
        let mut queued: HashMap<SaleId, Vec<Holding>> = HashMap::new();
        for r in self.backends.queue.all_queued().await? {
            queued.entry(r.sale_id).or_default().push(Holding {
                order_id: r.order_id,
                buyer: r.buyer,
                live: true,
            });
        }
        for sale in sales {
            let mut holdings = self.backends.store.holdings(sale.id).await?;
            holdings.extend(queued.remove(&sale.id).unwrap_or_default());
            self.open_ledger(&sale, holdings).await?;
        }
        if !queued.is_empty() {
            return Err(ServiceError::Corrupt(format!(
                "the queue holds reservations for {} unknown sale(s)",
                queued.len()
            )));
        }
        Ok(())
    }

    async fn open_ledger(&self, sale: &Sale, holdings: Vec<Holding>) -> Result<(), ServiceError> {
        let stock = &self.backends.stock;
        stock
            .open_sale(
                sale.id,
                sale.spec.stock,
                sale.spec.per_buyer_limit,
                holdings,
            )
            .await?;
        let available = stock.available(sale.id).await?;
        self.install(sale.clone(), available == 0);
        Ok(())
    }

    fn install(&self, sale: Sale, sold_out: bool) {
        let slot = SaleSlot {
            buy_token: self.signer.token(sale.id, sale.spec.starts_at),
            sold_out: AtomicBool::new(sold_out),
            sale,
        };
        let mut sales = self.sales.write().unwrap_or_else(|e| e.into_inner());
        sales.insert(slot.sale.id, Arc::new(slot));
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

    /// The buy flow: check the path and the phase, take a unit, make the reservation durable,
    /// and only then accept. If it cannot be made durable, the unit goes back.
    pub async fn buy(
        &self,
        sale_id: SaleId,
        buy_token: &str,
        buyer: &BuyerId,
        key: &IdempotencyKey,
    ) -> Result<BuyOutcome, ServiceError> {
        let Some(slot) = self.slot(sale_id) else {
            return Ok(BuyOutcome::UnknownBuyPath);
        };
        if !bool::from(slot.buy_token.as_bytes().ct_eq(buy_token.as_bytes())) {
            return Ok(BuyOutcome::UnknownBuyPath);
        }
        let now = self.now();
        if !slot.sale.is_open(now) {
            return Ok(BuyOutcome::NotLive);
        }
        let order_id = OrderId::derive(sale_id, buyer, key);
        let stock = &self.backends.stock;
        match stock.reserve(sale_id, order_id, buyer).await? {
            ReserveOutcome::Reserved => {}
            ReserveOutcome::Duplicate(ReservationState::Pending) => {
                return Ok(BuyOutcome::InProgress);
            }
            ReserveOutcome::Duplicate(_) => {
                return Ok(BuyOutcome::Accepted {
                    order_id,
                    replay: true,
                });
            }
            ReserveOutcome::SoldOut => {
                slot.sold_out.store(true, Ordering::Relaxed);
                return Ok(BuyOutcome::SoldOut);
            }
            ReserveOutcome::LimitReached => return Ok(BuyOutcome::LimitReached),
        }
        let reservation = Reservation::new(
            order_id,
            sale_id,
            buyer.clone(),
            now,
            slot.sale.spec.payment_window_secs,
        );
        match self.backends.queue.enqueue(reservation).await {
            Ok(Enqueued::Durable) => {
                if let Err(error) = stock.confirm(sale_id, order_id).await {
                    // The reservation is durable and will become an order; a ledger entry left
                    // pending only makes retries of this request answer "in progress".
                    tracing::warn!(%error, %order_id, "could not mark a durable reservation confirmed");
                }
                Ok(BuyOutcome::Accepted {
                    order_id,
                    replay: false,
                })
            }
            Ok(Enqueued::Full) => {
                self.give_back_pending(&slot, order_id).await;
                Ok(BuyOutcome::Overloaded)
            }
            Err(error) if error.outcome_known => {
                tracing::warn!(%error, "durable queue refused a reservation");
                self.give_back_pending(&slot, order_id).await;
                Ok(BuyOutcome::Overloaded)
            }
            Err(error) => {
                // The reservation may be durable after all. Keeping the unit taken can strand
                // it until the next rebuild, but giving it back could oversell.
                tracing::error!(%error, %order_id, "durable queue outcome unknown; unit held");
                Ok(BuyOutcome::Overloaded)
            }
        }
    }

    async fn give_back_pending(&self, slot: &SaleSlot, order_id: OrderId) {
        match self
            .backends
            .stock
            .cancel_pending(slot.sale.id, order_id)
            .await
        {
            Ok(()) => slot.sold_out.store(false, Ordering::Relaxed),
            Err(error) => {
                tracing::error!(%error, %order_id, "could not give back a unit; it stays taken until rebuild")
            }
        }
    }

    /// The buyer's own order, or `None` (someone else's order looks the same as none).
    /// The queue is asked first: an order is written before it leaves the queue, so this
    /// order of lookups never misses one in between.
    pub async fn order(
        &self,
        buyer: &BuyerId,
        id: OrderId,
    ) -> Result<Option<OrderView>, ServiceError> {
        if let Some(r) = self.backends.queue.find(id).await? {
            if &r.buyer != buyer {
                return Ok(None);
            }
            return Ok(Some(OrderView {
                id,
                sale_id: r.sale_id,
                status: OrderViewStatus::Queued,
                expires_at: r.expires_at,
            }));
        }
        Ok(self
            .backends
            .store
            .get_order(id)
            .await?
            .filter(|o| &o.buyer == buyer)
            .map(|o| view(&o)))
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
                PayOutcome::Paid(order) => PayAnswer::Paid(view(&order)),
                PayOutcome::PaidByOtherPayment => PayAnswer::PaidByOtherPayment,
                PayOutcome::Expired => PayAnswer::Expired,
                PayOutcome::Cancelled => PayAnswer::Cancelled,
                PayOutcome::NotFound => match self.backends.queue.find(id).await? {
                    Some(r) if &r.buyer == buyer => PayAnswer::NotYetWritten,
                    _ => PayAnswer::NotFound,
                },
            },
        )
    }

    // ----- admin -----

    pub async fn create_sale(&self, spec: SaleSpec) -> Result<SaleView, AdminError> {
        let _admin = self.admin.lock().await;
        let sale = Sale::new(SaleId::new_v7(self.now()), spec)?;
        self.backends.store.create_sale(&sale).await?;
        self.open_ledger(&sale, Vec::new()).await?;
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
            self.open_ledger(&changed, holdings).await?;
        } else {
            self.install(changed.clone(), slot.sold_out.load(Ordering::Relaxed));
        }
        self.view_of(&changed).await
    }

    pub async fn sale_view(&self, id: SaleId) -> Result<SaleView, AdminError> {
        let slot = self.slot(id).ok_or(AdminError::NotFound)?;
        self.view_of(&slot.sale).await
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
        Ok(SaleView {
            sale: sale.clone(),
            phase: sale.phase(self.now(), available > 0),
            counters,
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
    pub async fn reap_once(&self) -> Result<usize, ServiceError> {
        let mut total = 0;
        loop {
            let expired = self
                .backends
                .store
                .expire_due(self.now(), self.config.reaper.batch_max)
                .await?;
            for order in &expired {
                match self
                    .backends
                    .stock
                    .return_unit(order.sale_id, order.id)
                    .await
                {
                    Ok(ReturnOutcome::Returned) => {
                        if let Some(slot) = self.slot(order.sale_id) {
                            slot.sold_out.store(false, Ordering::Relaxed);
                        }
                    }
                    Ok(outcome) => {
                        tracing::warn!(order_id = %order.id, ?outcome, "expired order had no unit to return")
                    }
                    // The order is expired in the store; the next rebuild returns the unit.
                    Err(error) => {
                        tracing::error!(%error, order_id = %order.id, "could not return a unit")
                    }
                }
            }
            total += expired.len();
            if expired.len() < self.config.reaper.batch_max {
                return Ok(total);
            }
        }
    }

    // ----- shutdown -----

    /// Graceful shutdown: stop the reaper, let the writers drain the queue (bounded by the
    /// drain timeout), then stop them.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
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

async fn run_reaper(shop: Arc<Shop>) {
    let interval = Duration::from_millis(shop.config.reaper.interval_ms.max(10));
    loop {
        tokio::select! {
            _ = shop.shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        match shop.reap_once().await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "reaper expired unpaid orders"),
            Err(error) => tracing::warn!(%error, "reaper sweep failed; will retry"),
        }
    }
}
