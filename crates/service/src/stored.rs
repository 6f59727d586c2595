//! Decoding what an order store wrote, shared by the SQLite and PostgreSQL stores. Each store
//! reads its own row type into the plain columns below; the rules for turning them back into
//! values, and for refusing a row this code cannot have written, live here once.

use crate::ports::{BackendError, BackendResult, PayOutcome};
use flashsale_core::{
    BuyerId, Order, OrderId, OrderStatus, PayDecision, PaymentId, Sale, SaleId, SaleSpec, Timestamp,
};
use std::fmt::Display;

/// The decoder of one backend; its name goes into every error.
#[derive(Debug, Clone, Copy)]
pub struct Stored {
    backend: &'static str,
}

impl Stored {
    pub const fn new(backend: &'static str) -> Self {
        Self { backend }
    }

    /// A stored row this code cannot have written: say so rather than guess.
    pub fn corrupt(&self, message: impl Display) -> BackendError {
        BackendError::determinate(self.backend, format!("unreadable stored data: {message}"))
    }

    pub fn order_id(&self, text: &str) -> BackendResult<OrderId> {
        OrderId::parse(text).map_err(|e| self.corrupt(format!("order id {text:?}: {e}")))
    }

    pub fn sale_id(&self, text: &str) -> BackendResult<SaleId> {
        SaleId::parse(text).map_err(|e| self.corrupt(format!("sale id {text:?}: {e}")))
    }

    pub fn buyer(&self, text: &str) -> BackendResult<BuyerId> {
        BuyerId::parse(text).map_err(|e| self.corrupt(format!("buyer {text:?}: {e}")))
    }

    pub fn status(&self, text: &str) -> BackendResult<OrderStatus> {
        OrderStatus::parse(text)
            .ok_or_else(|| self.corrupt(format!("unknown order status {text:?}")))
    }

    pub fn from_ms(&self, ms: i64) -> BackendResult<Timestamp> {
        Timestamp::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .map_err(|e| self.corrupt(format!("timestamp {ms} ms: {e}")))
    }

    fn number<T: TryFrom<i64>>(&self, column: &str, value: i64) -> BackendResult<T> {
        T::try_from(value).map_err(|_| self.corrupt(format!("{column} {value} out of range")))
    }

    /// `value` converted to the column's type; if it cannot hold it, an error saying nothing
    /// was written.
    pub fn fit<V: Copy + Display, T: TryFrom<V>>(&self, value: V, field: &str) -> BackendResult<T> {
        T::try_from(value).map_err(|_| {
            BackendError::determinate(self.backend, format!("{field} {value} does not fit"))
        })
    }
}

/// Unix milliseconds. Sale specs refuse years outside 1970..=9999 (in UTC), and reservations are made
/// at the current time, so this never saturates in practice.
pub fn to_ms(at: Timestamp) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Rounds of read, decide, compare-and-set before a payment gives up. The status moves out of
/// `pending_payment` at most once, so the second read always decides without a write.
pub const PAY_ATTEMPTS_MAX: usize = 3;

/// Pays `id` the way every store does: read the order, let `Order::decide_pay` decide, and
/// apply with the store's compare-and-set from `pending_payment` to `paid` (`mark_paid`,
/// true when it changed the row). A reaper or another payment that moved the order meanwhile
/// wins the race, and the next round reads what happened.
pub async fn pay_by_compare_and_set<Read, MarkPaid>(
    stored: &Stored,
    id: OrderId,
    buyer: &BuyerId,
    payment: &PaymentId,
    now: Timestamp,
    read: impl Fn() -> Read,
    mark_paid: impl Fn() -> MarkPaid,
) -> BackendResult<PayOutcome>
where
    // Plain closures returning futures, not `AsyncFn`: the stores' `async_trait` methods need
    // futures that are `Send` for every lifetime, which `AsyncFn` cannot promise yet.
    Read: Future<Output = BackendResult<Option<Order>>>,
    MarkPaid: Future<Output = BackendResult<bool>>,
{
    for _ in 0..PAY_ATTEMPTS_MAX {
        let Some(order) = read().await? else {
            return Ok(PayOutcome::NotFound);
        };
        // Someone else's order looks exactly like no order: ids must not be probeable.
        if &order.buyer != buyer {
            return Ok(PayOutcome::NotFound);
        }
        match order.decide_pay(payment, now) {
            PayDecision::AlreadyPaid => return Ok(PayOutcome::Paid(order)),
            PayDecision::PaidByOtherPayment => return Ok(PayOutcome::PaidByOtherPayment),
            PayDecision::Expired => return Ok(PayOutcome::Expired),
            PayDecision::Cancelled => return Ok(PayOutcome::Cancelled),
            PayDecision::Apply => {
                if mark_paid().await? {
                    return Ok(PayOutcome::Paid(Order {
                        status: OrderStatus::Paid,
                        payment_id: Some(payment.clone()),
                        ..order
                    }));
                }
            }
        }
    }
    Err(BackendError::determinate(
        stored.backend,
        format!("order {id} kept changing under {PAY_ATTEMPTS_MAX} payment attempts"),
    ))
}

/// The columns of an order row, as the stores keep them.
#[derive(Debug)]
pub struct OrderColumns {
    pub id: String,
    pub sale_id: String,
    pub buyer: String,
    pub status: String,
    pub reserved_at_ms: i64,
    pub expires_at_ms: i64,
    pub payment_id: Option<String>,
}

impl OrderColumns {
    pub fn decode(self, stored: &Stored) -> BackendResult<Order> {
        Ok(Order {
            id: stored.order_id(&self.id)?,
            sale_id: stored.sale_id(&self.sale_id)?,
            buyer: stored.buyer(&self.buyer)?,
            status: stored.status(&self.status)?,
            reserved_at: stored.from_ms(self.reserved_at_ms)?,
            expires_at: stored.from_ms(self.expires_at_ms)?,
            payment_id: self
                .payment_id
                .map(|p| {
                    PaymentId::parse(&p)
                        .map_err(|e| stored.corrupt(format!("payment id {p:?}: {e}")))
                })
                .transpose()?,
        })
    }
}

/// The columns of a sale row, as the stores keep them (integers widened to `i64`).
#[derive(Debug)]
pub struct SaleColumns {
    pub id: String,
    pub name: String,
    pub price_cents: i64,
    pub stock: i64,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub per_buyer_limit: i64,
    pub payment_window_secs: i64,
    pub version: i64,
    /// The waiting room as JSON (`waiting_room_json`), NULL for a sale without one.
    pub waiting_room: Option<String>,
}

/// The waiting room of a sale as the stores keep it: its JSON, as the API writes it.
pub fn waiting_room_json(spec: &SaleSpec) -> Option<String> {
    spec.waiting_room
        .as_ref()
        .map(|room| serde_json::to_string(room).expect("a waiting room serializes"))
}

impl SaleColumns {
    pub fn decode(self, stored: &Stored) -> BackendResult<Sale> {
        Ok(Sale {
            id: stored.sale_id(&self.id)?,
            spec: SaleSpec {
                name: self.name,
                price_cents: stored.number("price_cents", self.price_cents)?,
                stock: stored.number("stock", self.stock)?,
                starts_at: stored.from_ms(self.starts_at_ms)?,
                ends_at: stored.from_ms(self.ends_at_ms)?,
                per_buyer_limit: stored.number("per_buyer_limit", self.per_buyer_limit)?,
                payment_window_secs: stored
                    .number("payment_window_secs", self.payment_window_secs)?,
                waiting_room: self
                    .waiting_room
                    .map(|json| {
                        serde_json::from_str(&json)
                            .map_err(|e| stored.corrupt(format!("waiting room {json:?}: {e}")))
                    })
                    .transpose()?,
            },
            version: stored.number("version", self.version)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORED: Stored = Stored::new("test store");

    #[test]
    fn rows_this_code_cannot_have_written_are_refused_naming_the_value() {
        let order = OrderColumns {
            id: "not-a-uuid".into(),
            sale_id: uuid::Uuid::nil().to_string(),
            buyer: "alice".into(),
            status: "pending_payment".into(),
            reserved_at_ms: 0,
            expires_at_ms: 0,
            payment_id: None,
        };
        let error = order.decode(&STORED).unwrap_err();
        assert!(error.outcome_known);
        assert!(
            error.to_string().contains("order id \"not-a-uuid\""),
            "{error}"
        );
        let sale = SaleColumns {
            id: uuid::Uuid::nil().to_string(),
            name: "x".into(),
            price_cents: -1,
            stock: 1,
            starts_at_ms: 0,
            ends_at_ms: 1,
            per_buyer_limit: 1,
            payment_window_secs: 1,
            version: 1,
            waiting_room: None,
        };
        let error = sale.decode(&STORED).unwrap_err();
        assert!(
            error.to_string().contains("price_cents -1 out of range"),
            "{error}"
        );
        assert!(STORED.status("shipped").is_err());
        assert!(STORED.fit::<_, i32>(u64::MAX, "stock").is_err());
        assert_eq!(to_ms(STORED.from_ms(1_234).unwrap()), 1_234);
    }
}
