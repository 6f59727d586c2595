//! The reservation log (`LogQueue`'s storage): append-only segment files in one directory.
//!
//! - **A commit is one append and one `sync_data`.** The group's enqueue records (encoded by
//!   the callers, `log_record.rs`) and its ack records are written with one `write_all` to the
//!   end of the active segment, then synced. Nothing is rewritten in place: a reservation costs
//!   its record (about 94 bytes) once, and its ack 16 bytes later.
//! - **Segments are dropped whole.** When the active segment passes `SEGMENT_BYTES_MAX` the
//!   next commit's tidy starts a new one (header written and synced, directory synced). A
//!   segment that is not the active one and in which the index holds no reservation any more
//!   is deleted: every reservation it stored was acked (its order is in the order store).
//!   Disk use is therefore the live reservations' segments plus the active one; one
//!   reservation that is never acked keeps its segment (at most `SEGMENT_BYTES_MAX`) alive.
//! - **Open** reads every segment in order: enqueues add a reservation, acks remove one, and
//!   what is left is queued again (oldest first). A torn tail of the last segment (a write a
//!   crash interrupted before its sync, so never acknowledged) is cut with a warning; damage
//!   anywhere else refuses to open, naming the segment and the offset (`crate::frame`).
//! - **A failed write or sync** answers its group "outcome unknown", then cuts the segment back
//!   to its last synced length and syncs that; if the cut fails too, the log refuses every
//!   later commit (the file may hold part of a write) until a restart replays what it holds.
//!
//! A directory lock (`LOCK`, `flock`) keeps a second process from appending to the same log.

use super::committer::{CommitFailure, Storage};
use super::log_record::{
    LogRecord, RECORD_PAYLOAD_BYTES_MAX, decode_log_record, encode_acks, encode_log_record_into,
};
use crate::frame::{FileKind, replay, start_new_file, sync_directory};
use flashsale_core::{BatchId, OrderId, Reservation};
use flashsale_service::Queued;
use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The first bytes of every segment: what it is and which format.
pub(crate) const MAGIC: &[u8; 8] = b"FSQLOG\x00\x01";

/// Size past which the active segment is closed and a new one started. Small enough that a
/// consumed segment frees its space soon, large enough that rotation (two syncs) is rare:
/// about 89,000 reservations of 94 bytes.
pub const SEGMENT_BYTES_MAX: u64 = 8 << 20;

const KIND: FileKind = FileKind {
    magic: MAGIC,
    what: "reservation log segment",
    payload_bytes_max: RECORD_PAYLOAD_BYTES_MAX,
};

/// The append-only segment files of one queue. See the module docs.
#[derive(Debug)]
pub struct LogStorage {
    dir: PathBuf,
    /// Held for the storage's life: the directory's lock.
    _lock: File,
    /// Segment numbers on disk, oldest first; the last is the active one.
    segments: BTreeSet<u64>,
    active: File,
    /// The active segment's synced length: where the next write goes.
    active_bytes: u64,
    /// One commit's bytes; kept between commits so a commit allocates nothing.
    buffer: Vec<u8>,
    /// Set when a failed write could not be cut back: every later commit is refused.
    failed: Option<String>,
}

/// A segment's file name: its number, zero-padded so names sort as numbers do.
fn segment_name(number: u64) -> String {
    format!("{number:020}.seg")
}

fn segment_number(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

impl LogStorage {
    /// Opens (or creates) the log in `dir` and reads back every reservation stored and not
    /// acked, oldest first, with the segment it is in.
    pub(crate) fn open(dir: &Path) -> Result<(Self, Vec<(Queued, u64)>), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the directory: {e}"))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(|e| format!("cannot open its lock file: {e}"))?;
        lock.try_lock()
            .map_err(|e| format!("cannot lock (is another process using it?): {e}"))?;

        let mut segments = BTreeSet::new();
        for entry in std::fs::read_dir(dir).map_err(|e| format!("cannot list it: {e}"))? {
            let entry = entry.map_err(|e| format!("cannot list it: {e}"))?;
            if let Some(number) = entry.file_name().to_str().and_then(segment_number) {
                segments.insert(number);
            }
        }

        // Every reservation read so far and not acked: the order it was stored in, itself and
        // its segment.
        let mut live: HashMap<OrderId, (u64, Queued, u64)> = HashMap::new();
        let mut stored = 0u64;
        let mut active = None;
        let last = segments.last().copied();
        for &number in &segments {
            let path = dir.join(segment_name(number));
            let fail = |message: String| format!("segment {}: {message}", path.display());
            let is_last = Some(number) == last;
            let (file, end) = replay_segment(&path, is_last, |record| match record {
                LogRecord::Enqueue { batch, reservation } => {
                    stored += 1;
                    live.entry(reservation.order_id).or_insert((
                        stored,
                        Queued { batch, reservation },
                        number,
                    ));
                }
                LogRecord::Ack(orders) => {
                    for id in orders {
                        live.remove(&id);
                    }
                }
            })
            .map_err(fail)?;
            if is_last {
                active = Some((file, end));
            }
        }
        let (active, active_bytes) = match active {
            Some(active) => active,
            None => {
                segments.insert(1);
                (new_segment(dir, 1)?, MAGIC.len() as u64)
            }
        };
        let mut records: Vec<(u64, Queued, u64)> = live.into_values().collect();
        records.sort_by_key(|(order, _, _)| *order);
        let storage = Self {
            dir: dir.to_path_buf(),
            _lock: lock,
            segments,
            active,
            active_bytes,
            buffer: Vec::new(),
            failed: None,
        };
        Ok((
            storage,
            records
                .into_iter()
                .map(|(_, queued, segment)| (queued, segment))
                .collect(),
        ))
    }

    fn active_number(&self) -> u64 {
        *self
            .segments
            .last()
            .expect("the log always has its active segment")
    }

    /// Starts the next segment. On failure the active one stays, and the next tidy retries.
    fn rotate(&mut self) {
        let next = self.active_number() + 1;
        match new_segment(&self.dir, next) {
            Ok(file) => {
                self.active = file;
                self.active_bytes = MAGIC.len() as u64;
                self.segments.insert(next);
            }
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "reservation log: cannot start a new segment; appending to the current one");
            }
        }
    }

    /// After a failed write: cuts the active segment back to what was synced.
    fn cut_back(&mut self) -> Result<(), String> {
        self.active
            .set_len(self.active_bytes)
            .and_then(|()| {
                self.active
                    .seek(SeekFrom::Start(self.active_bytes))
                    .map(drop)
            })
            .and_then(|()| self.active.sync_all())
            .map_err(|e| format!("cannot cut the failed write back: {e}"))
    }
}

impl Storage for LogStorage {
    const BACKEND: &'static str = "reservation log";

    fn encode(batch: BatchId, reservation: &Reservation, out: &mut Vec<u8>) -> Result<(), String> {
        encode_log_record_into(out, batch, reservation);
        Ok(())
    }

    fn commit(
        &mut self,
        writes: &[(OrderId, &[u8])],
        deletes: &[OrderId],
    ) -> Result<u64, CommitFailure> {
        if let Some(why) = &self.failed {
            return Err(CommitFailure::before_write(
                "the reservation log failed earlier; a restart replays what is on disk",
                why,
            ));
        }
        let segment = self.active_number();
        self.buffer.clear();
        for (_, record) in writes {
            self.buffer.extend_from_slice(record);
        }
        encode_acks(&mut self.buffer, deletes);
        if self.buffer.is_empty() {
            return Ok(segment);
        }
        let written = self
            .active
            .write_all(&self.buffer)
            .map_err(|e| format!("cannot write: {e}"))
            // The answers wait for this: only a synced record is acknowledged.
            .and_then(|()| {
                self.active
                    .sync_data()
                    .map_err(|e| format!("cannot sync: {e}"))
            });
        match written {
            Ok(()) => {
                self.active_bytes += self.buffer.len() as u64;
                Ok(segment)
            }
            Err(why) => {
                tracing::error!(dir = %self.dir.display(), %why, "reservation log: a commit failed");
                if let Err(cut) = self.cut_back() {
                    tracing::error!(dir = %self.dir.display(), %cut, "reservation log: refusing every commit until a restart");
                    self.failed = Some(format!("{why}; then {cut}"));
                }
                Err(CommitFailure::unknown(why))
            }
        }
    }

    fn tidy(&mut self, holds: &dyn Fn(u64) -> bool) {
        if self.failed.is_some() {
            return;
        }
        if self.active_bytes >= SEGMENT_BYTES_MAX {
            self.rotate();
        }
        let active = self.active_number();
        let consumed: Vec<u64> = self
            .segments
            .iter()
            .copied()
            .filter(|&number| number != active && !holds(number))
            .collect();
        if consumed.is_empty() {
            return;
        }
        for number in consumed {
            let path = self.dir.join(segment_name(number));
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    self.segments.remove(&number);
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "reservation log: cannot delete a consumed segment; will retry");
                }
            }
        }
        // A deletion a crash loses only brings acked reservations back once more (redelivered,
        // written idempotently), so a failed directory sync is a warning, not a failure.
        if let Err(error) = sync_directory(&self.dir.join(segment_name(active))) {
            tracing::warn!(dir = %self.dir.display(), %error, "reservation log: cannot sync the directory after deleting segments");
        }
    }

    fn segments(&self) -> u64 {
        self.segments.len() as u64
    }
}

/// Creates segment `number` with its header, durable (file and directory entry).
fn new_segment(dir: &Path, number: u64) -> Result<File, String> {
    let path = dir.join(segment_name(number));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot create segment {}: {e}", path.display()))?;
    start_new_file(&path, &mut file, 0, MAGIC, KIND.what)
        .map_err(|e| format!("segment {}: {e}", path.display()))?;
    Ok(file)
}

/// Reads one segment's records into `apply`; returns the file positioned after its last valid
/// record, and that offset. Only the last segment may end in a torn tail or a header cut short
/// (segments are started only after the one before was synced); they are mended.
fn replay_segment(
    path: &Path,
    is_last: bool,
    mut apply: impl FnMut(LogRecord),
) -> Result<(File, u64), String> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let end = replay(path, &mut file, &KIND, is_last, |payload, offset| {
        let record = decode_log_record(payload)
            .map_err(|e| format!("unreadable record at byte offset {offset}: {e}"))?;
        apply(record);
        Ok(())
    })?;
    Ok((file, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_as_their_numbers() {
        assert_eq!(segment_name(42), "00000000000000000042.seg");
        assert_eq!(segment_number(&segment_name(42)), Some(42));
        assert_eq!(segment_number(&segment_name(u64::MAX)), Some(u64::MAX));
        for not_one in [
            "42.seg",
            "0000000000000000004x.seg",
            "LOCK",
            "00000000000000000042.tmp",
        ] {
            assert_eq!(segment_number(not_one), None, "{not_one}");
        }
        assert!(segment_name(9) < segment_name(10));
    }
}
