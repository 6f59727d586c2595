//! The invariants, checked on the models' state and on what clients were told, by the one
//! checker every test shares (`flashsale_core::invariants`): never oversell, never lose an
//! acknowledged order, never invent or duplicate one, hold the per-buyer limit, keep paid
//! orders paid, give a unit back only for a dead order, and once quiet, account for every
//! unit exactly. What only the simulation sees (its wrong answers, the sale an order names)
//! is checked here, beside the call.

use crate::world::World;
use flashsale_core::invariants::{
    self, Acknowledged, AnsweredPaid, Counted, Observation, SeenOrder, SeenReservation,
};
use flashsale_core::{BuyerId, OrderId, ReservationState};
use flashsale_service::Clock;

/// What the models hold and what the clients were told, as the shared checker reads it. The
/// model is stepped on one thread, so the ledger's count is read while nothing moves.
fn observe(world: &World) -> Result<Observation<OrderId, BuyerId>, String> {
    let sale = world
        .store
        .sale_now(world.sale.id)
        .ok_or("the sale is gone from the store")?;
    let mut seen = Observation::new(
        u64::from(sale.spec.stock),
        u64::from(sale.spec.per_buyer_limit),
    );
    seen.window = Some((sale.spec.starts_at, sale.spec.ends_at));
    let orders = world.store.orders();
    // The store model holds this one sale only; an order of another is a wrong write.
    if let Some(order) = orders.iter().find(|o| o.sale_id != sale.id) {
        return Err(format!("order {} belongs to an unknown sale", order.id));
    }
    seen.orders = orders.iter().map(SeenOrder::of).collect();
    seen.orders_complete = true;
    seen.queued = world
        .queue
        .queued_ids()
        .into_iter()
        .map(|(id, r)| SeenReservation { id, buyer: r.buyer })
        .collect();
    if let Some(ledger) = world.live_stock().and_then(|s| s.snapshot(sale.id)) {
        seen.available = Some(u64::from(ledger.available));
        seen.returned = ledger
            .reservations
            .iter()
            .filter(|(_, (_, state))| *state == ReservationState::Returned)
            .map(|(id, _)| *id)
            .collect();
    }
    let history = world.history();
    if let Some(wrong) = history.wrong_answers.first() {
        return Err(wrong.clone());
    }
    seen.acknowledged = history
        .accepted
        .iter()
        .map(|(order, buyer)| Acknowledged {
            order: *order,
            buyer: buyer.clone(),
            request: None,
        })
        .collect();
    seen.paid = history
        .paid
        .iter()
        .map(|(order, payment)| AnsweredPaid {
            order: *order,
            payment: Some(payment.to_string()),
        })
        .collect();
    seen.requested = Some(history.requested.clone());
    Ok(seen)
}

fn checked(seen: &Observation<OrderId, BuyerId>) -> Result<(), String> {
    invariants::check(seen).map_err(|violations| invariants::describe(&violations))
}

/// Checked after every step of the safety phase (faults on, requests in flight).
pub(crate) fn safety(world: &World) -> Result<(), String> {
    checked(&observe(world)?)
}

/// Once the queue drained: every acknowledged order is an order in the store (the queue is
/// left out of the observation, so a 202 found only there counts as lost).
pub(crate) fn all_accepted_written(world: &World) -> Result<(), String> {
    let mut seen = observe(world)?;
    seen.queued.clear();
    checked(&seen).map_err(|e| format!("once drained: {e}"))
}

/// After the reaper ran: nothing still waits for payment past its deadline.
pub(crate) fn nothing_due(world: &World) -> Result<(), String> {
    let mut seen = observe(world)?;
    seen.due_by = Some(world.clock.now());
    checked(&seen)
}

/// Units that neither an order holds nor the ledger offers: taken by an operation whose
/// outcome was unknown, held until the next rebuild (safe; never oversold).
pub(crate) fn stranded_units(world: &World) -> u64 {
    let live = world
        .store
        .orders()
        .iter()
        .filter(|o| o.status.is_live())
        .count() as u64;
    let available = world
        .live_stock()
        .and_then(|s| s.snapshot(world.sale.id))
        .map_or(0, |ledger| u64::from(ledger.available));
    u64::from(world.sale.spec.stock).saturating_sub(live + available)
}

/// After the last restart: quiet, so every unit is accounted for exactly, and the shop's
/// counters say the same as the store and the ledger.
pub(crate) async fn converged(world: &World) -> Result<(), String> {
    let mut seen = observe(world).map_err(|e| format!("after the rebuild: {e}"))?;
    if seen.available.is_none() {
        return Err("no stock ledger after the rebuild".to_owned());
    }
    let shop = world.live_shop().ok_or("no node after the rebuild")?;
    let view = shop
        .sale_view(world.sale.id)
        .await
        .map_err(|e| format!("sale view without faults: {e}"))?;
    let c = view.counters;
    seen.counted = Some(Counted {
        available: u64::from(c.available),
        queued: c.queued,
        pending_payment: c.pending_payment,
        paid: c.paid,
        expired: c.expired,
        cancelled: c.cancelled,
    });
    seen.quiet = true;
    checked(&seen).map_err(|e| format!("after the rebuild: {e}"))
}
