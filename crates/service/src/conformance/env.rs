//! The test environment of the backends, in one place: where each shared engine is found
//! (`FLASHSALE_TEST_*_URL`, with the machine's local default), names no other test uses, and
//! cleanup that has to await from a `Drop`. For the backend crates' integration tests and the
//! end-to-end tests; the service itself knows no engine, so the clients stay with the tests.
//!
//! A server that cannot be reached fails the tests that need it: a skipped backend test would
//! read as a pass. Panic messages say which variable points elsewhere ([`Engine::hint`]).

use std::future::Future;
use uuid::Uuid;

/// A shared engine the tests run against: the variable naming its URL, and where it is when
/// the variable is unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Engine {
    pub variable: &'static str,
    pub default_url: &'static str,
}

/// Redis, for the stock ledger.
pub const REDIS: Engine = Engine {
    variable: "FLASHSALE_TEST_REDIS_URL",
    default_url: "redis://127.0.0.1:6379",
};

/// NATS with JetStream, for the reservation queue.
pub const NATS: Engine = Engine {
    variable: "FLASHSALE_TEST_NATS_URL",
    default_url: "nats://127.0.0.1:4222",
};

/// The PostgreSQL server (trust auth), without a database: each test makes its own.
pub const POSTGRES: Engine = Engine {
    variable: "FLASHSALE_TEST_POSTGRES_URL",
    default_url: "postgres://postgres@127.0.0.1:5432",
};

impl Engine {
    /// The engine's URL: the variable if set, else the default.
    pub fn url(&self) -> String {
        std::env::var(self.variable).unwrap_or_else(|_| self.default_url.to_owned())
    }

    /// What to add to a "cannot connect" panic: `(set FLASHSALE_TEST_..._URL)`.
    pub fn hint(&self) -> String {
        format!("(set {})", self.variable)
    }
}

/// `prefix` followed by 32 random hex digits: a key prefix, stream or database name no other
/// test (of this run or another sharing the engine) uses. Plain ASCII letters, digits and the
/// prefix, so it is safe in a key, a subject or an SQL identifier.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}{}", Uuid::new_v4().simple())
}

/// Runs async cleanup to its end from a `Drop`. A test's `Drop` runs inside the test's
/// runtime, which cannot block on async work, so the cleanup gets a thread and a runtime of
/// its own, and the caller waits for it. Failures are the cleanup's to report (a leftover is
/// named, never a failed test).
pub fn clean_up_blocking<F>(cleanup: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let thread = std::thread::spawn(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(cleanup),
            Err(e) => eprintln!("no runtime for the cleanup: {e}"),
        }
    });
    thread.join().ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_keep_their_prefix() {
        let (a, b) = (unique_name("FSTEST_"), unique_name("FSTEST_"));
        assert_ne!(a, b);
        assert!(
            a.starts_with("FSTEST_") && a.len() == "FSTEST_".len() + 32,
            "{a}"
        );
        assert!(
            a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{a}"
        );
    }
}
