//! The batch: the group commit of the reservation layer (`run_batcher`) and one batch's run in
//! steps — reserve, sort the outcomes, make durable, answer — guarded by `PendingUnits`.

use super::table::SaleSlot;
use super::{BuyOutcome, ServiceError, Shop};
use crate::config::ReservationConfig;
use crate::faults;
use crate::layers::{Layer, NodeOutcome};
use crate::ports::{Buy, Enqueued, StockLedger};
use flashsale_core::{
    BatchId, BuyerId, OrderId, Reservation, ReservationState, ReserveOutcome, SaleId,
};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// One buy waiting for its batch: the reservation it would become, and where its answer goes.
pub(super) struct BuyRequest {
    pub(super) slot: Arc<SaleSlot>,
    pub(super) reservation: Reservation,
    pub(super) answer: oneshot::Sender<Result<BuyOutcome, ServiceError>>,
}

impl BuyRequest {
    fn answer(self, outcome: Result<BuyOutcome, ServiceError>) {
        // A caller that went away (hung up, timed out) needs no answer; the batch went on.
        let _ = self.answer.send(outcome);
    }
}

fn answer_all(requests: Vec<BuyRequest>, outcome: Result<BuyOutcome, ServiceError>) {
    for request in requests {
        request.answer(outcome.clone());
    }
}

/// Units taken for a batch that is not durable yet. Dropped while still armed (an early
/// return, a panic), it gives the units back from a task of its own; `keep` disarms it once
/// the enqueue starts, whose outcome decides.
struct PendingUnits {
    stock: Arc<dyn StockLedger>,
    slot: Arc<SaleSlot>,
    orders: Vec<OrderId>,
    armed: bool,
}

impl PendingUnits {
    fn new(stock: Arc<dyn StockLedger>, slot: Arc<SaleSlot>, orders: Vec<OrderId>) -> Self {
        Self {
            stock,
            slot,
            orders,
            armed: true,
        }
    }

    fn keep(&mut self) {
        self.armed = false;
    }

    /// The reservations surely did not become durable: the units go back now.
    async fn give_back(mut self) {
        self.armed = false;
        give_back(&*self.stock, &self.slot, &self.orders).await;
    }
}

impl Drop for PendingUnits {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (stock, slot) = (self.stock.clone(), self.slot.clone());
        let orders = std::mem::take(&mut self.orders);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { give_back(&*stock, &slot, &orders).await });
            }
            Err(_) => {
                tracing::error!(
                    units = orders.len(),
                    "no runtime to give units back; they stay taken until rebuild"
                )
            }
        }
    }
}

async fn give_back(stock: &dyn StockLedger, slot: &SaleSlot, orders: &[OrderId]) {
    match stock.cancel_pending(slot.sale.id, orders).await {
        Ok(()) => slot.set_sold_out(false),
        Err(error) => {
            tracing::error!(%error, units = orders.len(), "could not give back units; they stay taken until the reconciler or a rebuild")
        }
    }
}

/// How the enqueue of a batch's reserved buys ended.
enum Durability {
    /// The queue holds the batch: each buyer gets a 202.
    Durable,
    /// Not durable (or not known to be): every buyer of the batch gets this answer.
    Refused(Result<BuyOutcome, ServiceError>),
}

impl Shop {
    /// Takes a unit for each buy of the batch (one ledger call), makes the reserved ones
    /// durable together (one enqueue), and answers each buyer; then confirms them. Every buy
    /// of the batch is of one sale. The classic design runs this with one buy per batch.
    ///
    /// The order matters: the 202s go out only after the enqueue said `Durable`, and the
    /// confirm after the 202s, off the buyers' wait. A confirm that never happens (the node
    /// died) leaves the reservations pending in a durable batch, which the reconciler (or a
    /// retry of the request) finds and confirms.
    pub(super) async fn run_batch(self: Arc<Self>, batch: BatchId, requests: Vec<BuyRequest>) {
        let Some(first) = requests.first() else {
            return;
        };
        let slot = first.slot.clone();
        // The ledger call, the enqueue and the confirm all name one sale: a buy of another
        // sale in the batch would take a unit of the wrong sale. A scan, so debug builds only.
        debug_assert!(
            requests.iter().all(|r| r.slot.sale.id == slot.sale.id),
            "a batch holds buys of one sale only (batch {batch}, sale {})",
            slot.sale.id
        );
        let outcomes = match self.reserve_batch(&slot, batch, &requests).await {
            Ok(outcomes) => outcomes,
            Err(error) => return answer_all(requests, Err(error)),
        };
        let reserved = self.sort_outcomes(requests, outcomes);
        if reserved.is_empty() {
            return;
        }
        match self.make_durable(&slot, batch, &reserved).await {
            Durability::Durable => self.accept(&slot, batch, reserved).await,
            Durability::Refused(answer) => answer_all(reserved, answer),
        }
    }

    /// Step one: one ledger call takes a unit for each buy it can, an outcome per buy in
    /// request order.
    async fn reserve_batch(
        &self,
        slot: &SaleSlot,
        batch: BatchId,
        requests: &[BuyRequest],
    ) -> Result<Vec<ReserveOutcome>, ServiceError> {
        let (stats, counters) = (&slot.shared.stats, &self.counters);
        faults::point("shop.buy.before_reserve", faults::Happened::No).await?;
        let buys: Vec<Buy> = requests
            .iter()
            .map(|r| Buy {
                order: r.reservation.order_id,
                buyer: r.reservation.buyer.clone(),
            })
            .collect();
        counters.record(stats, Layer::StockCall, buys.len() as u64);
        counters.record(stats, Layer::LedgerCall, 1);
        counters.batch_buys.record(buys.len() as f64);
        // An error is an unknown outcome: some units may be taken, pending in a batch that
        // never reaches the queue; the reconciler (shared backends) or the rebuild at start
        // settles them.
        let outcomes = self
            .backends
            .stock
            .reserve(slot.sale.id, batch, &buys)
            .await?;
        if outcomes.len() != requests.len() {
            return Err(ServiceError::Corrupt(format!(
                "the stock ledger answered {} of {} buys",
                outcomes.len(),
                requests.len()
            )));
        }
        Ok(outcomes)
    }

    /// Step two: answers every buy that took no unit and returns the ones that did, which
    /// wait for the enqueue.
    fn sort_outcomes(
        self: &Arc<Self>,
        requests: Vec<BuyRequest>,
        outcomes: Vec<ReserveOutcome>,
    ) -> Vec<BuyRequest> {
        // Checked by `reserve_batch`; a zip over unequal lengths would leave buyers unanswered.
        assert_eq!(
            requests.len(),
            outcomes.len(),
            "a batch's outcomes match its requests one to one"
        );
        let counters = &self.counters;
        let mut reserved = Vec::new();
        for (request, outcome) in requests.into_iter().zip(outcomes) {
            let order_id = request.reservation.order_id;
            let stats = &request.slot.shared.stats;
            match outcome {
                ReserveOutcome::Reserved => {
                    counters.record(stats, Layer::Reserved, 1);
                    reserved.push(request);
                }
                ReserveOutcome::Duplicate(ReservationState::Pending) => {
                    // Asks the queue and the store: off the batch's path, it is rare.
                    let shop = Arc::clone(self);
                    tokio::spawn(async move {
                        let answer = shop
                            .answer_pending_duplicate(
                                &request.slot,
                                order_id,
                                &request.reservation.buyer,
                            )
                            .await;
                        request.answer(answer);
                    });
                }
                ReserveOutcome::Duplicate(_) => {
                    counters.record(stats, Layer::Duplicate, 1);
                    request.answer(Ok(BuyOutcome::Accepted {
                        order_id,
                        replay: true,
                    }));
                }
                ReserveOutcome::SoldOut => {
                    counters.record(stats, Layer::SoldOut, 1);
                    request.slot.set_sold_out(true);
                    request.answer(Ok(BuyOutcome::SoldOut));
                }
                ReserveOutcome::LimitReached => {
                    counters.record(stats, Layer::LimitReached, 1);
                    request.answer(Ok(BuyOutcome::LimitReached));
                }
            }
        }
        // The ledger takes a unit once per order id (a repeat is a `Duplicate`); one taken
        // twice would be enqueued, confirmed and sold twice. A scan, so debug builds only.
        debug_assert!(
            {
                let mut seen = HashSet::new();
                reserved.iter().all(|r| seen.insert(r.reservation.order_id))
            },
            "the stock ledger reserved one order id twice in a batch"
        );
        reserved
    }

    /// Step three: one enqueue makes the reserved buys durable together. Whatever is surely
    /// not durable gives its units back; an unknown outcome keeps them.
    async fn make_durable(
        &self,
        slot: &Arc<SaleSlot>,
        batch: BatchId,
        reserved: &[BuyRequest],
    ) -> Durability {
        let (stats, counters) = (&slot.shared.stats, &self.counters);
        let stock = &self.backends.stock;
        let orders: Vec<OrderId> = reserved.iter().map(|r| r.reservation.order_id).collect();
        // Until the enqueue starts nothing durable exists, so an early return or a panic gives
        // the units back.
        let mut units = PendingUnits::new(stock.clone(), slot.clone(), orders.clone());
        if let Err(error) = faults::point("shop.buy.after_reserve", faults::Happened::No).await {
            units.give_back().await;
            return Durability::Refused(Err(error.into()));
        }
        let reservations: Vec<Reservation> =
            reserved.iter().map(|r| r.reservation.clone()).collect();
        // From here a panic is an unknown outcome: the units stay taken (see below).
        units.keep();
        match self.backends.queue.enqueue(batch, reservations).await {
            Ok(Enqueued::Durable) => {
                match faults::point("shop.buy.after_enqueue", faults::Happened::Yes).await {
                    Ok(()) => Durability::Durable,
                    Err(error) => Durability::Refused(Err(error.into())),
                }
            }
            Ok(Enqueued::Full) => {
                counters.record(stats, Layer::QueueFull, reserved.len() as u64);
                give_back(&**stock, slot, &orders).await;
                Durability::Refused(Ok(BuyOutcome::Overloaded))
            }
            Err(error) if error.outcome_known => {
                counters.node(NodeOutcome::QueueFailed, reserved.len() as u64);
                tracing::warn!(%error, "durable queue refused a batch");
                give_back(&**stock, slot, &orders).await;
                Durability::Refused(Ok(BuyOutcome::Overloaded))
            }
            Err(error) => {
                counters.node(NodeOutcome::QueueFailed, reserved.len() as u64);
                // The batch may be durable after all. Keeping the units taken can strand them
                // until the reconciler or the next rebuild, but giving them back could
                // oversell. If it is durable its orders' expiry returns the units.
                tracing::error!(%error, units = orders.len(), "durable queue outcome unknown; units held");
                Durability::Refused(Ok(BuyOutcome::Overloaded))
            }
        }
    }

    /// Step four: the batch is durable; each buyer hears 202, then the ledger marks the
    /// reservations confirmed.
    async fn accept(&self, slot: &SaleSlot, batch: BatchId, reserved: Vec<BuyRequest>) {
        slot.shared.remember_accepted(
            reserved
                .iter()
                .map(|r| (r.reservation.order_id, &r.reservation.buyer)),
        );
        self.counters
            .record(&slot.shared.stats, Layer::Queued, reserved.len() as u64);
        self.writers.heat().note();
        let orders: Vec<OrderId> = reserved.iter().map(|r| r.reservation.order_id).collect();
        for request in reserved {
            let order_id = request.reservation.order_id;
            request.answer(Ok(BuyOutcome::Accepted {
                order_id,
                replay: false,
            }));
        }
        if let Err(error) = self
            .backends
            .stock
            .confirm(slot.sale.id, batch, &orders)
            .await
        {
            // The reservations are durable and will become orders. Ledger entries left
            // pending are still returned on expiry, a retry of such a request finds its batch
            // (`answer_pending_duplicate`), and the reconciler confirms them.
            tracing::warn!(%error, units = orders.len(), "could not mark durable reservations confirmed");
        }
    }

    /// A retry found its order id pending: the first attempt is in flight, or it ended with
    /// an unknown outcome. If the reservation is in the queue or the store it is durable
    /// after all, and the buyer gets the 202 the first attempt could not give.
    async fn answer_pending_duplicate(
        &self,
        slot: &SaleSlot,
        order_id: OrderId,
        buyer: &BuyerId,
    ) -> Result<BuyOutcome, ServiceError> {
        let batch = self
            .backends
            .stock
            .entry(slot.sale.id, order_id)
            .await?
            .and_then(|entry| entry.batch);
        let Some(batch) = batch else {
            self.counters.node(NodeOutcome::InProgress, 1);
            return Ok(BuyOutcome::InProgress);
        };
        if !self.is_durable(batch, order_id).await? {
            self.counters.node(NodeOutcome::InProgress, 1);
            return Ok(BuyOutcome::InProgress);
        }
        let stock = &self.backends.stock;
        if let Err(error) = stock.confirm(slot.sale.id, batch, &[order_id]).await {
            tracing::warn!(%error, %order_id, "could not mark a durable reservation confirmed");
        }
        slot.shared.remember_accepted([(order_id, buyer)]);
        self.counters
            .record(&slot.shared.stats, Layer::Duplicate, 1);
        Ok(BuyOutcome::Accepted {
            order_id,
            replay: true,
        })
    }
}

/// Buys that may wait for a batch before new ones are refused (503): enough to fill every
/// batch in flight twice over.
pub(super) fn batcher_waiting_max(config: &ReservationConfig) -> usize {
    config.batch_max.get() * config.batches_in_flight_max.get() * 2
}

/// The group commit of the reservation layer: gathers the buys waiting when a batch slot is
/// free (at most `batch_max`, of one sale each) and runs them as one batch. While
/// `batches_in_flight_max` batches run, new buys wait and join the next one, so batches grow
/// with the load and a buy at a quiet moment runs alone at once. Ends when the shop is dropped.
pub(super) async fn run_batcher(
    shop: Weak<Shop>,
    mut waiting: mpsc::Receiver<BuyRequest>,
    config: ReservationConfig,
) {
    let slots = Arc::new(Semaphore::new(config.batches_in_flight_max.get()));
    let batch_max = config.batch_max.get();
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = waiting.recv().await else {
            return;
        };
        let mut gathered = vec![first];
        while gathered.len() < batch_max {
            match waiting.try_recv() {
                Ok(request) => gathered.push(request),
                Err(_) => break,
            }
        }
        let Some(shop) = shop.upgrade() else {
            return;
        };
        let mut by_sale: HashMap<SaleId, Vec<BuyRequest>> = HashMap::new();
        for request in gathered {
            by_sale
                .entry(request.slot.sale.id)
                .or_default()
                .push(request);
        }
        let mut first_permit = Some(permit);
        for (_, requests) in by_sale {
            let permit = match first_permit.take() {
                Some(permit) => permit,
                // A second sale in the same gathering needs a slot of its own.
                None => match slots.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let shop = shop.clone();
            let batch = BatchId::new_v7(shop.now());
            tokio::spawn(async move {
                // A panic inside costs this batch (its callers hear "ended without an answer";
                // its units are as after a crash), never the batcher.
                shop.run_batch(batch, requests).await;
                drop(permit);
            });
        }
    }
}
