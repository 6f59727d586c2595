//! Reservation arithmetic for one sale: stock, the per-buyer limit and idempotency by order id.
//!
//! A `SaleLedger` is plain data. The embedded stock backend keeps one behind a mutex; the Redis
//! backend runs the same rules in Lua. Both are checked by the same conformance suite.

use crate::ids::{BatchId, BuyerId, OrderId};
use std::collections::HashMap;

/// Where one reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    /// The unit is taken; the reservation is not yet durable, so no buyer has been told yes.
    Pending,
    /// The reservation is durable: the buyer was (or will be) told yes, and it will be an order.
    Durable,
    /// The order expired or was cancelled and its unit went back on sale.
    Returned,
}

/// The answer to a reservation attempt. Business answers, not errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// A unit was taken for this order id; it is `Pending` until confirmed.
    Reserved,
    /// This order id was seen before; nothing changed. Carries where it stands.
    Duplicate(ReservationState),
    /// No unit left.
    SoldOut,
    /// The buyer already holds `per_buyer_limit` live reservations.
    LimitReached,
}

/// The answer to giving a unit back from an expired or cancelled order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnOutcome {
    Returned,
    /// It was returned before: nothing changed (this is what makes "exactly once" hold).
    AlreadyReturned,
    /// The ledger does not know the order.
    Unknown,
}

/// Recovery found more live reservations than there is stock: the durable state is corrupt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("recovery found {live} live reservations for a stock of {stock_total}")]
pub struct OverStockError {
    pub live: u64,
    pub stock_total: u32,
}

/// One known order of a sale, for rebuilding stock state: whether it still holds its unit, and
/// the batch it is queued in if it is still in the durable queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub order_id: OrderId,
    pub buyer: BuyerId,
    pub live: bool,
    /// Where the reservation waits in the queue; `None` once it is an order in the store.
    pub batch: Option<BatchId>,
}

/// What the ledger knows of one order id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub state: ReservationState,
    pub buyer: BuyerId,
    /// The batch the reservation was taken for (`reserve`) or found queued in (`restore`);
    /// `None` for an order restored from the store.
    pub batch: Option<BatchId>,
}

#[derive(Debug, Clone)]
struct Entry {
    buyer: BuyerId,
    state: ReservationState,
    batch: Option<BatchId>,
}

/// Stock and per-buyer holdings of one sale.
#[derive(Debug, Clone)]
pub struct SaleLedger {
    stock_total: u32,
    per_buyer_limit: u32,
    available: u32,
    /// Live (pending or durable) reservations per buyer. Absent means zero.
    live_by_buyer: HashMap<BuyerId, u32>,
    reservations: HashMap<OrderId, Entry>,
}

impl SaleLedger {
    pub fn new(stock_total: u32, per_buyer_limit: u32) -> Self {
        Self {
            stock_total,
            per_buyer_limit,
            available: stock_total,
            live_by_buyer: HashMap::new(),
            reservations: HashMap::new(),
        }
    }

    pub fn stock_total(&self) -> u32 {
        self.stock_total
    }

    pub fn available(&self) -> u32 {
        self.available
    }

    pub fn per_buyer_limit(&self) -> u32 {
        self.per_buyer_limit
    }

    /// Live reservations the buyer holds.
    pub fn live_count(&self, buyer: &BuyerId) -> u32 {
        self.live_by_buyer.get(buyer).copied().unwrap_or(0)
    }

    pub fn state(&self, order: OrderId) -> Option<ReservationState> {
        self.reservations.get(&order).map(|e| e.state)
    }

    pub fn entry(&self, order: OrderId) -> Option<LedgerEntry> {
        self.reservations.get(&order).map(|e| LedgerEntry {
            state: e.state,
            buyer: e.buyer.clone(),
            batch: e.batch,
        })
    }

    /// Reservations taken and neither confirmed, cancelled nor returned, with the batch each
    /// was taken for, for the reconciler.
    pub fn pending_orders(&self) -> Vec<(OrderId, BatchId)> {
        self.reservations
            .iter()
            .filter(|(_, entry)| entry.state == ReservationState::Pending)
            .filter_map(|(order, entry)| entry.batch.map(|batch| (*order, batch)))
            .collect()
    }

    /// Takes one unit for `order` on behalf of `buyer`, to be made durable in `batch`, if the
    /// order id is new, stock is left and the buyer is under the limit. Checked in that order,
    /// so a retry always gets `Duplicate`, even after the sale sold out.
    pub fn reserve(&mut self, order: OrderId, buyer: &BuyerId, batch: BatchId) -> ReserveOutcome {
        if let Some(entry) = self.reservations.get(&order) {
            return ReserveOutcome::Duplicate(entry.state);
        }
        if self.available == 0 {
            return ReserveOutcome::SoldOut;
        }
        let live = self.live_by_buyer.entry(buyer.clone()).or_insert(0);
        if *live >= self.per_buyer_limit {
            return ReserveOutcome::LimitReached;
        }
        *live += 1;
        self.available -= 1;
        self.reservations.insert(
            order,
            Entry {
                buyer: buyer.clone(),
                state: ReservationState::Pending,
                batch: Some(batch),
            },
        );
        ReserveOutcome::Reserved
    }

    /// The reservation became durable. Returns false if it was not pending.
    pub fn confirm(&mut self, order: OrderId) -> bool {
        match self.reservations.get_mut(&order) {
            Some(entry) if entry.state == ReservationState::Pending => {
                entry.state = ReservationState::Durable;
                true
            }
            _ => false,
        }
    }

    /// Making the reservation durable failed: the unit goes back and the order id is
    /// forgotten, so a retry with the same key tries again. Returns false if it was not pending.
    pub fn cancel_pending(&mut self, order: OrderId) -> bool {
        match self.reservations.get(&order) {
            Some(entry) if entry.state == ReservationState::Pending => {
                let buyer = entry.buyer.clone();
                self.reservations.remove(&order);
                self.release_unit(&buyer);
                true
            }
            _ => false,
        }
    }

    /// The order expired or was cancelled: its unit goes back on sale, exactly once. The order
    /// id is remembered, so a retry of the original request does not buy again.
    ///
    /// A reservation still `Pending` is returned too. Only an order that exists calls for this,
    /// which proves the reservation was durable; it stays pending when the enqueue answered
    /// with an unknown outcome, or when the confirm was lost. Refusing it would strand the
    /// unit until the next rebuild.
    pub fn return_unit(&mut self, order: OrderId) -> ReturnOutcome {
        let Some(entry) = self.reservations.get_mut(&order) else {
            return ReturnOutcome::Unknown;
        };
        match entry.state {
            ReservationState::Returned => ReturnOutcome::AlreadyReturned,
            ReservationState::Pending | ReservationState::Durable => {
                entry.state = ReservationState::Returned;
                let buyer = entry.buyer.clone();
                self.release_unit(&buyer);
                ReturnOutcome::Returned
            }
        }
    }

    /// Gives back the unit of a live (pending or durable) reservation. Only the state checks
    /// of `cancel_pending` and `return_unit` call it, so a unit is never given back twice: if
    /// it were, `available` would climb past the stock and the buyer's count below zero, and
    /// the sale would oversell. Cheap checks, so always on.
    fn release_unit(&mut self, buyer: &BuyerId) {
        assert!(
            self.available < self.stock_total,
            "returning a unit that was never taken (available {} of {})",
            self.available,
            self.stock_total
        );
        self.available += 1;
        let live = self
            .live_by_buyer
            .get_mut(buyer)
            .expect("a live reservation's buyer holds at least one unit");
        assert!(*live > 0, "a buyer's live count went below zero");
        *live -= 1;
        if *live == 0 {
            self.live_by_buyer.remove(buyer);
        }
    }

    /// Rebuilds a ledger from durable state: each known order with whether it is still live
    /// (queued, pending payment or paid) or returned (expired, cancelled). An order listed
    /// twice (written to the store and still in the queue) counts once, live if either says so,
    /// and keeps the batch of whichever listing names one.
    pub fn restore(
        stock_total: u32,
        per_buyer_limit: u32,
        known: impl IntoIterator<Item = Holding>,
    ) -> Result<Self, OverStockError> {
        let mut ledger = Self::new(stock_total, per_buyer_limit);
        for known in known {
            let state = if known.live {
                ReservationState::Durable
            } else {
                ReservationState::Returned
            };
            match ledger.reservations.get_mut(&known.order_id) {
                Some(entry) => {
                    if entry.state == ReservationState::Returned && known.live {
                        entry.state = ReservationState::Durable;
                    }
                    entry.batch = entry.batch.or(known.batch);
                }
                None => {
                    ledger.reservations.insert(
                        known.order_id,
                        Entry {
                            buyer: known.buyer,
                            state,
                            batch: known.batch,
                        },
                    );
                }
            }
        }
        let mut live_total: u64 = 0;
        for entry in ledger.reservations.values() {
            if entry.state == ReservationState::Durable {
                live_total += 1;
                *ledger.live_by_buyer.entry(entry.buyer.clone()).or_insert(0) += 1;
            }
        }
        if live_total > u64::from(stock_total) {
            return Err(OverStockError {
                live: live_total,
                stock_total,
            });
        }
        ledger.available = stock_total - live_total as u32;
        Ok(ledger)
    }

    /// Checks the ledger's own invariants; used by tests and debug assertions.
    pub fn check(&self) -> Result<(), String> {
        let live: u64 = self
            .reservations
            .values()
            .filter(|e| e.state != ReservationState::Returned)
            .count() as u64;
        if live + u64::from(self.available) != u64::from(self.stock_total) {
            return Err(format!(
                "available {} + live {live} != stock {}",
                self.available, self.stock_total
            ));
        }
        let by_buyer_sum: u64 = self.live_by_buyer.values().map(|&n| u64::from(n)).sum();
        if by_buyer_sum != live {
            return Err(format!(
                "per-buyer counts sum to {by_buyer_sum}, live is {live}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use uuid::Uuid;

    fn order(n: u128) -> OrderId {
        OrderId(Uuid::from_u128(n))
    }
    fn buyer(name: &str) -> BuyerId {
        BuyerId::parse(name).unwrap()
    }
    fn batch(n: u128) -> BatchId {
        BatchId(Uuid::from_u128(1 << 100 | n))
    }
    fn held(order_id: OrderId, buyer: BuyerId, live: bool) -> Holding {
        Holding {
            order_id,
            buyer,
            live,
            batch: None,
        }
    }

    #[test]
    fn reserve_confirm_return_table() {
        let mut l = SaleLedger::new(2, 1);
        let (a, b, c) = (buyer("a"), buyer("b"), buyer("c"));
        assert_eq!(l.reserve(order(1), &a, batch(0)), ReserveOutcome::Reserved);
        assert_eq!(
            l.reserve(order(1), &a, batch(0)),
            ReserveOutcome::Duplicate(ReservationState::Pending)
        );
        assert_eq!(
            l.reserve(order(2), &a, batch(0)),
            ReserveOutcome::LimitReached
        );
        assert!(l.confirm(order(1)));
        assert!(!l.confirm(order(1)));
        assert_eq!(l.reserve(order(3), &b, batch(0)), ReserveOutcome::Reserved);
        assert_eq!(l.reserve(order(4), &c, batch(0)), ReserveOutcome::SoldOut);
        // A failed enqueue gives the unit back and forgets the id.
        assert!(l.cancel_pending(order(3)));
        assert_eq!(l.state(order(3)), None);
        assert_eq!(l.reserve(order(4), &c, batch(0)), ReserveOutcome::Reserved);
        // Expiry returns exactly once.
        assert_eq!(l.return_unit(order(1)), ReturnOutcome::Returned);
        assert_eq!(l.return_unit(order(1)), ReturnOutcome::AlreadyReturned);
        assert_eq!(
            l.reserve(order(1), &a, batch(0)),
            ReserveOutcome::Duplicate(ReservationState::Returned)
        );
        assert_eq!(l.available(), 1);
        // An order whose confirm was lost is still pending; its expiry returns it all the same.
        assert_eq!(l.pending_orders(), vec![(order(4), batch(0))]);
        assert_eq!(l.return_unit(order(4)), ReturnOutcome::Returned);
        assert_eq!(l.return_unit(order(99)), ReturnOutcome::Unknown);
        assert_eq!(l.available(), 2);
        assert!(l.pending_orders().is_empty());
        // The buyer whose order expired may buy again with a new key.
        assert_eq!(l.reserve(order(5), &a, batch(0)), ReserveOutcome::Reserved);
        l.check().unwrap();
    }

    #[test]
    fn restore_counts_each_order_once() {
        let (a, b) = (buyer("a"), buyer("b"));
        let queued = Holding {
            batch: Some(batch(7)),
            ..held(order(2), b.clone(), true)
        };
        let known = vec![
            held(order(1), a.clone(), true),
            held(order(1), a.clone(), true),
            held(order(2), b.clone(), false),
            queued,
            held(order(3), b.clone(), false),
        ];
        let l = SaleLedger::restore(5, 2, known).unwrap();
        assert_eq!(
            l.entry(order(2)),
            Some(LedgerEntry {
                state: ReservationState::Durable,
                buyer: b.clone(),
                batch: Some(batch(7)),
            })
        );
        assert_eq!(l.available(), 3);
        assert_eq!(l.live_count(&a), 1);
        assert_eq!(l.live_count(&b), 1);
        assert_eq!(l.state(order(3)), Some(ReservationState::Returned));
        l.check().unwrap();
        let too_many = (0..3).map(|n| held(order(n), buyer("x"), true));
        assert_eq!(
            SaleLedger::restore(2, 5, too_many).unwrap_err(),
            OverStockError {
                live: 3,
                stock_total: 2
            }
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Reserve { order: u8, buyer: u8 },
        Confirm(u8),
        Cancel(u8),
        Return(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..40, 0u8..8).prop_map(|(order, buyer)| Op::Reserve { order, buyer }),
            2 => (0u8..40).prop_map(Op::Confirm),
            1 => (0u8..40).prop_map(Op::Cancel),
            1 => (0u8..40).prop_map(Op::Return),
        ]
    }

    proptest! {
        /// Over any interleaving of buys, confirmations, failed enqueues and expiries: stock
        /// is never oversold, no buyer exceeds the limit, and every unit is accounted for.
        #[test]
        fn never_oversell_and_limit_holds(stock in 1u32..12, limit in 1u32..4, ops in proptest::collection::vec(op(), 1..300)) {
            let mut l = SaleLedger::new(stock, limit);
            let mut owner: HashMap<u8, u8> = HashMap::new();
            for op in ops {
                match op {
                    Op::Reserve { order: o, buyer: b } => {
                        // An order id belongs to one buyer, as OrderId::derive guarantees.
                        let b = *owner.entry(o).or_insert(b);
                        let before = l.available();
                        let outcome = l.reserve(order(o.into()), &buyer(&format!("b{b}")), batch(o.into()));
                        if outcome == ReserveOutcome::Reserved {
                            prop_assert_eq!(l.available(), before - 1);
                        } else {
                            prop_assert_eq!(l.available(), before);
                        }
                        if outcome == ReserveOutcome::SoldOut {
                            prop_assert_eq!(before, 0);
                        }
                    }
                    Op::Confirm(o) => { l.confirm(order(o.into())); }
                    Op::Cancel(o) => { l.cancel_pending(order(o.into())); }
                    Op::Return(o) => { l.return_unit(order(o.into())); }
                }
                prop_assert!(l.available() <= stock);
                for b in 0..8u8 {
                    let name = format!("b{}", b);
                    prop_assert!(l.live_count(&buyer(&name)) <= limit);
                }
                prop_assert_eq!(l.check(), Ok(()));
            }
        }
    }
}
