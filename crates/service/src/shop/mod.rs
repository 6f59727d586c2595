//! The sale service: the buy flow, orders and payment, admin changes, the reaper and recovery.
//!
//! `Shop` composes the ports. It holds each sale's definition in memory (the status endpoint
//! and the buy path never read the store) and keeps the stock ledger in step with admin edits.

mod admin;
mod batch;
mod buy;
mod orders;
mod reaper;
mod recovery;
mod table;

pub use crate::config::{ClusterConfig, Design, ReaperConfig, ReservationConfig, ShopConfig};
use crate::filters::{LayerMetrics, Limiters};
use crate::ports::{
    BackendError, Clock, OpenMode, Opened, OrderStore, PendingReservation, ReservationQueue,
    StockLedger, VoidOutcome,
};
use crate::ttl_cache::TtlCache;
use crate::writers::WriterPool;
pub use admin::{AdminError, SaleCounters, SaleView};
use batch::{BuyRequest, batcher_waiting_max, run_batcher};
use buy::WindowCache;
use flashsale_core::tokens::BuyPathSigner;
use flashsale_core::{BatchId, OrderId, Phase, Sale, SaleId, Timestamp};
pub use orders::{OrderView, OrderViewStatus, PayAnswer};
use reaper::run_reaper;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use table::SaleTable;
use tokio::sync::mpsc;
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

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The sale service of one node.
pub struct Shop {
    backends: Backends,
    config: ShopConfig,
    /// The sales, their sold-out flags and the orders accepted here.
    table: SaleTable,
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
            table: SaleTable::new(signer, config.filters.clone()),
            writers,
            backends,
            config,
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

    pub fn now(&self) -> Timestamp {
        self.backends.clock.now()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.shutdown.is_cancelled()
    }

    /// The sale's definition, for the sale page.
    pub fn sale(&self, id: SaleId) -> Option<Sale> {
        self.table.get(id).map(|slot| slot.sale.clone())
    }

    /// The status endpoint's answer; reads memory only.
    pub fn status(&self, id: SaleId) -> Option<SaleStatus> {
        let slot = self.table.get(id)?;
        let now = self.now();
        let phase = slot.sale.phase(now, !slot.is_sold_out());
        Some(SaleStatus {
            sale_id: id,
            phase,
            server_time: now,
            starts_at: slot.sale.spec.starts_at,
            ends_at: slot.sale.spec.ends_at,
            buy_token: (phase == Phase::Live).then(|| slot.buy_token.clone()),
        })
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
                let current = self.table.get(sale.id);
                if current
                    .as_ref()
                    .is_none_or(|slot| slot.sale.version < sale.version)
                {
                    let sold_out = current.is_some_and(|slot| slot.is_sold_out());
                    self.table.install(sale.clone(), sold_out);
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
            let sold_out = self.table.is_sold_out(sale.id);
            match self.backends.stock.available(sale.id).await {
                Ok(available) => {
                    open.insert(sale.id);
                    if available > 0 && sold_out {
                        self.table.units_came_back(sale.id);
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
            if let Some(slot) = self.table.get(sale.id) {
                slot.set_sold_out(available == 0);
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
                self.table.units_came_back(sale.id);
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
        for sale in self.table.ids() {
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

/// Runs `sync_once` every `sale_sync_ms` until the shop shuts down or is dropped.
async fn run_sync(shop: Weak<Shop>, cluster: ClusterConfig) {
    let interval = Duration::from_millis(cluster.sale_sync_ms.max(10));
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
