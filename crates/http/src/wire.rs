//! The API's wire types: every request and response body, with its OpenAPI schema. Handlers
//! build them and the OpenAPI document describes them; neither needs the other for that.

use flashsale_core::sale::whole_number;
use flashsale_core::{BuyerId, Order, OrderStatus, PaymentId, Phase, Sale, SaleSpec, Timestamp};
use flashsale_service::{
    Layer, LayerCounts, OrderView, OrderViewStatus, SaleCounters, SaleStatus, SaleView,
};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};

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
