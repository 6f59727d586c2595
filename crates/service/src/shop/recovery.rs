//! Recovery: what is durable (orders in the store plus reservations still in the queue), and
//! opening each sale's stock ledger from it, at start and after an admin change of its rules.

use super::{ServiceError, Shop};
use crate::faults;
use crate::ports::{Holding, OpenMode, Opened};
use flashsale_core::{BuyerId, OrderId, Sale, SaleId};
use std::collections::{HashMap, HashSet};

impl Shop {
    /// At start (`Shop::open`): installs every stored sale and opens its stock ledger from
    /// the durable holdings; a queued reservation of a sale the store does not know is
    /// corruption, and the shop refuses to open.
    pub(super) async fn recover(&self) -> Result<(), ServiceError> {
        let sales = self.backends.store.list_sales().await?;
        let ids: Vec<SaleId> = sales.iter().map(|s| s.id).collect();
        let mut holdings = self.durable_holdings(&ids).await?;
        for sale in sales {
            let holdings = holdings.remove(&sale.id).unwrap_or_default();
            let known: Vec<(OrderId, BuyerId)> = holdings
                .iter()
                .map(|h| (h.order_id, h.buyer.clone()))
                .collect();
            faults::point("recovery.before_open_ledger", faults::Happened::No).await?;
            // IfAbsent: on shared backends other nodes may be selling from this ledger now.
            self.open_ledger(&sale, holdings, OpenMode::IfAbsent)
                .await?;
            if let Some(slot) = self.table.get(sale.id) {
                slot.shared
                    .remember_accepted(known.iter().map(|(order, buyer)| (*order, buyer)));
            }
            self.set_up_line(&sale, false).await?;
        }
        if !holdings.is_empty() {
            return Err(ServiceError::Corrupt(format!(
                "the queue holds reservations for {} unknown sale(s)",
                holdings.len()
            )));
        }
        Ok(())
    }

    /// Every durable holding of these sales: orders in the store plus reservations still in
    /// the queue (the rest of the queue's sales stay in the map, so the caller can tell). The
    /// queue is read first: a reservation a writer moves in between is then found in the
    /// store, never missed.
    ///
    /// Once an order is in the store, the store's status wins over the queue: a reservation
    /// stays queued after its order was written when the writer died (or lost its ack)
    /// before acking, and that order may since have expired and its unit been sold again.
    /// Counting it live would hold the unit twice (found by the simulation, seed 90: the
    /// restart then refused to open, "6 live reservations for a stock of 5").
    pub(super) async fn durable_holdings(
        &self,
        sales: &[SaleId],
    ) -> Result<HashMap<SaleId, Vec<Holding>>, ServiceError> {
        let mut holdings: HashMap<SaleId, Vec<Holding>> = HashMap::new();
        for queued in self.backends.queue.all_queued().await? {
            let r = queued.reservation;
            holdings.entry(r.sale_id).or_default().push(Holding {
                order_id: r.order_id,
                buyer: r.buyer,
                live: true,
                batch: Some(queued.batch),
            });
        }
        for &sale in sales {
            let stored = self.backends.store.holdings(sale).await?;
            let written: HashSet<OrderId> = stored.iter().map(|h| h.order_id).collect();
            let sale_holdings = holdings.entry(sale).or_default();
            sale_holdings.retain(|h| !written.contains(&h.order_id));
            sale_holdings.extend(stored);
        }
        Ok(holdings)
    }

    pub(super) async fn open_ledger(
        &self,
        sale: &Sale,
        holdings: Vec<Holding>,
        mode: OpenMode,
    ) -> Result<(), ServiceError> {
        let stock = &self.backends.stock;
        let opened = stock
            .open_sale(
                sale.id,
                sale.spec.stock,
                sale.spec.per_buyer_limit,
                holdings,
                mode,
            )
            .await?;
        if opened == Opened::AlreadyOpen {
            tracing::debug!(sale_id = %sale.id, "stock ledger already open; adopted it");
        }
        let available = stock.available(sale.id).await?;
        self.table.install(sale.clone(), available == 0);
        Ok(())
    }
}
