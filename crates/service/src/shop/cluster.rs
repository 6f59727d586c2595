//! Keeping in step with other nodes on shared backends: the sync pass (sales changed on other
//! nodes, sold-out flags, lost ledgers rebuilt), the reconciler of reservations left pending,
//! and the release of this node's stock leases.

use super::{ServiceError, Shop};
use crate::config::ClusterConfig;
use crate::layers::NodeOutcome;
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
    /// Live sales whose stock ledger the backend lost, each with the time its rebuild is due
    /// (when this node first found it missing, plus the fence). A deadline, not a sleep: the
    /// sync pass goes on reconciling and releasing leases meanwhile, and the first pass after
    /// the deadline rebuilds. On tokio's clock, like the sleep it replaces.
    rebuild_due: Mutex<HashMap<SaleId, tokio::time::Instant>>,
}

impl ClusterState {
    pub(super) fn new(config: ClusterConfig) -> Self {
        Self {
            config,
            pending_seen: Mutex::new(HashMap::new()),
            leases_released: Mutex::new(HashSet::new()),
            rebuild_due: Mutex::new(HashMap::new()),
        }
    }

    /// Pause between sync passes.
    pub(super) fn sync_interval(&self) -> Duration {
        Duration::from_millis(self.config.sale_sync_ms.get().max(10))
    }

    /// Of the sales whose ledger this pass found missing, the ones whose fence has passed.
    /// Notes the deadline of a sale newly found missing, and forgets the sales whose ledger
    /// is back (rebuilt by another node) or that ended.
    fn lost_ledgers_due(&self, lost: Vec<Sale>, now: tokio::time::Instant) -> Vec<Sale> {
        let fence = Duration::from_millis(self.config.rebuild_fence_ms);
        let mut due = self.rebuild_due.lock().unwrap_or_else(|e| e.into_inner());
        due.retain(|sale, _| lost.iter().any(|s| s.id == *sale));
        lost.into_iter()
            .filter(|sale| {
                let rebuild_at = *due.entry(sale.id).or_insert_with(|| {
                    tracing::warn!(sale_id = %sale.id, fence_ms = self.config.rebuild_fence_ms, "stock ledger missing; rebuilding it once the fence has passed");
                    now + fence
                });
                now >= rebuild_at
            })
            .collect()
    }

    /// The ledger of this sale is back; its deadline is done with.
    fn rebuilt(&self, sale: SaleId) {
        self.rebuild_due
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&sale);
    }

    fn pending_seen(&self) -> MutexGuard<'_, HashMap<(SaleId, OrderId), Instant>> {
        self.pending_seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Shop {
    /// One sync pass: installs sales created or changed on other nodes, lowers this node's
    /// sold-out flag where units came back through another node, and rebuilds the ledgers of
    /// live sales that the stock backend lost (in the first pass after the fence; see
    /// `ClusterConfig`).
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
            // A line lost with its backend is said so here, before anyone asks.
            if let Err(error) = self.set_up_line(&sale, false).await {
                tracing::warn!(sale_id = %sale.id, %error, "could not check the sale's line; will retry");
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
        // Every reserve of a lost ledger fails ("unknown sale"), so nothing new is taken while
        // we wait; what was acknowledged before the loss reaches the queue within the fence.
        let due = cluster.lost_ledgers_due(lost, tokio::time::Instant::now());
        if due.is_empty() {
            return Ok(());
        }
        self.rebuild_lost_ledgers(cluster, due).await
    }

    /// Rebuilds the ledgers the stock backend lost from the store and the queue. A ledger
    /// that is back meanwhile (another node rebuilt it) is adopted, not replaced.
    async fn rebuild_lost_ledgers(
        &self,
        cluster: &ClusterState,
        lost: Vec<Sale>,
    ) -> Result<(), ServiceError> {
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
            cluster.rebuilt(sale.id);
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
                self.counters
                    .node(NodeOutcome::ReconciledReleased, released.len() as u64);
                self.table.units_came_back(sale.id);
                tracing::warn!(sale_id = %sale.id, %batch, units = released.len(), "reconciler gave back the units of reservations that never became durable");
            }
            if !durable.is_empty() {
                stock.confirm(sale.id, batch, &durable).await?;
                self.counters
                    .node(NodeOutcome::ReconciledConfirmed, durable.len() as u64);
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

#[cfg(test)]
mod tests {
    use super::*;
    use flashsale_core::SaleSpec;
    use time::macros::datetime;

    fn sale(n: u128) -> Sale {
        let spec = SaleSpec {
            name: "Phone".into(),
            price_cents: 9_900,
            stock: 10,
            starts_at: datetime!(2030-01-01 12:00 UTC),
            ends_at: datetime!(2030-01-01 13:00 UTC),
            per_buyer_limit: 1,
            payment_window_secs: 600,
            waiting_room: None,
        };
        Sale::new(SaleId(uuid::Uuid::from_u128(n)), spec).expect("a valid spec")
    }

    fn cluster(rebuild_fence_ms: u64) -> ClusterState {
        ClusterState::new(ClusterConfig {
            sale_sync_ms: std::num::NonZeroU64::new(100).expect("not zero"),
            rebuild_fence_ms,
        })
    }

    fn ids(sales: &[Sale]) -> Vec<SaleId> {
        sales.iter().map(|s| s.id).collect()
    }

    #[test]
    fn a_lost_ledger_is_due_in_the_first_pass_after_the_fence() {
        let cluster = cluster(1_500);
        let found = tokio::time::Instant::now();
        let ms = Duration::from_millis;

        assert!(cluster.lost_ledgers_due(vec![sale(1)], found).is_empty());
        let before = cluster.lost_ledgers_due(vec![sale(1)], found + ms(1_499));
        assert!(before.is_empty());
        let due = cluster.lost_ledgers_due(vec![sale(1)], found + ms(1_500));
        assert_eq!(ids(&due), ids(&[sale(1)]));
    }

    #[test]
    fn a_ledger_back_in_between_starts_a_fresh_fence_when_lost_again() {
        let cluster = cluster(1_500);
        let found = tokio::time::Instant::now();
        let ms = Duration::from_millis;

        assert!(cluster.lost_ledgers_due(vec![sale(1)], found).is_empty());
        // Another node rebuilt it: this pass found it, so nothing is lost.
        assert!(cluster.lost_ledgers_due(vec![], found + ms(100)).is_empty());
        let again = cluster.lost_ledgers_due(vec![sale(1)], found + ms(1_600));
        assert!(again.is_empty(), "a new loss waits for a whole fence");
        let due = cluster.lost_ledgers_due(vec![sale(1)], found + ms(3_100));
        assert_eq!(ids(&due), ids(&[sale(1)]));
    }

    #[test]
    fn a_rebuilt_ledger_forgets_its_deadline() {
        let cluster = cluster(0);
        let now = tokio::time::Instant::now();

        let due = cluster.lost_ledgers_due(vec![sale(1), sale(2)], now);
        assert_eq!(ids(&due), ids(&[sale(1), sale(2)]));
        cluster.rebuilt(sale(1).id);
        let left: Vec<SaleId> = cluster
            .rebuild_due
            .lock()
            .expect("not poisoned")
            .keys()
            .copied()
            .collect();
        assert_eq!(left, vec![sale(2).id]);
    }
}
