//! Runs the `StockLedger` conformance suite against the real Redis server, each test under a
//! key prefix of its own whose keys are deleted at the end.
//!
//! The server is `FLASHSALE_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). A server that
//! cannot be reached fails the tests: a skipped backend test would read as a pass.

use flashsale_core::{BuyerId, OrderId, ReserveOutcome, SaleId};
use flashsale_redis::{RedisStock, RedisStockConfig};
use flashsale_service::{OpenMode, StockLedger};
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

fn server_url() -> String {
    std::env::var("FLASHSALE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix of the test's own. Dropping it deletes every key under it.
struct TestPrefix {
    prefix: String,
}

impl Drop for TestPrefix {
    fn drop(&mut self) {
        // The blocking client: Drop cannot await, and this is a handful of commands.
        use redis::Commands as _;
        let pattern = format!("{{fs:{}:*", self.prefix);
        let cleanup = || -> redis::RedisResult<()> {
            let client = redis::Client::open(server_url())?;
            let mut connection = client.get_connection()?;
            let keys: Vec<String> = connection
                .scan_match::<_, String>(&pattern)?
                .collect::<redis::RedisResult<_>>()?;
            for chunk in keys.chunks(500) {
                redis::cmd("DEL").arg(chunk).query::<()>(&mut connection)?;
            }
            Ok(())
        };
        if let Err(e) = cleanup() {
            eprintln!("could not delete test keys {pattern}: {e}");
        }
    }
}

async fn fresh_stock() -> (RedisStock, TestPrefix) {
    let prefix = format!("test-{}", Uuid::new_v4().simple());
    let config = RedisStockConfig {
        key_prefix: prefix.clone(),
        ..RedisStockConfig::default()
    };
    let stock = RedisStock::connect(&server_url(), config)
        .await
        .unwrap_or_else(|e| panic!("{e} (set FLASHSALE_TEST_REDIS_URL)"));
    (stock, TestPrefix { prefix })
}

mod redis_stock {
    use super::*;

    flashsale_service::stock_ledger_conformance!(|| async {
        let (stock, prefix) = fresh_stock().await;
        (Arc::new(stock) as Arc<dyn StockLedger>, prefix)
    });
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
    let error = RedisStock::connect(&server_url(), braces)
        .await
        .expect_err("braces break the hash tag");
    assert!(error.to_string().contains("key prefix"), "{error}");
}

#[tokio::test]
async fn a_sale_survives_in_redis_not_in_the_process() {
    // Two independent connections (two nodes) see one ledger.
    let (first, prefix) = fresh_stock().await;
    let second = RedisStock::connect(
        &server_url(),
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
    let alice = BuyerId::parse("alice").expect("buyer");
    assert_eq!(
        first
            .reserve(sale, OrderId(Uuid::now_v7()), &alice)
            .await
            .expect("reserve"),
        ReserveOutcome::Reserved
    );
    assert_eq!(
        second
            .reserve(
                sale,
                OrderId(Uuid::now_v7()),
                &BuyerId::parse("bob").expect("buyer")
            )
            .await
            .expect("reserve"),
        ReserveOutcome::SoldOut
    );
    assert_eq!(second.available(sale).await.expect("available"), 0);
}

/// Not a benchmark, a sanity figure printed with `--nocapture`: reserve calls per second from
/// 64 concurrent tasks over one multiplexed connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_throughput_is_reported() {
    const TASKS: usize = 64;
    const CALLS_PER_TASK: usize = 500;
    let (stock, _prefix) = fresh_stock().await;
    let stock = Arc::new(stock);
    let sale = SaleId(Uuid::now_v7());
    let total = (TASKS * CALLS_PER_TASK) as u32;
    stock
        .open_sale(sale, total, 1, vec![], OpenMode::IfAbsent)
        .await
        .expect("open");
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let stock = stock.clone();
            tokio::spawn(async move {
                for n in 0..CALLS_PER_TASK {
                    let buyer = BuyerId::parse(&format!("b{task}-{n}")).expect("buyer");
                    let outcome = stock
                        .reserve(sale, OrderId(Uuid::now_v7()), &buyer)
                        .await
                        .expect("reserve");
                    assert_eq!(outcome, ReserveOutcome::Reserved);
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
        "redis: {total} reserves from {TASKS} tasks: {:.0} calls/s ({elapsed:?})",
        f64::from(total) / elapsed.as_secs_f64()
    );
}
