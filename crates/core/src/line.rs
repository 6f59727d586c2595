//! The fair line (waiting room) in front of a sale's buy path: its spec, its ids, the seeded
//! draw, and the rules of admission, as pure functions of the line's state and `now`.
//!
//! The contract a third party can check:
//!
//! - **Line id** of a buyer in a sale: the lowercase hex SHA-256 of the ASCII bytes of the sale
//!   id (36 characters, lowercase, hyphenated), one `:` (0x3A), and the UTF-8 bytes of the
//!   buyer id. Its 64 hex characters are what the log publishes instead of the buyer id.
//! - **Seed**: 32 random bytes drawn when the line is set up, published as 64 lowercase hex
//!   characters once the sale has started. **Commitment**: the lowercase hex SHA-256 of the 32
//!   seed bytes, published from the moment the line opens.
//! - **Draw key** of a line id: `HMAC-SHA256(key = the 32 seed bytes, message = the 64 ASCII
//!   hex characters of the line id)`. At the start, the pre-queue (everyone who joined before
//!   `starts_at`) takes positions 1, 2, … in ascending order of draw key (compared as bytes;
//!   equal keys, which SHA-256 makes practically impossible, by line id). Who joins later gets
//!   the next position in order of arrival.
//!
//! Admission: positions `1..=admitted_up_to` have been let through. The counter advances at
//! a rate (a token bucket holding at most one second's worth, full at the start), and never
//! further than the units left can serve: it stops while the admitted buyers who have not
//! bought yet (the holders) are as many as the units not reserved. A holder whose admission is
//! not used within `admission_secs` passes and stops holding; a unit that comes back raises
//! the units left; either lets the counter move on to the next positions (back-fill).

use crate::ids::{BuyerId, SaleId};
use crate::sale::SpecError;
use hmac::{Hmac, Mac};
use serde::de::{Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use time::{Duration, OffsetDateTime};

/// Fastest fixed admission rate, in buyers per second.
pub const ADMIT_PER_SEC_MAX: u32 = 100_000;
/// Shortest and longest time an admitted buyer has to buy, in seconds.
pub const ADMISSION_SECS_MIN: u32 = 10;
pub const ADMISSION_SECS_MAX: u32 = 3600;
/// Earliest a line may open before its sale starts, in seconds (7 days).
pub const LINE_OPENS_BEFORE_START_SECS_MAX: i64 = 7 * 24 * 3600;
/// Bounds of the wait a poller is told before asking again, in seconds.
pub const POLL_AFTER_SECS_MIN: u64 = 1;
pub const POLL_AFTER_SECS_MAX: u64 = 30;
/// Joins per second, across the whole line, from which a sale's proof of work starts to rise
/// (when it may: `pow_difficulty_bits_max`).
pub const POW_RISE_FROM_JOINS_PER_SEC: u64 = 1000;

/// How fast the line lets buyers through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmitRate {
    /// This many buyers per second (1 to `ADMIT_PER_SEC_MAX`).
    Fixed(u32),
    /// At the rate the durable path sustains, measured while the sale runs.
    Auto,
}

impl Serialize for AdmitRate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            AdmitRate::Fixed(rate) => serializer.serialize_u32(*rate),
            AdmitRate::Auto => serializer.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for AdmitRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RateVisitor;
        impl Visitor<'_> for RateVisitor {
            type Value = AdmitRate;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a whole number of buyers per second, or \"auto\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<AdmitRate, E> {
                u32::try_from(v)
                    .map(AdmitRate::Fixed)
                    .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<AdmitRate, E> {
                u64::try_from(v)
                    .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<AdmitRate, E> {
                // Whole-number floats, as for every integer field of a sale spec.
                if v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v) {
                    Ok(AdmitRate::Fixed(v as u32))
                } else {
                    Err(E::invalid_value(Unexpected::Float(v), &self))
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AdmitRate, E> {
                if v == "auto" {
                    Ok(AdmitRate::Auto)
                } else {
                    Err(E::invalid_value(Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(RateVisitor)
    }
}

/// A sale's waiting room, as the admin sets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WaitingRoomSpec {
    /// RFC 3339: when buyers may start to join; before `starts_at`, at most 7 days before.
    #[serde(with = "time::serde::rfc3339")]
    pub opens_at: OffsetDateTime,
    /// Buyers let through per second (1 to 100000), or `"auto"`: as fast as the durable path
    /// sustains.
    #[cfg_attr(feature = "openapi", schema(value_type = AdmitRateSchema))]
    pub admit_per_sec: AdmitRate,
    /// How long an admitted buyer has to buy, in seconds (10 to 3600).
    #[serde(deserialize_with = "crate::sale::whole_number::deserialize")]
    #[cfg_attr(feature = "openapi", schema(minimum = 10, maximum = 3600))]
    pub admission_secs: u32,
    /// Proof of work a new place in line costs (0 to 32; 0, the default, asks none): a join
    /// must bring a challenge from `line/challenge` and a nonce whose SHA-256 (challenge, then
    /// nonce) starts with this many zero bits, about 2^bits hashes of the buyer's device.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 32))]
    pub pow_difficulty_bits: u8,
    /// When set (from `pow_difficulty_bits` to 32), the difficulty rises with the join rate:
    /// one bit more at 1000 joins per second across the line, and one more at each doubling
    /// from there (2000, 4000, …), never past this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 32))]
    pub pow_difficulty_bits_max: Option<u8>,
}

/// `admit_per_sec` in the API document: an integer from 1 to 100000, or the string `auto`.
#[cfg(feature = "openapi")]
pub struct AdmitRateSchema;

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for AdmitRateSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(ADMIT_PER_SEC_MAX)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["auto"])),
            )
            .description(Some(
                "Buyers let through per second (1 to 100000), or `auto`: as fast as the durable path sustains.",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for AdmitRateSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("AdmitRate")
    }
}

fn spec_error(field: &'static str, message: impl Into<String>) -> SpecError {
    SpecError {
        field,
        message: message.into(),
    }
}

impl WaitingRoomSpec {
    /// Checks the fields against the sale's start; the first problem found is returned.
    pub fn validate(&self, starts_at: OffsetDateTime) -> Result<(), SpecError> {
        if self.opens_at >= starts_at {
            return Err(spec_error(
                "waiting_room.opens_at",
                "must be before starts_at",
            ));
        }
        if starts_at - self.opens_at > Duration::seconds(LINE_OPENS_BEFORE_START_SECS_MAX) {
            return Err(spec_error(
                "waiting_room.opens_at",
                "must be at most 7 days before starts_at",
            ));
        }
        if self.opens_at.unix_timestamp() < 0 {
            return Err(spec_error(
                "waiting_room.opens_at",
                "must be after the year 1970 (in UTC)",
            ));
        }
        if let AdmitRate::Fixed(rate) = self.admit_per_sec
            && !(1..=ADMIT_PER_SEC_MAX).contains(&rate)
        {
            return Err(spec_error(
                "waiting_room.admit_per_sec",
                format!("must be between 1 and {ADMIT_PER_SEC_MAX}, or \"auto\""),
            ));
        }
        if !(ADMISSION_SECS_MIN..=ADMISSION_SECS_MAX).contains(&self.admission_secs) {
            return Err(spec_error(
                "waiting_room.admission_secs",
                format!("must be between {ADMISSION_SECS_MIN} and {ADMISSION_SECS_MAX}"),
            ));
        }
        let bits_max = crate::pow::DIFFICULTY_BITS_MAX;
        if self.pow_difficulty_bits > bits_max {
            return Err(spec_error(
                "waiting_room.pow_difficulty_bits",
                format!("must be between 0 (no proof of work) and {bits_max}"),
            ));
        }
        if let Some(max) = self.pow_difficulty_bits_max
            && !(self.pow_difficulty_bits..=bits_max).contains(&max)
        {
            return Err(spec_error(
                "waiting_room.pow_difficulty_bits_max",
                format!("must be between pow_difficulty_bits and {bits_max}"),
            ));
        }
        Ok(())
    }

    /// The difficulty a new place costs while joins arrive at `joins_per_sec` across the line.
    pub fn pow_difficulty_bits_at(&self, joins_per_sec: u64) -> u8 {
        pow_difficulty_bits(
            self.pow_difficulty_bits,
            self.pow_difficulty_bits_max,
            joins_per_sec,
        )
    }
}

/// The proof of work's curve: `base` bits, plus one at `POW_RISE_FROM_JOINS_PER_SEC` joins
/// per second and one more at each doubling from there, never past `max` (no rise without
/// one). A flood of joins thus pays more per join as it grows, and a buyer's worst case is
/// bounded by `max`.
pub fn pow_difficulty_bits(base: u8, max: Option<u8>, joins_per_sec: u64) -> u8 {
    let Some(max) = max else {
        return base;
    };
    let rise = match joins_per_sec / POW_RISE_FROM_JOINS_PER_SEC {
        0 => 0,
        doublings => doublings.ilog2() + 1,
    };
    let bits = u32::from(base).saturating_add(rise);
    bits.min(u32::from(max.max(base))) as u8
}

/// Bytes as lowercase hex (line ids, seeds, the chains' hashes).
pub fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_into(bytes, &mut out);
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// Writes `bytes` as lowercase hex into `out`, which is exactly twice as long. By table, not
/// `write!("{b:02x}")`: a poll's answer carries a 64-character hash, and the formatter's
/// per-byte machinery showed in the `line/me` profile.
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    assert_eq!(out.len(), bytes.len() * 2, "two digits a byte");
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// `N` bytes from exactly `2N` lowercase hex characters.
pub fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        out[i] = digit(chunk[0])? << 4 | digit(chunk[1])?;
    }
    Some(out)
}

/// A buyer's id in one sale's line: what the published log shows instead of the buyer id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LineId(pub [u8; 32]);

impl LineId {
    pub fn of(sale: SaleId, buyer: &BuyerId) -> Self {
        let mut hash = Sha256::new();
        hash.update(
            sale.encode(&mut [0; uuid::fmt::Hyphenated::LENGTH])
                .as_bytes(),
        );
        hash.update(b":");
        hash.update(buyer.as_str().as_bytes());
        Self(hash.finalize().into())
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Reads 64 lowercase hex characters.
    pub fn parse(text: &str) -> Option<Self> {
        unhex(text).map(Self)
    }
}

impl fmt::Debug for LineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LineId({})", self.to_hex())
    }
}

impl fmt::Display for LineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A line's draw order: where a line id lands in the pre-queue.
pub type DrawKey = [u8; 32];

/// The secret the draw is seeded with; revealed once the sale has started.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Seed(pub [u8; 32]);

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never printed before it is public: a log line could leak the draw.
        write!(f, "Seed(commitment {})", self.commitment())
    }
}

impl Seed {
    /// The lowercase hex SHA-256 of the seed bytes, published when the line opens.
    pub fn commitment(&self) -> String {
        hex(&Sha256::digest(self.0))
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    pub fn parse(text: &str) -> Option<Self> {
        unhex(text).map(Self)
    }

    /// `HMAC-SHA256(key = seed, message = the line id's 64 hex characters)`.
    pub fn draw_key(&self, line: &LineId) -> DrawKey {
        self.draw_keys().of(line)
    }

    /// The draw keys of this seed, keyed once: for many line ids (every join of a sale, a
    /// verifier redoing a draw of a million), cheaper than `draw_key` one at a time.
    pub fn draw_keys(&self) -> DrawKeys {
        DrawKeys {
            mac: <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length"),
        }
    }
}

/// A seed's keyed HMAC state (`Seed::draw_keys`); never shows the seed.
#[derive(Clone)]
pub struct DrawKeys {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for DrawKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DrawKeys(<seed>)")
    }
}

impl DrawKeys {
    /// `Seed::draw_key` of `line`.
    pub fn of(&self, line: &LineId) -> DrawKey {
        let mut text = [0u8; 64];
        hex_into(&line.0, &mut text);
        let mut mac = self.mac.clone();
        mac.update(&text);
        mac.finalize().into_bytes().into()
    }
}

/// The pre-queue in draw order: line ids sorted by (draw key, line id).
pub fn draw_order(seed: &Seed, members: impl IntoIterator<Item = LineId>) -> Vec<LineId> {
    let keys = seed.draw_keys();
    let mut keyed: Vec<(DrawKey, LineId)> = members
        .into_iter()
        .map(|line| (keys.of(&line), line))
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, line)| line).collect()
}

/// The times a line runs by, from its sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTimes {
    pub opens_at: OffsetDateTime,
    pub starts_at: OffsetDateTime,
    pub ends_at: OffsetDateTime,
    pub admission_secs: u32,
}

/// What the line needs to know of the sale at the moment it advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmitInputs {
    /// Buyers per second to let through now (the fixed rate, or what "auto" measured); 0 holds
    /// the line.
    pub rate_per_sec: u32,
    /// Units not reserved by anyone.
    pub units_left: u64,
    /// Units reserved but not paid, which may still come back.
    pub units_returnable: u64,
}

/// Why a join is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefused {
    #[error("the line opens at opens_at")]
    NotOpen,
    #[error("the sale has ended")]
    Ended,
    /// The sale asks a proof of work for a new place, and the join brought none.
    #[error("a new place in this line needs a solved challenge")]
    ProofMissing,
    /// The challenge already bought a place.
    #[error("the challenge was used already")]
    ChallengeUsed,
}

/// A challenge's id (`pow::ChallengeInfo::id`): the line remembers the ids that bought a
/// place, so a solved challenge works once.
pub type ChallengeId = [u8; 16];

/// What a join brings toward the sale's proof of work (the caller has checked the challenge's
/// signature, expiry and solution; the line checks that it was not used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinProof {
    /// The sale asks for none.
    NotAsked,
    /// The sale asks for one and the join brings none: a member is told their place (joining
    /// again costs nothing), a newcomer is refused.
    Missing,
    /// A solved challenge.
    Solved(ChallengeId),
}

/// One record of a line's join chain: a member's first join, in the order the line took it.
/// `line_log` hashes the chain and checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinRecord {
    pub line: LineId,
    /// The joiner's time as the line took it, in whole Unix milliseconds (floored).
    pub joined_at_ms: i64,
}

/// One record of a line's event chain, in the order the line made them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEvent {
    /// Positions up to `up_to` admitted, at `at_ms` (the admission's time, whose end is
    /// `admission_secs` later; admissions within a second share the first one's time).
    Admitted { up_to: u64, at_ms: i64 },
    /// A buy under the admission of `position` (the first one only).
    Bought { position: u64 },
    /// The admissions of every position up to `up_to` have ended (`up_to` is the last
    /// position of an admission): each of them without a `Bought` before this record passed.
    /// A `Bought` after it is a buy made in the admission's last moments and noted after the
    /// line saw the end (the buy path notes a buy once it has been accepted).
    Passed { up_to: u64 },
    /// No unit was left to admit anyone for while positions up to `after` (the last admitted)
    /// were admitted: the positions after it wait only for units that come back. An admission
    /// after it is back-fill for such a unit; the next `SoldOut` has a higher `after`.
    SoldOut { after: u64 },
}

/// What one `Line::advance` did, in the order its event records went on the chain: the
/// admissions that ended, then the stock running out or an admission (never both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Advanced {
    /// Admissions ended up to this position (`LineEvent::Passed`; replay: `apply_ended`).
    pub ended_up_to: Option<u64>,
    /// Out of units after this position (`LineEvent::SoldOut`; replay: `apply_sold_out`).
    pub sold_out_after: Option<u64>,
    /// The admission made: (the last position admitted, when) (replay: `apply_admission`).
    pub admission: Option<(u64, OffsetDateTime)>,
}

/// Whole Unix milliseconds, floored (as the Redis backend passes times).
pub fn unix_ms(at: OffsetDateTime) -> i64 {
    at.unix_timestamp_nanos().div_euclid(1_000_000) as i64
}

/// A place in line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Joined before the start; the draw at the start gives the position.
    PreQueue,
    /// 1-based.
    Position(u64),
}

/// Where a buyer stands, as `line/me` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Joined before the start, not drawn yet.
    PreQueue,
    /// Not admitted yet; `ahead` positions are before this one and not admitted.
    Waiting { position: u64, ahead: u64 },
    /// May buy until `until`.
    Admitted {
        position: u64,
        until: OffsetDateTime,
    },
    /// Bought under an admission that has since ended.
    Bought { position: u64 },
    /// Was admitted and did not buy in time.
    Passed { position: u64 },
    /// Out of reach: the holders ahead may take every unit left, counting those that may come
    /// back. Turns back into `Waiting` if units come back.
    SoldOut { position: u64, ahead: u64 },
}

/// How the admins steer a running line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LineControl {
    /// The counter holds while paused.
    pub paused: bool,
    /// Replaces the sale's `admit_per_sec` while set.
    pub rate: Option<AdmitRate>,
}

/// A line at a glance (the admin view, and what `line/me` needs for everyone not admitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineSummary {
    /// Members, pre-queue included.
    pub length: u64,
    /// Members who joined before the start.
    pub pre_queue: u64,
    pub drawn: bool,
    pub admitted_up_to: u64,
    /// Admitted, admission running, not bought.
    pub holders: u64,
    /// Admitted positions that bought.
    pub bought: u64,
    pub control: LineControl,
}

impl LineSummary {
    /// Admitted positions whose admission ended unused.
    pub fn passed(&self) -> u64 {
        self.admitted_up_to - self.bought - self.holders
    }
}

/// One sale's line: who joined, the draw, and the admission counter. The embedded backend
/// keeps it as it is; the Redis backend keeps the same state in keys and follows the same rules
/// in its scripts (both pass the line section of the conformance suite). The draw keys come
/// from the caller (`Seed::draw_key`), so a line never holds its seed.
#[derive(Debug, Clone)]
pub struct Line {
    times: LineTimes,
    /// Before the draw: who joined, with their draw keys and their index in the join chain.
    pre_queue: HashMap<LineId, (DrawKey, u64)>,
    /// After the draw: the join chain index of each pre-queue position (position 1 first).
    /// A member who joined after the draw has index = position.
    pre_queue_index: Vec<u64>,
    /// The join chain: every member's first join, in order.
    joins: Vec<JoinRecord>,
    /// The event chain: admissions and buys, in order.
    events: Vec<LineEvent>,
    /// After the draw: every member's position, and the members in position order.
    positions: HashMap<LineId, u64>,
    members: Vec<LineId>,
    drawn: bool,
    admitted_up_to: u64,
    /// Admission credit in thousandths of a buyer.
    credit_milli: u64,
    last_advance: Option<OffsetDateTime>,
    /// Admissions not yet ended, oldest first: (last position admitted, when). Times never go
    /// down, so the running ones are a suffix.
    admissions: VecDeque<(u64, OffsetDateTime)>,
    /// Positions at or below this one were admitted in admissions that have ended.
    ended_up_to: u64,
    /// The last `SoldOut` event's position, so the stock running out is chained once per
    /// admission.
    sold_out_after: Option<u64>,
    /// Positions that bought under their admission.
    bought: BTreeSet<u64>,
    /// Members who joined before the start (set at the draw).
    pre_queue_len: u64,
    control: LineControl,
    /// The challenges that bought a place (one per member at most).
    challenges_used: HashSet<ChallengeId>,
}

impl Line {
    pub fn new(times: LineTimes) -> Self {
        assert!(
            times.opens_at < times.starts_at,
            "a line opens before its sale"
        );
        Self {
            times,
            pre_queue: HashMap::new(),
            pre_queue_index: Vec::new(),
            joins: Vec::new(),
            events: Vec::new(),
            positions: HashMap::new(),
            members: Vec::new(),
            drawn: false,
            admitted_up_to: 0,
            credit_milli: 0,
            last_advance: None,
            admissions: VecDeque::new(),
            ended_up_to: 0,
            sold_out_after: None,
            bought: BTreeSet::new(),
            pre_queue_len: 0,
            control: LineControl::default(),
            challenges_used: HashSet::new(),
        }
    }

    pub fn times(&self) -> LineTimes {
        self.times
    }

    /// Members so far (pre-queue included).
    pub fn len(&self) -> u64 {
        if self.drawn {
            self.members.len() as u64
        } else {
            self.pre_queue.len() as u64
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn admitted_up_to(&self) -> u64 {
        self.admitted_up_to
    }

    pub fn is_drawn(&self) -> bool {
        self.drawn
    }

    pub fn control(&self) -> LineControl {
        self.control
    }

    /// Pauses, resumes or re-rates the line.
    pub fn set_control(&mut self, control: LineControl) {
        self.control = control;
    }

    /// Moves the line's times (the sale was edited, started or stopped early). Before the
    /// draw every time may move; after it the start stays where the draw happened, and only
    /// the end and the admission time follow.
    pub fn set_times(&mut self, times: LineTimes) {
        assert!(
            times.opens_at < times.starts_at,
            "a line opens before its sale"
        );
        if self.drawn {
            self.times.ends_at = times.ends_at;
            self.times.admission_secs = times.admission_secs;
        } else {
            self.times = times;
        }
    }

    pub fn summary(&self, now: OffsetDateTime) -> LineSummary {
        LineSummary {
            length: self.len(),
            pre_queue: if self.drawn {
                self.pre_queue_len
            } else {
                self.pre_queue.len() as u64
            },
            drawn: self.drawn,
            admitted_up_to: self.admitted_up_to,
            holders: self.holders(now),
            bought: self.bought.len() as u64,
            control: self.control,
        }
    }

    /// The members in position order (after the draw).
    pub fn members(&self) -> &[LineId] {
        &self.members
    }

    /// Joins the line of a sale that asks no proof of work (`join_with`, `JoinProof::NotAsked`).
    pub fn join(
        &mut self,
        line: LineId,
        key: DrawKey,
        now: OffsetDateTime,
    ) -> Result<Place, JoinRefused> {
        self.join_with(line, key, now, JoinProof::NotAsked)
    }

    /// Joins the line, or finds the place already held. `key` is the joiner's draw key
    /// (`Seed::draw_key`); it decides the place only for a join before the start. A used
    /// challenge is refused even to its member (it works once); a member needs none.
    pub fn join_with(
        &mut self,
        line: LineId,
        key: DrawKey,
        now: OffsetDateTime,
        proof: JoinProof,
    ) -> Result<Place, JoinRefused> {
        if now < self.times.opens_at {
            return Err(JoinRefused::NotOpen);
        }
        if now >= self.times.ends_at {
            return Err(JoinRefused::Ended);
        }
        if let JoinProof::Solved(id) = proof
            && self.challenges_used.contains(&id)
        {
            return Err(JoinRefused::ChallengeUsed);
        }
        self.draw_if_due(now);
        if let Some(place) = self.place(&line) {
            return Ok(place);
        }
        match proof {
            JoinProof::NotAsked => {}
            JoinProof::Missing => return Err(JoinRefused::ProofMissing),
            JoinProof::Solved(id) => {
                self.challenges_used.insert(id);
            }
        }
        self.joins.push(JoinRecord {
            line,
            joined_at_ms: unix_ms(now),
        });
        let index = self.joins.len() as u64;
        if !self.drawn {
            self.pre_queue.insert(line, (key, index));
            return Ok(Place::PreQueue);
        }
        self.members.push(line);
        debug_assert_eq!(
            index,
            self.members.len() as u64,
            "after the draw, index = position"
        );
        let position = self.members.len() as u64;
        self.positions.insert(line, position);
        Ok(Place::Position(position))
    }

    /// The draw, once, at the start: the pre-queue takes positions in draw-key order.
    pub fn draw_if_due(&mut self, now: OffsetDateTime) {
        if self.drawn || now < self.times.starts_at {
            return;
        }
        let mut keyed: Vec<(DrawKey, LineId, u64)> = self
            .pre_queue
            .drain()
            .map(|(line, (key, index))| (key, line, index))
            .collect();
        keyed.sort_unstable();
        self.pre_queue_index = keyed.iter().map(|(_, _, index)| *index).collect();
        self.members = keyed.into_iter().map(|(_, line, _)| line).collect();
        self.positions = self
            .members
            .iter()
            .enumerate()
            .map(|(i, line)| (*line, i as u64 + 1))
            .collect();
        self.drawn = true;
        self.pre_queue_len = self.members.len() as u64;
        // The bucket starts full: one second's worth goes through at the start.
        self.credit_milli = u64::MAX;
        self.last_advance = None;
    }

    /// A member's place: in the pre-queue before the draw, a position after it.
    pub fn place(&self, line: &LineId) -> Option<Place> {
        if self.drawn {
            self.position(line).map(Place::Position)
        } else {
            self.pre_queue.contains_key(line).then_some(Place::PreQueue)
        }
    }

    /// A member's index in the join chain (1-based): the receipt's place.
    pub fn receipt_index(&self, line: &LineId) -> Option<u64> {
        if let Some((_, index)) = self.pre_queue.get(line) {
            return Some(*index);
        }
        let position = self.position(line)?;
        Some(match self.pre_queue_index.get(position as usize - 1) {
            Some(index) => *index,
            None => position,
        })
    }

    /// The join chain from `from` (1-based), at most `limit` records.
    pub fn join_records(&self, from: u64, limit: usize) -> &[JoinRecord] {
        page(&self.joins, from, limit)
    }

    /// The event chain from `from` (1-based), at most `limit` records.
    pub fn events(&self, from: u64, limit: usize) -> &[LineEvent] {
        page(&self.events, from, limit)
    }

    /// The position of a member (after the draw).
    pub fn position(&self, line: &LineId) -> Option<u64> {
        self.positions.get(line).copied()
    }

    pub fn is_member(&self, line: &LineId) -> bool {
        self.positions.contains_key(line) || self.pre_queue.contains_key(line)
    }

    fn admission_ends(&self, at: OffsetDateTime) -> OffsetDateTime {
        at + Duration::seconds(i64::from(self.times.admission_secs))
    }

    /// Ends the admissions whose time is up; answers the last position they admitted if any
    /// ended.
    fn end_admissions(&mut self, now: OffsetDateTime) -> Option<u64> {
        let ended = self
            .admissions
            .iter()
            .take_while(|(_, at)| self.admission_ends(*at) <= now)
            .last()
            .map(|(up_to, _)| *up_to)?;
        self.apply_ended(ended);
        Some(ended)
    }

    /// Ends the admissions of every position up to `up_to`, the last position of an admission
    /// (what `advance` does when their time is up; a backend replaying its log calls it).
    pub fn apply_ended(&mut self, up_to: u64) {
        assert!(
            self.is_running_admission_end(up_to),
            "admissions end whole, in order, and only running ones"
        );
        while let Some(&(last, _)) = self.admissions.front() {
            if last > up_to {
                break;
            }
            self.admissions.pop_front();
        }
        self.ended_up_to = up_to;
        self.events.push(LineEvent::Passed { up_to });
    }

    /// Notes that no unit was left while positions up to `after` were admitted (what
    /// `advance` does; a backend replaying its log calls it).
    pub fn apply_sold_out(&mut self, after: u64) {
        assert!(
            after == self.admitted_up_to && self.sold_out_after != Some(after),
            "the stock runs out once per admission"
        );
        self.sold_out_after = Some(after);
        self.events.push(LineEvent::SoldOut { after });
    }

    /// Admitted buyers whose admission runs and who have not bought.
    pub fn holders(&self, now: OffsetDateTime) -> u64 {
        // Admission times never go down, so the running ones are a suffix.
        let ended = self
            .admissions
            .partition_point(|(_, at)| self.admission_ends(*at) <= now);
        if ended == self.admissions.len() {
            return 0;
        }
        let first_live = match ended {
            0 => self.ended_up_to + 1,
            n => self.admissions[n - 1].0 + 1,
        };
        let live = self.admitted_up_to + 1 - first_live;
        let bought = self.bought.range(first_live..).count() as u64;
        live - bought
    }

    /// Moves the admission counter as far as the rate and the units allow at `now`, ending
    /// the admissions whose time is up first. Answers what it did, for a backend that logs it.
    pub fn advance(&mut self, now: OffsetDateTime, inputs: AdmitInputs) -> Advanced {
        self.draw_if_due(now);
        if !self.drawn {
            return Advanced::default();
        }
        let mut advanced = Advanced {
            ended_up_to: self.end_admissions(now),
            ..Advanced::default()
        };
        if inputs.units_left == 0 && self.sold_out_after != Some(self.admitted_up_to) {
            self.apply_sold_out(self.admitted_up_to);
            advanced.sold_out_after = Some(self.admitted_up_to);
        }
        advanced.admission = self.admit(now, inputs);
        advanced
    }

    /// The admission `advance` makes, if the rate and the units allow one.
    fn admit(&mut self, now: OffsetDateTime, inputs: AdmitInputs) -> Option<(u64, OffsetDateTime)> {
        // A caller whose clock is behind the last advance's does not move time backwards.
        let now = self.last_advance.map_or(now, |last| now.max(last));
        let rate = u64::from(inputs.rate_per_sec);
        let burst_milli = rate.max(1) * 1000;
        if self.control.paused || rate == 0 {
            // No credit builds up while held: resuming does not let a crowd through at once.
            self.credit_milli = self.credit_milli.min(burst_milli);
            self.last_advance = Some(now);
            return None;
        }
        let elapsed_ms = self
            .last_advance
            .map(|last| (now - last).whole_milliseconds().max(0) as u64)
            .unwrap_or(0);
        self.credit_milli = self
            .credit_milli
            .saturating_add(rate.saturating_mul(elapsed_ms))
            .min(burst_milli);
        self.last_advance = Some(now);
        let room = inputs.units_left.saturating_sub(self.holders(now));
        let waiting = self.len() - self.admitted_up_to;
        let admit = (self.credit_milli / 1000).min(room).min(waiting);
        if admit == 0 {
            return None;
        }
        self.credit_milli -= admit * 1000;
        Some(self.apply_admission(self.admitted_up_to + admit, now))
    }

    /// Empties the rate bucket as of `at`: a backend replaying its log calls it after each
    /// admission it replays, since the credit left then is not logged. From there the credit
    /// builds up again at the rate, so a restart never lets through more than the rate allows.
    pub fn empty_bucket_at(&mut self, at: OffsetDateTime) {
        self.credit_milli = 0;
        self.last_advance = Some(self.last_advance.map_or(at, |last| last.max(at)));
    }

    /// Admits every position up to `up_to` at `at` (what `advance` does once it has decided;
    /// a backend replaying its log calls it directly). Returns the admission as recorded.
    pub fn apply_admission(&mut self, up_to: u64, at: OffsetDateTime) -> (u64, OffsetDateTime) {
        assert!(up_to > self.admitted_up_to, "admissions only move forward");
        assert!(up_to <= self.len(), "only members are admitted");
        self.admitted_up_to = up_to;
        // Admissions within one second of the last share its time (so its end): the list
        // stays at most `admission_secs` long however often the line is asked.
        let admission = match self.admissions.back_mut() {
            Some((last_up_to, last_at)) if at - *last_at < Duration::seconds(1) => {
                *last_up_to = up_to;
                (up_to, *last_at)
            }
            _ => {
                self.admissions.push_back((up_to, at));
                (up_to, at)
            }
        };
        self.events.push(LineEvent::Admitted {
            up_to,
            at_ms: unix_ms(admission.1),
        });
        admission
    }

    /// When the admission of an admitted position ends (`None` if not admitted, or ended).
    pub fn admitted_until(&self, position: u64) -> Option<OffsetDateTime> {
        if position == 0 || position <= self.ended_up_to || position > self.admitted_up_to {
            return None;
        }
        self.admissions
            .iter()
            .find(|(up_to, _)| *up_to >= position)
            .map(|(_, at)| self.admission_ends(*at))
    }

    /// Notes a buy under the admission of `position` (the first one; a repeat changes
    /// nothing).
    pub fn record_bought(&mut self, position: u64) {
        if self.bought.insert(position) {
            self.events.push(LineEvent::Bought { position });
        }
    }

    /// Whether a running admission's last position is `up_to` (so `apply_ended` may end the
    /// admissions up to it).
    pub fn is_running_admission_end(&self, up_to: u64) -> bool {
        self.admissions.iter().any(|(last, _)| *last == up_to)
    }

    /// The last position admitted when the line was last out of units, if it has been.
    pub fn sold_out_after(&self) -> Option<u64> {
        self.sold_out_after
    }

    pub fn has_bought(&self, position: u64) -> bool {
        self.bought.contains(&position)
    }

    /// Where a member stands at `now` (call `advance` first).
    pub fn standing(
        &self,
        line: &LineId,
        now: OffsetDateTime,
        inputs: AdmitInputs,
    ) -> Option<Standing> {
        if !self.drawn {
            return self
                .pre_queue
                .contains_key(line)
                .then_some(Standing::PreQueue);
        }
        let position = self.position(line)?;
        if position <= self.admitted_up_to {
            return Some(match self.admitted_until(position) {
                Some(until) if until > now => Standing::Admitted { position, until },
                _ if self.has_bought(position) => Standing::Bought { position },
                _ => Standing::Passed { position },
            });
        }
        let ahead = position - self.admitted_up_to - 1;
        let reach = (inputs.units_left + inputs.units_returnable).saturating_sub(self.holders(now));
        Some(if ahead >= reach {
            Standing::SoldOut { position, ahead }
        } else {
            Standing::Waiting { position, ahead }
        })
    }
}

/// Records `from..` (1-based), at most `limit` of them.
fn page<T>(records: &[T], from: u64, limit: usize) -> &[T] {
    let start = usize::try_from(from.saturating_sub(1))
        .unwrap_or(usize::MAX)
        .min(records.len());
    let end = start.saturating_add(limit).min(records.len());
    &records[start..end]
}

/// Seconds until a waiting position is likely admitted at `rate_per_sec`.
pub fn eta_secs(ahead: u64, rate_per_sec: u32) -> u64 {
    let rate = u64::from(rate_per_sec.max(1));
    (ahead + 1).div_ceil(rate)
}

/// How long a poller should wait before asking again: soon when its turn is near, rarely when
/// far, within `POLL_AFTER_SECS_MIN..=POLL_AFTER_SECS_MAX`, and never more than a third of
/// `admission_secs`, so a buyer hears of their turn with most of it left (an admission comes
/// suddenly to a place out of reach when units come back, and sooner than the estimate when
/// people ahead pass). A place just out of reach asks often; one far out of reach rarely.
pub fn poll_after_secs(
    standing: &Standing,
    eta_secs: u64,
    until_start_secs: u64,
    admission_secs: u32,
) -> u64 {
    let wanted = match standing {
        Standing::PreQueue => until_start_secs / 2,
        Standing::Waiting { .. } => eta_secs / 4,
        Standing::SoldOut { ahead, .. } => 1 + ahead / 8,
        Standing::Admitted { .. } | Standing::Bought { .. } | Standing::Passed { .. } => {
            POLL_AFTER_SECS_MAX
        }
    };
    let third_of_admission = (u64::from(admission_secs) / 3).max(POLL_AFTER_SECS_MIN);
    wanted
        .clamp(POLL_AFTER_SECS_MIN, POLL_AFTER_SECS_MAX)
        .min(third_of_admission)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-12-03 12:00 UTC);

    fn times() -> LineTimes {
        LineTimes {
            opens_at: T0 - Duration::minutes(10),
            starts_at: T0,
            ends_at: T0 + Duration::hours(1),
            admission_secs: 60,
        }
    }

    fn sale() -> SaleId {
        SaleId(uuid::Uuid::from_u128(0x1234))
    }

    fn member(n: u32) -> LineId {
        LineId::of(sale(), &BuyerId::parse(&format!("buyer-{n}")).unwrap())
    }

    /// The draw key of the tests' seed.
    fn key(line: LineId) -> DrawKey {
        Seed([42; 32]).draw_key(&line)
    }

    fn inputs(rate: u32, units_left: u64) -> AdmitInputs {
        AdmitInputs {
            rate_per_sec: rate,
            units_left,
            units_returnable: 0,
        }
    }

    #[test]
    fn hex_is_lowercase_two_digits_a_byte_and_reads_back() {
        let every: Vec<u8> = (0..=255).collect();
        let expected: String = every.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&every), expected);
        let bytes: [u8; 32] = every[100..132].try_into().unwrap();
        assert_eq!(unhex::<32>(&hex(&bytes)), Some(bytes));
    }

    #[test]
    fn the_line_id_and_the_draw_key_are_the_documented_bytes() {
        let sale = SaleId(uuid::Uuid::parse_str("6ba7b810-9dad-11d1-80b4-00c04fd430c8").unwrap());
        let line = LineId::of(sale, &BuyerId::parse("alice").unwrap());
        let expected: [u8; 32] =
            Sha256::digest(b"6ba7b810-9dad-11d1-80b4-00c04fd430c8:alice").into();
        assert_eq!(line.0, expected);
        assert_eq!(LineId::parse(&line.to_hex()), Some(line));
        let seed = Seed([7; 32]);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&[7; 32]).unwrap();
        mac.update(line.to_hex().as_bytes());
        let key: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(seed.draw_key(&line), key);
        let commitment: [u8; 32] = Sha256::digest([7u8; 32]).into();
        assert_eq!(seed.commitment(), hex(&commitment));
        assert_eq!(Seed::parse(&seed.to_hex()), Some(seed));
        assert_eq!(LineId::parse("00"), None);
        assert_eq!(LineId::parse(&"G".repeat(64)), None);
    }

    #[test]
    fn the_rate_takes_a_number_or_auto() {
        let rate = |json: &str| serde_json::from_str::<AdmitRate>(json).ok();
        assert_eq!(rate("50"), Some(AdmitRate::Fixed(50)));
        assert_eq!(rate("50.0"), Some(AdmitRate::Fixed(50)));
        assert_eq!(rate("\"auto\""), Some(AdmitRate::Auto));
        assert_eq!(rate("50.5"), None);
        assert_eq!(rate("-1"), None);
        assert_eq!(rate("\"fast\""), None);
        assert_eq!(serde_json::to_string(&AdmitRate::Auto).unwrap(), "\"auto\"");
        assert_eq!(serde_json::to_string(&AdmitRate::Fixed(5)).unwrap(), "5");
    }

    #[test]
    fn the_spec_is_checked_against_the_start() {
        let spec = WaitingRoomSpec {
            opens_at: T0 - Duration::hours(1),
            admit_per_sec: AdmitRate::Fixed(100),
            admission_secs: 120,
            pow_difficulty_bits: 0,
            pow_difficulty_bits_max: None,
        };
        assert_eq!(spec.validate(T0), Ok(()));
        let field = |spec: WaitingRoomSpec| spec.validate(T0).unwrap_err().field;
        let at_start = WaitingRoomSpec {
            opens_at: T0,
            ..spec.clone()
        };
        assert_eq!(field(at_start), "waiting_room.opens_at");
        let too_early = WaitingRoomSpec {
            opens_at: T0 - Duration::days(8),
            ..spec.clone()
        };
        assert_eq!(field(too_early), "waiting_room.opens_at");
        for rate in [0, ADMIT_PER_SEC_MAX + 1] {
            let wrong = WaitingRoomSpec {
                admit_per_sec: AdmitRate::Fixed(rate),
                ..spec.clone()
            };
            assert_eq!(field(wrong), "waiting_room.admit_per_sec");
        }
        for secs in [ADMISSION_SECS_MIN - 1, ADMISSION_SECS_MAX + 1] {
            let wrong = WaitingRoomSpec {
                admission_secs: secs,
                ..spec.clone()
            };
            assert_eq!(field(wrong), "waiting_room.admission_secs");
        }
        let too_hard = WaitingRoomSpec {
            pow_difficulty_bits: crate::pow::DIFFICULTY_BITS_MAX + 1,
            ..spec.clone()
        };
        assert_eq!(field(too_hard), "waiting_room.pow_difficulty_bits");
        for max in [15, crate::pow::DIFFICULTY_BITS_MAX + 1] {
            let wrong = WaitingRoomSpec {
                pow_difficulty_bits: 16,
                pow_difficulty_bits_max: Some(max),
                ..spec.clone()
            };
            assert_eq!(field(wrong), "waiting_room.pow_difficulty_bits_max");
        }
        let rising = WaitingRoomSpec {
            pow_difficulty_bits: 16,
            pow_difficulty_bits_max: Some(20),
            ..spec.clone()
        };
        assert_eq!(rising.validate(T0), Ok(()));
        let auto = WaitingRoomSpec {
            admit_per_sec: AdmitRate::Auto,
            ..spec
        };
        assert_eq!(auto.validate(T0), Ok(()));
    }

    #[test]
    fn the_difficulty_rises_a_bit_per_doubling_of_the_join_rate_and_stops_at_its_max() {
        let at = |rate| pow_difficulty_bits(16, Some(20), rate);
        assert_eq!(at(0), 16);
        assert_eq!(at(POW_RISE_FROM_JOINS_PER_SEC - 1), 16);
        assert_eq!(at(POW_RISE_FROM_JOINS_PER_SEC), 17);
        assert_eq!(at(2 * POW_RISE_FROM_JOINS_PER_SEC - 1), 17);
        assert_eq!(at(2 * POW_RISE_FROM_JOINS_PER_SEC), 18);
        assert_eq!(at(4 * POW_RISE_FROM_JOINS_PER_SEC), 19);
        assert_eq!(at(8 * POW_RISE_FROM_JOINS_PER_SEC), 20);
        assert_eq!(at(u64::MAX), 20, "bounded by the max");
        assert_eq!(
            pow_difficulty_bits(16, None, u64::MAX),
            16,
            "no max, no rise"
        );
        assert_eq!(pow_difficulty_bits(0, Some(0), u64::MAX), 0);
    }

    #[test]
    fn a_solved_challenge_buys_one_place_once_and_a_member_needs_none() {
        let mut line = Line::new(times());
        let before = T0 - Duration::seconds(30);
        let (alice, bob) = (member(1), member(2));
        assert_eq!(
            line.join_with(alice, key(alice), before, JoinProof::Missing),
            Err(JoinRefused::ProofMissing)
        );
        assert!(!line.is_member(&alice), "a refused join changes nothing");
        assert_eq!(
            line.join_with(alice, key(alice), before, JoinProof::Solved([1; 16])),
            Ok(Place::PreQueue)
        );
        // Her place is hers without a new proof; the used challenge is refused even to her.
        assert_eq!(
            line.join_with(alice, key(alice), before, JoinProof::Missing),
            Ok(Place::PreQueue)
        );
        assert_eq!(
            line.join_with(alice, key(alice), before, JoinProof::Solved([1; 16])),
            Err(JoinRefused::ChallengeUsed)
        );
        assert_eq!(
            line.join_with(bob, key(bob), before, JoinProof::Solved([1; 16])),
            Err(JoinRefused::ChallengeUsed)
        );
        assert!(!line.is_member(&bob));
        // After the start, the same rules in arrival order.
        assert_eq!(
            line.join_with(bob, key(bob), T0, JoinProof::Solved([2; 16])),
            Ok(Place::Position(2))
        );
        assert_eq!(
            line.join_with(bob, key(bob), T0, JoinProof::Missing),
            Ok(Place::Position(2))
        );
        assert_eq!(
            line.join_with(member(3), key(member(3)), T0, JoinProof::Missing),
            Err(JoinRefused::ProofMissing)
        );
        assert_eq!(line.len(), 2);
    }

    #[test]
    fn joins_are_idempotent_and_the_draw_is_the_seeded_order() {
        let seed = Seed([42; 32]);
        let mut line = Line::new(times());
        assert_eq!(
            line.join(member(0), key(member(0)), T0 - Duration::minutes(11)),
            Err(JoinRefused::NotOpen)
        );
        for n in 0..50 {
            assert_eq!(
                line.join(
                    member(n),
                    key(member(n)),
                    T0 - Duration::seconds(i64::from(50 - n))
                ),
                Ok(Place::PreQueue)
            );
        }
        assert_eq!(
            line.join(member(3), key(member(3)), T0 - Duration::seconds(1)),
            Ok(Place::PreQueue)
        );
        assert_eq!(line.len(), 50);
        // The first join at the start draws; later joiners follow in arrival order.
        assert_eq!(
            line.join(member(100), key(member(100)), T0),
            Ok(Place::Position(51))
        );
        assert_eq!(
            line.join(member(101), key(member(101)), T0),
            Ok(Place::Position(52))
        );
        assert_eq!(
            line.join(member(100), key(member(100)), T0),
            Ok(Place::Position(51))
        );
        let expected = draw_order(&seed, (0..50).map(member));
        assert_eq!(&line.members()[..50], &expected[..]);
        for (i, m) in expected.iter().enumerate() {
            assert_eq!(line.position(m), Some(i as u64 + 1));
        }
        // Arrival order does not decide the draw: member 0 (first in) is not simply first.
        let arrival: Vec<LineId> = (0..50).map(member).collect();
        assert_ne!(expected, arrival);
        assert_eq!(
            line.join(member(200), key(member(200)), T0 + Duration::hours(1)),
            Err(JoinRefused::Ended)
        );
    }

    #[test]
    fn admission_follows_the_rate_and_stops_at_the_stock() {
        let mut line = Line::new(times());
        for n in 0..100 {
            line.join(member(n), key(member(n)), T0 - Duration::seconds(5))
                .unwrap();
        }
        // Nothing is admitted before the start.
        line.advance(T0 - Duration::seconds(1), inputs(10, 1000));
        assert_eq!(line.admitted_up_to(), 0);
        // At the start one second's worth goes through at once.
        line.advance(T0, inputs(10, 1000));
        assert_eq!(line.admitted_up_to(), 10);
        line.advance(T0 + Duration::milliseconds(500), inputs(10, 1000));
        assert_eq!(line.admitted_up_to(), 15);
        // Credit never exceeds one second's worth.
        line.advance(T0 + Duration::seconds(10), inputs(10, 1000));
        assert_eq!(line.admitted_up_to(), 25);
        // Stock: 25 holders and 30 units left: 5 more at most, whatever the rate.
        line.advance(T0 + Duration::seconds(11), inputs(1000, 30));
        assert_eq!(line.admitted_up_to(), 30);
        assert_eq!(line.holders(T0 + Duration::seconds(11)), 30);
        // The first admissions end (60 s after the start): their 15 stop holding.
        assert_eq!(line.holders(T0 + Duration::seconds(60)), 15);
    }

    #[test]
    fn an_unused_admission_passes_and_the_line_moves_on() {
        let mut line = Line::new(times());
        for n in 0..10 {
            line.join(member(n), key(member(n)), T0 - Duration::seconds(5))
                .unwrap();
        }
        line.advance(T0, inputs(100, 2));
        assert_eq!(line.admitted_up_to(), 2);
        let first = line.members()[0];
        let second = line.members()[1];
        let third = line.members()[2];
        let until = T0 + Duration::seconds(60);
        assert_eq!(
            line.standing(&first, T0, inputs(100, 2)),
            Some(Standing::Admitted { position: 1, until })
        );
        assert_eq!(
            line.standing(&third, T0, inputs(100, 2)),
            Some(Standing::SoldOut {
                position: 3,
                ahead: 0
            })
        );
        // The first buys (a unit taken: one unit left, one holder).
        line.record_bought(1);
        let later = T0 + Duration::seconds(30);
        line.advance(later, inputs(100, 1));
        assert_eq!(line.admitted_up_to(), 2, "one holder for the one unit left");
        // The second's admission runs out: it passes, and the third is admitted for its unit.
        let after = T0 + Duration::seconds(60);
        line.advance(after, inputs(100, 1));
        assert_eq!(
            line.standing(&second, after, inputs(100, 1)),
            Some(Standing::Passed { position: 2 })
        );
        assert_eq!(
            line.standing(&first, after, inputs(100, 1)),
            Some(Standing::Bought { position: 1 })
        );
        assert_eq!(line.admitted_up_to(), 3);
        assert!(matches!(
            line.standing(&third, after, inputs(100, 1)),
            Some(Standing::Admitted { position: 3, .. })
        ));
    }

    #[test]
    fn units_that_come_back_go_to_the_next_in_line() {
        let mut line = Line::new(times());
        for n in 0..5 {
            line.join(member(n), key(member(n)), T0 - Duration::seconds(5))
                .unwrap();
        }
        line.advance(T0, inputs(100, 1));
        line.record_bought(1);
        let fourth = line.members()[3];
        // Sold out, with one unit unpaid that may come back: position 2 is within reach, 4 is not.
        let unpaid = AdmitInputs {
            rate_per_sec: 100,
            units_left: 0,
            units_returnable: 1,
        };
        let now = T0 + Duration::seconds(1);
        line.advance(now, unpaid);
        assert_eq!(line.admitted_up_to(), 1);
        assert_eq!(
            line.standing(&line.members()[1].clone(), now, unpaid),
            Some(Standing::Waiting {
                position: 2,
                ahead: 0
            })
        );
        assert_eq!(
            line.standing(&fourth, now, unpaid),
            Some(Standing::SoldOut {
                position: 4,
                ahead: 2
            })
        );
        // The order expires: its unit is back, and position 2 is admitted for it.
        let back = inputs(100, 1);
        line.advance(now + Duration::seconds(1), back);
        assert_eq!(line.admitted_up_to(), 2);
    }

    #[test]
    fn a_paused_line_holds_and_builds_no_credit() {
        let mut line = Line::new(times());
        for n in 0..100 {
            line.join(member(n), key(member(n)), T0 - Duration::seconds(5))
                .unwrap();
        }
        line.set_control(LineControl {
            paused: true,
            rate: None,
        });
        line.advance(T0, inputs(10, 1000));
        line.advance(T0 + Duration::seconds(30), inputs(10, 1000));
        assert_eq!(line.admitted_up_to(), 0);
        line.set_control(LineControl::default());
        line.advance(T0 + Duration::seconds(31), inputs(10, 1000));
        assert_eq!(
            line.admitted_up_to(),
            10,
            "at most one second's worth after a pause"
        );
    }

    #[test]
    fn polling_waits_are_bounded() {
        let waiting = Standing::Waiting {
            position: 10,
            ahead: 9,
        };
        assert_eq!(poll_after_secs(&waiting, 0, 0, 600), POLL_AFTER_SECS_MIN);
        assert_eq!(
            poll_after_secs(&waiting, 10_000, 0, 600),
            POLL_AFTER_SECS_MAX
        );
        assert_eq!(
            poll_after_secs(&waiting, 10_000, 0, 30),
            10,
            "a third of the admission"
        );
        let near = Standing::SoldOut {
            position: 3,
            ahead: 0,
        };
        let far = Standing::SoldOut {
            position: 900,
            ahead: 897,
        };
        assert_eq!(poll_after_secs(&near, 0, 0, 600), 1);
        assert_eq!(poll_after_secs(&far, 0, 0, 600), POLL_AFTER_SECS_MAX);
        assert_eq!(
            poll_after_secs(&Standing::PreQueue, 0, 3600, 600),
            POLL_AFTER_SECS_MAX
        );
        assert_eq!(eta_secs(0, 10), 1);
        assert_eq!(eta_secs(99, 10), 10);
        assert_eq!(eta_secs(5, 0), 6);
    }
}
