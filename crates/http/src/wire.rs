//! The API's wire types: every request and response body, with its OpenAPI schema. Handlers
//! build them and the OpenAPI document describes them; neither needs the other for that.

use flashsale_core::SaleId;
use flashsale_core::line::{AdmitRate, LineEvent, Standing};
use flashsale_core::line_log::{Head, hex};
use flashsale_core::sale::whole_number;
use flashsale_core::{BuyerId, Order, OrderStatus, PaymentId, Phase, Sale, SaleSpec, Timestamp};
use flashsale_service::{
    Layer, LayerCounts, LineChallenge, LineMe, LineStatus, LogHeader, LogPart, LogRecords,
    OrderView, OrderViewStatus, SaleCounters, SaleStatus, SaleView,
};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::{IntoParams, ToSchema};

/// Every error body. The `code` is stable and meant for programs; the `message` is for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case code from the error table, e.g. `not_found`, `sold_out`.
    #[schema(example = "not_found")]
    pub code: String,
    /// A human-readable explanation; may change between versions.
    pub message: String,
}

/// The body of `/healthz` and `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthBody {
    /// `ok` from `/healthz`, `ready` from `/readyz`.
    #[schema(example = "ok")]
    pub status: String,
}

/// Where a sale stands, as `GET /api/sales/{id}/status` tells every visitor.
#[derive(Serialize, ToSchema)]
pub struct StatusBody {
    #[schema(format = Uuid)]
    sale_id: String,
    phase: Phase,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    server_time: Timestamp,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    starts_at: Timestamp,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    ends_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    buy_path: Option<String>,
    /// The sale's waiting room, if it has one (then `buy_path` never shows: each buyer's
    /// comes from `line/me` once admitted).
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<LineBody>,
}

impl From<SaleStatus> for StatusBody {
    fn from(status: SaleStatus) -> Self {
        // The buy path exists only while the sale is live (the service hands out its token).
        let buy_path = status
            .buy_token
            .as_ref()
            .map(|token| format!("/api/sales/{}/buy/{token}", status.sale_id));
        Self {
            sale_id: status.sale_id.to_string(),
            phase: status.phase,
            server_time: status.server_time,
            starts_at: status.starts_at,
            ends_at: status.ends_at,
            buy_path,
            line: status.line.map(LineBody::from),
        }
    }
}

/// An order as its buyer sees it.
#[derive(Serialize, ToSchema)]
pub struct OrderBody {
    /// The order id (the same id the 202 named `order_id`).
    #[schema(format = Uuid)]
    id: String,
    #[schema(format = Uuid)]
    sale_id: String,
    #[schema(value_type = OrderViewStatusSchema)]
    status: OrderViewStatus,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: Timestamp,
}

impl From<OrderView> for OrderBody {
    fn from(view: OrderView) -> Self {
        Self {
            id: view.id.to_string(),
            sale_id: view.sale_id.to_string(),
            status: view.status,
            expires_at: view.expires_at,
        }
    }
}

/// The 202 body: the order id and where it stands; poll `GET /api/orders/{order_id}`.
#[derive(Serialize, ToSchema)]
pub struct AcceptedBody {
    #[schema(format = Uuid)]
    pub order_id: String,
    #[schema(value_type = OrderViewStatusSchema)]
    pub status: OrderViewStatus,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayRequest {
    pub payment_id: PaymentId,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevTokenRequest {
    pub buyer_id: BuyerId,
}

#[derive(Serialize, ToSchema)]
pub struct DevTokenBody {
    pub token: String,
    pub buyer_id: BuyerId,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}

/// A sale as the admin sees it: its spec, phase, counters and what each layer did.
#[derive(Serialize, ToSchema)]
pub struct SaleBody {
    #[schema(format = Uuid)]
    id: String,
    #[serde(flatten)]
    spec: SaleSpec,
    version: u32,
    phase: Phase,
    #[schema(value_type = SaleCountersSchema)]
    counters: SaleCounters,
    /// What each filtering layer did for this sale on this node.
    #[schema(value_type = LayerCountsSchema)]
    layers: LayerCounts,
}

impl From<SaleView> for SaleBody {
    fn from(view: SaleView) -> Self {
        let Sale { id, spec, version } = view.sale;
        Self {
            id: id.to_string(),
            spec,
            version,
            phase: view.phase,
            counters: view.counters,
            layers: view.layers,
        }
    }
}

/// One order in the admin's list (and in the dashboard's events).
#[derive(Serialize, ToSchema)]
pub struct AdminOrderBody {
    #[schema(format = Uuid)]
    order_id: String,
    buyer: BuyerId,
    status: OrderStatus,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    reserved_at: Timestamp,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: Timestamp,
}

impl From<Order> for AdminOrderBody {
    fn from(order: Order) -> Self {
        Self {
            order_id: order.id.to_string(),
            buyer: order.buyer,
            status: order.status,
            reserved_at: order.reserved_at,
            expires_at: order.expires_at,
        }
    }
}

/// The query of the admin's order list.
#[derive(Deserialize)]
pub struct OrdersQuery {
    pub limit: Option<usize>,
}

/// The writer count, read and set. The bound is `WRITERS_COUNT_MAX` (a literal here: the
/// attribute takes no constants; the end-to-end test of the document's bounds ties them).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WritersBody {
    #[serde(deserialize_with = "whole_number::deserialize")]
    #[schema(minimum = 0, maximum = 64)]
    pub count: usize,
}

// Mirrors `flashsale_service::OrderViewStatus`: the service crate stays free of OpenAPI, and
// `tests::mirrored_service_types_serialize_alike` keeps the two in step.
/// How an order looks to its buyer: `queued` until it is written, then as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = OrderViewStatus)]
#[serde(rename_all = "snake_case")]
pub enum OrderViewStatusSchema {
    /// Accepted and durable, not yet written to the order store.
    Queued,
    PendingPayment,
    Paid,
    Expired,
    Cancelled,
}

// Mirrors `flashsale_service::SaleCounters` (kept in step by a test below).
/// A sale's unit counts.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SaleCounters)]
pub struct SaleCountersSchema {
    pub stock_total: u32,
    pub available: u32,
    /// Accepted reservations not yet written as orders.
    pub queued: u64,
    pub pending_payment: u64,
    pub paid: u64,
    pub expired: u64,
    pub cancelled: u64,
}

/// The schema of a sale's `layers`: one count per `flashsale_service::Layer`, built from
/// `Layer::ALL`, so a layer added there is in the document without a change here.
pub struct LayerCountsSchema;

impl utoipa::PartialSchema for LayerCountsSchema {
    fn schema() -> RefOr<Schema> {
        let mut object = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "What each filtering layer did for one sale on this node.",
            ));
        for layer in Layer::ALL {
            let count = ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(0))
                .description(Some(layer.label()));
            object = object.property(layer.key(), count).required(layer.key());
        }
        object.into()
    }
}

impl ToSchema for LayerCountsSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("LayerCounts")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn mirror_status(status: OrderViewStatus) -> OrderViewStatusSchema {
        // Exhaustive on purpose: a new service status fails to compile here.
        match status {
            OrderViewStatus::Queued => OrderViewStatusSchema::Queued,
            OrderViewStatus::PendingPayment => OrderViewStatusSchema::PendingPayment,
            OrderViewStatus::Paid => OrderViewStatusSchema::Paid,
            OrderViewStatus::Expired => OrderViewStatusSchema::Expired,
            OrderViewStatus::Cancelled => OrderViewStatusSchema::Cancelled,
        }
    }

    #[test]
    fn mirrored_service_types_serialize_alike() {
        for status in [
            OrderViewStatus::Queued,
            OrderViewStatus::PendingPayment,
            OrderViewStatus::Paid,
            OrderViewStatus::Expired,
            OrderViewStatus::Cancelled,
        ] {
            assert_eq!(
                serde_json::to_value(status).ok(),
                serde_json::to_value(mirror_status(status)).ok()
            );
        }
        let keys = |value: Value| -> Vec<String> {
            value
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default()
        };
        // A struct literal, so a new service field fails to compile here.
        let real = SaleCounters {
            stock_total: 1,
            available: 1,
            queued: 0,
            pending_payment: 0,
            paid: 0,
            expired: 0,
            cancelled: 0,
        };
        let mirror = SaleCountersSchema {
            stock_total: 1,
            available: 1,
            queued: 0,
            pending_payment: 0,
            paid: 0,
            expired: 0,
            cancelled: 0,
        };
        assert_eq!(
            keys(serde_json::to_value(real).unwrap_or_default()),
            keys(serde_json::to_value(mirror).unwrap_or_default())
        );
    }

    #[test]
    fn the_layer_schema_names_every_key_the_view_has() {
        let document = serde_json::to_value(<LayerCountsSchema as utoipa::PartialSchema>::schema())
            .unwrap_or_default();
        let mut documented: Vec<String> = document["properties"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let mut served: Vec<String> = serde_json::to_value(LayerCounts::default())
            .ok()
            .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect()))
            .unwrap_or_default();
        documented.sort();
        served.sort();
        assert_eq!(documented.len(), Layer::COUNT);
        assert_eq!(documented, served);
    }
}

/// A sale's line: when it opens, the draw's commitment and seed, and where it stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct LineBody {
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    opens_at: Timestamp,
    /// Lowercase hex SHA-256 of the seed's 32 bytes; from the moment the line opens.
    #[serde(skip_serializing_if = "Option::is_none")]
    commitment: Option<String>,
    /// The proof of work a new place costs now, in leading zero bits (0: none; see
    /// `line/challenge`). May rise during a flood of joins, up to the sale's
    /// `pow_difficulty_bits_max`.
    pow_difficulty_bits: u8,
    /// The seed, 64 lowercase hex characters; once the sale has started.
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<String>,
    /// Buyers let through per second now (the admins' rate, the sale's, or what "auto"
    /// measured).
    admit_per_sec: u32,
    paused: bool,
    /// The line's state was lost with its backend: joins, `line/me` and buys answer 503.
    lost: bool,
    /// The join chain's head as this node last read it (`line/log` publishes the chain).
    #[serde(skip_serializing_if = "Option::is_none")]
    joins_head: Option<HeadBody>,
    /// The event chain's head (admissions and buys) as this node last read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    events_head: Option<HeadBody>,
    /// Members (pre-queue included), as this node last saw the line.
    #[serde(skip_serializing_if = "Option::is_none")]
    length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pre_queue: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    admitted_up_to: Option<u64>,
    /// Admitted, still in their admission, not bought.
    #[serde(skip_serializing_if = "Option::is_none")]
    holders: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bought: Option<u64>,
    /// Admitted and did not buy in time.
    #[serde(skip_serializing_if = "Option::is_none")]
    passed: Option<u64>,
}

impl From<LineStatus> for LineBody {
    fn from(status: LineStatus) -> Self {
        let summary = status.summary;
        Self {
            opens_at: status.opens_at,
            commitment: status.commitment,
            pow_difficulty_bits: status.pow_difficulty_bits,
            seed: status.seed,
            admit_per_sec: status.admit_per_sec,
            paused: summary.is_some_and(|s| s.control.paused),
            lost: status.lost,
            joins_head: status.joins_head.map(HeadBody::from),
            events_head: status.events_head.map(HeadBody::from),
            length: summary.map(|s| s.length),
            pre_queue: summary.map(|s| s.pre_queue),
            admitted_up_to: summary.map(|s| s.admitted_up_to),
            holders: summary.map(|s| s.holders),
            bought: summary.map(|s| s.bought),
            passed: summary.map(|s| s.passed()),
        }
    }
}

/// Where a buyer stands in line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LineState {
    /// Joined before the start, not drawn yet.
    PreQueue,
    Waiting,
    /// May buy now, with `buy_path`, until `admitted_until`.
    Admitted,
    /// Was admitted and did not buy in time.
    Passed,
    /// Nothing left for this position, even counting units that may come back (may turn
    /// back into `waiting` if units come back).
    SoldOut,
    /// Bought under an admission that has ended.
    Bought,
}

/// `line/me` (and the join's answer).
#[derive(Debug, Serialize, ToSchema)]
pub struct LineMeBody {
    state: LineState,
    /// 1-based; `null` before the draw.
    position: Option<u64>,
    /// Positions before this one not admitted yet; `null` unless waiting or sold out.
    ahead: Option<u64>,
    /// Positions up to this one may buy (or have had their turn).
    admitted_up_to: u64,
    /// Seconds until this position is likely admitted (waiting), or until the draw
    /// (pre-queue); `null` otherwise.
    eta_secs: Option<u64>,
    /// Where to buy, while admitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    buy_path: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    admitted_until: Option<Timestamp>,
    /// How long to wait before asking again (also sent as `Retry-After`).
    poll_after_secs: u64,
    /// The buyer's receipt: their join's index and hash in the line's join chain. Keep it:
    /// `flashsale verify-line --receipt HASH` checks it is in the published log, at its place.
    #[serde(skip_serializing_if = "Option::is_none")]
    receipt: Option<ReceiptBody>,
}

/// A join's place in the join chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptBody {
    /// 1-based.
    index: u64,
    /// Lowercase hex SHA-256 of the join record and the one before (`line/log`).
    hash: String,
}

/// A chain's head: how many records, and the last one's hash (lowercase hex; before the
/// first record, the chain's starting hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct HeadBody {
    length: u64,
    hash: String,
}

impl From<Head> for HeadBody {
    fn from(head: Head) -> Self {
        Self {
            length: head.length,
            hash: hex(&head.hash),
        }
    }
}

impl LineMeBody {
    pub fn new(sale: SaleId, me: LineMe) -> Self {
        let (state, position, ahead) = match me.standing {
            Standing::PreQueue => (LineState::PreQueue, None, None),
            Standing::Waiting { position, ahead } => {
                (LineState::Waiting, Some(position), Some(ahead))
            }
            Standing::Admitted { position, .. } => (LineState::Admitted, Some(position), None),
            Standing::Passed { position } => (LineState::Passed, Some(position), None),
            Standing::SoldOut { position, ahead } => {
                (LineState::SoldOut, Some(position), Some(ahead))
            }
            Standing::Bought { position } => (LineState::Bought, Some(position), None),
        };
        Self {
            state,
            position,
            ahead,
            admitted_up_to: me.admitted_up_to,
            eta_secs: me.eta_secs,
            buy_path: me
                .buy_token
                .map(|token| format!("/api/sales/{sale}/buy/{token}")),
            admitted_until: me.admitted_until,
            poll_after_secs: me.poll_after_secs,
            receipt: me.receipt.map(|receipt| ReceiptBody {
                index: receipt.index,
                hash: hex(&receipt.hash),
            }),
        }
    }

    pub fn poll_after_secs(&self) -> u64 {
        self.poll_after_secs
    }
}

/// What `line/log` is asked for.
#[derive(Debug, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// `joins` (the join chain), `positions` (line ids in position order) or `events` (the
    /// event chain).
    pub part: LogPartName,
    /// The first record (or position), 1-based; default 1.
    #[param(minimum = 1)]
    pub from: Option<u64>,
    /// At most this many records (1 to 10000; default 1000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
}

/// A part of the line's log.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogPartName {
    Joins,
    Positions,
    Events,
}

impl From<LogPartName> for LogPart {
    fn from(part: LogPartName) -> Self {
        match part {
            LogPartName::Joins => LogPart::Joins,
            LogPartName::Positions => LogPart::Positions,
            LogPartName::Events => LogPart::Events,
        }
    }
}

/// One page of a sale's line log (`core::line_log` documents the chains' bytes). Every page
/// carries the header: the start, the seed and its commitment, the pre-queue's size and both
/// chains' heads.
#[derive(Debug, Serialize, ToSchema)]
pub struct LineLogBody {
    #[schema(value_type = String, format = Uuid)]
    sale_id: SaleId,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    starts_at: Timestamp,
    /// The start in Unix milliseconds: a pre-queue join's time is before it.
    starts_at_ms: i64,
    /// SHA-256 of the seed (hex), as the status published it from the moment the line opened.
    commitment: String,
    /// The seed (hex): the draw is `line::draw_order` of the pre-queue's line ids with it.
    seed: String,
    /// Members drawn at the start: the first `pre_queue` records of the join chain.
    pre_queue: u64,
    joins_head: HeadBody,
    events_head: HeadBody,
    part: LogPartName,
    from: u64,
    /// `part=joins`: records from `from`.
    #[serde(skip_serializing_if = "Option::is_none")]
    joins: Option<Vec<JoinBody>>,
    /// `part=positions`: the line ids at positions `from`, `from + 1`, …
    #[serde(skip_serializing_if = "Option::is_none")]
    positions: Option<Vec<String>>,
    /// `part=events`: records from `from`.
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<EventBody>>,
}

/// A record of the join chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct JoinBody {
    index: u64,
    /// The lowercase hex SHA-256 of the sale id, `:` and the buyer id (never the buyer id).
    line_id: String,
    /// Unix milliseconds, as the line took the join.
    joined_at_ms: i64,
    hash: String,
}

/// A record of the event chain: an admission (`admitted`: `from`, `up_to`, `at_ms`), a buy
/// under an admission (`bought`: `position`), the end of admissions (`passed`: `from`,
/// `up_to`; each of those positions with no `bought` before it passed), or the line running
/// out of units (`sold_out`: `after`, the last position admitted then; the positions after it
/// wait only for units that come back).
#[derive(Debug, Serialize, ToSchema)]
pub struct EventBody {
    index: u64,
    /// `admitted`, `bought`, `passed` or `sold_out`.
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    up_to: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<u64>,
    hash: String,
}

impl LineLogBody {
    pub fn new(
        sale: SaleId,
        part: LogPartName,
        from: u64,
        header: LogHeader,
        records: LogRecords,
    ) -> Self {
        let (mut joins, mut positions, mut events) = (None, None, None);
        match records {
            LogRecords::Joins(records) => {
                joins = Some(
                    records
                        .into_iter()
                        .map(|join| JoinBody {
                            index: join.index,
                            line_id: join.record.line.to_hex(),
                            joined_at_ms: join.record.joined_at_ms,
                            hash: hex(&join.hash),
                        })
                        .collect(),
                );
            }
            LogRecords::Positions(lines) => {
                positions = Some(lines.iter().map(|line| line.to_hex()).collect());
            }
            LogRecords::Events(records) => {
                events = Some(
                    records
                        .into_iter()
                        .map(|event| {
                            let mut body = EventBody {
                                index: event.index,
                                kind: "",
                                from: event.from,
                                up_to: None,
                                at_ms: None,
                                position: None,
                                after: None,
                                hash: hex(&event.hash),
                            };
                            match event.event {
                                LineEvent::Admitted { up_to, at_ms } => {
                                    body.kind = "admitted";
                                    body.up_to = Some(up_to);
                                    body.at_ms = Some(at_ms);
                                }
                                LineEvent::Bought { position } => {
                                    body.kind = "bought";
                                    body.position = Some(position);
                                }
                                LineEvent::Passed { up_to } => {
                                    body.kind = "passed";
                                    body.up_to = Some(up_to);
                                }
                                LineEvent::SoldOut { after } => {
                                    body.kind = "sold_out";
                                    body.after = Some(after);
                                }
                            }
                            body
                        })
                        .collect(),
                );
            }
        }
        Self {
            sale_id: sale,
            starts_at: header.starts_at,
            starts_at_ms: flashsale_core::line::unix_ms(header.starts_at),
            commitment: header.commitment,
            seed: header.seed,
            pre_queue: header.pre_queue,
            joins_head: header.joins_head.into(),
            events_head: header.events_head.into(),
            part,
            from,
            joins,
            positions,
            events,
        }
    }
}

/// A join's proof of work: a challenge from `line/challenge` and a nonce that solves it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// As `line/challenge` gave it.
    #[serde(deserialize_with = "text_at_most::<_, { flashsale_core::pow::CHALLENGE_CHARS }>")]
    #[schema(max_length = 44)]
    pub challenge: String,
    /// Any string of at most 64 bytes (a decimal counter is what the sale page uses) such that
    /// the SHA-256 of the UTF-8 bytes of `challenge` followed by those of `nonce` has at least
    /// `difficulty_bits` leading zero bits.
    #[serde(deserialize_with = "text_at_most::<_, { flashsale_core::pow::NONCE_BYTES_MAX }>")]
    #[schema(max_length = 64)]
    pub nonce: String,
}

/// A string of at most `MAX` bytes (the document's `maxLength`; the fields it bounds are
/// ASCII when valid), refused while reading the body so it is a 400 like any malformed field.
fn text_at_most<'de, D: serde::Deserializer<'de>, const MAX: usize>(
    deserializer: D,
) -> Result<String, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.len() > MAX {
        return Err(serde::de::Error::custom(format!(
            "at most {MAX} bytes, got {}",
            text.len()
        )));
    }
    Ok(text)
}

/// A proof-of-work challenge for a place in line.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChallengeBody {
    /// 44 URL-safe characters, signed for this sale and this buyer; works once.
    challenge: String,
    /// Leading zero bits the hash must have (0 to 32): about 2^bits tries.
    difficulty_bits: u8,
    /// RFC 3339; the challenge is refused from then on.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: Timestamp,
}

impl From<LineChallenge> for ChallengeBody {
    fn from(challenge: LineChallenge) -> Self {
        Self {
            challenge: challenge.challenge,
            difficulty_bits: challenge.difficulty_bits,
            expires_at: challenge.expires_at,
        }
    }
}

/// The admins' change to a running line; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineControlRequest {
    /// Holds the admission counter (`true`) or lets it move again.
    pub paused: Option<bool>,
    /// Replaces the sale's `admit_per_sec` from now on.
    #[schema(value_type = Option<flashsale_core::line::AdmitRateSchema>)]
    pub admit_per_sec: Option<AdmitRate>,
}
