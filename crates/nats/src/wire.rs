//! The wire format of the stream: one message per batch (its reservations grouped by sale,
//! compact JSON tuples in milliseconds), and the tombstone, an empty message that no batch
//! encodes to (`void`).

use crate::BACKEND;
use flashsale_core::{BuyerId, OrderId, Reservation, SaleId, Timestamp};
use flashsale_service::{BackendError, BackendResult};
use serde::{Deserialize, Serialize};

/// The most bytes one reservation takes in a message (its JSON with the longest ids is about
/// 330): with the stream's byte limit it bounds the reservations the stream can hold.
pub const RESERVATION_BYTES_MAX: usize = 512;

pub(crate) fn decode(payload: &[u8]) -> BackendResult<Vec<Reservation>> {
    decode_batch(payload)
        .map_err(|e| BackendError::determinate(BACKEND, format!("unreadable stored batch: {e}")))
}

/// One sale's reservations in a batch message: each as order id, buyer, reserved at (unix ms)
/// and payment window (ms). Tuples and one sale id per group keep a message about a third the
/// size of full reservations in JSON: the server's work grows with the bytes it stores and
/// delivers.
#[derive(Serialize, Deserialize)]
struct WireSale {
    sale: SaleId,
    r: Vec<(OrderId, BuyerId, i64, i64)>,
}

/// A batch as one message's payload. Milliseconds, as the order stores keep them.
pub fn encode_batch(reservations: &[Reservation]) -> Result<Vec<u8>, String> {
    let mut sales: Vec<WireSale> = Vec::new();
    for r in reservations {
        let reserved_ms = unix_ms(r.reserved_at)?;
        let window_ms = unix_ms(r.expires_at)? - reserved_ms;
        let item = (r.order_id, r.buyer.clone(), reserved_ms, window_ms);
        match sales.iter_mut().find(|s| s.sale == r.sale_id) {
            Some(group) => group.r.push(item),
            None => sales.push(WireSale {
                sale: r.sale_id,
                r: vec![item],
            }),
        }
    }
    serde_json::to_vec(&sales).map_err(|e| e.to_string())
}

/// The reservations of a batch message (`encode_batch`); an error for anything else.
pub fn decode_batch(payload: &[u8]) -> Result<Vec<Reservation>, String> {
    let sales: Vec<WireSale> = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    let mut reservations = Vec::new();
    for group in sales {
        for (order_id, buyer, reserved_ms, window_ms) in group.r {
            let at = |ms: i64| {
                Timestamp::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                    .map_err(|e| format!("order {order_id}: {e}"))
            };
            if window_ms < 0 {
                return Err(format!("order {order_id}: a negative payment window"));
            }
            reservations.push(Reservation {
                order_id,
                sale_id: group.sale,
                buyer,
                reserved_at: at(reserved_ms)?,
                expires_at: at(reserved_ms.checked_add(window_ms).ok_or("overflow")?)?,
            });
        }
    }
    Ok(reservations)
}

fn unix_ms(at: Timestamp) -> Result<i64, String> {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("{at} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_round_trips_through_its_wire_form() {
        let at = Timestamp::from_unix_timestamp(1_900_000_000).expect("time")
            + time::Duration::milliseconds(123);
        let sale = |n| SaleId(uuid::Uuid::from_u128(n));
        let reservations: Vec<Reservation> = (0..5u128)
            .map(|n| {
                Reservation::new(
                    OrderId(uuid::Uuid::from_u128(100 + n)),
                    sale(n % 2),
                    BuyerId::parse(&format!("buyer-{n}")).expect("buyer"),
                    at + time::Duration::milliseconds(n as i64),
                    600,
                )
            })
            .collect();
        let wire = encode_batch(&reservations).expect("encodes");
        let mut back = decode_batch(&wire).expect("decodes");
        back.sort_by_key(|r| r.order_id);
        assert_eq!(back, reservations, "grouped by sale, nothing lost");
        let full = serde_json::to_vec(&reservations).expect("json");
        assert!(
            wire.len() * 2 < full.len(),
            "{} bytes against {} for full reservations",
            wire.len(),
            full.len()
        );
        for bad in [&b"[]x"[..], b"{}", b"[{\"sale\":1}]", b"", b"{not a batch"] {
            assert!(
                decode_batch(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
