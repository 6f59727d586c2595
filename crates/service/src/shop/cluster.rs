//! Keeping in step with other nodes on shared backends: the sync pass (sales changed on other
//! nodes, sold-out flags, lost ledgers rebuilt), the reconciler of reservations left pending,
//! and the release of this node's stock leases.

use super::{ServiceError, Shop};
use crate::config::ClusterConfig;
use crate::ports::{OpenMode, Opened, PendingReservation, VoidOutcome};
use flashsale_core::{BatchId, OrderId, Phase, Sale, SaleId, Timestamp};
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// What only a scaled-out node keeps (`ShopConfig::cluster` is set): an embedded shop has
/// none of it.
pub(super) struct ClusterState {
    config: ClusterConfig,
    /// The reconciler's view: each pending reservation of an open sale and when this node
    /// first saw it pending (a monotonic instant: the deadline is about calls in flight, not
    /// about the sale's clock). A std mutex, never held across an await.
    pending_seen: Mutex<HashMap<(SaleId, OrderId), Instant>>,
    /// Sales whose end this node has seen and whose lease it gave back.
    leases_released: Mutex<HashSet<SaleId>>,
}

impl ClusterState {
    pub(super) fn new(config: ClusterConfig) -> Self {
        Self {
            config,
            pending_seen: Mutex::new(HashMap::new()),
            leases_released: Mutex::new(HashSet::new()),
        }
    }

    /// Pause between sync passes.
    pub(super) fn sync_interval(&self) -> Duration {
        Duration::from_millis(self.config.sale_sync_ms.max(10))
    }

    fn pending_seen(&self) -> MutexGuard<'_, HashMap<(SaleId, OrderId), Instant>> {
        self.pending_seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Shop {
    /// One sync pass: installs sales created or changed on other nodes, lowers this node's
    /// sold-out flag where units came back through another node, and rebuilds the ledgers of
    /// live sales that the stock backend lost (after the fence; see `ClusterConfig`).
    /// Does nothing on a shop without shared backends.
    pub async fn sync_once(&self) -> Result<(), ServiceError> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
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
        self.release_ended_leases(cluster, &sales, now).await;
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
        cluster
            .pending_seen()
            .retain(|(sale, _), _| open.contains(sale));
        if lost.is_empty() {
            return Ok(());
        }
        // Every reserve of a lost ledger fails ("unknown sale"), so nothing new is taken while
        // we wait; what was acknowledged before the loss reaches the queue within the fence.
        tokio::time::sleep(Duration::from_millis(cluster.config.rebuild_fence_ms)).await;
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
        cluster: &ClusterState,
    ) -> Result<(), ServiceError> {
        let pending = self.backends.stock.pending_orders(sale.id).await?;
        let deadline = Duration::from_millis(cluster.config.rebuild_fence_ms);
        let overdue: Vec<PendingReservation> = {
            let mut seen = cluster.pending_seen();
            let now = Instant::now();
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
    async fn release_ended_leases(&self, cluster: &ClusterState, sales: &[Sale], now: Timestamp) {
        for sale in sales {
            if sale.phase(now, true) != Phase::Ended {
                continue;
            }
            let newly_ended = cluster
                .leases_released
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(sale.id);
            if newly_ended && let Err(error) = self.backends.stock.release_lease(sale.id).await {
                tracing::warn!(sale_id = %sale.id, %error, "could not give back the stock lease of an ended sale; it comes back when it expires");
            }
        }
    }
}

/// Runs `sync_once` every `sale_sync_ms` until the shop shuts down or is dropped.
pub(super) async fn run_sync(shop: Weak<Shop>, interval: Duration) {
    loop {
        let Some(cancelled) = shop.upgrade().map(|s| s.shutdown.clone()) else {
            return;
        };
        tokio::select! {
            _ = cancelled.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let Some(strong) = shop.upgrade() else { return };
        if let Err(error) = strong.sync_once().await {
            tracing::warn!(%error, "sale sync failed; will retry");
        }
    }
}
