//! A seeded, deterministic simulation of the whole service logic: `flashsale_service::Shop`
//! (buy flow, order writers, reaper, recovery) driven through its public API over in-memory
//! models of the ports, with faults drawn per seed, on a paused tokio clock and one thread.
//!
//! Each seed runs a **safety phase** (faults on; the invariants checked after every step) and a
//! **convergence phase** (faults off; the queue drains, the reaper runs, a last restart
//! rebuilds the ledger, the counters agree). A failing seed prints itself and replays exactly.
//!
//! Two **canaries** (`Variant::CheckThenActReserve`, `Variant::BlindExpiry`) break the models
//! on purpose; the tests assert the checker catches each within 100 seeds.

pub mod clock;
pub mod faults;
pub mod queue;
pub mod rng;
pub mod stock;
pub mod store;
pub mod trace;

mod check;
mod world;

pub use world::{SeedReport, Stats, Variant, run_seed};
