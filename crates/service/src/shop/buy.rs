//! The buy flow up to the batch: the buy-path check, the filtering layers (client, window,
//! sold-out flag, buyer, sale gate, shedding) and the attempt handed to the batch.

use super::batch::BuyRequest;
use super::table::SaleSlot;
use super::{BuyOutcome, ServiceError, Shop};
use crate::filters::{WindowKey, should_shed};
use crate::layers::{Layer, LayerStats, NodeOutcome};
use crate::ttl_cache::TtlCache;
use flashsale_core::tokens::TicketRefused;
use flashsale_core::{BatchId, BuyerId, IdempotencyKey, OrderId, Reservation, SaleId, Timestamp};
use std::net::IpAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

/// The per-buyer window: (sale, buyer) → the answer a repeat gets.
pub(super) type WindowCache = TtlCache<WindowKey, BuyOutcome>;

impl Shop {
    /// The buy flow: check the path and the phase, pass the filtering layers, take a unit,
    /// make the reservation durable, and only then accept. If it cannot be made durable, the
    /// unit goes back. `client` is the caller's address, for the per-client limiter.
    pub async fn buy(
        self: &Arc<Self>,
        sale_id: SaleId,
        buy_token: &str,
        buyer: &BuyerId,
        key: &IdempotencyKey,
        client: Option<IpAddr>,
    ) -> Result<BuyOutcome, ServiceError> {
        let Some(slot) = self.table.get(sale_id) else {
            self.counters.node(NodeOutcome::UnknownPath, 1);
            return Ok(BuyOutcome::UnknownBuyPath);
        };
        let now = self.now();
        if slot.sale.spec.waiting_room.is_none() {
            if !bool::from(slot.buy_token.as_bytes().ct_eq(buy_token.as_bytes())) {
                self.counters.node(NodeOutcome::UnknownPath, 1);
                return Ok(BuyOutcome::UnknownBuyPath);
            }
            return self.pass_layers(&slot, buyer, key, client, now).await;
        }
        // A sale with a line: the token is this buyer's admission ticket, checked before any
        // filter or unit is touched.
        let admission = match self.check_ticket(&slot, buyer, buy_token, now) {
            Ok(admission) => admission,
            Err(refused) => {
                // A retry of a buy accepted under an admission that has since ended still
                // gets its 202.
                if refused == TicketRefused::Ended
                    && let Some(order_id) = slot.shared.accepted_order(sale_id, buyer, key)
                {
                    return Ok(BuyOutcome::Accepted {
                        order_id,
                        replay: true,
                    });
                }
                self.counters
                    .record(&slot.shared.stats, Layer::NotYourTurn, 1);
                return Ok(BuyOutcome::NotYourTurn);
            }
        };
        let answer = self.pass_layers(&slot, buyer, key, client, now).await?;
        if let BuyOutcome::Accepted { replay: false, .. } = answer {
            // Off the answer's path: the 202 does not wait for the line's round trip, and a
            // buy the line never hears of only holds its position until the admission ends.
            let shop = Arc::clone(self);
            tokio::spawn(async move { shop.line_bought(sale_id, admission.position).await });
        }
        Ok(answer)
    }

    /// The filtering layers and the attempt, once the buy path (or the admission) is valid.
    async fn pass_layers(
        self: &Arc<Self>,
        slot: &Arc<SaleSlot>,
        buyer: &BuyerId,
        key: &IdempotencyKey,
        client: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<BuyOutcome, ServiceError> {
        let sale_id = slot.sale.id;
        let stats = &slot.shared.stats;
        if let Err(retry_after_secs) = self.limiters.check_client(client) {
            self.counters.record(stats, Layer::ClientRateLimited, 1);
            return Ok(BuyOutcome::RateLimited { retry_after_secs });
        }
        if !slot.sale.is_open(now) {
            self.counters.node(NodeOutcome::NotLive, 1);
            return Ok(BuyOutcome::NotLive);
        }
        let Some(window) = &self.window else {
            return self.attempt(slot, buyer, key, now).await;
        };
        if slot.is_sold_out() {
            // After the sell-out nobody new can win. Most of a spike arrives now: answer it
            // without inserting into the window (an insert costs more than this whole answer),
            // but a buyer already in the window still gets the answer kept there.
            if let Some(kept) = window.get(&(sale_id, buyer.clone())) {
                self.count_window_hit(stats);
                return Ok(kept);
            }
            return Ok(self.answer_sold_out(slot, buyer, key));
        }
        // Concurrent repeats by one buyer wait for the one attempt in flight and share its
        // answer; later repeats within the window get it from memory. Errors are not kept.
        let (answer, fresh) = window
            .get_or_try_insert_with(
                &(sale_id, buyer.clone()),
                self.attempt(slot, buyer, key, now),
            )
            .await?;
        if !fresh {
            self.count_window_hit(stats);
        }
        Ok(answer)
    }

    fn count_window_hit(&self, stats: &LayerStats) {
        self.counters.record(stats, Layer::WindowHit, 1);
    }

    /// The answer once the sale's sold-out flag is up, without a ledger call: a replay of an
    /// order this node accepted is still that order; anything else is sold out.
    fn answer_sold_out(
        &self,
        slot: &SaleSlot,
        buyer: &BuyerId,
        key: &IdempotencyKey,
    ) -> BuyOutcome {
        if let Some(order_id) = slot.shared.accepted_order(slot.sale.id, buyer, key) {
            return BuyOutcome::Accepted {
                order_id,
                replay: true,
            };
        }
        self.counters
            .record(&slot.shared.stats, Layer::SoldOutShortCircuit, 1);
        BuyOutcome::SoldOut
    }

    /// One real attempt, behind the window cache. The order id is derived here, not before the
    /// window: most of a spike is answered by the window and never needs it.
    async fn attempt(
        self: &Arc<Self>,
        slot: &Arc<SaleSlot>,
        buyer: &BuyerId,
        key: &IdempotencyKey,
        now: Timestamp,
    ) -> Result<BuyOutcome, ServiceError> {
        let (stats, counters) = (&slot.shared.stats, &self.counters);
        let sale_id = slot.sale.id;
        if slot.is_sold_out() {
            return Ok(self.answer_sold_out(slot, buyer, key));
        }
        let order_id = OrderId::derive(sale_id, buyer, key);
        if let Err(retry_after_secs) = self.limiters.check_buyer(buyer) {
            counters.record(stats, Layer::BuyerRateLimited, 1);
            return Ok(BuyOutcome::RateLimited { retry_after_secs });
        }
        if let Err(retry_after_secs) = slot.gate.check() {
            counters.record(stats, Layer::SaleRateLimited, 1);
            return Ok(BuyOutcome::RateLimited { retry_after_secs });
        }
        let queue = &self.backends.queue;
        let shed_start = self.config.filters.shed_queue_fill_percent_start;
        if should_shed(queue.depth(), queue.capacity(), shed_start, order_id) {
            counters.record(stats, Layer::Shed, 1);
            return Ok(BuyOutcome::Overloaded);
        }
        // From here the attempt is out of the caller's hands. A caller that goes away (the
        // client hung up, the request timed out) drops its future, and stopping between taking
        // a unit and hearing from the queue would strand the unit, or leave a durable
        // reservation unconfirmed: so the batch (a task of its own) owns the attempt, and the
        // caller only waits for the answer.
        let reservation = Reservation::new(
            order_id,
            sale_id,
            buyer.clone(),
            now,
            slot.sale.spec.payment_window_secs,
        );
        let (answer, answered) = oneshot::channel();
        let request = BuyRequest {
            slot: slot.clone(),
            reservation,
            answer,
        };
        match &self.batcher {
            Some(batcher) => {
                if batcher.try_send(request).is_err() {
                    // More buys wait for a batch than batches can take in time: fail fast.
                    counters.record(stats, Layer::Shed, 1);
                    return Ok(BuyOutcome::Overloaded);
                }
            }
            None => {
                let shop = Arc::clone(self);
                let batch = BatchId::of_order(order_id);
                tokio::spawn(async move { shop.run_batch(batch, vec![request]).await });
            }
        }
        answered.await.unwrap_or_else(|_| {
            // The batch task ended without answering: it panicked, or the shop shut down.
            tracing::error!(%order_id, "a buy attempt ended without an answer");
            Err(ServiceError::Internal(
                "a buy attempt ended without an answer".into(),
            ))
        })
    }
}
