//! The shared stored-row decoder (`flashsale_service::stored`): what the SQLite and
//! PostgreSQL stores read back as orders and sales, which after a crash or by hand may be
//! anything.

use arbitrary::{Arbitrary, Unstructured};
use flashsale_service::stored::{OrderColumns, SaleColumns, Stored, to_ms};
use uuid::Uuid;

const STORED: Stored = Stored::new("fuzz");

/// Text for an id column: usually some form of a uuid, so the decoder gets past it.
#[derive(Debug, Arbitrary)]
enum IdText {
    Hyphenated(u128),
    Simple(u128),
    Braced(u128),
    Urn(u128),
    Upper(u128),
    Any(String),
}

impl IdText {
    fn text(self) -> String {
        match self {
            IdText::Hyphenated(n) => Uuid::from_u128(n).hyphenated().to_string(),
            IdText::Simple(n) => Uuid::from_u128(n).simple().to_string(),
            IdText::Braced(n) => Uuid::from_u128(n).braced().to_string(),
            IdText::Urn(n) => Uuid::from_u128(n).urn().to_string(),
            IdText::Upper(n) => Uuid::from_u128(n).hyphenated().to_string().to_uppercase(),
            IdText::Any(text) => text,
        }
    }
}

/// Text for the status column: usually a real status.
#[derive(Debug, Arbitrary)]
enum StatusText {
    PendingPayment,
    Paid,
    Expired,
    Cancelled,
    Any(String),
}

impl StatusText {
    fn text(self) -> String {
        match self {
            StatusText::PendingPayment => "pending_payment".into(),
            StatusText::Paid => "paid".into(),
            StatusText::Expired => "expired".into(),
            StatusText::Cancelled => "cancelled".into(),
            StatusText::Any(text) => text,
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Row {
    id: IdText,
    sale_id: IdText,
    buyer: String,
    status: StatusText,
    first_ms: i64,
    second_ms: i64,
    payment_id: Option<String>,
    name: String,
    numbers: [i64; 5],
}

/// `stored_rows`: arbitrary order and sale rows. A row is decoded or refused with an error,
/// never a panic; a decoded order or sale written back as columns (as the stores write them)
/// decodes to the same value, and its times to the same milliseconds.
pub fn check_stored_rows(data: &[u8]) {
    let Ok(row) = Row::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let order = OrderColumns {
        id: row.id.text(),
        sale_id: row.sale_id.text(),
        buyer: row.buyer,
        status: row.status.text(),
        reserved_at_ms: row.first_ms,
        expires_at_ms: row.second_ms,
        payment_id: row.payment_id,
    };
    let (reserved_at_ms, expires_at_ms) = (order.reserved_at_ms, order.expires_at_ms);
    if let Ok(decoded) = order.decode(&STORED) {
        assert_eq!(to_ms(decoded.reserved_at), reserved_at_ms);
        assert_eq!(to_ms(decoded.expires_at), expires_at_ms);
        let written = OrderColumns {
            id: decoded.id.to_string(),
            sale_id: decoded.sale_id.to_string(),
            buyer: decoded.buyer.to_string(),
            status: decoded.status.as_str().into(),
            reserved_at_ms,
            expires_at_ms,
            payment_id: decoded.payment_id.as_ref().map(ToString::to_string),
        };
        assert_eq!(written.decode(&STORED).unwrap(), decoded);
    }

    let [
        price_cents,
        stock,
        per_buyer_limit,
        payment_window_secs,
        version,
    ] = row.numbers;
    let sale = SaleColumns {
        // A fixed valid id, so the rest of the sale decoder is reached on every input.
        id: Uuid::from_u128(1).to_string(),
        name: row.name,
        price_cents,
        stock,
        starts_at_ms: row.first_ms,
        ends_at_ms: row.second_ms,
        per_buyer_limit,
        payment_window_secs,
        version,
        // The waiting room's JSON is fuzzed by `sale_spec` (it is what the API takes).
        waiting_room: None,
    };
    if let Ok(decoded) = sale.decode(&STORED) {
        let spec = &decoded.spec;
        assert_eq!(to_ms(spec.starts_at), row.first_ms);
        assert_eq!(to_ms(spec.ends_at), row.second_ms);
        assert_eq!(i64::try_from(spec.price_cents), Ok(price_cents));
        assert_eq!(i64::from(spec.stock), stock);
        assert_eq!(i64::from(spec.per_buyer_limit), per_buyer_limit);
        assert_eq!(i64::from(spec.payment_window_secs), payment_window_secs);
        assert_eq!(i64::from(decoded.version), version);
    }
}
