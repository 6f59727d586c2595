//! The simulation's port models, in their correct modes, pass the same conformance suites as
//! the real backends: a bug the simulation finds is then a bug of the service, not of a model
//! that drifted from the contract. (The queue model keeps its deadlines on the simulated clock,
//! so it is checked by the simulation's own invariants instead.)

use flashsale_service::{OrderStore, StockLedger};
use flashsale_sim::stock::{ReserveMode, SimStock};
use flashsale_sim::store::{ExpiryMode, SimStore};
use std::sync::Arc;

mod sim_stock {
    use super::*;

    flashsale_service::stock_ledger_conformance!(|| async {
        (
            Arc::new(SimStock::new(ReserveMode::Atomic)) as Arc<dyn StockLedger>,
            (),
        )
    });
}

mod sim_store {
    use super::*;

    flashsale_service::order_store_conformance!(|| async {
        (
            Arc::new(SimStore::new(ExpiryMode::CompareAndSet)) as Arc<dyn OrderStore>,
            (),
        )
    });
}
