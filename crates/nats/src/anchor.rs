//! Test support for suites that share one NATS server: an anchor stream in the account.
//!
//! nats-server removes an account's JetStream storage directory when its last stream is
//! deleted. A stream created by a parallel test at that moment fails with "could not create
//! storage directory … no such file or directory" (seen once in CI: JetStream error 10049, the
//! server log's 10077). Tests that share a server create their own streams and delete them
//! when done, so the account empties often. One stream that is never deleted keeps the
//! directory: every suite that uses the shared server calls this before creating its streams.

use async_nats::jetstream::{
    self,
    stream::{Config as StreamConfig, StorageType},
};

/// The anchor's name; it holds at most one message and is never deleted.
pub const ANCHOR_STREAM: &str = "FSTEST_ANCHOR";

/// Creates the anchor stream on the NATS at `url` if it is not there.
pub async fn anchor_shared_account(url: &str) -> Result<(), String> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| format!("cannot connect to NATS at {url}: {e}"))?;
    jetstream::new(client)
        .get_or_create_stream(StreamConfig {
            name: ANCHOR_STREAM.to_owned(),
            subjects: vec!["fstest.anchor".to_owned()],
            max_messages: 1,
            storage: StorageType::File,
            ..StreamConfig::default()
        })
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot create the anchor stream {ANCHOR_STREAM} at {url}: {e}"))
}
