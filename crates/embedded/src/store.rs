//! `SqliteStore`: the embedded order store, one SQLite file in WAL mode with full sync.
//!
//! One writer connection: SQLite allows one writer at a time anyway, and a single connection
//! turns lock contention (SQLITE_BUSY and retries) into a plain queue in the pool. Reads go
//! through a small separate pool of read-only connections, which WAL lets run beside the
//! writer.

use async_trait::async_trait;
use flashsale_core::{
    BuyerId, Order, OrderId, OrderStatus, PaymentId, Reservation, Sale, SaleId, Timestamp,
};
use flashsale_service::stored::{
    OrderColumns, SaleColumns, Stored, pay_by_compare_and_set, to_ms, waiting_room_json,
};
use flashsale_service::{
    BackendError, BackendResult, Holding, OrderCounts, OrderStore, PayOutcome, faults,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use std::str::FromStr;
use std::time::Duration;

const BACKEND: &str = "sqlite order store";
/// Decodes what this store wrote (shared rules, this store's name in errors).
const STORED: Stored = Stored::new(BACKEND);

/// How long a connection waits for a lock held by another process (a backup, the sqlite3
/// shell) before failing.
const BUSY_TIMEOUT_MS: u64 = 5_000;
/// Read-only connections beside the writer.
const READ_CONNECTIONS_MAX: u32 = 4;
/// The writer connection's page cache (SQLite's default is 2 MB). Order ids are random, so
/// every insert lands on a random leaf of the primary key and of `orders_by_sale`'s tree; with
/// the default cache a drain of a few hundred thousand orders reads pages back from the file
/// for most inserts. 64 MiB holds the hot trees of a large sale: the drain measured 40k → 47k
/// orders a second (BENCHMARKS.md, 2026-12-03 fifth session).
const WRITER_PAGE_CACHE_BYTES: u64 = 64 << 20;
/// Rows per multi-row INSERT: 8 parameters each, 8,000 in all, well under the 32,766 bound
/// parameters of the bundled SQLite.
const INSERT_ROWS_PER_STATEMENT_MAX: usize = 1_000;

/// Opening the store failed. Names the database.
#[derive(Debug, thiserror::Error)]
#[error("sqlite order store {location}: {message}")]
pub struct StoreOpenError {
    pub location: String,
    pub message: String,
}

/// The embedded order store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
}

impl SqliteStore {
    /// Opens the database at a file path or `sqlite:` URL, creating the file if missing, and
    /// runs the migrations. In-memory databases are refused: the writer and the readers would
    /// each see their own.
    pub async fn open(path_or_url: &str) -> Result<Self, StoreOpenError> {
        let fail = |message: String| StoreOpenError {
            location: path_or_url.to_owned(),
            message,
        };
        let base = if path_or_url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(path_or_url)
                .map_err(|e| fail(format!("bad URL: {e}")))?
        } else {
            SqliteConnectOptions::new().filename(path_or_url)
        };
        if path_or_url.contains(":memory:")
            || path_or_url.contains("mode=memory")
            || base.get_filename().as_os_str().is_empty()
        {
            return Err(fail(
                "an in-memory database cannot be shared by the writer and the readers".into(),
            ));
        }
        let writer_options = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit survives power loss, which an acknowledged order must.
            .synchronous(SqliteSynchronous::Full)
            // Negative: a size in KiB, not in pages.
            .pragma("cache_size", format!("-{}", WRITER_PAGE_CACHE_BYTES / 1024))
            .busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS));
        let writer = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .connect_with(writer_options)
            .await
            .map_err(|e| fail(format!("cannot open: {e}")))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .map_err(|e| fail(format!("migrations failed: {e}")))?;
        let reader_options = base
            .read_only(true)
            .busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS));
        let readers = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS_MAX)
            .connect_with(reader_options)
            .await
            .map_err(|e| fail(format!("cannot open for reading: {e}")))?;
        Ok(Self { writer, readers })
    }

    /// Closes both pools, waiting for connections in use.
    pub async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }

    async fn read_order(&self, id: OrderId) -> BackendResult<Option<Order>> {
        let row = sqlx::query(
            "SELECT id, sale_id, buyer, status, reserved_at_ms, expires_at_ms, payment_id FROM orders WHERE id = ?",
        )
        .bind(id.to_string())
        .fetch_optional(&self.readers)
        .await
        .map_err(|e| read_error("reading an order", e))?;
        row.map(|row| order_from_row(&row)).transpose()
    }
}

#[async_trait]
impl OrderStore for SqliteStore {
    async fn create_sale(&self, sale: &Sale) -> BackendResult<()> {
        let s = &sale.spec;
        sqlx::query(
            "INSERT INTO sales (id, name, price_cents, stock, starts_at_ms, ends_at_ms, per_buyer_limit, \
             payment_window_secs, version, waiting_room) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",)
        .bind(sale.id.to_string())
        .bind(&s.name)
        .bind(STORED.fit::<_, i64>(s.price_cents, "price_cents")?)
        .bind(i64::from(s.stock))
        .bind(to_ms(s.starts_at))
        .bind(to_ms(s.ends_at))
        .bind(i64::from(s.per_buyer_limit))
        .bind(i64::from(s.payment_window_secs))
        .bind(i64::from(sale.version))
        .bind(waiting_room_json(s))
        .execute(&self.writer)
        .await
        .map_err(|e| write_error("creating a sale", e))?;
        Ok(())
    }

    async fn update_sale(&self, sale: &Sale) -> BackendResult<bool> {
        let Some(previous_version) = sale.version.checked_sub(1) else {
            return Ok(false);
        };
        let s = &sale.spec;
        let result = sqlx::query(
            "UPDATE sales SET name = ?, price_cents = ?, stock = ?, starts_at_ms = ?, ends_at_ms = ?, \
             per_buyer_limit = ?, payment_window_secs = ?, version = ?, waiting_room = ? \
             WHERE id = ? AND version = ?",)
        .bind(&s.name)
        .bind(STORED.fit::<_, i64>(s.price_cents, "price_cents")?)
        .bind(i64::from(s.stock))
        .bind(to_ms(s.starts_at))
        .bind(to_ms(s.ends_at))
        .bind(i64::from(s.per_buyer_limit))
        .bind(i64::from(s.payment_window_secs))
        .bind(i64::from(sale.version))
        .bind(waiting_room_json(s))
        .bind(sale.id.to_string())
        .bind(i64::from(previous_version))
        .execute(&self.writer)
        .await
        .map_err(|e| write_error("updating a sale", e))?;
        Ok(result.rows_affected() == 1)
    }

    async fn get_sale(&self, id: SaleId) -> BackendResult<Option<Sale>> {
        let row = sqlx::query(
            "SELECT id, name, price_cents, stock, starts_at_ms, ends_at_ms, per_buyer_limit, payment_window_secs, \
             version, waiting_room FROM sales WHERE id = ?",
        )
        .bind(id.to_string())
        .fetch_optional(&self.readers)
        .await
        .map_err(|e| read_error("reading a sale", e))?;
        row.map(|row| sale_from_row(&row)).transpose()
    }

    async fn list_sales(&self) -> BackendResult<Vec<Sale>> {
        let rows = sqlx::query(
            "SELECT id, name, price_cents, stock, starts_at_ms, ends_at_ms, per_buyer_limit, payment_window_secs, \
             version, waiting_room FROM sales ORDER BY seq",
        )
        .fetch_all(&self.readers)
        .await
        .map_err(|e| read_error("listing sales", e))?;
        rows.iter().map(sale_from_row).collect()
    }

    async fn insert_orders(&self, batch: &[Reservation]) -> BackendResult<u64> {
        if batch.is_empty() {
            return Ok(0);
        }
        let mut tx = self
            .writer
            .begin()
            .await
            .map_err(|e| write_error("beginning an insert", e))?;
        let mut inserted = 0;
        for chunk in batch.chunks(INSERT_ROWS_PER_STATEMENT_MAX) {
            let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO orders (id, sale_id, buyer, status, reserved_at_ms, expires_at_ms, payment_id, \
                 updated_at_ms) ",
            );
            insert.push_values(chunk, |mut row, r| {
                row.push_bind(r.order_id.to_string())
                    .push_bind(r.sale_id.to_string())
                    .push_bind(r.buyer.as_str().to_owned())
                    .push_bind(OrderStatus::PendingPayment.as_str())
                    .push_bind(to_ms(r.reserved_at))
                    .push_bind(to_ms(r.expires_at))
                    .push_bind(None::<String>)
                    .push_bind(to_ms(r.reserved_at));
            });
            // An order id that exists already (a redelivered reservation) is skipped, which
            // makes the order writers idempotent.
            insert.push(" ON CONFLICT (id) DO NOTHING");
            let result = insert
                .build()
                .execute(&mut *tx)
                .await
                .map_err(|e| write_error("inserting orders", e))?;
            inserted += result.rows_affected();
        }
        faults::point("sqlite.insert_orders.before_commit", faults::Happened::No).await?;
        tx.commit()
            .await
            .map_err(|e| commit_error("inserting orders", e))?;
        faults::point("sqlite.insert_orders.after_commit", faults::Happened::Yes).await?;
        Ok(inserted)
    }

    async fn get_order(&self, id: OrderId) -> BackendResult<Option<Order>> {
        self.read_order(id).await
    }

    async fn pay(
        &self,
        id: OrderId,
        buyer: &BuyerId,
        payment: &PaymentId,
        now: Timestamp,
    ) -> BackendResult<PayOutcome> {
        let read = || self.read_order(id);
        let mark_paid = move || async move {
            let result = sqlx::query(
                "UPDATE orders SET status = 'paid', payment_id = ?, updated_at_ms = ? \
                 WHERE id = ? AND status = 'pending_payment'",
            )
            .bind(payment.as_str())
            .bind(to_ms(now))
            .bind(id.to_string())
            .execute(&self.writer)
            .await
            .map_err(|e| write_error("paying an order", e))?;
            faults::point("sqlite.pay.after_update", faults::Happened::Yes).await?;
            Ok(result.rows_affected() == 1)
        };
        pay_by_compare_and_set(&STORED, id, buyer, payment, now, read, mark_paid).await
    }

    async fn expire_due(&self, now: Timestamp, max: usize) -> BackendResult<Vec<Order>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self
            .writer
            .begin()
            .await
            .map_err(|e| write_error("beginning an expiry", e))?;
        // One statement: pick the due ones and move them only if still pending, returning
        // exactly the rows this statement changed. With one writer connection reapers run one
        // after the other; the status check keeps it correct even without that.
        let rows = sqlx::query(
            "UPDATE orders SET status = 'expired', updated_at_ms = ?1 \
             WHERE id IN (SELECT id FROM orders WHERE status = 'pending_payment' AND expires_at_ms <= ?1 \
                          ORDER BY expires_at_ms LIMIT ?2) \
               AND status = 'pending_payment' \
             RETURNING id, sale_id, buyer, status, reserved_at_ms, expires_at_ms, payment_id",
        )
        .bind(to_ms(now))
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| write_error("expiring orders", e))?;
        let expired = rows
            .iter()
            .map(order_from_row)
            .collect::<BackendResult<Vec<_>>>()?;
        faults::point("sqlite.expire_due.before_commit", faults::Happened::No).await?;
        tx.commit()
            .await
            .map_err(|e| commit_error("expiring orders", e))?;
        faults::point("sqlite.expire_due.after_commit", faults::Happened::Yes).await?;
        Ok(expired)
    }

    async fn order_counts(&self, sale: SaleId) -> BackendResult<OrderCounts> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM orders WHERE sale_id = ? GROUP BY status",
        )
        .bind(sale.to_string())
        .fetch_all(&self.readers)
        .await
        .map_err(|e| read_error("counting orders", e))?;
        let mut counts = OrderCounts::default();
        for row in rows {
            let status: String = row
                .try_get("status")
                .map_err(|e| read_error("counting orders", e))?;
            let n: i64 = row
                .try_get("n")
                .map_err(|e| read_error("counting orders", e))?;
            let n = u64::try_from(n).map_err(|_| STORED.corrupt(format!("negative count {n}")))?;
            match OrderStatus::parse(&status) {
                Some(OrderStatus::PendingPayment) => counts.pending_payment = n,
                Some(OrderStatus::Paid) => counts.paid = n,
                Some(OrderStatus::Expired) => counts.expired = n,
                Some(OrderStatus::Cancelled) => counts.cancelled = n,
                None => return Err(STORED.corrupt(format!("unknown order status {status:?}"))),
            }
        }
        Ok(counts)
    }

    async fn holdings(&self, sale: SaleId) -> BackendResult<Vec<Holding>> {
        let rows = sqlx::query("SELECT id, buyer, status FROM orders WHERE sale_id = ?")
            .bind(sale.to_string())
            .fetch_all(&self.readers)
            .await
            .map_err(|e| read_error("reading holdings", e))?;
        rows.iter()
            .map(|row| {
                let status = STORED.status(&text(row, "status")?)?;
                Ok(Holding {
                    order_id: STORED.order_id(&text(row, "id")?)?,
                    buyer: STORED.buyer(&text(row, "buyer")?)?,
                    live: status.is_live(),
                    batch: None,
                })
            })
            .collect()
    }

    async fn recent_orders(&self, sale: SaleId, max: usize) -> BackendResult<Vec<Order>> {
        let rows = sqlx::query(
            "SELECT id, sale_id, buyer, status, reserved_at_ms, expires_at_ms, payment_id FROM orders \
             WHERE sale_id = ? ORDER BY reserved_at_ms DESC, id DESC LIMIT ?",
        )
        .bind(sale.to_string())
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&self.readers)
        .await
        .map_err(|e| read_error("reading recent orders", e))?;
        rows.iter().map(order_from_row).collect()
    }
}

fn order_from_row(row: &SqliteRow) -> BackendResult<Order> {
    OrderColumns {
        id: text(row, "id")?,
        sale_id: text(row, "sale_id")?,
        buyer: text(row, "buyer")?,
        status: text(row, "status")?,
        reserved_at_ms: integer(row, "reserved_at_ms")?,
        expires_at_ms: integer(row, "expires_at_ms")?,
        payment_id: row
            .try_get("payment_id")
            .map_err(|e| read_error("reading an order", e))?,
    }
    .decode(&STORED)
}

/// Reads the columns of `sale_columns!`.
fn sale_from_row(row: &SqliteRow) -> BackendResult<Sale> {
    let number = |column: &str| integer(row, column);
    SaleColumns {
        id: text(row, "id")?,
        name: text(row, "name")?,
        price_cents: integer(row, "price_cents")?,
        stock: number("stock")?,
        starts_at_ms: integer(row, "starts_at_ms")?,
        ends_at_ms: integer(row, "ends_at_ms")?,
        per_buyer_limit: number("per_buyer_limit")?,
        payment_window_secs: number("payment_window_secs")?,
        version: number("version")?,
        waiting_room: row
            .try_get("waiting_room")
            .map_err(|e| read_error("reading a sale", e))?,
    }
    .decode(&STORED)
}

fn text(row: &SqliteRow, column: &str) -> BackendResult<String> {
    row.try_get(column)
        .map_err(|e| read_error("reading a row", e))
}

fn integer(row: &SqliteRow, column: &str) -> BackendResult<i64> {
    row.try_get(column)
        .map_err(|e| read_error("reading a row", e))
}

fn read_error(what: &str, e: sqlx::Error) -> BackendError {
    BackendError::determinate(BACKEND, format!("{what}: {e}"))
}

/// A failed statement: SQLite rolls the statement back, so the outcome is known, except for
/// I/O failures, where we cannot tell what reached the disk.
fn write_error(what: &str, e: sqlx::Error) -> BackendError {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => {
            BackendError::indeterminate(BACKEND, format!("{what}: {e}"))
        }
        _ => BackendError::determinate(BACKEND, format!("{what}: {e}")),
    }
}

/// A failed commit may or may not have reached the disk.
fn commit_error(what: &str, e: sqlx::Error) -> BackendError {
    BackendError::indeterminate(BACKEND, format!("{what}: commit failed: {e}"))
}
