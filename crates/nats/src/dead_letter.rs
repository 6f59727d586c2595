//! Dead letters: a message under a reservation subject that does not decode is copied to
//! `<stream>_DEAD` and only then terminated, so nothing acknowledged to anyone disappears.

use crate::Shared;
use async_nats::jetstream::stream::{Config as StreamConfig, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, AckKind};

impl Shared {
    /// Copies an unreadable message to the dead-letter stream, then terminates it. If the copy
    /// fails the message stays, and comes back after the ack deadline for another try.
    pub(crate) async fn dead_letter(&self, message: jetstream::Message) {
        let sequence = message.info().map(|info| info.stream_sequence).unwrap_or(0);
        let copied = async {
            self.context
                .get_or_create_stream(StreamConfig {
                    name: self.dead_stream.clone(),
                    subjects: vec![format!("{}>", self.dead_subject_prefix)],
                    retention: RetentionPolicy::Limits,
                    num_replicas: self.replicas,
                    storage: StorageType::File,
                    ..StreamConfig::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Flashsale-Original-Subject", message.subject.as_str());
            self.context
                .publish_with_headers(
                    format!("{}{sequence}", self.dead_subject_prefix),
                    headers,
                    message.payload.clone(),
                )
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        };
        match copied.await {
            Ok(_) => {
                flashsale_service::NodeOutcome::QueueDeadLettered
                    .counter()
                    .increment(1);
                if let Err(error) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(%error, "could not terminate a dead-lettered message; it comes back and is copied again");
                }
            }
            Err(error) => {
                tracing::error!(%error, subject = %message.subject, "could not dead-letter an unreadable message; it stays queued")
            }
        }
    }
}
