//! The embedded queue's storage: one record decoded from bytes (`decode_record`), and the
//! whole redb file opened after a crash or damage (`RedbQueue::open`).

use crate::NOW;
use arbitrary::{Arbitrary, Unstructured};
use flashsale_core::{BatchId, BuyerId, OrderId, Reservation, SaleId};
use flashsale_embedded::queue::{decode_record, encode_record};
use flashsale_embedded::{RedbQueue, QueueConfig};
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

/// A queue file holding three reservations, written once by the queue itself.
fn valid_queue_file() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = scratch_dir().join("valid.redb");
        let _ = std::fs::remove_file(&path);
        {
            let queue = RedbQueue::open(&path, QueueConfig::default()).unwrap();
            runtime().block_on(async {
                // One alone and two in a batch: both kinds of record are in the file.
                let mut all = reservations();
                let alone = all.remove(0);
                queue
                    .enqueue(BatchId::of_order(alone.order_id), vec![alone])
                    .await
                    .unwrap();
                queue
                    .enqueue(BatchId(Uuid::from_u128(1 << 120)), all)
                    .await
                    .unwrap();
            });
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
    if let Some(to) = damage.truncate_to {
        file.truncate(to as usize % (file.len() + 1));
    }
    for (at, byte) in damage.overwrite {
        if !file.is_empty() {
            let len = file.len();
            file[at as usize % len] = byte;
        }
    }
    let path = scratch_dir().join("damaged.redb");
    std::fs::write(&path, &file).unwrap();
    match RedbQueue::open(&path, QueueConfig::default()) {
        Err(error) => assert_eq!(error.path, path),
        Ok(queue) => {
            let written = reservations();
            let held = runtime().block_on(queue.all_queued()).unwrap();
            for queued in held {
                assert!(
                    written.contains(&queued.reservation),
                    "a damaged file gave a reservation never written: {queued:?}"
                );
            }
        }
    }
}
