//! The sale service: port traits, their conformance suite, and the logic that runs a sale on
//! top of them — the buy flow, the order writers, the reaper and recovery at start.
//!
//! Nothing here knows HTTP or which backend sits behind a port.

pub mod clock;
pub mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod faults;
pub mod filters;
pub mod layers;
pub mod ports;
pub mod stored;
pub mod ttl_cache;

pub use clock::{ManualClock, SystemClock};
pub use ports::{
    BackendError, BackendResult, Buy, Clock, Enqueued, Holding, LedgerEntry, LineAnswer,
    LineRefused, OpenMode, Opened, OrderCounts, OrderStore, PayOutcome, PendingReservation, Queued,
    ReservationQueue, StockLedger, VoidOutcome, WaitingLine,
};
pub mod shop;
pub mod writers;

pub use filters::FilterConfig;
pub use layers::{Layer, LayerCounts, NodeOutcome};
pub use shop::{
    AdminError, Backends, BuyOutcome, CHALLENGE_EXPIRES_SECS, ClusterConfig, Design, JoinSolution,
    LOG_PAGE_DEFAULT, LOG_PAGE_RECORDS_MAX, LineChallenge, LineMe, LineOutcome, LineStatus,
    LogHeader, LogOutcome, LogPart, LogRecords, OrderView, OrderViewStatus, PayAnswer,
    ReaperConfig, Receipt, ReservationConfig, SaleCounters, SaleStatus, SaleView, ServiceError,
    Shop, ShopConfig,
};
pub use writers::{WriterConfig, WriterPool};
