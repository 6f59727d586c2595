//! Fault points at every durability boundary (the list is in RELIABILITY.md), each run with an
//! error, a panic and a pause, on the embedded backends under a whole shop: two bursts of
//! buys whose requests time out, payments, expiry by two racing reapers, a restart.
//!
//! While the fault is on, every answer must be true (a 202 is an order, nothing is oversold,
//! no buyer goes over the limit, no unit comes back twice). Once it is off, the shop must
//! converge: the queue drains, every unpaid order expires and its unit is back, and the stock
//! adds up, in the running process and again after a restart that rebuilds from disk. The one
//! exception is written down per point: a panic or an unknown outcome inside the durable
//! queue may hold a unit until the restart, because giving it back could oversell.
//!
//! The points are process-global, so each test holds `fail::FailScenario` (a global lock) and
//! the tests of this file run one at a time.

use flashsale_core::invariants::{
    self, Acknowledged, AnsweredPaid, Observation, SeenOrder, SeenReservation,
};
use flashsale_core::{BuyerId, IdempotencyKey, OrderId, OrderStatus, PaymentId, SaleId, SaleSpec};
use flashsale_embedded::{InProcessStock, LogQueue, QueueConfig, SqliteStore};
use flashsale_service::filters::FilterConfig;
use flashsale_service::shop::{
    Backends, BuyOutcome, PayAnswer, ReaperConfig, ReservationConfig, Shop, ShopConfig,
};
use flashsale_service::writers::WriterConfig;
use flashsale_service::{Clock, ManualClock, OrderStore, ReservationQueue, StockLedger};
use std::collections::{HashMap, HashSet};
use std::num::{NonZeroU64, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use time::macros::datetime;

const STOCK: u32 = 10;
const LIMIT: u32 = 2;
const PAYMENT_WINDOW_SECS: u32 = 60;
/// How long a test request waits before it gives up (drops its future), like the server's
/// request timeout. Shorter than the injected pause, so pauses cancel requests mid-flight.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(300);
/// How long a request may take once the fault is off: only a hang, never a slow machine, fails.
const SETTLED_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const PAUSE_ACTION: &str = "return(400)";
const ACK_DEADLINE_MS: u64 = 300;
/// Longer than a pause plus the commits queued behind a paused committer.
const IN_FLIGHT_SETTLE: Duration = Duration::from_millis(1_500);

/// When a unit may stay taken until the restart.
#[derive(Clone, Copy, PartialEq)]
enum HeldUntilRestart {
    Never,
    /// A panic inside the queue: the enqueue's outcome is unknown.
    OnPanic,
    /// Also an injected error there, which reports an unknown outcome.
    OnErrorOrPanic,
}

struct Node {
    shop: Arc<Shop>,
    stock: Arc<InProcessStock>,
    queue: Arc<LogQueue>,
    store: Arc<SqliteStore>,
}

struct Case {
    dir: TempDir,
    clock: Arc<ManualClock>,
    sale: SaleId,
    token: String,
}

fn shop_config() -> ShopConfig {
    ShopConfig {
        buy_path_secret: b"fault-point-test-secret-of-32-bytes!".to_vec(),
        // Batched, the default: concurrent buys of a burst share batches, so a fault point on
        // the buy path hits whole batches.
        reservations: ReservationConfig::default(),
        writers: WriterConfig {
            count: 2,
            batch_max: NonZeroUsize::new(16).expect("not zero"),
            idle_wait_ms: NonZeroU64::new(20).expect("not zero"),
            linger_ms: 5,
            retry_backoff_ms_max: 50,
            // Real time: would make the run depend on the host (the simulation) or slow the
            // drain the test waits for.
            give_way_ms: 0,
        },
        reaper: ReaperConfig {
            interval_ms: NonZeroU64::new(50).expect("not zero"),
            batch_max: NonZeroUsize::new(4).expect("not zero"),
        },
        filters: FilterConfig {
            // Every attempt reaches the ledger: no window, no rate limits, no shedding.
            buyer_window_ms: 0,
            buyer_rate_per_sec: 0,
            sale_rate_per_sec: 0,
            shed_queue_fill_percent_start: 100,
            ..FilterConfig::default()
        },
        drain_timeout_ms: 2_000,
        cluster: None,
    }
}

async fn open_node(dir: &TempDir, clock: &Arc<ManualClock>) -> Result<Node, String> {
    let queue_path = dir.path().join("queue");
    // The previous node's queue closes when its last handle drops; give it a moment.
    let mut attempts = 0;
    let queue = loop {
        match LogQueue::open(
            &queue_path,
            QueueConfig {
                ack_deadline_ms: ACK_DEADLINE_MS,
                ..QueueConfig::default()
            },
        ) {
            Ok(queue) => break Arc::new(queue),
            Err(error) if attempts < 50 => {
                attempts += 1;
                let _ = error;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => return Err(format!("reopening the queue: {error}")),
        }
    };
    let store_path = dir.path().join("orders.sqlite");
    let store = Arc::new(
        SqliteStore::open(store_path.to_str().expect("utf-8 path"))
            .await
            .map_err(|e| e.to_string())?,
    );
    let stock = Arc::new(InProcessStock::new());
    let backends = Backends {
        stock: stock.clone(),
        queue: queue.clone(),
        store: store.clone(),
        line: Arc::new(flashsale_embedded::InProcessLine::new()),
        clock: clock.clone(),
    };
    // Recovery has fault points of its own: open in a task so a panic there is an answer.
    let shop = tokio::spawn(Shop::open(backends, shop_config()))
        .await
        .map_err(|e| format!("recovery panicked: {e}"))?
        .map_err(|e| format!("recovery failed: {e}"))?;
    Ok(Node {
        shop,
        stock,
        queue,
        store,
    })
}

async fn close_node(node: Node) {
    node.shop.shutdown().await;
    node.store.close().await;
}

async fn new_case() -> (Case, Node) {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::new(datetime!(2026-11-25 12:00 UTC)));
    let node = open_node(&dir, &clock).await.expect("open");
    let now = datetime!(2026-11-25 12:00 UTC);
    let view = node
        .shop
        .create_sale(SaleSpec {
            name: "fault points".into(),
            price_cents: 100,
            stock: STOCK,
            starts_at: now + time::Duration::seconds(1),
            ends_at: now + time::Duration::hours(2),
            per_buyer_limit: LIMIT,
            payment_window_secs: PAYMENT_WINDOW_SECS,
            waiting_room: None,
        })
        .await
        .expect("create sale");
    clock.advance(time::Duration::seconds(2));
    let sale = view.sale.id;
    let token = node
        .shop
        .status(sale)
        .and_then(|status| status.buy_token)
        .expect("the sale is live");
    (
        Case {
            dir,
            clock,
            sale,
            token,
        },
        node,
    )
}

/// Every buyer fires `keys` buys at once (plus a repeat of the first); returns the accepted
/// orders. Requests give up after `REQUEST_TIMEOUT`; a request that failed inside (a panic)
/// is an error answer, as the server's catch-panic layer makes it.
async fn burst(
    case: &Case,
    node: &Node,
    buyers: std::ops::Range<u32>,
    keys: u32,
) -> Vec<(OrderId, BuyerId)> {
    let mut requests = Vec::new();
    for b in buyers {
        let buyer = BuyerId::parse(&format!("buyer-{b}")).expect("buyer id");
        for k in 0..=keys {
            let key = IdempotencyKey::parse(&format!("key-{}", k % keys)).expect("key");
            let (shop, token, buyer, sale) = (
                node.shop.clone(),
                case.token.clone(),
                buyer.clone(),
                case.sale,
            );
            requests.push(tokio::spawn(async move {
                let answer = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    shop.buy(sale, &token, &buyer, &key, None),
                )
                .await;
                (buyer, answer)
            }));
        }
    }
    let mut accepted = Vec::new();
    for request in requests {
        if let Ok((buyer, Ok(Ok(BuyOutcome::Accepted { order_id, .. })))) = request.await {
            accepted.push((order_id, buyer));
        }
    }
    accepted
}

async fn wait_drained(node: &Node, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if node.queue.depth() == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.queue.depth() == 0
}

/// Pays every other accepted order, each tried a few times; returns the ones answered paid.
async fn pay_some(node: &Node, accepted: &[(OrderId, BuyerId)]) -> Vec<OrderId> {
    let mut paid = Vec::new();
    for (order, buyer) in accepted.iter().step_by(2) {
        for _ in 0..5 {
            let (shop, buyer, order) = (node.shop.clone(), buyer.clone(), *order);
            let payment = PaymentId::parse(&format!("pay-{order}")).expect("payment id");
            let answer = tokio::spawn(async move {
                tokio::time::timeout(REQUEST_TIMEOUT, shop.pay(&buyer, order, &payment)).await
            })
            .await;
            if let Ok(Ok(Ok(PayAnswer::Paid(_)))) = answer {
                paid.push(order);
                break;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    paid
}

/// Two reapers at once, as two nodes (or a slow sweep and the next) would race.
async fn racing_sweeps(node: &Node) {
    let sweeps: Vec<_> = (0..2)
        .map(|_| {
            let shop = node.shop.clone();
            tokio::spawn(async move { shop.reap_once().await })
        })
        .collect();
    for sweep in sweeps {
        let _ = sweep.await;
    }
}

/// How much a check may ask of the units.
#[derive(Clone, Copy, PartialEq)]
enum Moment {
    /// Attempts and sweeps may be in flight: the units are not counted (a count read while a
    /// unit moves would be wrong either way); everything else is.
    InFlight,
    /// Quiet: no unit is back twice (some may be held until the restart).
    Settled,
    /// Quiet, and every order is paid or expired with its unit back: the stock adds up exactly.
    Converged,
}

/// The promises, read from the backends and checked by the shared checker. The queue is read
/// before the store: a writer writes an order before it acks its reservation, so one moving
/// in between is seen, never missed.
async fn check(
    case: &Case,
    node: &Node,
    accepted: &[(OrderId, BuyerId)],
    paid: &[OrderId],
    moment: Moment,
    context: &str,
) {
    let queued = node.queue.all_queued().await.expect("queued");
    let orders = node
        .store
        .recent_orders(case.sale, 10_000)
        .await
        .expect("orders");
    let mut seen = Observation::new(u64::from(STOCK), u64::from(LIMIT));
    seen.orders = orders.iter().map(SeenOrder::of).collect();
    seen.orders_complete = true;
    seen.queued = queued
        .iter()
        .map(|q| SeenReservation {
            id: q.reservation.order_id,
            buyer: q.reservation.buyer.clone(),
        })
        .collect();
    seen.acknowledged = accepted
        .iter()
        .map(|(order, buyer)| Acknowledged {
            order: *order,
            buyer: buyer.clone(),
            request: None,
        })
        .collect();
    seen.paid = paid
        .iter()
        .map(|order| AnsweredPaid {
            order: *order,
            payment: None,
        })
        .collect();
    if moment != Moment::InFlight {
        seen.available = Some(u64::from(
            node.stock.available(case.sale).await.expect("available"),
        ));
    }
    if moment == Moment::Converged {
        seen.quiet = true;
        seen.due_by = Some(case.clock.now());
    }
    if let Err(violations) = invariants::check(&seen) {
        let mut statuses: HashMap<OrderStatus, usize> = HashMap::new();
        for order in &orders {
            *statuses.entry(order.status).or_default() += 1;
        }
        panic!(
            "{context}: {}\norders {statuses:?}",
            invariants::describe(&violations)
        );
    }
    if moment == Moment::Converged {
        // Stricter than `due_by`, and what this test means: it moved the clock past every
        // deadline, so no order may be pending at all.
        assert!(
            orders
                .iter()
                .filter(|o| o.status.is_live())
                .all(|o| o.status == OrderStatus::Paid),
            "{context}: an unpaid order outlived its deadline"
        );
    }
}

async fn run(point: &str, action: &str, held: HeldUntilRestart) {
    let context = format!("{point} = {action}");
    let (case, node) = new_case().await;
    fail::cfg(point, action).expect("configure the fault point");

    // While the fault is on.
    let mut accepted = burst(&case, &node, 0..30, 2).await;
    wait_drained(&node, Duration::from_secs(1)).await;
    let paid = pay_some(&node, &accepted).await;
    check(&case, &node, &accepted, &paid, Moment::InFlight, &context).await;
    case.clock
        .advance(time::Duration::seconds(i64::from(PAYMENT_WINDOW_SECS) + 1));
    racing_sweeps(&node).await;
    accepted.extend(burst(&case, &node, 100..120, 1).await);
    check(&case, &node, &accepted, &paid, Moment::InFlight, &context).await;

    // Off: the shop converges on its own, once the attempts still paused have finished
    // (their callers gave up long ago; the attempts carry on, as they must).
    fail::remove(point);
    tokio::time::sleep(IN_FLIGHT_SETTLE).await;
    assert!(
        wait_drained(&node, Duration::from_secs(10)).await,
        "{context}: the queue did not drain"
    );
    case.clock
        .advance(time::Duration::seconds(i64::from(PAYMENT_WINDOW_SECS) + 1));
    racing_sweeps(&node).await;
    racing_sweeps(&node).await;
    let held_here = match (held, action) {
        (HeldUntilRestart::Never, _) => false,
        (HeldUntilRestart::OnPanic, a) => a == "panic",
        (HeldUntilRestart::OnErrorOrPanic, a) => a == "panic" || a == "return",
    };
    let moment = if held_here {
        Moment::Settled
    } else {
        Moment::Converged
    };
    check(&case, &node, &accepted, &paid, moment, &context).await;

    // And it sells again.
    let available = node.stock.available(case.sale).await.expect("available");
    // One buy, given all the time it needs: a slow answer on a loaded machine is not what this
    // asks (the bursts above cancel requests on purpose; this one must not be).
    let buyer = BuyerId::parse("buyer-300").expect("buyer id");
    let key = IdempotencyKey::parse("key-0").expect("key");
    let fresh = tokio::time::timeout(
        SETTLED_REQUEST_TIMEOUT,
        node.shop.buy(case.sale, &case.token, &buyer, &key, None),
    )
    .await;
    let fresh = match fresh {
        Ok(Ok(BuyOutcome::Accepted { order_id, .. })) => Some((order_id, buyer)),
        Ok(Ok(BuyOutcome::SoldOut)) => None,
        other => panic!("{context}: a new buyer's buy after the fault was answered {other:?}"),
    };
    assert_eq!(
        fresh.is_some(),
        available > 0,
        "{context}: with {available} units available a new buyer got {fresh:?}"
    );
    accepted.extend(fresh);

    // A restart rebuilds from disk and must agree exactly.
    close_node(node).await;
    let node = open_node(&case.dir, &case.clock).await.expect("reopen");
    assert!(
        wait_drained(&node, Duration::from_secs(10)).await,
        "{context}: the queue did not drain after the restart"
    );
    case.clock
        .advance(time::Duration::seconds(i64::from(PAYMENT_WINDOW_SECS) + 1));
    racing_sweeps(&node).await;
    racing_sweeps(&node).await;
    check(
        &case,
        &node,
        &accepted,
        &paid,
        Moment::Converged,
        &format!("{context}, after restart"),
    )
    .await;
    close_node(node).await;
}

/// A fault at recovery: the node does not start (error, panic) or starts late (pause), and
/// changes nothing; the next start succeeds and agrees.
async fn run_recovery(point: &str, action: &str) {
    let context = format!("{point} = {action}");
    let (case, node) = new_case().await;
    let accepted = burst(&case, &node, 0..20, 1).await;
    assert!(wait_drained(&node, Duration::from_secs(10)).await);
    close_node(node).await;
    fail::cfg(point, action).expect("configure the fault point");
    let opened = open_node(&case.dir, &case.clock).await;
    fail::remove(point);
    match (action, opened) {
        ("return(400)", Ok(node)) => close_node(node).await,
        ("return(400)", Err(error)) => panic!("{context}: a slow recovery failed: {error}"),
        (_, Ok(_)) => panic!("{context}: recovery ignored the fault"),
        (_, Err(_)) => {}
    }
    let node = open_node(&case.dir, &case.clock).await.expect("reopen");
    check(&case, &node, &accepted, &[], Moment::Settled, &context).await;
    let available = node.stock.available(case.sale).await.expect("available");
    // A repeat of a request is answered with the same order: count each order once.
    let sold: HashSet<OrderId> = accepted.iter().map(|(order, _)| *order).collect();
    assert_eq!(available, STOCK - sold.len() as u32, "{context}");
    close_node(node).await;
}

const ACTIONS: [&str; 3] = ["return", "panic", PAUSE_ACTION];

macro_rules! fault_point_tests {
    ($($test:ident: $point:literal, $held:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            let scenario = fail::FailScenario::setup();
            for action in ACTIONS {
                run($point, action, $held).await;
            }
            scenario.teardown();
        }
    )*};
}

fault_point_tests! {
    buy_before_reserve: "shop.buy.before_reserve", HeldUntilRestart::Never;
    buy_between_reserve_and_enqueue: "shop.buy.after_reserve", HeldUntilRestart::Never;
    buy_after_enqueue_before_confirm: "shop.buy.after_enqueue", HeldUntilRestart::Never;
    queue_before_handing_to_committer: "queue.enqueue.before_send", HeldUntilRestart::OnPanic;
    queue_before_fsync: "queue.commit.before", HeldUntilRestart::OnPanic;
    queue_after_fsync: "queue.commit.after", HeldUntilRestart::OnErrorOrPanic;
    queue_before_ack: "queue.ack.before", HeldUntilRestart::Never;
    writer_between_take_and_write: "writer.after_take", HeldUntilRestart::Never;
    writer_between_write_and_ack: "writer.after_insert", HeldUntilRestart::Never;
    store_insert_before_commit: "sqlite.insert_orders.before_commit", HeldUntilRestart::Never;
    store_insert_after_commit: "sqlite.insert_orders.after_commit", HeldUntilRestart::Never;
    store_pay_after_update: "sqlite.pay.after_update", HeldUntilRestart::Never;
    reaper_transaction_before_commit: "sqlite.expire_due.before_commit", HeldUntilRestart::Never;
    reaper_transaction_after_commit: "sqlite.expire_due.after_commit", HeldUntilRestart::Never;
    reaper_between_expiry_and_return: "reaper.after_expire", HeldUntilRestart::Never;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_before_installing_a_ledger() {
    let scenario = fail::FailScenario::setup();
    for action in ACTIONS {
        run_recovery("recovery.before_open_ledger", action).await;
    }
    scenario.teardown();
}
