//! The line log's records and their framing: what one change of a line looks like on disk.
//!
//! A record is framed as `[length: u32 LE][CRC-32C of the length bytes and the payload: u32
//! LE][payload]`. The payload is a tag byte and fixed-size fields (ids as raw bytes, numbers
//! little-endian, a time as unix seconds `i64` and nanoseconds `u32`), so each kind of record
//! has one size and no record is longer than `RECORD_PAYLOAD_BYTES_MAX`. A join, the record
//! that dominates a log, takes `FRAME_HEADER_BYTES + 93` = 101 bytes (117 with the challenge
//! that paid for it, kind 7): a million joins are about 101 MB.

use crate::frame::{self, Reader, TIME_BYTES, put_time};
use flashsale_core::line::{AdmitRate, ChallengeId, DrawKey, LineControl, LineId, LineTimes};
use flashsale_core::{SaleId, Timestamp};

/// The longest payload (a join). A frame claiming more is damage, not a record: a format
/// bound, so a damaged length can never make the reader allocate or skip far.
pub(crate) const RECORD_PAYLOAD_BYTES_MAX: usize = 1 + 16 + 32 + 32 + TIME_BYTES + 16;

/// One change of one sale's line, in the order it was applied in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// The line was set up, or its times moved while nobody had joined.
    SetUp { sale: SaleId, times: LineTimes },
    /// The pre-queue was drawn (the first call at or after the start). Logged because the
    /// draw is what splits the pre-queue from the joiners in arrival order: a join stamped
    /// before the start by a caller whose clock lags still comes after the draw.
    Draw { sale: SaleId, at: Timestamp },
    /// A member's first join (later joins of the same member change nothing), with the
    /// proof-of-work challenge that paid for it, if the sale asked one.
    Join {
        sale: SaleId,
        line: LineId,
        key: DrawKey,
        at: Timestamp,
        challenge: Option<ChallengeId>,
    },
    /// What `Line::advance` returned: positions up to `up_to` admitted at `at`.
    Admission {
        sale: SaleId,
        up_to: u64,
        at: Timestamp,
    },
    /// A buy under the admission of `position` (first time only).
    Bought { sale: SaleId, position: u64 },
    /// What `Line::advance` returned: the admissions up to `up_to` ended.
    Ended { sale: SaleId, up_to: u64 },
    /// What `Line::advance` returned: no unit left with positions up to `after` admitted.
    SoldOut { sale: SaleId, after: u64 },
    /// The admins' control, replaced whole.
    Control { sale: SaleId, control: LineControl },
}

const SET_UP: u8 = 1;
const DRAW: u8 = 2;
const JOIN: u8 = 3;
const ADMISSION: u8 = 4;
const BOUGHT: u8 = 5;
const CONTROL: u8 = 6;
/// A join paid with a challenge (kind 3 and the challenge's id).
const JOIN_PROVED: u8 = 7;
const ENDED: u8 = 8;
const SOLD_OUT: u8 = 9;

const RATE_NONE: u8 = 0;
const RATE_FIXED: u8 = 1;
const RATE_AUTO: u8 = 2;

impl Record {
    /// Appends the framed record to `out`.
    pub(crate) fn encode_framed(&self, out: &mut Vec<u8>) {
        frame::encode_framed(out, RECORD_PAYLOAD_BYTES_MAX, |out| {
            self.encode_payload(out)
        });
    }

    fn encode_payload(&self, out: &mut Vec<u8>) {
        match self {
            Record::SetUp { sale, times } => {
                put_head(out, SET_UP, *sale);
                put_time(out, times.opens_at);
                put_time(out, times.starts_at);
                put_time(out, times.ends_at);
                out.extend_from_slice(&times.admission_secs.to_le_bytes());
            }
            Record::Draw { sale, at } => {
                put_head(out, DRAW, *sale);
                put_time(out, *at);
            }
            Record::Join {
                sale,
                line,
                key,
                at,
                challenge,
            } => {
                put_head(
                    out,
                    if challenge.is_some() {
                        JOIN_PROVED
                    } else {
                        JOIN
                    },
                    *sale,
                );
                out.extend_from_slice(&line.0);
                out.extend_from_slice(key);
                put_time(out, *at);
                if let Some(id) = challenge {
                    out.extend_from_slice(id);
                }
            }
            Record::Admission { sale, up_to, at } => {
                put_head(out, ADMISSION, *sale);
                out.extend_from_slice(&up_to.to_le_bytes());
                put_time(out, *at);
            }
            Record::Bought { sale, position } => {
                put_head(out, BOUGHT, *sale);
                out.extend_from_slice(&position.to_le_bytes());
            }
            Record::Ended { sale, up_to } => {
                put_head(out, ENDED, *sale);
                out.extend_from_slice(&up_to.to_le_bytes());
            }
            Record::SoldOut { sale, after } => {
                put_head(out, SOLD_OUT, *sale);
                out.extend_from_slice(&after.to_le_bytes());
            }
            Record::Control { sale, control } => {
                put_head(out, CONTROL, *sale);
                out.push(u8::from(control.paused));
                let (tag, rate) = match control.rate {
                    None => (RATE_NONE, 0),
                    Some(AdmitRate::Fixed(rate)) => (RATE_FIXED, rate),
                    Some(AdmitRate::Auto) => (RATE_AUTO, 0),
                };
                out.push(tag);
                out.extend_from_slice(&rate.to_le_bytes());
            }
        }
    }

    /// Reads a payload whose checksum matched. A payload this code cannot have written (an
    /// unknown tag, a size that is not its tag's, a time out of range) is an error.
    pub(crate) fn decode(payload: &[u8]) -> Result<Record, String> {
        let mut reader = Reader(payload);
        let tag = reader.byte()?;
        let sale = SaleId(uuid::Uuid::from_bytes(reader.array()?));
        let record = match tag {
            SET_UP => Record::SetUp {
                sale,
                times: LineTimes {
                    opens_at: reader.time()?,
                    starts_at: reader.time()?,
                    ends_at: reader.time()?,
                    admission_secs: u32::from_le_bytes(reader.array()?),
                },
            },
            DRAW => Record::Draw {
                sale,
                at: reader.time()?,
            },
            JOIN | JOIN_PROVED => Record::Join {
                sale,
                line: LineId(reader.array()?),
                key: reader.array()?,
                at: reader.time()?,
                challenge: match tag {
                    JOIN_PROVED => Some(reader.array()?),
                    _ => None,
                },
            },
            ADMISSION => Record::Admission {
                sale,
                up_to: u64::from_le_bytes(reader.array()?),
                at: reader.time()?,
            },
            BOUGHT => Record::Bought {
                sale,
                position: u64::from_le_bytes(reader.array()?),
            },
            ENDED => Record::Ended {
                sale,
                up_to: u64::from_le_bytes(reader.array()?),
            },
            SOLD_OUT => Record::SoldOut {
                sale,
                after: u64::from_le_bytes(reader.array()?),
            },
            CONTROL => {
                let paused = match reader.byte()? {
                    0 => false,
                    1 => true,
                    other => return Err(format!("a control record's paused flag is {other}")),
                };
                let tag = reader.byte()?;
                let value = u32::from_le_bytes(reader.array()?);
                let rate = match tag {
                    RATE_NONE => None,
                    RATE_FIXED => Some(AdmitRate::Fixed(value)),
                    RATE_AUTO => Some(AdmitRate::Auto),
                    other => return Err(format!("a control record's rate kind is {other}")),
                };
                Record::Control {
                    sale,
                    control: LineControl { paused, rate },
                }
            }
            other => return Err(format!("unknown record kind {other}")),
        };
        if !reader.0.is_empty() {
            return Err(format!(
                "{} bytes after a record of kind {tag}",
                reader.0.len()
            ));
        }
        Ok(record)
    }
}

fn put_head(out: &mut Vec<u8>, tag: u8, sale: SaleId) {
    out.push(tag);
    out.extend_from_slice(sale.0.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FRAME_HEADER_BYTES;
    use time::macros::datetime;

    /// Whether a whole valid line log frame starts at the beginning of `bytes`.
    fn valid_frame_at(bytes: &[u8]) -> bool {
        frame::valid_frame_at(bytes, RECORD_PAYLOAD_BYTES_MAX)
    }

    fn sale() -> SaleId {
        SaleId(uuid::Uuid::from_u128(0xfeed))
    }

    fn every_kind() -> Vec<Record> {
        let at = datetime!(2026-12-03 12:00:00.123456789 UTC);
        vec![
            Record::SetUp {
                sale: sale(),
                times: LineTimes {
                    opens_at: at - time::Duration::minutes(10),
                    starts_at: at,
                    ends_at: at + time::Duration::hours(1),
                    admission_secs: 60,
                },
            },
            Record::Draw { sale: sale(), at },
            Record::Join {
                sale: sale(),
                line: LineId([7; 32]),
                key: [9; 32],
                at,
                challenge: None,
            },
            Record::Join {
                sale: sale(),
                line: LineId([8; 32]),
                key: [10; 32],
                at,
                challenge: Some([11; 16]),
            },
            Record::Admission {
                sale: sale(),
                up_to: 42,
                at,
            },
            Record::Bought {
                sale: sale(),
                position: 3,
            },
            Record::Ended {
                sale: sale(),
                up_to: 40,
            },
            Record::SoldOut {
                sale: sale(),
                after: 41,
            },
            Record::Control {
                sale: sale(),
                control: LineControl {
                    paused: true,
                    rate: Some(AdmitRate::Fixed(7)),
                },
            },
            Record::Control {
                sale: sale(),
                control: LineControl {
                    paused: false,
                    rate: Some(AdmitRate::Auto),
                },
            },
            Record::Control {
                sale: sale(),
                control: LineControl::default(),
            },
        ]
    }

    #[test]
    fn every_kind_of_record_reads_back_as_written() {
        for record in every_kind() {
            let mut framed = Vec::new();
            record.encode_framed(&mut framed);
            assert!(valid_frame_at(&framed), "{record:?}");
            let payload = &framed[FRAME_HEADER_BYTES..];
            assert_eq!(Record::decode(payload), Ok(record.clone()));
            assert!(payload.len() <= RECORD_PAYLOAD_BYTES_MAX);
        }
    }

    #[test]
    fn records_take_the_sizes_the_module_docs_state() {
        let sizes: Vec<usize> = every_kind()
            .iter()
            .map(|record| {
                let mut framed = Vec::new();
                record.encode_framed(&mut framed);
                framed.len()
            })
            .collect();
        // Set-up, draw, join, a join paid with a challenge, admission, buy, end, sold out, and
        // the three controls.
        assert_eq!(sizes, [65, 37, 101, 117, 45, 33, 33, 33, 31, 31, 31]);
        assert_eq!(FRAME_HEADER_BYTES + RECORD_PAYLOAD_BYTES_MAX, 117);
    }

    #[test]
    fn any_flipped_bit_fails_the_frame() {
        let mut framed = Vec::new();
        every_kind()[3].encode_framed(&mut framed);
        for byte in 0..framed.len() {
            for bit in 0..8 {
                let mut damaged = framed.clone();
                damaged[byte] ^= 1 << bit;
                assert!(!valid_frame_at(&damaged), "byte {byte} bit {bit}");
            }
        }
        assert!(!valid_frame_at(&framed[..framed.len() - 1]), "a torn frame");
    }

    #[test]
    fn payloads_this_code_cannot_have_written_are_errors() {
        let mut framed = Vec::new();
        every_kind()[4].encode_framed(&mut framed);
        let payload = framed[FRAME_HEADER_BYTES..].to_vec();
        let mut unknown = payload.clone();
        unknown[0] = 99;
        assert!(Record::decode(&unknown).is_err());
        assert!(Record::decode(&payload[..payload.len() - 1]).is_err());
        let mut longer = payload;
        longer.push(0);
        assert!(Record::decode(&longer).is_err());
        assert!(Record::decode(&[]).is_err());
    }
}
