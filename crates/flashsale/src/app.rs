//! Wiring: builds the backends the configuration names, opens the shop, and serves HTTP until
//! told to stop. Used by `main` and, in-process, by the end-to-end tests.

use crate::config::{Config, Deployment, DesignSetting};
use anyhow::{Context, Result};
use flashsale_core::tokens::BuyerTokens;
use flashsale_embedded::{InProcessStock, RedbQueue, RedbQueueConfig, SqliteStore};
use flashsale_http::{AppState, ConnectionLimits, RequestLimits};
use flashsale_nats::{JetStreamQueue, JetStreamQueueConfig};
use flashsale_postgres::{PgStore, PgStoreConfig};
use flashsale_redis::{LeaseConfig, RedisStock, RedisStockConfig};
use flashsale_service::ports::redact_password;
use flashsale_service::{
    Backends, Clock, ClusterConfig, Design, FilterConfig, ReaperConfig, ReservationConfig, Shop,
    ShopConfig, SystemClock, WriterConfig,
};
use secrecy::{ExposeSecret, SecretString};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// File names inside the data directory.
pub const QUEUE_FILE: &str = "queue.redb";
pub const BUY_PATH_SECRET_FILE: &str = "buy_path.secret";

/// A server that is up and serving.
pub struct RunningApp {
    pub addr: SocketAddr,
    pub shop: Arc<Shop>,
    /// Cancel to begin a graceful shutdown; then await `finished`.
    pub shutdown: CancellationToken,
    pub finished: JoinHandle<()>,
}

impl RunningApp {
    /// Graceful shutdown: stop accepting, finish open requests, drain the queue.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.finished.await;
    }
}

/// Opens the embedded order store (creating it and running migrations if needed).
pub async fn open_sqlite_store(path: &Path) -> Result<SqliteStore> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    SqliteStore::open(&path.to_string_lossy())
        .await
        .with_context(|| format!("cannot open the order store {}", path.display()))
}

/// `flashsale migrate`: creates or upgrades the configured order store's schema. Returns where.
pub async fn migrate(config: &Config) -> Result<String> {
    match config.deployment()? {
        Deployment::Embedded { orders_file } => {
            open_sqlite_store(&orders_file).await?;
            Ok(orders_file.display().to_string())
        }
        Deployment::Shared { postgres_url, .. } => {
            let store = PgStore::connect_with(&postgres_url, pg_config(config))
                .await
                .context("order store (backends.orders)")?;
            store.close().await;
            Ok(redact_password(&postgres_url))
        }
    }
}

fn pg_config(config: &Config) -> PgStoreConfig {
    PgStoreConfig {
        connections_max: config.postgres.connections_max,
        connect_timeout_ms: config.postgres.connect_timeout_ms,
        insert_rows_per_statement_max: config.postgres.insert_rows_per_statement_max,
    }
}

/// The stock ledger, queue and order store the configuration names. A backend that cannot be
/// reached is an error naming it (`backends.*`) and why.
async fn open_backends(config: &Config, clock: Arc<dyn Clock>) -> Result<Backends> {
    match config.deployment()? {
        Deployment::Embedded { orders_file } => {
            let store = open_sqlite_store(&orders_file).await?;
            let queue_path = config.data_dir.join(QUEUE_FILE);
            let queue = RedbQueue::open(
                &queue_path,
                RedbQueueConfig {
                    capacity_reservations: config.queue.capacity_reservations,
                    commit_batch_max: config.queue.commit_batch_max,
                    commit_requests_waiting_max: config.queue.commit_requests_waiting_max,
                    ack_deadline_ms: config.queue.ack_deadline_ms,
                },
            )
            .with_context(|| format!("cannot open the durable queue {}", queue_path.display()))?;
            Ok(Backends {
                stock: Arc::new(InProcessStock::new()),
                queue: Arc::new(queue),
                store: Arc::new(store),
                clock,
            })
        }
        Deployment::Shared {
            redis_url,
            nats_url,
            postgres_url,
        } => {
            let stock = RedisStock::connect(
                &redis_url,
                RedisStockConfig {
                    key_prefix: config.redis.key_prefix.clone(),
                    response_timeout_ms: config.redis.response_timeout_ms,
                    connect_timeout_ms: config.redis.connect_timeout_ms,
                    // Leases belong to the batched design; the classic one takes every unit
                    // from the sale's counter.
                    lease: (config.reservations.design == DesignSetting::Batched).then_some(
                        LeaseConfig {
                            units_max: config.reservations.lease_units_max,
                            ttl_ms: config.reservations.lease_ttl_ms,
                        },
                    ),
                },
            )
            .await
            .context("stock backend (backends.stock)")?;
            let n = &config.nats;
            let queue = JetStreamQueue::connect(
                &nats_url,
                JetStreamQueueConfig {
                    stream: n.stream.clone(),
                    consumer: n.consumer.clone(),
                    capacity_reservations: config.queue.capacity_reservations,
                    ack_deadline_ms: config.queue.ack_deadline_ms,
                    replicas: n.replicas,
                    duplicate_window_ms: n.duplicate_window_ms,
                    depth_refresh_ms: n.depth_refresh_ms,
                    request_timeout_ms: n.request_timeout_ms,
                    connect_timeout_ms: n.connect_timeout_ms,
                },
            )
            .await
            .context("queue backend (backends.queue)")?;
            let store = PgStore::connect_with(&postgres_url, pg_config(config))
                .await
                .context("order store (backends.orders)")?;
            Ok(Backends {
                stock: Arc::new(stock),
                queue: Arc::new(queue),
                store: Arc::new(store),
                clock,
            })
        }
    }
}

/// Starts a server on `config` with the system clock.
pub async fn start(config: &Config) -> Result<RunningApp> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// Starts a server on `config` with the given clock (tests move time by hand).
pub async fn start_with_clock(config: &Config, clock: Arc<dyn Clock>) -> Result<RunningApp> {
    // Before anything resolves a counter: handles taken earlier would record nowhere.
    flashsale_http::metrics::install();
    let admin_token = config.require_admin_token()?;
    let buyer_secret = config.require_buyer_jwt_secret()?;
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let deployment = config.deployment()?;
    let buy_path_secret = match (&config.buy_path_secret, &deployment) {
        (Some(secret), _) => secret.clone(),
        (None, Deployment::Embedded { .. }) => {
            load_or_create_secret(&config.data_dir.join(BUY_PATH_SECRET_FILE))?
        }
        // Every node must hand out and accept the same buy paths.
        (None, Deployment::Shared { .. }) => anyhow::bail!(
            "buy_path_secret is not set: nodes on shared backends need the same one; export \
             FLASHSALE_BUY_PATH_SECRET=<at least 32 bytes> on every node"
        ),
    };
    let cluster = matches!(deployment, Deployment::Shared { .. }).then(|| ClusterConfig {
        sale_sync_ms: config.cluster.sale_sync_ms,
        rebuild_fence_ms: config.cluster.rebuild_fence_ms,
    });
    let backends = open_backends(config, clock).await?;
    let shop_config = ShopConfig {
        buy_path_secret: buy_path_secret.expose_secret().as_bytes().to_vec(),
        reservations: ReservationConfig {
            design: match config.reservations.design {
                DesignSetting::Batched => Design::Batched,
                DesignSetting::Classic => Design::Classic,
            },
            batch_max: config.reservations.batch_max,
            batches_in_flight_max: config.reservations.batches_in_flight_max,
        },
        writers: WriterConfig {
            count: config.writers.count,
            batch_max: config.writers.batch_max,
            idle_wait_ms: config.writers.idle_wait_ms,
            linger_ms: config.writers.linger_ms,
            retry_backoff_ms_max: config.writers.retry_backoff_ms_max,
        },
        reaper: ReaperConfig {
            interval_ms: config.reaper.interval_ms,
            batch_max: config.reaper.batch_max,
        },
        filters: filter_config(config),
        drain_timeout_ms: config.shutdown.drain_timeout_ms,
        cluster,
    };
    let shop = Shop::open(backends, shop_config)
        .await
        .context("cannot recover the sale state")?;

    let state = AppState::new(
        shop.clone(),
        BuyerTokens::new(buyer_secret.expose_secret().as_bytes()),
        admin_token,
        config.dev_login,
        RequestLimits {
            body_bytes_max: config.http.body_bytes_max,
            request_timeout_ms: config.http.request_timeout_ms,
            body_read_timeout_ms: config.http.body_read_timeout_ms,
            event_streams_max: config.http.event_streams_max,
            event_stream_secs_max: config.http.event_stream_secs_max,
        },
        config.filters.status_cache_ms,
    );
    spawn_metrics_upkeep(state.metrics.clone(), &shop);
    let limits = ConnectionLimits {
        connections_max: config.http.connections_max,
        header_read_timeout_ms: config.http.header_read_timeout_ms,
        header_bytes_max: config.http.header_bytes_max,
        headers_count_max: config.http.headers_count_max,
        shutdown_grace_ms: config.http.shutdown_grace_ms,
    };
    let listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (is another server using it? set --listen)",
            config.listen
        )
    })?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let app = flashsale_http::router(state);
    let finished = tokio::spawn({
        let shutdown = shutdown.clone();
        let shop = shop.clone();
        async move {
            flashsale_http::serve(listener, app, limits, shutdown).await;
            shop.shutdown().await;
        }
    });
    Ok(RunningApp {
        addr,
        shop,
        shutdown,
        finished,
    })
}

fn filter_config(config: &Config) -> FilterConfig {
    let f = &config.filters;
    FilterConfig {
        buyer_window_ms: f.buyer_window_ms,
        buyer_window_entries_max: f.buyer_window_entries_max,
        buyer_rate_per_sec: f.buyer_rate_per_sec,
        buyer_burst: f.buyer_burst,
        client_rate_per_sec: f.client_rate_per_sec,
        client_burst: f.client_burst,
        sale_rate_per_sec: f.sale_rate_per_sec,
        sale_burst_stock_multiple: f.sale_burst_stock_multiple,
        sale_burst_min: f.sale_burst_min,
        shed_queue_fill_percent_start: f.shed_queue_fill_percent_start,
    }
}

/// Folds histogram buffers into buckets regularly (they grow between scrapes otherwise);
/// stops when the shop shuts down. Holds the shop weakly so it never keeps it (and its
/// files) alive after shutdown.
fn spawn_metrics_upkeep(handle: metrics_exporter_prometheus::PrometheusHandle, shop: &Arc<Shop>) {
    let shop = Arc::downgrade(shop);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(flashsale_http::metrics::UPKEEP_INTERVAL).await;
            match shop.upgrade() {
                Some(shop) if shop.is_ready() => handle.run_upkeep(),
                _ => return,
            }
        }
    });
}

/// Reads a secret kept in the data directory, creating a random one on first start so buy
/// paths stay valid across restarts.
fn load_or_create_secret(path: &Path) -> Result<SecretString> {
    if path.exists() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        return Ok(SecretString::from(text.trim().to_owned()));
    }
    let secret = random_secret();
    write_private(path, &secret).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(SecretString::from(secret))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// 244 random bits from the OS, as 64 hex characters.
pub fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}
