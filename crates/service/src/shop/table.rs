//! The sale table: this node's sales as the hot path sees them, their sold-out flags and the
//! orders accepted here, behind one lock whose poison handling lives in one place.

use super::line::LineCache;
use crate::filters::{FilterConfig, SaleGate};
use crate::layers::LayerStats;
use flashsale_core::tokens::BuyPathSigner;
use flashsale_core::{BuyerId, IdempotencyKey, OrderId, Sale, SaleId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Every sale this node knows, by id. Read on every request, written only by admin changes,
/// the sync pass and recovery.
pub(super) struct SaleTable {
    // A std RwLock: never held across an await, and a panic while holding it cannot leave
    // the map half-written (each write is one insert), so a poisoned lock is still read.
    sales: RwLock<HashMap<SaleId, Arc<SaleSlot>>>,
    signer: BuyPathSigner,
    filters: FilterConfig,
}

impl SaleTable {
    pub(super) fn new(signer: BuyPathSigner, filters: FilterConfig) -> Self {
        Self {
            sales: RwLock::new(HashMap::new()),
            signer,
            filters,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<SaleId, Arc<SaleSlot>>> {
        self.sales.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<SaleId, Arc<SaleSlot>>> {
        self.sales.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn get(&self, id: SaleId) -> Option<Arc<SaleSlot>> {
        self.read().get(&id).cloned()
    }

    /// The sales this node knows, in no particular order.
    pub(super) fn ids(&self) -> Vec<SaleId> {
        self.read().keys().copied().collect()
    }

    /// Every slot, in no particular order.
    pub(super) fn slots(&self) -> Vec<Arc<SaleSlot>> {
        self.read().values().cloned().collect()
    }

    /// Puts this version of the sale in place of the one before (a fresh buy token and
    /// admission bucket; the counters and accepted orders carry over).
    pub(super) fn install(&self, sale: Sale, sold_out: bool) {
        let buy_token = self.signer.token(sale.id, sale.spec.starts_at);
        let gate = SaleGate::new(&self.filters, sale.spec.stock);
        let mut sales = self.write();
        let shared = match sales.get(&sale.id) {
            Some(old) => {
                // Every writer installs under the admin lock and only a newer (or the same)
                // version: an older one would undo an admin change on the hot path.
                assert!(
                    old.sale.version <= sale.version,
                    "sale {} installed at version {} over version {}",
                    sale.id,
                    sale.version,
                    old.sale.version
                );
                old.shared.clone()
            }
            None => Arc::default(),
        };
        let slot = SaleSlot {
            buy_token,
            sold_out: AtomicBool::new(sold_out),
            gate,
            shared,
            sale,
        };
        sales.insert(slot.sale.id, Arc::new(slot));
    }

    /// A unit of the sale came back (returned, given back, or found by the sync pass): it may
    /// sell again, so the sold-out flag goes down.
    pub(super) fn units_came_back(&self, id: SaleId) {
        if let Some(slot) = self.get(id) {
            slot.set_sold_out(false);
        }
    }

    pub(super) fn is_sold_out(&self, id: SaleId) -> bool {
        self.get(id).is_some_and(|slot| slot.is_sold_out())
    }
}

/// One sale as the hot path sees it; replaced on every admin change.
pub(super) struct SaleSlot {
    pub(super) sale: Sale,
    /// The buy-path token for the current schedule, derived once per version.
    pub(super) buy_token: String,
    /// Set when a reservation found no stock; cleared when a unit comes back. Read without a
    /// lock by every buy once the sale is sold out.
    sold_out: AtomicBool,
    /// The admission bucket, sized from this version's stock.
    pub(super) gate: SaleGate,
    pub(super) shared: Arc<SaleShared>,
}

impl SaleSlot {
    pub(super) fn is_sold_out(&self) -> bool {
        self.sold_out.load(Ordering::Relaxed)
    }

    pub(super) fn set_sold_out(&self, sold_out: bool) {
        self.sold_out.store(sold_out, Ordering::Relaxed);
    }
}

/// What outlives a sale's versions on this node.
#[derive(Default)]
pub(super) struct SaleShared {
    pub(super) stats: LayerStats,
    /// This node's copy of the sale's line (see `line.rs`).
    pub(super) line: LineCache,
    /// Set once the sale's line was found gone from its backend.
    pub(super) line_lost: AtomicBool,
    /// Orders accepted here (or restored at start), so a retry of an accepted request is
    /// answered 202 even after the sold-out flag stops calls to the ledger. Bounded by the
    /// units sold. Read by every refusal after the sell-out, written once per accept: a
    /// read-write lock, so the refusals never queue behind each other.
    accepted: RwLock<Accepted>,
}

#[derive(Default)]
struct Accepted {
    orders: HashSet<OrderId>,
    /// Their buyers: after the sell-out most requests come from buyers who never won, and
    /// looking up the buyer spares them deriving an order id (a SHA-256) to look up.
    buyers: HashSet<BuyerId>,
}

impl SaleShared {
    /// The order id of this request if it is one this node accepted.
    pub(super) fn accepted_order(
        &self,
        sale: SaleId,
        buyer: &BuyerId,
        key: &IdempotencyKey,
    ) -> Option<OrderId> {
        let accepted = self.accepted.read().unwrap_or_else(|e| e.into_inner());
        if !accepted.buyers.contains(buyer) {
            return None;
        }
        let order = OrderId::derive(sale, buyer, key);
        accepted.orders.contains(&order).then_some(order)
    }

    pub(super) fn remember_accepted<'a>(
        &self,
        orders: impl IntoIterator<Item = (OrderId, &'a BuyerId)>,
    ) {
        let mut accepted = self.accepted.write().unwrap_or_else(|e| e.into_inner());
        for (order, buyer) in orders {
            accepted.orders.insert(order);
            if !accepted.buyers.contains(buyer) {
                accepted.buyers.insert(buyer.clone());
            }
        }
    }
}
