//! `RedisStock`: the scaled-out stock ledger, the rules of `flashsale_core::SaleLedger` run as
//! Lua scripts in Redis so every node shares one ledger per sale.
//!
//! Layout, per sale, all under one hash tag so a sale's keys live in one Redis Cluster slot and
//! every script touches a single slot:
//! - `{fs:<prefix>:<sale>}:meta` (hash): `total`, `limit`, `available`;
//! - `{fs:<prefix>:<sale>}:res` (hash): order id → state letter (`P`ending, `D`urable,
//!   `R`eturned) followed by the buyer id;
//! - `{fs:<prefix>:<sale>}:buyers` (hash): buyer id → live reservations.
//!
//! Each operation is one script call, atomic in Redis, checking in `SaleLedger`'s order: an
//! unknown sale first, then a known order id (`Duplicate`), then stock, then the buyer's limit.
//! Scripts are loaded at connect and called by SHA (`redis::Script` reloads them if a restarted
//! Redis forgot them). `open_sale` checks the holdings in Rust with `SaleLedger::restore` before
//! writing anything, writes the new ledger into staging keys of the same slot, and swaps them in
//! with one script, so a sale of millions of holdings never blocks Redis in one long call and a
//! refused open changes nothing.
//!
//! Not here yet (issue 5, later parts): stock leases to nodes, the `reserved → published →
//! confirmed` record and its reconciler, and rebuilding after Redis restarts empty. Until the
//! rebuild exists, a Redis that lost its data answers "unknown sale" (a determinate error, so
//! buys fail with 503 and nothing is oversold) until the service opens the sale again.

use async_trait::async_trait;
use flashsale_core::{
    BuyerId, OrderId, ReservationState, ReserveOutcome, ReturnOutcome, SaleId, SaleLedger,
};
use flashsale_service::ports::redact_password;
use flashsale_service::{BackendError, BackendResult, Holding, OpenMode, Opened, StockLedger};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

const BACKEND: &str = "redis stock";

/// Fields written per HSET while staging a sale: big enough to make staging a few round
/// trips for a large sale, small enough that no single command blocks Redis noticeably.
const STAGING_FIELDS_PER_COMMAND_MAX: usize = 1_000;
/// Staging keys expire unless swapped in by then, so an `open_sale` that died halfway leaves
/// nothing behind.
const STAGING_TTL_SECS: u64 = 600;

/// Takes one unit. KEYS: meta, res, buyers, pend. ARGV: order id, buyer.
const RESERVE_LUA: &str = r"
local meta = redis.call('HMGET', KEYS[1], 'available', 'limit')
if not meta[1] then return 'unknown_sale' end
local state = redis.call('HGET', KEYS[2], ARGV[1])
if state then return 'duplicate:' .. string.sub(state, 1, 1) end
if tonumber(meta[1]) <= 0 then return 'sold_out' end
local live = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
if live >= tonumber(meta[2]) then return 'limit_reached' end
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
redis.call('HINCRBY', KEYS[1], 'available', -1)
redis.call('HSET', KEYS[2], ARGV[1], 'P' .. ARGV[2])
redis.call('SADD', KEYS[4], ARGV[1])
return 'reserved'
";

/// Pending → durable. KEYS: meta, res, pend. ARGV: order id.
const CONFIRM_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown_sale' end
local state = redis.call('HGET', KEYS[2], ARGV[1])
if state and string.sub(state, 1, 1) == 'P' then
  redis.call('HSET', KEYS[2], ARGV[1], 'D' .. string.sub(state, 2))
  redis.call('SREM', KEYS[3], ARGV[1])
  return 'confirmed'
end
return 'unchanged'
";

/// Gives back a unit and the buyer's count, and drops the order from the pending set. Shared
/// head of the two releasing scripts.
const RELEASE_LUA: &str = r"
local function release(buyer)
  redis.call('SREM', KEYS[4], ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'available', 1)
  if redis.call('HINCRBY', KEYS[3], buyer, -1) <= 0 then redis.call('HDEL', KEYS[3], buyer) end
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown_sale' end
local state = redis.call('HGET', KEYS[2], ARGV[1])
";

/// Pending → forgotten, unit back. KEYS: meta, res, buyers, pend. ARGV: order id.
const CANCEL_PENDING_TAIL_LUA: &str = r"
if state and string.sub(state, 1, 1) == 'P' then
  redis.call('HDEL', KEYS[2], ARGV[1])
  release(string.sub(state, 2))
  return 'cancelled'
end
return 'unchanged'
";

/// Durable (or pending: see `SaleLedger::return_unit`) → returned, unit back, exactly once.
/// KEYS: meta, res, buyers, pend. ARGV: order id.
const RETURN_UNIT_TAIL_LUA: &str = r"
if not state then return 'unknown' end
local letter = string.sub(state, 1, 1)
if letter == 'R' then return 'already_returned' end
redis.call('HSET', KEYS[2], ARGV[1], 'R' .. string.sub(state, 2))
release(string.sub(state, 2))
return 'returned'
";

/// Swaps a staged ledger in, replacing the live one, or (ARGV[1] = 'if_absent') only when there
/// is none: the check and the swap are one step, so two nodes recovering at once cannot replace
/// a ledger another node already sells from. KEYS: meta, res, buyers, then the three staged
/// keys in the same order, then pend (a new ledger has nothing pending).
const SWAP_IN_LUA: &str = r"
if ARGV[1] == 'if_absent' and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('UNLINK', KEYS[4], KEYS[5], KEYS[6])
  return 'present'
end
if redis.call('EXISTS', KEYS[4]) == 0 then return 'staging_missing' end
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[7])
for i = 1, 3 do
  if redis.call('EXISTS', KEYS[i + 3]) == 1 then
    redis.call('RENAME', KEYS[i + 3], KEYS[i])
    redis.call('PERSIST', KEYS[i])
  end
end
return 'ok'
";

/// How the Redis stock ledger connects and names its keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisStockConfig {
    /// Goes into every key (`{fs:<key_prefix>:<sale>}:...`), so deployments and tests sharing
    /// one Redis never see each other's sales. No braces: they would break the hash tag.
    pub key_prefix: String,
    /// How long one command may wait for its reply. Past it the outcome is unknown: the
    /// script may have run.
    pub response_timeout_ms: u64,
    /// How long connecting (and reconnecting) may take.
    pub connect_timeout_ms: u64,
}

impl Default for RedisStockConfig {
    fn default() -> Self {
        Self {
            key_prefix: "flashsale".to_owned(),
            response_timeout_ms: 2_000,
            connect_timeout_ms: 2_000,
        }
    }
}

/// Redis could not be reached or prepared. Names the server (without its password).
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to Redis at {url}: {message}")]
pub struct RedisStockOpenError {
    pub url: String,
    pub message: String,
}

/// The keys of one sale.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SaleKeys {
    meta: String,
    res: String,
    buyers: String,
    /// The set of pending order ids, for the reconciler (never staged: a new ledger has none).
    pend: String,
}

impl SaleKeys {
    fn new(prefix: &str, sale: SaleId) -> Self {
        let tag = format!("{{fs:{prefix}:{sale}}}");
        Self {
            meta: format!("{tag}:meta"),
            res: format!("{tag}:res"),
            buyers: format!("{tag}:buyers"),
            pend: format!("{tag}:pend"),
        }
    }

    /// Keys of the same slot for building a ledger before it replaces this one.
    fn staging(&self, nonce: u64) -> Self {
        Self {
            meta: format!("{}:staging:{nonce}", self.meta),
            res: format!("{}:staging:{nonce}", self.res),
            buyers: format!("{}:staging:{nonce}", self.buyers),
            pend: format!("{}:staging:{nonce}", self.pend),
        }
    }
}

/// The scripts, hashed once at start.
#[derive(Debug)]
struct Scripts {
    reserve: Script,
    confirm: Script,
    cancel_pending: Script,
    return_unit: Script,
    swap_in: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            reserve: Script::new(RESERVE_LUA),
            confirm: Script::new(CONFIRM_LUA),
            cancel_pending: Script::new(&format!("{RELEASE_LUA}{CANCEL_PENDING_TAIL_LUA}")),
            return_unit: Script::new(&format!("{RELEASE_LUA}{RETURN_UNIT_TAIL_LUA}")),
            swap_in: Script::new(SWAP_IN_LUA),
        }
    }

    fn all(&self) -> [&Script; 5] {
        [
            &self.reserve,
            &self.confirm,
            &self.cancel_pending,
            &self.return_unit,
            &self.swap_in,
        ]
    }
}

/// Stock and per-buyer limits in Redis, shared by every node.
///
/// Cheap to clone: clones share the multiplexed connection, which reconnects by itself.
#[derive(Clone)]
pub struct RedisStock {
    connection: ConnectionManager,
    prefix: String,
    scripts: std::sync::Arc<Scripts>,
}

impl std::fmt::Debug for RedisStock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStock")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStock {
    /// Connects to `url` (`redis://host:port[/db]`) and loads the scripts, so a server that
    /// cannot run them is found at start, not at the first buy.
    pub async fn connect(url: &str, config: RedisStockConfig) -> Result<Self, RedisStockOpenError> {
        let fail = |message: String| RedisStockOpenError {
            url: redact_password(url),
            message,
        };
        if config.key_prefix.is_empty() || config.key_prefix.contains(['{', '}']) {
            return Err(fail(format!(
                "key prefix {:?} must be non-empty and without braces",
                config.key_prefix
            )));
        }
        let client = redis::Client::open(url).map_err(|e| fail(format!("bad URL: {e}")))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
            .set_response_timeout(Some(Duration::from_millis(config.response_timeout_ms)))
            // Fail fast: a node that cannot reach Redis at start should say so, not retry for
            // half a minute. Later reconnects happen on the next command anyway.
            .set_number_of_retries(1);
        let mut connection = ConnectionManager::new_with_config(client, manager_config)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let scripts = Scripts::new();
        for script in scripts.all() {
            script
                .prepare_invoke()
                .load_async(&mut connection)
                .await
                .map_err(|e| fail(format!("loading a script: {e}")))?;
        }
        Ok(Self {
            connection,
            prefix: config.key_prefix,
            scripts: std::sync::Arc::new(scripts),
        })
    }

    fn keys(&self, sale: SaleId) -> SaleKeys {
        SaleKeys::new(&self.prefix, sale)
    }

    /// Runs a script that answers with a status word.
    async fn run(
        &self,
        what: &str,
        script: &Script,
        keys: &[&str],
        args: &[&str],
        writes: bool,
    ) -> BackendResult<String> {
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
            .map_err(|e| redis_error(what, &e, writes))
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
            .map_err(|e| redis_error("staging a sale", &e, true))?;
        for (key, fields) in [(&staging.res, reservations), (&staging.buyers, buyers)] {
            for chunk in fields.chunks(STAGING_FIELDS_PER_COMMAND_MAX) {
                let mut pipe = redis::pipe();
                pipe.hset_multiple(key, chunk)
                    .ignore()
                    .expire(key, STAGING_TTL_SECS as i64)
                    .ignore();
                pipe.query_async::<()>(&mut connection)
                    .await
                    .map_err(|e| redis_error("staging a sale", &e, true))?;
            }
        }
        Ok(())
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
        // The rules of a rebuild (an order listed twice counts once, live if either says so;
        // refuse more live holdings than stock) are core's: check with it before touching Redis.
        let ledger = SaleLedger::restore(
            stock_total,
            per_buyer_limit,
            holdings
                .iter()
                .map(|h| (h.order_id, h.buyer.clone(), h.live)),
        )
        .map_err(|e| BackendError::determinate(BACKEND, format!("sale {sale}: {e}")))?;
        let mut records: HashMap<OrderId, (&BuyerId, bool)> = HashMap::new();
        for h in &holdings {
            let entry = records.entry(h.order_id).or_insert((&h.buyer, h.live));
            entry.1 |= h.live;
        }
        let mut live_by_buyer: HashMap<&BuyerId, u32> = HashMap::new();
        let reservations: Vec<(String, String)> = records
            .iter()
            .map(|(order, (buyer, live))| {
                if *live {
                    *live_by_buyer.entry(*buyer).or_default() += 1;
                }
                let letter = if *live { 'D' } else { 'R' };
                (order.to_string(), format!("{letter}{buyer}"))
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
        let answer = self
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

    async fn reserve(
        &self,
        sale: SaleId,
        order: OrderId,
        buyer: &BuyerId,
    ) -> BackendResult<ReserveOutcome> {
        let keys = self.keys(sale);
        let answer = self
            .run(
                "reserving",
                &self.scripts.reserve,
                &[&keys.meta, &keys.res, &keys.buyers, &keys.pend],
                &[&order.to_string(), buyer.as_str()],
                true,
            )
            .await?;
        Ok(match answer.as_str() {
            "reserved" => ReserveOutcome::Reserved,
            "sold_out" => ReserveOutcome::SoldOut,
            "limit_reached" => ReserveOutcome::LimitReached,
            "duplicate:P" => ReserveOutcome::Duplicate(ReservationState::Pending),
            "duplicate:D" => ReserveOutcome::Duplicate(ReservationState::Durable),
            "duplicate:R" => ReserveOutcome::Duplicate(ReservationState::Returned),
            "unknown_sale" => return Err(unknown_sale(sale)),
            other => return Err(unexpected("reserving", other)),
        })
    }

    async fn confirm(&self, sale: SaleId, order: OrderId) -> BackendResult<()> {
        let keys = self.keys(sale);
        let answer = self
            .run(
                "confirming",
                &self.scripts.confirm,
                &[&keys.meta, &keys.res, &keys.pend],
                &[&order.to_string()],
                true,
            )
            .await?;
        match answer.as_str() {
            "confirmed" | "unchanged" => Ok(()),
            "unknown_sale" => Err(unknown_sale(sale)),
            other => Err(unexpected("confirming", other)),
        }
    }

    async fn cancel_pending(&self, sale: SaleId, order: OrderId) -> BackendResult<()> {
        let keys = self.keys(sale);
        let answer = self
            .run(
                "cancelling a pending reservation",
                &self.scripts.cancel_pending,
                &[&keys.meta, &keys.res, &keys.buyers, &keys.pend],
                &[&order.to_string()],
                true,
            )
            .await?;
        match answer.as_str() {
            "cancelled" | "unchanged" => Ok(()),
            "unknown_sale" => Err(unknown_sale(sale)),
            other => Err(unexpected("cancelling a pending reservation", other)),
        }
    }

    async fn return_unit(&self, sale: SaleId, order: OrderId) -> BackendResult<ReturnOutcome> {
        let keys = self.keys(sale);
        let answer = self
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
        let mut connection = self.connection.clone();
        let available: Option<u32> = redis::cmd("HGET")
            .arg(&keys.meta)
            .arg("available")
            .query_async(&mut connection)
            .await
            .map_err(|e| redis_error("reading available stock", &e, false))?;
        available.ok_or_else(|| unknown_sale(sale))
    }

    async fn pending_orders(&self, sale: SaleId) -> BackendResult<Vec<OrderId>> {
        let keys = self.keys(sale);
        let mut connection = self.connection.clone();
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&keys.pend)
            .query_async(&mut connection)
            .await
            .map_err(|e| redis_error("listing pending reservations", &e, false))?;
        members
            .iter()
            .map(|member| {
                OrderId::parse(member).map_err(|e| {
                    unexpected("listing pending reservations", &format!("{member}: {e}"))
                })
            })
            .collect()
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
fn redis_error(what: &str, e: &RedisError, writes: bool) -> BackendError {
    let message = format!("{what}: {e}");
    let known =
        !writes || matches!(e.kind(), redis::ErrorKind::Server(_)) || e.is_connection_refusal();
    if known {
        BackendError::determinate(BACKEND, message)
    } else {
        BackendError::indeterminate(BACKEND, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn a_sales_keys_share_one_hash_tag() {
        let sale = SaleId(Uuid::from_u128(7));
        let keys = SaleKeys::new("shop", sale);
        let tag = format!("{{fs:shop:{sale}}}");
        for key in [&keys.meta, &keys.res, &keys.buyers, &keys.pend] {
            assert!(key.starts_with(&tag), "{key}");
        }
        let staging = keys.staging(42);
        for key in [&staging.meta, &staging.res, &staging.buyers] {
            assert!(key.starts_with(&tag), "{key}");
            // The hash tag is the first {...}: nothing after it may open another one.
            assert_eq!(key.matches('{').count(), 1, "{key}");
        }
        assert_ne!(staging.meta, keys.meta);
    }

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
