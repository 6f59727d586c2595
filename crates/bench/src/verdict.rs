//! The verdict: once the queue is drained and the reaper has run, the invariants of
//! DESIGN.md are checked against what the crowd was told (every 202) and what the server
//! holds (counters, the order listing, each order as its buyer sees it).

use crate::api::{Api, Counters, ORDERS_LISTED_MAX};
use crate::client::{Conn, Target};
use crate::crowd::{Accepted, CrowdShape, Signer};
use anyhow::Result;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
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
        wait_until(REAPER_SLACK_MS, || async {
            Ok(api.counters(ev.sale_id).await?.pending_payment == 0)
        })
        .await?;
    }
    let counters = api.counters(ev.sale_id).await?;
    verdict.counters = counters;
    let listed = api.orders(ev.sale_id, ORDERS_LISTED_MAX).await?;
    let list_complete =
        (listed.len() as u64) >= counters.written() && listed.len() < ORDERS_LISTED_MAX;
    let seen = look_up_orders(target, ev).await;

    // What the crowd was told: distinct order ids, per key and per buyer.
    let mut by_key: HashMap<(u64, usize), HashSet<&str>> = HashMap::new();
    let mut buyer_of: HashMap<&str, u64> = HashMap::new();
    for a in ev.accepted {
        by_key
            .entry((a.buyer, a.click))
            .or_default()
            .insert(a.order_id.as_str());
        buyer_of.insert(a.order_id.as_str(), a.buyer);
    }
    let distinct = buyer_of.len() as u64;
    let is_live = |s: &str| matches!(s, "pending_payment" | "paid" | "queued");

    // 1. orders ≤ stock.
    let live_server = counters.pending_payment + counters.paid + counters.queued;
    let live_told = seen.values().filter(|s| is_live(s)).count() as u64;
    let live_listed = listed.iter().filter(|o| is_live(&o.status)).count() as u64;
    // No unit can come back before the first payment window ends, so until then every 202
    // must have taken a unit of its own: more distinct ids than units means oversold.
    let first = ev.accepted.iter().map(|a| a.at).min().unwrap_or_default();
    let window = Duration::from_secs(ev.payment_window_secs);
    let before_expiry = ev
        .accepted
        .iter()
        .filter(|a| a.at < first + window)
        .map(|a| a.order_id.as_str())
        .collect::<HashSet<_>>()
        .len() as u64;
    let worst = live_server
        .max(live_told)
        .max(live_listed)
        .max(before_expiry)
        .max(ev.live_max_sampled);
    verdict.push(
        "orders_within_stock",
        Some(worst <= counters.stock_total),
        format!(
            "stock {}; live orders at the end: {live_server} by the counters, {live_told} among the 202s, {live_listed} listed; at most {} seen during the run; {before_expiry} distinct 202s before any unit could expire",
            counters.stock_total, ev.live_max_sampled
        ),
    );

    // 2. every 202 became exactly one order.
    let split_keys = by_key.values().filter(|ids| ids.len() > 1).count();
    let missing = seen
        .values()
        .filter(|s| s.as_str() == "missing" || s.as_str() == "queued")
        .count();
    let written_delta = counters.written().saturating_sub(ev.before.written());
    let mut dupes = 0;
    let mut listed_ids = HashSet::new();
    for o in &listed {
        if !listed_ids.insert(o.order_id.as_str()) {
            dupes += 1;
        }
    }
    let unannounced = if list_complete {
        listed
            .iter()
            .filter(|o| !buyer_of.contains_key(o.order_id.as_str()))
            .count() as u64
    } else {
        0
    };
    // Only when the sale was new: orders from earlier runs would count as unannounced.
    let fresh_sale = ev.before.written() == 0;
    let ok = split_keys == 0
        && missing == 0
        && written_delta == distinct
        && dupes == 0
        && (!fresh_sale || unannounced == 0);
    verdict.push(
        "every_202_is_one_order",
        Some(ok),
        format!(
            "{distinct} distinct order ids answered 202; {written_delta} orders written; {missing} not found by their buyer; {split_keys} keys answered with two ids; {dupes} ids listed twice; {unannounced} listed orders nobody was told about"
        ),
    );

    // 3. no buyer over the limit.
    let mut live_per_buyer: HashMap<u64, u64> = HashMap::new();
    for (id, status) in &seen {
        if is_live(status)
            && let Some(b) = buyer_of.get(id.as_str())
        {
            *live_per_buyer.entry(*b).or_default() += 1;
        }
    }
    let mut listed_per_buyer: HashMap<&str, u64> = HashMap::new();
    for o in listed.iter().filter(|o| is_live(&o.status)) {
        *listed_per_buyer.entry(o.buyer.as_str()).or_default() += 1;
    }
    let over_told = live_per_buyer
        .values()
        .filter(|n| **n > ev.per_buyer_limit)
        .count();
    let over_listed = listed_per_buyer
        .values()
        .filter(|n| **n > ev.per_buyer_limit)
        .count();
    verdict.push(
        "buyer_limit_held",
        Some(over_told == 0 && over_listed == 0),
        format!(
            "limit {}; buyers over it: {over_told} by their 202s, {over_listed} in the listing",
            ev.per_buyer_limit
        ),
    );

    // 4. stock conservation once quiet.
    let sum = counters.available + counters.pending_payment + counters.paid;
    let mut ok = drained && sum == counters.stock_total;
    let mut detail = format!(
        "available {} + pending {} + paid {} = {sum}, stock {}{}",
        counters.available,
        counters.pending_payment,
        counters.paid,
        counters.stock_total,
        if drained {
            ""
        } else {
            "; the queue never drained"
        }
    );
    if list_complete {
        let count = |s: &str| listed.iter().filter(|o| o.status == s).count() as u64;
        let agree = count("pending_payment") == counters.pending_payment
            && count("paid") == counters.paid
            && count("expired") == counters.expired;
        ok &= agree;
        if !agree {
            detail.push_str("; the listing disagrees with the counters");
        }
    }
    verdict.push("stock_conserved", Some(ok), detail);

    // 5. no order outside the sale.
    let outside = listed
        .iter()
        .filter(|o| {
            o.reserved_at
                .is_some_and(|at| at < ev.starts_at || at > ev.ends_at)
        })
        .count();
    verdict.push(
        "no_order_outside_sale",
        Some(outside == 0 && ev.early_wins == 0),
        format!(
            "{outside} of {} listed orders reserved outside [start, end]; {} buys accepted before go-live{}",
            listed.len(),
            ev.early_wins,
            if list_complete { "" } else { " (listing incomplete)" }
        ),
    );

    // 6. cheaters get nothing.
    verdict.push(
        "cheaters_refused",
        Some(ev.cheater_wins == 0),
        format!(
            "{} forged-token, expired-token or guessed-path buys answered 2xx",
            ev.cheater_wins
        ),
    );

    // 7. unpaid orders come back.
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
