//! Opening a sale's ledger (a new sale, an edit before the start, or the rebuild after a
//! Redis loss): checked in Rust, staged in bounded commands, swapped in by one script.

use crate::layout::{self, SaleKeys, encode_entry};
use crate::{BACKEND, RedisStock, redis_error, unexpected};
use flashsale_core::{BatchId, BuyerId, OrderId, SaleId, SaleLedger};
use flashsale_service::{BackendError, BackendResult, Holding, OpenMode, Opened};
use std::collections::HashMap;

/// Fields written per HSET while staging a sale: big enough to make staging a few round
/// trips for a large sale, small enough that no single command blocks Redis noticeably.
const STAGING_FIELDS_PER_COMMAND_MAX: usize = 1_000;
/// Staging keys expire unless swapped in by then, so an `open_sale` that died halfway leaves
/// nothing behind.
const STAGING_TTL_SECS: u64 = 600;

impl RedisStock {
    /// Checks the holdings with core, stages the new ledger and swaps it in: the whole of
    /// `StockLedger::open_sale`.
    pub(crate) async fn install(
        &self,
        sale: SaleId,
        stock_total: u32,
        per_buyer_limit: u32,
        holdings: Vec<Holding>,
        mode: OpenMode,
    ) -> BackendResult<Opened> {
        // The rules of a rebuild (an order listed twice counts once, live if either says so;
        // refuse more live holdings than stock) are core's: check with it before touching Redis.
        let ledger = SaleLedger::restore(stock_total, per_buyer_limit, holdings.iter().cloned())
            .map_err(|e| BackendError::determinate(BACKEND, format!("sale {sale}: {e}")))?;
        let mut records: HashMap<OrderId, (&BuyerId, bool, Option<BatchId>)> = HashMap::new();
        for h in &holdings {
            let entry = records
                .entry(h.order_id)
                .or_insert((&h.buyer, h.live, h.batch));
            entry.1 |= h.live;
            entry.2 = entry.2.or(h.batch);
        }
        let mut live_by_buyer: HashMap<&BuyerId, u32> = HashMap::new();
        let reservations: Vec<(String, String)> = records
            .iter()
            .map(|(order, (buyer, live, batch))| {
                if *live {
                    *live_by_buyer.entry(*buyer).or_default() += 1;
                }
                let letter = if *live {
                    layout::DURABLE
                } else {
                    layout::RETURNED
                };
                (order.to_string(), encode_entry(letter, *batch, buyer))
            })
            .collect();
        let buyers: Vec<(String, String)> = live_by_buyer
            .iter()
            .map(|(buyer, n)| (buyer.to_string(), n.to_string()))
            .collect();

        let keys = self.keys(sale);
        let mode_arg = match mode {
            OpenMode::Replace => "replace",
            OpenMode::IfAbsent => "if_absent",
        };
        let staging = keys.staging(staging_nonce());
        self.stage(
            &staging,
            stock_total,
            per_buyer_limit,
            ledger.available(),
            &reservations,
            &buyers,
        )
        .await?;
        let answer: String = self
            .run(
                "opening a sale",
                &self.scripts.swap_in,
                &[
                    &keys.meta,
                    &keys.res,
                    &keys.buyers,
                    &staging.meta,
                    &staging.res,
                    &staging.buyers,
                    &keys.pend,
                    &keys.leases,
                ],
                &[mode_arg],
                true,
            )
            .await?;
        match answer.as_str() {
            "ok" => Ok(Opened::Installed),
            "present" => Ok(Opened::AlreadyOpen),
            "staging_missing" => Err(BackendError::determinate(
                BACKEND,
                format!("sale {sale}: the staged ledger expired before it was swapped in"),
            )),
            other => Err(unexpected("opening a sale", other)),
        }
    }

    /// Writes a ledger into staging keys: meta, then the reservations and buyer counts in
    /// bounded HSETs, each key set to expire in case we die before the swap.
    async fn stage(
        &self,
        staging: &SaleKeys,
        stock_total: u32,
        per_buyer_limit: u32,
        available: u32,
        reservations: &[(String, String)],
        buyers: &[(String, String)],
    ) -> BackendResult<()> {
        let mut connection = self.connection.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(
                &staging.meta,
                &[
                    ("total", stock_total),
                    ("limit", per_buyer_limit),
                    ("available", available),
                ],
            )
            .ignore()
            .expire(&staging.meta, STAGING_TTL_SECS as i64)
            .ignore();
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(|e| redis_error(BACKEND, "staging a sale", &e, true))?;
        for (key, fields) in [(&staging.res, reservations), (&staging.buyers, buyers)] {
            for chunk in fields.chunks(STAGING_FIELDS_PER_COMMAND_MAX) {
                let mut pipe = redis::pipe();
                pipe.hset_multiple(key, chunk)
                    .ignore()
                    .expire(key, STAGING_TTL_SECS as i64)
                    .ignore();
                pipe.query_async::<()>(&mut connection)
                    .await
                    .map_err(|e| redis_error(BACKEND, "staging a sale", &e, true))?;
            }
        }
        Ok(())
    }
}

/// A staging name no other `open_sale` of this sale uses at the same time.
fn staging_nonce() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // Process id and a counter too: two nodes, or two calls in one nanosecond, never collide.
    nanos ^ (u64::from(std::process::id()) << 40) ^ COUNTER.fetch_add(1, Ordering::Relaxed)
}
