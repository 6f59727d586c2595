//! The pure core of flashsale: sale rules, phases, reservation arithmetic, the order state
//! machine and the tokens that guard the buy path.
//!
//! Nothing here does I/O or reads a clock: every function that depends on time takes `now`.
//! That keeps the rules testable with tables and property tests, and lets the same rules run
//! under a simulated clock.

pub mod ids;
pub mod invariants;
pub mod ledger;
pub mod line;
pub mod line_log;
pub mod order;
pub mod pow;
pub mod sale;
pub mod tokens;

pub use ids::{BatchId, BuyerId, IdempotencyKey, OrderId, PaymentId, SaleId};
pub use ledger::{
    Holding, LedgerEntry, ReservationState, ReserveOutcome, ReturnOutcome, SaleLedger,
};
pub use order::{Order, OrderStatus, PayDecision, Reservation};
pub use sale::{Phase, Sale, SalePatch, SaleSpec, SpecError};
pub use time::OffsetDateTime as Timestamp;
