//! `PgStore`: the scaled-out order store on PostgreSQL, shared by every node.
//!
//! What makes it safe with many nodes writing at once:
//! - Order writers insert batches with one `INSERT ... SELECT FROM UNNEST(...) ON CONFLICT DO
//!   NOTHING` per chunk: the order id is the reservation id, so a redelivered reservation is a
//!   no-op, and a batch is sorted by id first so two writers with overlapping batches take row
//!   locks in the same order and cannot deadlock.
//! - A payment is a compare-and-set on the status (`... WHERE status = 'pending_payment'`).
//! - The reaper's expiry is one statement that locks its candidates with `FOR UPDATE SKIP
//!   LOCKED` and re-checks the status: two reapers on two nodes never get the same order, and a
//!   reaper never waits behind a payment in progress (it skips that row; the payment decides).
//!
//! Timestamps are unix milliseconds, like the embedded store; ids are native UUIDs, passed as
//! text and cast in SQL so sqlx needs no extra type features.

use async_trait::async_trait;
use flashsale_core::{
    BuyerId, Order, OrderId, OrderStatus, PaymentId, Reservation, Sale, SaleId, Timestamp,
};
use flashsale_service::ports::redact_password;
use flashsale_service::stored::{
    OrderColumns, SaleColumns, Stored, pay_by_compare_and_set, to_ms, waiting_room_json,
};
use flashsale_service::{
    BackendError, BackendResult, Holding, OrderCounts, OrderStore, PayOutcome,
};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::str::FromStr;
use std::time::Duration;

const BACKEND: &str = "postgres order store";
/// Decodes what this store wrote (shared rules, this store's name in errors).
const STORED: Stored = Stored::new(BACKEND);

/// The columns every order query selects, in the shape `order_from_row` reads.
macro_rules! order_columns {
    () => {
        "id::text AS id, sale_id::text AS sale_id, buyer, status, reserved_at_ms, expires_at_ms, payment_id"
    };
}

macro_rules! sale_columns {
    () => {
        "id::text AS id, name, price_cents, stock, starts_at_ms, ends_at_ms, per_buyer_limit, \
         payment_window_secs, version, waiting_room"
    };
}

/// `[postgres]`: limits of the PostgreSQL order store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgStoreConfig {
    /// Connections this node keeps to PostgreSQL at most. Every node has its own pool, so the
    /// server sees `nodes × connections_max`: keep it well under `max_connections`.
    pub connections_max: NonZeroU32,
    /// How long connecting, or waiting for a free pooled connection, may take.
    pub connect_timeout_ms: NonZeroU64,
    /// Rows per INSERT statement. A batch larger than this is several statements in one
    /// transaction; the bound keeps one statement's parameter arrays (and its WAL record
    /// burst) a known size.
    pub insert_rows_per_statement_max: NonZeroUsize,
}

impl Default for PgStoreConfig {
    fn default() -> Self {
        Self {
            connections_max: NonZeroU32::new(16).expect("not zero"),
            connect_timeout_ms: NonZeroU64::new(5_000).expect("not zero"),
            insert_rows_per_statement_max: NonZeroUsize::new(10_000).expect("not zero"),
        }
    }
}

/// The store could not be reached or prepared. Names the server (without its password).
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} PostgreSQL at {url}: {message}")]
pub struct PgStoreOpenError {
    pub action: &'static str,
    pub url: String,
    pub message: String,
}

/// The PostgreSQL order store. Cheap to clone: clones share the pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    insert_rows_per_statement_max: usize,
}

impl PgStore {
    /// Connects with the default limits and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self, PgStoreOpenError> {
        Self::connect_with(url, PgStoreConfig::default()).await
    }

    /// Connects to `url` (`postgres://user@host:port/db`) and runs the migrations. Several
    /// nodes may start at once: sqlx takes an advisory lock around the migrations.
    pub async fn connect_with(url: &str, config: PgStoreConfig) -> Result<Self, PgStoreOpenError> {
        let fail = |action: &'static str, message: String| PgStoreOpenError {
            action,
            url: redact_password(url),
            message,
        };
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| fail("connect to", format!("bad URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(config.connections_max.get())
            .acquire_timeout(Duration::from_millis(config.connect_timeout_ms.get()))
            .connect_with(options)
            .await
            .map_err(|e| fail("connect to", e.to_string()))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| fail("migrate", e.to_string()))?;
        Ok(Self {
            pool,
            insert_rows_per_statement_max: config.insert_rows_per_statement_max.get(),
        })
    }

    /// The pool, for tools that need plain SQL (benchmarks, checks).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for connections in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn read_order(&self, id: OrderId) -> BackendResult<Option<Order>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders WHERE id = $1::uuid"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| read_error("reading an order", e))?;
        row.map(|row| order_from_row(&row)).transpose()
    }

    /// One INSERT of already sorted, distinct reservations; returns how many were new.
    async fn insert_chunk<'e, E>(&self, executor: E, chunk: &[&Reservation]) -> BackendResult<u64>
    where
        E: sqlx::Executor<'e, Database = Postgres>,
    {
        let mut ids = Vec::with_capacity(chunk.len());
        let mut sales = Vec::with_capacity(chunk.len());
        let mut buyers = Vec::with_capacity(chunk.len());
        let mut reserved = Vec::with_capacity(chunk.len());
        let mut expires = Vec::with_capacity(chunk.len());
        for r in chunk {
            ids.push(r.order_id.to_string());
            sales.push(r.sale_id.to_string());
            buyers.push(r.buyer.as_str().to_owned());
            reserved.push(to_ms(r.reserved_at));
            expires.push(to_ms(r.expires_at));
        }
        // UNNEST: five array parameters whatever the batch size, so no parameter limit and one
        // plan for every batch (measured faster than multi-row VALUES, see the crate's tests).
        let result = sqlx::query(
            "INSERT INTO orders (id, sale_id, buyer, status, reserved_at_ms, expires_at_ms, updated_at_ms) \
             SELECT id, sale_id, buyer, 'pending_payment', reserved_at_ms, expires_at_ms, reserved_at_ms \
             FROM UNNEST($1::text[]::uuid[], $2::text[]::uuid[], $3::text[], $4::bigint[], $5::bigint[]) \
                  AS t(id, sale_id, buyer, reserved_at_ms, expires_at_ms) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(ids)
        .bind(sales)
        .bind(buyers)
        .bind(reserved)
        .bind(expires)
        .execute(executor)
        .await
        .map_err(|e| write_error("inserting orders", e))?;
        Ok(result.rows_affected())
    }
}

#[async_trait]
impl OrderStore for PgStore {
    async fn create_sale(&self, sale: &Sale) -> BackendResult<()> {
        let s = &sale.spec;
        sqlx::query(
            "INSERT INTO sales (id, name, price_cents, stock, starts_at_ms, ends_at_ms, per_buyer_limit, \
             payment_window_secs, version, waiting_room) VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10)",)
        .bind(sale.id.to_string())
        .bind(&s.name)
        .bind(STORED.fit::<_, i64>(s.price_cents, "price_cents")?)
        .bind(STORED.fit::<_, i32>(s.stock, "stock")?)
        .bind(to_ms(s.starts_at))
        .bind(to_ms(s.ends_at))
        .bind(STORED.fit::<_, i32>(s.per_buyer_limit, "per_buyer_limit")?)
        .bind(STORED.fit::<_, i32>(s.payment_window_secs, "payment_window_secs")?)
        .bind(STORED.fit::<_, i32>(sale.version, "version")?)
        .bind(waiting_room_json(s))
        .execute(&self.pool)
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
            "UPDATE sales SET name = $1, price_cents = $2, stock = $3, starts_at_ms = $4, ends_at_ms = $5, \
             per_buyer_limit = $6, payment_window_secs = $7, version = $8, waiting_room = $9 \
             WHERE id = $10::uuid AND version = $11",)
        .bind(&s.name)
        .bind(STORED.fit::<_, i64>(s.price_cents, "price_cents")?)
        .bind(STORED.fit::<_, i32>(s.stock, "stock")?)
        .bind(to_ms(s.starts_at))
        .bind(to_ms(s.ends_at))
        .bind(STORED.fit::<_, i32>(s.per_buyer_limit, "per_buyer_limit")?)
        .bind(STORED.fit::<_, i32>(s.payment_window_secs, "payment_window_secs")?)
        .bind(STORED.fit::<_, i32>(sale.version, "version")?)
        .bind(waiting_room_json(s))
        .bind(sale.id.to_string())
        .bind(STORED.fit::<_, i32>(previous_version, "version")?)
        .execute(&self.pool)
        .await
        .map_err(|e| write_error("updating a sale", e))?;
        Ok(result.rows_affected() == 1)
    }

    async fn get_sale(&self, id: SaleId) -> BackendResult<Option<Sale>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            sale_columns!(),
            " FROM sales WHERE id = $1::uuid"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| read_error("reading a sale", e))?;
        row.map(|row| sale_from_row(&row)).transpose()
    }

    async fn list_sales(&self) -> BackendResult<Vec<Sale>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            sale_columns!(),
            " FROM sales ORDER BY seq"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| read_error("listing sales", e))?;
        rows.iter().map(sale_from_row).collect()
    }

    async fn insert_orders(&self, batch: &[Reservation]) -> BackendResult<u64> {
        // Sorted and distinct: rows are locked in id order, so concurrent writers with
        // overlapping batches queue behind each other instead of deadlocking.
        let mut sorted: Vec<&Reservation> = batch.iter().collect();
        sorted.sort_by_key(|r| r.order_id);
        sorted.dedup_by_key(|r| r.order_id);
        if sorted.is_empty() {
            return Ok(0);
        }
        if sorted.len() <= self.insert_rows_per_statement_max {
            // One statement is atomic on its own: no BEGIN/COMMIT round trips.
            return self.insert_chunk(&self.pool, &sorted).await;
        }
        let mut tx: Transaction<'_, Postgres> = self
            .pool
            .begin()
            .await
            .map_err(|e| read_error("beginning an insert", e))?;
        let mut inserted = 0;
        for chunk in sorted.chunks(self.insert_rows_per_statement_max) {
            inserted += self.insert_chunk(&mut *tx, chunk).await?;
        }
        tx.commit()
            .await
            .map_err(|e| commit_error("inserting orders", e))?;
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
                "UPDATE orders SET status = 'paid', payment_id = $1, updated_at_ms = $2 \
                 WHERE id = $3::uuid AND status = 'pending_payment'",
            )
            .bind(payment.as_str())
            .bind(to_ms(now))
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(|e| write_error("paying an order", e))?;
            Ok(result.rows_affected() == 1)
        };
        pay_by_compare_and_set(&STORED, id, buyer, payment, now, read, mark_paid).await
    }

    async fn expire_due(&self, now: Timestamp, max: usize) -> BackendResult<Vec<Order>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        // One statement. The subquery locks up to `max` due candidates, skipping rows another
        // reaper or a payment holds; the outer status check is the compare-and-set; RETURNING
        // gives exactly the rows this statement moved. So racing reapers split the work.
        let rows = sqlx::query(concat!(
            "UPDATE orders SET status = 'expired', updated_at_ms = $1 \
             WHERE id IN (SELECT id FROM orders \
                          WHERE status = 'pending_payment' AND expires_at_ms <= $1 \
                          ORDER BY expires_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED) \
               AND status = 'pending_payment' \
             RETURNING ",
            order_columns!()
        ))
        .bind(to_ms(now))
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| write_error("expiring orders", e))?;
        rows.iter().map(order_from_row).collect()
    }

    async fn order_counts(&self, sale: SaleId) -> BackendResult<OrderCounts> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM orders WHERE sale_id = $1::uuid GROUP BY status",
        )
        .bind(sale.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| read_error("counting orders", e))?;
        let mut counts = OrderCounts::default();
        for row in rows {
            let status = text(&row, "status")?;
            let n = integer(&row, "n")?;
            let n = u64::try_from(n).map_err(|_| STORED.corrupt(format!("negative count {n}")))?;
            match STORED.status(&status)? {
                OrderStatus::PendingPayment => counts.pending_payment = n,
                OrderStatus::Paid => counts.paid = n,
                OrderStatus::Expired => counts.expired = n,
                OrderStatus::Cancelled => counts.cancelled = n,
            }
        }
        Ok(counts)
    }

    async fn holdings(&self, sale: SaleId) -> BackendResult<Vec<Holding>> {
        let rows = sqlx::query(
            "SELECT id::text AS id, buyer, status FROM orders WHERE sale_id = $1::uuid",
        )
        .bind(sale.to_string())
        .fetch_all(&self.pool)
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
        let rows = sqlx::query(concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders WHERE sale_id = $1::uuid ORDER BY reserved_at_ms DESC, id DESC LIMIT $2"
        ))
        .bind(sale.to_string())
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| read_error("reading recent orders", e))?;
        rows.iter().map(order_from_row).collect()
    }
}

fn order_from_row(row: &PgRow) -> BackendResult<Order> {
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
fn sale_from_row(row: &PgRow) -> BackendResult<Sale> {
    let number = |column: &str| -> BackendResult<i64> {
        let value: i32 = row
            .try_get(column)
            .map_err(|e| read_error("reading a sale", e))?;
        Ok(i64::from(value))
    };
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

fn text(row: &PgRow, column: &str) -> BackendResult<String> {
    row.try_get(column)
        .map_err(|e| read_error("reading a row", e))
}

fn integer(row: &PgRow, column: &str) -> BackendResult<i64> {
    row.try_get(column)
        .map_err(|e| read_error("reading a row", e))
}

/// A read changes nothing, whatever went wrong.
fn read_error(what: &str, e: sqlx::Error) -> BackendError {
    BackendError::determinate(BACKEND, format!("{what}: {e}"))
}

/// Whether a failed statement surely changed nothing: the server answered with an error (it
/// rolled the statement back), or the request never left the pool.
fn surely_not_applied(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Database(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Configuration(_)
            | sqlx::Error::Encode(_)
    )
}

/// A failed write: known when the server refused it, unknown when the connection broke after
/// the statement was sent (it may have committed).
fn write_error(what: &str, e: sqlx::Error) -> BackendError {
    if surely_not_applied(&e) {
        BackendError::determinate(BACKEND, format!("{what}: {e}"))
    } else {
        BackendError::indeterminate(BACKEND, format!("{what}: {e}"))
    }
}

/// A failed COMMIT: the server may have committed before the connection broke.
fn commit_error(what: &str, e: sqlx::Error) -> BackendError {
    if matches!(e, sqlx::Error::Database(_)) {
        BackendError::determinate(BACKEND, format!("{what}: commit refused: {e}"))
    } else {
        BackendError::indeterminate(BACKEND, format!("{what}: commit failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        let cases = [
            (
                "postgres://app:s3cret@db:5432/shop",
                "postgres://app:***@db:5432/shop",
            ),
            ("postgres://app@db/shop", "postgres://app@db/shop"),
            ("postgres://db/shop?x=a:b@c", "postgres://db/shop?x=a:b@c"),
            ("not a url", "not a url"),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_password(url), expected, "{url}");
        }
    }
}
