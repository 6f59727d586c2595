use crate::{Queue, Rec, PAYLOAD};
use redb::ReadableTable;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub fn open(engine: &str, dir: &Path) -> Box<dyn Queue> {
    match engine {
        "redb" => Box::new(RedbQ::open(dir)),
        "redb-append" => Box::new(RedbAppend::open(dir)),
        "fjall" => Box::new(FjallQ::open(dir)),
        "okaywal" => Box::new(OkayQ::open(dir)),
        "raft-engine" => Box::new(RaftQ::open(dir)),
        "plainfile" => Box::new(PlainQ::open(dir, false)),
        "plainfile-prealloc" => Box::new(PlainQ::open(dir, true)),
        other => panic!("unknown engine {other}"),
    }
}

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

// ---------------------------------------------------------------- 1. redb, keyed by order id
const RQ: redb::TableDefinition<u128, &[u8]> = redb::TableDefinition::new("reservations");

struct RedbQ {
    db: redb::Database,
}
impl RedbQ {
    fn open(dir: &Path) -> Self {
        RedbQ {
            db: redb::Database::create(dir.join("queue.redb")).unwrap(),
        }
    }
}
impl Queue for RedbQ {
    fn commit(&mut self, new: &[Rec], acks: &[Rec]) {
        let mut txn = self.db.begin_write().unwrap();
        txn.set_durability(redb::Durability::Immediate).unwrap();
        {
            let mut t = txn.open_table(RQ).unwrap();
            for a in acks {
                t.remove(&a.key).unwrap();
            }
            for r in new {
                t.insert(&r.key, &r.payload[..]).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    fn reclaim(&mut self) {
        // redb already trims the file tail at commit (ShrinkPolicy); compact() relocates pages
        // and shrinks the file as far as it can.
        while self.db.compact().unwrap() {}
    }
}

// ---------------------------------------------------------------- 2. redb, append-only by sequence
const RA: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("log");
const RMETA: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");

struct RedbAppend {
    db: redb::Database,
    trimmed_to: u64,
    trim_every: u64,
    buf: Vec<u8>,
}
impl RedbAppend {
    fn open(dir: &Path) -> Self {
        let trim_every = std::env::var("REDB_TRIM")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(8192);
        RedbAppend {
            db: redb::Database::create(dir.join("queue.redb")).unwrap(),
            trimmed_to: 0,
            trim_every,
            buf: Vec::new(),
        }
    }
    fn trim(&mut self, t: &mut redb::Table<u64, &[u8]>, upto: u64) {
        // physical removal of the acked prefix [trimmed_to, upto)
        t.retain_in(self.trimmed_to..upto, |_, _| false).unwrap();
        self.trimmed_to = upto;
    }
}
impl Queue for RedbAppend {
    fn commit(&mut self, new: &[Rec], acks: &[Rec]) {
        let mut txn = self.db.begin_write().unwrap();
        txn.set_durability(redb::Durability::Immediate).unwrap();
        {
            let mut t = txn.open_table(RA).unwrap();
            for r in new {
                self.buf.clear();
                self.buf.extend_from_slice(&r.key.to_be_bytes());
                self.buf.extend_from_slice(&r.payload);
                t.insert(r.seq, &self.buf[..]).unwrap();
            }
            if let Some(last) = acks.last() {
                // the ack itself: one watermark (acks are always the oldest records)
                let acked_upto = last.seq + 1;
                txn.open_table(RMETA)
                    .unwrap()
                    .insert("acked_upto", acked_upto)
                    .unwrap();
                if acked_upto - self.trimmed_to >= self.trim_every {
                    self.trim(&mut t, acked_upto);
                }
            }
        }
        txn.commit().unwrap();
    }
    fn reclaim(&mut self) {
        let mut txn = self.db.begin_write().unwrap();
        txn.set_durability(redb::Durability::Immediate).unwrap();
        {
            let upto = txn
                .open_table(RMETA)
                .unwrap()
                .get("acked_upto")
                .unwrap()
                .map(|g| g.value())
                .unwrap_or(0);
            let mut t = txn.open_table(RA).unwrap();
            self.trim(&mut t, upto);
        }
        txn.commit().unwrap();
        while self.db.compact().unwrap() {}
    }
}

// ---------------------------------------------------------------- 3. fjall
struct FjallQ {
    db: fjall::Database,
    ks: fjall::Keyspace,
}
impl FjallQ {
    fn open(dir: &Path) -> Self {
        let db = fjall::Database::builder(dir.join("fjall")).open().unwrap();
        let ks = db
            .keyspace("reservations", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        FjallQ { db, ks }
    }
}
impl Queue for FjallQ {
    fn commit(&mut self, new: &[Rec], acks: &[Rec]) {
        let mut b = self
            .db
            .batch()
            .durability(Some(fjall::PersistMode::SyncData));
        for a in acks {
            b.remove(&self.ks, &a.key.to_be_bytes()[..]);
        }
        for r in new {
            b.insert(&self.ks, &r.key.to_be_bytes()[..], &r.payload[..]);
        }
        b.commit().unwrap();
    }
    fn reclaim(&mut self) {
        // flush the memtable (values+tombstones cancel out), so the journal can be dropped,
        // then a major compaction to drop the tombstones themselves.
        self.ks.rotate_memtable_and_wait().unwrap();
        self.ks.major_compact().unwrap();
        self.db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
}

// ---------------------------------------------------------------- 4. okaywal
// One WAL entry per commit, one chunk: [u32 n_new][u32 n_ack] n_new*(key16+payload160) n_ack*key16.
// okaywal is a WAL *in front of* a store: when it checkpoints a segment, entries in it disappear,
// so LogManager::checkpoint_to must move still-unacked records to a side store. Here that is a
// small spill file rewritten atomically (tmp + fdatasync + rename + dir fsync).
#[derive(Debug)]
struct OkayMgr {
    live: Arc<Mutex<HashSet<u128>>>,
    spill: HashMap<u128, Vec<u8>>,
    spill_dir: PathBuf,
    checkpointed_to: Arc<AtomicU64>,
    checkpoints: Arc<AtomicU64>,
}
impl okaywal::LogManager for OkayMgr {
    fn recover(&mut self, _entry: &mut okaywal::Entry<'_>) -> std::io::Result<()> {
        Ok(()) // runs start from an empty directory; a real queue would rebuild live set + spill here
    }
    fn checkpoint_to(
        &mut self,
        last: okaywal::EntryId,
        reader: &mut okaywal::SegmentReader,
        _wal: &okaywal::WriteAheadLog,
    ) -> std::io::Result<()> {
        let live = self.live.lock().unwrap();
        let had_spill = !self.spill.is_empty();
        while let Some(mut entry) = reader.read_entry()? {
            if let Some(chunks) = entry.read_all_chunks()? {
                for c in chunks {
                    let n_new = u32::from_le_bytes(c[0..4].try_into().unwrap()) as usize;
                    for i in 0..n_new {
                        let rec = &c[8 + i * (16 + PAYLOAD)..8 + (i + 1) * (16 + PAYLOAD)];
                        let key = u128::from_le_bytes(rec[..16].try_into().unwrap());
                        if live.contains(&key) {
                            self.spill.insert(key, rec.to_vec());
                        }
                    }
                }
            }
        }
        self.spill.retain(|k, _| live.contains(k));
        drop(live);
        if had_spill || !self.spill.is_empty() {
            let tmp = self.spill_dir.join("spill.tmp");
            let mut f = File::create(&tmp)?;
            for v in self.spill.values() {
                f.write_all(v)?;
            }
            f.sync_data()?;
            std::fs::rename(&tmp, self.spill_dir.join("spill.bin"))?;
            File::open(&self.spill_dir)?.sync_all()?;
        }
        self.checkpointed_to.store(last.0, Ordering::SeqCst);
        self.checkpoints.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct OkayQ {
    wal: okaywal::WriteAheadLog,
    live: Arc<Mutex<HashSet<u128>>>,
    checkpointed_to: Arc<AtomicU64>,
    checkpoints: Arc<AtomicU64>,
    last_entry: u64,
    buf: Vec<u8>,
}
impl OkayQ {
    fn open(dir: &Path) -> Self {
        let live = Arc::new(Mutex::new(HashSet::new()));
        let checkpointed_to = Arc::new(AtomicU64::new(0));
        let checkpoints = Arc::new(AtomicU64::new(0));
        let mgr = OkayMgr {
            live: live.clone(),
            spill: HashMap::new(),
            spill_dir: dir.to_path_buf(),
            checkpointed_to: checkpointed_to.clone(),
            checkpoints: checkpoints.clone(),
        };
        // defaults: 1 MiB preallocated segments, checkpoint after 768 KiB, 16 KiB buffer
        let wal = okaywal::Configuration::default_for(dir.join("wal"))
            .open(mgr)
            .unwrap();
        OkayQ {
            wal,
            live,
            checkpointed_to,
            checkpoints,
            last_entry: 0,
            buf: Vec::new(),
        }
    }
}
impl Queue for OkayQ {
    fn commit(&mut self, new: &[Rec], acks: &[Rec]) {
        self.buf.clear();
        self.buf
            .extend_from_slice(&(new.len() as u32).to_le_bytes());
        self.buf
            .extend_from_slice(&(acks.len() as u32).to_le_bytes());
        for r in new {
            self.buf.extend_from_slice(&r.key.to_le_bytes());
            self.buf.extend_from_slice(&r.payload);
        }
        for a in acks {
            self.buf.extend_from_slice(&a.key.to_le_bytes());
        }
        // register new keys as live *before* the commit: the commit itself may hand the
        // segment to the checkpointer thread, which must not drop these records.
        {
            let mut live = self.live.lock().unwrap();
            for r in new {
                live.insert(r.key);
            }
        }
        let mut w = self.wal.begin_entry().unwrap();
        w.write_chunk(&self.buf).unwrap();
        self.last_entry = w.commit().unwrap().0; // fdatasync'd when this returns
        let mut live = self.live.lock().unwrap();
        for a in acks {
            live.remove(&a.key);
        }
    }
    fn reclaim(&mut self) {
        self.wal.checkpoint_active().unwrap();
        let t = std::time::Instant::now();
        while self.checkpointed_to.load(Ordering::SeqCst) < self.last_entry {
            assert!(
                t.elapsed().as_secs() < 60,
                "okaywal checkpoint did not finish"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        eprintln!(
            "okaywal checkpoints: {}",
            self.checkpoints.load(Ordering::SeqCst)
        );
    }
}

// ---------------------------------------------------------------- 5. raft-engine
// Entries must be protobuf-2 Messages; BytesValue (from the protobuf crate raft-engine already
// uses) with value = [index u64 LE][key 16][payload 160]. One raft group (region 1), raft index
// = seq+1. Acks = Command::Compact{index} in the same LogBatch; files purged by
// purge_expired_files().
struct RaftMsg;
impl raft_engine::MessageExt for RaftMsg {
    type Entry = protobuf::well_known_types::BytesValue;
    fn index(e: &Self::Entry) -> u64 {
        u64::from_le_bytes(e.value[..8].try_into().unwrap())
    }
}
struct RaftQ {
    engine: raft_engine::Engine,
    since_purge: usize,
    purges: usize,
}
impl RaftQ {
    fn open(dir: &Path) -> Self {
        let cfg = raft_engine::Config {
            dir: dir.join("raft").to_str().unwrap().to_string(),
            target_file_size: raft_engine::ReadableSize::mb(8), // default 128 MiB; 8 MiB to match plainfile
            purge_threshold: raft_engine::ReadableSize::mb(8),  // default 10 GiB
            batch_compression_threshold: raft_engine::ReadableSize(0), // no LZ4 (payload is random)
            enable_log_recycle: false, // default true keeps purged files around for reuse
            ..Default::default()
        };
        RaftQ {
            engine: raft_engine::Engine::open(cfg).unwrap(),
            since_purge: 0,
            purges: 0,
        }
    }
}
impl Queue for RaftQ {
    fn commit(&mut self, new: &[Rec], acks: &[Rec]) {
        let mut b = raft_engine::LogBatch::with_capacity(new.len() + 1);
        if !new.is_empty() {
            let entries: Vec<protobuf::well_known_types::BytesValue> = new
                .iter()
                .map(|r| {
                    let mut e = protobuf::well_known_types::BytesValue::new();
                    let mut v = Vec::with_capacity(8 + 16 + PAYLOAD);
                    v.extend_from_slice(&(r.seq + 1).to_le_bytes());
                    v.extend_from_slice(&r.key.to_be_bytes());
                    v.extend_from_slice(&r.payload);
                    e.value = v;
                    e
                })
                .collect();
            b.add_entries::<RaftMsg>(1, &entries).unwrap();
        }
        if let Some(last) = acks.last() {
            // entries with index < last.seq+2 are compacted (= acked)
            b.add_command(
                1,
                raft_engine::Command::Compact {
                    index: last.seq + 2,
                },
            );
        }
        self.engine.write(&mut b, true).unwrap();
        self.since_purge += new.len();
        if self.since_purge >= 16384 {
            // TiKV calls this from a timer; here every 16Ki records (~3 MiB)
            self.since_purge = 0;
            self.purges += 1;
            self.engine.purge_expired_files().unwrap();
        }
    }
    fn reclaim(&mut self) {
        self.engine.purge_expired_files().unwrap();
    }
}

// ---------------------------------------------------------------- 6. plain segment files
// frame = [u32 len][u32 crc32c(payload)][payload]; record payload = key16 + payload160 (len 176),
// ack payload = key16 (len 16). One write + fdatasync per commit. 8 MiB segments; a segment is
// deleted when it and every older segment have no live records (prefix order keeps acks that
// live in newer segments valid). New segment: create + fsync(dir).
const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
const SEG_BYTES: u64 = 8 << 20;

struct Seg {
    id: u64,
    live: u64,
}
struct PlainQ {
    dir: PathBuf,
    prealloc: bool,
    spare: bool,
    segs: VecDeque<Seg>, // oldest first; back = active
    cur: File,
    cur_len: u64,
    key_seg: HashMap<u128, u64>,
    buf: Vec<u8>,
}
// plainfile-prealloc: segments are filled with zeros (8 MiB) when created, written with pwrite,
// and one fully-acked segment is kept as a spare and renamed into place at the next rotation
// (recycling, as okaywal/raft-engine do). The crc then also covers the segment id, so frames
// left over from the segment's previous life fail the check. Point: appends inside an already
// allocated file don't change size/extents, so fdatasync needs no ext4 journal commit.
impl PlainQ {
    fn seg_path(dir: &Path, id: u64) -> PathBuf {
        dir.join(format!("seg-{id:016}.log"))
    }
    fn new_seg(&mut self, id: u64) -> File {
        let path = Self::seg_path(&self.dir, id);
        let f = if self.prealloc && self.spare {
            std::fs::rename(self.dir.join("spare.log"), &path).unwrap();
            self.spare = false;
            OpenOptions::new().write(true).open(&path).unwrap()
        } else if self.prealloc {
            let mut f = OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(&path)
                .unwrap();
            // 64 KiB writes, not 1 MiB: with ext4 large folios (kernel 6.18) the page-cache folio
            // size follows the write size, and /proc/self/io write_bytes then counts a whole folio
            // per small pwrite (1 MiB zero-fill => ~1 MiB "written" per commit). The device-level
            // sector counters showed the same bytes either way: an accounting artifact.
            let chunk: usize = std::env::var("PREALLOC_CHUNK")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(64 << 10);
            let zeros = vec![0u8; chunk];
            for _ in 0..(SEG_BYTES as usize / chunk) {
                f.write_all(&zeros).unwrap();
            }
            f.sync_data().unwrap();
            f
        } else {
            OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .unwrap()
        };
        sync_dir(&self.dir);
        f
    }
    fn open(dir: &Path, prealloc: bool) -> Self {
        let dir = dir.join("segs");
        std::fs::create_dir_all(&dir).unwrap();
        let mut q = PlainQ {
            dir: dir.clone(),
            prealloc,
            spare: false,
            segs: VecDeque::new(),
            cur: File::open(&dir).unwrap(), // placeholder, replaced below
            cur_len: 0,
            key_seg: HashMap::new(),
            buf: Vec::with_capacity(64 << 10),
        };
        q.cur = q.new_seg(0);
        q.segs.push_back(Seg { id: 0, live: 0 });
        q
    }
    fn frame(buf: &mut Vec<u8>, seg_id: Option<u64>, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut d = CASTAGNOLI.digest();
        if let Some(id) = seg_id {
            d.update(&id.to_le_bytes());
        }
        for p in parts {
            d.update(p);
        }
        buf.extend_from_slice(&(len as u32).to_le_bytes());
        buf.extend_from_slice(&d.finalize().to_le_bytes());
        for p in parts {
            buf.extend_from_slice(p);
        }
    }
    fn rotate(&mut self) {
        let id = self.segs.back().unwrap().id + 1;
        self.cur = self.new_seg(id);
        self.cur_len = 0;
        self.segs.push_back(Seg { id, live: 0 });
    }
    fn drop_acked_prefix(&mut self) {
        let mut dropped = false;
        while self.segs.len() > 1 && self.segs.front().unwrap().live == 0 {
            let s = self.segs.pop_front().unwrap();
            if self.prealloc && !self.spare {
                std::fs::rename(Self::seg_path(&self.dir, s.id), self.dir.join("spare.log"))
                    .unwrap();
                self.spare = true;
            } else {
                std::fs::remove_file(Self::seg_path(&self.dir, s.id)).unwrap();
            }
            dropped = true;
        }
        if dropped {
            sync_dir(&self.dir);
        }
    }
}
impl Queue for PlainQ {
    fn commit(&mut self, new: &[Rec], acks: &[Rec]) {
        // frames are built for the segment they will land in
        let mut seg_id = self.segs.back().unwrap().id;
        for attempt in 0..2 {
            self.buf.clear();
            let tag = if self.prealloc { Some(seg_id) } else { None };
            for r in new {
                Self::frame(&mut self.buf, tag, &[&r.key.to_le_bytes(), &r.payload]);
            }
            for a in acks {
                Self::frame(&mut self.buf, tag, &[&a.key.to_le_bytes()]);
            }
            if attempt == 0 && self.cur_len > 0 && self.cur_len + self.buf.len() as u64 > SEG_BYTES
            {
                self.rotate();
                seg_id += 1;
                continue;
            }
            break;
        }
        if self.prealloc {
            use std::os::unix::fs::FileExt;
            self.cur.write_all_at(&self.buf, self.cur_len).unwrap();
        } else {
            self.cur.write_all(&self.buf).unwrap();
        }
        self.cur.sync_data().unwrap();
        self.cur_len += self.buf.len() as u64;
        let cur_id = self.segs.back().unwrap().id;
        self.segs.back_mut().unwrap().live += new.len() as u64;
        for r in new {
            self.key_seg.insert(r.key, cur_id);
        }
        let first = self.segs.front().unwrap().id;
        for a in acks {
            let sid = self.key_seg.remove(&a.key).unwrap();
            self.segs[(sid - first) as usize].live -= 1;
        }
        self.drop_acked_prefix();
    }
    fn reclaim(&mut self) {
        // everything is acked: seal the active segment, start an empty one, drop the rest
        self.rotate();
        self.drop_acked_prefix();
    }
}
