//! Admin changes and views: create, patch, start and stop a sale (the store, the ledger and
//! the sale table move together under the admin lock), the sale view with its counters, and
//! the writer count.

use super::{ServiceError, Shop};
use crate::layers::LayerCounts;
use crate::ports::{BackendError, OpenMode, OrderCounts};
use flashsale_core::sale::ChangeError;
use flashsale_core::{Order, Phase, Sale, SaleId, SalePatch, SaleSpec, SpecError, Timestamp};

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

impl Shop {
    pub async fn create_sale(&self, spec: SaleSpec) -> Result<SaleView, AdminError> {
        let _admin = self.admin.lock().await;
        let sale = Sale::new(SaleId::new_v7(self.now()), spec)?;
        self.backends.store.create_sale(&sale).await?;
        self.open_ledger(&sale, Vec::new(), OpenMode::IfAbsent)
            .await?;
        self.set_up_line(&sale, true).await?;
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
        let slot = self.table.get(id).ok_or(AdminError::NotFound)?;
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
            self.table.install(changed.clone(), slot.is_sold_out());
        }
        self.set_up_line(&changed, true).await?;
        self.view_of(&changed).await
    }

    pub async fn sale_view(&self, id: SaleId) -> Result<SaleView, AdminError> {
        let slot = self.table.get(id).ok_or(AdminError::NotFound)?;
        self.view_of(&slot.sale).await
    }

    pub async fn list_sales(&self) -> Result<Vec<SaleView>, AdminError> {
        let mut slots = self.table.slots();
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
            .table
            .get(sale.id)
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
        self.table.get(id).ok_or(AdminError::NotFound)?;
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
}
