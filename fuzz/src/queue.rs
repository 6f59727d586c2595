//! The embedded queue's storages: one redb record decoded from bytes (`decode_record`), the
//! whole redb file opened after a crash or damage (`RedbQueue::open`), and the reservation
//! log's records and segments (`decode_log_record`, `LogQueue::open`).

use crate::NOW;
use arbitrary::{Arbitrary, Unstructured};
use flashsale_core::{BatchId, BuyerId, OrderId, Reservation, SaleId};
use flashsale_embedded::queue::{
    LogRecord, decode_log_record, decode_record, encode_log_record, encode_record,
};
use flashsale_embedded::{LogQueue, QueueConfig, RedbQueue};
use flashsale_service::ReservationQueue;
use std::path::PathBuf;
use std::sync::{Once, OnceLock};
use uuid::Uuid;

/// `queue_record`: a stored record (JSON of a reservation and its batch, under a u128 key).
/// Decoded or refused with an error, never a panic; a decoded reservation names the key's
/// order, and encoding it again gives a record that decodes to the same reservation and batch
/// under the same key. Mode 0 takes the key from the fuzz input; mode 1 takes it from the
/// record's own `reservation.order_id`, so the fuzzer gets past the key check.
pub fn check_queue_record(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let (Ok(key_from_record), Ok(key)) = (bool::arbitrary(&mut u), u128::arbitrary(&mut u)) else {
        return;
    };
    let json = u.take_rest();
    let key = if key_from_record {
        let own = serde_json::from_slice::<serde_json::Value>(json)
            .ok()
            .and_then(|v| {
                v.get("reservation")?
                    .get("order_id")?
                    .as_str()
                    .map(str::to_owned)
            })
            .and_then(|text| Uuid::try_parse(&text).ok());
        own.map_or(key, |id| id.as_u128())
    } else {
        key
    };
    let Ok(queued) = decode_record(key, json) else {
        return;
    };
    assert_eq!(queued.reservation.order_id.0.as_u128(), key);
    let (written_key, written) = encode_record(queued.batch, &queued.reservation).unwrap();
    assert_eq!(written_key, key);
    assert_eq!(decode_record(written_key, &written), Ok(queued));
}

fn reservations() -> Vec<Reservation> {
    (1..=3u128)
        .map(|n| {
            let buyer = BuyerId::parse(&format!("buyer-{n}")).unwrap();
            Reservation::new(
                OrderId(Uuid::from_u128(n)),
                SaleId(Uuid::from_u128(99)),
                buyer,
                NOW,
                600,
            )
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// A directory of this process's own for queue files; in memory where there is a tmpfs,
/// since every open writes and fsyncs.
fn scratch_dir() -> PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("flashsale-fuzz-queue-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Stores the three reservations: one alone and two in a batch, so both kinds of batch are
/// in the storage. Returns the one stored alone.
async fn store_three(queue: &dyn ReservationQueue) -> OrderId {
    let mut all = reservations();
    let alone = all.remove(0);
    let id = alone.order_id;
    queue
        .enqueue(BatchId::of_order(alone.order_id), vec![alone])
        .await
        .unwrap();
    queue
        .enqueue(BatchId(Uuid::from_u128(1 << 120)), all)
        .await
        .unwrap();
    id
}

/// A queue file holding three reservations, written once by the queue itself.
fn valid_queue_file() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = scratch_dir().join("valid.redb");
        let _ = std::fs::remove_file(&path);
        {
            let queue = RedbQueue::open(&path, QueueConfig::default()).unwrap();
            runtime().block_on(store_three(&queue));
        }
        std::fs::read(&path).unwrap()
    })
}

#[derive(Debug, Arbitrary)]
struct Damage {
    /// Keep this many bytes (modulo the length + 1): a torn tail.
    truncate_to: Option<u32>,
    /// Overwrite bytes at these offsets (modulo the length).
    overwrite: Vec<(u32, u8)>,
}

impl Damage {
    fn apply(self, file: &mut Vec<u8>) {
        if let Some(to) = self.truncate_to {
            file.truncate(to as usize % (file.len() + 1));
        }
        for (at, byte) in self.overwrite {
            if !file.is_empty() {
                let len = file.len();
                file[at as usize % len] = byte;
            }
        }
    }
}

/// `queue_file`: the queue file written by `RedbQueue`, then truncated and overwritten at
/// fuzz-chosen places, as a crash or a bad disk might leave it. `open` gives an error naming
/// the file, never a panic that escapes it (it catches redb's own); and a file it does open
/// holds nothing but reservations that were written.
pub fn check_queue_file(data: &[u8]) {
    // libFuzzer's panic hook aborts at any panic, even one that `open` catches by design;
    // panics that escape are still caught (and abort) by the fuzz target's wrapper.
    static QUIET_CAUGHT_PANICS: Once = Once::new();
    QUIET_CAUGHT_PANICS.call_once(|| std::panic::set_hook(Box::new(|_| {})));

    let Ok(damage) = Damage::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let mut file = valid_queue_file().to_vec();
    damage.apply(&mut file);
    let path = scratch_dir().join("damaged.redb");
    std::fs::write(&path, &file).unwrap();
    match RedbQueue::open(&path, QueueConfig::default()) {
        Err(error) => assert_eq!(error.path, path),
        Ok(queue) => holds_only_what_was_written(&queue),
    }
}

/// `queue_log`: the reservation log (`LogQueue`). The first byte picks the check:
/// - even: the rest is one record's payload. `decode_log_record` answers a record or an error,
///   never a panic, and an enqueue it reads is written back byte for byte by
///   `encode_log_record`.
/// - odd: the rest is a `Damage` to a segment the log wrote itself (three reservations stored,
///   one of them acked). `LogQueue::open` answers an error naming the directory, or opens the
///   log holding only reservations that were written (an ack cut off with a torn tail brings
///   its reservation back: a redelivery, which the writers tolerate).
pub fn check_queue_log(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        check_log_record(rest);
    } else {
        check_log_segment(rest);
    }
}

fn check_log_record(payload: &[u8]) {
    let Ok(record) = decode_log_record(payload) else {
        return;
    };
    if let LogRecord::Enqueue { batch, reservation } = record {
        let framed = encode_log_record(batch, &reservation);
        assert_eq!(&framed[8..], payload, "an enqueue reads back as written");
    }
}

/// The one segment of a log holding three reservations, one acked, written by the log itself.
fn valid_log_segment() -> &'static [u8] {
    static SEGMENT: OnceLock<Vec<u8>> = OnceLock::new();
    SEGMENT.get_or_init(|| {
        let dir = scratch_dir().join("valid-log");
        let _ = std::fs::remove_dir_all(&dir);
        {
            let queue = LogQueue::open(&dir, QueueConfig::default()).unwrap();
            runtime().block_on(async {
                let acked = store_three(&queue).await;
                let taken = queue
                    .take_batch(1, std::time::Duration::from_secs(1))
                    .await
                    .unwrap();
                assert_eq!(taken[0].order_id, acked);
                queue.ack(&[acked]).await.unwrap();
            });
        }
        std::fs::read(dir.join("00000000000000000001.seg")).unwrap()
    })
}

fn check_log_segment(data: &[u8]) {
    static QUIET_CAUGHT_PANICS: Once = Once::new();
    QUIET_CAUGHT_PANICS.call_once(|| std::panic::set_hook(Box::new(|_| {})));

    let Ok(damage) = Damage::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let mut segment = valid_log_segment().to_vec();
    damage.apply(&mut segment);
    let dir = scratch_dir().join("damaged-log");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("00000000000000000001.seg"), &segment).unwrap();
    match LogQueue::open(&dir, QueueConfig::default()) {
        Err(error) => assert_eq!(error.path, dir),
        Ok(queue) => holds_only_what_was_written(&queue),
    }
}

/// A queue opened from damaged storage holds nothing but reservations that were written.
fn holds_only_what_was_written(queue: &dyn ReservationQueue) {
    let written = reservations();
    let held = runtime().block_on(queue.all_queued()).unwrap();
    for queued in held {
        assert!(
            written.contains(&queued.reservation),
            "damaged storage gave a reservation never written: {queued:?}"
        );
    }
}
