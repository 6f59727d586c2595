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
//! The cases live by port, each file with its macro: `stock.rs` (`stock_ledger_conformance!`),
//! `queue.rs` (`reservation_queue_conformance!`), `store.rs` (`order_store_conformance!`),
//! `line.rs` (`waiting_line_conformance!`). This
//! module holds what they share: `QueueSetup`, the test data helpers and the macros' expansion.
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

pub mod env;
pub mod line;
pub mod queue;
pub mod stock;
pub mod store;

// Test data shared by the cases of every port.

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
