//! Where the shared engines of this machine are, from the environment (the test's own copy;
//! `FLASHSALE_TEST_*` with the local defaults).

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

pub fn redis_url() -> String {
    env_or("FLASHSALE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
}

pub fn nats_url() -> String {
    env_or("FLASHSALE_TEST_NATS_URL", "nats://127.0.0.1:4222")
}

/// The PostgreSQL server, without a database.
pub fn postgres_server() -> String {
    env_or(
        "FLASHSALE_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432",
    )
}
