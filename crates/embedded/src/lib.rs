//! Embedded backends, for running flashsale as one process with no outside services: stock in
//! memory (`InProcessStock`), the durable reservation queue in an append-only log (`LogQueue`;
//! `RedbQueue` is the engine before it), the
//! order store in a SQLite file (`SqliteStore`), and the waiting lines in memory made durable by
//! an append-only log (`InProcessLine`). Each implements a port of `flashsale_service` and runs
//! its conformance suite.

mod config;
mod frame;
pub mod line;
pub mod queue;
pub mod stock;
#[cfg(feature = "sqlite")]
pub mod store;

pub use line::{InProcessLine, LineOpenError};
pub use queue::{LogQueue, QueueConfig, QueueEngine, QueueOpenError, RedbQueue};
pub use stock::InProcessStock;
#[cfg(feature = "sqlite")]
pub use store::{SqliteStore, StoreOpenError};

/// What a caught panic said, for the error that replaces it.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}
