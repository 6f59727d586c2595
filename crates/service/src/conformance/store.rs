//! Cases for `OrderStore`.

use super::*;

fn payment(name: &str) -> PaymentId {
    PaymentId::parse(name).expect("valid payment id")
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
        waiting_room: None,
    }
}

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
