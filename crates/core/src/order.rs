//! Reservations and orders, and the order state machine:
//! `pending_payment → paid | expired | cancelled`.

use crate::ids::{BuyerId, OrderId, PaymentId, SaleId};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// A unit taken for a buyer: what travels through the durable queue and becomes an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub order_id: OrderId,
    pub sale_id: SaleId,
    pub buyer: BuyerId,
    #[serde(with = "time::serde::rfc3339")]
    pub reserved_at: OffsetDateTime,
    /// When an unpaid order stops being payable and its unit goes back on sale.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl Reservation {
    pub fn new(
        order_id: OrderId,
        sale_id: SaleId,
        buyer: BuyerId,
        now: OffsetDateTime,
        payment_window_secs: u32,
    ) -> Self {
        // The window comes from a validated sale (at least `PAYMENT_WINDOW_SECS_MIN`): one of
        // zero would make an order the reaper expires before its buyer can pay.
        debug_assert!(
            payment_window_secs > 0,
            "a reservation with no payment window (order {order_id})"
        );
        Self {
            order_id,
            sale_id,
            buyer,
            reserved_at: now,
            expires_at: now + Duration::seconds(i64::from(payment_window_secs)),
        }
    }
}

/// Where a written order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    PendingPayment,
    Paid,
    Expired,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "pending_payment",
            OrderStatus::Paid => "paid",
            OrderStatus::Expired => "expired",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending_payment" => OrderStatus::PendingPayment,
            "paid" => OrderStatus::Paid,
            "expired" => OrderStatus::Expired,
            "cancelled" => OrderStatus::Cancelled,
            _ => return None,
        })
    }

    /// Whether the order still holds its unit (counts toward stock and the buyer's limit).
    pub fn is_live(self) -> bool {
        matches!(self, OrderStatus::PendingPayment | OrderStatus::Paid)
    }
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub sale_id: SaleId,
    pub buyer: BuyerId,
    pub status: OrderStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub reserved_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub payment_id: Option<PaymentId>,
}

impl Order {
    /// A freshly written order, waiting for payment.
    pub fn from_reservation(r: &Reservation) -> Self {
        Self {
            id: r.order_id,
            sale_id: r.sale_id,
            buyer: r.buyer.clone(),
            status: OrderStatus::PendingPayment,
            reserved_at: r.reserved_at,
            expires_at: r.expires_at,
            payment_id: None,
        }
    }

    /// What paying with `payment` at `now` should do. The store applies `Apply` with a
    /// compare-and-set on the status, so pay and expiry can never both win.
    pub fn decide_pay(&self, payment: &PaymentId, now: OffsetDateTime) -> PayDecision {
        match self.status {
            OrderStatus::PendingPayment if now < self.expires_at => PayDecision::Apply,
            OrderStatus::PendingPayment | OrderStatus::Expired => PayDecision::Expired,
            OrderStatus::Cancelled => PayDecision::Cancelled,
            OrderStatus::Paid if self.payment_id.as_ref() == Some(payment) => {
                PayDecision::AlreadyPaid
            }
            OrderStatus::Paid => PayDecision::PaidByOtherPayment,
        }
    }

    /// Whether the reaper should expire the order at `now`.
    pub fn is_due_for_expiry(&self, now: OffsetDateTime) -> bool {
        self.status == OrderStatus::PendingPayment && now >= self.expires_at
    }
}

/// The decision for a payment attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayDecision {
    /// Move `pending_payment → paid` (compare-and-set on the status).
    Apply,
    /// Paid before with this same payment id: answer as if it just happened.
    AlreadyPaid,
    /// Paid before with another payment id.
    PaidByOtherPayment,
    /// The payment window is over.
    Expired,
    Cancelled,
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use uuid::Uuid;

    fn order(status: OrderStatus, payment: Option<&str>) -> Order {
        Order {
            id: OrderId(Uuid::from_u128(1)),
            sale_id: SaleId(Uuid::from_u128(2)),
            buyer: BuyerId::parse("alice").unwrap(),
            status,
            reserved_at: datetime!(2030-01-01 12:00 UTC),
            expires_at: datetime!(2030-01-01 12:10 UTC),
            payment_id: payment.map(|p| PaymentId::parse(p).unwrap()),
        }
    }

    #[test]
    fn pay_decision_table() {
        use OrderStatus::*;
        use PayDecision as D;
        let before = datetime!(2030-01-01 12:09:59 UTC);
        let at_deadline = datetime!(2030-01-01 12:10 UTC);
        let p1 = PaymentId::parse("p1").unwrap();
        let cases = [
            (PendingPayment, None, before, D::Apply),
            (PendingPayment, None, at_deadline, D::Expired),
            (Expired, None, before, D::Expired),
            (Cancelled, None, before, D::Cancelled),
            (Paid, Some("p1"), at_deadline, D::AlreadyPaid),
            (Paid, Some("p2"), before, D::PaidByOtherPayment),
        ];
        for (status, payment, now, expected) in cases {
            assert_eq!(
                order(status, payment).decide_pay(&p1, now),
                expected,
                "{status:?} {payment:?} {now}"
            );
        }
    }

    #[test]
    fn expiry_and_liveness_table() {
        use OrderStatus::*;
        let due = datetime!(2030-01-01 12:10 UTC);
        let early = datetime!(2030-01-01 12:05 UTC);
        assert!(order(PendingPayment, None).is_due_for_expiry(due));
        assert!(!order(PendingPayment, None).is_due_for_expiry(early));
        assert!(!order(Paid, Some("p")).is_due_for_expiry(due));
        assert!(!order(Expired, None).is_due_for_expiry(due));
        assert_eq!(
            [PendingPayment, Paid, Expired, Cancelled].map(OrderStatus::is_live),
            [true, true, false, false]
        );
        for s in [PendingPayment, Paid, Expired, Cancelled] {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(OrderStatus::parse("queued"), None);
    }
}
