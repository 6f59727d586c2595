//! The few flashsale endpoints the bench calls besides the buy path: admin (create a sale,
//! read its counters, layers and orders), status, orders and payments, `/metrics`.

use crate::client::{Conn, Target};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Most orders asked for in one admin listing (the server's own cap).
pub const ORDERS_LISTED_MAX: usize = 10_000;

pub struct Api {
    target: Target,
    admin_auth: String,
}

/// A sale's counters from the admin view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub stock_total: u64,
    pub available: u64,
    pub queued: u64,
    pub pending_payment: u64,
    pub paid: u64,
    pub expired: u64,
    pub cancelled: u64,
}

impl Counters {
    fn of(view: &Value) -> Self {
        let c = &view["counters"];
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        Self {
            stock_total: n("stock_total"),
            available: n("available"),
            queued: n("queued"),
            pending_payment: n("pending_payment"),
            paid: n("paid"),
            expired: n("expired"),
            cancelled: n("cancelled"),
        }
    }

    /// Orders in the store, whatever their status.
    pub fn written(&self) -> u64 {
        self.pending_payment + self.paid + self.expired + self.cancelled
    }
}

/// One row of the admin order listing.
#[derive(Debug, Clone)]
pub struct OrderRow {
    pub order_id: String,
    pub buyer: String,
    pub status: String,
    pub reserved_at: Option<OffsetDateTime>,
    pub expires_at: Option<OffsetDateTime>,
}

pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

pub fn parse_time(value: &Value) -> Option<OffsetDateTime> {
    value
        .as_str()
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
}

impl Api {
    pub fn new(target: Target, admin_token: &str) -> Self {
        Self {
            target,
            admin_auth: format!("Bearer {admin_token}"),
        }
    }

    fn conn(&self) -> Conn {
        Conn::new(self.target.clone())
    }

    /// Creates a sale; `waiting_room` is its `waiting_room` field, if it has a line.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_sale(
        &self,
        stock: u32,
        per_buyer_limit: u32,
        starts_at: OffsetDateTime,
        ends_at: OffsetDateTime,
        payment_window_secs: u32,
        waiting_room: Option<Value>,
    ) -> Result<String> {
        let mut spec = json!({
            "name": "flashsale bench",
            "price_cents": 100,
            "stock": stock,
            "starts_at": rfc3339(starts_at),
            "ends_at": rfc3339(ends_at),
            "per_buyer_limit": per_buyer_limit,
            "payment_window_secs": payment_window_secs,
        });
        if let Some(room) = waiting_room {
            spec["waiting_room"] = room;
        }
        let answer = self
            .conn()
            .post_json(
                "/api/admin/sales",
                &[("authorization", self.admin_auth.as_str())],
                &spec,
            )
            .await?;
        if answer.status.as_u16() != 201 {
            bail!(
                "creating the sale answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        answer.json()?["id"]
            .as_str()
            .map(str::to_owned)
            .context("the created sale has no id")
    }

    /// Sets this node's order writer count (`PUT /api/admin/writers`).
    pub async fn set_writers(&self, count: usize) -> Result<()> {
        let answer = self
            .conn()
            .send(
                hyper::Method::PUT,
                "/api/admin/writers",
                &[
                    ("authorization", self.admin_auth.as_str()),
                    ("content-type", "application/json"),
                ],
                Some(bytes::Bytes::from(json!({ "count": count }).to_string())),
            )
            .await?;
        if !answer.status.is_success() {
            bail!(
                "PUT /api/admin/writers answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        Ok(())
    }

    /// The admin view of a sale: spec, phase, counters, layers.
    pub async fn sale(&self, id: &str) -> Result<Value> {
        let answer = self
            .conn()
            .get(
                &format!("/api/admin/sales/{id}"),
                &[("authorization", self.admin_auth.as_str())],
            )
            .await?;
        if !answer.status.is_success() {
            bail!(
                "GET /api/admin/sales/{id} answered {} (is the admin token right?)",
                answer.status
            );
        }
        answer.json()
    }

    pub async fn counters(&self, id: &str) -> Result<Counters> {
        Ok(Counters::of(&self.sale(id).await?))
    }

    pub async fn status(&self, conn: &mut Conn, id: &str) -> Result<Value> {
        let answer = conn.get(&format!("/api/sales/{id}/status"), &[]).await?;
        if !answer.status.is_success() {
            bail!("GET status of sale {id} answered {}", answer.status);
        }
        answer.json()
    }

    /// The sale's orders, newest first, as many as the server lists (up to `limit`).
    pub async fn orders(&self, id: &str, limit: usize) -> Result<Vec<OrderRow>> {
        let answer = self
            .conn()
            .get(
                &format!("/api/admin/sales/{id}/orders?limit={limit}"),
                &[("authorization", self.admin_auth.as_str())],
            )
            .await?;
        if !answer.status.is_success() {
            bail!("GET orders of sale {id} answered {}", answer.status);
        }
        let rows = answer.json()?;
        Ok(rows
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|row| OrderRow {
                        order_id: row["order_id"].as_str().unwrap_or_default().to_owned(),
                        buyer: row["buyer"].as_str().unwrap_or_default().to_owned(),
                        status: row["status"].as_str().unwrap_or_default().to_owned(),
                        reserved_at: parse_time(&row["reserved_at"]),
                        expires_at: parse_time(&row["expires_at"]),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The sale's line advanced to now, as the admins' line call answers it. The admin API has
    /// no read-only call that advances the line (the status shows the node's cached copy), so
    /// this sends the control call with no change: every field left out stays as it is.
    pub async fn line(&self, id: &str) -> Result<Value> {
        let answer = self
            .conn()
            .post_json(
                &format!("/api/admin/sales/{id}/line"),
                &[("authorization", self.admin_auth.as_str())],
                &json!({}),
            )
            .await?;
        if !answer.status.is_success() {
            bail!(
                "POST /api/admin/sales/{id}/line answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        answer.json()
    }

    /// `/metrics` as text (empty when the server has none).
    pub async fn metrics(&self) -> String {
        match self.conn().get("/metrics", &[]).await {
            Ok(answer) if answer.status.is_success() => {
                String::from_utf8_lossy(&answer.body).into_owned()
            }
            _ => String::new(),
        }
    }
}

/// The `flashsale_requests_total{layer, outcome}` lines of a Prometheus text page.
pub fn layer_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|line| line.starts_with("flashsale_requests_total{"))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((
                name.trim_start_matches("flashsale_requests_total")
                    .to_owned(),
                value.parse().ok()?,
            ))
        })
        .collect()
}
