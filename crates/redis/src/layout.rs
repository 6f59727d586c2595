//! Where a sale lives in Redis and how its entries are written: the key names under one hash
//! tag, the `res` entry (state letter, batch, buyer) and the `leases` value (`units:expires`).
//!
//! The Rust constants here are the one source of truth for both formats. The Lua scripts never
//! spell an offset or a letter: each script starts with [`lua_prelude`], generated from these
//! constants, and reads and writes entries and leases only through the prelude's functions
//! (the test in `scripts.rs` refuses a script that parses them itself). Generating the prelude
//! beats passing the offsets as `ARGV` (every call would carry them, and `reserve`'s argument
//! list is already positional) and beats a test that greps literal offsets out of the Lua
//! (two sources kept equal by a check, instead of one).

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

impl SaleKeys {
    pub(crate) fn new(prefix: &str, sale: SaleId) -> Self {
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
