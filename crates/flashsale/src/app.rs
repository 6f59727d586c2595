//! Wiring: builds the backends the configuration names, opens the shop, and serves HTTP until
//! told to stop. Used by `main` and, in-process, by the end-to-end tests.

use crate::config::{Config, Deployment};
use anyhow::{Context, Result};
use flashsale_core::tokens::BuyerTokens;
use flashsale_embedded::{InProcessLine, InProcessStock, RedbQueue, SqliteStore};
use flashsale_http::AppState;
use flashsale_nats::{JetStreamQueue, JetStreamQueueConfig};
use flashsale_postgres::PgStore;
use flashsale_redis::{LeaseConfig, RedisLine, RedisStock, RedisStockConfig};
use flashsale_service::ports::redact_password;
use flashsale_service::{Backends, Clock, Design, Shop, ShopConfig, SystemClock};
use secrecy::{ExposeSecret, SecretString};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// File names inside the data directory.
pub const QUEUE_FILE: &str = "queue.redb";
/// The waiting lines' log, in the data directory.
pub const LINE_FILE: &str = "line.log";
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
            let store = PgStore::connect_with(&postgres_url, config.postgres.clone())
                .await
                .context("order store (backends.orders)")?;
            store.close().await;
            Ok(redact_password(&postgres_url))
        }
    }
}

/// The stock ledger, queue and order store the configuration names. A backend that cannot be
/// reached is an error naming it (`backends.*`) and why.
async fn open_backends(config: &Config, clock: Arc<dyn Clock>) -> Result<Backends> {
    match config.deployment()? {
        Deployment::Embedded { orders_file } => {
            let store = open_sqlite_store(&orders_file).await?;
            let queue_path = config.data_dir.join(QUEUE_FILE);
            let queue = RedbQueue::open(&queue_path, config.queue.clone()).with_context(|| {
                format!("cannot open the durable queue {}", queue_path.display())
            })?;
            let line_path = config.data_dir.join(LINE_FILE);
            let line = InProcessLine::open(&line_path).with_context(|| {
                format!("cannot open the waiting lines' log {}", line_path.display())
            })?;
            Ok(Backends {
                stock: Arc::new(InProcessStock::new()),
                queue: Arc::new(queue),
                store: Arc::new(store),
                line: Arc::new(line),
                clock,
            })
        }
        Deployment::Shared {
            redis_url,
            nats_url,
            postgres_url,
        } => {
            let reservations = &config.reservations;
            let stock = RedisStock::connect(
                &redis_url,
                RedisStockConfig {
                    // Leases belong to the batched design; the classic one takes every unit
                    // from the sale's counter. The file states them with the design.
                    lease: (reservations.design == Design::Batched).then_some(LeaseConfig {
                        units_max: reservations.lease_units_max.get(),
                        ttl_ms: reservations.lease_ttl_ms.get(),
                    }),
                    ..config.redis.clone()
                },
            )
            .await
            .context("stock backend (backends.stock)")?;
            let queue = JetStreamQueue::connect(
                &nats_url,
                JetStreamQueueConfig {
                    // Every queue's capacity and ack deadline are the `[queue]` section's.
                    capacity_reservations: config.queue.capacity_reservations,
                    ack_deadline_ms: config.queue.ack_deadline_ms,
                    ..config.nats.clone()
                },
            )
            .await
            .context("queue backend (backends.queue)")?;
            let store = PgStore::connect_with(&postgres_url, config.postgres.clone())
                .await
                .context("order store (backends.orders)")?;
            // The lines live beside the stock, under the same key prefix.
            let line = RedisLine::connect(&redis_url, config.redis.clone())
                .await
                .context("waiting lines (backends.stock's Redis)")?;
            Ok(Backends {
                stock: Arc::new(stock),
                queue: Arc::new(queue),
                store: Arc::new(store),
                line: Arc::new(line),
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
    let cluster = matches!(deployment, Deployment::Shared { .. }).then(|| config.cluster.clone());
    let backends = open_backends(config, clock).await?;
    let shop_config = ShopConfig {
        buy_path_secret: buy_path_secret.expose_secret().as_bytes().to_vec(),
        reservations: config.reservations.clone(),
        writers: config.writers.clone(),
        reaper: config.reaper.clone(),
        filters: config.filters.clone(),
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
        config.http.clone(),
        config.filters.status_cache_ms,
    );
    spawn_metrics_upkeep(state.metrics.clone(), &shop);
    let limits = config.http.clone();
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
