//! Opening the line log: the file's header, reading every record back in order, and what a
//! damaged file means.
//!
//! - A torn tail is cut with a warning, damage in the middle refuses to open: `crate::frame`
//!   says why.
//! - A record whose checksum matches but which this code cannot have written, or which does
//!   not fit the lines replayed so far, refuses to open the same way.

use super::record::{RECORD_PAYLOAD_BYTES_MAX, Record};
use crate::frame::{FileKind, replay};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// The first bytes of a line log: what it is and which format.
pub(crate) const MAGIC: &[u8; 8] = b"FSLINE\x00\x01";

const KIND: FileKind = FileKind {
    magic: MAGIC,
    what: "line log",
    payload_bytes_max: RECORD_PAYLOAD_BYTES_MAX,
};

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
    let mut records = 0u64;
    // The one line log is always the last written.
    let offset = replay(path, &mut file, &KIND, true, |payload, offset| {
        let record = Record::decode(payload)
            .map_err(|e| format!("unreadable record at byte offset {offset}: {e}"))?;
        apply(record).map_err(|e| {
            format!("the record at byte offset {offset} does not fit the lines before it: {e}")
        })?;
        records += 1;
        Ok(())
    })
    .map_err(fail)?;
    Ok(Recovered {
        file,
        records,
        bytes: offset,
    })
}
