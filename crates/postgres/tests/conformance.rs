//! Runs the `OrderStore` conformance suite against the real PostgreSQL server, each test in a
//! fresh database of its own that is dropped at the end.
//!
//! The server is `env::POSTGRES`: `FLASHSALE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432`, trust auth). A server that cannot be reached fails the
//! tests: a skipped backend test would read as a pass.

use flashsale_core::{BuyerId, OrderId, Reservation, SaleId};
use flashsale_postgres::{PgStore, PgStoreConfig};
use flashsale_service::OrderStore;
use flashsale_service::conformance::env::{POSTGRES, clean_up_blocking, unique_name};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use std::num::{NonZeroU64, NonZeroUsize};
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// A database of the test's own. Dropping it drops the database (best effort), after the
/// store's connections are gone or forced out.
struct TestDatabase {
    name: String,
}

impl TestDatabase {
    async fn create() -> (Self, String) {
        let server = POSTGRES.url();
        let admin_url = format!("{server}/postgres");
        let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!(
                "cannot connect to PostgreSQL at {admin_url} {}: {e}",
                POSTGRES.hint()
            )
        });
        let name = unique_name("flashsale_test_");
        // The name is ours and plain ASCII, so formatting it into the statement is safe.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.ok();
        let url = format!("{server}/{name}");
        (Self { name }, url)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        clean_up_blocking(async move {
            let admin_url = format!("{}/postgres", POSTGRES.url());
            if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                let statement = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(statement))
                    .execute(&mut admin)
                    .await
                {
                    eprintln!("could not drop test database {name}: {e}");
                }
                admin.close().await.ok();
            }
        });
    }
}

async fn fresh_store(config: PgStoreConfig) -> (PgStore, TestDatabase) {
    let (database, url) = TestDatabase::create().await;
    let store = PgStore::connect_with(&url, config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (store, database)
}

mod pg_store {
    use super::*;

    flashsale_service::order_store_conformance!(|| async {
        let (store, database) = fresh_store(PgStoreConfig {
            // Small statements, so the 2,500-row case of the suite spans a transaction of
            // several statements too.
            insert_rows_per_statement_max: NonZeroUsize::new(1_000).expect("not zero"),
            ..PgStoreConfig::default()
        })
        .await;
        (Arc::new(store) as Arc<dyn OrderStore>, database)
    });
}

#[tokio::test]
async fn connect_error_names_the_backend_and_the_url() {
    // Port 1 on loopback: nothing listens there, so the refusal is immediate.
    let error = PgStore::connect_with(
        "postgres://app:secret@127.0.0.1:1/none",
        PgStoreConfig {
            connect_timeout_ms: NonZeroU64::new(2_000).expect("not zero"),
            ..PgStoreConfig::default()
        },
    )
    .await
    .expect_err("nothing listens on port 1");
    let message = error.to_string();
    assert!(
        message
            .starts_with("cannot connect to PostgreSQL at postgres://app:***@127.0.0.1:1/none: "),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_are_idempotent_and_concurrent_connects_agree() {
    let (database, url) = TestDatabase::create().await;
    let connects: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgStore::connect(&url).await })
        })
        .collect();
    for connect in connects {
        let store = connect
            .await
            .expect("task")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(store.list_sales().await.expect("list").is_empty());
        store.close().await;
    }
    drop(database);
}

/// Not a benchmark, a sanity figure printed with `--nocapture`: batched inserts of new orders
/// into a fresh database, as the order writers do them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_throughput_is_reported() {
    const ROWS: usize = 100_000;
    const BATCH: usize = 1_000;
    let (store, database) = fresh_store(PgStoreConfig::default()).await;
    let sale = SaleId(Uuid::now_v7());
    let buyer = BuyerId::parse("buyer").expect("buyer");
    let now = time::OffsetDateTime::now_utc();
    let reservations: Vec<Reservation> = (0..ROWS)
        .map(|_| Reservation::new(OrderId(Uuid::now_v7()), sale, buyer.clone(), now, 600))
        .collect();
    let started = Instant::now();
    let mut inserted = 0;
    for batch in reservations.chunks(BATCH) {
        inserted += store.insert_orders(batch).await.expect("insert");
    }
    let elapsed = started.elapsed();
    assert_eq!(inserted, ROWS as u64);
    eprintln!(
        "postgres: {ROWS} orders in batches of {BATCH}: {:.0} rows/s ({elapsed:?})",
        ROWS as f64 / elapsed.as_secs_f64()
    );
    store.close().await;
    drop(database);
}
