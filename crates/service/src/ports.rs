//! The ports: small traits the service uses to reach stock, the durable queue, the order store,
//! the waiting lines and the clock. Each method's contract is written here and checked by the conformance suite
//! (`crate::conformance`) that every backend runs, embedded and real alike.

use async_trait::async_trait;
pub use flashsale_core::line::{
    AdmitInputs, DrawKey, JoinProof, JoinRecord, JoinRefused, LineControl, LineEvent, LineId,
    LineSummary, LineTimes, Place, Standing,
};
use flashsale_core::{
    BatchId, BuyerId, Order, OrderId, PaymentId, Reservation, ReserveOutcome, ReturnOutcome, Sale,
    SaleId, Timestamp,
};
pub use flashsale_core::{Holding, LedgerEntry};
use std::time::Duration;

/// Something a backend could not do. Business answers (sold out, limit reached, queue full,
/// payment expired) are values, never this.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{backend} failed ({}): {message}", if *.outcome_known { "nothing was changed" } else { "the outcome is unknown" })]
pub struct BackendError {
    /// Which backend, e.g. "sqlite order store"; shown in logs, never to clients.
    pub backend: &'static str,
    /// True when the operation surely did not happen (determinate); false when it may have
    /// (a timeout after the request was sent).
    pub outcome_known: bool,
    pub message: String,
}

impl BackendError {
    pub fn determinate(backend: &'static str, message: impl std::fmt::Display) -> Self {
        Self {
            backend,
            outcome_known: true,
            message: message.to_string(),
        }
    }

    pub fn indeterminate(backend: &'static str, message: impl std::fmt::Display) -> Self {
        Self {
            backend,
            outcome_known: false,
            message: message.to_string(),
        }
    }
}

pub type BackendResult<T> = Result<T, BackendError>;

/// The time source. Production uses the system clock; tests and simulations set time by hand.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// One buy of a `StockLedger::reserve` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buy {
    pub order: OrderId,
    pub buyer: BuyerId,
}

/// A reservation taken and not yet settled, and the batch it was taken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PendingReservation {
    pub order: OrderId,
    pub batch: BatchId,
}

/// How `StockLedger::open_sale` treats a ledger that already exists for the sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Replace it: an edit of the stock rules before the start, when nobody can hold a unit.
    Replace,
    /// Keep it and change nothing. Recovery and new sales use this: on a shared backend other
    /// nodes may already be selling from the ledger, and replacing it would forget their
    /// pending reservations (and could oversell).
    IfAbsent,
}

/// What `open_sale` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    Installed,
    /// `IfAbsent` found a ledger and left it as it was.
    AlreadyOpen,
}

/// Stock and per-buyer limits: the reservation layer.
///
/// Every operation on one sale is atomic with respect to every other, across all nodes that
/// share the backend. Order ids make `reserve` idempotent.
#[async_trait]
pub trait StockLedger: Send + Sync {
    /// Installs a sale's ledger with `stock_total` units and `per_buyer_limit`, restoring the
    /// given holdings (orders already in the store or the queue). An earlier ledger of that
    /// sale is replaced or kept as `mode` says; the check and the install are one atomic step.
    /// Fails, changing nothing, if the live holdings exceed the stock.
    async fn open_sale(
        &self,
        sale: SaleId,
        stock_total: u32,
        per_buyer_limit: u32,
        holdings: Vec<Holding>,
        mode: OpenMode,
    ) -> BackendResult<Opened>;

    /// Takes one unit for each buy, in order, as `SaleLedger::reserve` would one after the
    /// other (see there for the order of checks), and answers each. Each `Reserved` buy is
    /// pending in `batch` until `confirm` or `cancel_pending`. One call, so a backend across
    /// the network pays one round trip for the whole batch. An unknown sale is a determinate
    /// error; an error says nothing about single buys, so after an unknown outcome any of them
    /// may be pending (the reconciler settles them).
    async fn reserve(
        &self,
        sale: SaleId,
        batch: BatchId,
        buys: &[Buy],
    ) -> BackendResult<Vec<ReserveOutcome>>;

    /// `batch` is durable (it is in the queue): marks its pending reservations `orders`
    /// durable. A batch is durable as one, so a backend may mark every reservation of the
    /// batch still pending durable, whichever of them `orders` names; give back the units of
    /// a batch's reservations that did not become durable (`cancel_pending`) before
    /// confirming the rest. Idempotent.
    async fn confirm(&self, sale: SaleId, batch: BatchId, orders: &[OrderId]) -> BackendResult<()>;

    /// Gives back the units of pending reservations that could not be made durable, and
    /// forgets their order ids. A no-op for anything not pending.
    async fn cancel_pending(&self, sale: SaleId, orders: &[OrderId]) -> BackendResult<()>;

    /// Gives back the unit of a durable reservation whose order expired or was cancelled;
    /// exactly once: a second call answers `AlreadyReturned` and changes nothing.
    async fn return_unit(&self, sale: SaleId, order: OrderId) -> BackendResult<ReturnOutcome>;

    /// Units still available to reserve.
    async fn available(&self, sale: SaleId) -> BackendResult<u32>;

    /// Reservations still pending: taken, and neither confirmed, cancelled nor returned. The
    /// reconciler settles the ones that stay pending too long (their node died between the
    /// take and the enqueue's answer). Meant to be small: only buys in flight are pending.
    async fn pending_orders(&self, sale: SaleId) -> BackendResult<Vec<PendingReservation>>;

    /// What the ledger knows of one order id, if anything.
    async fn entry(&self, sale: SaleId, order: OrderId) -> BackendResult<Option<LedgerEntry>>;

    /// Gives back the units this node holds for the sale beyond its reservations (its stock
    /// lease), so other nodes can sell them: at the sale's end and at shutdown. A no-op for a
    /// ledger without leases.
    async fn release_lease(&self, _sale: SaleId) -> BackendResult<()> {
        Ok(())
    }
}

/// Answer to `ReservationQueue::void`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoidOutcome {
    /// Nothing was stored under this batch id; now a tombstone is, so a late enqueue of it can
    /// no longer become durable.
    Voided,
    /// Something was stored under this batch id before: the batch itself (queued, or already
    /// written and acknowledged) or an earlier tombstone. `find` and the order store tell
    /// which.
    AlreadyStored,
}

/// A reservation in the queue and the batch it was enqueued in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub batch: BatchId,
    pub reservation: Reservation,
}

/// Answer to an enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// The reservation is durable: it will be delivered until acknowledged.
    Durable,
    /// The queue is at capacity; nothing was stored. Fail fast.
    Full,
}

/// The durable, bounded queue of reservations: the acknowledgement point of a buy.
///
/// Reservations are enqueued in batches, and a batch is made durable as one unit: all of its
/// reservations or none. A batch id names it; the stock ledger remembers each reservation's
/// batch, which is how `find` and `void` are addressed.
#[async_trait]
pub trait ReservationQueue: Send + Sync {
    /// Stores the batch's reservations durably, all or none, and only then returns `Durable`.
    /// Enqueuing a batch id that is already queued stores it once (and answers `Durable`).
    /// Returns `Full` at once, storing nothing, when the queue is at its capacity. The capacity
    /// counts reservations; a backend that can bound only messages and bytes (JetStream)
    /// counts a batch as one message and by its size, so batched it may hold more reservations
    /// than the capacity before it answers `Full`, never fewer. An empty batch is `Durable` at
    /// once.
    async fn enqueue(
        &self,
        batch: BatchId,
        reservations: Vec<Reservation>,
    ) -> BackendResult<Enqueued>;

    /// Hands out up to `max` queued reservations that no other consumer holds, waiting up to
    /// `wait` for the first. A backend that keeps a batch as one unit (one message) may hand
    /// out a batch bigger than `max` whole, but never more than one batch beyond `max`. Each
    /// reservation is delivered again if it is neither acked nor nacked within the queue's ack
    /// deadline (the consumer died); a reservation acked alone may come back with the rest of
    /// its batch if that is nacked or times out (order writers insert idempotently).
    async fn take_batch(&self, max: usize, wait: Duration) -> BackendResult<Vec<Reservation>>;

    /// Removes delivered reservations for good (they are written as orders). Acking an
    /// unknown id is a no-op.
    async fn ack(&self, orders: &[OrderId]) -> BackendResult<()>;

    /// Hands delivered reservations back for immediate redelivery.
    async fn nack(&self, orders: &[OrderId]) -> BackendResult<()>;

    /// The reservation of `order` if it is queued (not yet acknowledged) in `batch`. A
    /// tombstone holds none.
    async fn find(&self, batch: BatchId, order: OrderId) -> BackendResult<Option<Reservation>>;

    /// Makes sure a batch with this id can no longer become durable, unless it already is: the
    /// reconciler's step for reservations whose node died before the enqueue's answer. Atomic
    /// with `enqueue` of the same id: after `Voided`, an enqueue of it fails with an unknown
    /// outcome, and the tombstone is never delivered or listed.
    async fn void(&self, batch: BatchId) -> BackendResult<VoidOutcome>;

    /// Every reservation still queued, delivered or not, for rebuilding stock state at start.
    async fn all_queued(&self) -> BackendResult<Vec<Queued>>;

    /// Reservations queued and not yet acknowledged (approximate under concurrency).
    fn depth(&self) -> usize;

    /// The most reservations the queue holds before answering `Full`.
    fn capacity(&self) -> usize;
}

/// Counts of a sale's orders by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrderCounts {
    pub pending_payment: u64,
    pub paid: u64,
    pub expired: u64,
    pub cancelled: u64,
}

/// The answer to a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayOutcome {
    /// Paid now, or paid before with the same payment id (same answer).
    Paid(Order),
    /// Paid before with another payment id.
    PaidByOtherPayment,
    /// The payment window closed (whether or not the reaper has run yet).
    Expired,
    Cancelled,
    /// No such order for this buyer.
    NotFound,
}

/// Sales, orders and payments.
#[async_trait]
pub trait OrderStore: Send + Sync {
    /// Stores a new sale. A sale id that exists already is a determinate error.
    async fn create_sale(&self, sale: &Sale) -> BackendResult<()>;

    /// Replaces a sale's stored definition, but only if the stored version is
    /// `sale.version - 1` (compare-and-set); returns whether it was replaced.
    async fn update_sale(&self, sale: &Sale) -> BackendResult<bool>;

    async fn get_sale(&self, id: SaleId) -> BackendResult<Option<Sale>>;

    /// All sales, oldest first.
    async fn list_sales(&self) -> BackendResult<Vec<Sale>>;

    /// Writes each reservation as a `pending_payment` order, in one transaction. Idempotent:
    /// an order id that exists already is skipped. Returns how many were new.
    async fn insert_orders(&self, batch: &[Reservation]) -> BackendResult<u64>;

    async fn get_order(&self, id: OrderId) -> BackendResult<Option<Order>>;

    /// Pays `id` for `buyer` (someone else's order is `NotFound`), deciding with
    /// `Order::decide_pay` and applying `pending_payment → paid` as a compare-and-set, so a
    /// racing expiry and payment cannot both win.
    async fn pay(
        &self,
        id: OrderId,
        buyer: &BuyerId,
        payment: &PaymentId,
        now: Timestamp,
    ) -> BackendResult<PayOutcome>;

    /// Moves up to `max` orders whose payment window closed by `now` from `pending_payment` to
    /// `expired`, each by compare-and-set, and returns exactly the ones this call moved: two
    /// reapers racing never both get the same order.
    async fn expire_due(&self, now: Timestamp, max: usize) -> BackendResult<Vec<Order>>;

    async fn order_counts(&self, sale: SaleId) -> BackendResult<OrderCounts>;

    /// Every order of the sale with whether it is live (`OrderStatus::is_live`), for
    /// rebuilding stock state.
    async fn holdings(&self, sale: SaleId) -> BackendResult<Vec<Holding>>;

    /// Orders of a sale, newest first, at most `max` (for the admin view and the checker).
    async fn recent_orders(&self, sale: SaleId, max: usize) -> BackendResult<Vec<Order>>;
}

/// `url` with any password replaced by `***`, for error messages and logs that name a
/// backend's address (`redis://:s3cret@cache:6379` → `redis://:***@cache:6379`).
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_password;

    #[test]
    fn passwords_never_show_in_backend_urls() {
        let cases = [
            ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
            (
                "postgres://app:pw@db:5432/orders?sslmode=disable",
                "postgres://app:***@db:5432/orders?sslmode=disable",
            ),
            ("nats://user@127.0.0.1:4222", "nats://user@127.0.0.1:4222"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("not a url", "not a url"),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_password(url), expected, "{url}");
        }
    }
}

/// Why the line did not do what was asked: business answers, not failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineRefused {
    /// The backend has no line for this sale: never set up, or lost (a Redis that restarted
    /// empty). The service sets it up again only while nobody can have joined.
    #[error("the sale has no line here")]
    NotSetUp,
    #[error("the line is not open yet")]
    NotOpen,
    #[error("the sale has ended")]
    Ended,
    /// A newcomer's join without the proof of work the sale asks.
    #[error("a new place in this line needs a solved challenge")]
    ProofMissing,
    /// The challenge already bought a place: it works once.
    #[error("the challenge was used already")]
    ChallengeUsed,
}

impl From<JoinRefused> for LineRefused {
    fn from(refused: JoinRefused) -> Self {
        match refused {
            JoinRefused::NotOpen => LineRefused::NotOpen,
            JoinRefused::Ended => LineRefused::Ended,
            JoinRefused::ProofMissing => LineRefused::ProofMissing,
            JoinRefused::ChallengeUsed => LineRefused::ChallengeUsed,
        }
    }
}

pub type LineAnswer<T> = Result<T, LineRefused>;

/// The waiting lines, one per sale that has one. The rules are `flashsale_core::line::Line`'s:
/// a backend keeps that state (in process, or in Redis beside the stock) and follows those rules
/// exactly, so one place per buyer across every node, and one admission counter per sale.
/// Every `now` is the caller's clock; a line never moves its own time backwards.
#[async_trait]
pub trait WaitingLine: Send + Sync {
    /// Sets a sale's line up, or moves the times of one set up already, as
    /// `Line::set_times` does (every time before the draw; after it only the end and the
    /// admission time). Idempotent: a line set up already keeps its members, admissions and
    /// control.
    async fn set_up(&self, sale: SaleId, times: LineTimes) -> BackendResult<()>;

    /// Joins the line, or finds the place already held, as `Line::join_with` does. `key` is
    /// the joiner's draw key. A join before `starts_at` lands in the pre-queue; the first call
    /// of any kind at or after `starts_at` draws it. A challenge that bought a place is
    /// remembered with it (as long as the line), so it works once on every node.
    async fn join_with(
        &self,
        sale: SaleId,
        line: LineId,
        key: DrawKey,
        now: Timestamp,
        proof: JoinProof,
    ) -> BackendResult<LineAnswer<Place>>;

    /// Joins the line of a sale that asks no proof of work.
    async fn join(
        &self,
        sale: SaleId,
        line: LineId,
        key: DrawKey,
        now: Timestamp,
    ) -> BackendResult<LineAnswer<Place>> {
        self.join_with(sale, line, key, now, JoinProof::NotAsked)
            .await
    }

    /// A member's place (`None` for someone who never joined), drawing first if due.
    async fn place(
        &self,
        sale: SaleId,
        line: LineId,
        now: Timestamp,
    ) -> BackendResult<LineAnswer<Option<Place>>>;

    /// Moves the admission counter as far as `inputs` allow at `now` and tells the line's
    /// summary.
    async fn advance(
        &self,
        sale: SaleId,
        now: Timestamp,
        inputs: AdmitInputs,
    ) -> BackendResult<LineAnswer<LineSummary>>;

    /// Where a member stands at `now`, exactly (after an `advance` with the same inputs).
    async fn standing(
        &self,
        sale: SaleId,
        line: LineId,
        now: Timestamp,
        inputs: AdmitInputs,
    ) -> BackendResult<LineAnswer<Option<Standing>>>;

    /// Notes a buy under the admission of `position` (idempotent).
    async fn record_bought(&self, sale: SaleId, position: u64) -> BackendResult<LineAnswer<()>>;

    /// Pauses, resumes or re-rates the line (replaces the whole control).
    async fn set_control(
        &self,
        sale: SaleId,
        control: LineControl,
    ) -> BackendResult<LineAnswer<()>>;

    /// The members in position order from `from` (1-based), at most `limit` (after the draw;
    /// empty before it).
    async fn members(
        &self,
        sale: SaleId,
        from: u64,
        limit: usize,
    ) -> BackendResult<LineAnswer<Vec<LineId>>>;

    /// A member's index (1-based) in the join chain, `None` for someone who never joined: the
    /// place of their receipt (`core::line_log`).
    async fn receipt(&self, sale: SaleId, line: LineId) -> BackendResult<LineAnswer<Option<u64>>>;

    /// The join chain from `from` (1-based), at most `limit` records, in the order the line
    /// took them (`Line::join_records`).
    async fn join_records(
        &self,
        sale: SaleId,
        from: u64,
        limit: usize,
    ) -> BackendResult<LineAnswer<Vec<JoinRecord>>>;

    /// The event chain (admissions and buys) from `from` (1-based), at most `limit` records
    /// (`Line::events`).
    async fn events(
        &self,
        sale: SaleId,
        from: u64,
        limit: usize,
    ) -> BackendResult<LineAnswer<Vec<LineEvent>>>;
}
