//! The embedded waiting lines: `flashsale_core::line::Line` per sale, in process, made durable
//! by an append-only log (`InProcessLine::open`, the form for the server; nothing wires it in yet).
//!
//! How it works: every call changes its sale's `Line` under one lock and, in the same critical
//! section, appends a record of each change to the log (`record.rs`), so the file's order is
//! the order the changes were applied. The records are: a line set up or moved, the draw, a
//! member's first join (with its draw key and time), an admission (exactly what
//! `Line::advance` returned), a buy, a control change. One committer thread writes and syncs
//! whatever was appended since its last sync (`log.rs`, group commit). At open the log is read
//! back and replayed into the lines (`recover.rs`, `replay.rs`).
//!
//! **What a crash can and cannot lose.** Every call answers only once every record of its
//! sale's line so far is synced (`sync_data`), its own and those of the calls before it. So
//! nothing a caller was told can be taken back by a crash: a place given, an admission shown in
//! a summary or a standing, a buy noted, a control or set-up done. A crash loses only changes
//! whose callers had not heard back yet (the group being written), and, after the restart,
//! the rate bucket's credit: the log does not hold it, so replay empties the bucket at each
//! admission and the credit builds up again from there (never more than the rate allows). A disk that
//! acknowledges a sync it did not do is out of reach, as for the queue.
//!
//! Growth: 101 bytes per member (the join record); 45 per advance that admits someone (so at
//! most one per admitted member, in practice one per advance tick while the line moves); 33
//! per buy noted; 37 for the draw, 65 per set-up, 31 per control change. A million joins are
//! about 101 MB of log, at most about 180 MB if every member is also admitted alone and buys.
//! The log is never compacted.
//!
//! `InProcessLine::new()` is the in-memory form (no log) for tests and the simulation.

mod log;
mod record;
mod recover;
mod replay;

pub use recover::LineOpenError;

use async_trait::async_trait;
use flashsale_core::line::{
    AdmitInputs, DrawKey, JoinProof, JoinRecord, Line, LineControl, LineEvent, LineId, LineSummary,
    LineTimes, Place, Standing,
};
use flashsale_core::{SaleId, Timestamp};
use flashsale_service::{BackendResult, LineAnswer, LineRefused, WaitingLine};
use log::LineLog;
use record::Record;
use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// One sale's line and where its log stands.
struct Entry {
    line: Line,
    /// The sequence number of the line's last record: its answers wait until that is synced.
    last_record: u64,
}

/// Every sale's line, in process; durable when opened on a log file.
pub struct InProcessLine {
    lines: Mutex<HashMap<SaleId, Entry>>,
    /// `None` for the in-memory form.
    log: Option<LineLog>,
}

impl Default for InProcessLine {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessLine {
    /// The lines in memory only: a restart loses them. For tests and the simulation.
    pub fn new() -> Self {
        Self {
            lines: Mutex::new(HashMap::new()),
            log: None,
        }
    }

    /// Opens (or creates) the log at `path`, rebuilds every line from it, and logs every
    /// change from now on. Blocks while it reads the file; call it at start. A torn tail is
    /// cut with a warning; damage before the tail, or a record that does not fit, refuses to
    /// open with an error naming the file and the offset.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LineOpenError> {
        let path = path.as_ref();
        let mut lines = HashMap::new();
        let recovered = recover::open_and_replay(path, |record| replay::apply(&mut lines, record))?;
        tracing::info!(
            path = %path.display(),
            records = recovered.records,
            bytes = recovered.bytes,
            lines = lines.len(),
            "line log replayed"
        );
        let log = LineLog::start(recovered.file, path).map_err(|e| LineOpenError {
            path: path.to_path_buf(),
            message: format!("cannot start the committer thread: {e}"),
        })?;
        let lines = lines
            .into_iter()
            .map(|(sale, line)| {
                let entry = Entry {
                    line,
                    last_record: 0,
                };
                (sale, entry)
            })
            .collect();
        Ok(Self {
            lines: Mutex::new(lines),
            log: Some(log),
        })
    }

    /// How many writes (each one sync) the log has made; `None` in memory. Shows that group
    /// commit groups.
    pub fn log_commits(&self) -> Option<u64> {
        self.log.as_ref().map(LineLog::commits)
    }

    fn lines(&self) -> MutexGuard<'_, HashMap<SaleId, Entry>> {
        // A panic while holding the lock left a line mid-change only in ways `Line`'s own
        // assertions allow (each change is one call), and its records were not appended yet;
        // keep serving.
        self.lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends `records` of `entry`'s line (the caller holds the lines' lock).
    fn log_records(&self, entry: &mut Entry, records: &[Record]) {
        if let Some(log) = &self.log
            && !records.is_empty()
        {
            entry.last_record = log.append(records);
        }
    }

    /// Before a change: waits while too much is waiting for the disk, and refuses once the
    /// log has failed.
    async fn ready_to_change(&self) -> BackendResult<()> {
        let Some(log) = &self.log else {
            return Ok(());
        };
        while let Some(seq) = log.backlog() {
            log.durable(seq).await?;
        }
        log.check_usable()
    }

    async fn durable(&self, seq: u64) -> BackendResult<()> {
        match &self.log {
            Some(log) if seq > 0 => log.durable(seq).await,
            _ => Ok(()),
        }
    }

    /// Reads the sale's line without waiting on the log. Only for what needs no durability
    /// of its own: a member's receipt (asked after the line told the caller the member's join
    /// is durable) and the chains a node hashes (a record a crash may still lose is lost with
    /// this process, which is the node that hashed it, and with its caller's answer). Waiting
    /// here made every join wait for a second group commit: joins at half the speed.
    fn read<T>(&self, sale: SaleId, read: impl FnOnce(&Line) -> T) -> LineAnswer<T> {
        match self.lines().get(&sale) {
            Some(entry) => Ok(read(&entry.line)),
            None => Err(LineRefused::NotSetUp),
        }
    }

    /// Runs `change` on the sale's line, logs the records it made in the same critical
    /// section, and answers once the line's records are durable.
    async fn change<T>(
        &self,
        sale: SaleId,
        change: impl FnOnce(&mut Line, &mut Vec<Record>) -> T,
    ) -> BackendResult<LineAnswer<T>> {
        self.ready_to_change().await?;
        let (answer, seq) = {
            let mut lines = self.lines();
            let Some(entry) = lines.get_mut(&sale) else {
                return Ok(Err(LineRefused::NotSetUp));
            };
            let mut records = Vec::new();
            let answer = change(&mut entry.line, &mut records);
            self.log_records(entry, &records);
            (answer, entry.last_record)
        };
        self.durable(seq).await?;
        Ok(Ok(answer))
    }
}

/// Records the draw if the call just made it: the line was not drawn before and is now.
fn note_draw(sale: SaleId, was_drawn: bool, line: &Line, at: Timestamp, records: &mut Vec<Record>) {
    if !was_drawn && line.is_drawn() {
        records.push(Record::Draw { sale, at });
    }
}

#[async_trait]
impl WaitingLine for InProcessLine {
    async fn set_up(&self, sale: SaleId, times: LineTimes) -> BackendResult<()> {
        self.ready_to_change().await?;
        let seq = {
            let mut lines = self.lines();
            let record = [Record::SetUp { sale, times }];
            let entry = match lines.entry(sale) {
                MapEntry::Occupied(occupied) => {
                    let entry = occupied.into_mut();
                    let before = entry.line.times();
                    entry.line.set_times(times);
                    if entry.line.times() != before {
                        self.log_records(entry, &record);
                    }
                    entry
                }
                MapEntry::Vacant(vacant) => {
                    let entry = vacant.insert(Entry {
                        line: Line::new(times),
                        last_record: 0,
                    });
                    self.log_records(entry, &record);
                    entry
                }
            };
            entry.last_record
        };
        self.durable(seq).await
    }

    async fn join_with(
        &self,
        sale: SaleId,
        line: LineId,
        key: DrawKey,
        now: Timestamp,
        proof: JoinProof,
    ) -> BackendResult<LineAnswer<Place>> {
        let who = line;
        let joined = self
            .change(sale, |line, records| {
                let was_drawn = line.is_drawn();
                let was_member = line.is_member(&who);
                let joined = line.join_with(who, key, now, proof);
                note_draw(sale, was_drawn, line, now, records);
                if joined.is_ok() && !was_member {
                    records.push(Record::Join {
                        sale,
                        line: who,
                        key,
                        at: now,
                        challenge: match proof {
                            JoinProof::Solved(id) => Some(id),
                            JoinProof::NotAsked | JoinProof::Missing => None,
                        },
                    });
                }
                joined.map_err(LineRefused::from)
            })
            .await?;
        Ok(joined.and_then(|joined| joined))
    }

    async fn place(
        &self,
        sale: SaleId,
        line: LineId,
        now: Timestamp,
    ) -> BackendResult<LineAnswer<Option<Place>>> {
        self.change(sale, |l, records| {
            let was_drawn = l.is_drawn();
            l.draw_if_due(now);
            note_draw(sale, was_drawn, l, now, records);
            l.place(&line)
        })
        .await
    }

    async fn advance(
        &self,
        sale: SaleId,
        now: Timestamp,
        inputs: AdmitInputs,
    ) -> BackendResult<LineAnswer<LineSummary>> {
        self.change(sale, |l, records| {
            let was_drawn = l.is_drawn();
            let advanced = l.advance(now, inputs);
            note_draw(sale, was_drawn, l, now, records);
            // In the order `advance` chained them.
            if let Some(up_to) = advanced.ended_up_to {
                records.push(Record::Ended { sale, up_to });
            }
            if let Some(after) = advanced.sold_out_after {
                records.push(Record::SoldOut { sale, after });
            }
            if let Some((up_to, at)) = advanced.admission {
                records.push(Record::Admission { sale, up_to, at });
            }
            l.summary(now)
        })
        .await
    }

    async fn standing(
        &self,
        sale: SaleId,
        line: LineId,
        now: Timestamp,
        inputs: AdmitInputs,
    ) -> BackendResult<LineAnswer<Option<Standing>>> {
        self.change(sale, |l, records| {
            let was_drawn = l.is_drawn();
            l.draw_if_due(now);
            note_draw(sale, was_drawn, l, now, records);
            l.standing(&line, now, inputs)
        })
        .await
    }

    async fn record_bought(&self, sale: SaleId, position: u64) -> BackendResult<LineAnswer<()>> {
        self.change(sale, |l, records| {
            if !l.has_bought(position) {
                l.record_bought(position);
                records.push(Record::Bought { sale, position });
            }
        })
        .await
    }

    async fn set_control(
        &self,
        sale: SaleId,
        control: LineControl,
    ) -> BackendResult<LineAnswer<()>> {
        self.change(sale, |l, records| {
            if l.control() != control {
                l.set_control(control);
                records.push(Record::Control { sale, control });
            }
        })
        .await
    }

    async fn members(
        &self,
        sale: SaleId,
        from: u64,
        limit: usize,
    ) -> BackendResult<LineAnswer<Vec<LineId>>> {
        self.change(sale, |l, _| {
            let start = usize::try_from(from.saturating_sub(1)).unwrap_or(usize::MAX);
            l.members()
                .iter()
                .skip(start)
                .take(limit)
                .copied()
                .collect()
        })
        .await
    }

    async fn receipt(&self, sale: SaleId, line: LineId) -> BackendResult<LineAnswer<Option<u64>>> {
        Ok(self.read(sale, |l| l.receipt_index(&line)))
    }

    async fn join_records(
        &self,
        sale: SaleId,
        from: u64,
        limit: usize,
    ) -> BackendResult<LineAnswer<Vec<JoinRecord>>> {
        Ok(self.read(sale, |l| l.join_records(from, limit).to_vec()))
    }

    async fn events(
        &self,
        sale: SaleId,
        from: u64,
        limit: usize,
    ) -> BackendResult<LineAnswer<Vec<LineEvent>>> {
        Ok(self.read(sale, |l| l.events(from, limit).to_vec()))
    }
}
