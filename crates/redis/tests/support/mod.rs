//! What the Redis tests share: a key prefix of the test's own, deleted at the end.

use flashsale_service::conformance::env::{REDIS, unique_name};

/// A key prefix of the test's own. Dropping it deletes every key under it.
pub struct TestPrefix {
    pub prefix: String,
}

impl TestPrefix {
    pub fn new() -> Self {
        Self {
            prefix: unique_name("test-"),
        }
    }

    /// Deletes every key under the prefix, as a Redis that restarted empty would have lost
    /// them (without flushing the server other tests share).
    pub fn delete_keys(&self) -> redis::RedisResult<()> {
        // The blocking client: Drop cannot await, and this is a handful of commands.
        use redis::Commands as _;
        let client = redis::Client::open(REDIS.url())?;
        let mut connection = client.get_connection()?;
        let keys: Vec<String> = connection
            .scan_match::<_, String>(format!("{{fs:{}:*", self.prefix))?
            .collect::<redis::RedisResult<_>>()?;
        for chunk in keys.chunks(500) {
            redis::cmd("DEL").arg(chunk).query::<()>(&mut connection)?;
        }
        Ok(())
    }
}

impl Drop for TestPrefix {
    fn drop(&mut self) {
        if let Err(e) = self.delete_keys() {
            eprintln!("could not delete test keys under {}: {e}", self.prefix);
        }
    }
}
