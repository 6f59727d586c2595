//! Runs the ports' conformance suites against the embedded backends, each test on a fresh
//! backend in its own temp dir.

use flashsale_embedded::{
    InProcessLine, InProcessStock, LogQueue, QueueConfig, RedbQueue, SqliteStore,
};
use flashsale_service::conformance::QueueSetup;
use flashsale_service::{OrderStore, ReservationQueue, StockLedger, WaitingLine};
use std::sync::Arc;

/// The queue's limits a conformance case asks for.
fn queue_config(setup: &QueueSetup) -> QueueConfig {
    QueueConfig {
        capacity_reservations: setup.capacity,
        ack_deadline_ms: u64::try_from(setup.ack_deadline.as_millis()).expect("deadline fits"),
        ..QueueConfig::default()
    }
}

mod in_process_stock {
    use super::*;

    flashsale_service::stock_ledger_conformance!(|| async {
        (Arc::new(InProcessStock::new()) as Arc<dyn StockLedger>, ())
    });
}

mod redb_queue {
    use super::*;

    flashsale_service::reservation_queue_conformance!(|setup: QueueSetup| async move {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = queue_config(&setup);
        let queue = RedbQueue::open(dir.path().join("queue.redb"), config).expect("open queue");
        (Arc::new(queue) as Arc<dyn ReservationQueue>, dir)
    });
}

mod log_queue {
    use super::*;

    flashsale_service::reservation_queue_conformance!(|setup: QueueSetup| async move {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = queue_config(&setup);
        let queue = LogQueue::open(dir.path().join("queue"), config).expect("open queue");
        (Arc::new(queue) as Arc<dyn ReservationQueue>, dir)
    });
}

mod sqlite_store {
    use super::*;

    flashsale_service::order_store_conformance!(|| async {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("orders.sqlite");
        let store = SqliteStore::open(path.to_str().expect("utf-8 path"))
            .await
            .expect("open store");
        (Arc::new(store) as Arc<dyn OrderStore>, dir)
    });
}

mod in_process_line {
    use super::*;

    flashsale_service::waiting_line_conformance!(|| async {
        (Arc::new(InProcessLine::new()) as Arc<dyn WaitingLine>, ())
    });
}

mod durable_line {
    use super::*;

    flashsale_service::waiting_line_conformance!(|| async {
        let dir = tempfile::tempdir().expect("temp dir");
        let line = InProcessLine::open(dir.path().join("line.log")).expect("open line log");
        (Arc::new(line) as Arc<dyn WaitingLine>, dir)
    });
}
