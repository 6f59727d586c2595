//! The queue file: its one table, the record each row holds (a reservation and its batch, as
//! JSON under its order id), and reading every record back at open (recovery: after a restart
//! everything in the file is queued again).

use flashsale_core::{BatchId, Reservation};
use flashsale_service::Queued;
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Order id (as u128) → the record (`Record`: the reservation and its batch) as JSON. JSON, not
/// a binary format: the queue holds at most `capacity_reservations` small records, and a
/// readable file helps when debugging.
pub(crate) const RESERVATIONS: TableDefinition<u128, &[u8]> = TableDefinition::new("reservations");

/// What one row of the file holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Record {
    batch: BatchId,
    reservation: Reservation,
}

/// One stored record back into its reservation and batch: the JSON that `enqueue` wrote,
/// under the key of its own order id. Anything else (damaged bytes, a record moved to another
/// key) is an error naming the key, never a panic. Public for the fuzz target `queue_record`.
pub fn decode_record(key: u128, json: &[u8]) -> Result<Queued, String> {
    let record: Record = serde_json::from_slice(json)
        .map_err(|e| format!("the reservation under key {key:x} is unreadable: {e}"))?;
    if record.reservation.order_id.0.as_u128() != key {
        return Err(format!(
            "the reservation under key {key:x} names order {}",
            record.reservation.order_id
        ));
    }
    Ok(Queued {
        batch: record.batch,
        reservation: record.reservation,
    })
}

/// How `enqueue` stores a reservation of `batch`: its key and its JSON. The inverse of
/// `decode_record`.
pub fn encode_record(batch: BatchId, reservation: &Reservation) -> Result<(u128, Vec<u8>), String> {
    #[derive(Serialize)]
    struct RecordRef<'a> {
        batch: BatchId,
        reservation: &'a Reservation,
    }
    let json = serde_json::to_vec(&RecordRef { batch, reservation })
        .map_err(|e| format!("cannot encode the reservation: {e}"))?;
    Ok((reservation.order_id.0.as_u128(), json))
}

/// Opens the file and reads every stored reservation.
pub(crate) fn load(path: &Path) -> Result<(Database, Vec<Queued>), String> {
    // The integrity check reads the whole file on open; the queue is bounded and small, and it
    // turns a damaged file into an error where a plain open may panic.
    let db = Database::builder()
        .set_check_integrity_on_open(true)
        .create(path)
        .map_err(|e| format!("cannot open it as a redb database: {e}"))?;
    {
        // Creates the table in a new file, so reads below and later never miss it.
        let txn = db
            .begin_write()
            .map_err(|e| format!("cannot write to it: {e}"))?;
        txn.open_table(RESERVATIONS)
            .map_err(|e| format!("cannot open the reservations table: {e}"))?;
        txn.commit()
            .map_err(|e| format!("cannot commit to it: {e}"))?;
    }
    let mut reservations = Vec::new();
    {
        use redb::ReadableDatabase;
        let txn = db
            .begin_read()
            .map_err(|e| format!("cannot read it: {e}"))?;
        let table = txn
            .open_table(RESERVATIONS)
            .map_err(|e| format!("cannot open the reservations table: {e}"))?;
        for row in table
            .iter()
            .map_err(|e| format!("cannot read the reservations: {e}"))?
        {
            let (key, value) = row.map_err(|e| format!("cannot read a reservation: {e}"))?;
            reservations.push(decode_record(key.value(), value.value())?);
        }
    }
    // Oldest first, so the backlog drains in the order buyers came.
    reservations.sort_by_key(|q| (q.reservation.reserved_at, q.reservation.order_id));
    Ok((db, reservations))
}
