//! `RedisStock`: the scaled-out stock ledger, the rules of `flashsale_core::SaleLedger` run as
//! Lua scripts in Redis so every node shares one ledger per sale.
//!
//! Layout, per sale, all under one hash tag so a sale's keys live in one Redis Cluster slot and
//! every script touches a single slot (the key names and the entry and lease formats are stated
//! once, in `layout.rs`):
//! - `{fs:<prefix>:<sale>}:meta` (hash): `total`, `limit`, `available` (the counter: units on
//!   no lease and in no reservation);
//! - `{fs:<prefix>:<sale>}:res` (hash): order id → state letter, then the batch id (36
//!   characters, dashes when the order was restored from the store), then the buyer id. `T`
//!   is taken in a batch: pending while the batch is in `pend`, durable once it is not; `D` is
//!   durable (restored), `R` returned. Scripts answer `P` or `D` for a `T`, never `T`;
//! - `{fs:<prefix>:<sale>}:buyers` (hash): buyer id → live reservations;
//! - `{fs:<prefix>:<sale>}:pend` (hash): batch id → its reserved order ids (space-separated),
//!   for the batches not yet confirmed: what the reconciler reads. Pending is tracked per
//!   batch because a batch becomes durable as one: a confirm is one `HDEL`, and a reserved
//!   unit costs three commands (the duplicate check, the buyer's count, its entry);
//! - `{fs:<prefix>:<sale>}:leases` (hash): node id → `<units>:<expires at, Redis ms>`.
//!
//! One `reserve` call is one script for a whole batch of buys, checking each in
//! `SaleLedger`'s order: an unknown sale first, then a known order id (`Duplicate`), then stock,
//! then the buyer's limit. So a batch of any size costs one round trip and one script run.
//!
//! **Leases** (`RedisStockConfig::lease`, the batched design): a node's lease is a block of
//! units set aside for it. Its batches take from its own lease first, then from the counter,
//! and only when both are empty from other nodes' leases, so a unit is never stranded on a
//! node that is not selling it. At the end of each batch the node's lease is topped up from the
//! counter (at most an eighth of what is left, so leases shrink as stock runs low) and its
//! expiry moved on; a lease nobody renews (its node died) is reclaimed into the counter by the
//! next batch that needs it. `release_lease` gives a node's lease back at the sale's end and at
//! shutdown. Expiry times are Redis's own clock (`TIME`), so nodes' clocks never matter.
//! Without a lease the script takes from the counter only: the classic design.
//!
//! Scripts (`src/lua/*.lua`, compiled in by `scripts.rs`) are loaded at connect and called by SHA (`redis::Script` reloads them if a restarted
//! Redis forgot them). `open_sale` checks the holdings in Rust with `SaleLedger::restore` before
//! writing anything, writes the new ledger into staging keys of the same slot, and swaps them in
//! with one script, so a sale of millions of holdings never blocks Redis in one long call and a
//! refused open changes nothing.
//!
//! A Redis that lost its data answers "unknown sale" (a determinate error, so buys fail with
//! 503 and nothing is oversold) until the service rebuilds the sale (`Shop::sync_once`).
//!
//! **`RedisLine`** (`line/`) keeps each sale's waiting line beside its stock, under the same
//! hash tag (`{fs:<prefix>:<sale>}:line:*`, documented in `layout.rs`): the rules of
//! `flashsale_core::line::Line`, one script call per operation (`lua/line_*.lua`). It opens
//! its connection the same way (`connect.rs`, the same `RedisStockConfig`).

use async_trait::async_trait;
use flashsale_core::{BatchId, OrderId, ReserveOutcome, ReturnOutcome, SaleId};
use flashsale_service::{
    BackendError, BackendResult, Buy, Holding, LedgerEntry, OpenMode, Opened, PendingReservation,
    StockLedger,
};
use layout::{SaleKeys, decode_entry, state_of};
use redis::aio::ConnectionManager;
use redis::{RedisError, Script};
use scripts::Scripts;

mod config;
mod connect;
mod layout;
mod line;
mod open;
mod scripts;

pub use config::{LeaseConfig, RedisStockConfig};
pub use line::RedisLine;

const BACKEND: &str = "redis stock";

/// Redis could not be reached or prepared (the stock ledger or the line). Names the server
/// (without its password).
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to Redis at {url}: {message}")]
pub struct RedisStockOpenError {
    pub url: String,
    pub message: String,
}

/// This node's lease settings and the id its leases carry.
#[derive(Debug, Clone)]
struct Leasing {
    node: String,
    units_max: String,
    ttl_ms: String,
}

/// Stock and per-buyer limits in Redis, shared by every node.
///
/// Cheap to clone: clones share the multiplexed connection, which reconnects by itself, and
/// the node id (a clone is the same node).
#[derive(Clone)]
pub struct RedisStock {
    connection: ConnectionManager,
    prefix: String,
    scripts: std::sync::Arc<Scripts>,
    leasing: Option<Leasing>,
}

impl std::fmt::Debug for RedisStock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStock")
            .field("prefix", &self.prefix)
            .field("leasing", &self.leasing)
            .finish_non_exhaustive()
    }
}

impl RedisStock {
    /// Connects to `url` (`redis://host:port[/db]`) and loads the scripts, so a server that
    /// cannot run them is found at start, not at the first buy. With leases, this node gets a
    /// fresh id: a restarted node never renews the lease of its earlier life, which expires.
    pub async fn connect(url: &str, config: RedisStockConfig) -> Result<Self, RedisStockOpenError> {
        if let Some(lease) = &config.lease
            && (lease.units_max == 0 || lease.ttl_ms == 0)
        {
            return Err(connect::open_error(
                url,
                "lease units_max and ttl_ms must be greater than 0".to_owned(),
            ));
        }
        let scripts = Scripts::new();
        let connection = connect::open(url, &config, &scripts.all()).await?;
        let leasing = config.lease.map(|lease| Leasing {
            node: uuid::Uuid::new_v4().simple().to_string(),
            units_max: lease.units_max.to_string(),
            ttl_ms: lease.ttl_ms.to_string(),
        });
        Ok(Self {
            connection,
            prefix: config.key_prefix,
            scripts: std::sync::Arc::new(scripts),
            leasing,
        })
    }

    /// This node's id in its leases, if it takes leases.
    pub fn node_id(&self) -> Option<&str> {
        self.leasing.as_ref().map(|l| l.node.as_str())
    }

    fn keys(&self, sale: SaleId) -> SaleKeys {
        SaleKeys::new(&self.prefix, sale)
    }

    /// Runs a script and reads its answer as `T`.
    async fn run<T: redis::FromRedisValue>(
        &self,
        what: &str,
        script: &Script,
        keys: &[&str],
        args: &[&str],
        writes: bool,
    ) -> BackendResult<T> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let mut connection = self.connection.clone();
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|e| redis_error(BACKEND, what, &e, writes))
    }

    /// Runs a writing script that answers `ok`, or `unknown_sale` having written nothing.
    async fn run_ok(
        &self,
        what: &str,
        sale: SaleId,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> BackendResult<()> {
        let answer: String = self.run(what, script, keys, args, true).await?;
        match answer.as_str() {
            "ok" => Ok(()),
            "unknown_sale" => Err(unknown_sale(sale)),
            other => Err(unexpected(what, other)),
        }
    }
}

#[async_trait]
impl StockLedger for RedisStock {
    async fn open_sale(
        &self,
        sale: SaleId,
        stock_total: u32,
        per_buyer_limit: u32,
        holdings: Vec<Holding>,
        mode: OpenMode,
    ) -> BackendResult<Opened> {
        self.install(sale, stock_total, per_buyer_limit, holdings, mode)
            .await
    }

    async fn reserve(
        &self,
        sale: SaleId,
        batch: BatchId,
        buys: &[Buy],
    ) -> BackendResult<Vec<ReserveOutcome>> {
        if buys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys(sale);
        let batch = batch.to_string();
        let (node, units_max, ttl_ms) = match &self.leasing {
            Some(l) => (l.node.as_str(), l.units_max.as_str(), l.ttl_ms.as_str()),
            None => ("", "0", "0"),
        };
        let orders: Vec<String> = buys.iter().map(|b| b.order.to_string()).collect();
        let mut args: Vec<&str> = Vec::with_capacity(4 + 2 * buys.len());
        args.extend([batch.as_str(), node, units_max, ttl_ms]);
        for (order, buy) in orders.iter().zip(buys) {
            args.push(order);
            args.push(buy.buyer.as_str());
        }
        let answers: Vec<String> = self
            .run(
                "reserving",
                &self.scripts.reserve,
                &[
                    &keys.meta,
                    &keys.res,
                    &keys.buyers,
                    &keys.pend,
                    &keys.leases,
                ],
                &args,
                true,
            )
            .await?;
        if answers.len() == 1 && answers[0] == "unknown_sale" {
            return Err(unknown_sale(sale));
        }
        if answers.len() != buys.len() {
            return Err(unexpected(
                "reserving",
                &format!("{} answers for {} buys", answers.len(), buys.len()),
            ));
        }
        answers
            .iter()
            .map(|answer| {
                Ok(match answer.as_str() {
                    "reserved" => ReserveOutcome::Reserved,
                    "sold_out" => ReserveOutcome::SoldOut,
                    "limit_reached" => ReserveOutcome::LimitReached,
                    other => {
                        let mut letters = other.strip_prefix("duplicate:").unwrap_or("").chars();
                        match (letters.next().and_then(state_of), letters.next()) {
                            (Some(state), None) => ReserveOutcome::Duplicate(state),
                            _ => return Err(unexpected("reserving", other)),
                        }
                    }
                })
            })
            .collect()
    }

    async fn confirm(&self, sale: SaleId, batch: BatchId, orders: &[OrderId]) -> BackendResult<()> {
        if orders.is_empty() {
            return Ok(());
        }
        // A batch is durable as one: confirming it confirms every reservation of it.
        let keys = self.keys(sale);
        self.run_ok(
            "confirming",
            sale,
            &self.scripts.confirm,
            &[&keys.meta, &keys.pend],
            &[&batch.to_string()],
        )
        .await
    }

    async fn cancel_pending(&self, sale: SaleId, orders: &[OrderId]) -> BackendResult<()> {
        if orders.is_empty() {
            return Ok(());
        }
        let keys = self.keys(sale);
        let orders: Vec<String> = orders.iter().map(OrderId::to_string).collect();
        let args: Vec<&str> = orders.iter().map(String::as_str).collect();
        self.run_ok(
            "cancelling pending reservations",
            sale,
            &self.scripts.cancel_pending,
            &[&keys.meta, &keys.res, &keys.buyers, &keys.pend],
            &args,
        )
        .await
    }

    async fn return_unit(&self, sale: SaleId, order: OrderId) -> BackendResult<ReturnOutcome> {
        let keys = self.keys(sale);
        let answer: String = self
            .run(
                "returning a unit",
                &self.scripts.return_unit,
                &[&keys.meta, &keys.res, &keys.buyers, &keys.pend],
                &[&order.to_string()],
                true,
            )
            .await?;
        Ok(match answer.as_str() {
            "returned" => ReturnOutcome::Returned,
            "already_returned" => ReturnOutcome::AlreadyReturned,
            "unknown" => ReturnOutcome::Unknown,
            "unknown_sale" => return Err(unknown_sale(sale)),
            other => return Err(unexpected("returning a unit", other)),
        })
    }

    async fn available(&self, sale: SaleId) -> BackendResult<u32> {
        let keys = self.keys(sale);
        let available: i64 = self
            .run(
                "reading available stock",
                &self.scripts.available,
                &[&keys.meta, &keys.leases],
                &[],
                false,
            )
            .await?;
        u32::try_from(available).map_err(|_| unknown_sale(sale))
    }

    async fn pending_orders(&self, sale: SaleId) -> BackendResult<Vec<PendingReservation>> {
        let keys = self.keys(sale);
        let pairs: Vec<String> = self
            .run(
                "listing pending reservations",
                &self.scripts.pending,
                &[&keys.res, &keys.pend],
                &[],
                false,
            )
            .await?;
        let bad = |text: &str| unexpected("listing pending reservations", text);
        pairs
            .chunks(2)
            .map(|pair| {
                let [order, batch] = pair else {
                    return Err(bad("an odd reply"));
                };
                Ok(PendingReservation {
                    order: OrderId::parse(order).map_err(|_| bad(order))?,
                    batch: BatchId::parse(batch).map_err(|_| bad(batch))?,
                })
            })
            .collect()
    }

    async fn entry(&self, sale: SaleId, order: OrderId) -> BackendResult<Option<LedgerEntry>> {
        let keys = self.keys(sale);
        let entry: Option<String> = self
            .run(
                "reading a reservation",
                &self.scripts.entry,
                &[&keys.res, &keys.pend],
                &[&order.to_string()],
                false,
            )
            .await?;
        entry.as_deref().map(decode_entry).transpose()
    }

    async fn release_lease(&self, sale: SaleId) -> BackendResult<()> {
        let Some(leasing) = &self.leasing else {
            return Ok(());
        };
        let keys = self.keys(sale);
        let answer: String = self
            .run(
                "releasing a lease",
                &self.scripts.release_lease,
                &[&keys.meta, &keys.leases],
                &[&leasing.node],
                true,
            )
            .await?;
        match answer.as_str() {
            // A sale Redis no longer knows has no lease to give back.
            "released" | "none" | "unknown_sale" => Ok(()),
            other => Err(unexpected("releasing a lease", other)),
        }
    }
}

fn unknown_sale(sale: SaleId) -> BackendError {
    BackendError::determinate(BACKEND, format!("unknown sale {sale}"))
}

fn unexpected(what: &str, answer: &str) -> BackendError {
    // Our own script answered something it never says: it may have run, so do not guess.
    BackendError::indeterminate(BACKEND, format!("{what}: unexpected answer {answer:?}"))
}

/// Maps a Redis error. Reads change nothing. For writes the outcome is known only when the
/// server answered with an error (our scripts check everything before their first write, so a
/// refused script wrote nothing) or the connection was refused before anything was sent; a
/// timeout or a dropped connection after sending may have run the script.
fn redis_error(backend: &'static str, what: &str, e: &RedisError, writes: bool) -> BackendError {
    let message = format!("{what}: {e}");
    let known =
        !writes || matches!(e.kind(), redis::ErrorKind::Server(_)) || e.is_connection_refusal();
    if known {
        BackendError::determinate(backend, message)
    } else {
        BackendError::indeterminate(backend, message)
    }
}

#[cfg(test)]
mod tests {
    use flashsale_service::ports::redact_password;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_password("redis://:s3cret@cache:6379/0"),
            "redis://:***@cache:6379/0"
        );
        assert_eq!(
            redact_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
