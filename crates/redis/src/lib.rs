//! `RedisStock`: the scaled-out stock ledger, the rules of `flashsale_core::SaleLedger` run as
//! Lua scripts in Redis so every node shares one ledger per sale.
//!
//! Layout, per sale, all under one hash tag so a sale's keys live in one Redis Cluster slot and
//! every script touches a single slot:
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
//! Scripts are loaded at connect and called by SHA (`redis::Script` reloads them if a restarted
//! Redis forgot them). `open_sale` checks the holdings in Rust with `SaleLedger::restore` before
//! writing anything, writes the new ledger into staging keys of the same slot, and swaps them in
//! with one script, so a sale of millions of holdings never blocks Redis in one long call and a
//! refused open changes nothing.
//!
//! A Redis that lost its data answers "unknown sale" (a determinate error, so buys fail with
//! 503 and nothing is oversold) until the service rebuilds the sale (`Shop::sync_once`).

use async_trait::async_trait;
use flashsale_core::{
    BatchId, BuyerId, OrderId, ReservationState, ReserveOutcome, ReturnOutcome, SaleId, SaleLedger,
};
use flashsale_service::ports::redact_password;
use flashsale_service::{
    BackendError, BackendResult, Buy, Holding, LedgerEntry, OpenMode, Opened, PendingReservation,
    StockLedger,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use std::collections::HashMap;
use std::time::Duration;

mod config;

pub use config::{LeaseConfig, RedisStockConfig};

const BACKEND: &str = "redis stock";

/// Fields written per HSET while staging a sale: big enough to make staging a few round
/// trips for a large sale, small enough that no single command blocks Redis noticeably.
const STAGING_FIELDS_PER_COMMAND_MAX: usize = 1_000;
/// Staging keys expire unless swapped in by then, so an `open_sale` that died halfway leaves
/// nothing behind.
const STAGING_TTL_SECS: u64 = 600;
/// Length of a batch id as text; a reservation's entry holds one (or as many dashes).
const BATCH_CHARS: usize = 36;
/// The batch field of an entry restored from the store, which has no batch.
const NO_BATCH: &str = "------------------------------------";

/// Reserves a batch. KEYS: meta, res, buyers, pend, leases. ARGV: batch id, node id ('' for no
/// lease), lease units max, lease ttl ms, then an order id and a buyer per buy. Answers one
/// word per buy, or `{'unknown_sale'}` having written nothing.
const RESERVE_LUA: &str = r"
local meta = redis.call('HMGET', KEYS[1], 'available', 'limit')
if not meta[1] then return {'unknown_sale'} end
local available, limit = tonumber(meta[1]), tonumber(meta[2])
local batch, node = ARGV[1], ARGV[2]
local leasing = node ~= ''
local lease_max, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local function units_of(lease)
  return tonumber(string.match(lease or '', '^(%d+):')) or 0
end
local now, own = 0, 0
if leasing then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  own = units_of(redis.call('HGET', KEYS[5], node))
end
-- Other nodes' leases, read only once this node's lease and the counter are empty.
local others = nil
local function other_units()
  if others then return others end
  others = {total = 0, list = {}}
  if not leasing then return others end
  local all = redis.call('HGETALL', KEYS[5])
  for i = 1, #all, 2 do
    if all[i] ~= node then
      local units = units_of(all[i + 1])
      local expires = tonumber(string.match(all[i + 1], ':(%d+)$')) or 0
      if expires <= now then
        -- Nobody renewed it: its node is gone, and its units go back on sale.
        available = available + units
        redis.call('HDEL', KEYS[5], all[i])
      elseif units > 0 then
        table.insert(others.list, {all[i], units, expires, false})
        others.total = others.total + units
      end
    end
  end
  return others
end
-- Reading the other leases may reclaim expired ones into the counter: look at it again after.
local function has_unit()
  return own + available > 0 or other_units().total > 0 or available > 0
end
local answers, reserved, fresh = {}, {}, {}
for i = 5, #ARGV, 2 do
  local order, buyer = ARGV[i], ARGV[i + 1]
  local state = redis.call('HGET', KEYS[2], order)
  if state then
    local letter = string.sub(state, 1, 1)
    if letter == 'T' then
      -- Pending while its batch is in `pend`, or taken in this call (listed at the end).
      local waiting = fresh[order] or redis.call('HEXISTS', KEYS[4], string.sub(state, 2, 37)) == 1
      letter = waiting and 'P' or 'D'
    end
    answers[#answers + 1] = 'duplicate:' .. letter
  elseif not has_unit() then
    answers[#answers + 1] = 'sold_out'
  elseif redis.call('HINCRBY', KEYS[3], buyer, 1) > limit then
    redis.call('HINCRBY', KEYS[3], buyer, -1)
    answers[#answers + 1] = 'limit_reached'
  else
    if own > 0 then
      own = own - 1
    elseif available > 0 then
      available = available - 1
    else
      for _, lease in ipairs(others.list) do
        if lease[2] > 0 then
          lease[2], lease[4] = lease[2] - 1, true
          break
        end
      end
      others.total = others.total - 1
    end
    redis.call('HSET', KEYS[2], order, 'T' .. batch .. buyer)
    reserved[#reserved + 1] = order
    fresh[order] = true
    answers[#answers + 1] = 'reserved'
  end
end
if #reserved > 0 then
  local prior = redis.call('HGET', KEYS[4], batch)
  local list = table.concat(reserved, ' ')
  redis.call('HSET', KEYS[4], batch, prior and (prior .. ' ' .. list) or list)
end
if leasing then
  if own == 0 and available > 0 then
    own = math.min(lease_max, math.max(1, math.floor(available / 8)))
    available = available - own
  end
  if own > 0 then
    redis.call('HSET', KEYS[5], node, own .. ':' .. (now + ttl))
  else
    redis.call('HDEL', KEYS[5], node)
  end
  for _, lease in ipairs(others and others.list or {}) do
    if lease[4] then
      if lease[2] > 0 then
        redis.call('HSET', KEYS[5], lease[1], lease[2] .. ':' .. lease[3])
      else
        redis.call('HDEL', KEYS[5], lease[1])
      end
    end
  end
end
redis.call('HSET', KEYS[1], 'available', available)
return answers
";

/// A batch is durable: its `T` entries are no longer pending. KEYS: meta, pend. ARGV: batch.
const CONFIRM_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown_sale' end
redis.call('HDEL', KEYS[2], ARGV[1])
return 'ok'
";

/// Gives back a unit and the buyer's count. Shared head of the two releasing scripts. KEYS:
/// meta, res, buyers, pend.
const RELEASE_LUA: &str = r"
local function release(state)
  local buyer = string.sub(state, 38)
  redis.call('HINCRBY', KEYS[1], 'available', 1)
  if redis.call('HINCRBY', KEYS[3], buyer, -1) <= 0 then redis.call('HDEL', KEYS[3], buyer) end
end
local function pending(state)
  return string.sub(state, 1, 1) == 'T'
    and redis.call('HEXISTS', KEYS[4], string.sub(state, 2, 37)) == 1
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown_sale' end
";

/// Pending → forgotten, unit back; a batch with nothing pending left leaves `pend`. ARGV:
/// order ids.
const CANCEL_PENDING_TAIL_LUA: &str = r"
local touched = {}
for i = 1, #ARGV do
  local state = redis.call('HGET', KEYS[2], ARGV[i])
  if state and pending(state) then
    redis.call('HDEL', KEYS[2], ARGV[i])
    release(state)
    touched[string.sub(state, 2, 37)] = true
  end
end
for batch in pairs(touched) do
  local left = false
  for order in string.gmatch(redis.call('HGET', KEYS[4], batch) or '', '%S+') do
    local state = redis.call('HGET', KEYS[2], order)
    if state and string.sub(state, 1, 1) == 'T' and string.sub(state, 2, 37) == batch then
      left = true
      break
    end
  end
  if not left then redis.call('HDEL', KEYS[4], batch) end
end
return 'ok'
";

/// Durable (or pending: see `SaleLedger::return_unit`) → returned, unit back, exactly once.
/// ARGV: order id.
const RETURN_UNIT_TAIL_LUA: &str = r"
local state = redis.call('HGET', KEYS[2], ARGV[1])
if not state then return 'unknown' end
if string.sub(state, 1, 1) == 'R' then return 'already_returned' end
redis.call('HSET', KEYS[2], ARGV[1], 'R' .. string.sub(state, 2))
release(state)
return 'returned'
";

/// One entry, its `T` answered as `P` or `D`. KEYS: res, pend. ARGV: order id.
const ENTRY_LUA: &str = r"
local state = redis.call('HGET', KEYS[1], ARGV[1])
if not state then return false end
if string.sub(state, 1, 1) == 'T' then
  local letter = redis.call('HEXISTS', KEYS[2], string.sub(state, 2, 37)) == 1 and 'P' or 'D'
  return letter .. string.sub(state, 2)
end
return state
";

/// Units not in any reservation: the counter plus every lease. KEYS: meta, leases. -1 for an
/// unknown sale.
const AVAILABLE_LUA: &str = r"
local available = redis.call('HGET', KEYS[1], 'available')
if not available then return -1 end
local total = tonumber(available)
for _, lease in ipairs(redis.call('HVALS', KEYS[2])) do
  total = total + (tonumber(string.match(lease, '^(%d+):')) or 0)
end
return total
";

/// Gives a node's lease back to the counter. KEYS: meta, leases. ARGV: node id.
const RELEASE_LEASE_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown_sale' end
local lease = redis.call('HGET', KEYS[2], ARGV[1])
if not lease then return 'none' end
redis.call('HINCRBY', KEYS[1], 'available', tonumber(string.match(lease, '^(%d+):')) or 0)
redis.call('HDEL', KEYS[2], ARGV[1])
return 'released'
";

/// The pending reservations as (order id, batch id) pairs: the `T` entries of every batch in
/// `pend`. KEYS: res, pend.
const PENDING_LUA: &str = r"
local out = {}
local batches = redis.call('HGETALL', KEYS[2])
for i = 1, #batches, 2 do
  local batch = batches[i]
  for order in string.gmatch(batches[i + 1], '%S+') do
    local state = redis.call('HGET', KEYS[1], order)
    if state and string.sub(state, 1, 1) == 'T' and string.sub(state, 2, 37) == batch then
      out[#out + 1] = order
      out[#out + 1] = batch
    end
  end
end
return out
";

/// Swaps a staged ledger in, replacing the live one, or (ARGV[1] = 'if_absent') only when there
/// is none: the check and the swap are one step, so two nodes recovering at once cannot replace
/// a ledger another node already sells from. KEYS: meta, res, buyers, then the three staged
/// keys in the same order, then pend and leases (a new ledger has nothing pending or leased).
const SWAP_IN_LUA: &str = r"
if ARGV[1] == 'if_absent' and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('UNLINK', KEYS[4], KEYS[5], KEYS[6])
  return 'present'
end
if redis.call('EXISTS', KEYS[4]) == 0 then return 'staging_missing' end
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[7], KEYS[8])
for i = 1, 3 do
  if redis.call('EXISTS', KEYS[i + 3]) == 1 then
    redis.call('RENAME', KEYS[i + 3], KEYS[i])
    redis.call('PERSIST', KEYS[i])
  end
end
return 'ok'
";

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
    /// The nodes' leases (never staged: a new ledger has none).
    leases: String,
}

impl SaleKeys {
    fn new(prefix: &str, sale: SaleId) -> Self {
        let tag = format!("{{fs:{prefix}:{sale}}}");
        Self {
            meta: format!("{tag}:meta"),
            res: format!("{tag}:res"),
            buyers: format!("{tag}:buyers"),
            pend: format!("{tag}:pend"),
            leases: format!("{tag}:leases"),
        }
    }

    /// Keys of the same slot for building a ledger before it replaces this one.
    fn staging(&self, nonce: u64) -> Self {
        Self {
            meta: format!("{}:staging:{nonce}", self.meta),
            res: format!("{}:staging:{nonce}", self.res),
            buyers: format!("{}:staging:{nonce}", self.buyers),
            pend: format!("{}:staging:{nonce}", self.pend),
            leases: format!("{}:staging:{nonce}", self.leases),
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
    available: Script,
    release_lease: Script,
    pending: Script,
    entry: Script,
    swap_in: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            reserve: Script::new(RESERVE_LUA),
            confirm: Script::new(CONFIRM_LUA),
            cancel_pending: Script::new(&format!("{RELEASE_LUA}{CANCEL_PENDING_TAIL_LUA}")),
            return_unit: Script::new(&format!("{RELEASE_LUA}{RETURN_UNIT_TAIL_LUA}")),
            available: Script::new(AVAILABLE_LUA),
            release_lease: Script::new(RELEASE_LEASE_LUA),
            pending: Script::new(PENDING_LUA),
            entry: Script::new(ENTRY_LUA),
            swap_in: Script::new(SWAP_IN_LUA),
        }
    }

    fn all(&self) -> [&Script; 9] {
        [
            &self.reserve,
            &self.confirm,
            &self.cancel_pending,
            &self.return_unit,
            &self.available,
            &self.release_lease,
            &self.pending,
            &self.entry,
            &self.swap_in,
        ]
    }
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
        if let Some(lease) = &config.lease
            && (lease.units_max == 0 || lease.ttl_ms == 0)
        {
            return Err(fail(
                "lease units_max and ttl_ms must be greater than 0".to_owned(),
            ));
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
            .map_err(|e| redis_error(what, &e, writes))
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

/// An entry of the `res` hash: state letter, batch field, buyer.
fn encode_entry(letter: char, batch: Option<BatchId>, buyer: &BuyerId) -> String {
    match batch {
        Some(batch) => format!("{letter}{batch}{buyer}"),
        None => format!("{letter}{NO_BATCH}{buyer}"),
    }
}

fn decode_entry(text: &str) -> BackendResult<LedgerEntry> {
    let bad = || unexpected("reading a reservation", text);
    let state = match text.as_bytes().first() {
        Some(b'P') => ReservationState::Pending,
        Some(b'D') => ReservationState::Durable,
        Some(b'R') => ReservationState::Returned,
        _ => return Err(bad()),
    };
    let batch_text = text.get(1..1 + BATCH_CHARS).ok_or_else(bad)?;
    let batch = if batch_text == NO_BATCH {
        None
    } else {
        Some(BatchId::parse(batch_text).map_err(|_| bad())?)
    };
    let buyer = text
        .get(1 + BATCH_CHARS..)
        .and_then(|b| BuyerId::parse(b).ok())
        .ok_or_else(bad)?;
    Ok(LedgerEntry {
        state,
        buyer,
        batch,
    })
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
                let letter = if *live { 'D' } else { 'R' };
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
                    "duplicate:P" => ReserveOutcome::Duplicate(ReservationState::Pending),
                    "duplicate:D" => ReserveOutcome::Duplicate(ReservationState::Durable),
                    "duplicate:R" => ReserveOutcome::Duplicate(ReservationState::Returned),
                    other => return Err(unexpected("reserving", other)),
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
        for key in [
            &keys.meta,
            &keys.res,
            &keys.buyers,
            &keys.pend,
            &keys.leases,
        ] {
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
    fn entries_round_trip_with_and_without_a_batch() {
        let buyer = BuyerId::parse("a|b-c").expect("buyer");
        let batch = BatchId(Uuid::from_u128(99));
        for (letter, batch) in [('P', Some(batch)), ('D', None), ('R', Some(batch))] {
            let text = encode_entry(letter, batch, &buyer);
            let entry = decode_entry(&text).expect("decodes");
            assert_eq!(entry.buyer, buyer);
            assert_eq!(entry.batch, batch);
        }
        for bad in ["", "X", "P123", &format!("Q{NO_BATCH}a")] {
            assert!(decode_entry(bad).is_err(), "{bad:?}");
        }
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
