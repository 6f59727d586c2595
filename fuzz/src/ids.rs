//! Ids from path strings, headers and JSON bodies (`SaleId`, `OrderId` from the path; the
//! text ids from the JWT `sub`, the `Idempotency-Key` header and the pay request's
//! `payment_id`), and `OrderStatus` as stored.

use flashsale_core::ids::ID_TEXT_BYTES_MAX;
use flashsale_core::{BuyerId, IdempotencyKey, OrderId, OrderStatus, PaymentId, SaleId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::{Debug, Display};

fn json_round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let json = serde_json::to_string(value).unwrap();
    let back: T = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, value, "JSON round trip through {json}");
}

/// A uuid id parsed from any text prints in the canonical form, which parses back to it.
fn check_uuid_id<T, E>(text: &str, parse: fn(&str) -> Result<T, E>)
where
    T: Display + Serialize + DeserializeOwned + PartialEq + Debug,
{
    if let Ok(id) = parse(text) {
        let canonical = id.to_string();
        assert_eq!(canonical.len(), 36, "{canonical}");
        assert!(
            parse(&canonical).is_ok_and(|back| back == id),
            "{canonical}"
        );
        json_round_trip(&id);
    }
}

/// A text id is accepted exactly when it is 1 to 128 bytes of printable ASCII, and then it
/// is the text itself, by `parse` and by JSON alike.
fn check_text_id<T>(text: &str, parse: fn(&str) -> Result<T, flashsale_core::ids::IdError>)
where
    T: Display + Serialize + DeserializeOwned + PartialEq + Debug,
{
    let valid =
        (1..=ID_TEXT_BYTES_MAX).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic());
    let parsed = parse(text);
    assert_eq!(parsed.is_ok(), valid, "{text:?}: {parsed:?}");
    let from_json = serde_json::from_value::<T>(serde_json::Value::String(text.to_owned()));
    assert_eq!(from_json.is_ok(), valid, "{text:?} from JSON");
    if let Ok(id) = parsed {
        assert_eq!(id.to_string(), text);
        assert_eq!(from_json.ok(), Some(id));
    }
}

/// `ids`: every id type over the input as text, plus the raw input as a JSON body for the
/// types that arrive in one.
pub fn check_ids(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_uuid_id(&text, SaleId::parse);
    check_uuid_id(&text, OrderId::parse);
    check_text_id(&text, BuyerId::parse);
    check_text_id(&text, IdempotencyKey::parse);
    check_text_id(&text, PaymentId::parse);
    if let Some(status) = OrderStatus::parse(&text) {
        assert_eq!(status.as_str(), text);
        json_round_trip(&status);
    }
    // As JSON values (the pay request's `payment_id`, the dev login's `buyer_id`, a stored
    // order's status): whatever parses is valid and survives a round trip.
    if let Ok(payment) = serde_json::from_slice::<PaymentId>(data) {
        assert!(PaymentId::parse(payment.as_str()).is_ok());
        json_round_trip(&payment);
    }
    if let Ok(buyer) = serde_json::from_slice::<BuyerId>(data) {
        assert!(BuyerId::parse(buyer.as_str()).is_ok());
        json_round_trip(&buyer);
    }
    if let Ok(status) = serde_json::from_slice::<OrderStatus>(data) {
        assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
    }
}
