//! The admin dashboard's live feed: `GET /api/admin/sales/{id}/events`, server-sent events
//! made once a second from the server's own counters (the sale's counters, what each
//! filtering layer did and how fast, the writers and the queue, the newest orders).
//!
//! Bounded like everything else: at most `http.event_streams_max` streams at once (the next one is
//! answered 503 `overloaded`), the admin token on every stream (sent in the `Authorization`
//! header: the dashboard reads the stream with `fetch`, so the token never goes into a URL),
//! at most `http.event_stream_secs_max` per stream (the client reconnects), and every stream ends
//! at once when the server begins to shut down, so open dashboards never hold up a graceful
//! stop.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Admin, PathOf};
use crate::server::ShutdownSignal;
use crate::wire::{AdminOrderBody, ErrorBody, LineBody};
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flashsale_core::{SaleId, Timestamp};
use flashsale_service::{Layer, LayerCounts, SaleCounters};
use serde::Serialize;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Time between two events.
const EVENT_INTERVAL_MS: u64 = 1000;
/// Newest orders carried by an event.
const EVENT_ORDERS_MAX: usize = 10;
/// Events buffered for a slow reader before the feed waits for it.
const EVENT_BUFFER_EVENTS: usize = 2;
/// How long a browser waits before reconnecting a dropped stream (the SSE `retry:` field).
const EVENT_RETRY_MS: u64 = 2000;

/// One event: the sale as the dashboard draws it.
#[derive(Serialize)]
struct SaleEvent {
    #[serde(with = "time::serde::rfc3339")]
    server_time: Timestamp,
    phase: flashsale_core::Phase,
    counters: SaleCounters,
    /// What each layer did since the sale was loaded on this node.
    layers: LayerCounts,
    /// The same per second over the last interval.
    layers_per_sec: BTreeMap<&'static str, f64>,
    /// Each layer's key in `layers` with the name the dashboard shows, in the order it lists
    /// them; in a stream's first event only (they do not change).
    #[serde(skip_serializing_if = "Option::is_none")]
    layer_labels: Option<Vec<[&'static str; 2]>>,
    writers: usize,
    queue_depth: usize,
    /// The newest orders, only when the counters changed since the last event (and in the
    /// first): unchanged counters mean the list is the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    recent_orders: Option<Vec<AdminOrderBody>>,
    /// The sale's line, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<LineBody>,
}

#[utoipa::path(
    get,
    path = "/api/admin/sales/{id}/events",
    tag = "admin",
    description = "Server-sent events (`text/event-stream`), one `sale` event a second with the sale's \
                   phase, counters, per-layer counts and rates (the first event also names \
                   the layers in `layer_labels`), writers, queue depth and (when the \
                   counters changed) the newest orders, and the line (a sale with one). At most 4 streams at once; a stream ends \
                   after an hour or when the server shuts down, and the client reconnects.",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "The sale id."),
    ),
    responses(
        (status = 200, description = "The event stream; each event's `data` is one JSON object.",
            content_type = "text/event-stream", body = String,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 404, description = "`not_found`: no such sale.", body = ErrorBody),
        (status = 503, description = "`overloaded`: as many event streams are open as allowed.", body = ErrorBody),
    )
)]
pub async fn sale_events(
    State(state): State<Arc<AppState>>,
    _: Admin,
    PathOf(sale): PathOf<SaleId>,
    shutdown: Option<Extension<ShutdownSignal>>,
) -> Result<Response, ApiError> {
    state.shop.sale(sale).ok_or(ApiError::NotFound)?;
    let permit = state
        .event_streams
        .permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Overloaded)?;
    // Served without `server::serve` (a router called directly) there is no signal; the
    // stream then still ends with its client, its time limit or the shop's shutdown.
    let shutdown = shutdown.map(|Extension(ShutdownSignal(token))| token);
    let (sender, receiver) = mpsc::channel(EVENT_BUFFER_EVENTS);
    tokio::spawn(feed(
        state,
        sale,
        sender,
        permit,
        shutdown.unwrap_or_default(),
    ));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            // Proxies that buffer responses (nginx) would hold the events back.
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        axum::body::Body::new(EventBody { receiver }),
    )
        .into_response())
}

/// Makes one event a second until the client goes away, the stream's time is up, or the
/// server shuts down. Holds the stream's permit for as long as it runs.
async fn feed(
    state: Arc<AppState>,
    sale: SaleId,
    sender: mpsc::Sender<Bytes>,
    _permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    let deadline = Instant::now() + Duration::from_secs(state.limits.event_stream_secs_max.get());
    let mut ticks = tokio::time::interval(Duration::from_millis(EVENT_INTERVAL_MS));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut previous: Option<(Instant, LayerCounts, SaleCounters)> = None;
    let mut pending = Some(Bytes::from(format!("retry: {EVENT_RETRY_MS}\n\n")));
    loop {
        if let Some(bytes) = pending.take() {
            tokio::select! {
                sent = sender.send(bytes) => if sent.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
        }
        tokio::select! {
            _ = ticks.tick() => {}
            _ = sender.closed() => return,
            _ = shutdown.cancelled() => return,
        }
        if Instant::now() >= deadline || !state.shop.is_ready() {
            return;
        }
        match next_event(&state, sale, &mut previous).await {
            Ok(event) => pending = Some(event),
            // A failed read skips one event; the dashboard shows the data as stale.
            Err(error) => tracing::warn!(?error, %sale, "could not read a sale for its event"),
        }
    }
}

async fn next_event(
    state: &AppState,
    sale: SaleId,
    previous: &mut Option<(Instant, LayerCounts, SaleCounters)>,
) -> Result<Bytes, ApiError> {
    let view = state.shop.sale_view(sale).await?;
    let now = Instant::now();
    let layers_per_sec = match previous {
        Some((at, before, _)) => per_second(before, &view.layers, now - *at),
        None => per_second(&view.layers, &view.layers, Duration::from_secs(1)),
    };
    let layer_labels = previous.is_none().then(|| {
        Layer::ALL
            .map(|layer| [layer.key(), layer.label()])
            .to_vec()
    });
    let changed = previous
        .as_ref()
        .is_none_or(|(_, _, counters)| *counters != view.counters);
    let recent_orders = if changed {
        let orders = state.shop.recent_orders(sale, EVENT_ORDERS_MAX).await?;
        Some(orders.into_iter().map(AdminOrderBody::from).collect())
    } else {
        None
    };
    *previous = Some((now, view.layers, view.counters));
    let event = SaleEvent {
        server_time: state.shop.now(),
        phase: view.phase,
        counters: view.counters,
        layers: view.layers,
        layers_per_sec,
        layer_labels,
        writers: state.shop.writer_count(),
        queue_depth: state.shop.queue_depth(),
        recent_orders,
        line: state.shop.line_view(sale).await?.map(LineBody::from),
    };
    let json = serde_json::to_string(&event).map_err(|error| {
        tracing::error!(%error, "could not serialize a sale event");
        ApiError::Internal
    })?;
    Ok(Bytes::from(format!("event: sale\ndata: {json}\n\n")))
}

/// Each layer's count per second between two snapshots.
fn per_second(
    before: &LayerCounts,
    after: &LayerCounts,
    elapsed: Duration,
) -> BTreeMap<&'static str, f64> {
    let secs = elapsed.as_secs_f64().max(0.001);
    after
        .iter()
        .map(|(layer, now)| {
            let then = before.get(layer);
            // Two decimals: enough for a chart, and short on the wire.
            let rate = (now.saturating_sub(then) as f64 / secs * 100.0).round() / 100.0;
            (layer.key(), rate)
        })
        .collect()
}

/// The response body: the events the feed makes, ending when the feed does. Dropped when the
/// client goes away, which closes the channel and so ends the feed.
struct EventBody {
    receiver: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.receiver
            .poll_recv(cx)
            .map(|event| event.map(|bytes| Ok(hyper::body::Frame::data(bytes))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second_and_per_layer() {
        let before = LayerCounts::default()
            .with(Layer::Reserved, 10)
            .with(Layer::SoldOut, 4);
        let after = before.with(Layer::Reserved, 30).with(Layer::WindowHit, 5);
        let rates = per_second(&before, &after, Duration::from_millis(2000));
        assert_eq!(rates["reserved"], 10.0);
        assert_eq!(rates["sold_out"], 0.0);
        assert_eq!(rates["window_hits"], 2.5);
        assert_eq!(rates.len(), Layer::COUNT);
    }
}
