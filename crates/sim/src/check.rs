//! The invariants (`../shared/DESIGN.md`), checked on the models' state and on what clients
//! were told: never oversell, never lose an acknowledged order, never invent or duplicate one,
//! hold the per-buyer limit, keep paid orders paid, give a unit back only for a dead order,
//! and once quiet, account for every unit exactly.

use crate::world::World;
use flashsale_core::{BuyerId, Order, OrderId, OrderStatus, ReservationState};
use flashsale_service::Clock;
use std::collections::{BTreeMap, BTreeSet};

/// Checked after every step of the safety phase (faults on, requests in flight).
pub(crate) fn safety(world: &World) -> Result<(), String> {
    let sale = world
        .store
        .sale_now(world.sale.id)
        .ok_or("the sale is gone from the store")?;
    let stock = sale.spec.stock as usize;
    let orders: BTreeMap<OrderId, Order> = world
        .store
        .orders()
        .into_iter()
        .map(|o| (o.id, o))
        .collect();
    let queued: BTreeMap<OrderId, BuyerId> = world
        .queue
        .queued_ids()
        .into_iter()
        .map(|(id, r)| (id, r.buyer))
        .collect();
    // An order holds a unit while it is pending payment or paid, and a reservation does
    // while it is queued and not yet written.
    let mut live: BTreeMap<OrderId, &BuyerId> = orders
        .values()
        .filter(|o| o.status.is_live())
        .map(|o| (o.id, &o.buyer))
        .collect();
    for (id, buyer) in &queued {
        if !orders.contains_key(id) {
            live.insert(*id, buyer);
        }
    }
    if live.len() > stock {
        return Err(format!(
            "oversold: {} live orders for a stock of {stock}",
            live.len()
        ));
    }
    if let Some(ledger) = world.live_stock().and_then(|s| s.snapshot(sale.id)) {
        if ledger.available as usize + live.len() > stock {
            return Err(format!(
                "oversold: {} units still on sale while {} orders hold units, stock {stock}",
                ledger.available,
                live.len()
            ));
        }
        for (id, (_, state)) in &ledger.reservations {
            if *state == ReservationState::Returned && live.contains_key(id) {
                return Err(format!("the unit of live order {id} was given back"));
            }
        }
    }
    let mut per_buyer: BTreeMap<&BuyerId, u32> = BTreeMap::new();
    for buyer in live.values() {
        *per_buyer.entry(buyer).or_default() += 1;
    }
    if let Some((buyer, held)) = per_buyer
        .iter()
        .find(|(_, held)| **held > sale.spec.per_buyer_limit)
    {
        return Err(format!(
            "buyer {buyer} holds {held} live orders, over the limit of {}",
            sale.spec.per_buyer_limit
        ));
    }
    let history = world.history();
    if let Some(wrong) = history.wrong_answers.first() {
        return Err(wrong.clone());
    }
    for id in history.accepted.keys() {
        if !orders.contains_key(id) && !queued.contains_key(id) {
            return Err(format!(
                "acknowledged order {id} is lost: in neither the queue nor the store"
            ));
        }
    }
    let known: BTreeSet<&OrderId> = orders.keys().chain(queued.keys()).collect();
    if let Some(id) = known.iter().find(|id| !history.requested.contains(id)) {
        return Err(format!("order {id} exists but nobody asked for it"));
    }
    for order in orders.values() {
        if order.sale_id != sale.id {
            return Err(format!("order {} belongs to an unknown sale", order.id));
        }
        if order.reserved_at < sale.spec.starts_at || order.reserved_at >= sale.spec.ends_at {
            return Err(format!(
                "order {} was reserved at {}, outside the sale ({} to {})",
                order.id, order.reserved_at, sale.spec.starts_at, sale.spec.ends_at
            ));
        }
    }
    for (id, payment) in &history.paid {
        match orders.get(id) {
            Some(o) if o.status == OrderStatus::Paid && o.payment_id.as_ref() == Some(payment) => {}
            Some(o) => {
                return Err(format!(
                    "order {id} was answered paid by {payment} but is now {} (payment {:?})",
                    o.status.as_str(),
                    o.payment_id
                ));
            }
            None => return Err(format!("order {id} was answered paid but is not stored")),
        }
    }
    Ok(())
}

/// Once the queue drained: every acknowledged order is an order in the store.
pub(crate) fn all_accepted_written(world: &World) -> Result<(), String> {
    let stored: BTreeSet<OrderId> = world.store.orders().iter().map(|o| o.id).collect();
    let history = world.history();
    match history.accepted.keys().find(|id| !stored.contains(id)) {
        Some(id) => Err(format!(
            "acknowledged order {id} was never written to the store"
        )),
        None => Ok(()),
    }
}

/// After the reaper ran: nothing still waits for payment past its deadline.
pub(crate) fn nothing_due(world: &World) -> Result<(), String> {
    let now = world.clock.now();
    match world
        .store
        .orders()
        .into_iter()
        .find(|o| o.is_due_for_expiry(now))
    {
        Some(order) => Err(format!(
            "order {} is still pending payment {} after its deadline, after the reaper ran",
            order.id,
            now - order.expires_at
        )),
        None => Ok(()),
    }
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

/// After the last restart: every unit is accounted for exactly, and the shop's counters say
/// the same as the store.
pub(crate) async fn converged(world: &World) -> Result<(), String> {
    safety(world).map_err(|e| format!("after the rebuild: {e}"))?;
    let stock = u64::from(world.sale.spec.stock);
    let orders = world.store.orders();
    let count = |status: OrderStatus| orders.iter().filter(|o| o.status == status).count() as u64;
    let (pending, paid, expired) = (
        count(OrderStatus::PendingPayment),
        count(OrderStatus::Paid),
        count(OrderStatus::Expired),
    );
    let available = world
        .live_stock()
        .and_then(|s| s.snapshot(world.sale.id))
        .map(|ledger| u64::from(ledger.available))
        .ok_or("no stock ledger after the rebuild")?;
    if available + pending + paid != stock {
        return Err(format!(
            "after the rebuild {available} available + {pending} pending + {paid} paid != stock {stock}"
        ));
    }
    let shop = world.live_shop().ok_or("no node after the rebuild")?;
    let view = shop
        .sale_view(world.sale.id)
        .await
        .map_err(|e| format!("sale view without faults: {e}"))?;
    let c = view.counters;
    if (
        u64::from(c.available),
        c.queued,
        c.pending_payment,
        c.paid,
        c.expired,
    ) != (available, 0, pending, paid, expired)
    {
        return Err(format!(
            "the shop's counters {c:?} disagree with the store ({pending} pending, {paid} paid, \
             {expired} expired) and the ledger ({available} available)"
        ));
    }
    Ok(())
}
