//! The reaper: expires unpaid orders and returns each unit exactly once, repairs sweeps that
//! stopped halfway, and runs the housekeeping of the filters on its loop.

use super::{ServiceError, Shop};
use crate::faults;
use crate::layers::NodeOutcome;
use crate::ports::BackendError;
use flashsale_core::{OrderId, ReturnOutcome, SaleId};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How often the reaper's loop also forgets idle rate-limiter keys.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(10);

impl Shop {
    /// Forgets idle rate-limiter keys and expired window answers (called by the reaper's loop).
    pub fn housekeeping(&self) {
        self.limiters.forget_idle_keys();
        if let Some(window) = &self.window {
            window.forget_expired();
        }
    }

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
                self.counters.node(NodeOutcome::Expired, 1);
                self.table.units_came_back(sale);
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
            .table
            .slots()
            .into_iter()
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
}

/// Sweeps every `reaper.interval_ms` until the shop shuts down.
pub(super) async fn run_reaper(shop: Arc<Shop>) {
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
