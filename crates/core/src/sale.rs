//! Sales: what an admin may create, how a sale moves through its phases, and when it may change.

use crate::ids::SaleId;
use crate::line::{LineTimes, WaitingRoomSpec};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// Longest sale name, in characters.
pub const SALE_NAME_CHARS_MAX: usize = 200;
/// Largest stock one sale may hold. Beyond this a "flash" sale is a warehouse.
pub const SALE_STOCK_UNITS_MAX: u32 = 10_000_000;
/// Highest price, in cents (ten billion currency units).
pub const SALE_PRICE_CENTS_MAX: u64 = 1_000_000_000_000;
/// Highest per-buyer limit.
pub const SALE_PER_BUYER_LIMIT_MAX: u32 = 100;
/// Shortest and longest time a winner has to pay, in seconds.
pub const PAYMENT_WINDOW_SECS_MIN: u32 = 5;
pub const PAYMENT_WINDOW_SECS_MAX: u32 = 7 * 24 * 3600;
/// Longest a sale may run, in days.
pub const SALE_DURATION_DAYS_MAX: i64 = 31;
/// Latest second a sale may name, 9999-12-31T23:59:59Z, as Unix seconds: the stores keep Unix
/// milliseconds and read back only the years 1970 to 9999 in UTC.
pub const SALE_UNIX_SECS_MAX: i64 = 253_402_300_799;

/// The sale name's pattern in the API document: at least one character that is not white
/// space, and no control characters (what `SaleSpec::validate` checks, in JSON Schema's regex
/// dialect; `char::is_whitespace` and `char::is_control` spelled out as ranges).
pub const SALE_NAME_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028-\u2029\u202F\u205F\u3000][^\u0000-\u001F\u007F-\u009F]*$";

// The bounds in the `schema(...)` attributes below repeat the constants above as literals (the
// attribute takes only literals). Two tests keep them in step: the HTTP crate's
// `documented_bounds_are_the_constants`, and the end-to-end
// `openapi::the_document_states_what_the_server_enforces`, which sends values just inside and
// just outside each bound.

/// What an admin asks for when creating a sale. Integer fields also take whole-number floats
/// (`9900.0`), as JSON Schema's `integer` does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SaleSpec {
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 200,
            pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028-\u2029\u202F\u205F\u3000][^\u0000-\u001F\u007F-\u009F]*$"
        )
    )]
    pub name: String,
    #[serde(deserialize_with = "whole_number::deserialize")]
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 1_000_000_000_000_u64)
    )]
    pub price_cents: u64,
    #[serde(deserialize_with = "whole_number::deserialize")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10_000_000))]
    pub stock: u32,
    /// RFC 3339, between the years 1970 and 9999 in UTC.
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    /// RFC 3339, after `starts_at` and at most 31 days after it.
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
    #[serde(deserialize_with = "whole_number::deserialize")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub per_buyer_limit: u32,
    #[serde(deserialize_with = "whole_number::deserialize")]
    #[cfg_attr(feature = "openapi", schema(minimum = 5, maximum = 604_800))]
    pub payment_window_secs: u32,
    /// A fair line in front of the buy path (see `crate::line`); without it, whoever's buy
    /// lands first after the start wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_room: Option<WaitingRoomSpec>,
}

/// A rejected field of a sale spec: names the field so the admin knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: &'static str,
    pub message: String,
}

fn spec_error(field: &'static str, message: impl Into<String>) -> SpecError {
    SpecError {
        field,
        message: message.into(),
    }
}

impl SaleSpec {
    /// Checks every field; the first problem found is returned, naming its field.
    pub fn validate(&self) -> Result<(), SpecError> {
        let name_chars = self.name.chars().count();
        if self.name.trim().is_empty() {
            return Err(spec_error("name", "must not be empty"));
        }
        if name_chars > SALE_NAME_CHARS_MAX {
            return Err(spec_error(
                "name",
                format!("must be at most {SALE_NAME_CHARS_MAX} characters"),
            ));
        }
        if self.name.chars().any(char::is_control) {
            return Err(spec_error("name", "must not contain control characters"));
        }
        if self.price_cents > SALE_PRICE_CENTS_MAX {
            return Err(spec_error(
                "price_cents",
                format!("must be at most {SALE_PRICE_CENTS_MAX}"),
            ));
        }
        if self.stock == 0 || self.stock > SALE_STOCK_UNITS_MAX {
            return Err(spec_error(
                "stock",
                format!("must be between 1 and {SALE_STOCK_UNITS_MAX}"),
            ));
        }
        if self.ends_at <= self.starts_at {
            return Err(spec_error("ends_at", "must be after starts_at"));
        }
        if self.ends_at - self.starts_at > Duration::days(SALE_DURATION_DAYS_MAX) {
            return Err(spec_error(
                "ends_at",
                format!("a sale may run at most {SALE_DURATION_DAYS_MAX} days"),
            ));
        }
        if self.per_buyer_limit == 0 || self.per_buyer_limit > SALE_PER_BUYER_LIMIT_MAX {
            return Err(spec_error(
                "per_buyer_limit",
                format!("must be between 1 and {SALE_PER_BUYER_LIMIT_MAX}"),
            ));
        }
        if !(PAYMENT_WINDOW_SECS_MIN..=PAYMENT_WINDOW_SECS_MAX).contains(&self.payment_window_secs)
        {
            return Err(spec_error(
                "payment_window_secs",
                format!("must be between {PAYMENT_WINDOW_SECS_MIN} and {PAYMENT_WINDOW_SECS_MAX}"),
            ));
        }
        if let Some(room) = &self.waiting_room {
            room.validate(self.starts_at)?;
        }
        // Timestamps are kept in milliseconds downstream; refuse what would not round-trip.
        // Checked on the instant, not on the year as written: an offset moves the instant, and
        // 9999-12-31T20:00-05:00 is already the year 10000 in UTC, which passed a check of the
        // written year and left a sale that could be created but never read back.
        for (field, at) in [("starts_at", self.starts_at), ("ends_at", self.ends_at)] {
            if !(0..=SALE_UNIX_SECS_MAX).contains(&at.unix_timestamp()) {
                return Err(spec_error(
                    field,
                    "must be between the years 1970 and 9999 (in UTC)",
                ));
            }
        }
        Ok(())
    }
}

/// A change to a sale that is not live yet. Absent fields stay as they are; the result must
/// be a valid `SaleSpec`, so each field has the same bounds there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SalePatch {
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 200,
            pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028-\u2029\u202F\u205F\u3000][^\u0000-\u001F\u007F-\u009F]*$"
        )
    )]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "whole_number::deserialize_option")]
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 1_000_000_000_000_u64)
    )]
    pub price_cents: Option<u64>,
    #[serde(default, deserialize_with = "whole_number::deserialize_option")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10_000_000))]
    pub stock: Option<u32>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub starts_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ends_at: Option<OffsetDateTime>,
    #[serde(default, deserialize_with = "whole_number::deserialize_option")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub per_buyer_limit: Option<u32>,
    #[serde(default, deserialize_with = "whole_number::deserialize_option")]
    #[cfg_attr(feature = "openapi", schema(minimum = 5, maximum = 604_800))]
    pub payment_window_secs: Option<u32>,
    /// Adds or replaces the waiting room (until its line opens).
    pub waiting_room: Option<WaitingRoomSpec>,
}

/// Integers in request bodies, also written as whole-number floats (`14535.0`): JSON Schema
/// calls those integers, and a client that writes every number as a float sends them. A
/// fraction, a negative number or a value over the type's range is refused as before.
pub mod whole_number {
    use serde::Deserializer;
    use serde::de::{Error, Unexpected, Visitor};
    use std::fmt;
    use std::marker::PhantomData;

    /// An unsigned integer type a body field may have.
    pub trait Whole: TryFrom<u64> {
        const MAX: u64;
    }

    impl Whole for u32 {
        const MAX: u64 = u32::MAX as u64;
    }

    impl Whole for u64 {
        const MAX: u64 = u64::MAX;
    }

    impl Whole for usize {
        const MAX: u64 = usize::MAX as u64;
    }

    /// For `#[serde(deserialize_with = "whole_number::deserialize")]`.
    pub fn deserialize<'de, D: Deserializer<'de>, T: Whole>(d: D) -> Result<T, D::Error> {
        d.deserialize_u64(WholeVisitor(PhantomData))
    }

    /// For an optional field: `#[serde(default, deserialize_with = "...::deserialize_option")]`.
    pub fn deserialize_option<'de, D: Deserializer<'de>, T: Whole>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        d.deserialize_option(OptionVisitor(PhantomData))
    }

    struct WholeVisitor<T>(PhantomData<T>);

    impl<T: Whole> Visitor<'_> for WholeVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a whole number from 0 to {}", T::MAX)
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<T, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
            }
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<T, E> {
            // 2^64 is the first float past u64::MAX; every float below it that has no
            // fraction is a u64 exactly.
            const TWO_TO_THE_64: f64 = 18_446_744_073_709_551_616.0;
            if v.fract() == 0.0 && (0.0..TWO_TO_THE_64).contains(&v) {
                self.visit_u64(v as u64)
            } else {
                Err(E::invalid_value(Unexpected::Float(v), &self))
            }
        }
    }

    struct OptionVisitor<T>(PhantomData<T>);

    impl<'de, T: Whole> Visitor<'de> for OptionVisitor<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "null or a whole number from 0 to {}", T::MAX)
        }

        fn visit_none<E: Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_unit<E: Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
            deserialize(d).map(Some)
        }
    }
}

/// Where a sale is in its life, as the outside world sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Upcoming,
    Live,
    SoldOut,
    Ended,
}

/// A sale as stored. Starting or stopping by hand moves `starts_at` / `ends_at`, so the phase
/// is always a pure function of the sale, the clock and whether stock is left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sale {
    pub id: SaleId,
    pub spec: SaleSpec,
    /// Bumped on every change, so caches keyed by it never serve a stale page.
    pub version: u32,
}

/// Why a sale could not be changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("the sale is live or over and can no longer be edited")]
    NotEditable,
    #[error("the sale's line is open, so the sale can no longer be edited")]
    LineOpen,
    #[error("the sale has already started")]
    AlreadyStarted,
    #[error("the sale has already ended")]
    AlreadyEnded,
    #[error(transparent)]
    Invalid(#[from] SpecError),
}

impl Sale {
    pub fn new(id: SaleId, spec: SaleSpec) -> Result<Self, SpecError> {
        spec.validate()?;
        Ok(Self {
            id,
            spec,
            version: 1,
        })
    }

    /// The phase at `now`. `stock_left` is whether any unit is still available to reserve.
    pub fn phase(&self, now: OffsetDateTime, stock_left: bool) -> Phase {
        if now < self.spec.starts_at {
            Phase::Upcoming
        } else if now >= self.spec.ends_at {
            Phase::Ended
        } else if stock_left {
            Phase::Live
        } else {
            Phase::SoldOut
        }
    }

    /// The times of the sale's line, if it has one. A sale stopped before its line opened
    /// still has valid times (the line opens just before the start), so nobody can join it.
    pub fn line_times(&self) -> Option<LineTimes> {
        let room = self.spec.waiting_room.as_ref()?;
        let starts_at = self.spec.starts_at;
        Some(LineTimes {
            opens_at: room.opens_at.min(starts_at - Duration::milliseconds(1)),
            starts_at,
            ends_at: self.spec.ends_at,
            admission_secs: room.admission_secs,
        })
    }

    /// Whether buying is allowed at `now` (ignoring stock).
    pub fn is_open(&self, now: OffsetDateTime) -> bool {
        self.spec.starts_at <= now && now < self.spec.ends_at
    }

    /// Applies an admin's edit; only allowed before the sale starts, and the result must
    /// still be a valid sale that starts in the future.
    pub fn patched(&self, patch: &SalePatch, now: OffsetDateTime) -> Result<Self, ChangeError> {
        if now >= self.spec.starts_at {
            return Err(ChangeError::NotEditable);
        }
        // Buyers in line hold places drawn against these times: they stay as they are.
        if self
            .spec
            .waiting_room
            .as_ref()
            .is_some_and(|room| now >= room.opens_at)
        {
            return Err(ChangeError::LineOpen);
        }
        let old = &self.spec;
        let spec = SaleSpec {
            name: patch.name.clone().unwrap_or_else(|| old.name.clone()),
            price_cents: patch.price_cents.unwrap_or(old.price_cents),
            stock: patch.stock.unwrap_or(old.stock),
            starts_at: patch.starts_at.unwrap_or(old.starts_at),
            ends_at: patch.ends_at.unwrap_or(old.ends_at),
            per_buyer_limit: patch.per_buyer_limit.unwrap_or(old.per_buyer_limit),
            payment_window_secs: patch.payment_window_secs.unwrap_or(old.payment_window_secs),
            waiting_room: patch
                .waiting_room
                .clone()
                .or_else(|| old.waiting_room.clone()),
        };
        spec.validate()?;
        if spec.starts_at <= now {
            return Err(spec_error(
                "starts_at",
                "must be in the future; use start to go live now",
            )
            .into());
        }
        Ok(Self {
            id: self.id,
            spec,
            version: self.version + 1,
        })
    }

    /// Goes live at `now` (the admin's "start now").
    pub fn started(&self, now: OffsetDateTime) -> Result<Self, ChangeError> {
        if now >= self.spec.ends_at {
            return Err(ChangeError::AlreadyEnded);
        }
        if now >= self.spec.starts_at {
            return Err(ChangeError::AlreadyStarted);
        }
        let mut sale = self.clone();
        sale.spec.starts_at = now;
        // A line that has not opened yet opens now, empty, and is drawn at once.
        if let Some(room) = &mut sale.spec.waiting_room {
            room.opens_at = room.opens_at.min(now - Duration::milliseconds(1));
        }
        sale.version += 1;
        Ok(sale)
    }

    /// Ends at `now` (the admin's "stop now"). Stopping a sale that has not started ends it
    /// before it began: it never goes live.
    pub fn stopped(&self, now: OffsetDateTime) -> Result<Self, ChangeError> {
        if now >= self.spec.ends_at {
            return Err(ChangeError::AlreadyEnded);
        }
        let mut sale = self.clone();
        sale.spec.ends_at = now;
        if sale.spec.starts_at > now {
            sale.spec.starts_at = now;
        }
        sale.version += 1;
        Ok(sale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use uuid::Uuid;

    fn spec() -> SaleSpec {
        SaleSpec {
            name: "Phone".into(),
            price_cents: 9_900,
            stock: 10,
            starts_at: datetime!(2030-01-01 12:00 UTC),
            ends_at: datetime!(2030-01-01 13:00 UTC),
            per_buyer_limit: 1,
            payment_window_secs: 600,
            waiting_room: None,
        }
    }

    fn sale() -> Sale {
        Sale::new(SaleId(Uuid::from_u128(1)), spec()).unwrap()
    }

    #[test]
    fn phase_table() {
        let s = sale();
        let cases = [
            (
                datetime!(2030-01-01 11:59:59.999 UTC),
                true,
                Phase::Upcoming,
            ),
            (
                datetime!(2030-01-01 11:59:59.999 UTC),
                false,
                Phase::Upcoming,
            ),
            (datetime!(2030-01-01 12:00 UTC), true, Phase::Live),
            (datetime!(2030-01-01 12:30 UTC), false, Phase::SoldOut),
            (datetime!(2030-01-01 12:59:59.999 UTC), true, Phase::Live),
            (datetime!(2030-01-01 13:00 UTC), true, Phase::Ended),
            (datetime!(2030-01-01 13:00 UTC), false, Phase::Ended),
        ];
        for (now, stock_left, expected) in cases {
            assert_eq!(
                s.phase(now, stock_left),
                expected,
                "at {now} stock_left={stock_left}"
            );
        }
    }

    #[test]
    fn spec_validation_names_the_field() {
        type BreakSpec = fn(&mut SaleSpec);
        let cases: Vec<(BreakSpec, &str)> = vec![
            (|s| s.name = " ".into(), "name"),
            (|s| s.name = "x".repeat(201), "name"),
            (|s| s.name = "a\u{0}b".into(), "name"),
            (|s| s.price_cents = SALE_PRICE_CENTS_MAX + 1, "price_cents"),
            (|s| s.stock = 0, "stock"),
            (|s| s.stock = SALE_STOCK_UNITS_MAX + 1, "stock"),
            (|s| s.ends_at = s.starts_at, "ends_at"),
            (|s| s.ends_at = s.starts_at + Duration::days(32), "ends_at"),
            (|s| s.per_buyer_limit = 0, "per_buyer_limit"),
            (|s| s.per_buyer_limit = 101, "per_buyer_limit"),
            (|s| s.payment_window_secs = 4, "payment_window_secs"),
            (
                |s| s.payment_window_secs = PAYMENT_WINDOW_SECS_MAX + 1,
                "payment_window_secs",
            ),
        ];
        for (break_it, field) in cases {
            let mut s = spec();
            break_it(&mut s);
            assert_eq!(s.validate().map_err(|e| e.field), Err(field));
        }
        assert_eq!(spec().validate(), Ok(()));
    }

    #[test]
    fn years_are_checked_in_utc_so_every_valid_sale_can_be_stored() {
        // Found by the fuzz target `sale_spec`: the written year was checked, so this sale,
        // in the year 10000 in UTC, was accepted and then unreadable from the order store.
        let at = |text: &str| {
            OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
        };
        let cases = [
            (
                "9999-12-31T20:00:00-05:00",
                "9999-12-31T21:00:00-05:00",
                Err("starts_at"),
            ),
            (
                "9999-12-31T22:00:00Z",
                "9999-12-31T20:00:00-05:00",
                Err("ends_at"),
            ),
            (
                "1970-01-01T00:30:00+01:00",
                "1970-01-01T02:00:00+01:00",
                Err("starts_at"),
            ),
            ("9999-12-31T22:00:00Z", "9999-12-31T23:59:59.999Z", Ok(())),
            ("1970-01-01T00:00:00Z", "1970-01-01T01:00:00Z", Ok(())),
        ];
        for (starts_at, ends_at, expected) in cases {
            let mut s = spec();
            s.starts_at = at(starts_at);
            s.ends_at = at(ends_at);
            assert_eq!(
                s.validate().map_err(|e| e.field),
                expected,
                "{starts_at} .. {ends_at}"
            );
        }
    }

    /// `SALE_NAME_PATTERN` is `validate`'s rule for names: its two character classes are
    /// exactly `char::is_control`, and that or `char::is_whitespace`, checked on every char.
    #[test]
    fn the_name_pattern_is_the_rule_validate_checks() {
        let control = [('\u{0}', '\u{1f}'), ('\u{7f}', '\u{9f}')];
        let blank = [
            ('\u{0}', '\u{20}'),
            ('\u{7f}', '\u{a0}'),
            ('\u{1680}', '\u{1680}'),
            ('\u{2000}', '\u{200a}'),
            ('\u{2028}', '\u{2029}'),
            ('\u{202f}', '\u{202f}'),
            ('\u{205f}', '\u{205f}'),
            ('\u{3000}', '\u{3000}'),
        ];
        let within =
            |ranges: &[(char, char)], c: char| ranges.iter().any(|&(a, b)| (a..=b).contains(&c));
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            assert_eq!(within(&control, c), c.is_control(), "{c:?}");
            assert_eq!(
                within(&blank, c),
                c.is_control() || c.is_whitespace(),
                "{c:?}"
            );
        }
        let class = |ranges: &[(char, char)]| -> String {
            ranges
                .iter()
                .map(|&(a, b)| match a == b {
                    true => format!("\\u{:04X}", a as u32),
                    false => format!("\\u{:04X}-\\u{:04X}", a as u32, b as u32),
                })
                .collect()
        };
        let (control, blank) = (class(&control), class(&blank));
        assert_eq!(
            SALE_NAME_PATTERN,
            format!("^[^{control}]*[^{blank}][^{control}]*$")
        );
    }

    #[test]
    fn integer_fields_take_whole_number_floats_only() {
        let body = |price: &str, stock: &str| {
            format!(
                r#"{{"name":"Phone","price_cents":{price},"stock":{stock},
                "starts_at":"2030-01-01T12:00:00Z","ends_at":"2030-01-01T13:00:00Z",
                "per_buyer_limit":1,"payment_window_secs":600.0}}"#
            )
        };
        let spec = |price: &str, stock: &str| {
            serde_json::from_str::<SaleSpec>(&body(price, stock)).map(|s| (s.price_cents, s.stock))
        };
        // Found by an API fuzzer: the document said `integer`, the parser wanted no `.0`.
        assert_eq!(spec("14535.0", "619173.0").ok(), Some((14_535, 619_173)));
        assert_eq!(spec("14535", "3").ok(), Some((14_535, 3)));
        assert_eq!(spec("1e3", "3").ok(), Some((1_000, 3)));
        for (price, stock) in [
            ("1.5", "3"),
            ("-1", "3"),
            ("-1.0", "3"),
            ("18446744073709551616.0", "3"),
            ("1", "4294967296"),
            ("1", "4294967296.0"),
            ("1", "\"3\""),
            ("1", "null"),
        ] {
            assert!(spec(price, stock).is_err(), "price {price}, stock {stock}");
        }
        let patch = |text: &str| serde_json::from_str::<SalePatch>(text);
        assert_eq!(
            patch(r#"{"stock":20.0}"#).ok().and_then(|p| p.stock),
            Some(20)
        );
        assert_eq!(patch(r#"{"stock":null}"#).ok().map(|p| p.stock), Some(None));
        assert_eq!(patch("{}").ok(), Some(SalePatch::default()));
        assert!(patch(r#"{"stock":2.5}"#).is_err());
        assert!(patch(r#"{"per_buyer_limit":-1}"#).is_err());
    }

    #[test]
    fn edits_only_before_the_start() {
        let s = sale();
        let before = datetime!(2030-01-01 11:00 UTC);
        let patch = SalePatch {
            stock: Some(20),
            ..Default::default()
        };
        let edited = s.patched(&patch, before).unwrap();
        assert_eq!(edited.spec.stock, 20);
        assert_eq!(edited.version, 2);
        assert_eq!(
            s.patched(&patch, datetime!(2030-01-01 12:00 UTC)),
            Err(ChangeError::NotEditable)
        );
        let bad = SalePatch {
            stock: Some(0),
            ..Default::default()
        };
        assert!(
            matches!(s.patched(&bad, before), Err(ChangeError::Invalid(e)) if e.field == "stock")
        );
        let past = SalePatch {
            starts_at: Some(datetime!(2030-01-01 10:00 UTC)),
            ..Default::default()
        };
        assert!(
            matches!(s.patched(&past, before), Err(ChangeError::Invalid(e)) if e.field == "starts_at")
        );
    }

    #[test]
    fn start_and_stop_by_hand() {
        let s = sale();
        let early = datetime!(2030-01-01 11:00 UTC);
        let live = s.started(early).unwrap();
        assert_eq!(live.phase(early, true), Phase::Live);
        assert_eq!(live.started(early), Err(ChangeError::AlreadyStarted));
        let stopped = live.stopped(early + Duration::minutes(5)).unwrap();
        assert_eq!(
            stopped.phase(early + Duration::minutes(5), true),
            Phase::Ended
        );
        assert_eq!(
            stopped.stopped(early + Duration::minutes(6)),
            Err(ChangeError::AlreadyEnded)
        );
        // Stopping before the start means it never goes live.
        let never = s.stopped(early).unwrap();
        assert_eq!(never.phase(early, true), Phase::Ended);
        assert!(!never.is_open(early));
    }
}
