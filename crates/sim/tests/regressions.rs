//! Bugs the simulation found, each replayed as a plain scenario on the same models.

use flashsale_core::tokens::BuyPathSigner;
use flashsale_core::{BuyerId, IdempotencyKey, Sale, SaleId, SaleSpec, Timestamp};
use flashsale_service::{
    Backends, BuyOutcome, FilterConfig, OrderStore, ReservationQueue, Shop, ShopConfig,
    WriterConfig,
};
use flashsale_sim::clock::SimClock;
use flashsale_sim::queue::SimQueue;
use flashsale_sim::stock::{ReserveMode, SimStock};
use flashsale_sim::store::{ExpiryMode, SimStore};
use std::sync::Arc;
use std::time::Duration;

fn config() -> ShopConfig {
    ShopConfig {
        buy_path_secret: b"regression".to_vec(),
        reservations: Default::default(),
        // No writers: the test plays the writer by hand.
        writers: WriterConfig {
            count: 0,
            ..WriterConfig::default()
        },
        reaper: Default::default(),
        filters: FilterConfig {
            buyer_window_ms: 0,
            buyer_rate_per_sec: 0,
            sale_rate_per_sec: 0,
            ..FilterConfig::default()
        },
        drain_timeout_ms: 0,
        cluster: None,
    }
}

/// Seed 90: a writer wrote an order and died before acking it; the order expired and its unit
/// was sold again; at the restart the reservation still in the queue counted as live, so
/// recovery found two live orders for one unit and the shop refused to open.
#[tokio::test(start_paused = true)]
async fn an_expired_order_still_in_the_queue_does_not_hold_its_unit_after_a_restart() {
    let start = Timestamp::from_unix_timestamp(1_893_456_000).expect("a valid time");
    let clock = Arc::new(SimClock::new(start));
    let queue = Arc::new(SimQueue::new(
        clock.clone(),
        10,
        time::Duration::seconds(30),
    ));
    let store = Arc::new(SimStore::new(ExpiryMode::CompareAndSet));
    let spec = SaleSpec {
        name: "one unit".to_owned(),
        price_cents: 1,
        stock: 1,
        starts_at: start,
        ends_at: start + time::Duration::hours(1),
        per_buyer_limit: 1,
        payment_window_secs: 10,
        waiting_room: None,
    };
    let sale = Sale::new(SaleId(uuid::Uuid::from_u128(90)), spec).expect("a valid sale");
    store.create_sale(&sale).await.expect("sale stored");
    let backends = |stock: Arc<SimStock>| Backends {
        stock,
        queue: queue.clone(),
        store: store.clone(),
        line: Arc::new(flashsale_embedded::InProcessLine::new()),
        clock: clock.clone(),
    };
    let token = BuyPathSigner::new(b"regression").token(sale.id, start);
    let key = IdempotencyKey::parse("k").expect("a valid key");
    let (first, second) = (
        BuyerId::parse("first").expect("a valid buyer"),
        BuyerId::parse("second").expect("a valid buyer"),
    );

    let shop = Shop::open(
        backends(Arc::new(SimStock::new(ReserveMode::Atomic))),
        config(),
    )
    .await
    .expect("the shop opens");
    let bought = shop.buy(sale.id, &token, &first, &key, None).await;
    assert!(
        matches!(bought, Ok(BuyOutcome::Accepted { .. })),
        "{bought:?}"
    );
    // A writer writes the order and dies before its ack.
    let batch = queue.take_batch(10, Duration::ZERO).await.expect("taken");
    store.insert_orders(&batch).await.expect("written");
    // Unpaid, the order expires and its unit is sold to someone else.
    clock.jump(time::Duration::seconds(11));
    assert_eq!(shop.reap_once().await.expect("reaped"), 1);
    let resold = shop.buy(sale.id, &token, &second, &key, None).await;
    assert!(
        matches!(resold, Ok(BuyOutcome::Accepted { .. })),
        "{resold:?}"
    );

    // The node restarts with the first reservation still queued.
    queue.reopen();
    let reopened = Shop::open(
        backends(Arc::new(SimStock::new(ReserveMode::Atomic))),
        config(),
    )
    .await
    .expect("the shop opens again: the expired order holds no unit");
    let counters = reopened
        .sale_view(sale.id)
        .await
        .expect("sale view")
        .counters;
    assert_eq!(
        (counters.available, counters.expired),
        (0, 1),
        "one unit, held by the second buyer's queued order: {counters:?}"
    );
}
