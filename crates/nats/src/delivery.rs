//! Delivery: the shared pull consumer, the batches this process has handed out, and their
//! acks and naks (a message is acked once every reservation of it is; a nak of any of them
//! hands the whole batch back for redelivery).

use crate::wire::decode_batch;
use crate::{BACKEND, JetStreamQueue, Shared};
use async_nats::jetstream::{self, AckKind};
use flashsale_core::{BatchId, OrderId, Reservation};
use flashsale_service::{BackendError, BackendResult};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::MutexGuard;
use std::time::Duration;
use tokio::task::JoinSet;

/// Shortest wait worth a pull request; below it `take_batch` only looks at what is there.
const PULL_WAIT_MIN: Duration = Duration::from_millis(1);

/// A delivered batch this process has not answered yet.
struct InHand {
    message: jetstream::Message,
    /// How many reservations it holds.
    reservations: usize,
    /// Its reservations not yet acked.
    unacked: HashSet<OrderId>,
}

/// Deliveries this process handed out and has not answered: the messages by batch, and each
/// delivered reservation's batch.
#[derive(Default)]
pub(crate) struct Delivered {
    batches: HashMap<BatchId, InHand>,
    batch_of: HashMap<OrderId, BatchId>,
    /// Decoded batches a pull brought beyond what `take_batch` could hand out; the next
    /// `take_batch` starts with them.
    waiting: VecDeque<(BatchId, jetstream::Message, Vec<Reservation>)>,
}

impl Shared {
    pub(crate) fn delivered(&self) -> MutexGuard<'_, Delivered> {
        // Maps of handles; a panic elsewhere cannot leave them half-changed in a way that
        // matters (a lost handle means a redelivery after the ack deadline).
        self.delivered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Up to `max` messages the consumer has now, without waiting.
    async fn fetch_now(&self, max: usize) -> BackendResult<Vec<jetstream::Message>> {
        self.bounded(Duration::ZERO, async {
            let mut batch = self
                .consumer
                .fetch()
                .max_messages(max)
                .messages()
                .await
                .map_err(|e| BackendError::determinate(BACKEND, format!("pulling: {e}")))?;
            collect(&mut batch).await
        })
        .await
    }

    /// `pull`, given up after its own `wait` plus `pull_timeout`. Giving up is determinate for
    /// us: nothing was acknowledged, and whatever the server delivered comes back later.
    async fn bounded(
        &self,
        wait: Duration,
        pull: impl Future<Output = BackendResult<Vec<jetstream::Message>>>,
    ) -> BackendResult<Vec<jetstream::Message>> {
        let limit = wait + self.pull_timeout;
        tokio::time::timeout(limit, pull).await.unwrap_or_else(|_| {
            Err(BackendError::determinate(
                BACKEND,
                format!("pulling: no answer within {limit:?}"),
            ))
        })
    }

    /// One message, waiting up to `wait` for it.
    async fn wait_for_one(&self, wait: Duration) -> BackendResult<Vec<jetstream::Message>> {
        self.bounded(wait, async {
            let mut batch = self
                .consumer
                .batch()
                .max_messages(1)
                .expires(wait)
                .messages()
                .await
                .map_err(|e| BackendError::determinate(BACKEND, format!("pulling: {e}")))?;
            collect(&mut batch).await
        })
        .await
    }
}

async fn collect(
    batch: &mut jetstream::consumer::pull::Batch,
) -> BackendResult<Vec<jetstream::Message>> {
    use futures_util::StreamExt as _;
    let mut messages = Vec::new();
    while let Some(message) = batch.next().await {
        // A broken pull after some messages arrived: hand out what we have; the rest is
        // redelivered after the ack deadline.
        match message {
            Ok(message) => messages.push(message),
            Err(e) if messages.is_empty() => {
                return Err(BackendError::determinate(BACKEND, format!("pulling: {e}")));
            }
            Err(e) => {
                tracing::warn!(error = %e, "a pull ended early");
                break;
            }
        }
    }
    Ok(messages)
}

impl JetStreamQueue {
    /// Answers each message with `kind`, waiting for the server to confirm; returns the
    /// reservations of the messages it confirmed. `messages` holds each message with its
    /// reservation count.
    async fn answer(
        &self,
        messages: Vec<(jetstream::Message, usize)>,
        kind: AckKind,
    ) -> BackendResult<usize> {
        if messages.is_empty() {
            return Ok(0);
        }
        let total = messages.len();
        let mut answers = JoinSet::new();
        for (message, reservations) in messages {
            answers
                .spawn(async move { message.double_ack_with(kind).await.map(|()| reservations) });
        }
        let (mut confirmed, mut confirmed_messages) = (0, 0);
        let mut failure = None;
        while let Some(answer) = answers.join_next().await {
            match answer {
                Ok(Ok(reservations)) => {
                    confirmed += reservations;
                    confirmed_messages += 1;
                }
                Ok(Err(e)) => failure = Some(e.to_string()),
                Err(e) => failure = Some(e.to_string()),
            }
        }
        match failure {
            // The answer may have reached the server; if not, the delivery comes back after
            // the ack deadline, which the writers' idempotent inserts make harmless.
            Some(e) => Err(BackendError::indeterminate(
                BACKEND,
                format!("{confirmed_messages} of {total} answers confirmed: {e}"),
            )),
            None => Ok(confirmed),
        }
    }

    /// Hands out whole batches from `waiting` while they fit in `max` (always at least one),
    /// recording them as delivered; what does not fit stays waiting.
    fn hand_out(&self, delivered: &mut Delivered, max: usize) -> Vec<Reservation> {
        let mut out: Vec<Reservation> = Vec::new();
        while let Some((_, _, reservations)) = delivered.waiting.front() {
            if !out.is_empty() && out.len() + reservations.len() > max {
                break;
            }
            let Some((batch, message, reservations)) = delivered.waiting.pop_front() else {
                break;
            };
            let unacked: HashSet<OrderId> = reservations.iter().map(|r| r.order_id).collect();
            for order in &unacked {
                delivered.batch_of.insert(*order, batch);
            }
            delivered.batches.insert(
                batch,
                InHand {
                    message,
                    reservations: reservations.len(),
                    unacked,
                },
            );
            out.extend(reservations);
        }
        out
    }
    /// `ReservationQueue::take_batch`: whole batches, at least one.
    pub(crate) async fn deliver(
        &self,
        max: usize,
        wait: Duration,
    ) -> BackendResult<Vec<Reservation>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        {
            let mut delivered = self.shared.delivered();
            if !delivered.waiting.is_empty() {
                return Ok(self.hand_out(&mut delivered, max));
            }
        }
        // Pull about as many messages as `max` reservations fill, at the sizes seen so far.
        let per_message = self.shared.sizes.per_message().max(1.0);
        let pull = ((max as f64 / per_message).ceil() as usize).clamp(1, max);
        let mut messages = self.shared.fetch_now(pull).await?;
        if messages.is_empty() && wait >= PULL_WAIT_MIN {
            // A pull for one message returns as soon as it arrives; a pull for `pull` would sit
            // until `pull` arrived or `wait` ran out. Then take whatever else came meanwhile.
            messages = self.shared.wait_for_one(wait).await?;
            if !messages.is_empty() && pull > 1 {
                messages.extend(self.shared.fetch_now(pull - 1).await?);
            }
        }
        let mut delivered = self.shared.delivered();
        for message in messages {
            if message.payload.is_empty() {
                // A tombstone: nothing to write.
                tokio::spawn(async move { message.ack().await });
                continue;
            }
            let batch = self.batch_of_subject(&message.subject);
            match (batch, decode_batch(&message.payload)) {
                (Some(batch), Ok(reservations)) if !reservations.is_empty() => {
                    delivered.waiting.push_back((batch, message, reservations));
                }
                (_, decoded) => {
                    // Not ours, or corrupt: delivering it again would only fail again.
                    let error = decoded.err().map(|e| e.to_string()).unwrap_or_default();
                    tracing::error!(subject = %message.subject, %error, "an unreadable batch goes to the dead-letter stream");
                    let shared = self.shared.clone();
                    tokio::spawn(async move { shared.dead_letter(message).await });
                }
            }
        }
        Ok(self.hand_out(&mut delivered, max))
    }

    /// `ReservationQueue::ack`: a message is acked once all its reservations are.
    pub(crate) async fn ack_delivered(&self, orders: &[OrderId]) -> BackendResult<()> {
        let done: Vec<(jetstream::Message, usize)> = {
            let mut delivered = self.shared.delivered();
            let mut complete = Vec::new();
            for order in orders {
                let Some(batch) = delivered.batch_of.remove(order) else {
                    continue;
                };
                let Some(in_hand) = delivered.batches.get_mut(&batch) else {
                    continue;
                };
                in_hand.unacked.remove(order);
                if in_hand.unacked.is_empty() {
                    complete.push(batch);
                }
            }
            complete
                .into_iter()
                .filter_map(|batch| delivered.batches.remove(&batch))
                .map(|in_hand| (in_hand.message, in_hand.reservations))
                .collect()
        };
        let _in_flight = self.shared.depth.begin();
        let result = self.answer(done, AckKind::Ack).await;
        if let Ok(confirmed) = result {
            self.shared
                .depth
                .add(-i64::try_from(confirmed).unwrap_or(i64::MAX));
        }
        result.map(|_| ())
    }

    /// `ReservationQueue::nack`: the whole batch goes back for redelivery.
    pub(crate) async fn nack_delivered(&self, orders: &[OrderId]) -> BackendResult<()> {
        let handed_back: Vec<(jetstream::Message, usize)> = {
            let mut delivered = self.shared.delivered();
            let batches: HashSet<BatchId> = orders
                .iter()
                .filter_map(|order| delivered.batch_of.get(order).copied())
                .collect();
            let mut messages = Vec::new();
            for batch in batches {
                if let Some(in_hand) = delivered.batches.remove(&batch) {
                    for order in &in_hand.unacked {
                        delivered.batch_of.remove(order);
                    }
                    messages.push((in_hand.message, 0));
                }
            }
            messages
        };
        self.answer(handed_back, AckKind::Nak(None))
            .await
            .map(|_| ())
    }
}
