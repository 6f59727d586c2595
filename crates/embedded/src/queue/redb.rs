//! The queue on a redb file (`RedbQueue`): one table of reservations under their order ids, a
//! write transaction with immediate durability per group. The engine before the reservation
//! log; kept so a data directory it wrote can still be opened and drained (the server imports
//! it into the log at start), and as the log's reference in the queue comparison.

use super::committer::{CommitFailure, Storage};
use super::record::{RESERVATIONS, encode_record, load};
use flashsale_core::{BatchId, OrderId, Reservation};
use flashsale_service::Queued;
use redb::{Database, Durability};
use std::path::Path;

/// A redb file holding the queued reservations.
#[derive(Debug)]
pub struct RedbStorage {
    db: Database,
}

impl RedbStorage {
    /// Opens (or creates) the file and reads every stored reservation, oldest first.
    pub(crate) fn open(path: &Path) -> Result<(Self, Vec<(Queued, u64)>), String> {
        let (db, records) = load(path)?;
        Ok((Self { db }, records.into_iter().map(|q| (q, 0)).collect()))
    }
}

impl Storage for RedbStorage {
    const BACKEND: &'static str = "redb reservation queue";

    fn encode(batch: BatchId, reservation: &Reservation, out: &mut Vec<u8>) -> Result<(), String> {
        let (_, json) = encode_record(batch, reservation)?;
        out.extend_from_slice(&json);
        Ok(())
    }

    fn commit(
        &mut self,
        writes: &[(OrderId, &[u8])],
        deletes: &[OrderId],
    ) -> Result<u64, CommitFailure> {
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| CommitFailure::before_write("cannot begin a write", &e))?;
        // Immediate: the commit returns only after fsync, which is what makes `Durable` true.
        txn.set_durability(Durability::Immediate)
            .map_err(|e| CommitFailure::before_write("cannot set durability", &e))?;
        {
            let mut table = txn
                .open_table(RESERVATIONS)
                .map_err(|e| CommitFailure::before_write("cannot open the table", &e))?;
            // Deletes first: an order id enqueued again after its ack (in the same batch) must
            // stay, as it does in the index.
            for id in deletes {
                table
                    .remove(id.0.as_u128())
                    .map_err(|e| CommitFailure::before_write("cannot delete", &e))?;
            }
            for &(id, json) in writes {
                table
                    .insert(id.0.as_u128(), json)
                    .map_err(|e| CommitFailure::before_write("cannot insert", &e))?;
            }
        }
        // A failed commit (say, fsync failed) may or may not have reached the disk.
        txn.commit()
            .map_err(|e| CommitFailure::unknown(format!("commit failed: {e}")))?;
        Ok(0)
    }

    /// redb reuses the pages of deleted rows itself.
    fn tidy(&mut self, _holds: &dyn Fn(u64) -> bool) {}

    fn segments(&self) -> u64 {
        1
    }
}
