//! `SimStore`: the order store as in-memory data that survives simulated node restarts. Each
//! method is one atomic step, as the store contract asks (pay and expiry are compare-and-set
//! on `pending_payment`). It can also run the **blind-expiry canary**: an `expire_due` that
//! does not check the status, so a paid order past its deadline is expired and its unit
//! returned.

use async_trait::async_trait;
use flashsale_core::{
    BuyerId, Order, OrderId, OrderStatus, PayDecision, PaymentId, Reservation, Sale, SaleId,
    Timestamp,
};
use flashsale_service::{
    BackendError, BackendResult, Holding, OrderCounts, OrderStore, PayOutcome,
};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

const BACKEND: &str = "simulated order store";

/// How `expire_due` picks its orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryMode {
    /// Only `pending_payment` orders past their deadline, as the contract says.
    CompareAndSet,
    /// The canary: every order past its deadline that is not expired yet, paid or not.
    Blind,
}

#[derive(Debug, Default)]
struct State {
    sales: BTreeMap<SaleId, Sale>,
    orders: BTreeMap<OrderId, Order>,
}

#[derive(Debug)]
pub struct SimStore {
    expiry: ExpiryMode,
    state: Mutex<State>,
}

impl SimStore {
    pub fn new(expiry: ExpiryMode) -> Self {
        Self {
            expiry,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every order, for the invariant checker.
    pub fn orders(&self) -> Vec<Order> {
        self.lock().orders.values().cloned().collect()
    }

    pub fn sale_now(&self, id: SaleId) -> Option<Sale> {
        self.lock().sales.get(&id).cloned()
    }
}

#[async_trait]
impl OrderStore for SimStore {
    async fn create_sale(&self, sale: &Sale) -> BackendResult<()> {
        let mut state = self.lock();
        if state.sales.contains_key(&sale.id) {
            return Err(BackendError::determinate(BACKEND, "sale exists"));
        }
        state.sales.insert(sale.id, sale.clone());
        Ok(())
    }

    async fn update_sale(&self, sale: &Sale) -> BackendResult<bool> {
        let mut state = self.lock();
        match state.sales.get_mut(&sale.id) {
            Some(stored) if stored.version + 1 == sale.version => {
                *stored = sale.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn get_sale(&self, id: SaleId) -> BackendResult<Option<Sale>> {
        Ok(self.lock().sales.get(&id).cloned())
    }

    async fn list_sales(&self) -> BackendResult<Vec<Sale>> {
        Ok(self.lock().sales.values().cloned().collect())
    }

    async fn insert_orders(&self, batch: &[Reservation]) -> BackendResult<u64> {
        let mut state = self.lock();
        let mut new = 0;
        for reservation in batch {
            if let std::collections::btree_map::Entry::Vacant(slot) =
                state.orders.entry(reservation.order_id)
            {
                slot.insert(Order::from_reservation(reservation));
                new += 1;
            }
        }
        Ok(new)
    }

    async fn get_order(&self, id: OrderId) -> BackendResult<Option<Order>> {
        Ok(self.lock().orders.get(&id).cloned())
    }

    async fn pay(
        &self,
        id: OrderId,
        buyer: &BuyerId,
        payment: &PaymentId,
        now: Timestamp,
    ) -> BackendResult<PayOutcome> {
        let mut state = self.lock();
        let Some(order) = state.orders.get_mut(&id).filter(|o| &o.buyer == buyer) else {
            return Ok(PayOutcome::NotFound);
        };
        Ok(match order.decide_pay(payment, now) {
            PayDecision::Apply => {
                order.status = OrderStatus::Paid;
                order.payment_id = Some(payment.clone());
                PayOutcome::Paid(order.clone())
            }
            PayDecision::AlreadyPaid => PayOutcome::Paid(order.clone()),
            PayDecision::PaidByOtherPayment => PayOutcome::PaidByOtherPayment,
            PayDecision::Expired => PayOutcome::Expired,
            PayDecision::Cancelled => PayOutcome::Cancelled,
        })
    }

    async fn expire_due(&self, now: Timestamp, max: usize) -> BackendResult<Vec<Order>> {
        let mut state = self.lock();
        let mut due: Vec<(Timestamp, OrderId)> = state
            .orders
            .values()
            .filter(|o| match self.expiry {
                ExpiryMode::CompareAndSet => o.is_due_for_expiry(now),
                ExpiryMode::Blind => o.status != OrderStatus::Expired && now >= o.expires_at,
            })
            .map(|o| (o.expires_at, o.id))
            .collect();
        due.sort_unstable();
        let mut expired = Vec::new();
        for (_, id) in due.into_iter().take(max) {
            if let Some(order) = state.orders.get_mut(&id) {
                order.status = OrderStatus::Expired;
                expired.push(order.clone());
            }
        }
        Ok(expired)
    }

    async fn order_counts(&self, sale: SaleId) -> BackendResult<OrderCounts> {
        let mut counts = OrderCounts::default();
        for order in self.lock().orders.values().filter(|o| o.sale_id == sale) {
            match order.status {
                OrderStatus::PendingPayment => counts.pending_payment += 1,
                OrderStatus::Paid => counts.paid += 1,
                OrderStatus::Expired => counts.expired += 1,
                OrderStatus::Cancelled => counts.cancelled += 1,
            }
        }
        Ok(counts)
    }

    async fn holdings(&self, sale: SaleId) -> BackendResult<Vec<Holding>> {
        Ok(self
            .lock()
            .orders
            .values()
            .filter(|o| o.sale_id == sale)
            .map(|o| Holding {
                order_id: o.id,
                buyer: o.buyer.clone(),
                live: o.status.is_live(),
                batch: None,
            })
            .collect())
    }

    async fn recent_orders(&self, sale: SaleId, max: usize) -> BackendResult<Vec<Order>> {
        let mut orders: Vec<Order> = self
            .lock()
            .orders
            .values()
            .filter(|o| o.sale_id == sale)
            .cloned()
            .collect();
        orders.sort_by_key(|o| std::cmp::Reverse((o.reserved_at, o.id)));
        orders.truncate(max);
        Ok(orders)
    }
}
