//! The conformance suite every backend runs: one public async case per written contract of a
//! port, and macros that expand into one `#[tokio::test]` per case for a given backend factory.
//!
//! The cases check only what the traits in `crate::ports` promise, so the embedded backends and
//! the scaled-out ones (Redis, NATS, PostgreSQL) are held to exactly the same rules. Usage, in a
//! backend crate's integration test:
//!
//! ```text
//! flashsale_service::stock_ledger_conformance!(|| async {
//!     (Arc::new(MyStock::new()) as Arc<dyn StockLedger>, ())
//! });
//! flashsale_service::reservation_queue_conformance!(|setup: QueueSetup| async move {
//!     let dir = tempfile::tempdir().expect("temp dir");
//!     (Arc::new(MyQueue::open(dir.path(), setup)) as Arc<dyn ReservationQueue>, dir)
//! });
//! flashsale_service::order_store_conformance!(|| async { (my_fresh_store().await, guard) });
//! ```
//!
//! Each factory call must produce a fresh, isolated backend (a fresh temp dir or database). It
//! returns the backend and a guard that lives until the end of the test, for whatever must
//! outlive the backend (a temp dir, a container handle); `()` if nothing does.
//!
//! Timestamps in the cases are whole milliseconds: stores keep milliseconds, and a case should
//! not fail on precision no contract promises.

use crate::ports::{
    BackendResult, Buy, Enqueued, Holding, LedgerEntry, OpenMode, Opened, OrderCounts, OrderStore,
    PayOutcome, PendingReservation, Queued, ReservationQueue, StockLedger, VoidOutcome,
};
use flashsale_core::{
    BatchId, BuyerId, Order, OrderId, OrderStatus, PaymentId, Reservation, ReservationState,
    ReserveOutcome, ReturnOutcome, Sale, SaleId, SaleSpec, Timestamp,
};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::macros::datetime;
use uuid::Uuid;

/// How a queue case wants its fresh queue set up. Backends map these onto their own config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSetup {
    /// The most reservations the queue may hold before answering `Full`.
    pub capacity: usize,
    /// How long a delivered reservation stays with its consumer before it is delivered again.
    pub ack_deadline: Duration,
}

impl Default for QueueSetup {
    /// Roomy, with a deadline far longer than any case holds a delivery, so only the
    /// redelivery case ever sees one.
    fn default() -> Self {
        Self {
            capacity: 10_000,
            ack_deadline: Duration::from_secs(60),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the cases.

/// A fixed start of time for the cases, in whole milliseconds.
fn t0() -> Timestamp {
    datetime!(2030-01-01 12:00 UTC)
}

fn new_sale_id() -> SaleId {
    SaleId(Uuid::now_v7())
}

fn new_order_id() -> OrderId {
    OrderId(Uuid::now_v7())
}

fn buyer(name: &str) -> BuyerId {
    BuyerId::parse(name).expect("valid buyer id")
}

fn payment(name: &str) -> PaymentId {
    PaymentId::parse(name).expect("valid payment id")
}

fn reservation(
    sale: SaleId,
    who: &str,
    reserved_at: Timestamp,
    payment_window_secs: u32,
) -> Reservation {
    Reservation::new(
        new_order_id(),
        sale,
        buyer(who),
        reserved_at,
        payment_window_secs,
    )
}

fn spec(name: &str, stock: u32) -> SaleSpec {
    SaleSpec {
        name: name.to_owned(),
        price_cents: 1_999,
        stock,
        starts_at: t0(),
        ends_at: t0() + time::Duration::hours(1),
        per_buyer_limit: 2,
        payment_window_secs: 600,
    }
}

/// One buy as its own batch, the way the classic design reserves: most stock cases are about
/// the rules of one reservation, and read better one call at a time.
trait ReserveOne {
    async fn reserve_one(
        &self,
        sale: SaleId,
        order: OrderId,
        buyer: &BuyerId,
    ) -> BackendResult<ReserveOutcome>;
}

impl ReserveOne for dyn StockLedger {
    async fn reserve_one(
        &self,
        sale: SaleId,
        order: OrderId,
        buyer: &BuyerId,
    ) -> BackendResult<ReserveOutcome> {
        let buys = [Buy {
            order,
            buyer: buyer.clone(),
        }];
        let outcomes = self.reserve(sale, BatchId::of_order(order), &buys).await?;
        assert_eq!(outcomes.len(), 1, "one answer per buy: {outcomes:?}");
        Ok(outcomes[0])
    }
}

/// Reservations enqueued alone (each its own batch), for the cases about queue rules that do
/// not depend on batching.
trait EnqueueOne {
    async fn enqueue_one(&self, reservation: Reservation) -> BackendResult<Enqueued>;
    async fn find_one(&self, order: OrderId) -> BackendResult<Option<Reservation>>;
    /// `all_queued`, without the batches.
    async fn queued(&self) -> BackendResult<Vec<Reservation>>;
}

impl EnqueueOne for dyn ReservationQueue {
    async fn enqueue_one(&self, reservation: Reservation) -> BackendResult<Enqueued> {
        self.enqueue(BatchId::of_order(reservation.order_id), vec![reservation])
            .await
    }

    async fn find_one(&self, order: OrderId) -> BackendResult<Option<Reservation>> {
        self.find(BatchId::of_order(order), order).await
    }

    async fn queued(&self) -> BackendResult<Vec<Reservation>> {
        Ok(self
            .all_queued()
            .await?
            .into_iter()
            .map(|q| q.reservation)
            .collect())
    }
}

fn sorted_ids(reservations: &[Reservation]) -> Vec<OrderId> {
    let mut ids: Vec<OrderId> = reservations.iter().map(|r| r.order_id).collect();
    ids.sort();
    ids
}

// ---------------------------------------------------------------------------------------------
// StockLedger.

pub mod stock {
    //! Cases for `StockLedger`.

    use super::*;

    /// Stock runs out and the per-buyer limit holds; `available` follows every reservation.
    pub async fn stock_reserve_respects_stock_and_limit(ledger: Arc<dyn StockLedger>) {
        let sale = new_sale_id();
        ledger
            .open_sale(sale, 3, 2, vec![], OpenMode::Replace)
            .await
            .expect("open");
        let (a, b, c) = (buyer("a"), buyer("b"), buyer("c"));
        assert_eq!(ledger.available(sale).await.expect("available"), 3);
        assert_eq!(
            ledger
                .reserve_one(sale, new_order_id(), &a)
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
        assert_eq!(
            ledger
                .reserve_one(sale, new_order_id(), &a)
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
        assert_eq!(ledger.available(sale).await.expect("available"), 1);
        assert_eq!(
            ledger
                .reserve_one(sale, new_order_id(), &a)
                .await
                .expect("reserve"),
            ReserveOutcome::LimitReached
        );
        assert_eq!(
            ledger.available(sale).await.expect("available"),
            1,
            "a refused buy takes nothing"
        );
        assert_eq!(
            ledger
                .reserve_one(sale, new_order_id(), &b)
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
        assert_eq!(
            ledger
                .reserve_one(sale, new_order_id(), &c)
                .await
                .expect("reserve"),
            ReserveOutcome::SoldOut
        );
        assert_eq!(ledger.available(sale).await.expect("available"), 0);
    }

    /// One unit, many buyers: exactly one wins and stock never goes below zero.
    pub async fn stock_never_below_zero(ledger: Arc<dyn StockLedger>) {
        let sale = new_sale_id();
        ledger
            .open_sale(sale, 1, 1, vec![], OpenMode::Replace)
            .await
            .expect("open");
        let mut reserved = 0;
        for n in 0..10 {
            match ledger
                .reserve_one(sale, new_order_id(), &buyer(&format!("b{n}")))
                .await
                .expect("reserve")
            {
                ReserveOutcome::Reserved => reserved += 1,
                ReserveOutcome::SoldOut => {}
                other => panic!("unexpected {other:?}"),
            }
            assert_eq!(ledger.available(sale).await.expect("available"), 0);
        }
        assert_eq!(reserved, 1);
    }

    /// A repeated order id is `Duplicate` carrying its state, and stays `Duplicate` after the
    /// sale sold out: a retry never reads as "sold out".
    pub async fn stock_duplicate_order_id(ledger: Arc<dyn StockLedger>) {
        let sale = new_sale_id();
        ledger
            .open_sale(sale, 2, 2, vec![], OpenMode::Replace)
            .await
            .expect("open");
        let a = buyer("a");
        let first = new_order_id();
        assert_eq!(
            ledger.reserve_one(sale, first, &a).await.expect("reserve"),
            ReserveOutcome::Reserved
        );
        assert_eq!(
            ledger.reserve_one(sale, first, &a).await.expect("reserve"),
            ReserveOutcome::Duplicate(ReservationState::Pending)
        );
        ledger
            .confirm(sale, BatchId::of_order(first), &[first])
            .await
            .expect("confirm");
        assert_eq!(
            ledger.reserve_one(sale, first, &a).await.expect("reserve"),
            ReserveOutcome::Duplicate(ReservationState::Durable)
        );
        assert_eq!(
            ledger.available(sale).await.expect("available"),
            1,
            "a duplicate takes nothing"
        );
        assert_eq!(
            ledger
                .reserve_one(sale, new_order_id(), &buyer("b"))
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
        assert_eq!(
            ledger
                .reserve_one(sale, new_order_id(), &buyer("c"))
                .await
                .expect("reserve"),
            ReserveOutcome::SoldOut
        );
        assert_eq!(
            ledger.reserve_one(sale, first, &a).await.expect("reserve"),
            ReserveOutcome::Duplicate(ReservationState::Durable),
            "a retry after sold out is still a duplicate"
        );
    }

    /// `confirm` is idempotent; `cancel_pending` gives the unit back and forgets the id, and is
    /// a no-op for anything not pending.
    pub async fn stock_confirm_and_cancel_pending(ledger: Arc<dyn StockLedger>) {
        let sale = new_sale_id();
        ledger
            .open_sale(sale, 2, 1, vec![], OpenMode::Replace)
            .await
            .expect("open");
        let a = buyer("a");
        let order = new_order_id();
        assert_eq!(
            ledger.reserve_one(sale, order, &a).await.expect("reserve"),
            ReserveOutcome::Reserved
        );
        ledger.cancel_pending(sale, &[order]).await.expect("cancel");
        assert_eq!(
            ledger.available(sale).await.expect("available"),
            2,
            "the unit came back"
        );
        // Forgotten: the same id reserves afresh, and the buyer's limit was released too.
        assert_eq!(
            ledger.reserve_one(sale, order, &a).await.expect("reserve"),
            ReserveOutcome::Reserved
        );
        ledger
            .confirm(sale, BatchId::of_order(order), &[order])
            .await
            .expect("confirm");
        ledger
            .confirm(sale, BatchId::of_order(order), &[order])
            .await
            .expect("confirm twice");
        assert_eq!(
            ledger.reserve_one(sale, order, &a).await.expect("reserve"),
            ReserveOutcome::Duplicate(ReservationState::Durable)
        );
        // Not pending any more: cancel_pending changes nothing.
        ledger
            .cancel_pending(sale, &[order])
            .await
            .expect("cancel durable");
        assert_eq!(ledger.available(sale).await.expect("available"), 1);
        assert_eq!(
            ledger.reserve_one(sale, order, &a).await.expect("reserve"),
            ReserveOutcome::Duplicate(ReservationState::Durable)
        );
        ledger
            .cancel_pending(sale, &[new_order_id()])
            .await
            .expect("cancel unknown");
        assert_eq!(ledger.available(sale).await.expect("available"), 1);
    }

    /// A reservation left pending (its enqueue answered with an unknown outcome, or its
    /// confirm was lost) whose order then expired gives its unit back too, exactly once, and a
    /// late cancel of it changes nothing.
    pub async fn stock_return_unit_of_unconfirmed_order(ledger: Arc<dyn StockLedger>) {
        let sale = new_sale_id();
        ledger
            .open_sale(sale, 1, 1, vec![], OpenMode::Replace)
            .await
            .expect("open");
        let a = buyer("a");
        let order = new_order_id();
        assert_eq!(
            ledger.reserve_one(sale, order, &a).await.expect("reserve"),
            ReserveOutcome::Reserved
        );
        assert_eq!(
            ledger.return_unit(sale, order).await.expect("return"),
            ReturnOutcome::Returned
        );
        assert_eq!(
            ledger.return_unit(sale, order).await.expect("return"),
            ReturnOutcome::AlreadyReturned
        );
        ledger.cancel_pending(sale, &[order]).await.expect("cancel");
        assert_eq!(ledger.available(sale).await.expect("available"), 1);
        assert_eq!(
            ledger
                .reserve_one(sale, new_order_id(), &a)
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved,
            "the buyer's unit came back, so the limit allows another"
        );
        assert_eq!(ledger.available(sale).await.expect("available"), 0);
    }

    /// `pending_orders` lists exactly the reservations taken and neither confirmed,
    /// cancelled nor returned.
    pub async fn stock_pending_orders_are_the_unsettled_ones(ledger: Arc<dyn StockLedger>) {
        let sale = new_sale_id();
        ledger
            .open_sale(sale, 10, 10, vec![], OpenMode::Replace)
            .await
            .expect("open");
        let a = buyer("a");
        let orders: Vec<OrderId> = (0..4).map(|_| new_order_id()).collect();
        for &order in &orders {
            assert_eq!(
                ledger.reserve_one(sale, order, &a).await.expect("reserve"),
                ReserveOutcome::Reserved
            );
        }
        ledger
            .confirm(sale, BatchId::of_order(orders[1]), &[orders[1]])
            .await
            .expect("confirm");
        ledger
            .cancel_pending(sale, &[orders[2]])
            .await
            .expect("cancel");
        ledger.return_unit(sale, orders[3]).await.expect("return");
        assert_eq!(
            ledger.pending_orders(sale).await.expect("pending"),
            vec![PendingReservation {
                order: orders[0],
                batch: BatchId::of_order(orders[0]),
            }]
        );
        ledger
            .confirm(sale, BatchId::of_order(orders[0]), &[orders[0]])
            .await
            .expect("confirm");
        assert!(
            ledger
                .pending_orders(sale)
                .await
                .expect("pending")
                .is_empty()
        );
    }

    /// `return_unit` gives a durable reservation's unit back exactly once.
    pub async fn stock_return_unit_exactly_once(ledger: Arc<dyn StockLedger>) {
        let sale = new_sale_id();
        ledger
            .open_sale(sale, 1, 1, vec![], OpenMode::Replace)
            .await
            .expect("open");
        let a = buyer("a");
        let order = new_order_id();
        assert_eq!(
            ledger.reserve_one(sale, order, &a).await.expect("reserve"),
            ReserveOutcome::Reserved
        );
        assert_eq!(ledger.available(sale).await.expect("available"), 0);
        ledger
            .confirm(sale, BatchId::of_order(order), &[order])
            .await
            .expect("confirm");
        assert_eq!(
            ledger.return_unit(sale, order).await.expect("return"),
            ReturnOutcome::Returned
        );
        assert_eq!(ledger.available(sale).await.expect("available"), 1);
        assert_eq!(
            ledger.return_unit(sale, order).await.expect("return"),
            ReturnOutcome::AlreadyReturned
        );
        assert_eq!(
            ledger.available(sale).await.expect("available"),
            1,
            "the second return changed nothing"
        );
        assert_eq!(
            ledger.reserve_one(sale, order, &a).await.expect("reserve"),
            ReserveOutcome::Duplicate(ReservationState::Returned),
            "the original request does not buy again"
        );
        assert_eq!(
            ledger
                .return_unit(sale, new_order_id())
                .await
                .expect("return"),
            ReturnOutcome::Unknown
        );
        // The unit is on sale again, and the buyer may buy it with a new request.
        assert_eq!(
            ledger
                .reserve_one(sale, new_order_id(), &a)
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
    }

    /// Many concurrent returns of the same orders: each unit comes back exactly once.
    pub async fn stock_concurrent_returns_exactly_once(ledger: Arc<dyn StockLedger>) {
        let sale = new_sale_id();
        let orders: Vec<OrderId> = (0..100).map(|_| new_order_id()).collect();
        ledger
            .open_sale(sale, 100, 100, vec![], OpenMode::Replace)
            .await
            .expect("open");
        for &order in &orders {
            assert_eq!(
                ledger
                    .reserve_one(sale, order, &buyer("a"))
                    .await
                    .expect("reserve"),
                ReserveOutcome::Reserved
            );
            ledger
                .confirm(sale, BatchId::of_order(order), &[order])
                .await
                .expect("confirm");
        }
        let orders = Arc::new(orders);
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (ledger, orders) = (ledger.clone(), orders.clone());
                tokio::spawn(async move {
                    let mut returned = 0u32;
                    for &order in orders.iter() {
                        if ledger.return_unit(sale, order).await.expect("return")
                            == ReturnOutcome::Returned
                        {
                            returned += 1;
                        }
                    }
                    returned
                })
            })
            .collect();
        let mut returned = 0;
        for task in tasks {
            returned += task.await.expect("task");
        }
        assert_eq!(returned, 100);
        assert_eq!(ledger.available(sale).await.expect("available"), 100);
    }

    /// `open_sale` rebuilds the ledger from holdings: live ones hold stock and count toward the
    /// buyer's limit, returned ones are remembered, and all are duplicates on retry.
    pub async fn stock_open_sale_restores_holdings(ledger: Arc<dyn StockLedger>) {
        let sale = new_sale_id();
        let (a, b, c) = (buyer("a"), buyer("b"), buyer("c"));
        let (live_a, live_b, gone_a) = (new_order_id(), new_order_id(), new_order_id());
        let holdings = vec![
            Holding {
                order_id: live_a,
                buyer: a.clone(),
                live: true,
                batch: None,
            },
            Holding {
                order_id: live_b,
                buyer: b.clone(),
                live: true,
                batch: None,
            },
            Holding {
                order_id: gone_a,
                buyer: a.clone(),
                live: false,
                batch: None,
            },
            // Listed twice (in the store and still in the queue): counts once.
            Holding {
                order_id: live_b,
                buyer: b.clone(),
                live: true,
                batch: None,
            },
        ];
        ledger
            .open_sale(sale, 5, 1, holdings, OpenMode::Replace)
            .await
            .expect("open");
        assert_eq!(ledger.available(sale).await.expect("available"), 3);
        assert_eq!(
            ledger
                .reserve_one(sale, new_order_id(), &a)
                .await
                .expect("reserve"),
            ReserveOutcome::LimitReached
        );
        assert_eq!(
            ledger.reserve_one(sale, live_a, &a).await.expect("reserve"),
            ReserveOutcome::Duplicate(ReservationState::Durable)
        );
        assert_eq!(
            ledger.reserve_one(sale, gone_a, &a).await.expect("reserve"),
            ReserveOutcome::Duplicate(ReservationState::Returned)
        );
        assert_eq!(
            ledger.return_unit(sale, gone_a).await.expect("return"),
            ReturnOutcome::AlreadyReturned
        );
        assert_eq!(
            ledger.return_unit(sale, live_a).await.expect("return"),
            ReturnOutcome::Returned
        );
        assert_eq!(
            ledger
                .reserve_one(sale, new_order_id(), &a)
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
        assert_eq!(
            ledger
                .reserve_one(sale, new_order_id(), &c)
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
        assert_eq!(ledger.available(sale).await.expect("available"), 2);
    }

    /// `IfAbsent` keeps a live ledger as it is (a node joining a running sale must not forget
    /// the other nodes' reservations) and installs one where none exists.
    pub async fn stock_open_sale_if_absent_keeps_live_ledger(ledger: Arc<dyn StockLedger>) {
        let sale = new_sale_id();
        assert_eq!(
            ledger
                .open_sale(sale, 2, 1, vec![], OpenMode::IfAbsent)
                .await
                .expect("open"),
            Opened::Installed
        );
        let order = new_order_id();
        assert_eq!(
            ledger
                .reserve_one(sale, order, &buyer("a"))
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
        assert_eq!(
            ledger
                .open_sale(sale, 5, 3, vec![], OpenMode::IfAbsent)
                .await
                .expect("open again"),
            Opened::AlreadyOpen
        );
        assert_eq!(ledger.available(sale).await.expect("available"), 1);
        assert_eq!(
            ledger
                .reserve_one(sale, order, &buyer("a"))
                .await
                .expect("reserve"),
            ReserveOutcome::Duplicate(ReservationState::Pending)
        );
        assert_eq!(
            ledger
                .reserve_one(sale, new_order_id(), &buyer("a"))
                .await
                .expect("reserve"),
            ReserveOutcome::LimitReached,
            "the limit of the kept ledger (1) still holds"
        );
    }

    /// `open_sale` replaces an earlier ledger of the same sale.
    pub async fn stock_open_sale_replaces_earlier_ledger(ledger: Arc<dyn StockLedger>) {
        let sale = new_sale_id();
        ledger
            .open_sale(sale, 2, 1, vec![], OpenMode::Replace)
            .await
            .expect("open");
        let order = new_order_id();
        assert_eq!(
            ledger
                .reserve_one(sale, order, &buyer("a"))
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
        ledger
            .open_sale(sale, 4, 1, vec![], OpenMode::Replace)
            .await
            .expect("reopen");
        assert_eq!(ledger.available(sale).await.expect("available"), 4);
        assert_eq!(
            ledger
                .reserve_one(sale, order, &buyer("a"))
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
    }

    /// Holdings beyond the stock fail `open_sale` and change nothing, for a new sale and for
    /// one already open.
    pub async fn stock_open_sale_over_stock_fails_changing_nothing(ledger: Arc<dyn StockLedger>) {
        let over = |n: usize| -> Vec<Holding> {
            (0..n)
                .map(|i| Holding {
                    order_id: new_order_id(),
                    buyer: buyer(&format!("b{i}")),
                    live: true,
                    batch: None,
                })
                .collect()
        };
        let fresh = new_sale_id();
        assert!(
            ledger
                .open_sale(fresh, 2, 5, over(3), OpenMode::Replace)
                .await
                .is_err()
        );
        assert!(
            ledger
                .reserve_one(fresh, new_order_id(), &buyer("a"))
                .await
                .is_err(),
            "the sale was not opened"
        );

        let sale = new_sale_id();
        ledger
            .open_sale(sale, 3, 1, vec![], OpenMode::Replace)
            .await
            .expect("open");
        let held = new_order_id();
        assert_eq!(
            ledger
                .reserve_one(sale, held, &buyer("a"))
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
        ledger
            .confirm(sale, BatchId::of_order(held), &[held])
            .await
            .expect("confirm");
        assert!(
            ledger
                .open_sale(sale, 2, 1, over(3), OpenMode::Replace)
                .await
                .is_err()
        );
        assert_eq!(
            ledger.available(sale).await.expect("available"),
            2,
            "the earlier ledger is untouched"
        );
        assert_eq!(
            ledger
                .reserve_one(sale, held, &buyer("a"))
                .await
                .expect("reserve"),
            ReserveOutcome::Duplicate(ReservationState::Durable)
        );
    }

    /// Reserving in a sale the ledger does not know is a determinate error.
    pub async fn stock_unknown_sale_is_determinate_error(ledger: Arc<dyn StockLedger>) {
        let error = ledger
            .reserve_one(new_sale_id(), new_order_id(), &buyer("a"))
            .await
            .expect_err("unknown sale must fail");
        assert!(error.outcome_known, "nothing can have happened: {error}");
    }

    /// The hammer: 64 concurrent tasks, many reserves each, retries mixed in. Exactly the stock
    /// is reserved, never more, and no buyer goes over the limit.
    pub async fn stock_concurrent_reserves_never_oversell(ledger: Arc<dyn StockLedger>) {
        const TASKS: usize = 64;
        const RESERVES_PER_TASK: usize = 60;
        const BUYERS: usize = 300;
        const STOCK: u32 = 500;
        const LIMIT: u32 = 2;
        let sale = new_sale_id();
        ledger
            .open_sale(sale, STOCK, LIMIT, vec![], OpenMode::Replace)
            .await
            .expect("open");
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let ledger = ledger.clone();
                tokio::spawn(async move {
                    let mut won: Vec<(usize, OrderId)> = Vec::new();
                    for n in 0..RESERVES_PER_TASK {
                        let who = (task * 7 + n * 13) % BUYERS;
                        let order = new_order_id();
                        match ledger
                            .reserve_one(sale, order, &buyer(&format!("b{who}")))
                            .await
                            .expect("reserve")
                        {
                            ReserveOutcome::Reserved => {
                                ledger
                                    .confirm(sale, BatchId::of_order(order), &[order])
                                    .await
                                    .expect("confirm");
                                won.push((who, order));
                            }
                            ReserveOutcome::SoldOut | ReserveOutcome::LimitReached => {}
                            other => panic!("a fresh order id came back {other:?}"),
                        }
                        // A retry of the previous request is always a duplicate.
                        if let Some(&(who, order)) = won.last() {
                            let retry = ledger
                                .reserve_one(sale, order, &buyer(&format!("b{who}")))
                                .await
                                .expect("retry");
                            assert_eq!(retry, ReserveOutcome::Duplicate(ReservationState::Durable));
                        }
                    }
                    won
                })
            })
            .collect();
        let mut won = Vec::new();
        for task in tasks {
            won.extend(task.await.expect("task"));
        }
        assert_sold_exactly(&*ledger, sale, &won, STOCK, LIMIT).await;
    }

    fn buys(list: &[(OrderId, &BuyerId)]) -> Vec<Buy> {
        list.iter()
            .map(|(order, buyer)| Buy {
                order: *order,
                buyer: (*buyer).clone(),
            })
            .collect()
    }

    /// One `reserve` call answers every buy of a batch in order, as if they came one after the
    /// other: a repeat within the batch is a duplicate, the limit and the stock hold within it.
    /// The reserved ones are pending in that batch, and `entry` tells state, buyer and batch.
    pub async fn stock_batch_answers_each_buy_in_order(ledger: Arc<dyn StockLedger>) {
        let sale = new_sale_id();
        ledger
            .open_sale(sale, 3, 2, vec![], OpenMode::Replace)
            .await
            .expect("open");
        let (a, b, c) = (buyer("a"), buyer("b"), buyer("c"));
        let o: Vec<OrderId> = (0..5).map(|_| new_order_id()).collect();
        let batch = BatchId(Uuid::now_v7());
        let outcomes = ledger
            .reserve(
                sale,
                batch,
                &buys(&[
                    (o[0], &a),
                    (o[0], &a),
                    (o[1], &a),
                    (o[2], &a),
                    (o[3], &b),
                    (o[4], &c),
                ]),
            )
            .await
            .expect("reserve");
        assert_eq!(
            outcomes,
            vec![
                ReserveOutcome::Reserved,
                ReserveOutcome::Duplicate(ReservationState::Pending),
                ReserveOutcome::Reserved,
                ReserveOutcome::LimitReached,
                ReserveOutcome::Reserved,
                ReserveOutcome::SoldOut,
            ]
        );
        assert_eq!(ledger.available(sale).await.expect("available"), 0);
        let mut pending = ledger.pending_orders(sale).await.expect("pending");
        pending.sort_by_key(|p| p.order);
        let mut expected: Vec<PendingReservation> = [o[0], o[1], o[3]]
            .into_iter()
            .map(|order| PendingReservation { order, batch })
            .collect();
        expected.sort_by_key(|p| p.order);
        assert_eq!(pending, expected);
        assert_eq!(
            ledger.entry(sale, o[3]).await.expect("entry"),
            Some(LedgerEntry {
                state: ReservationState::Pending,
                buyer: b.clone(),
                batch: Some(batch),
            })
        );
        assert_eq!(ledger.entry(sale, o[2]).await.expect("entry"), None);

        // What did not become durable goes back first; then the batch is confirmed.
        ledger.cancel_pending(sale, &[o[3]]).await.expect("cancel");
        ledger
            .confirm(sale, batch, &[o[0], o[1]])
            .await
            .expect("confirm");
        assert_eq!(
            ledger
                .entry(sale, o[0])
                .await
                .expect("entry")
                .map(|e| e.state),
            Some(ReservationState::Durable)
        );
        assert_eq!(ledger.entry(sale, o[3]).await.expect("entry"), None);
        assert_eq!(ledger.available(sale).await.expect("available"), 1);
        assert!(
            ledger
                .pending_orders(sale)
                .await
                .expect("pending")
                .is_empty()
        );
        assert!(
            ledger
                .reserve(sale, batch, &[])
                .await
                .expect("an empty batch")
                .is_empty()
        );
    }

    /// A rebuilt ledger remembers the batch a queued reservation waits in (so a lookup finds
    /// it in the queue), and none for an order already in the store.
    pub async fn stock_entry_after_restore_keeps_the_queued_batch(ledger: Arc<dyn StockLedger>) {
        let sale = new_sale_id();
        let (queued, written) = (new_order_id(), new_order_id());
        let batch = BatchId(Uuid::now_v7());
        let holdings = vec![
            Holding {
                order_id: queued,
                buyer: buyer("a"),
                live: true,
                batch: Some(batch),
            },
            Holding {
                order_id: written,
                buyer: buyer("b"),
                live: false,
                batch: None,
            },
        ];
        ledger
            .open_sale(sale, 5, 1, holdings, OpenMode::Replace)
            .await
            .expect("open");
        assert_eq!(
            ledger.entry(sale, queued).await.expect("entry"),
            Some(LedgerEntry {
                state: ReservationState::Durable,
                buyer: buyer("a"),
                batch: Some(batch),
            })
        );
        assert_eq!(
            ledger.entry(sale, written).await.expect("entry"),
            Some(LedgerEntry {
                state: ReservationState::Returned,
                buyer: buyer("b"),
                batch: None,
            })
        );
    }

    /// `release_lease` hands back only what no reservation holds: every reservation, the
    /// available count and the rules stay as they were, and buying goes on.
    pub async fn stock_release_lease_keeps_reservations(ledger: Arc<dyn StockLedger>) {
        let sale = new_sale_id();
        ledger
            .open_sale(sale, 10, 1, vec![], OpenMode::Replace)
            .await
            .expect("open");
        let (a, b) = (buyer("a"), buyer("b"));
        let (first, second) = (new_order_id(), new_order_id());
        for (order, who) in [(first, &a), (second, &b)] {
            assert_eq!(
                ledger.reserve_one(sale, order, who).await.expect("reserve"),
                ReserveOutcome::Reserved
            );
        }
        ledger
            .confirm(sale, BatchId::of_order(first), &[first])
            .await
            .expect("confirm");
        ledger.release_lease(sale).await.expect("release");
        assert_eq!(ledger.available(sale).await.expect("available"), 8);
        assert_eq!(
            ledger
                .entry(sale, second)
                .await
                .expect("entry")
                .map(|e| e.state),
            Some(ReservationState::Pending)
        );
        assert_eq!(
            ledger
                .reserve_one(sale, new_order_id(), &a)
                .await
                .expect("reserve"),
            ReserveOutcome::LimitReached
        );
        assert_eq!(
            ledger
                .reserve_one(sale, new_order_id(), &buyer("c"))
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
        ledger.release_lease(sale).await.expect("release twice");
        assert_eq!(ledger.available(sale).await.expect("available"), 7);
    }

    /// The hammer with batches: 16 tasks sending batches of 8 buys from overlapping buyers,
    /// with repeats inside batches. Exactly the stock is reserved, never more, no buyer goes
    /// over the limit, and every answer matches what the ledger holds.
    pub async fn stock_concurrent_batches_never_oversell(ledger: Arc<dyn StockLedger>) {
        const TASKS: usize = 16;
        const BATCHES_PER_TASK: usize = 12;
        const BATCH: usize = 8;
        const BUYERS: usize = 200;
        const STOCK: u32 = 300;
        const LIMIT: u32 = 2;
        let sale = new_sale_id();
        ledger
            .open_sale(sale, STOCK, LIMIT, vec![], OpenMode::Replace)
            .await
            .expect("open");
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let ledger = ledger.clone();
                tokio::spawn(async move {
                    let mut won: Vec<(usize, OrderId)> = Vec::new();
                    for n in 0..BATCHES_PER_TASK {
                        let mut list: Vec<(usize, OrderId)> = (0..BATCH)
                            .map(|i| ((task * 31 + n * 17 + i * 7) % BUYERS, new_order_id()))
                            .collect();
                        // The same request twice in one batch.
                        list.push(list[0]);
                        let buys: Vec<Buy> = list
                            .iter()
                            .map(|(who, order)| Buy {
                                order: *order,
                                buyer: buyer(&format!("b{who}")),
                            })
                            .collect();
                        let batch = BatchId(Uuid::now_v7());
                        let outcomes = ledger.reserve(sale, batch, &buys).await.expect("reserve");
                        assert_eq!(outcomes.len(), buys.len());
                        assert_ne!(
                            outcomes[BATCH],
                            ReserveOutcome::Reserved,
                            "a repeat in the batch took a second unit"
                        );
                        let mut reserved = Vec::new();
                        for (&(who, order), outcome) in list.iter().zip(&outcomes).take(BATCH) {
                            match outcome {
                                ReserveOutcome::Reserved => {
                                    reserved.push(order);
                                    won.push((who, order));
                                }
                                ReserveOutcome::SoldOut | ReserveOutcome::LimitReached => {}
                                other => panic!("a fresh order id came back {other:?}"),
                            }
                        }
                        ledger
                            .confirm(sale, batch, &reserved)
                            .await
                            .expect("confirm");
                    }
                    won
                })
            })
            .collect();
        let mut won = Vec::new();
        for task in tasks {
            won.extend(task.await.expect("task"));
        }
        assert_sold_exactly(&*ledger, sale, &won, STOCK, LIMIT).await;
    }

    /// What the hammers check at the end: the confirmed winners (buyer number, order) are
    /// exactly the stock, each durable in the ledger, nothing is left, and no buyer holds more
    /// than the limit.
    async fn assert_sold_exactly(
        ledger: &dyn StockLedger,
        sale: SaleId,
        won: &[(usize, OrderId)],
        stock: u32,
        limit: u32,
    ) {
        let mut per_buyer: HashMap<usize, u32> = HashMap::new();
        for &(who, order) in won {
            *per_buyer.entry(who).or_default() += 1;
            assert_eq!(
                ledger
                    .entry(sale, order)
                    .await
                    .expect("entry")
                    .map(|e| e.state),
                Some(ReservationState::Durable)
            );
        }
        assert_eq!(won.len(), stock as usize, "exactly the stock is reserved");
        assert_eq!(ledger.available(sale).await.expect("available"), 0);
        assert!(
            per_buyer.values().all(|&n| n <= limit),
            "a buyer went over the limit: {per_buyer:?}"
        );
    }
}

/// Expands into one `#[tokio::test]` per `StockLedger` case. `$factory` is called once per
/// test, as `($factory)().await`, and must give `(Arc<dyn StockLedger>, guard)`.
#[macro_export]
macro_rules! stock_ledger_conformance {
    ($factory:expr) => {
        $crate::__conformance_cases!(
            stock,
            $factory,
            [
                stock_reserve_respects_stock_and_limit,
                stock_never_below_zero,
                stock_duplicate_order_id,
                stock_confirm_and_cancel_pending,
                stock_return_unit_exactly_once,
                stock_return_unit_of_unconfirmed_order,
                stock_pending_orders_are_the_unsettled_ones,
                stock_concurrent_returns_exactly_once,
                stock_open_sale_restores_holdings,
                stock_open_sale_replaces_earlier_ledger,
                stock_open_sale_if_absent_keeps_live_ledger,
                stock_open_sale_over_stock_fails_changing_nothing,
                stock_unknown_sale_is_determinate_error,
                stock_concurrent_reserves_never_oversell,
                stock_batch_answers_each_buy_in_order,
                stock_entry_after_restore_keeps_the_queued_batch,
                stock_release_lease_keeps_reservations,
                stock_concurrent_batches_never_oversell,
            ]
        );
    };
}

// ---------------------------------------------------------------------------------------------
// ReservationQueue.

pub mod queue {
    //! Cases for `ReservationQueue`. Each case takes the factory, since cases need different
    //! setups (a small capacity, a short ack deadline).

    use super::*;
    use std::future::Future;

    /// A fresh queue and its guard. Fields drop in order: the queue before whatever it lives
    /// in (its temp dir).
    struct Fresh<G> {
        queue: Arc<dyn ReservationQueue>,
        _guard: G,
    }

    async fn fresh<F, Fut, G>(make: &F, setup: QueueSetup) -> Fresh<G>
    where
        F: Fn(QueueSetup) -> Fut,
        Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
    {
        let (queue, _guard) = make(setup).await;
        Fresh { queue, _guard }
    }

    /// Enqueued reservations are durable, then handed out by `take_batch` and found by `find`.
    pub async fn queue_enqueue_then_take_batch<F, Fut, G>(make: F)
    where
        F: Fn(QueueSetup) -> Fut,
        Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
    {
        let backend = fresh(&make, QueueSetup::default()).await;
        let queue = &backend.queue;
        let sale = new_sale_id();
        let sent: Vec<Reservation> = (0..3)
            .map(|n| reservation(sale, &format!("b{n}"), t0(), 600))
            .collect();
        for r in &sent {
            assert_eq!(
                queue.enqueue_one(r.clone()).await.expect("enqueue"),
                Enqueued::Durable
            );
        }
        assert_eq!(queue.depth(), 3);
        assert_eq!(
            queue.find_one(sent[1].order_id).await.expect("find"),
            Some(sent[1].clone())
        );
        let mut got = queue
            .take_batch(10, Duration::from_millis(500))
            .await
            .expect("take");
        got.sort_by_key(|r| r.order_id);
        let mut expected = sent.clone();
        expected.sort_by_key(|r| r.order_id);
        assert_eq!(got, expected, "delivered exactly as enqueued");
        assert!(
            queue
                .take_batch(10, Duration::from_millis(50))
                .await
                .expect("take")
                .is_empty(),
            "delivered reservations are not handed out again while held"
        );
        assert_eq!(queue.depth(), 3, "delivered but not acked still counts");
        assert_eq!(queue.find_one(new_order_id()).await.expect("find"), None);
    }

    /// `take_batch` gives at most `max`, waits up to `wait` on an empty queue, and wakes early
    /// when something arrives.
    pub async fn queue_take_batch_max_and_wait<F, Fut, G>(make: F)
    where
        F: Fn(QueueSetup) -> Fut,
        Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
    {
        let backend = fresh(&make, QueueSetup::default()).await;
        let queue = &backend.queue;
        let started = tokio::time::Instant::now();
        assert!(
            queue
                .take_batch(5, Duration::from_millis(200))
                .await
                .expect("take")
                .is_empty()
        );
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "returned before the wait was over"
        );

        let sale = new_sale_id();
        for n in 0..5 {
            queue
                .enqueue_one(reservation(sale, &format!("b{n}"), t0(), 600))
                .await
                .expect("enqueue");
        }
        assert_eq!(
            queue
                .take_batch(2, Duration::from_millis(100))
                .await
                .expect("take")
                .len(),
            2
        );
        assert_eq!(
            queue
                .take_batch(10, Duration::from_millis(100))
                .await
                .expect("take")
                .len(),
            3
        );

        let waiter = {
            let queue = queue.clone();
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                let got = queue
                    .take_batch(10, Duration::from_secs(20))
                    .await
                    .expect("take");
                (got, started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let late = reservation(sale, "late", t0(), 600);
        queue.enqueue_one(late.clone()).await.expect("enqueue");
        let (got, waited) = waiter.await.expect("waiter");
        assert_eq!(got, vec![late]);
        assert!(
            waited < Duration::from_secs(10),
            "the waiter was not woken: {waited:?}"
        );
    }

    /// At capacity the queue answers `Full` and stores nothing; an ack makes room again.
    pub async fn queue_full_at_capacity<F, Fut, G>(make: F)
    where
        F: Fn(QueueSetup) -> Fut,
        Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
    {
        let backend = fresh(
            &make,
            QueueSetup {
                capacity: 4,
                ..QueueSetup::default()
            },
        )
        .await;
        let queue = &backend.queue;
        assert_eq!(queue.capacity(), 4);
        let sale = new_sale_id();
        let kept: Vec<Reservation> = (0..4)
            .map(|n| reservation(sale, &format!("b{n}"), t0(), 600))
            .collect();
        for r in &kept {
            assert_eq!(
                queue.enqueue_one(r.clone()).await.expect("enqueue"),
                Enqueued::Durable
            );
        }
        let refused = reservation(sale, "late", t0(), 600);
        assert_eq!(
            queue.enqueue_one(refused.clone()).await.expect("enqueue"),
            Enqueued::Full
        );
        assert_eq!(
            queue.find_one(refused.order_id).await.expect("find"),
            None,
            "Full stores nothing"
        );
        assert_eq!(queue.depth(), 4);
        assert_eq!(
            sorted_ids(&queue.queued().await.expect("all")),
            sorted_ids(&kept)
        );
        // Re-enqueuing something already queued is never a new entry; at capacity either answer
        // (it is durable already, or the queue refuses to look) is within the contract.
        queue.enqueue_one(kept[0].clone()).await.expect("enqueue");
        assert_eq!(queue.depth(), 4);

        let taken = queue
            .take_batch(1, Duration::from_millis(500))
            .await
            .expect("take");
        queue.ack(&[taken[0].order_id]).await.expect("ack");
        assert_eq!(
            queue.enqueue_one(refused.clone()).await.expect("enqueue"),
            Enqueued::Durable
        );
        assert_eq!(queue.depth(), 4);
    }

    /// Enqueuing a batch already queued stores it once: sequential retries, concurrent retries,
    /// and a retry while the first copy is out with a consumer.
    pub async fn queue_same_batch_stored_once<F, Fut, G>(make: F)
    where
        F: Fn(QueueSetup) -> Fut,
        Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
    {
        let backend = fresh(&make, QueueSetup::default()).await;
        let queue = &backend.queue;
        let sale = new_sale_id();
        let r = reservation(sale, "a", t0(), 600);
        assert_eq!(
            queue.enqueue_one(r.clone()).await.expect("enqueue"),
            Enqueued::Durable
        );
        assert_eq!(
            queue.enqueue_one(r.clone()).await.expect("enqueue"),
            Enqueued::Durable
        );
        assert_eq!(queue.depth(), 1);

        let twin = reservation(sale, "b", t0(), 600);
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (queue, twin) = (queue.clone(), twin.clone());
                tokio::spawn(async move { queue.enqueue_one(twin).await.expect("enqueue") })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("task"), Enqueued::Durable);
        }
        assert_eq!(queue.depth(), 2);
        assert_eq!(queue.queued().await.expect("all").len(), 2);

        let delivered = queue
            .take_batch(10, Duration::from_millis(500))
            .await
            .expect("take");
        assert_eq!(delivered.len(), 2);
        assert_eq!(
            queue.enqueue_one(r.clone()).await.expect("enqueue"),
            Enqueued::Durable
        );
        assert!(
            queue
                .take_batch(10, Duration::from_millis(50))
                .await
                .expect("take")
                .is_empty(),
            "a retry must not hand out a second copy"
        );
        queue.ack(&[r.order_id, twin.order_id]).await.expect("ack");
        assert_eq!(queue.depth(), 0);
        assert!(queue.queued().await.expect("all").is_empty());
    }

    /// Concurrent consumers never hold the same reservation at once, and together they drain
    /// everything.
    pub async fn queue_exclusive_delivery_to_concurrent_consumers<F, Fut, G>(make: F)
    where
        F: Fn(QueueSetup) -> Fut,
        Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
    {
        const RESERVATIONS: usize = 400;
        const CONSUMERS: usize = 8;
        let backend = fresh(&make, QueueSetup::default()).await;
        let queue = &backend.queue;
        let sale = new_sale_id();
        let producer = {
            let queue = queue.clone();
            tokio::spawn(async move {
                for n in 0..RESERVATIONS {
                    let r = reservation(sale, &format!("b{n}"), t0(), 600);
                    assert_eq!(
                        queue.enqueue_one(r).await.expect("enqueue"),
                        Enqueued::Durable
                    );
                }
            })
        };
        let seen: Arc<Mutex<HashMap<OrderId, usize>>> = Arc::default();
        let consumers: Vec<_> = (0..CONSUMERS)
            .map(|consumer| {
                let (queue, seen) = (queue.clone(), seen.clone());
                tokio::spawn(async move {
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                    loop {
                        let done = seen.lock().expect("seen").len() >= RESERVATIONS;
                        if done || tokio::time::Instant::now() > deadline {
                            break;
                        }
                        let batch = queue
                            .take_batch(16, Duration::from_millis(100))
                            .await
                            .expect("take");
                        let ids: Vec<OrderId> = batch.iter().map(|r| r.order_id).collect();
                        {
                            let mut seen = seen.lock().expect("seen");
                            for id in &ids {
                                if let Some(other) = seen.insert(*id, consumer) {
                                    panic!(
                                        "{id} was delivered to consumers {other} and {consumer}"
                                    );
                                }
                            }
                        }
                        // Hold the batch a moment, as a writer would, so overlaps could show.
                        tokio::task::yield_now().await;
                        queue.ack(&ids).await.expect("ack");
                    }
                })
            })
            .collect();
        producer.await.expect("producer");
        for consumer in consumers {
            consumer.await.expect("consumer");
        }
        assert_eq!(
            seen.lock().expect("seen").len(),
            RESERVATIONS,
            "everything was delivered"
        );
        assert_eq!(queue.depth(), 0);
        assert!(queue.queued().await.expect("all").is_empty());
    }

    /// `ack` removes for good (unknown ids are a no-op); `nack` hands back for immediate
    /// redelivery.
    pub async fn queue_ack_removes_and_nack_redelivers<F, Fut, G>(make: F)
    where
        F: Fn(QueueSetup) -> Fut,
        Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
    {
        let backend = fresh(&make, QueueSetup::default()).await;
        let queue = &backend.queue;
        let sale = new_sale_id();
        let (done, retry) = (
            reservation(sale, "a", t0(), 600),
            reservation(sale, "b", t0(), 600),
        );
        queue.enqueue_one(done.clone()).await.expect("enqueue");
        queue.enqueue_one(retry.clone()).await.expect("enqueue");
        assert_eq!(
            queue
                .take_batch(10, Duration::from_millis(500))
                .await
                .expect("take")
                .len(),
            2
        );

        queue
            .ack(&[done.order_id, new_order_id()])
            .await
            .expect("ack");
        assert_eq!(queue.find_one(done.order_id).await.expect("find"), None);
        assert_eq!(queue.depth(), 1);
        assert_eq!(queue.queued().await.expect("all"), vec![retry.clone()]);

        queue.nack(&[retry.order_id]).await.expect("nack");
        let again = queue
            .take_batch(10, Duration::from_millis(500))
            .await
            .expect("take");
        assert_eq!(
            again,
            vec![retry.clone()],
            "a nacked reservation comes back at once"
        );
        queue.ack(&[retry.order_id]).await.expect("ack");
        queue
            .ack(&[retry.order_id])
            .await
            .expect("second ack is a no-op");
        assert_eq!(queue.depth(), 0);
        assert!(
            queue
                .take_batch(10, Duration::from_millis(50))
                .await
                .expect("take")
                .is_empty()
        );
    }

    /// A consumer that dies holding a reservation: after the ack deadline it is delivered
    /// again, and not before.
    pub async fn queue_redelivers_after_ack_deadline<F, Fut, G>(make: F)
    where
        F: Fn(QueueSetup) -> Fut,
        Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
    {
        let ack_deadline = Duration::from_millis(400);
        let backend = fresh(
            &make,
            QueueSetup {
                ack_deadline,
                ..QueueSetup::default()
            },
        )
        .await;
        let queue = &backend.queue;
        let r = reservation(new_sale_id(), "a", t0(), 600);
        queue.enqueue_one(r.clone()).await.expect("enqueue");
        let delivered_at = tokio::time::Instant::now();
        assert_eq!(
            queue
                .take_batch(1, Duration::from_millis(500))
                .await
                .expect("take"),
            vec![r.clone()]
        );
        // The consumer "dies" here: no ack, no nack.
        let again = queue
            .take_batch(1, Duration::from_secs(20))
            .await
            .expect("take");
        assert_eq!(again, vec![r.clone()], "redelivered after the deadline");
        assert!(
            delivered_at.elapsed() >= ack_deadline - Duration::from_millis(50),
            "redelivered before the ack deadline: {:?}",
            delivered_at.elapsed()
        );
        assert_eq!(queue.queued().await.expect("all"), vec![r.clone()]);
        queue.ack(&[r.order_id]).await.expect("ack");
        assert_eq!(queue.depth(), 0);
    }

    /// `all_queued` and `find` see every unacknowledged reservation, delivered or not.
    pub async fn queue_all_queued_and_find_include_delivered<F, Fut, G>(make: F)
    where
        F: Fn(QueueSetup) -> Fut,
        Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
    {
        let backend = fresh(&make, QueueSetup::default()).await;
        let queue = &backend.queue;
        let sale = new_sale_id();
        let sent: Vec<Reservation> = (0..3)
            .map(|n| reservation(sale, &format!("b{n}"), t0(), 600))
            .collect();
        for r in &sent {
            queue.enqueue_one(r.clone()).await.expect("enqueue");
        }
        let taken = queue
            .take_batch(1, Duration::from_millis(500))
            .await
            .expect("take");
        assert_eq!(taken.len(), 1);
        assert_eq!(
            queue.find_one(taken[0].order_id).await.expect("find"),
            Some(taken[0].clone())
        );
        assert_eq!(
            sorted_ids(&queue.queued().await.expect("all")),
            sorted_ids(&sent)
        );
        assert_eq!(queue.depth(), 3);
    }

    /// `void` leaves a stored reservation alone and says so; for an id never stored it writes
    /// a tombstone that no enqueue can pass and that is never delivered, found or listed. A
    /// second void (another node's reconciler) sees the tombstone.
    pub async fn queue_void_blocks_a_late_enqueue<F, Fut, G>(make: F)
    where
        F: Fn(QueueSetup) -> Fut,
        Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
    {
        let backend = fresh(&make, QueueSetup::default()).await;
        let queue = &backend.queue;
        let sale = new_sale_id();
        let stored = reservation(sale, "stored", t0(), 600);
        let late = reservation(sale, "late", t0(), 600);
        assert_eq!(
            queue.enqueue_one(stored.clone()).await.expect("enqueue"),
            Enqueued::Durable
        );
        assert_eq!(
            queue
                .void(BatchId::of_order(stored.order_id))
                .await
                .expect("void"),
            VoidOutcome::AlreadyStored
        );
        assert_eq!(
            queue.find_one(stored.order_id).await.expect("find"),
            Some(stored.clone()),
            "a void never touches a stored reservation"
        );

        assert_eq!(
            queue
                .void(BatchId::of_order(late.order_id))
                .await
                .expect("void"),
            VoidOutcome::Voided
        );
        assert_eq!(queue.find_one(late.order_id).await.expect("find"), None);
        let error = queue
            .enqueue_one(late.clone())
            .await
            .expect_err("a voided id cannot become durable");
        assert!(!error.outcome_known, "{error}");
        assert_eq!(
            queue
                .void(BatchId::of_order(late.order_id))
                .await
                .expect("void"),
            VoidOutcome::AlreadyStored,
            "a second reconciler sees the first one's tombstone"
        );
        assert_eq!(
            sorted_ids(&queue.queued().await.expect("all")),
            vec![stored.order_id]
        );
        let mut delivered = Vec::new();
        for _ in 0..3 {
            delivered.extend(
                queue
                    .take_batch(10, Duration::from_millis(200))
                    .await
                    .expect("take"),
            );
        }
        assert_eq!(delivered, vec![stored], "a tombstone is never delivered");
    }

    /// A batch is durable as one: every reservation of it is found in it (and in no other
    /// batch), listed with its batch id, and delivered; enqueuing the batch again stores it once.
    pub async fn queue_batch_is_durable_as_one<F, Fut, G>(make: F)
    where
        F: Fn(QueueSetup) -> Fut,
        Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
    {
        let backend = fresh(&make, QueueSetup::default()).await;
        let queue = &backend.queue;
        let sale = new_sale_id();
        let batch = BatchId(Uuid::now_v7());
        let sent: Vec<Reservation> = (0..3)
            .map(|n| reservation(sale, &format!("b{n}"), t0(), 600))
            .collect();
        assert_eq!(
            queue.enqueue(batch, sent.clone()).await.expect("enqueue"),
            Enqueued::Durable
        );
        assert_eq!(queue.depth(), 3);
        for r in &sent {
            assert_eq!(
                queue.find(batch, r.order_id).await.expect("find"),
                Some(r.clone())
            );
        }
        assert_eq!(
            queue
                .find(BatchId(Uuid::now_v7()), sent[0].order_id)
                .await
                .expect("find"),
            None,
            "found only in its own batch"
        );
        assert_eq!(queue.find(batch, new_order_id()).await.expect("find"), None);
        let mut listed = queue.all_queued().await.expect("all");
        listed.sort_by_key(|q| q.reservation.order_id);
        let mut expected: Vec<Queued> = sent
            .iter()
            .map(|r| Queued {
                batch,
                reservation: r.clone(),
            })
            .collect();
        expected.sort_by_key(|q| q.reservation.order_id);
        assert_eq!(listed, expected);
        assert_eq!(
            queue
                .enqueue(batch, sent.clone())
                .await
                .expect("enqueue again"),
            Enqueued::Durable
        );
        assert_eq!(queue.depth(), 3, "a repeated batch is stored once");
        assert_eq!(
            queue
                .enqueue(BatchId(Uuid::now_v7()), Vec::new())
                .await
                .expect("an empty batch"),
            Enqueued::Durable
        );
        let mut got = queue
            .take_batch(10, Duration::from_millis(500))
            .await
            .expect("take");
        got.sort_by_key(|r| r.order_id);
        let mut sorted = sent.clone();
        sorted.sort_by_key(|r| r.order_id);
        assert_eq!(got, sorted);
        queue.ack(&sorted_ids(&sent)).await.expect("ack");
        assert_eq!(queue.depth(), 0);
    }

    /// At capacity a batch is refused whole: `Full`, and none of it is stored.
    pub async fn queue_full_refuses_a_whole_batch<F, Fut, G>(make: F)
    where
        F: Fn(QueueSetup) -> Fut,
        Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
    {
        let backend = fresh(
            &make,
            QueueSetup {
                capacity: 4,
                ..QueueSetup::default()
            },
        )
        .await;
        let queue = &backend.queue;
        let sale = new_sale_id();
        let kept: Vec<Reservation> = (0..4)
            .map(|n| reservation(sale, &format!("a{n}"), t0(), 600))
            .collect();
        for r in &kept {
            assert_eq!(
                queue.enqueue_one(r.clone()).await.expect("enqueue"),
                Enqueued::Durable
            );
        }
        let refused = BatchId(Uuid::now_v7());
        let batch: Vec<Reservation> = (0..2)
            .map(|n| reservation(sale, &format!("b{n}"), t0(), 600))
            .collect();
        assert_eq!(
            queue
                .enqueue(refused, batch.clone())
                .await
                .expect("enqueue"),
            Enqueued::Full
        );
        for r in &batch {
            assert_eq!(queue.find(refused, r.order_id).await.expect("find"), None);
        }
        assert_eq!(queue.depth(), 4);
        assert_eq!(
            sorted_ids(&queue.queued().await.expect("all")),
            sorted_ids(&kept)
        );
    }

    /// A batch bigger than `take_batch`'s `max` is delivered completely (in parts of at most
    /// `max`, or whole where the backend keeps a batch as one unit), and once every part is
    /// acked nothing of it comes back.
    pub async fn queue_big_batch_is_delivered_completely<F, Fut, G>(make: F)
    where
        F: Fn(QueueSetup) -> Fut,
        Fut: Future<Output = (Arc<dyn ReservationQueue>, G)>,
    {
        let backend = fresh(&make, QueueSetup::default()).await;
        let queue = &backend.queue;
        let sale = new_sale_id();
        let big: Vec<Reservation> = (0..5)
            .map(|n| reservation(sale, &format!("b{n}"), t0(), 600))
            .collect();
        let batch = BatchId(Uuid::now_v7());
        queue.enqueue(batch, big.clone()).await.expect("enqueue");
        let mut got = Vec::new();
        for _ in 0..big.len() {
            let part = queue
                .take_batch(2, Duration::from_millis(500))
                .await
                .expect("take");
            assert!(
                part.len() <= 2 || part.len() == big.len(),
                "a part is at most max, or the whole batch: {}",
                part.len()
            );
            queue.ack(&sorted_ids(&part)).await.expect("ack part");
            got.extend(part);
            if got.len() >= big.len() {
                break;
            }
        }
        assert_eq!(sorted_ids(&got), sorted_ids(&big), "delivered completely");
        assert_eq!(queue.depth(), 0);
        assert!(queue.all_queued().await.expect("all").is_empty());
        for r in &big {
            assert_eq!(queue.find(batch, r.order_id).await.expect("find"), None);
        }
        assert!(
            queue
                .take_batch(10, Duration::from_millis(100))
                .await
                .expect("take")
                .is_empty(),
            "nothing acked comes back"
        );
    }
}

/// Expands into one `#[tokio::test]` per `ReservationQueue` case. `$factory` is a closure
/// `Fn(QueueSetup) -> impl Future<Output = (Arc<dyn ReservationQueue>, guard)>`, called for
/// each fresh queue a case needs.
#[macro_export]
macro_rules! reservation_queue_conformance {
    ($factory:expr) => {
        $crate::__conformance_cases!(@factory queue, $factory, [
            queue_enqueue_then_take_batch,
            queue_take_batch_max_and_wait,
            queue_full_at_capacity,
            queue_same_batch_stored_once,
            queue_exclusive_delivery_to_concurrent_consumers,
            queue_ack_removes_and_nack_redelivers,
            queue_redelivers_after_ack_deadline,
            queue_all_queued_and_find_include_delivered,
            queue_void_blocks_a_late_enqueue,
            queue_batch_is_durable_as_one,
            queue_full_refuses_a_whole_batch,
            queue_big_batch_is_delivered_completely,
        ]);
    };
}

// ---------------------------------------------------------------------------------------------
// OrderStore.

pub mod store {
    //! Cases for `OrderStore`.

    use super::*;

    async fn new_sale(store: &Arc<dyn OrderStore>, name: &str) -> Sale {
        let sale = Sale::new(new_sale_id(), spec(name, 100)).expect("valid sale");
        store.create_sale(&sale).await.expect("create sale");
        sale
    }

    async fn insert(store: &Arc<dyn OrderStore>, reservations: &[Reservation]) {
        let new = store.insert_orders(reservations).await.expect("insert");
        assert_eq!(new, reservations.len() as u64);
    }

    /// Sales round-trip; the list is oldest first; a second create of one id fails.
    pub async fn store_create_get_list_sales(store: Arc<dyn OrderStore>) {
        assert!(store.list_sales().await.expect("list").is_empty());
        let first = new_sale(&store, "First").await;
        let second = new_sale(&store, "Second — with ünïcode").await;
        let third = new_sale(&store, "Third").await;
        assert_eq!(
            store.get_sale(second.id).await.expect("get"),
            Some(second.clone())
        );
        assert_eq!(store.get_sale(new_sale_id()).await.expect("get"), None);
        assert_eq!(
            store.list_sales().await.expect("list"),
            vec![first.clone(), second, third]
        );
        let error = store
            .create_sale(&first)
            .await
            .expect_err("duplicate sale id");
        assert!(error.outcome_known, "{error}");
    }

    /// `update_sale` replaces only when the stored version is one below the new one.
    pub async fn store_update_sale_compare_and_set(store: Arc<dyn OrderStore>) {
        let sale = new_sale(&store, "Phone").await;
        let mut v2 = sale.clone();
        v2.spec.stock = 42;
        v2.spec.name = "Phone, more".into();
        v2.spec.starts_at += time::Duration::minutes(5);
        v2.version = 2;
        assert!(store.update_sale(&v2).await.expect("update"));
        assert_eq!(
            store.get_sale(sale.id).await.expect("get"),
            Some(v2.clone())
        );

        let mut stale = v2.clone();
        stale.spec.stock = 7;
        assert!(
            !store.update_sale(&stale).await.expect("update"),
            "stale version 2 again"
        );
        let mut skipping = v2.clone();
        skipping.version = 4;
        assert!(
            !store.update_sale(&skipping).await.expect("update"),
            "version 4 skips 3"
        );
        assert_eq!(store.get_sale(sale.id).await.expect("get"), Some(v2));

        let unknown = Sale {
            id: new_sale_id(),
            version: 2,
            ..sale
        };
        assert!(!store.update_sale(&unknown).await.expect("update"));
    }

    /// `insert_orders` is idempotent: duplicates inside a batch, re-inserts, and mixed batches
    /// count only what is new; big batches work too.
    pub async fn store_insert_orders_idempotent(store: Arc<dyn OrderStore>) {
        let sale = new_sale(&store, "Phone").await;
        let a = reservation(sale.id, "a", t0(), 600);
        let b = reservation(sale.id, "b", t0() + time::Duration::milliseconds(1), 600);
        assert_eq!(
            store
                .insert_orders(&[a.clone(), b.clone(), a.clone()])
                .await
                .expect("insert"),
            2
        );
        assert_eq!(
            store
                .insert_orders(&[a.clone(), b.clone()])
                .await
                .expect("insert"),
            0
        );
        let c = reservation(sale.id, "c", t0(), 600);
        assert_eq!(
            store
                .insert_orders(&[b.clone(), c.clone()])
                .await
                .expect("insert"),
            1
        );
        assert_eq!(store.insert_orders(&[]).await.expect("insert"), 0);
        assert_eq!(
            store.get_order(a.order_id).await.expect("get"),
            Some(Order::from_reservation(&a))
        );
        assert_eq!(store.get_order(new_order_id()).await.expect("get"), None);

        let big: Vec<Reservation> = (0..2_500)
            .map(|n| reservation(sale.id, &format!("x{n}"), t0(), 600))
            .collect();
        assert_eq!(store.insert_orders(&big).await.expect("insert"), 2_500);
        assert_eq!(store.insert_orders(&big).await.expect("insert"), 0);
        assert_eq!(
            store
                .order_counts(sale.id)
                .await
                .expect("counts")
                .pending_payment,
            2_503
        );
    }

    /// Paying: own order is paid; the same payment id answers the same; another payment id is
    /// refused; someone else's or an unknown order is `NotFound`.
    pub async fn store_pay_decisions(store: Arc<dyn OrderStore>) {
        let sale = new_sale(&store, "Phone").await;
        let r = reservation(sale.id, "alice", t0(), 600);
        insert(&store, std::slice::from_ref(&r)).await;
        let now = t0() + time::Duration::seconds(30);
        let alice = buyer("alice");

        assert_eq!(
            store
                .pay(r.order_id, &buyer("mallory"), &payment("p1"), now)
                .await
                .expect("pay"),
            PayOutcome::NotFound
        );
        assert_eq!(
            store
                .pay(new_order_id(), &alice, &payment("p1"), now)
                .await
                .expect("pay"),
            PayOutcome::NotFound
        );

        let paid = match store
            .pay(r.order_id, &alice, &payment("p1"), now)
            .await
            .expect("pay")
        {
            PayOutcome::Paid(order) => order,
            other => panic!("expected Paid, got {other:?}"),
        };
        assert_eq!(paid.status, OrderStatus::Paid);
        assert_eq!(paid.payment_id, Some(payment("p1")));
        assert_eq!((paid.id, paid.buyer.clone()), (r.order_id, alice.clone()));
        assert_eq!(
            store.get_order(r.order_id).await.expect("get"),
            Some(paid.clone())
        );

        let later = now + time::Duration::hours(2);
        assert_eq!(
            store
                .pay(r.order_id, &alice, &payment("p1"), later)
                .await
                .expect("pay"),
            PayOutcome::Paid(paid.clone()),
            "same payment id, same answer, even after the deadline"
        );
        assert_eq!(
            store
                .pay(r.order_id, &alice, &payment("p2"), now)
                .await
                .expect("pay"),
            PayOutcome::PaidByOtherPayment
        );
        assert_eq!(
            store
                .pay(r.order_id, &buyer("mallory"), &payment("p1"), now)
                .await
                .expect("pay"),
            PayOutcome::NotFound
        );
    }

    /// After the deadline a payment is `Expired`, whether or not the reaper has run.
    pub async fn store_pay_after_deadline_is_expired(store: Arc<dyn OrderStore>) {
        let sale = new_sale(&store, "Phone").await;
        let r = reservation(sale.id, "alice", t0(), 600);
        insert(&store, std::slice::from_ref(&r)).await;
        let alice = buyer("alice");
        assert_eq!(
            store
                .pay(r.order_id, &alice, &payment("p1"), r.expires_at)
                .await
                .expect("pay"),
            PayOutcome::Expired,
            "the deadline itself is too late, before the reaper ran"
        );
        let expired = store.expire_due(r.expires_at, 10).await.expect("expire");
        assert_eq!(expired.len(), 1);
        assert_eq!(
            store
                .pay(r.order_id, &alice, &payment("p1"), t0())
                .await
                .expect("pay"),
            PayOutcome::Expired,
            "after the reaper ran, even with an early clock"
        );
        assert_eq!(
            store
                .get_order(r.order_id)
                .await
                .expect("get")
                .map(|o| o.status),
            Some(OrderStatus::Expired)
        );
    }

    /// `expire_due` moves only pending orders whose window closed, at most `max`, and returns
    /// exactly the ones it moved.
    pub async fn store_expire_due_returns_only_what_it_moved(store: Arc<dyn OrderStore>) {
        let sale = new_sale(&store, "Phone").await;
        let due: Vec<Reservation> = (0..5)
            .map(|n| reservation(sale.id, &format!("d{n}"), t0(), 60))
            .collect();
        let paid = reservation(sale.id, "payer", t0(), 60);
        let not_yet = reservation(sale.id, "later", t0(), 600);
        insert(&store, &due).await;
        insert(&store, &[paid.clone(), not_yet.clone()]).await;
        let early = t0() + time::Duration::seconds(10);
        assert!(matches!(
            store
                .pay(paid.order_id, &paid.buyer, &payment("p"), early)
                .await
                .expect("pay"),
            PayOutcome::Paid(_)
        ));
        assert!(
            store
                .expire_due(early, 100)
                .await
                .expect("expire")
                .is_empty(),
            "nothing due yet"
        );

        let now = t0() + time::Duration::seconds(60);
        let first = store.expire_due(now, 2).await.expect("expire");
        assert_eq!(first.len(), 2, "at most max");
        let rest = store.expire_due(now, 100).await.expect("expire");
        assert_eq!(rest.len(), 3);
        assert!(
            store.expire_due(now, 100).await.expect("expire").is_empty(),
            "moved only once"
        );

        let mut moved: Vec<Order> = first.into_iter().chain(rest).collect();
        moved.sort_by_key(|o| o.id);
        let mut expected: Vec<Order> = due
            .iter()
            .map(|r| Order {
                status: OrderStatus::Expired,
                ..Order::from_reservation(r)
            })
            .collect();
        expected.sort_by_key(|o| o.id);
        assert_eq!(moved, expected);
        assert_eq!(
            store
                .get_order(not_yet.order_id)
                .await
                .expect("get")
                .map(|o| o.status),
            Some(OrderStatus::PendingPayment)
        );
        assert_eq!(
            store
                .get_order(paid.order_id)
                .await
                .expect("get")
                .map(|o| o.status),
            Some(OrderStatus::Paid)
        );
    }

    /// Reapers racing each other never both get the same order, and together get them all.
    pub async fn store_concurrent_expire_due_never_twice(store: Arc<dyn OrderStore>) {
        let sale = new_sale(&store, "Phone").await;
        let due: Vec<Reservation> = (0..300)
            .map(|n| reservation(sale.id, &format!("d{n}"), t0(), 60))
            .collect();
        insert(&store, &due).await;
        let now = t0() + time::Duration::minutes(5);
        let reapers: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        let batch = store.expire_due(now, 16).await.expect("expire");
                        if batch.is_empty() {
                            return mine;
                        }
                        mine.extend(batch.into_iter().map(|o| o.id));
                    }
                })
            })
            .collect();
        let mut all: Vec<OrderId> = Vec::new();
        for reaper in reapers {
            all.extend(reaper.await.expect("reaper"));
        }
        let unique: HashSet<OrderId> = all.iter().copied().collect();
        assert_eq!(
            unique.len(),
            all.len(),
            "an order was expired by two reapers"
        );
        assert_eq!(
            unique,
            due.iter().map(|r| r.order_id).collect::<HashSet<_>>()
        );
    }

    /// Payment against expiry, many attempts at once: for every order exactly one side wins,
    /// and the stored status agrees with the winner.
    pub async fn store_pay_races_expiry_exactly_one_wins(store: Arc<dyn OrderStore>) {
        const ORDERS: usize = 60;
        const PAYERS_PER_ORDER: usize = 3;
        let sale = new_sale(&store, "Phone").await;
        let orders: Vec<Reservation> = (0..ORDERS)
            .map(|n| reservation(sale.id, &format!("b{n}"), t0(), 60))
            .collect();
        insert(&store, &orders).await;
        // Payers still inside the window; reapers already past it: both are entitled to try.
        let pay_at = t0() + time::Duration::seconds(59);
        let reap_at = t0() + time::Duration::seconds(60);

        let mut payers = Vec::new();
        for r in &orders {
            for p in 0..PAYERS_PER_ORDER {
                let (store, r) = (store.clone(), r.clone());
                payers.push(tokio::spawn(async move {
                    let outcome = store
                        .pay(
                            r.order_id,
                            &r.buyer,
                            &payment(&format!("pay-{}-{p}", r.order_id)),
                            pay_at,
                        )
                        .await
                        .expect("pay");
                    (r.order_id, outcome)
                }));
            }
        }
        let reapers: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    for _ in 0..50 {
                        mine.extend(
                            store
                                .expire_due(reap_at, 8)
                                .await
                                .expect("expire")
                                .into_iter()
                                .map(|o| o.id),
                        );
                        tokio::task::yield_now().await;
                    }
                    mine
                })
            })
            .collect();

        let mut paid: HashMap<OrderId, usize> = HashMap::new();
        for payer in payers {
            let (id, outcome) = payer.await.expect("payer");
            match outcome {
                PayOutcome::Paid(order) => {
                    assert_eq!(order.status, OrderStatus::Paid);
                    *paid.entry(id).or_default() += 1;
                }
                PayOutcome::PaidByOtherPayment | PayOutcome::Expired => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let mut expired: HashMap<OrderId, usize> = HashMap::new();
        for reaper in reapers {
            for id in reaper.await.expect("reaper") {
                *expired.entry(id).or_default() += 1;
            }
        }
        // Anything neither side moved yet is expired now, so every order has an outcome.
        for order in store.expire_due(reap_at, ORDERS).await.expect("expire") {
            *expired.entry(order.id).or_default() += 1;
        }
        for r in &orders {
            let wins = paid.get(&r.order_id).copied().unwrap_or(0)
                + expired.get(&r.order_id).copied().unwrap_or(0);
            assert_eq!(wins, 1, "order {} had {wins} winners", r.order_id);
            let status = store
                .get_order(r.order_id)
                .await
                .expect("get")
                .map(|o| o.status);
            let expected = if paid.contains_key(&r.order_id) {
                OrderStatus::Paid
            } else {
                OrderStatus::Expired
            };
            assert_eq!(status, Some(expected));
        }
    }

    /// Counts by status, per sale.
    pub async fn store_order_counts(store: Arc<dyn OrderStore>) {
        let sale = new_sale(&store, "Phone").await;
        let other = new_sale(&store, "Other").await;
        let orders: Vec<Reservation> = (0..6)
            .map(|n| reservation(sale.id, &format!("b{n}"), t0(), 60))
            .collect();
        insert(&store, &orders).await;
        insert(&store, &[reservation(other.id, "z", t0(), 60)]).await;
        let early = t0() + time::Duration::seconds(1);
        for r in &orders[..2] {
            assert!(matches!(
                store
                    .pay(r.order_id, &r.buyer, &payment("p"), early)
                    .await
                    .expect("pay"),
                PayOutcome::Paid(_)
            ));
        }
        assert_eq!(
            store.order_counts(sale.id).await.expect("counts"),
            OrderCounts {
                pending_payment: 4,
                paid: 2,
                expired: 0,
                cancelled: 0
            }
        );
        // Expire everything due, across both sales.
        assert_eq!(
            store
                .expire_due(t0() + time::Duration::seconds(60), 100)
                .await
                .expect("expire")
                .len(),
            5
        );
        assert_eq!(
            store.order_counts(sale.id).await.expect("counts"),
            OrderCounts {
                pending_payment: 0,
                paid: 2,
                expired: 4,
                cancelled: 0
            }
        );
        assert_eq!(
            store.order_counts(new_sale_id()).await.expect("counts"),
            OrderCounts::default()
        );
    }

    /// Holdings list every order of the sale with whether it still holds its unit.
    pub async fn store_holdings(store: Arc<dyn OrderStore>) {
        let sale = new_sale(&store, "Phone").await;
        let other = new_sale(&store, "Other").await;
        let (pending, paid, expired) = (
            reservation(sale.id, "a", t0(), 600),
            reservation(sale.id, "b", t0(), 600),
            reservation(sale.id, "c", t0(), 60),
        );
        insert(
            &store,
            &[
                pending.clone(),
                paid.clone(),
                expired.clone(),
                reservation(other.id, "z", t0(), 600),
            ],
        )
        .await;
        let early = t0() + time::Duration::seconds(1);
        assert!(matches!(
            store
                .pay(paid.order_id, &paid.buyer, &payment("p"), early)
                .await
                .expect("pay"),
            PayOutcome::Paid(_)
        ));
        assert_eq!(
            store
                .expire_due(t0() + time::Duration::seconds(60), 100)
                .await
                .expect("expire")
                .len(),
            1
        );

        let mut holdings = store.holdings(sale.id).await.expect("holdings");
        holdings.sort_by_key(|h| h.order_id);
        let mut expected = vec![
            Holding {
                order_id: pending.order_id,
                buyer: pending.buyer,
                live: true,
                batch: None,
            },
            Holding {
                order_id: paid.order_id,
                buyer: paid.buyer,
                live: true,
                batch: None,
            },
            Holding {
                order_id: expired.order_id,
                buyer: expired.buyer,
                live: false,
                batch: None,
            },
        ];
        expected.sort_by_key(|h| h.order_id);
        assert_eq!(holdings, expected);
        assert!(
            store
                .holdings(new_sale_id())
                .await
                .expect("holdings")
                .is_empty()
        );
    }

    /// Recent orders: one sale's, newest first, at most `max`.
    pub async fn store_recent_orders(store: Arc<dyn OrderStore>) {
        let sale = new_sale(&store, "Phone").await;
        let other = new_sale(&store, "Other").await;
        let orders: Vec<Reservation> = (0..5)
            .map(|n| {
                reservation(
                    sale.id,
                    &format!("b{n}"),
                    t0() + time::Duration::seconds(n),
                    600,
                )
            })
            .collect();
        // Written out of order, as concurrent writers would.
        insert(
            &store,
            &[orders[3].clone(), orders[0].clone(), orders[4].clone()],
        )
        .await;
        insert(
            &store,
            &[
                orders[1].clone(),
                orders[2].clone(),
                reservation(other.id, "z", t0() + time::Duration::hours(1), 600),
            ],
        )
        .await;
        let recent = store.recent_orders(sale.id, 3).await.expect("recent");
        let expected: Vec<Order> = [4, 3, 2]
            .iter()
            .map(|&n| Order::from_reservation(&orders[n]))
            .collect();
        assert_eq!(recent, expected);
        assert_eq!(
            store
                .recent_orders(sale.id, 100)
                .await
                .expect("recent")
                .len(),
            5
        );
        assert!(
            store
                .recent_orders(new_sale_id(), 10)
                .await
                .expect("recent")
                .is_empty()
        );
    }
}

/// Expands into one `#[tokio::test]` per `OrderStore` case. `$factory` is called once per test,
/// as `($factory)().await`, and must give `(Arc<dyn OrderStore>, guard)`.
#[macro_export]
macro_rules! order_store_conformance {
    ($factory:expr) => {
        $crate::__conformance_cases!(
            store,
            $factory,
            [
                store_create_get_list_sales,
                store_update_sale_compare_and_set,
                store_insert_orders_idempotent,
                store_pay_decisions,
                store_pay_after_deadline_is_expired,
                store_expire_due_returns_only_what_it_moved,
                store_concurrent_expire_due_never_twice,
                store_pay_races_expiry_exactly_one_wins,
                store_order_counts,
                store_holdings,
                store_recent_orders,
            ]
        );
    };
}

/// The shared expansion: one multi-threaded test per case, so the concurrency cases race for
/// real. Not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    (@factory $module:ident, $factory:expr, [$($case:ident),* $(,)?]) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $crate::conformance::$module::$case($factory).await;
            }
        )*
    };
    ($module:ident, $factory:expr, [$($case:ident),* $(,)?]) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (backend, guard) = ($factory)().await;
                $crate::conformance::$module::$case(backend).await;
                // Only now: the backend is gone, so whatever it lived in may go too.
                drop(guard);
            }
        )*
    };
}
