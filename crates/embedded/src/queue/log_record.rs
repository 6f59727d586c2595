//! The reservation log's records: what one enqueue and one ack look like on disk.
//!
//! Framed as every append-only file of ours is (`crate::frame`). The payload is a tag byte and
//! fixed-size fields (ids as raw bytes, times as unix seconds `i64` and nanoseconds `u32`,
//! little-endian), the buyer id last with its length in front:
//!
//! - **enqueue** (tag 1): batch id, order id, sale id (16 bytes each), reserved at, expires at
//!   (12 bytes each), buyer length (1 byte), buyer (1 to 128 bytes). A reservation of a buyer
//!   id of 12 characters takes `8 + 86 = 94` bytes framed, about a third of its JSON in redb.
//! - **ack** (tag 2): a count (1 byte, 1 to `ACK_IDS_PER_RECORD_MAX`) and that many order ids.

use crate::frame::{self, Reader, TIME_BYTES, put_time};
use flashsale_core::ids::ID_TEXT_BYTES_MAX;
use flashsale_core::{BatchId, BuyerId, OrderId, Reservation, SaleId};

/// Most order ids in one ack record; longer acks take several records.
pub(crate) const ACK_IDS_PER_RECORD_MAX: usize = 16;

const ENQUEUE_FIXED_BYTES: usize = 1 + 3 * 16 + 2 * TIME_BYTES + 1;
const ACK_BYTES_MAX: usize = 1 + 1 + 16 * ACK_IDS_PER_RECORD_MAX;

/// The longest payload: an ack of `ACK_IDS_PER_RECORD_MAX` ids (an enqueue with the longest
/// buyer id is 202 bytes). A frame claiming more is damage.
pub(crate) const RECORD_PAYLOAD_BYTES_MAX: usize =
    if ACK_BYTES_MAX > ENQUEUE_FIXED_BYTES + ID_TEXT_BYTES_MAX {
        ACK_BYTES_MAX
    } else {
        ENQUEUE_FIXED_BYTES + ID_TEXT_BYTES_MAX
    };

const ENQUEUE: u8 = 1;
const ACK: u8 = 2;

/// One record of the reservation log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRecord {
    /// A reservation of `batch` was stored.
    Enqueue {
        batch: BatchId,
        reservation: Reservation,
    },
    /// These reservations were acked (their orders are in the order store).
    Ack(Vec<OrderId>),
}

/// The framed enqueue record of `reservation`. Public for the fuzz target `queue_log`.
pub fn encode_log_record(batch: BatchId, reservation: &Reservation) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        frame::FRAME_HEADER_BYTES + ENQUEUE_FIXED_BYTES + reservation.buyer.as_str().len(),
    );
    encode_log_record_into(&mut out, batch, reservation);
    out
}

/// Appends the framed enqueue record of `reservation` to `out`.
pub(crate) fn encode_log_record_into(out: &mut Vec<u8>, batch: BatchId, reservation: &Reservation) {
    frame::encode_framed(out, RECORD_PAYLOAD_BYTES_MAX, |out| {
        out.push(ENQUEUE);
        out.extend_from_slice(batch.0.as_bytes());
        out.extend_from_slice(reservation.order_id.0.as_bytes());
        out.extend_from_slice(reservation.sale_id.0.as_bytes());
        put_time(out, reservation.reserved_at);
        put_time(out, reservation.expires_at);
        let buyer = reservation.buyer.as_str().as_bytes();
        // A `BuyerId` is 1 to ID_TEXT_BYTES_MAX (128) bytes: its length fits a byte.
        out.push(u8::try_from(buyer.len()).expect("a buyer id is at most 128 bytes"));
        out.extend_from_slice(buyer);
    });
}

/// Appends framed ack records of `orders` to `out`, `ACK_IDS_PER_RECORD_MAX` ids a record.
pub(crate) fn encode_acks(out: &mut Vec<u8>, orders: &[OrderId]) {
    for chunk in orders.chunks(ACK_IDS_PER_RECORD_MAX) {
        frame::encode_framed(out, RECORD_PAYLOAD_BYTES_MAX, |out| {
            out.push(ACK);
            out.push(chunk.len() as u8);
            for id in chunk {
                out.extend_from_slice(id.0.as_bytes());
            }
        });
    }
}

/// Reads a payload whose checksum matched. A payload this code cannot have written (an unknown
/// tag, a size that is not its fields', a time out of range, a buyer id that is not one) is an
/// error, never a panic. Public for the fuzz target `queue_log`.
pub fn decode_log_record(payload: &[u8]) -> Result<LogRecord, String> {
    let mut reader = Reader(payload);
    let record = match reader.byte()? {
        ENQUEUE => {
            let batch = BatchId(uuid::Uuid::from_bytes(reader.array()?));
            let order_id = OrderId(uuid::Uuid::from_bytes(reader.array()?));
            let sale_id = SaleId(uuid::Uuid::from_bytes(reader.array()?));
            let reserved_at = reader.time()?;
            let expires_at = reader.time()?;
            let length = reader.byte()? as usize;
            let buyer = std::str::from_utf8(reader.bytes(length)?)
                .map_err(|e| format!("the buyer id is not text: {e}"))?;
            let buyer = BuyerId::parse(buyer).map_err(|e| format!("the buyer id {e}"))?;
            reader.finish("kind enqueue")?;
            LogRecord::Enqueue {
                batch,
                reservation: Reservation {
                    order_id,
                    sale_id,
                    buyer,
                    reserved_at,
                    expires_at,
                },
            }
        }
        ACK => {
            let count = reader.byte()? as usize;
            if !(1..=ACK_IDS_PER_RECORD_MAX).contains(&count) {
                return Err(format!("an ack record of {count} ids"));
            }
            let mut orders = Vec::with_capacity(count);
            for _ in 0..count {
                orders.push(OrderId(uuid::Uuid::from_bytes(reader.array()?)));
            }
            reader.finish("kind ack")?;
            LogRecord::Ack(orders)
        }
        other => return Err(format!("unknown record kind {other}")),
    };
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FRAME_HEADER_BYTES;
    use time::macros::datetime;

    fn reservation(buyer: &str) -> Reservation {
        Reservation::new(
            OrderId(uuid::Uuid::from_u128(0xabc)),
            SaleId(uuid::Uuid::from_u128(0xfeed)),
            BuyerId::parse(buyer).unwrap(),
            datetime!(2026-12-03 12:00:00.123456789 UTC),
            600,
        )
    }

    fn payloads(framed: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut rest = framed;
        while !rest.is_empty() {
            assert!(frame::valid_frame_at(rest, RECORD_PAYLOAD_BYTES_MAX));
            let length = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            out.push(&rest[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + length]);
            rest = &rest[FRAME_HEADER_BYTES + length..];
        }
        out
    }

    #[test]
    fn records_read_back_as_written_at_the_sizes_the_docs_state() {
        let batch = BatchId(uuid::Uuid::from_u128(7));
        for buyer in ["b", "buyer-000001", &"x".repeat(ID_TEXT_BYTES_MAX)] {
            let reservation = reservation(buyer);
            let framed = encode_log_record(batch, &reservation);
            assert_eq!(framed.len(), 8 + 74 + buyer.len());
            let [payload] = payloads(&framed)[..] else {
                panic!("one record")
            };
            assert_eq!(
                decode_log_record(payload),
                Ok(LogRecord::Enqueue { batch, reservation })
            );
        }
        assert_eq!(
            encode_log_record(batch, &reservation("buyer-000001")).len(),
            94
        );

        let orders: Vec<OrderId> = (0..40u128)
            .map(|n| OrderId(uuid::Uuid::from_u128(n)))
            .collect();
        let mut framed = Vec::new();
        encode_acks(&mut framed, &orders);
        let read: Vec<OrderId> = payloads(&framed)
            .into_iter()
            .flat_map(|p| match decode_log_record(p) {
                Ok(LogRecord::Ack(ids)) => ids,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(read, orders);
        assert_eq!(
            framed.len(),
            3 * 10 + 40 * 16,
            "three records of 16, 16 and 8 ids"
        );
        assert_eq!(RECORD_PAYLOAD_BYTES_MAX, 258);
    }

    #[test]
    fn payloads_this_code_cannot_have_written_are_errors() {
        let framed = encode_log_record(BatchId(uuid::Uuid::from_u128(7)), &reservation("bob"));
        let payload = framed[FRAME_HEADER_BYTES..].to_vec();
        let mut unknown = payload.clone();
        unknown[0] = 9;
        assert!(decode_log_record(&unknown).is_err());
        assert!(decode_log_record(&payload[..payload.len() - 1]).is_err());
        let mut longer = payload.clone();
        longer.push(b'x');
        assert!(
            decode_log_record(&longer).is_err(),
            "a length that is not the buyer's"
        );
        let mut space = payload.clone();
        *space.last_mut().unwrap() = b' ';
        assert!(
            decode_log_record(&space).is_err(),
            "a buyer id that is not one"
        );
        assert!(decode_log_record(&[ACK, 0]).is_err(), "an ack of nothing");
        assert!(decode_log_record(&[ACK, 17]).is_err(), "an ack of too many");
        assert!(decode_log_record(&[]).is_err());
    }
}
