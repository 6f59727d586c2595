//! Cases for `StockLedger`.

use super::*;

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
