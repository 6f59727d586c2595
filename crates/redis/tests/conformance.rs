//! Runs the `StockLedger` conformance suite against the real Redis server, with and without
//! leases, and the `WaitingLine` suite against `RedisLine`, each test under a key prefix of its
//! own whose keys are deleted at the end; and the tests of what only leases promise (the
//! line's own tests are in `line.rs`).
//!
//! The server is `env::REDIS`: `FLASHSALE_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). A
//! server that cannot be reached fails the tests: a skipped backend test would read as a pass.

use flashsale_core::{BatchId, BuyerId, OrderId, ReserveOutcome, SaleId};
use flashsale_redis::{LeaseConfig, RedisLine, RedisStock, RedisStockConfig};
use flashsale_service::conformance::env::REDIS;
use flashsale_service::{Buy, OpenMode, StockLedger, WaitingLine};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

mod support;

use support::TestPrefix;

async fn fresh_stock() -> (RedisStock, TestPrefix) {
    fresh_stock_with(None).await
}

async fn fresh_stock_with(lease: Option<LeaseConfig>) -> (RedisStock, TestPrefix) {
    let prefix = TestPrefix::new();
    let stock = node(&prefix.prefix, lease).await;
    (stock, prefix)
}

/// Another node on the same ledgers.
async fn node(prefix: &str, lease: Option<LeaseConfig>) -> RedisStock {
    let config = RedisStockConfig {
        key_prefix: prefix.to_owned(),
        lease,
        ..RedisStockConfig::default()
    };
    RedisStock::connect(&REDIS.url(), config)
        .await
        .unwrap_or_else(|e| panic!("{e} {}", REDIS.hint()))
}

/// The classic design: every unit from the sale's counter.
mod redis_stock {
    use super::*;

    flashsale_service::stock_ledger_conformance!(|| async {
        let (stock, prefix) = fresh_stock().await;
        (Arc::new(stock) as Arc<dyn StockLedger>, prefix)
    });
}

/// The batched design: units from this node's lease first.
mod redis_leased_stock {
    use super::*;

    flashsale_service::stock_ledger_conformance!(|| async {
        let (stock, prefix) = fresh_stock_with(Some(LeaseConfig::default())).await;
        (Arc::new(stock) as Arc<dyn StockLedger>, prefix)
    });
}

/// The waiting line, beside the stock under the same prefix.
mod redis_line {
    use super::*;

    flashsale_service::waiting_line_conformance!(|| async {
        let prefix = TestPrefix::new();
        let config = RedisStockConfig {
            key_prefix: prefix.prefix.clone(),
            ..RedisStockConfig::default()
        };
        let line = RedisLine::connect(&REDIS.url(), config)
            .await
            .unwrap_or_else(|e| panic!("{e} {}", REDIS.hint()));
        (Arc::new(line) as Arc<dyn WaitingLine>, prefix)
    });
}

fn buyer(name: &str) -> BuyerId {
    BuyerId::parse(name).expect("buyer")
}

/// Reserves one buy per call for fresh buyers `{name}-{n}` until the sale answers sold out;
/// returns how many were reserved (and confirms them).
async fn buy_until_sold_out(stock: &RedisStock, sale: SaleId, name: &str) -> u32 {
    let mut reserved = 0;
    for n in 0.. {
        let order = OrderId(Uuid::now_v7());
        let buys = [Buy {
            order,
            buyer: buyer(&format!("{name}-{n}")),
        }];
        let batch = BatchId(Uuid::now_v7());
        let outcome = stock.reserve(sale, batch, &buys).await.expect("reserve")[0];
        match outcome {
            ReserveOutcome::Reserved => {
                stock.confirm(sale, batch, &[order]).await.expect("confirm");
                reserved += 1;
            }
            ReserveOutcome::SoldOut => return reserved,
            other => panic!("unexpected {other:?}"),
        }
    }
    unreachable!()
}

/// The raw leases of a sale: node id → units.
fn leases(prefix: &str, sale: SaleId) -> std::collections::HashMap<String, u32> {
    use redis::Commands as _;
    let client = redis::Client::open(REDIS.url()).expect("client");
    let mut connection = client.get_connection().expect("connection");
    let raw: std::collections::HashMap<String, String> = connection
        .hgetall(format!("{{fs:{prefix}:{sale}}}:leases"))
        .expect("hgetall");
    raw.into_iter()
        .map(|(node, value)| {
            let units = value.split(':').next().and_then(|u| u.parse().ok());
            (node, units.expect("a lease is <units>:<expires>"))
        })
        .collect()
}

fn short_lease() -> Option<LeaseConfig> {
    Some(LeaseConfig {
        units_max: 64,
        ttl_ms: 300,
    })
}

#[tokio::test]
async fn a_lease_is_sized_by_what_is_left_and_given_back_on_release() {
    let (first, prefix) = fresh_stock_with(short_lease()).await;
    let sale = SaleId(Uuid::now_v7());
    first
        .open_sale(sale, 100, 1, vec![], OpenMode::IfAbsent)
        .await
        .expect("open");
    let order = OrderId(Uuid::now_v7());
    let buys = [Buy {
        order,
        buyer: buyer("a"),
    }];
    first
        .reserve(sale, BatchId(Uuid::now_v7()), &buys)
        .await
        .expect("reserve");
    let node = first.node_id().expect("a leasing node").to_owned();
    // After the buy 99 are left; a lease takes at most an eighth of them.
    assert_eq!(leases(&prefix.prefix, sale), [(node.clone(), 12)].into());
    assert_eq!(first.available(sale).await.expect("available"), 99);
    first.release_lease(sale).await.expect("release");
    assert!(leases(&prefix.prefix, sale).is_empty());
    assert_eq!(
        first.available(sale).await.expect("available"),
        99,
        "the lease's units are back on the counter"
    );
}

#[tokio::test]
async fn leases_shrink_to_single_units_as_stock_runs_low() {
    let (first, prefix) = fresh_stock_with(short_lease()).await;
    let sale = SaleId(Uuid::now_v7());
    first
        .open_sale(sale, 30, 1, vec![], OpenMode::IfAbsent)
        .await
        .expect("open");
    let node = first.node_id().expect("a leasing node").to_owned();
    let mut seen = Vec::new();
    for n in 0..30 {
        let buys = [Buy {
            order: OrderId(Uuid::now_v7()),
            buyer: buyer(&format!("b{n}")),
        }];
        let outcome = first
            .reserve(sale, BatchId(Uuid::now_v7()), &buys)
            .await
            .expect("reserve")[0];
        assert_eq!(outcome, ReserveOutcome::Reserved, "buy {n}");
        seen.push(
            leases(&prefix.prefix, sale)
                .get(&node)
                .copied()
                .unwrap_or(0),
        );
    }
    assert_eq!(seen[0], 3, "29 left: an eighth, rounded down");
    assert!(
        seen.iter().rev().take(8).all(|&units| units <= 1),
        "near the end a lease holds at most one unit: {seen:?}"
    );
    assert_eq!(first.available(sale).await.expect("available"), 0);
}

#[tokio::test]
async fn units_on_a_live_nodes_lease_are_never_stranded() {
    // The first node takes a lease and then stops buying (its load balancer sends it no one);
    // the second sells everything, its lease's units included.
    let (first, prefix) = fresh_stock_with(Some(LeaseConfig::default())).await;
    let second = node(&prefix.prefix, Some(LeaseConfig::default())).await;
    let sale = SaleId(Uuid::now_v7());
    first
        .open_sale(sale, 50, 1, vec![], OpenMode::IfAbsent)
        .await
        .expect("open");
    assert_eq!(buy_until_sold_out_once(&first, sale).await, 1);
    let node = first.node_id().expect("a leasing node").to_owned();
    assert_eq!(leases(&prefix.prefix, sale).get(&node), Some(&6));
    assert_eq!(buy_until_sold_out(&second, sale, "second").await, 49);
    assert_eq!(second.available(sale).await.expect("available"), 0);
    assert!(
        leases(&prefix.prefix, sale)
            .values()
            .all(|&units| units == 0),
        "{:?}",
        leases(&prefix.prefix, sale)
    );
}

/// One buy: 1 if reserved.
async fn buy_until_sold_out_once(stock: &RedisStock, sale: SaleId) -> u32 {
    let buys = [Buy {
        order: OrderId(Uuid::now_v7()),
        buyer: buyer("once"),
    }];
    let outcome = stock
        .reserve(sale, BatchId(Uuid::now_v7()), &buys)
        .await
        .expect("reserve")[0];
    u32::from(outcome == ReserveOutcome::Reserved)
}

#[tokio::test]
async fn a_dead_nodes_lease_goes_back_on_sale_when_it_expires() {
    let (second, prefix) = fresh_stock_with(short_lease()).await;
    let sale = SaleId(Uuid::now_v7());
    second
        .open_sale(sale, 200, 1, vec![], OpenMode::IfAbsent)
        .await
        .expect("open");
    let dead_node = {
        let first = node(&prefix.prefix, short_lease()).await;
        assert_eq!(buy_until_sold_out_once(&first, sale).await, 1);
        first.node_id().expect("a leasing node").to_owned()
        // Dropped here without releasing its lease: as if killed.
    };
    assert_eq!(leases(&prefix.prefix, sale).get(&dead_node), Some(&24));
    assert_eq!(second.available(sale).await.expect("available"), 199);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(buy_until_sold_out(&second, sale, "second").await, 199);
    assert!(
        !leases(&prefix.prefix, sale).contains_key(&dead_node),
        "the expired lease was reclaimed: {:?}",
        leases(&prefix.prefix, sale)
    );
}

#[tokio::test]
async fn the_classic_design_takes_no_leases() {
    let (stock, prefix) = fresh_stock().await;
    let sale = SaleId(Uuid::now_v7());
    stock
        .open_sale(sale, 10, 1, vec![], OpenMode::IfAbsent)
        .await
        .expect("open");
    assert_eq!(stock.node_id(), None);
    assert_eq!(buy_until_sold_out(&stock, sale, "c").await, 10);
    assert!(leases(&prefix.prefix, sale).is_empty());
}

#[tokio::test]
async fn connect_error_names_the_backend_and_the_url() {
    let error = RedisStock::connect("redis://:secret@127.0.0.1:1", RedisStockConfig::default())
        .await
        .expect_err("nothing listens on port 1");
    let message = error.to_string();
    assert!(
        message.starts_with("cannot connect to Redis at redis://:***@127.0.0.1:1: "),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");

    let braces = RedisStockConfig {
        key_prefix: "a{b}".to_owned(),
        ..RedisStockConfig::default()
    };
    let error = RedisStock::connect(&REDIS.url(), braces)
        .await
        .expect_err("braces break the hash tag");
    assert!(error.to_string().contains("key prefix"), "{error}");
}

#[tokio::test]
async fn a_sale_survives_in_redis_not_in_the_process() {
    // Two independent connections (two nodes) see one ledger.
    let (first, prefix) = fresh_stock().await;
    let second = RedisStock::connect(
        &REDIS.url(),
        RedisStockConfig {
            key_prefix: prefix.prefix.clone(),
            ..RedisStockConfig::default()
        },
    )
    .await
    .expect("connect");
    let sale = SaleId(Uuid::now_v7());
    first
        .open_sale(sale, 1, 1, vec![], OpenMode::IfAbsent)
        .await
        .expect("open");
    assert_eq!(buy_until_sold_out_once(&first, sale).await, 1);
    assert_eq!(buy_until_sold_out(&second, sale, "bob").await, 0);
    assert_eq!(second.available(sale).await.expect("available"), 0);
}

/// Not a benchmark, a sanity figure printed with `--nocapture`: reserves per second from 64
/// concurrent tasks over one multiplexed connection, one buy per call and 32 per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_throughput_is_reported() {
    const TASKS: usize = 64;
    const BUYS_PER_TASK: usize = 256;
    for per_call in [1, 32] {
        let (stock, _prefix) = fresh_stock_with(Some(LeaseConfig::default())).await;
        let stock = Arc::new(stock);
        let sale = SaleId(Uuid::now_v7());
        let total = (TASKS * BUYS_PER_TASK) as u32;
        stock
            .open_sale(sale, total, 1, vec![], OpenMode::IfAbsent)
            .await
            .expect("open");
        let started = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let stock = stock.clone();
                tokio::spawn(async move {
                    for chunk in (0..BUYS_PER_TASK).collect::<Vec<_>>().chunks(per_call) {
                        let buys: Vec<Buy> = chunk
                            .iter()
                            .map(|n| Buy {
                                order: OrderId(Uuid::now_v7()),
                                buyer: buyer(&format!("b{task}-{n}")),
                            })
                            .collect();
                        let outcomes = stock
                            .reserve(sale, BatchId(Uuid::now_v7()), &buys)
                            .await
                            .expect("reserve");
                        assert!(outcomes.iter().all(|o| *o == ReserveOutcome::Reserved));
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        let elapsed = started.elapsed();
        assert_eq!(stock.available(sale).await.expect("available"), 0);
        eprintln!(
            "redis: {total} reserves from {TASKS} tasks, {per_call} per call: {:.0} reserves/s ({elapsed:?})",
            f64::from(total) / elapsed.as_secs_f64()
        );
    }
}
