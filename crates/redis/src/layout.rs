//! Where a sale lives in Redis and how its entries are written: the key names under one hash
//! tag, the `res` entry (state letter, batch, buyer) and the `leases` value (`units:expires`);
//! and where the sale's waiting line lives beside its stock ([`LineKeys`]).
//!
//! The Rust constants here are the one source of truth for both formats. The Lua scripts never
//! spell an offset or a letter: each script starts with [`lua_prelude`], generated from these
//! constants, and reads and writes entries and leases only through the prelude's functions
//! (the test in `scripts.rs` refuses a script that parses them itself). Generating the prelude
//! beats passing the offsets as `ARGV` (every call would carry them, and `reserve`'s argument
//! list is already positional) and beats a test that greps literal offsets out of the Lua
//! (two sources kept equal by a check, instead of one).
//!
//! **The waiting line** of a sale (`RedisLine`, the rules of `flashsale_core::line::Line`)
//! lives under the same hash tag as its stock, `{fs:<prefix>:<sale>}:line:*`, so the line and
//! the ledger share one Redis Cluster slot. Every line script takes all eleven keys:
//! - `line:meta` (hash): `opens_ms`, `starts_ms`, `ends_ms` (Unix ms), `admission_ms`,
//!   `drawn` (`0`/`1`), `admitted_up_to`, `credit_milli` (the bucket, in thousandths of a
//!   buyer; [`CREDIT_FULL_MILLI`] at the draw), `last_advance_ms` (absent until the first
//!   advance after the draw), `ended_up_to`, `sold_out_after` (absent until the line first runs
//!   out of units), `paused` (`0`/`1`) and `rate` ([`encode_rate`]).
//!   Its absence is the answer "not set up": a Redis that restarted empty has no line, never
//!   an empty one;
//! - `line:pre` (sorted set, every score 0): one member per pre-queue joiner,
//!   `<draw key hex><line id hex>` (64 + 64 lowercase hex characters). Equal scores order
//!   members bytewise, which is the draw order `(draw key, line id)`; so the draw sorts
//!   nothing, and after it a pre-queue member's position is its `ZRANK` + 1. Never changes
//!   after the draw;
//! - `line:key` (hash): line id hex → draw key hex, for the pre-queue members (how a line id
//!   finds its member of `line:pre`);
//! - `line:pos` (hash): line id hex → position, for the members who joined after the draw;
//! - `line:late` (list): the line ids of those members in arrival order (position =
//!   `ZCARD line:pre` + index + 1), for paging through the members;
//! - `line:adm` (sorted set): the admissions not yet ended, score = the last position admitted
//!   (`up_to`), member = when (Unix ms). Both grow together, so "which admission holds position
//!   p" is one `ZRANGEBYSCORE`, and the ended ones are a prefix of the set. Admissions within
//!   [`ADMISSION_SHARED_MS`] of the last share its time, so the set holds at most one entry per
//!   second of `admission_ms`;
//! - `line:bought` (sorted set): positions that bought, score = member = position;
//! - `line:used` (set): the proof-of-work challenges that bought a place, by id (32 lowercase
//!   hex characters), one per member at most, so a challenge works once on every node;
//! - `line:chain` (list): the join chain (`core::line_log`), one `<line id hex>:<Unix ms>` per
//!   member's first join, appended by the join script itself, so every node sees one order
//!   and nodes cannot fork it (the hashes follow from the order; nodes compute them);
//! - `line:idx` (hash): line id hex → its index in `line:chain` (the receipt's place);
//! - `line:events` (list): the event chain, `a:<up to>:<Unix ms>` per admission (its shared
//!   time), `b:<position>` per first buy under an admission, `p:<up to>` when admissions end
//!   and `s:<after>` when the line runs out of units (once per admission; the meta's
//!   `sold_out_after` remembers the last), appended by the scripts that make them.
//!
//! Numbers in the scripts are Lua numbers (doubles), exact up to [`LUA_EXACT_MAX`]; the Rust
//! side clamps or refuses what could go beyond it, and the scripts refuse arguments beyond it
//! before they write.

use flashsale_core::line::{AdmitRate, DrawKey};
use flashsale_core::{BatchId, BuyerId, ReservationState, SaleId};
use flashsale_service::{BackendResult, LedgerEntry};
use std::ops::Range;

/// Taken in a batch: pending while the batch is in `pend`, durable once it is not. Stored
/// only; the scripts answer [`PENDING`] or [`DURABLE`] for it, never this letter.
pub(crate) const TAKEN: char = 'T';
/// Reserved, its batch not yet durable (an answer, never stored).
pub(crate) const PENDING: char = 'P';
/// Durable: restored from the store, or answered for a taken entry whose batch is confirmed.
pub(crate) const DURABLE: char = 'D';
/// Its unit was given back.
pub(crate) const RETURNED: char = 'R';

/// Length of a batch id as text; an entry holds one (or as many dashes) after its letter.
const BATCH_CHARS: usize = 36;
/// Where the batch sits in an entry, after the one-byte state letter; the buyer follows it.
const BATCH_RANGE: Range<usize> = 1..1 + BATCH_CHARS;
/// The batch field of an entry restored from the store, which has no batch.
pub(crate) const NO_BATCH: &str = "------------------------------------";
const _: () = assert!(NO_BATCH.len() == BATCH_CHARS);
/// Between a lease's units and its expiry (Redis ms) in the `leases` hash.
const LEASE_SEPARATOR: char = ':';

/// The keys of one sale, all under the hash tag `{fs:<prefix>:<sale>}` so they share one
/// Redis Cluster slot and every script touches a single slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SaleKeys {
    /// Hash: `total`, `limit`, `available` (the counter: units on no lease and in no
    /// reservation).
    pub(crate) meta: String,
    /// Hash: order id → entry ([`encode_entry`]).
    pub(crate) res: String,
    /// Hash: buyer id → live reservations.
    pub(crate) buyers: String,
    /// Hash: batch id → its reserved order ids (space-separated), for the batches not yet
    /// confirmed: what the reconciler reads (never staged: a new ledger has none).
    pub(crate) pend: String,
    /// Hash: node id → `<units>:<expires at, Redis ms>` (never staged: a new ledger has none).
    pub(crate) leases: String,
}

/// The hash tag every key of a sale starts with: its stock ledger and its line share one slot.
fn hash_tag(prefix: &str, sale: SaleId) -> String {
    format!("{{fs:{prefix}:{sale}}}")
}

impl SaleKeys {
    pub(crate) fn new(prefix: &str, sale: SaleId) -> Self {
        let tag = hash_tag(prefix, sale);
        Self {
            meta: format!("{tag}:meta"),
            res: format!("{tag}:res"),
            buyers: format!("{tag}:buyers"),
            pend: format!("{tag}:pend"),
            leases: format!("{tag}:leases"),
        }
    }

    /// Keys of the same slot for building a ledger before it replaces this one.
    pub(crate) fn staging(&self, nonce: u64) -> Self {
        Self {
            meta: format!("{}:staging:{nonce}", self.meta),
            res: format!("{}:staging:{nonce}", self.res),
            buyers: format!("{}:staging:{nonce}", self.buyers),
            pend: format!("{}:staging:{nonce}", self.pend),
            leases: format!("{}:staging:{nonce}", self.leases),
        }
    }
}

/// The Lua side of this module: the letters, the entry's 1-based offsets and the lease format
/// as locals and functions that every script starts with.
pub(crate) fn lua_prelude() -> String {
    let batch_first = BATCH_RANGE.start + 1;
    let batch_last = BATCH_RANGE.end;
    let buyer_first = BATCH_RANGE.end + 1;
    format!(
        "-- Generated from flashsale_redis::layout: the entry and lease formats.
local TAKEN, PENDING, DURABLE, RETURNED = '{TAKEN}', '{PENDING}', '{DURABLE}', '{RETURNED}'
local function letter_of(entry) return string.sub(entry, 1, 1) end
local function batch_of(entry) return string.sub(entry, {batch_first}, {batch_last}) end
local function buyer_of(entry) return string.sub(entry, {buyer_first}) end
local function entry_of(letter, batch, buyer) return letter .. batch .. buyer end
local function lease_units(lease)
  return tonumber(string.match(lease or '', '^(%d+){LEASE_SEPARATOR}')) or 0
end
local function lease_expires(lease)
  return tonumber(string.match(lease or '', '{LEASE_SEPARATOR}(%d+)$')) or 0
end
local function lease_of(units, expires) return units .. '{LEASE_SEPARATOR}' .. expires end
"
    )
}

/// An entry of the `res` hash: state letter, batch field, buyer.
pub(crate) fn encode_entry(letter: char, batch: Option<BatchId>, buyer: &BuyerId) -> String {
    match batch {
        Some(batch) => format!("{letter}{batch}{buyer}"),
        None => format!("{letter}{NO_BATCH}{buyer}"),
    }
}

/// The state a letter answers for, as the scripts answer it (never [`TAKEN`]).
pub(crate) fn state_of(letter: char) -> Option<ReservationState> {
    match letter {
        PENDING => Some(ReservationState::Pending),
        DURABLE => Some(ReservationState::Durable),
        RETURNED => Some(ReservationState::Returned),
        _ => None,
    }
}

pub(crate) fn decode_entry(text: &str) -> BackendResult<LedgerEntry> {
    let bad = || crate::unexpected("reading a reservation", text);
    let state = text
        .chars()
        .next()
        .filter(char::is_ascii)
        .and_then(state_of)
        .ok_or_else(bad)?;
    let batch_text = text.get(BATCH_RANGE).ok_or_else(bad)?;
    let batch = if batch_text == NO_BATCH {
        None
    } else {
        Some(BatchId::parse(batch_text).map_err(|_| bad())?)
    };
    let buyer = text
        .get(BATCH_RANGE.end..)
        .and_then(|b| BuyerId::parse(b).ok())
        .ok_or_else(bad)?;
    Ok(LedgerEntry {
        state,
        buyer,
        batch,
    })
}

/// The largest integer a Lua number (a double) holds exactly: every count, position, time and
/// credit a line script computes stays at or below it.
pub(crate) const LUA_EXACT_MAX: u64 = (1 << 53) - 1;
/// A full admission bucket at any rate a caller can pass (`u32` buyers per second, a second's
/// worth): the credit the draw sets, as `Line::draw_if_due`'s "as much as there is" does.
pub(crate) const CREDIT_FULL_MILLI: u64 = u32::MAX as u64 * 1000;
const _: () = assert!(CREDIT_FULL_MILLI <= LUA_EXACT_MAX);
/// Admissions closer than this to the last one share its time (`Line::apply_admission`).
pub(crate) const ADMISSION_SHARED_MS: u64 = 1000;
/// Length of a line id or a draw key as lowercase hex.
const LINE_HEX_CHARS: usize = 64;
/// The `rate` of a line's control when none replaces the sale's, and when it is "auto".
const RATE_NONE: &str = "";
const RATE_AUTO: &str = "auto";

/// The keys of one sale's waiting line, under the sale's hash tag (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineKeys {
    pub(crate) meta: String,
    pub(crate) pre: String,
    pub(crate) key: String,
    pub(crate) pos: String,
    pub(crate) late: String,
    pub(crate) adm: String,
    pub(crate) bought: String,
    pub(crate) used: String,
    pub(crate) chain: String,
    pub(crate) idx: String,
    pub(crate) events: String,
}

impl LineKeys {
    pub(crate) fn new(prefix: &str, sale: SaleId) -> Self {
        let tag = hash_tag(prefix, sale);
        Self {
            meta: format!("{tag}:line:meta"),
            pre: format!("{tag}:line:pre"),
            key: format!("{tag}:line:key"),
            pos: format!("{tag}:line:pos"),
            late: format!("{tag}:line:late"),
            adm: format!("{tag}:line:adm"),
            bought: format!("{tag}:line:bought"),
            used: format!("{tag}:line:used"),
            chain: format!("{tag}:line:chain"),
            idx: format!("{tag}:line:idx"),
            events: format!("{tag}:line:events"),
        }
    }

    /// Every key, in the order the line scripts take them (`line_head.lua`).
    pub(crate) fn all(&self) -> [&str; 11] {
        [
            &self.meta,
            &self.pre,
            &self.key,
            &self.pos,
            &self.late,
            &self.adm,
            &self.bought,
            &self.used,
            &self.chain,
            &self.idx,
            &self.events,
        ]
    }
}

/// A draw key as the scripts take it: 64 lowercase hex characters.
pub(crate) fn draw_key_hex(key: &DrawKey) -> String {
    flashsale_core::line::hex(key)
}

/// The control's rate as the `rate` field of `line:meta` holds it.
pub(crate) fn encode_rate(rate: Option<AdmitRate>) -> String {
    match rate {
        None => RATE_NONE.to_owned(),
        Some(AdmitRate::Auto) => RATE_AUTO.to_owned(),
        Some(AdmitRate::Fixed(per_sec)) => per_sec.to_string(),
    }
}

/// Reads the `rate` field back (`None` for text this code never writes).
pub(crate) fn decode_rate(text: &str) -> Option<Option<AdmitRate>> {
    match text {
        RATE_NONE => Some(None),
        RATE_AUTO => Some(Some(AdmitRate::Auto)),
        digits => digits
            .parse()
            .ok()
            .map(|per_sec| Some(AdmitRate::Fixed(per_sec))),
    }
}

/// The Lua side of the line's layout: its constants and the `line:pre` member format, as
/// locals and functions every line script starts with.
pub(crate) fn line_lua_prelude() -> String {
    let line_first = LINE_HEX_CHARS + 1;
    let sep = CHAIN_FIELD_SEPARATOR;
    let (admitted, bought) = (ADMITTED_EVENT, BOUGHT_EVENT);
    let (passed, sold_out) = (PASSED_EVENT, SOLD_OUT_EVENT);
    format!(
        "-- Generated from flashsale_redis::layout: the line's constants and record formats.
local LUA_EXACT_MAX = {LUA_EXACT_MAX}
local CREDIT_FULL_MILLI = {CREDIT_FULL_MILLI}
local ADMISSION_SHARED_MS = {ADMISSION_SHARED_MS}
local function pre_member(key, line) return key .. line end
local function line_of_pre_member(member) return string.sub(member, {line_first}) end
local function join_record(line, ms) return line .. '{sep}' .. string.format('%d', ms) end
local function admitted_event(up_to, ms)
  return '{admitted}{sep}' .. string.format('%d', up_to) .. '{sep}' .. string.format('%d', ms)
end
local function bought_event(position) return '{bought}{sep}' .. string.format('%d', position) end
local function passed_event(up_to) return '{passed}{sep}' .. string.format('%d', up_to) end
local function sold_out_event(after) return '{sold_out}{sep}' .. string.format('%d', after) end
"
    )
}

/// Between the fields of a `line:chain` or `line:events` record.
pub(crate) const CHAIN_FIELD_SEPARATOR: char = ':';
/// The first field of an admission in `line:events`.
pub(crate) const ADMITTED_EVENT: &str = "a";
/// The first field of a buy in `line:events`.
pub(crate) const BOUGHT_EVENT: &str = "b";
/// The first field of an end of admissions in `line:events`.
pub(crate) const PASSED_EVENT: &str = "p";
/// The first field of the stock running out in `line:events`.
pub(crate) const SOLD_OUT_EVENT: &str = "s";

#[cfg(test)]
mod tests {
    use super::*;
    use flashsale_service::conformance::env::REDIS;
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
    fn a_sales_line_shares_its_stocks_hash_tag() {
        let sale = SaleId(Uuid::from_u128(7));
        let tag = format!("{{fs:shop:{sale}}}");
        let line = LineKeys::new("shop", sale);
        let stock = SaleKeys::new("shop", sale);
        let keys = line.all();
        for key in keys {
            assert!(key.starts_with(&tag), "{key}");
            assert_eq!(key.matches('{').count(), 1, "{key}");
        }
        let distinct: std::collections::HashSet<&str> = keys.into_iter().collect();
        assert_eq!(distinct.len(), keys.len());
        assert!(!distinct.contains(stock.meta.as_str()));
    }

    #[test]
    fn rates_round_trip() {
        for rate in [None, Some(AdmitRate::Auto), Some(AdmitRate::Fixed(250))] {
            assert_eq!(decode_rate(&encode_rate(rate)), Some(rate));
        }
        assert_eq!(decode_rate("fast"), None);
        assert_eq!(decode_rate("-1"), None);
    }

    /// The line's prelude on the real server: its `line:pre` member is the draw key's hex then
    /// the line id's, and reading the line id back gives what Rust wrote; its constants are
    /// Rust's, exact in Lua.
    #[test]
    fn the_line_prelude_reads_and_writes_what_rust_does() {
        use flashsale_core::line::{LineId, Seed};
        let client = redis::Client::open(REDIS.url()).expect("client");
        let mut connection = client
            .get_connection()
            .unwrap_or_else(|e| panic!("{e} {}", REDIS.hint()));
        let script = redis::Script::new(&format!(
            "{}local member = pre_member(ARGV[1], ARGV[2])
            return {{member, line_of_pre_member(member), string.format('%d', LUA_EXACT_MAX),
              string.format('%d', CREDIT_FULL_MILLI), string.format('%d', ADMISSION_SHARED_MS)}}",
            line_lua_prelude()
        ));
        let line = LineId::of(
            SaleId(Uuid::from_u128(7)),
            &BuyerId::parse("a").expect("id"),
        );
        let key = Seed([5; 32]).draw_key(&line);
        let (member, read_back, exact, full, shared): (String, String, u64, u64, u64) = script
            .arg(draw_key_hex(&key))
            .arg(line.to_hex())
            .invoke(&mut connection)
            .expect("the prelude runs");
        assert_eq!(member, format!("{}{}", draw_key_hex(&key), line.to_hex()));
        assert_eq!(LineId::parse(&read_back), Some(line));
        assert_eq!(
            (exact, full, shared),
            (LUA_EXACT_MAX, CREDIT_FULL_MILLI, ADMISSION_SHARED_MS)
        );
        // Lowercase hex keeps the bytes' order: the members' order is the draw order.
        assert_eq!(
            draw_key_hex(&[0x0f; 32]) < draw_key_hex(&[0xa0; 32]),
            [0x0f] < [0xa0]
        );
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

    /// Ties the Lua side to the Rust side on the real server: the prelude reads what
    /// `encode_entry` writes, and `decode_entry` reads what the prelude writes.
    #[test]
    fn the_lua_prelude_reads_and_writes_what_rust_does() {
        let client = redis::Client::open(REDIS.url()).expect("client");
        let mut connection = client
            .get_connection()
            .unwrap_or_else(|e| panic!("{e} {}", REDIS.hint()));
        let script = redis::Script::new(&format!(
            "{}return {{letter_of(ARGV[1]), batch_of(ARGV[1]), buyer_of(ARGV[1]),
              entry_of(DURABLE, batch_of(ARGV[1]), buyer_of(ARGV[1])),
              lease_of(12, 1700000000123), lease_units(ARGV[2]), lease_expires(ARGV[2])}}",
            lua_prelude()
        ));
        let buyer = BuyerId::parse("a|b:c-7").expect("buyer");
        let batch = BatchId(Uuid::from_u128(99));
        for batch in [Some(batch), None] {
            let entry = encode_entry(TAKEN, batch, &buyer);
            let lease = format!("34{LEASE_SEPARATOR}5678");
            let (letter, batch_text, buyer_text, rewritten, lease_text, units, expires): (
                String,
                String,
                String,
                String,
                String,
                u32,
                u64,
            ) = script
                .arg(&entry)
                .arg(&lease)
                .invoke(&mut connection)
                .expect("the prelude runs");
            assert_eq!(letter, TAKEN.to_string());
            let expected_batch = batch.map_or(NO_BATCH.to_owned(), |b| b.to_string());
            assert_eq!(batch_text, expected_batch);
            assert_eq!(buyer_text, buyer.as_str());
            let decoded = decode_entry(&rewritten).expect("Rust reads the Lua's entry");
            assert_eq!(decoded.state, ReservationState::Durable);
            assert_eq!((decoded.batch, decoded.buyer), (batch, buyer.clone()));
            assert_eq!(lease_text, format!("12{LEASE_SEPARATOR}1700000000123"));
            assert_eq!((units, expires), (34, 5678));
        }
    }
}
