//! Identifiers that validate on construction, so the rest of the code never re-checks them.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use uuid::Uuid;

/// Longest buyer id, idempotency key or payment id we accept, in bytes.
pub const ID_TEXT_BYTES_MAX: usize = 128;

/// The text ids' alphabet as a JSON Schema pattern: printable ASCII without spaces, `!` to `~`.
pub const ID_TEXT_PATTERN: &str = "^[!-~]+$";

/// Why a piece of identifying text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {ID_TEXT_BYTES_MAX} bytes")]
    TooLong,
    #[error("may contain only printable ASCII without spaces")]
    BadCharacter,
}

fn check_id_text(text: &str) -> Result<(), IdError> {
    if text.is_empty() {
        return Err(IdError::Empty);
    }
    if text.len() > ID_TEXT_BYTES_MAX {
        return Err(IdError::TooLong);
    }
    // Printable ASCII only: these strings end up in logs, headers and SQL parameters, and a
    // narrow alphabet keeps every one of those places boring.
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(IdError::BadCharacter);
    }
    Ok(())
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// 1 to 128 bytes of printable ASCII, no spaces.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        // What `check_id_text` checks, for the API document (a literal: the attribute takes
        // no constants; `ID_TEXT_PATTERN` and a test below keep them in step).
        #[cfg_attr(
            feature = "openapi",
            schema(min_length = 1, max_length = 128, pattern = "^[!-~]+$")
        )]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates `text` (1 to 128 bytes of printable ASCII, no spaces).
            pub fn parse(text: &str) -> Result<Self, IdError> {
                check_id_text(text)?;
                Ok(Self(text.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

text_id!(
    /// A buyer: the `sub` of a verified JWT, never a raw id from a request.
    BuyerId
);
text_id!(
    /// The client's `Idempotency-Key`: the same key from the same buyer means the same request.
    IdempotencyKey
);
text_id!(
    /// The payment provider's id for a payment; paying twice with one id is one payment.
    PaymentId
);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn parse(text: &str) -> Result<Self, uuid::Error> {
                Uuid::try_parse(text).map(Self)
            }

            /// The id's text as `Display` writes it (36 lowercase characters), in `buffer`,
            /// without allocating: for ids hashed into other ids and chains.
            pub fn encode<'b>(
                &self,
                buffer: &'b mut [u8; uuid::fmt::Hyphenated::LENGTH],
            ) -> &'b str {
                self.0.hyphenated().encode_lower(buffer)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A sale.
    SaleId
);
uuid_id!(
    /// An order, which is also the id of the reservation it grew from.
    OrderId
);
uuid_id!(
    /// The durable unit a reservation was enqueued in. Reservations taken together are made
    /// durable together (one fsync, one JetStream message), and the stock ledger remembers each
    /// one's batch, so whoever finds a reservation pending knows where to look for it.
    BatchId
);

impl SaleId {
    /// A fresh, time-ordered sale id (UUID v7 keeps B-tree inserts cheap).
    pub fn new_v7(now: time::OffsetDateTime) -> Self {
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            now.unix_timestamp().max(0) as u64,
            now.nanosecond(),
        );
        Self(Uuid::new_v7(ts))
    }
}

impl BatchId {
    /// A fresh batch id: time-ordered, with random bits so two nodes never pick the same one.
    pub fn new_v7(now: time::OffsetDateTime) -> Self {
        Self(SaleId::new_v7(now).0)
    }

    /// The batch of a reservation enqueued alone: named after its order, so a retry of the
    /// same request names the same batch.
    pub fn of_order(order: OrderId) -> Self {
        Self(order.0)
    }
}

impl OrderId {
    /// The order id for one buy request: derived from sale, buyer and idempotency key, so a
    /// retry of the same request names the same order on every node, with no lookup table.
    pub fn derive(sale: SaleId, buyer: &BuyerId, key: &IdempotencyKey) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(sale.0.as_bytes());
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
        hasher.update((buyer.as_str().len() as u32).to_be_bytes());
        hasher.update(buyer.as_str().as_bytes());
        hasher.update((key.as_str().len() as u32).to_be_bytes());
        hasher.update(key.as_str().as_bytes());
        let digest = hasher.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_text_is_validated() {
        assert_eq!(BuyerId::parse(""), Err(IdError::Empty));
        assert_eq!(BuyerId::parse("a b"), Err(IdError::BadCharacter));
        assert_eq!(BuyerId::parse("é"), Err(IdError::BadCharacter));
        assert_eq!(BuyerId::parse(&"x".repeat(129)), Err(IdError::TooLong));
        assert!(BuyerId::parse(&"x".repeat(128)).is_ok());
        assert_eq!(
            BuyerId::parse("alice-1").map(|b| b.to_string()),
            Ok("alice-1".into())
        );
    }

    #[test]
    fn the_documented_pattern_is_the_alphabet_checked() {
        // `^[!-~]+$` is exactly `is_ascii_graphic`: every byte from `!` to `~`, nothing else.
        assert_eq!(ID_TEXT_PATTERN, "^[!-~]+$");
        for byte in 0..=255u8 {
            assert_eq!(
                (b'!'..=b'~').contains(&byte),
                byte.is_ascii_graphic(),
                "{byte}"
            );
        }
    }

    #[test]
    fn order_id_is_a_pure_function_of_the_request() {
        let sale = SaleId(Uuid::from_u128(7));
        let alice = BuyerId::parse("alice").unwrap();
        let bob = BuyerId::parse("bob").unwrap();
        let k1 = IdempotencyKey::parse("k1").unwrap();
        let k2 = IdempotencyKey::parse("k2").unwrap();
        assert_eq!(
            OrderId::derive(sale, &alice, &k1),
            OrderId::derive(sale, &alice, &k1)
        );
        assert_ne!(
            OrderId::derive(sale, &alice, &k1),
            OrderId::derive(sale, &alice, &k2)
        );
        assert_ne!(
            OrderId::derive(sale, &alice, &k1),
            OrderId::derive(sale, &bob, &k1)
        );
        let other_sale = SaleId(Uuid::from_u128(8));
        assert_ne!(
            OrderId::derive(sale, &alice, &k1),
            OrderId::derive(other_sale, &alice, &k1)
        );
        // The length prefix separates the fields.
        let ab = BuyerId::parse("ab").unwrap();
        let a = BuyerId::parse("a").unwrap();
        let c = IdempotencyKey::parse("c").unwrap();
        let bc = IdempotencyKey::parse("bc").unwrap();
        assert_ne!(
            OrderId::derive(sale, &ab, &c),
            OrderId::derive(sale, &a, &bc)
        );
    }
}
