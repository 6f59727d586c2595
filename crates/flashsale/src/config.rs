//! The typed configuration tree: defaults file < config file < `FLASHSALE_*` environment <
//! flags, validated once at start with errors that name the key to fix.

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use flashsale_embedded::QueueConfig;
use flashsale_http::HttpConfig;
use flashsale_nats::JetStreamQueueConfig;
use flashsale_postgres::PgStoreConfig;
use flashsale_redis::RedisStockConfig;
use flashsale_service::ports::redact_password;
use flashsale_service::{
    ClusterConfig, FilterConfig, ReaperConfig, ReservationConfig, WriterConfig,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The SQLite order store's file name inside the data directory (`backends.orders = "sqlite"`).
pub const ORDER_STORE_FILE: &str = "orders.sqlite";

/// The defaults, compiled in so the binary runs with no file at all.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../../config/default.toml");

/// Shortest admin token accepted, in characters.
pub const ADMIN_TOKEN_CHARS_MIN: usize = 16;
/// Shortest HMAC/JWT secret accepted, in bytes.
pub const SECRET_BYTES_MIN: usize = 32;

/// The whole file. Sections that configure a component are that component's own config type,
/// deserialized as they stand (their field names are the keys); only the binary's own
/// settings (listen, data directory, secrets, backends, log format, shutdown) are declared here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub dev_login: bool,
    pub log_format: LogFormat,
    pub admin_token: Option<SecretString>,
    pub buyer_jwt_secret: Option<SecretString>,
    pub buy_path_secret: Option<SecretString>,
    pub backends: BackendsSection,
    pub redis: RedisStockConfig,
    pub nats: JetStreamQueueConfig,
    pub postgres: PgStoreConfig,
    pub cluster: ClusterConfig,
    pub reservations: ReservationConfig,
    pub http: HttpConfig,
    pub filters: FilterConfig,
    pub queue: QueueConfig,
    pub writers: WriterConfig,
    pub reaper: ReaperConfig,
    pub shutdown: ShutdownSection,
}

/// Which engine holds each kind of state: the embedded default, or URLs of shared engines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendsSection {
    pub stock: String,
    pub queue: String,
    pub orders: String,
}

/// Most buys in one batch: a batch travels as one JetStream message, whose payload (about 330
/// bytes a reservation at most) must stay well under the server's 1 MiB default.
pub const BATCH_MAX_LIMIT: usize = 1024;

/// Where state lives, decided from `backends.*` once at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deployment {
    /// One node: stock in memory, the redb queue and the SQLite order store on local disk.
    Embedded { orders_file: PathBuf },
    /// Stateless nodes sharing Redis (stock), NATS JetStream (queue), PostgreSQL (orders).
    Shared {
        redis_url: String,
        nats_url: String,
        postgres_url: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[shutdown]`: the binary's own, since the shop takes the drain timeout as one value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSection {
    pub drain_timeout_ms: u64,
}

/// Values given as command-line flags; `None` leaves the lower layers' value.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_login: Option<bool>,
    #[serde(skip_serializing_if = "BackendFlags::is_empty")]
    pub backends: BackendFlags,
}

/// `--stock`, `--queue`, `--orders`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackendFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stock: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orders: Option<String>,
}

impl BackendFlags {
    fn is_empty(&self) -> bool {
        self.stock.is_none() && self.queue.is_none() && self.orders.is_none()
    }
}

/// A configuration problem, naming the key and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Loads the layers. `env` is the process environment (passed in so tests control it).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &FlagOverrides,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_CONFIG_TOML));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError(format!(
                    "the config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        figment = figment
            .merge(Serialized::defaults(env_layer(&env)?))
            .merge(Serialized::defaults(flags));
        let config: Config = figment.extract().map_err(|e| ConfigError(describe(e)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        // Every other count and duration that must not be 0 has a `NonZero` type, so serde
        // refuses a 0 naming the key. The embedded queue's limits stay plain integers: the
        // queue refuses zeros itself when it opens (its tests build such configs to check it),
        // and the JetStream queue takes two of them too, so they are checked here at load.
        let q = &self.queue;
        let positive = [
            (
                "queue.capacity_reservations",
                q.capacity_reservations as u64,
            ),
            ("queue.commit_batch_max", q.commit_batch_max as u64),
            (
                "queue.commit_requests_waiting_max",
                q.commit_requests_waiting_max as u64,
            ),
            ("queue.ack_deadline_ms", q.ack_deadline_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError(format!("{key} must be greater than 0")));
            }
        }
        if let Deployment::Shared { .. } = self.deployment()?
            && self.cluster.rebuild_fence_ms <= self.nats.request_timeout_ms.get()
        {
            return Err(ConfigError(
                "cluster.rebuild_fence_ms must be greater than nats.request_timeout_ms: a lost \
                 stock ledger may only be rebuilt once every in-flight publish has finished"
                    .into(),
            ));
        }
        if self.reservations.batch_max.get() > BATCH_MAX_LIMIT {
            return Err(ConfigError(format!(
                "reservations.batch_max must be at most {BATCH_MAX_LIMIT} (a batch is one queue message)"
            )));
        }
        if self.filters.shed_queue_fill_percent_start > 100 {
            return Err(ConfigError(
                "filters.shed_queue_fill_percent_start must be at most 100".into(),
            ));
        }
        if self.filters.buyer_window_ms > 0 && self.filters.buyer_window_entries_max == 0 {
            return Err(ConfigError(
                "filters.buyer_window_entries_max must be greater than 0".into(),
            ));
        }
        for (key, rate, burst) in [
            (
                "filters.buyer_burst",
                self.filters.buyer_rate_per_sec,
                self.filters.buyer_burst,
            ),
            (
                "filters.client_burst",
                self.filters.client_rate_per_sec,
                self.filters.client_burst,
            ),
        ] {
            if rate > 0 && burst == 0 {
                return Err(ConfigError(format!(
                    "{key} must be greater than 0 when its rate is set"
                )));
            }
        }
        if self.http.header_bytes_max < 8192 {
            return Err(ConfigError(
                "http.header_bytes_max must be at least 8192".into(),
            ));
        }
        if self.writers.count > flashsale_service::writers::WRITERS_COUNT_MAX {
            return Err(ConfigError(format!(
                "writers.count must be at most {}",
                flashsale_service::writers::WRITERS_COUNT_MAX
            )));
        }
        if let Some(token) = &self.admin_token
            && token.expose_secret().chars().count() < ADMIN_TOKEN_CHARS_MIN
        {
            return Err(ConfigError(format!(
                "admin_token must be at least {ADMIN_TOKEN_CHARS_MIN} characters (FLASHSALE_ADMIN_TOKEN)"
            )));
        }
        for (key, env, secret) in [
            (
                "buyer_jwt_secret",
                "FLASHSALE_BUYER_JWT_SECRET",
                &self.buyer_jwt_secret,
            ),
            (
                "buy_path_secret",
                "FLASHSALE_BUY_PATH_SECRET",
                &self.buy_path_secret,
            ),
        ] {
            if let Some(secret) = secret
                && secret.expose_secret().len() < SECRET_BYTES_MIN
            {
                return Err(ConfigError(format!(
                    "{key} must be at least {SECRET_BYTES_MIN} bytes ({env})"
                )));
            }
        }
        Ok(())
    }

    /// Where state lives. Either everything is embedded or everything is shared: a node with
    /// stock in memory next to a shared queue or order store would rebuild the whole stock
    /// from them on every node, and a shared stock next to local files would lose track of
    /// orders on other nodes; both could oversell.
    pub fn deployment(&self) -> Result<Deployment, ConfigError> {
        let b = &self.backends;
        let stock = match b.stock.as_str() {
            "memory" => None,
            url if url.starts_with("redis://") || url.starts_with("rediss://") => Some(url),
            other => {
                return Err(ConfigError(format!(
                    "backends.stock = {other:?}: use \"memory\" (embedded) or a redis:// URL (--stock, FLASHSALE_BACKENDS__STOCK)"
                )));
            }
        };
        let queue = match b.queue.as_str() {
            "embedded" => None,
            url if url.starts_with("nats://") || url.starts_with("tls://") => Some(url),
            other => {
                return Err(ConfigError(format!(
                    "backends.queue = {other:?}: use \"embedded\" or a nats:// URL (--queue, FLASHSALE_BACKENDS__QUEUE)"
                )));
            }
        };
        let orders = match b.orders.as_str() {
            "sqlite" => Err(self.data_dir.join(ORDER_STORE_FILE)),
            url if url.starts_with("sqlite://") && url.len() > "sqlite://".len() => {
                Err(PathBuf::from(&url["sqlite://".len()..]))
            }
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => Ok(url),
            other => {
                return Err(ConfigError(format!(
                    "backends.orders = {other:?}: use \"sqlite\", sqlite://PATH or a postgres:// URL (--orders, FLASHSALE_BACKENDS__ORDERS)"
                )));
            }
        };
        match (stock, queue, orders) {
            (None, None, Err(orders_file)) => Ok(Deployment::Embedded { orders_file }),
            (Some(redis), Some(nats), Ok(postgres)) => Ok(Deployment::Shared {
                redis_url: redis.to_owned(),
                nats_url: nats.to_owned(),
                postgres_url: postgres.to_owned(),
            }),
            _ => Err(ConfigError(format!(
                "backends: stock = {:?}, queue = {:?}, orders = {:?} mixes embedded and shared \
                 backends, which could oversell; use all embedded (memory, embedded, sqlite) or \
                 all shared (--stock redis://…, --queue nats://…, --orders postgres://…)",
                redact_password(&b.stock),
                redact_password(&b.queue),
                redact_password(&b.orders)
            ))),
        }
    }

    /// The admin token, or an error saying how to set it.
    pub fn require_admin_token(&self) -> Result<SecretString, ConfigError> {
        self.admin_token.clone().ok_or_else(|| {
            ConfigError(
                "admin_token is not set: export FLASHSALE_ADMIN_TOKEN=<at least 16 characters>"
                    .into(),
            )
        })
    }

    pub fn require_buyer_jwt_secret(&self) -> Result<SecretString, ConfigError> {
        self.buyer_jwt_secret.clone().ok_or_else(|| {
            ConfigError(
                "buyer_jwt_secret is not set: export FLASHSALE_BUYER_JWT_SECRET=<the HS256 secret your shop signs buyer tokens with, at least 32 bytes>"
                    .into(),
            )
        })
    }
}

/// Prefix of every environment variable flashsale reads.
pub const ENV_PREFIX: &str = "FLASHSALE_";

/// Turns `FLASHSALE_HTTP__BODY_BYTES_MAX=8192` into the nested `{http: {body_bytes_max: 8192}}`
/// layer, with values parsed the way figment's own `Env` provider parses them. Taking the
/// pairs as an argument (rather than reading the process) keeps the loader testable.
fn env_layer(env: &[(String, String)]) -> Result<Dict, ConfigError> {
    let mut root = Dict::new();
    for (key, value) in env {
        let path: Vec<String> = key[ENV_PREFIX.len()..]
            .split("__")
            .map(|p| p.to_ascii_lowercase())
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError(format!(
                "environment variable {key} is not of the form FLASHSALE_SECTION__KEY"
            )));
        }
        let (last, sections) = path.split_last().expect("split yields at least one part");
        let mut table = &mut root;
        for part in sections {
            let entry = table
                .entry(part.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            table = match entry {
                Value::Dict(_, dict) => dict,
                _ => {
                    return Err(ConfigError(format!(
                        "environment variable {key}: {part} is not a section"
                    )));
                }
            };
        }
        let parsed: Value = value.parse().unwrap_or_else(|_| Value::from(value.clone()));
        table.insert(last.clone(), parsed);
    }
    Ok(root)
}

fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashsale_redis::LeaseConfig;
    use serde_json::Value as Json;

    /// One section of the default file, as JSON (numbers compare by value, whatever their width).
    fn file_section(name: &str) -> Json {
        Figment::from(Toml::string(DEFAULT_CONFIG_TOML))
            .extract_inner(name)
            .unwrap_or_else(|e| panic!("config/default.toml has no [{name}]: {e}"))
    }

    fn json(value: impl Serialize) -> Json {
        serde_json::to_value(value).expect("a config serializes")
    }

    /// The file is the one source of default values: a component's `Default` (used by tests
    /// and by anyone embedding the crate) must say what the file says, key for key, so a key
    /// missing from the file or a value that drifted fails here.
    #[test]
    fn every_component_default_is_the_default_file() {
        let sections = [
            ("redis", json(RedisStockConfig::default())),
            ("nats", json(JetStreamQueueConfig::default())),
            ("postgres", json(PgStoreConfig::default())),
            ("cluster", json(ClusterConfig::default())),
            ("reservations", json(ReservationConfig::default())),
            ("http", json(HttpConfig::default())),
            ("filters", json(FilterConfig::default())),
            ("queue", json(QueueConfig::default())),
            ("writers", json(WriterConfig::default())),
            ("reaper", json(ReaperConfig::default())),
        ];
        for (name, default) in &sections {
            assert_eq!(
                &file_section(name),
                default,
                "[{name}] in config/default.toml and the Rust Default disagree"
            );
        }

        // Values a component takes from another section (they are not keys of its own).
        let queue = file_section("queue");
        let nats = JetStreamQueueConfig::default();
        assert_eq!(
            json(nats.capacity_reservations),
            queue["capacity_reservations"]
        );
        assert_eq!(json(nats.ack_deadline_ms), queue["ack_deadline_ms"]);
        let reservations = file_section("reservations");
        let lease = LeaseConfig::default();
        assert_eq!(json(lease.units_max), reservations["lease_units_max"]);
        assert_eq!(json(lease.ttl_ms), reservations["lease_ttl_ms"]);

        // Every section of the file is checked above or is the binary's own.
        let file: Json = Figment::from(Toml::string(DEFAULT_CONFIG_TOML))
            .extract()
            .expect("the default file parses");
        let binary_own = ["backends", "shutdown"];
        for (key, value) in file.as_object().expect("a table") {
            if value.is_object() {
                assert!(
                    binary_own.contains(&key.as_str())
                        || sections.iter().any(|(name, _)| name == key),
                    "[{key}] has no component Default to compare with"
                );
            }
        }
    }

    /// Constants named like a limit (a unit last) that are deliberately not in the config
    /// file, each with why an operator has nothing to turn there. The invariant is "every
    /// limit has a value in config/default.toml": a new limit constant fails
    /// `every_limit_constant_is_configured_or_deliberately_fixed` until it is given a config
    /// entry (and removed as a constant) or listed here with its reason.
    const FIXED_LIMITS: &[(&str, &str)] = &[
        // The API's contract: what a valid request is, the same on every deployment (the
        // OpenAPI document states them; a node must not accept what another refuses).
        ("BUYER_TOKEN_BYTES_MAX", "input validation of the API"),
        ("ID_TEXT_BYTES_MAX", "input validation of the API"),
        ("SALE_NAME_CHARS_MAX", "input validation of the API"),
        ("SALE_STOCK_UNITS_MAX", "input validation of the API"),
        ("SALE_PRICE_CENTS_MAX", "input validation of the API"),
        ("SALE_PER_BUYER_LIMIT_MAX", "input validation of the API"),
        ("PAYMENT_WINDOW_SECS_MIN", "input validation of the API"),
        ("PAYMENT_WINDOW_SECS_MAX", "input validation of the API"),
        ("SALE_DURATION_DAYS_MAX", "input validation of the API"),
        (
            "SALE_UNIX_SECS_MAX",
            "input validation of the API (year 9999)",
        ),
        ("LISTED_ORDERS_MAX", "input validation of the API (?limit=)"),
        (
            "MESSAGE_CHARS_MAX",
            "length of an error message sent to clients",
        ),
        // Formats: changing one breaks what is already written or signed.
        ("BUY_PATH_TOKEN_BYTES", "buy-path token format"),
        (
            "BATCH_CHARS",
            "Redis entry encoding (Lua offsets depend on it)",
        ),
        ("RESERVATION_BYTES_MAX", "NATS batch message format bound"),
        // Bounds on configured values, not values themselves.
        ("WRITERS_COUNT_MAX", "upper bound of writers.count"),
        ("BATCH_MAX_LIMIT", "upper bound of reservations.batch_max"),
        ("ADMIN_TOKEN_CHARS_MIN", "security floor of admin_token"),
        ("SECRET_BYTES_MIN", "security floor of the HMAC/JWT secrets"),
        // Protocol hints and cache headers the pages and clients rely on.
        ("RETRY_AFTER_SECS", "Retry-After of overload answers"),
        (
            "OPENAPI_MAX_AGE_SECS",
            "Cache-Control of the OpenAPI document",
        ),
        (
            "SALE_PAGE_MAX_AGE_SECS",
            "Cache-Control of the static sale page",
        ),
        ("EVENT_RETRY_MS", "the SSE retry: field"),
        (
            "EVENT_INTERVAL_MS",
            "the dashboard's event pace (ARCHITECTURE decision)",
        ),
        ("EVENT_ORDERS_MAX", "what one dashboard event shows"),
        (
            "EVENT_BUFFER_EVENTS",
            "a slow dashboard waits, never buffers",
        ),
        ("RECENT_ORDERS_MAX", "what the admin view shows"),
        ("DEV_TOKEN_TTL_SECS", "the demo login only"),
        ("DEMO_GO_LIVE_DELAY_SECS", "the demo sale only"),
        (
            "LATENCY_BUCKETS_SECS",
            "histogram bucket bounds, not a limit",
        ),
        // Internal pacing, sized from the code it bounds, with the why next to each.
        ("ORDER_LOOKUP_SALES_MAX", "sales probed by one order lookup"),
        ("ENTRIES_AT_FIRST_MAX", "initial allocation of a cache"),
        ("PAY_ATTEMPTS_MAX", "compare-and-set retries of one pay"),
        ("PULL_WAIT_MIN", "floor of a JetStream pull's wait"),
        (
            "STAGING_FIELDS_PER_COMMAND_MAX",
            "Redis command size while staging",
        ),
        ("STAGING_TTL_SECS", "lifetime of a half-staged sale's keys"),
        (
            "SALES_CACHED_MAX",
            "sales in the read cache (far above live sales)",
        ),
        ("BUSY_TIMEOUT_MS", "SQLite lock wait against outside tools"),
        (
            "WRITER_PAGE_CACHE_BYTES",
            "SQLite writer's page cache (sized from the order trees)",
        ),
        (
            "READ_CONNECTIONS_MAX",
            "SQLite readers beside its one writer",
        ),
        (
            "INSERT_ROWS_PER_STATEMENT_MAX",
            "SQLite's bound-parameter limit",
        ),
        // The waiting line (issue 14): the sale spec's bounds are the API's contract, the
        // ticket and the log records are formats, the rest paces a node's copy of a line.
        (
            "ADMIT_PER_SEC_MAX",
            "input validation of the API (waiting_room)",
        ),
        (
            "ADMISSION_SECS_MIN",
            "input validation of the API (waiting_room)",
        ),
        (
            "ADMISSION_SECS_MAX",
            "input validation of the API (waiting_room)",
        ),
        (
            "LINE_OPENS_BEFORE_START_SECS_MAX",
            "input validation of the API (waiting_room)",
        ),
        (
            "POLL_AFTER_SECS_MIN",
            "line/me's poll hint, part of its contract",
        ),
        (
            "POLL_AFTER_SECS_MAX",
            "line/me's poll hint, part of its contract",
        ),
        ("TICKET_MAC_BYTES", "admission ticket format"),
        ("TICKET_BYTES", "admission ticket format"),
        (
            "HS256_SIGNATURE_CHARS",
            "JWT format: an HS256 signature is 32 bytes, 43 base64url characters",
        ),
        // Proof of work for a place in line (issue 15): the contract's bounds, the same on
        // every node (a challenge issued by one is checked by another).
        ("DIFFICULTY_BITS_MAX", "proof-of-work contract"),
        ("NONCE_BYTES_MAX", "input validation of the API"),
        ("CHALLENGE_BYTES", "proof-of-work challenge format"),
        ("CHALLENGE_CHARS", "proof-of-work challenge format"),
        ("SIGNATURE_BYTES", "proof-of-work challenge format"),
        ("BODY_BYTES", "proof-of-work challenge format"),
        // The line's published log (issue 15).
        (
            "LOG_PAGE_RECORDS_MAX",
            "line/log's page bound, part of its contract (the OpenAPI document states it)",
        ),
        (
            "CATCH_UP_RECORDS_MAX",
            "chain records a node reads per backend call (as MEMBERS_PER_CALL_MAX)",
        ),
        (
            "CHALLENGE_EXPIRES_SECS",
            "proof-of-work contract: a challenge issued by one node expires alike on all",
        ),
        (
            "JOIN_RATE_SAMPLE_MS",
            "the window of the join rate the rising difficulty follows (its curve is the contract)",
        ),
        (
            "FRAME_HEADER_BYTES",
            "line log and reservation log record format",
        ),
        (
            "RECORD_PAYLOAD_BYTES_MAX",
            "line log and reservation log record format bounds",
        ),
        ("TIME_BYTES", "record format of both logs"),
        // The reservation log (issue 16): its record format, and the segment size, which is
        // how often a consumed part of the log can be dropped, not a capacity.
        ("ENQUEUE_FIXED_BYTES", "reservation log record format"),
        ("ACK_BYTES_MAX", "reservation log record format bound"),
        ("ACK_IDS_PER_RECORD_MAX", "reservation log record format"),
        (
            "SEGMENT_BYTES_MAX",
            "reservation log segment size (how soon consumed space is freed)",
        ),
        // Writers giving way (issue 16): what "the buy path is hot" means, and how often a
        // pausing writer looks again; the pause itself is writers.give_way_ms.
        ("BUY_PATH_HOT_MS", "what a hot buy path is"),
        ("GIVE_WAY_POLL_MS", "a pausing writer's pace"),
        ("LINE_HEX_CHARS", "Redis line member encoding"),
        (
            "LUA_EXACT_MAX",
            "largest integer Lua's doubles hold exactly",
        ),
        (
            "ADMISSION_SHARED_MS",
            "admissions within a second share their time (core::line's rule)",
        ),
        (
            "MEMBERS_PER_CALL_MAX",
            "members read per Redis call, so one call never blocks Redis long",
        ),
        (
            "LOG_PENDING_BYTES_MAX",
            "line log backlog before callers wait (1 MiB: thousands of joins)",
        ),
        (
            "LINE_SUMMARY_CACHE_MS",
            "how stale a node's copy of a line may be; the admission rate's bucket bounds the effect",
        ),
        (
            "LINE_POSITIONS_CACHED_MAX",
            "positions a node keeps (about 100 MB at the cap); the rest are asked of the line",
        ),
        (
            "AUTO_ADMIT_PER_SEC_MIN",
            "\"auto\"'s floor (README: the fair line)",
        ),
        (
            "AUTO_ADMIT_PER_SEC_MAX",
            "\"auto\"'s ceiling: the API's own maximum",
        ),
        (
            "AUTO_SAMPLE_MS",
            "how often \"auto\" measures the durable path",
        ),
        (
            "AUTO_WRITER_LAG_MS_MAX",
            "writer lag past which \"auto\" slows (README: the fair line)",
        ),
    ];

    /// The unit suffixes that make a constant's name a limit's name.
    const LIMIT_SUFFIXES: &[&str] = &[
        "_MAX", "_MIN", "_MS", "_SECS", "_BYTES", "_CHARS", "_DAYS", "_EVENTS", "_LIMIT",
    ];

    /// Every `const` named like a limit in the server's crates (not their test modules).
    fn limit_constants() -> Vec<(String, std::path::PathBuf)> {
        let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found = Vec::new();
        let mut dirs: Vec<PathBuf> = [
            "core",
            "service",
            "http",
            "embedded",
            "redis",
            "nats",
            "postgres",
            "flashsale",
        ]
        .iter()
        .map(|c| crates.join(c).join("src"))
        .collect();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("a source directory") {
                let path = entry.expect("a directory entry").path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("a source file");
                for line in text.lines().take_while(|l| !l.contains("#[cfg(test)]")) {
                    let line = line.trim_start();
                    let line = line.strip_prefix("pub ").unwrap_or(line);
                    let line = line.strip_prefix("pub(crate) ").unwrap_or(line);
                    let Some(rest) = line.strip_prefix("const ") else {
                        continue;
                    };
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    if LIMIT_SUFFIXES.iter().any(|s| name.ends_with(s)) {
                        found.push((name, path.clone()));
                    }
                }
            }
        }
        found
    }

    #[test]
    fn every_limit_constant_is_configured_or_deliberately_fixed() {
        let found = limit_constants();
        for (name, path) in &found {
            assert!(
                FIXED_LIMITS.iter().any(|(fixed, _)| fixed == name),
                "{name} ({}) looks like a limit but has no entry in config/default.toml: \
                 give it one, or add it to FIXED_LIMITS with why it is fixed",
                path.display()
            );
        }
        for (fixed, _) in FIXED_LIMITS {
            assert!(
                found.iter().any(|(name, _)| name == fixed),
                "FIXED_LIMITS names {fixed}, which no longer exists"
            );
        }
    }
}
