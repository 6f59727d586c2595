//! The framing both of our append-only files use (the line log and the reservation log), and
//! what reading one back after a crash means.
//!
//! A record is framed as `[length: u32 LE][CRC-32C of the length bytes and the payload: u32
//! LE][payload]`. Each file kind bounds its payload (`max`): a frame claiming more is damage,
//! not a record, so a damaged length can never make the reader allocate or skip far.
//!
//! - A record that fails its checksum (or is cut short) with **no valid record after it** is
//!   the torn tail of the last write, which a crash interrupted before its `sync_data`
//!   returned, so nothing in it was acknowledged. It is cut off, with a warning naming the
//!   bytes dropped. (A flipped byte in the last record looks the same, and is cut the same.)
//! - A damaged record **followed by a valid one** is damage in the middle of what was
//!   acknowledged: the file refuses to open, naming the offset, and nothing is cut. (A file
//!   system that persists a later page of one write before an earlier one could produce this
//!   after a crash; then the offset named is where to truncate by hand.)

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use time::OffsetDateTime;

/// The length and the checksum in front of every payload.
pub(crate) const FRAME_HEADER_BYTES: usize = 8;

const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Appends `payload` (written by `write`) framed to `out`. `max` is the file kind's bound.
pub(crate) fn encode_framed(out: &mut Vec<u8>, max: usize, write: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    write(out);
    let length = out.len() - start - FRAME_HEADER_BYTES;
    assert!(
        (1..=max).contains(&length),
        "a record's payload is 1 to {max} bytes, not {length}"
    );
    let length = (length as u32).to_le_bytes();
    out[start..start + 4].copy_from_slice(&length);
    let crc = checksum(length, &out[start + FRAME_HEADER_BYTES..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The checksum of a frame: its length bytes, then its payload.
pub(crate) fn checksum(length: [u8; 4], payload: &[u8]) -> u32 {
    let mut digest = CASTAGNOLI.digest();
    digest.update(&length);
    digest.update(payload);
    digest.finalize()
}

/// The payload length a frame header claims, if it is one a record can have.
pub(crate) fn claimed_length(header: &[u8; FRAME_HEADER_BYTES], max: usize) -> Option<usize> {
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    (1..=max).contains(&length).then_some(length)
}

/// Whether `payload` is what the frame header promises.
pub(crate) fn frame_matches(header: &[u8; FRAME_HEADER_BYTES], payload: &[u8]) -> bool {
    let length = [header[0], header[1], header[2], header[3]];
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    checksum(length, payload) == crc
}

/// Whether a whole valid frame starts at the beginning of `bytes`.
pub(crate) fn valid_frame_at(bytes: &[u8], max: usize) -> bool {
    let Some(header) = bytes.first_chunk::<FRAME_HEADER_BYTES>() else {
        return false;
    };
    let Some(length) = claimed_length(header, max) else {
        return false;
    };
    bytes
        .get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + length)
        .is_some_and(|payload| frame_matches(header, payload))
}

/// What the next bytes of a file hold.
pub(crate) enum Frame {
    /// A whole frame whose checksum matches; its payload is the first this many bytes of the
    /// buffer.
    Valid(usize),
    /// Bytes that are not a whole valid frame.
    Damaged,
    /// Nothing: the end of the file.
    End,
}

/// Reads the next frame into `payload` (at least `max` bytes long).
pub(crate) fn next_frame(
    reader: &mut impl Read,
    payload: &mut [u8],
    max: usize,
) -> std::io::Result<Frame> {
    debug_assert!(payload.len() >= max, "the buffer holds the longest payload");
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match read_full(reader, &mut header)? {
        0 => return Ok(Frame::End),
        FRAME_HEADER_BYTES => {}
        _ => return Ok(Frame::Damaged),
    }
    let Some(length) = claimed_length(&header, max) else {
        return Ok(Frame::Damaged);
    };
    if read_full(reader, &mut payload[..length])? < length
        || !frame_matches(&header, &payload[..length])
    {
        return Ok(Frame::Damaged);
    }
    Ok(Frame::Valid(length))
}

/// Reads until `buffer` is full or the file ends; returns how much was read.
pub(crate) fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A new (or never finished) file of `length` bytes: writes the header `magic` and makes the
/// file itself durable. `what` names the file kind in messages ("line log").
pub(crate) fn start_new_file(
    path: &Path,
    file: &mut File,
    length: u64,
    magic: &[u8],
    what: &str,
) -> Result<(), String> {
    let mut existing = vec![0u8; length as usize];
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_exact(&mut existing))
        .map_err(|e| format!("cannot read: {e}"))?;
    if !magic.starts_with(&existing) {
        return Err(format!(
            "not a {what} (too short, and not the start of one)"
        ));
    }
    if length > 0 {
        tracing::warn!(
            path = %path.display(),
            bytes_dropped = length,
            "{what}: rewriting a header a crash cut short (the file held no records)"
        );
    }
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
        .and_then(|()| file.write_all(magic))
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write its header: {e}"))?;
    sync_directory(path)
}

/// Makes a change to `path`'s directory entry (a new file, a removed one) durable.
pub(crate) fn sync_directory(path: &Path) -> Result<(), String> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(directory)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync its directory {}: {e}", directory.display()))
}

/// The damage at `offset` of a file of `length` bytes runs to its end: cut it off. If a valid
/// record follows it, it is damage in the middle instead, and the file is refused.
pub(crate) fn cut_torn_tail(
    path: &Path,
    file: &mut File,
    offset: u64,
    length: u64,
    max: usize,
    what: &str,
) -> Result<(), String> {
    let mut rest = Vec::new();
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_to_end(&mut rest))
        .map_err(|e| format!("cannot read after byte offset {offset}: {e}"))?;
    if let Some(next) = (1..rest.len()).find(|&at| valid_frame_at(&rest[at..], max)) {
        return Err(format!(
            "damaged record at byte offset {offset}, followed by a valid record at byte \
             offset {}: damage in the middle of the {what}, refusing to open (nothing was cut)",
            offset + next as u64
        ));
    }
    let dropped = length - offset;
    tracing::warn!(
        path = %path.display(),
        offset,
        bytes_dropped = dropped,
        "{what}: cut a torn tail (the last write, interrupted before it was synced)"
    );
    file.set_len(offset)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot cut the torn tail at byte offset {offset}: {e}"))
}

/// One kind of our append-only files.
#[derive(Debug)]
pub(crate) struct FileKind {
    /// Its first bytes: what it is and which format.
    pub(crate) magic: &'static [u8],
    /// Its name in messages ("line log").
    pub(crate) what: &'static str,
    /// The longest payload a frame of it may claim.
    pub(crate) payload_bytes_max: usize,
}

/// Opens a file of `kind` for appending: checks its header and reads every frame after it,
/// handing each payload and its offset to `each`. `last_written` says the file may have been
/// being written when a crash came: then a header cut short is written again and a torn tail
/// (a damaged frame with nothing valid after it) is cut; otherwise both are refused. A damaged
/// frame with a valid frame after it is refused either way. Returns the offset after the last
/// valid frame, where the file is left positioned.
pub(crate) fn replay(
    path: &Path,
    file: &mut File,
    kind: &FileKind,
    last_written: bool,
    mut each: impl FnMut(&[u8], u64) -> Result<(), String>,
) -> Result<u64, String> {
    let FileKind {
        magic,
        what,
        payload_bytes_max: max,
    } = *kind;
    let length = file
        .metadata()
        .map_err(|e| format!("cannot read its size: {e}"))?
        .len();
    let start = magic.len() as u64;
    if length < start {
        if !last_written {
            return Err(format!(
                "shorter than its header, and not the last {what} written"
            ));
        }
        start_new_file(path, file, length, magic, what)?;
        return Ok(start);
    }
    let mut header = vec![0u8; magic.len()];
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_exact(&mut header))
        .map_err(|e| format!("cannot read: {e}"))?;
    if header != magic {
        return Err(format!("not a {what} (its first bytes are not a {what}'s)"));
    }
    // Right after the header: where the first frame starts.
    let mut reader = std::io::BufReader::new(&*file);
    let mut offset = start;
    let mut payload = vec![0u8; max];
    loop {
        let size = match next_frame(&mut reader, &mut payload, max).map_err(|e| e.to_string())? {
            Frame::End => break,
            Frame::Damaged if last_written => {
                drop(reader);
                cut_torn_tail(path, file, offset, length, max, what)?;
                break;
            }
            Frame::Damaged => {
                return Err(format!(
                    "damaged record at byte offset {offset} of a {what} that is not the last \
                     written: damage in what was acknowledged, refusing to open"
                ));
            }
            Frame::Valid(size) => size,
        };
        each(&payload[..size], offset)?;
        offset += (FRAME_HEADER_BYTES + size) as u64;
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("cannot seek to the end of its records: {e}"))?;
    Ok(offset)
}

/// Writes a time as unix seconds (`i64` LE) and nanoseconds (`u32` LE): 12 bytes.
pub(crate) fn put_time(out: &mut Vec<u8>, at: OffsetDateTime) {
    out.extend_from_slice(&at.unix_timestamp().to_le_bytes());
    out.extend_from_slice(&at.nanosecond().to_le_bytes());
}

/// The bytes `put_time` writes.
pub(crate) const TIME_BYTES: usize = 12;

/// Reads fixed-size fields off the front of a payload.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or_else(|| format!("the record ends early ({} bytes left)", self.0.len()))?;
        self.0 = rest;
        Ok(*head)
    }

    pub(crate) fn byte(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!(
                "the record ends early ({} bytes left, {n} wanted)",
                self.0.len()
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub(crate) fn time(&mut self) -> Result<OffsetDateTime, String> {
        let secs = i64::from_le_bytes(self.array()?);
        let nanos = u32::from_le_bytes(self.array()?);
        OffsetDateTime::from_unix_timestamp(secs)
            .and_then(|at| at.replace_nanosecond(nanos))
            .map_err(|e| format!("a time out of range ({secs} s, {nanos} ns): {e}"))
    }

    /// `Err` unless every byte was read.
    pub(crate) fn finish(&self, what: &str) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("{} bytes after a record of {what}", self.0.len()))
        }
    }
}
