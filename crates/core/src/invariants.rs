//! The promises of a flash sale (DESIGN.md, "Invariants"), written once: what a test or a
//! benchmark observed goes into an [`Observation`], and [`check`] says which promise broke.
//!
//! The simulation, the fault-point tests, the crash tests and the bench verdict each fill an
//! observation from what they can see (a model's state, the backends, the HTTP API) and call
//! [`check`]; what one of them cannot see stays empty or `None`, and the checks that need it
//! are skipped. Pure: no I/O, no clock (the moment after which unpaid orders must be gone is
//! passed in as `due_by`).
//!
//! The ids are generic so a caller that sees the API from outside (strings) and one that sees
//! the service's types (`OrderId`, `BuyerId`) share the same rules.

use crate::ids::{BuyerId, OrderId};
use crate::order::{Order, OrderStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Debug, Display};
use time::OffsetDateTime;

/// What an id must do for the checker: be compared, kept and printed.
pub trait Id: Ord + Clone + Debug + Display {}
impl<T: Ord + Clone + Debug + Display> Id for T {}

/// An order as the observer saw it (in the store, a listing, or its buyer's view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenOrder<O, B> {
    pub id: O,
    pub buyer: B,
    pub status: OrderStatus,
    /// The payment it is paid by, when the observer can see it.
    pub payment: Option<String>,
    pub reserved_at: Option<OffsetDateTime>,
    pub expires_at: Option<OffsetDateTime>,
}

impl SeenOrder<OrderId, BuyerId> {
    /// An order as the service's types hold it: everything is seen.
    pub fn of(order: &Order) -> Self {
        Self {
            id: order.id,
            buyer: order.buyer.clone(),
            status: order.status,
            payment: order.payment_id.as_ref().map(ToString::to_string),
            reserved_at: Some(order.reserved_at),
            expires_at: Some(order.expires_at),
        }
    }
}

/// A reservation durable in the queue whose order is not written yet: it holds a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenReservation<O, B> {
    pub id: O,
    pub buyer: B,
}

/// A 202: a client was told this order exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledged<O, B> {
    pub order: O,
    pub buyer: B,
    /// The request it answered (buyer and idempotency key), when known: one request, one order.
    pub request: Option<String>,
}

/// A client was told this order is paid (by this payment, when known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnsweredPaid<O> {
    pub order: O,
    pub payment: Option<String>,
}

/// The sale's own counts, as the system reports them (the admin view's counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counted {
    pub available: u64,
    pub queued: u64,
    pub pending_payment: u64,
    pub paid: u64,
    pub expired: u64,
    pub cancelled: u64,
}

impl Counted {
    /// Units the counters say orders and reservations hold.
    pub fn held(&self) -> u64 {
        self.queued + self.pending_payment + self.paid
    }
}

/// What was observed of one sale. Empty lists and `None`s are things the observer could not
/// see; the checks that need them are skipped.
#[derive(Debug, Clone)]
pub struct Observation<O, B> {
    /// The units the sale was created with.
    pub stock: u64,
    pub per_buyer_limit: u64,
    /// `[starts_at, ends_at)`: no order is reserved outside it.
    pub window: Option<(OffsetDateTime, OffsetDateTime)>,
    /// The orders seen, each as read (an order read twice is a duplicate, so repeats are kept).
    pub orders: Vec<SeenOrder<O, B>>,
    /// Whether `orders` is every order of the sale (a listing may be cut at its limit); once
    /// quiet, the orders are counted and compared with `available` and `counted` only then.
    pub orders_complete: bool,
    /// Reservations still queued; one whose order is in `orders` already is not counted twice.
    pub queued: Vec<SeenReservation<O, B>>,
    /// Every 202. Each must be an order in `orders` or a reservation in `queued`.
    pub acknowledged: Vec<Acknowledged<O, B>>,
    /// Every "paid" answer: the order must be paid, by the same payment.
    pub paid: Vec<AnsweredPaid<O>>,
    /// Every order id some request could have made, when known: any other order was invented.
    pub requested: Option<BTreeSet<O>>,
    /// Orders whose unit the ledger gave back: none of them may still hold it.
    pub returned: Vec<O>,
    /// Units on sale, read at a moment no unit moves (else leave `None`).
    pub available: Option<u64>,
    pub counted: Option<Counted>,
    /// Nothing in flight and nothing held by an unknown outcome: the queue is drained, and
    /// every unit is on sale or in a live order, exactly.
    pub quiet: bool,
    /// The reaper has run after this moment: no order may still wait for payment past it.
    pub due_by: Option<OffsetDateTime>,
}

impl<O, B> Observation<O, B> {
    /// An observation of a sale that saw nothing yet; the caller fills in what it sees.
    pub fn new(stock: u64, per_buyer_limit: u64) -> Self {
        Self {
            stock,
            per_buyer_limit,
            window: None,
            orders: Vec::new(),
            orders_complete: false,
            queued: Vec::new(),
            acknowledged: Vec::new(),
            paid: Vec::new(),
            requested: None,
            returned: Vec::new(),
            available: None,
            counted: None,
            quiet: false,
            due_by: None,
        }
    }
}

/// Which promise a violation breaks (DESIGN.md's list, plus what a payment and a return
/// promise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Promise {
    /// 1. orders ≤ stock, at every moment.
    WithinStock,
    /// 2. every 202 becomes exactly one order; no order nobody asked for.
    AcknowledgedIsOneOrder,
    /// 3. no buyer holds more live orders than the limit.
    BuyerLimit,
    /// 4. stock = available + pending + paid once quiet; the counters agree with the orders.
    Conserved,
    /// 5. no order before the start or after the end.
    InsideSale,
    /// A paid answer stays true.
    PaidStaysPaid,
    /// A unit comes back only from a dead order, and unpaid orders come back in time.
    ReturnedOnce,
}

/// One broken promise, with what showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation<O, B> {
    /// More units held (and on sale) than the stock.
    Oversold {
        held: u64,
        on_sale: u64,
        stock: u64,
    },
    /// The same order seen twice.
    Duplicated {
        order: O,
    },
    /// One request answered with two orders.
    TwoOrdersForOneRequest {
        request: String,
        orders: (O, O),
    },
    /// One order acknowledged to two buyers.
    OneOrderForTwoBuyers {
        order: O,
        buyers: (B, B),
    },
    /// A 202 that is neither an order nor a queued reservation.
    Lost {
        order: O,
    },
    /// The counters hold fewer orders than distinct 202s.
    FewerOrdersThanAcknowledged {
        orders: u64,
        acknowledged: u64,
    },
    /// An order nobody asked for.
    Invented {
        order: O,
    },
    OverLimit {
        buyer: B,
        held: u64,
        limit: u64,
    },
    OutsideSale {
        order: O,
        reserved_at: OffsetDateTime,
        window: (OffsetDateTime, OffsetDateTime),
    },
    /// Answered paid, and now not paid (or by another payment, or gone).
    PaidNotKept {
        order: O,
        payment: Option<String>,
        now: Option<(OrderStatus, Option<String>)>,
    },
    /// The ledger gave back the unit of an order that still holds it.
    ReturnedWhileLive {
        order: O,
    },
    /// Quiet, and reservations are still queued.
    NotDrained {
        queued: u64,
    },
    /// Quiet, and the units do not add up.
    NotConserved {
        available: u64,
        pending: u64,
        paid: u64,
        stock: u64,
    },
    /// The counters say otherwise than the orders and the ledger.
    CountsDisagree {
        counted: Counted,
        seen: Counted,
    },
    /// Still pending after its deadline, after the reaper ran.
    UnpaidPastDeadline {
        order: O,
        expires_at: OffsetDateTime,
        due_by: OffsetDateTime,
    },
}

impl<O, B> Violation<O, B> {
    pub fn promise(&self) -> Promise {
        match self {
            Violation::Oversold { .. } => Promise::WithinStock,
            Violation::Duplicated { .. }
            | Violation::TwoOrdersForOneRequest { .. }
            | Violation::OneOrderForTwoBuyers { .. }
            | Violation::Lost { .. }
            | Violation::FewerOrdersThanAcknowledged { .. }
            | Violation::Invented { .. } => Promise::AcknowledgedIsOneOrder,
            Violation::OverLimit { .. } => Promise::BuyerLimit,
            Violation::NotDrained { .. }
            | Violation::NotConserved { .. }
            | Violation::CountsDisagree { .. } => Promise::Conserved,
            Violation::OutsideSale { .. } => Promise::InsideSale,
            Violation::PaidNotKept { .. } => Promise::PaidStaysPaid,
            Violation::ReturnedWhileLive { .. } | Violation::UnpaidPastDeadline { .. } => {
                Promise::ReturnedOnce
            }
        }
    }
}

impl<O: Display, B: Display> Display for Violation<O, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Oversold {
                held,
                on_sale,
                stock,
            } => write!(
                f,
                "oversold: {held} units held by orders and reservations and {on_sale} still on sale, stock {stock}"
            ),
            Violation::Duplicated { order } => write!(f, "order {order} exists twice"),
            Violation::TwoOrdersForOneRequest {
                request,
                orders: (a, b),
            } => write!(
                f,
                "request {request} was answered with two orders, {a} and {b}"
            ),
            Violation::OneOrderForTwoBuyers {
                order,
                buyers: (a, b),
            } => write!(
                f,
                "order {order} was acknowledged to two buyers, {a} and {b}"
            ),
            Violation::Lost { order } => write!(
                f,
                "acknowledged order {order} is lost: in neither the queue nor the store"
            ),
            Violation::FewerOrdersThanAcknowledged {
                orders,
                acknowledged,
            } => write!(
                f,
                "{acknowledged} distinct orders acknowledged but only {orders} counted"
            ),
            Violation::Invented { order } => {
                write!(f, "order {order} exists but nobody asked for it")
            }
            Violation::OverLimit { buyer, held, limit } => write!(
                f,
                "buyer {buyer} holds {held} live orders, over the limit of {limit}"
            ),
            Violation::OutsideSale {
                order,
                reserved_at,
                window: (start, end),
            } => write!(
                f,
                "order {order} was reserved at {reserved_at}, outside the sale ({start} to {end})"
            ),
            Violation::PaidNotKept {
                order,
                payment,
                now,
            } => match now {
                Some((status, now_payment)) => write!(
                    f,
                    "order {order} was answered paid by {payment:?} but is now {} (payment {now_payment:?})",
                    status.as_str()
                ),
                None => write!(f, "order {order} was answered paid but is not stored"),
            },
            Violation::ReturnedWhileLive { order } => {
                write!(f, "the unit of live order {order} was given back")
            }
            Violation::NotDrained { queued } => {
                write!(f, "the queue did not drain: {queued} reservations left")
            }
            Violation::NotConserved {
                available,
                pending,
                paid,
                stock,
            } => write!(
                f,
                "stock not conserved: {available} available + {pending} pending + {paid} paid != stock {stock}"
            ),
            Violation::CountsDisagree { counted, seen } => write!(
                f,
                "the counters {counted:?} disagree with the orders and the ledger {seen:?}"
            ),
            Violation::UnpaidPastDeadline {
                order,
                expires_at,
                due_by,
            } => write!(
                f,
                "order {order} is still pending payment {} after its deadline, after the reaper ran",
                *due_by - *expires_at
            ),
        }
    }
}

/// Checks every promise the observation can show; all violations, not just the first.
pub fn check<O: Id, B: Id>(seen: &Observation<O, B>) -> Result<(), Vec<Violation<O, B>>> {
    let mut violations = Vec::new();

    // Each order once; the last reading of an id is the one the other checks use.
    let mut orders: BTreeMap<&O, &SeenOrder<O, B>> = BTreeMap::new();
    for order in &seen.orders {
        if orders.insert(&order.id, order).is_some() {
            violations.push(Violation::Duplicated {
                order: order.id.clone(),
            });
        }
    }
    // What holds a unit: a live order, or a queued reservation not written yet.
    let mut live: BTreeMap<&O, &B> = orders
        .values()
        .filter(|o| o.status.is_live())
        .map(|o| (&o.id, &o.buyer))
        .collect();
    for reservation in &seen.queued {
        if !orders.contains_key(&reservation.id) {
            live.insert(&reservation.id, &reservation.buyer);
        }
    }
    let held = live.len() as u64;

    // 1. Never oversold.
    if held > seen.stock {
        violations.push(Violation::Oversold {
            held,
            on_sale: 0,
            stock: seen.stock,
        });
    } else if let Some(available) = seen.available
        && available + held > seen.stock
    {
        violations.push(Violation::Oversold {
            held,
            on_sale: available,
            stock: seen.stock,
        });
    }
    if let Some(counted) = seen.counted
        && counted.held() > seen.stock
    {
        violations.push(Violation::Oversold {
            held: counted.held(),
            on_sale: 0,
            stock: seen.stock,
        });
    }

    // 2. Every 202 is one order, and no order is made up.
    let mut by_request: BTreeMap<&str, &O> = BTreeMap::new();
    let mut buyer_of: BTreeMap<&O, &B> = BTreeMap::new();
    let queued: BTreeSet<&O> = seen.queued.iter().map(|r| &r.id).collect();
    for ack in &seen.acknowledged {
        if let Some(request) = &ack.request
            && let Some(earlier) = by_request.insert(request, &ack.order)
            && *earlier != ack.order
        {
            violations.push(Violation::TwoOrdersForOneRequest {
                request: request.clone(),
                orders: (earlier.clone(), ack.order.clone()),
            });
        }
        match buyer_of.insert(&ack.order, &ack.buyer) {
            Some(earlier) if *earlier != ack.buyer => {
                violations.push(Violation::OneOrderForTwoBuyers {
                    order: ack.order.clone(),
                    buyers: (earlier.clone(), ack.buyer.clone()),
                });
            }
            Some(_) => {}
            None => {
                if !orders.contains_key(&ack.order) && !queued.contains(&ack.order) {
                    violations.push(Violation::Lost {
                        order: ack.order.clone(),
                    });
                }
            }
        }
    }
    if let Some(counted) = seen.counted {
        let orders = counted.queued
            + counted.pending_payment
            + counted.paid
            + counted.expired
            + counted.cancelled;
        let acknowledged = buyer_of.len() as u64;
        if orders < acknowledged {
            violations.push(Violation::FewerOrdersThanAcknowledged {
                orders,
                acknowledged,
            });
        }
    }
    if let Some(requested) = &seen.requested {
        let known: BTreeSet<&O> = orders
            .keys()
            .copied()
            .chain(queued.iter().copied())
            .collect();
        if let Some(id) = known.into_iter().find(|id| !requested.contains(*id)) {
            violations.push(Violation::Invented { order: id.clone() });
        }
    }

    // 3. The per-buyer limit holds.
    let mut per_buyer: BTreeMap<&B, u64> = BTreeMap::new();
    for buyer in live.values() {
        *per_buyer.entry(*buyer).or_default() += 1;
    }
    for (buyer, held) in per_buyer {
        if held > seen.per_buyer_limit {
            violations.push(Violation::OverLimit {
                buyer: buyer.clone(),
                held,
                limit: seen.per_buyer_limit,
            });
        }
    }

    // 5. Nothing reserved outside the sale.
    if let Some((start, end)) = seen.window {
        for order in orders.values() {
            if let Some(at) = order.reserved_at
                && (at < start || at >= end)
            {
                violations.push(Violation::OutsideSale {
                    order: order.id.clone(),
                    reserved_at: at,
                    window: (start, end),
                });
            }
        }
    }

    // A paid answer stays true.
    for answer in &seen.paid {
        let now = orders.get(&answer.order);
        let kept = now.is_some_and(|o| {
            o.status == OrderStatus::Paid
                && (answer.payment.is_none() || o.payment == answer.payment)
        });
        if !kept {
            violations.push(Violation::PaidNotKept {
                order: answer.order.clone(),
                payment: answer.payment.clone(),
                now: now.map(|o| (o.status, o.payment.clone())),
            });
        }
    }

    // A unit comes back only from a dead order; unpaid orders come back in time.
    for id in &seen.returned {
        if live.contains_key(id) {
            violations.push(Violation::ReturnedWhileLive { order: id.clone() });
        }
    }
    if let Some(due_by) = seen.due_by {
        for order in orders.values() {
            if order.status == OrderStatus::PendingPayment
                && let Some(expires_at) = order.expires_at
                && due_by >= expires_at
            {
                violations.push(Violation::UnpaidPastDeadline {
                    order: order.id.clone(),
                    expires_at,
                    due_by,
                });
            }
        }
    }

    // 4. Once quiet, every unit is accounted for exactly, and the counters agree with the
    // orders (while units move, a count and a listing read one after the other may differ).
    let count = |status: OrderStatus| orders.values().filter(|o| o.status == status).count();
    let (pending, paid, expired) = (
        count(OrderStatus::PendingPayment) as u64,
        count(OrderStatus::Paid) as u64,
        count(OrderStatus::Expired) as u64,
    );
    if seen.quiet {
        // A reservation whose order is written may still wait for its ack: not a unit held.
        let unwritten = seen
            .queued
            .iter()
            .filter(|r| !orders.contains_key(&r.id))
            .count() as u64;
        let queued = seen.counted.map_or(0, |c| c.queued).max(unwritten);
        if queued > 0 {
            violations.push(Violation::NotDrained { queued });
        }
        if let Some(available) = seen.available
            && seen.orders_complete
            && available + pending + paid != seen.stock
        {
            violations.push(Violation::NotConserved {
                available,
                pending,
                paid,
                stock: seen.stock,
            });
        }
        if let Some(c) = seen.counted
            && c.available + c.pending_payment + c.paid != seen.stock
        {
            violations.push(Violation::NotConserved {
                available: c.available,
                pending: c.pending_payment,
                paid: c.paid,
                stock: seen.stock,
            });
        }
    }
    if let Some(counted) = seen.counted
        && seen.orders_complete
        && seen.quiet
    {
        let seen_counts = Counted {
            available: seen.available.unwrap_or(counted.available),
            queued: 0,
            pending_payment: pending,
            paid,
            expired,
            cancelled: counted.cancelled,
        };
        if seen_counts != counted {
            violations.push(Violation::CountsDisagree {
                counted,
                seen: seen_counts,
            });
        }
    }

    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

/// The violations as one line each, for a panic or a report.
pub fn describe<O: Display, B: Display>(violations: &[Violation<O, B>]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    type Seen = Observation<&'static str, &'static str>;
    /// A change that breaks one promise of a sale that kept them all.
    type Breaks = Box<dyn Fn(&mut Seen)>;

    fn order(
        id: &'static str,
        buyer: &'static str,
        status: OrderStatus,
    ) -> SeenOrder<&'static str, &'static str> {
        SeenOrder {
            id,
            buyer,
            status,
            payment: None,
            reserved_at: Some(datetime!(2026-11-25 12:30 UTC)),
            expires_at: Some(datetime!(2026-11-25 12:40 UTC)),
        }
    }

    fn promises(seen: &Seen) -> Vec<Promise> {
        check(seen)
            .err()
            .unwrap_or_default()
            .iter()
            .map(Violation::promise)
            .collect()
    }

    #[test]
    fn a_sale_that_kept_its_promises_passes() {
        let mut seen = Seen::new(3, 1);
        seen.orders = vec![
            order("o1", "alice", OrderStatus::PendingPayment),
            order("o2", "bob", OrderStatus::Expired),
        ];
        seen.orders_complete = true;
        seen.queued = vec![SeenReservation {
            id: "o3",
            buyer: "carol",
        }];
        seen.acknowledged = vec![Acknowledged {
            order: "o1",
            buyer: "alice",
            request: None,
        }];
        seen.available = Some(1);
        assert_eq!(check(&seen), Ok(()));
    }

    #[test]
    fn each_broken_promise_is_named() {
        let table: Vec<(&str, Breaks, Promise)> = vec![
            (
                "two live orders for one unit",
                Box::new(|s: &mut Seen| {
                    s.orders = vec![
                        order("a", "x", OrderStatus::Paid),
                        order("b", "y", OrderStatus::PendingPayment),
                    ];
                }),
                Promise::WithinStock,
            ),
            (
                "a unit on sale while every unit is held",
                Box::new(|s: &mut Seen| {
                    s.orders = vec![order("a", "x", OrderStatus::Paid)];
                    s.available = Some(1);
                }),
                Promise::WithinStock,
            ),
            (
                "an order read twice",
                Box::new(|s: &mut Seen| {
                    s.orders = vec![
                        order("a", "x", OrderStatus::Expired),
                        order("a", "x", OrderStatus::Expired),
                    ];
                }),
                Promise::AcknowledgedIsOneOrder,
            ),
            (
                "a 202 nowhere",
                Box::new(|s: &mut Seen| {
                    s.acknowledged = vec![Acknowledged {
                        order: "a",
                        buyer: "x",
                        request: None,
                    }];
                }),
                Promise::AcknowledgedIsOneOrder,
            ),
            (
                "one request, two orders",
                Box::new(|s: &mut Seen| {
                    s.queued = vec![SeenReservation {
                        id: "a",
                        buyer: "x",
                    }];
                    s.orders = vec![order("b", "x", OrderStatus::Expired)];
                    s.acknowledged = vec![
                        Acknowledged {
                            order: "a",
                            buyer: "x",
                            request: Some("x/k".into()),
                        },
                        Acknowledged {
                            order: "b",
                            buyer: "x",
                            request: Some("x/k".into()),
                        },
                    ];
                }),
                Promise::AcknowledgedIsOneOrder,
            ),
            (
                "an order nobody asked for",
                Box::new(|s: &mut Seen| {
                    s.orders = vec![order("a", "x", OrderStatus::Expired)];
                    s.requested = Some(BTreeSet::new());
                }),
                Promise::AcknowledgedIsOneOrder,
            ),
            (
                "a buyer over the limit",
                Box::new(|s: &mut Seen| {
                    s.stock = 2;
                    s.orders = vec![order("a", "x", OrderStatus::Paid)];
                    s.queued = vec![SeenReservation {
                        id: "b",
                        buyer: "x",
                    }];
                }),
                Promise::BuyerLimit,
            ),
            (
                "reserved after the end",
                Box::new(|s: &mut Seen| {
                    s.orders = vec![order("a", "x", OrderStatus::Paid)];
                    s.window = Some((
                        datetime!(2026-11-25 12:00 UTC),
                        datetime!(2026-11-25 12:30 UTC),
                    ));
                }),
                Promise::InsideSale,
            ),
            (
                "paid, then expired",
                Box::new(|s: &mut Seen| {
                    s.orders = vec![order("a", "x", OrderStatus::Expired)];
                    s.paid = vec![AnsweredPaid {
                        order: "a",
                        payment: None,
                    }];
                }),
                Promise::PaidStaysPaid,
            ),
            (
                "the unit of a live order given back",
                Box::new(|s: &mut Seen| {
                    s.orders = vec![order("a", "x", OrderStatus::PendingPayment)];
                    s.returned = vec!["a"];
                }),
                Promise::ReturnedOnce,
            ),
            (
                "unpaid past its deadline after the reaper",
                Box::new(|s: &mut Seen| {
                    s.orders = vec![order("a", "x", OrderStatus::PendingPayment)];
                    s.due_by = Some(datetime!(2026-11-25 13:00 UTC));
                }),
                Promise::ReturnedOnce,
            ),
            (
                "quiet, and a unit missing",
                Box::new(|s: &mut Seen| {
                    s.orders = vec![order("a", "x", OrderStatus::Expired)];
                    s.orders_complete = true;
                    s.available = Some(0);
                    s.quiet = true;
                }),
                Promise::Conserved,
            ),
            (
                "quiet, and the counters disagree with the orders",
                Box::new(|s: &mut Seen| {
                    s.orders = vec![order("a", "x", OrderStatus::Paid)];
                    s.orders_complete = true;
                    s.counted = Some(Counted {
                        available: 1,
                        ..Counted::default()
                    });
                    s.quiet = true;
                }),
                Promise::Conserved,
            ),
        ];
        for (case, break_it, promise) in table {
            let mut seen = Seen::new(1, 1);
            break_it(&mut seen);
            let found = promises(&seen);
            assert!(
                found.contains(&promise),
                "{case}: expected {promise:?}, got {found:?}"
            );
        }
    }
}
