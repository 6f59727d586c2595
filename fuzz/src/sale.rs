//! The admin's sale spec and sale patch, as the HTTP layer deserializes them
//! (`ApiJson<SaleSpec>`, `ApiJson<SalePatch>`), and what validation lets through.

use crate::NOW;
use flashsale_core::sale::*;
use flashsale_core::{Sale, SaleId, Timestamp};
use flashsale_service::stored::{SaleColumns, Stored, to_ms, waiting_room_json};
use time::Duration;
use uuid::Uuid;

const STORED: Stored = Stored::new("fuzz");

/// The instant a timestamp is stored as (the SQL stores keep Unix milliseconds).
fn as_stored(at: Timestamp) -> Timestamp {
    STORED.from_ms(to_ms(at)).unwrap()
}

/// A valid sale survives the order store: written as columns and read back it is the same
/// sale, to the millisecond. (Otherwise it would be accepted now and unreadable after a
/// restart.)
fn assert_survives_the_store(sale: &Sale) {
    let spec = &sale.spec;
    let columns = SaleColumns {
        id: sale.id.to_string(),
        name: spec.name.clone(),
        price_cents: STORED.fit(spec.price_cents, "price_cents").unwrap(),
        stock: i64::from(spec.stock),
        starts_at_ms: to_ms(spec.starts_at),
        ends_at_ms: to_ms(spec.ends_at),
        per_buyer_limit: i64::from(spec.per_buyer_limit),
        payment_window_secs: i64::from(spec.payment_window_secs),
        version: i64::from(sale.version),
        waiting_room: waiting_room_json(spec),
    };
    let back = columns
        .decode(&STORED)
        .unwrap_or_else(|e| panic!("a valid sale cannot be read back: {e}: {spec:?}"));
    let mut expected = sale.clone();
    expected.spec.starts_at = as_stored(spec.starts_at);
    expected.spec.ends_at = as_stored(spec.ends_at);
    assert_eq!(back, expected);
}

/// What `validate` promises, checked field by field.
fn assert_valid(spec: &SaleSpec) {
    assert!(!spec.name.trim().is_empty());
    assert!(spec.name.chars().count() <= SALE_NAME_CHARS_MAX);
    assert!(!spec.name.chars().any(char::is_control));
    assert!(spec.price_cents <= SALE_PRICE_CENTS_MAX);
    assert!((1..=SALE_STOCK_UNITS_MAX).contains(&spec.stock));
    assert!(spec.starts_at < spec.ends_at);
    assert!(spec.ends_at - spec.starts_at <= Duration::days(SALE_DURATION_DAYS_MAX));
    assert!((1..=SALE_PER_BUYER_LIMIT_MAX).contains(&spec.per_buyer_limit));
    assert!(
        (PAYMENT_WINDOW_SECS_MIN..=PAYMENT_WINDOW_SECS_MAX).contains(&spec.payment_window_secs)
    );
}

/// `sale_spec`: a create-sale body. Whatever parses survives a JSON round trip; whatever
/// also validates keeps every documented limit, becomes a `Sale`, and survives the store.
pub fn check_sale_spec(data: &[u8]) {
    let Ok(spec) = serde_json::from_slice::<SaleSpec>(data) else {
        return;
    };
    let json = serde_json::to_vec(&spec).unwrap();
    assert_eq!(serde_json::from_slice::<SaleSpec>(&json).unwrap(), spec);
    if spec.validate().is_err() {
        return;
    }
    assert_valid(&spec);
    let sale = Sale::new(SaleId(Uuid::from_u128(1)), spec).unwrap();
    assert_survives_the_store(&sale);
    // The phase is total over the sale's life.
    for at in [sale.spec.starts_at, sale.spec.ends_at] {
        let _ = sale.phase(at, true);
    }
}

/// The sale every patch is applied to: valid, and not started at `NOW`.
fn upcoming_sale() -> Sale {
    let spec = SaleSpec {
        name: "Phone".into(),
        price_cents: 9_900,
        stock: 10,
        starts_at: NOW + Duration::hours(1),
        ends_at: NOW + Duration::hours(2),
        per_buyer_limit: 1,
        payment_window_secs: 600,
        waiting_room: None,
    };
    Sale::new(SaleId(Uuid::from_u128(1)), spec).unwrap()
}

/// `sale_patch`: an edit-sale body. Whatever parses survives a JSON round trip; applied to
/// an upcoming sale, an accepted patch gives a valid sale that starts in the future, has
/// each field from the patch or else unchanged, the next version, and survives the store.
pub fn check_sale_patch(data: &[u8]) {
    let Ok(patch) = serde_json::from_slice::<SalePatch>(data) else {
        return;
    };
    let json = serde_json::to_vec(&patch).unwrap();
    assert_eq!(serde_json::from_slice::<SalePatch>(&json).unwrap(), patch);
    let sale = upcoming_sale();
    let Ok(patched) = sale.patched(&patch, NOW) else {
        return;
    };
    let (old, new) = (&sale.spec, &patched.spec);
    assert_eq!(new.validate(), Ok(()));
    assert_valid(new);
    assert!(new.starts_at > NOW);
    assert_eq!(patched.version, sale.version + 1);
    assert_eq!(patched.id, sale.id);
    assert_eq!(&new.name, patch.name.as_ref().unwrap_or(&old.name));
    assert_eq!(
        new.price_cents,
        patch.price_cents.unwrap_or(old.price_cents)
    );
    assert_eq!(new.stock, patch.stock.unwrap_or(old.stock));
    assert_eq!(new.starts_at, patch.starts_at.unwrap_or(old.starts_at));
    assert_eq!(new.ends_at, patch.ends_at.unwrap_or(old.ends_at));
    assert_eq!(
        new.per_buyer_limit,
        patch.per_buyer_limit.unwrap_or(old.per_buyer_limit)
    );
    assert_eq!(
        new.payment_window_secs,
        patch.payment_window_secs.unwrap_or(old.payment_window_secs)
    );
    assert_survives_the_store(&patched);
}
