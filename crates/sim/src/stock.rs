//! `SimStock`: the stock ledger as plain in-memory data, the way the embedded in-process
//! ledger holds it, lost at every simulated node restart. It can also run the **check-then-act
//! canary**: a reserve that reads what is available, yields, and then takes without checking
//! again, so two concurrent buys can both take the last unit.

use async_trait::async_trait;
use flashsale_core::{
    BatchId, BuyerId, OrderId, ReservationState, ReserveOutcome, ReturnOutcome, SaleId,
};
use flashsale_service::{
    BackendError, BackendResult, Buy, Holding, LedgerEntry, OpenMode, Opened, PendingReservation,
    StockLedger,
};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

const BACKEND: &str = "simulated stock";

/// How `reserve` takes a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveMode {
    /// Check and take in one step, as every real backend must.
    Atomic,
    /// The canary: check, yield to other tasks, then take what the check saw.
    CheckThenAct,
}

/// One sale's ledger. BTreeMaps, not HashMaps: nothing here may depend on a random hasher.
#[derive(Debug, Clone)]
pub struct SaleStock {
    pub stock_total: u32,
    pub per_buyer_limit: u32,
    pub available: u32,
    pub reservations: BTreeMap<OrderId, (BuyerId, ReservationState)>,
    /// The batch each reservation was taken for, or found queued in at a restore.
    pub batches: BTreeMap<OrderId, BatchId>,
}

impl SaleStock {
    fn live_of(&self, buyer: &BuyerId) -> u32 {
        let live = self
            .reservations
            .values()
            .filter(|(b, state)| b == buyer && *state != ReservationState::Returned)
            .count();
        u32::try_from(live).unwrap_or(u32::MAX)
    }
}

#[derive(Debug)]
pub struct SimStock {
    mode: ReserveMode,
    sales: Mutex<BTreeMap<SaleId, SaleStock>>,
}

impl SimStock {
    pub fn new(mode: ReserveMode) -> Self {
        Self {
            mode,
            sales: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<SaleId, SaleStock>> {
        self.sales.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of one sale's ledger, for the invariant checker.
    pub fn snapshot(&self, sale: SaleId) -> Option<SaleStock> {
        self.lock().get(&sale).cloned()
    }

    fn with_sale<T>(&self, sale: SaleId, f: impl FnOnce(&mut SaleStock) -> T) -> BackendResult<T> {
        let mut sales = self.lock();
        let ledger = sales
            .get_mut(&sale)
            .ok_or_else(|| BackendError::determinate(BACKEND, format!("unknown sale {sale}")))?;
        Ok(f(ledger))
    }

    /// The duplicate and limit checks, then the take. `seen_available` is what the stock check
    /// saw: the current value when atomic, an older one in the canary.
    fn take(
        ledger: &mut SaleStock,
        buy: &Buy,
        batch: BatchId,
        seen_available: u32,
    ) -> ReserveOutcome {
        let (order, buyer) = (buy.order, &buy.buyer);
        if let Some((_, state)) = ledger.reservations.get(&order) {
            return ReserveOutcome::Duplicate(*state);
        }
        if seen_available == 0 {
            return ReserveOutcome::SoldOut;
        }
        if ledger.live_of(buyer) >= ledger.per_buyer_limit {
            return ReserveOutcome::LimitReached;
        }
        // Written from what the check saw: right when atomic, a lost update in the canary.
        ledger.available = seen_available - 1;
        ledger
            .reservations
            .insert(order, (buyer.clone(), ReservationState::Pending));
        ledger.batches.insert(order, batch);
        ReserveOutcome::Reserved
    }
}

#[async_trait]
impl StockLedger for SimStock {
    async fn open_sale(
        &self,
        sale: SaleId,
        stock_total: u32,
        per_buyer_limit: u32,
        holdings: Vec<Holding>,
        mode: OpenMode,
    ) -> BackendResult<Opened> {
        // The same rules as `SaleLedger::restore`: an order listed twice counts once, live if
        // either listing says so.
        let mut reservations: BTreeMap<OrderId, (BuyerId, ReservationState)> = BTreeMap::new();
        let mut batches = BTreeMap::new();
        for holding in holdings {
            if let Some(batch) = holding.batch {
                batches.insert(holding.order_id, batch);
            }
            let state = if holding.live {
                ReservationState::Durable
            } else {
                ReservationState::Returned
            };
            let entry = reservations
                .entry(holding.order_id)
                .or_insert((holding.buyer, state));
            if holding.live {
                entry.1 = ReservationState::Durable;
            }
        }
        let live = reservations
            .values()
            .filter(|(_, state)| *state == ReservationState::Durable)
            .count();
        let live = u32::try_from(live).unwrap_or(u32::MAX);
        if live > stock_total {
            return Err(BackendError::determinate(
                BACKEND,
                format!("sale {sale}: {live} live reservations for a stock of {stock_total}"),
            ));
        }
        let mut sales = self.lock();
        if mode == OpenMode::IfAbsent && sales.contains_key(&sale) {
            return Ok(Opened::AlreadyOpen);
        }
        sales.insert(
            sale,
            SaleStock {
                stock_total,
                per_buyer_limit,
                available: stock_total - live,
                reservations,
                batches,
            },
        );
        Ok(Opened::Installed)
    }

    async fn reserve(
        &self,
        sale: SaleId,
        batch: BatchId,
        buys: &[Buy],
    ) -> BackendResult<Vec<ReserveOutcome>> {
        match self.mode {
            ReserveMode::Atomic => self.with_sale(sale, |ledger| {
                buys.iter()
                    .map(|buy| {
                        let available = ledger.available;
                        Self::take(ledger, buy, batch, available)
                    })
                    .collect()
            }),
            ReserveMode::CheckThenAct => {
                let mut seen = self.with_sale(sale, |ledger| ledger.available)?;
                // The bug: another buy may take the unit while this one is away.
                tokio::task::yield_now().await;
                self.with_sale(sale, |ledger| {
                    buys.iter()
                        .map(|buy| {
                            let outcome = Self::take(ledger, buy, batch, seen);
                            if outcome == ReserveOutcome::Reserved {
                                seen -= 1;
                            }
                            outcome
                        })
                        .collect()
                })
            }
        }
    }

    async fn confirm(
        &self,
        sale: SaleId,
        _batch: BatchId,
        orders: &[OrderId],
    ) -> BackendResult<()> {
        self.with_sale(sale, |ledger| {
            for order in orders {
                if let Some((_, state)) = ledger.reservations.get_mut(order)
                    && *state == ReservationState::Pending
                {
                    *state = ReservationState::Durable;
                }
            }
        })
    }

    async fn cancel_pending(&self, sale: SaleId, orders: &[OrderId]) -> BackendResult<()> {
        self.with_sale(sale, |ledger| {
            for order in orders {
                if let Some((_, ReservationState::Pending)) = ledger.reservations.get(order) {
                    ledger.reservations.remove(order);
                    ledger.batches.remove(order);
                    ledger.available += 1;
                }
            }
        })
    }

    async fn return_unit(&self, sale: SaleId, order: OrderId) -> BackendResult<ReturnOutcome> {
        self.with_sale(sale, |ledger| match ledger.reservations.get_mut(&order) {
            None => ReturnOutcome::Unknown,
            Some((_, ReservationState::Returned)) => ReturnOutcome::AlreadyReturned,
            // Pending too: see `SaleLedger::return_unit`.
            Some((_, state)) => {
                *state = ReservationState::Returned;
                ledger.available += 1;
                ReturnOutcome::Returned
            }
        })
    }

    async fn available(&self, sale: SaleId) -> BackendResult<u32> {
        self.with_sale(sale, |ledger| ledger.available)
    }

    async fn pending_orders(&self, sale: SaleId) -> BackendResult<Vec<PendingReservation>> {
        self.with_sale(sale, |ledger| {
            ledger
                .reservations
                .iter()
                .filter(|(_, (_, state))| *state == ReservationState::Pending)
                .filter_map(|(order, _)| {
                    ledger.batches.get(order).map(|&batch| PendingReservation {
                        order: *order,
                        batch,
                    })
                })
                .collect()
        })
    }

    async fn entry(&self, sale: SaleId, order: OrderId) -> BackendResult<Option<LedgerEntry>> {
        self.with_sale(sale, |ledger| {
            ledger
                .reservations
                .get(&order)
                .map(|(buyer, state)| LedgerEntry {
                    state: *state,
                    buyer: buyer.clone(),
                    batch: ledger.batches.get(&order).copied(),
                })
        })
    }
}
