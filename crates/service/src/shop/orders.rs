//! Orders as their buyer sees them: the order view (store first, then the ledger and the
//! queue for an order not yet written), payment, and where a reservation is durable.

use super::{ServiceError, Shop};
use crate::layers::NodeOutcome;
use crate::ports::PayOutcome;
use flashsale_core::{
    BatchId, BuyerId, Order, OrderId, OrderStatus, PaymentId, Reservation, SaleId, Timestamp,
};

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

/// What the stock ledger and the queue know of an order the store does not have.
enum Unwritten {
    /// No ledger of this node's sales knows it for this buyer.
    Unknown,
    /// Waiting in the queue.
    Queued(Reservation),
    /// The ledger knows it, the queue does not hold it: written meanwhile, or never durable.
    NotQueued,
}

fn view(order: &Order) -> OrderView {
    OrderView {
        id: order.id,
        sale_id: order.sale_id,
        status: order.status.into(),
        expires_at: order.expires_at,
    }
}

/// Most of this node's sales `Shop::order` asks the stock ledger about for an order not yet
/// written: the newest ones, where orders are being written now.
const ORDER_LOOKUP_SALES_MAX: usize = 16;

impl Shop {
    /// The buyer's own order, or `None` (someone else's order looks the same as none).
    ///
    /// An order the writers have not written yet is found through the stock ledger, which
    /// knows the batch it waits in. The store is asked again after the queue: a writer may have
    /// moved the order from one to the other in between.
    pub async fn order(
        &self,
        buyer: &BuyerId,
        id: OrderId,
    ) -> Result<Option<OrderView>, ServiceError> {
        if let Some(order) = self.backends.store.get_order(id).await? {
            return Ok((&order.buyer == buyer).then(|| view(&order)));
        }
        let queued = match self.find_unwritten(buyer, id).await? {
            Unwritten::Unknown => return Ok(None),
            Unwritten::Queued(reservation) => Some(reservation),
            Unwritten::NotQueued => None,
        };
        if let Some(order) = self.backends.store.get_order(id).await? {
            return Ok((&order.buyer == buyer).then(|| view(&order)));
        }
        Ok(queued.map(|r| OrderView {
            id,
            sale_id: r.sale_id,
            status: OrderViewStatus::Queued,
            expires_at: r.expires_at,
        }))
    }

    /// Where the buyer's order `id` is when the store does not have it: the stock ledgers of
    /// this node's sales (newest first, usually one is live) say whether it exists and which
    /// batch it was taken for, and the queue whether that batch holds it. Someone else's order
    /// is `Unknown`.
    async fn find_unwritten(
        &self,
        buyer: &BuyerId,
        id: OrderId,
    ) -> Result<Unwritten, ServiceError> {
        let mut sales = self.table.ids();
        // Sale ids are UUID v7: the newest sorts last.
        sales.sort_unstable_by(|a, b| b.cmp(a));
        for sale in sales.into_iter().take(ORDER_LOOKUP_SALES_MAX) {
            let Some(entry) = self.backends.stock.entry(sale, id).await? else {
                continue;
            };
            if &entry.buyer != buyer {
                return Ok(Unwritten::Unknown);
            }
            let queued = match entry.batch {
                Some(batch) => self.backends.queue.find(batch, id).await?,
                None => None,
            };
            return Ok(queued.map_or(Unwritten::NotQueued, Unwritten::Queued));
        }
        Ok(Unwritten::Unknown)
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
                PayOutcome::Paid(order) => {
                    self.counters.node(NodeOutcome::Paid, 1);
                    PayAnswer::Paid(view(&order))
                }
                PayOutcome::PaidByOtherPayment => PayAnswer::PaidByOtherPayment,
                PayOutcome::Expired => PayAnswer::Expired,
                PayOutcome::Cancelled => PayAnswer::Cancelled,
                PayOutcome::NotFound => match self.find_unwritten(buyer, id).await? {
                    Unwritten::Queued(_) => PayAnswer::NotYetWritten,
                    // Known to the ledger but out of the queue: written since the store was
                    // asked, or never made durable. A retry tells which.
                    Unwritten::NotQueued => match self.backends.store.get_order(id).await? {
                        Some(_) => PayAnswer::NotYetWritten,
                        None => PayAnswer::NotFound,
                    },
                    Unwritten::Unknown => PayAnswer::NotFound,
                },
            },
        )
    }

    /// Whether the reservation is in the queue (in its batch) or the store. The queue is asked
    /// first: a writer inserts the order before it acks the message, so this order of lookups
    /// never misses a reservation moving between the two (the other order did, and the
    /// reconciler gave back the unit of a written order: found by the scaled-out kill cycles).
    pub(super) async fn is_durable(
        &self,
        batch: BatchId,
        order: OrderId,
    ) -> Result<bool, ServiceError> {
        Ok(self.backends.queue.find(batch, order).await?.is_some()
            || self.backends.store.get_order(order).await?.is_some())
    }
}
