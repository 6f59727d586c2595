//! Opening the line log: the file's header, reading every record back in order, and what a
//! damaged file means.
//!
//! - A record that fails its checksum (or is cut short) with **no valid record after it** is
//!   the torn tail of the last write, which a crash interrupted before its `sync_data`
//!   returned, so nothing in it was acknowledged. It is cut off, with a warning naming the
//!   bytes dropped. (A flipped byte in the last record looks the same, and is cut the same.)
//! - A damaged record **followed by a valid one** is damage in the middle of what was
//!   acknowledged: the file refuses to open, naming the file and the offset, and nothing is
//!   cut. (A file system that persists a later page of one write before an earlier one could
//!   produce this after a crash; then the offset named is where to truncate by hand.)
//! - A record whose checksum matches but which this code cannot have written, or which does
//!   not fit the lines replayed so far, refuses to open the same way.

use super::record::{
    FRAME_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX, Record, claimed_length, frame_matches,
    valid_frame_at,
};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The first bytes of a line log: what it is and which format.
pub(crate) const MAGIC: &[u8; 8] = b"FSLINE\x00\x01";

/// The line log could not be opened or read. Names the file (and, for damage, the offset).
#[derive(Debug, thiserror::Error)]
#[error("line log file {}: {message}", path.display())]
pub struct LineOpenError {
    pub path: PathBuf,
    pub message: String,
}

/// The log after recovery: the file, locked, positioned at the end of its last valid record.
pub(crate) struct Recovered {
    pub(crate) file: File,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
}

/// Opens (or creates) the log at `path` and hands every record to `apply`, in file order.
/// `apply` says whether the record fits the lines replayed so far.
pub(crate) fn open_and_replay(
    path: &Path,
    mut apply: impl FnMut(Record) -> Result<(), String>,
) -> Result<Recovered, LineOpenError> {
    let fail = |message: String| LineOpenError {
        path: path.to_path_buf(),
        message,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| fail(format!("cannot open: {e}")))?;
    // Two writers appending to one log would interleave records.
    file.try_lock()
        .map_err(|e| fail(format!("cannot lock (is another process using it?): {e}")))?;
    let length = file
        .metadata()
        .map_err(|e| fail(format!("cannot read its size: {e}")))?
        .len();
    if length < MAGIC.len() as u64 {
        start_new_file(path, &mut file, length).map_err(fail)?;
        return Ok(Recovered {
            file,
            records: 0,
            bytes: MAGIC.len() as u64,
        });
    }

    let mut reader = BufReader::new(&file);
    let mut magic = [0u8; 8];
    reader
        .read_exact(&mut magic)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if &magic != MAGIC {
        return Err(fail(
            "not a line log (its first bytes are not the line log's)".into(),
        ));
    }
    let mut offset = MAGIC.len() as u64;
    let mut records = 0u64;
    let mut payload = [0u8; RECORD_PAYLOAD_BYTES_MAX];
    loop {
        let frame = next_frame(&mut reader, &mut payload).map_err(|e| fail(e.to_string()))?;
        let length = match frame {
            Frame::End => break,
            Frame::Damaged => {
                drop(reader);
                cut_torn_tail(path, &mut file, offset, length).map_err(fail)?;
                break;
            }
            Frame::Valid(length) => length,
        };
        let record = Record::decode(&payload[..length])
            .map_err(|e| fail(format!("unreadable record at byte offset {offset}: {e}")))?;
        apply(record).map_err(|e| {
            fail(format!(
                "the record at byte offset {offset} does not fit the lines before it: {e}"
            ))
        })?;
        records += 1;
        offset += (FRAME_HEADER_BYTES + length) as u64;
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| fail(format!("cannot seek to the end of its records: {e}")))?;
    Ok(Recovered {
        file,
        records,
        bytes: offset,
    })
}

/// What the next bytes of the log hold.
enum Frame {
    /// A whole frame whose checksum matches; its payload is in the buffer.
    Valid(usize),
    /// Bytes that are not a whole valid frame.
    Damaged,
    /// Nothing: the end of the file.
    End,
}

fn next_frame(
    reader: &mut impl Read,
    payload: &mut [u8; RECORD_PAYLOAD_BYTES_MAX],
) -> std::io::Result<Frame> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match read_full(reader, &mut header)? {
        0 => return Ok(Frame::End),
        FRAME_HEADER_BYTES => {}
        _ => return Ok(Frame::Damaged),
    }
    let Some(length) = claimed_length(&header) else {
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
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
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

/// A new (or never finished) file: writes the header and makes the file itself durable.
fn start_new_file(path: &Path, file: &mut File, length: u64) -> Result<(), String> {
    let mut existing = vec![0u8; length as usize];
    file.read_exact(&mut existing)
        .map_err(|e| format!("cannot read: {e}"))?;
    if !MAGIC.starts_with(&existing) {
        return Err("not a line log (too short, and not the start of one)".into());
    }
    if length > 0 {
        tracing::warn!(
            path = %path.display(),
            bytes_dropped = length,
            "line log: rewriting a header a crash cut short (the file held no records)"
        );
    }
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
        .and_then(|()| file.write_all(MAGIC))
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write its header: {e}"))?;
    sync_directory(path)
}

/// Makes a new file's directory entry durable, so a crash cannot lose the file itself.
fn sync_directory(path: &Path) -> Result<(), String> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(directory)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync its directory {}: {e}", directory.display()))
}

/// The damage at `offset` runs to the end of the file: cut it off. If a valid record follows
/// it, it is damage in the middle instead, and the file is refused.
fn cut_torn_tail(path: &Path, file: &mut File, offset: u64, length: u64) -> Result<(), String> {
    let mut rest = Vec::new();
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_to_end(&mut rest))
        .map_err(|e| format!("cannot read after byte offset {offset}: {e}"))?;
    if let Some(next) = (1..rest.len()).find(|&at| valid_frame_at(&rest[at..])) {
        return Err(format!(
            "damaged record at byte offset {offset}, followed by a valid record at byte \
             offset {}: damage in the middle of the log, refusing to open (nothing was cut)",
            offset + next as u64
        ));
    }
    let dropped = length - offset;
    tracing::warn!(
        path = %path.display(),
        offset,
        bytes_dropped = dropped,
        "line log: cut a torn tail (the last write, interrupted before it was synced)"
    );
    file.set_len(offset)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot cut the torn tail at byte offset {offset}: {e}"))
}
