//! The line log's writer: records appended in memory order, written and synced by one
//! group-commit thread, and callers waiting until their records are durable.
//!
//! Callers append framed records while they hold the lines' lock (so the file's order is the
//! order the changes were applied), each append getting the next sequence number. The
//! committer thread takes everything appended so far, writes it with one `write_all` and one
//! `sync_data`, and then publishes the last sequence number it made durable. While it syncs,
//! the next group gathers: a crowd of joiners costs one sync per group, not one per join.
//!
//! A failed write or sync fails the log for good: the file may hold part of a write, and
//! Linux may have dropped the pages a failed sync was about, so nothing appended after it
//! could be trusted. Waiters get an unknown outcome, later calls a refusal; a restart replays
//! what the file holds.

use flashsale_service::{BackendError, BackendResult, faults};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use tokio::sync::watch;

use super::record::Record;
use crate::panic_message;

pub(crate) const BACKEND: &str = "line log";

/// Bytes appended but not yet handed to the committer, above which callers wait for the
/// commit under way before changing a line: bounds the memory a stalled disk can cost and
/// the size of one write (about 10,000 joins of 101 bytes).
pub(crate) const LOG_PENDING_BYTES_MAX: usize = 1 << 20;

/// What has reached the disk.
#[derive(Debug, Clone, Default)]
struct Durable {
    /// Every record up to this sequence number is synced.
    up_to: u64,
    /// Why the log stopped, if it did.
    failed: Option<Arc<str>>,
}

/// Records appended and not yet taken by the committer.
#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The sequence number of the last record appended (the first record is 1).
    appended: u64,
    failed: Option<Arc<str>>,
    closing: bool,
}

#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the committer when records are appended (or the log closes).
    wake: Condvar,
    durable: watch::Sender<Durable>,
    commits: AtomicU64,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        // Appending is a copy into a buffer: a panic cannot leave it half done in a way that
        // matters more than the record itself, which its caller never hears about.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The durable log of the lines' changes. See the module docs.
#[derive(Debug)]
pub(crate) struct LineLog {
    shared: Arc<Shared>,
    /// `None` only while dropping.
    committer: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl LineLog {
    /// Starts the committer on a file positioned at the end of its last valid record.
    pub(crate) fn start(file: File, path: &Path) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            durable: watch::Sender::new(Durable::default()),
            commits: AtomicU64::new(0),
        });
        let committer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("line-log-committer".into())
                .spawn(move || run_committer(file, &shared))?
        };
        Ok(Self {
            shared,
            committer: Some(committer),
            path: path.to_path_buf(),
        })
    }

    /// `Err` once the log has failed: the caller must change nothing.
    pub(crate) fn check_usable(&self) -> BackendResult<()> {
        match &self.shared.pending().failed {
            Some(why) => Err(refused(why)),
            None => Ok(()),
        }
    }

    /// The sequence number to wait for before appending more, when too much waits already.
    pub(crate) fn backlog(&self) -> Option<u64> {
        let pending = self.shared.pending();
        (pending.bytes.len() >= LOG_PENDING_BYTES_MAX).then_some(pending.appended)
    }

    /// Appends records; returns the sequence number of the last. Call it while holding the
    /// lock the records' changes were made under.
    pub(crate) fn append(&self, records: &[Record]) -> u64 {
        let mut pending = self.shared.pending();
        for record in records {
            record.encode_framed(&mut pending.bytes);
        }
        pending.appended += records.len() as u64;
        let appended = pending.appended;
        drop(pending);
        if !records.is_empty() {
            self.shared.wake.notify_one();
        }
        appended
    }

    /// Waits until every record up to `seq` is synced.
    pub(crate) async fn durable(&self, seq: u64) -> BackendResult<()> {
        let mut durable = self.shared.durable.subscribe();
        let reached = durable
            .wait_for(|d| d.up_to >= seq || d.failed.is_some())
            .await
            .map_err(|_| BackendError::indeterminate(BACKEND, "the committer has stopped"))?;
        if reached.up_to >= seq {
            return Ok(());
        }
        let why = reached.failed.clone().unwrap_or_else(|| "no reason".into());
        Err(BackendError::indeterminate(
            BACKEND,
            format!("the change may or may not be on disk: {why}"),
        ))
    }

    /// How many writes (each one sync) the committer has made.
    pub(crate) fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }
}

impl Drop for LineLog {
    /// Lets the committer write what was appended, then waits for it, so the file is synced
    /// and unlocked when the log is gone: a reopen right after sees everything.
    fn drop(&mut self) {
        self.shared.pending().closing = true;
        self.shared.wake.notify_one();
        if let Some(committer) = self.committer.take()
            && committer.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "the line log committer panicked");
        }
    }
}

fn refused(why: &str) -> BackendError {
    BackendError::determinate(
        BACKEND,
        format!("the line log failed earlier ({why}); a restart replays what is on disk"),
    )
}

/// The committer thread: one write and one sync per group of appended records. A plain
/// thread, not a tokio task: every step blocks on the disk.
fn run_committer(mut file: File, shared: &Shared) {
    let mut group = Vec::new();
    loop {
        let last = {
            let mut pending = shared.pending();
            while pending.bytes.is_empty() && !pending.closing {
                pending = shared
                    .wake
                    .wait(pending)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if pending.bytes.is_empty() {
                return;
            }
            // The emptied buffer of the last group takes the next one: no allocation per group.
            group.clear();
            std::mem::swap(&mut group, &mut pending.bytes);
            pending.appended
        };
        // A panic in a commit is a failed commit, not a dead thread every caller waits on.
        let written =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| commit(&mut file, &group)))
                .unwrap_or_else(|panic| {
                    Err(format!("the commit panicked: {}", panic_message(&*panic)))
                });
        shared.commits.fetch_add(1, Ordering::Relaxed);
        match written {
            Ok(()) => shared.durable.send_modify(|d| d.up_to = last),
            Err(why) => {
                tracing::error!(%why, "the line log failed; line calls are refused until a restart");
                let why: Arc<str> = why.into();
                // Refuse new changes first, then tell the waiters.
                shared.pending().failed = Some(why.clone());
                shared.durable.send_modify(|d| d.failed = Some(why));
                return;
            }
        }
    }
}

fn commit(file: &mut File, group: &[u8]) -> Result<(), String> {
    file.write_all(group)
        .map_err(|e| format!("cannot write: {e}"))?;
    faults::blocking_point("line_log.commit.before_sync", faults::Happened::Yes)
        .map_err(|e| e.message)?;
    // The answers wait for this: only a synced record is acknowledged.
    file.sync_data().map_err(|e| format!("cannot sync: {e}"))
}
