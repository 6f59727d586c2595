//! The verdict: once the queue is drained and the reaper has run, the invariants of
//! DESIGN.md are checked against what the crowd was told (every 202) and what the server
//! holds (counters, the order listing, each order as its buyer sees it), by the checker
//! every test shares (`flashsale_core::invariants`); what only a bench run sees (counts
//! over time, cheaters, early buys) is checked here, beside it.

use crate::api::{Api, Counters, ORDERS_LISTED_MAX, OrderRow};
use crate::client::{Conn, Target};
use crate::crowd::{Accepted, CrowdShape, Signer};
use anyhow::Result;
use flashsale_core::OrderStatus;
use flashsale_core::invariants::{
    self, Acknowledged, Counted, Observation, Promise, SeenOrder, SeenReservation, Violation,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Longest wait for the queue to drain into the order store, in milliseconds.
pub const DRAIN_WAIT_MS: u64 = 60_000;
/// Longest payment window the bench waits out for the reaper check, in seconds.
pub const REAPER_WAIT_WINDOW_SECS_MAX: u64 = 60;
/// Extra wait past the payment window for the reaper to sweep, in milliseconds.
pub const REAPER_SLACK_MS: u64 = 15_000;
/// Order lookups in flight at once while checking every 202.
const LOOKUPS_IN_FLIGHT: usize = 16;

/// One checked invariant. `passed: None` = could not be checked (said why in `detail`).
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub passed: Option<bool>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Verdict {
    pub checks: Vec<Check>,
    pub counters: Counters,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed != Some(false))
    }

    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    fn push(&mut self, name: &'static str, passed: Option<bool>, detail: String) {
        self.checks.push(Check {
            name,
            passed,
            detail,
        });
    }
}

/// What the run saw, for the verdict.
pub struct Evidence<'a> {
    pub sale_id: &'a str,
    pub shape: &'a CrowdShape,
    pub signer: &'a Signer,
    pub accepted: &'a [Accepted],
    pub cheater_wins: u64,
    /// 2xx answers to buys sent before the sale was live.
    pub early_wins: u64,
    pub before: Counters,
    pub starts_at: OffsetDateTime,
    pub ends_at: OffsetDateTime,
    pub per_buyer_limit: u64,
    pub payment_window_secs: u64,
    /// When the last 202 arrived.
    pub last_accept: Instant,
    /// Most live orders (queued + pending + paid) the counters showed during the run.
    pub live_max_sampled: u64,
}

/// Waits for the queue to drain and the reaper to run, then checks every invariant.
pub async fn judge(api: &Api, target: &Target, ev: &Evidence<'_>) -> Result<Verdict> {
    let mut verdict = Verdict::default();
    let drained = wait_until(DRAIN_WAIT_MS, || async {
        Ok(api.counters(ev.sale_id).await?.queued == 0)
    })
    .await?;
    let reaper_checked = ev.payment_window_secs <= REAPER_WAIT_WINDOW_SECS_MAX;
    if reaper_checked {
        let window_end = ev.last_accept + Duration::from_secs(ev.payment_window_secs);
        tokio::time::sleep_until(window_end.into()).await;
        // Quiet means the units are back too: the reaper marks an order expired in the store
        // first and returns its unit to the ledger after, and in between the unit counts as
        // queued (the counter is derived), which would read as stock not conserved.
        wait_until(REAPER_SLACK_MS, || async {
            let c = api.counters(ev.sale_id).await?;
            Ok(c.pending_payment == 0 && c.queued == 0)
        })
        .await?;
    }
    let counters = api.counters(ev.sale_id).await?;
    verdict.counters = counters;
    let listed = api.orders(ev.sale_id, ORDERS_LISTED_MAX).await?;
    let list_complete =
        (listed.len() as u64) >= counters.written() && listed.len() < ORDERS_LISTED_MAX;
    let seen = look_up_orders(target, ev).await;

    // What the crowd was told: distinct order ids.
    let distinct = ev
        .accepted
        .iter()
        .map(|a| a.order_id.as_str())
        .collect::<HashSet<_>>()
        .len() as u64;
    // Two views, each checked on its own by the shared checker: the server's (its counters
    // and its order listing, read one after the other once quiet) and the buyers' (each 202
    // looked up by its buyer). Merged into one they could disagree about an order that moved
    // between the two readings.
    let fresh_sale = ev.before.written() == 0;
    let server = server_view(ev, &counters, &listed, list_complete, fresh_sale);
    let told = buyers_view(ev, &counters, &seen);
    let mut broken: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for violation in invariants::check(&server).err().unwrap_or_default() {
        broken
            .entry(check_name(&violation, false))
            .or_default()
            .push(violation.to_string());
    }
    for violation in invariants::check(&told).err().unwrap_or_default() {
        broken
            .entry(check_name(&violation, true))
            .or_default()
            .push(violation.to_string());
    }
    let mut push = |name: &'static str, beside_ok: bool, mut detail: String| {
        let violations = broken.remove(name).unwrap_or_default();
        for line in violations.iter().take(VIOLATIONS_SHOWN_MAX) {
            detail.push_str("; ");
            detail.push_str(line);
        }
        verdict.push(name, Some(beside_ok && violations.is_empty()), detail);
    };

    // 1. orders ≤ stock. Beside the checker, what only a run over time shows: no unit can come
    // back before the first payment window ends, so until then every 202 must have taken a
    // unit of its own (more distinct ids than units means oversold); and the most live orders
    // the counters showed while it ran.
    let first = ev.accepted.iter().map(|a| a.at).min().unwrap_or_default();
    let window = Duration::from_secs(ev.payment_window_secs);
    let before_expiry = ev
        .accepted
        .iter()
        .filter(|a| a.at < first + window)
        .map(|a| a.order_id.as_str())
        .collect::<HashSet<_>>()
        .len() as u64;
    push(
        "orders_within_stock",
        before_expiry.max(ev.live_max_sampled) <= counters.stock_total,
        format!(
            "stock {}; live orders at the end: {} by the counters; at most {} seen during the run; {before_expiry} distinct 202s before any unit could expire",
            counters.stock_total,
            counters.queued + counters.pending_payment + counters.paid,
            ev.live_max_sampled
        ),
    );

    // 2. every 202 became exactly one order; beside the checker, the count of orders this run
    // wrote (only the bench knows the counters from before it).
    let written_delta = counters.written().saturating_sub(ev.before.written());
    push(
        "every_202_is_one_order",
        written_delta == distinct,
        format!("{distinct} distinct order ids answered 202; {written_delta} orders written"),
    );

    // 3. no buyer over the limit.
    push(
        "buyer_limit_held",
        true,
        format!(
            "limit {}; checked by their 202s and in the listing",
            ev.per_buyer_limit
        ),
    );

    // 4. stock conservation once quiet; beside the checker, whether the drain was seen (the
    // counters read after it may have drained just too late).
    push(
        "stock_conserved",
        drained,
        format!(
            "available {} + pending {} + paid {} = {}, stock {}{}",
            counters.available,
            counters.pending_payment,
            counters.paid,
            counters.available + counters.pending_payment + counters.paid,
            counters.stock_total,
            if drained {
                ""
            } else {
                "; the queue never drained"
            }
        ),
    );

    // 5. no order outside the sale; beside the checker, the buys answered before go-live
    // (only the crowd saw those answers).
    push(
        "no_order_outside_sale",
        ev.early_wins == 0,
        format!(
            "{} listed orders checked against [start, end); {} buys accepted before go-live{}",
            listed.len(),
            ev.early_wins,
            if list_complete {
                ""
            } else {
                " (listing incomplete)"
            }
        ),
    );

    // 6. cheaters get nothing: only the crowd knows which buys were forged.
    verdict.push(
        "cheaters_refused",
        Some(ev.cheater_wins == 0),
        format!(
            "{} forged-token, expired-token or guessed-path buys answered 2xx",
            ev.cheater_wins
        ),
    );

    // 7. unpaid orders come back: by the counters, since the listing carries no deadlines
    // and may be cut short; every payment window has closed by now.
    if reaper_checked {
        verdict.push(
            "unpaid_orders_returned",
            Some(counters.pending_payment == 0),
            format!(
                "{} still pending after the payment window and the reaper; {} expired, {} paid",
                counters.pending_payment, counters.expired, counters.paid
            ),
        );
    } else {
        verdict.push(
            "unpaid_orders_returned",
            None,
            format!(
                "not checked: the payment window ({} s) is longer than the bench waits",
                ev.payment_window_secs
            ),
        );
    }
    Ok(verdict)
}

/// Violations listed in a check's detail; the count says how many there were in all.
const VIOLATIONS_SHOWN_MAX: usize = 5;

/// The server's view: its counters and its order listing, once quiet. The listing's orders
/// are checked against the 202s only when it is complete and the sale was new (orders of
/// earlier runs would look made up).
fn server_view(
    ev: &Evidence<'_>,
    counters: &Counters,
    listed: &[OrderRow],
    list_complete: bool,
    fresh_sale: bool,
) -> Observation<String, String> {
    let mut seen = Observation::new(counters.stock_total, ev.per_buyer_limit);
    seen.window = Some((ev.starts_at, ev.ends_at));
    seen.orders = listed
        .iter()
        .filter_map(|o| {
            Some(SeenOrder {
                id: o.order_id.clone(),
                buyer: o.buyer.clone(),
                status: OrderStatus::parse(&o.status)?,
                payment: None,
                reserved_at: o.reserved_at,
                expires_at: None,
            })
        })
        .collect();
    seen.orders_complete = list_complete;
    if list_complete && fresh_sale {
        seen.requested = Some(ev.accepted.iter().map(|a| a.order_id.clone()).collect());
    }
    seen.counted = Some(Counted {
        available: counters.available,
        queued: counters.queued,
        pending_payment: counters.pending_payment,
        paid: counters.paid,
        expired: counters.expired,
        cancelled: counters.cancelled,
    });
    seen.quiet = true;
    seen
}

/// The buyers' view: each 202 as its buyer looks it up now, with the request it answered.
/// Quiet: a 202 still queued after the drain is not an order yet.
fn buyers_view(
    ev: &Evidence<'_>,
    counters: &Counters,
    looked_up: &BTreeMap<String, String>,
) -> Observation<String, u64> {
    let mut seen = Observation::new(counters.stock_total, ev.per_buyer_limit);
    let mut buyer_of: BTreeMap<&str, u64> = BTreeMap::new();
    for a in ev.accepted {
        buyer_of.insert(a.order_id.as_str(), a.buyer);
        seen.acknowledged.push(Acknowledged {
            order: a.order_id.clone(),
            buyer: a.buyer,
            request: Some(format!("{}/{}", a.buyer, a.click)),
        });
    }
    for (id, status) in looked_up {
        let Some(&buyer) = buyer_of.get(id.as_str()) else {
            continue;
        };
        if status == "queued" {
            seen.queued.push(SeenReservation {
                id: id.clone(),
                buyer,
            });
        } else if let Some(status) = OrderStatus::parse(status) {
            seen.orders.push(SeenOrder {
                id: id.clone(),
                buyer,
                status,
                payment: None,
                reserved_at: None,
                expires_at: None,
            });
        }
    }
    seen.quiet = true;
    seen
}

/// The verdict's check a violation fails. In the buyers' view a reservation still queued
/// after the drain is a 202 that did not become an order.
fn check_name<O, B>(violation: &Violation<O, B>, buyers_view: bool) -> &'static str {
    match violation.promise() {
        Promise::WithinStock => "orders_within_stock",
        Promise::AcknowledgedIsOneOrder => "every_202_is_one_order",
        Promise::Conserved if buyers_view => "every_202_is_one_order",
        Promise::BuyerLimit => "buyer_limit_held",
        Promise::Conserved => "stock_conserved",
        Promise::InsideSale => "no_order_outside_sale",
        Promise::PaidStaysPaid | Promise::ReturnedOnce => "unpaid_orders_returned",
    }
}

/// Each distinct 202 order id as its buyer sees it: its status, or "missing".
async fn look_up_orders(target: &Target, ev: &Evidence<'_>) -> BTreeMap<String, String> {
    let mut distinct: BTreeMap<String, u64> = BTreeMap::new();
    for a in ev.accepted {
        distinct.insert(a.order_id.clone(), a.buyer);
    }
    let work: Vec<(String, u64)> = distinct.into_iter().collect();
    let chunk = work.len().div_ceil(LOOKUPS_IN_FLIGHT).max(1);
    let tasks: Vec<_> = work
        .chunks(chunk)
        .map(|part| {
            let part = part.to_vec();
            let target = target.clone();
            let signer = ev.signer.clone();
            let shape = ev.shape.clone();
            tokio::spawn(async move {
                let mut conn = Conn::new(target);
                let mut out = Vec::with_capacity(part.len());
                for (id, buyer) in part {
                    let auth = format!("Bearer {}", signer.token(&shape.buyer_id(buyer)));
                    let status = match conn
                        .get(
                            &format!("/api/orders/{id}"),
                            &[("authorization", auth.as_str())],
                        )
                        .await
                    {
                        Ok(a) if a.status.is_success() => a
                            .json()
                            .ok()
                            .and_then(|v| v["status"].as_str().map(str::to_owned))
                            .unwrap_or_else(|| "missing".into()),
                        _ => "missing".into(),
                    };
                    out.push((id, status));
                }
                out
            })
        })
        .collect();
    let mut seen = BTreeMap::new();
    for task in tasks {
        if let Ok(part) = task.await {
            seen.extend(part);
        }
    }
    seen
}

/// Polls `done` every 100 ms for up to `wait_ms`; whether it came true.
async fn wait_until<F, Fut>(wait_ms: u64, mut done: F) -> Result<bool>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    loop {
        if done().await? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
