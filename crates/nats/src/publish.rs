//! Publishing a batch or a tombstone under the batch's subject and message id, and reading
//! the server's refusals: "already queued" and "full" are answers, the rest errors that say
//! whether anything may have been stored.

use crate::{BACKEND, JetStreamQueue};
use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use flashsale_core::BatchId;
use flashsale_service::{BackendError, BackendResult};

/// The server's words for a full stream and for a subject that already holds its message
/// (nats-server `ErrMaxMsgs`, `ErrMaxBytes`, `ErrMaxMsgsPerSubject`). JetStream gives all of
/// them one error code (10077, "store failed"), so the description is what tells them apart.
const FULL_DESCRIPTIONS: [&str; 2] = ["maximum messages exceeded", "maximum bytes exceeded"];
const ALREADY_QUEUED_DESCRIPTION: &str = "maximum messages per subject exceeded";

/// A publish's outcome.
pub(crate) enum Published {
    Stored,
    /// A message with this id was stored before (the server's duplicate window), or the
    /// order's subject still holds one.
    Taken,
    Full,
}

/// A publish the server refused, or whose answer never came.
enum Refusal {
    SubjectTaken,
    Full,
    Failed(BackendError),
}

impl JetStreamQueue {
    /// Reads a publish that did not succeed: the server's refusals are answers or determinate
    /// errors; anything without an answer may have been stored.
    /// What a refused publish means.
    fn publish_refused(order: &str, e: &jetstream::context::PublishError) -> Refusal {
        let server_error = std::error::Error::source(e)
            .and_then(|source| source.downcast_ref::<jetstream::Error>());
        if let Some(server_error) = server_error {
            let described = server_error.to_string();
            if described.contains(ALREADY_QUEUED_DESCRIPTION) {
                return Refusal::SubjectTaken;
            }
            if FULL_DESCRIPTIONS.iter().any(|d| described.contains(d)) {
                return Refusal::Full;
            }
            return Refusal::Failed(BackendError::determinate(
                BACKEND,
                format!("publishing {order}: refused: {described}"),
            ));
        }
        Refusal::Failed(match e.kind() {
            // No stream answered, or the client refused before sending: nothing was stored.
            PublishErrorKind::StreamNotFound | PublishErrorKind::MaxPayloadExceeded => {
                BackendError::determinate(BACKEND, format!("publishing {order}: {e}"))
            }
            // No answer in time, the connection broke, or the answer was unreadable.
            _ => BackendError::indeterminate(BACKEND, format!("publishing {order}: {e}")),
        })
    }

    /// Publishes `payload` under the batch's subject with the batch id as message id.
    pub(crate) async fn publish(
        &self,
        batch: BatchId,
        payload: Vec<u8>,
    ) -> BackendResult<Published> {
        let id = batch.to_string();
        let pending = self
            .shared
            .context
            .send_publish(
                self.subject(batch),
                PublishMessage::build()
                    .message_id(&id)
                    .payload(payload.into()),
            )
            .await
            // Not handed to the connection: nothing was sent.
            .map_err(|e| BackendError::determinate(BACKEND, format!("publishing {id}: {e}")))?;
        Ok(match pending.await {
            Ok(ack) if ack.duplicate => Published::Taken,
            Ok(_) => Published::Stored,
            Err(e) => match Self::publish_refused(&id, &e) {
                Refusal::SubjectTaken => Published::Taken,
                Refusal::Full => Published::Full,
                Refusal::Failed(error) => return Err(error),
            },
        })
    }
}
