//! Opening Redis the one way every backend of this crate does: the key prefix checked, the
//! timeouts from `RedisStockConfig`, and the backend's scripts loaded before the first call.

use crate::{RedisStockConfig, RedisStockOpenError};
use flashsale_service::ports::redact_password;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// Names the server (without its password) in a connect error.
pub(crate) fn open_error(url: &str, message: String) -> RedisStockOpenError {
    RedisStockOpenError {
        url: redact_password(url),
        message,
    }
}

/// Connects to `url` (`redis://host:port[/db]`) and loads `scripts`, so a server that cannot
/// run them is found at start, not at the first call.
pub(crate) async fn open(
    url: &str,
    config: &RedisStockConfig,
    scripts: &[&Script],
) -> Result<ConnectionManager, RedisStockOpenError> {
    let fail = |message: String| open_error(url, message);
    if config.key_prefix.is_empty() || config.key_prefix.contains(['{', '}']) {
        return Err(fail(format!(
            "key prefix {:?} must be non-empty and without braces",
            config.key_prefix
        )));
    }
    let client = redis::Client::open(url).map_err(|e| fail(format!("bad URL: {e}")))?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(config.connect_timeout_ms.get())))
        .set_response_timeout(Some(Duration::from_millis(
            config.response_timeout_ms.get(),
        )))
        // Fail fast: a node that cannot reach Redis at start should say so, not retry for
        // half a minute. Later reconnects happen on the next command anyway.
        .set_number_of_retries(1);
    let mut connection = ConnectionManager::new_with_config(client, manager_config)
        .await
        .map_err(|e| fail(e.to_string()))?;
    for script in scripts {
        script
            .prepare_invoke()
            .load_async(&mut connection)
            .await
            .map_err(|e| fail(format!("loading a script: {e}")))?;
    }
    Ok(connection)
}
