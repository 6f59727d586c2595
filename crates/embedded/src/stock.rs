//! `InProcessStock`: the embedded stock ledger, one `SaleLedger` per sale behind a mutex.

use async_trait::async_trait;
use flashsale_core::{BatchId, OrderId, ReserveOutcome, ReturnOutcome, SaleId, SaleLedger};
use flashsale_service::{
    BackendError, BackendResult, Buy, Holding, LedgerEntry, OpenMode, Opened, PendingReservation,
    StockLedger,
};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

const BACKEND: &str = "in-process stock";

/// Stock and per-buyer limits held in this process.
///
/// A std `Mutex`, not a tokio one: every operation is a few hash-map steps on plain data, far
/// shorter than an async lock's bookkeeping, and no method holds the guard across an `.await`
/// (none awaits at all), so a worker thread never parks on it for long and the lock can never
/// be held by a suspended task. One lock for all sales is enough: a flash sale is one hot sale,
/// so per-sale locks would not spread the load.
#[derive(Debug, Default)]
pub struct InProcessStock {
    sales: Mutex<HashMap<SaleId, SaleLedger>>,
}

impl InProcessStock {
    pub fn new() -> Self {
        Self::default()
    }

    fn sales(&self) -> BackendResult<MutexGuard<'_, HashMap<SaleId, SaleLedger>>> {
        // A panic while the lock was held may have left a ledger half-changed. Refusing to go
        // on is the safe answer: selling from a corrupt ledger could oversell.
        self.sales.lock().map_err(|_| {
            BackendError::determinate(BACKEND, "the ledger lock was poisoned by an earlier panic")
        })
    }

    /// Runs `f` on the sale's ledger; an unknown sale is a determinate error.
    fn with_sale<T>(&self, sale: SaleId, f: impl FnOnce(&mut SaleLedger) -> T) -> BackendResult<T> {
        let mut sales = self.sales()?;
        let ledger = sales
            .get_mut(&sale)
            .ok_or_else(|| BackendError::determinate(BACKEND, format!("unknown sale {sale}")))?;
        Ok(f(ledger))
    }
}

#[async_trait]
impl StockLedger for InProcessStock {
    async fn open_sale(
        &self,
        sale: SaleId,
        stock_total: u32,
        per_buyer_limit: u32,
        holdings: Vec<Holding>,
        mode: OpenMode,
    ) -> BackendResult<Opened> {
        // Built outside the lock: restoring a big sale must not stall buyers of another one.
        let ledger = SaleLedger::restore(stock_total, per_buyer_limit, holdings)
            .map_err(|e| BackendError::determinate(BACKEND, format!("sale {sale}: {e}")))?;
        let mut sales = self.sales()?;
        if mode == OpenMode::IfAbsent && sales.contains_key(&sale) {
            return Ok(Opened::AlreadyOpen);
        }
        sales.insert(sale, ledger);
        Ok(Opened::Installed)
    }

    async fn reserve(
        &self,
        sale: SaleId,
        batch: BatchId,
        buys: &[Buy],
    ) -> BackendResult<Vec<ReserveOutcome>> {
        // One lock for the whole batch: that is what batching buys here.
        self.with_sale(sale, |ledger| {
            buys.iter()
                .map(|buy| ledger.reserve(buy.order, &buy.buyer, batch))
                .collect()
        })
    }

    async fn confirm(
        &self,
        sale: SaleId,
        _batch: BatchId,
        orders: &[OrderId],
    ) -> BackendResult<()> {
        // `false` means already confirmed (or not pending): confirm is idempotent.
        self.with_sale(sale, |ledger| {
            for &order in orders {
                ledger.confirm(order);
            }
        })
    }

    async fn cancel_pending(&self, sale: SaleId, orders: &[OrderId]) -> BackendResult<()> {
        self.with_sale(sale, |ledger| {
            for &order in orders {
                ledger.cancel_pending(order);
            }
        })
    }

    async fn return_unit(&self, sale: SaleId, order: OrderId) -> BackendResult<ReturnOutcome> {
        self.with_sale(sale, |ledger| ledger.return_unit(order))
    }

    async fn available(&self, sale: SaleId) -> BackendResult<u32> {
        self.with_sale(sale, |ledger| ledger.available())
    }

    async fn pending_orders(&self, sale: SaleId) -> BackendResult<Vec<PendingReservation>> {
        self.with_sale(sale, |ledger| {
            ledger
                .pending_orders()
                .into_iter()
                .map(|(order, batch)| PendingReservation { order, batch })
                .collect()
        })
    }

    async fn entry(&self, sale: SaleId, order: OrderId) -> BackendResult<Option<LedgerEntry>> {
        self.with_sale(sale, |ledger| ledger.entry(order))
    }
}
