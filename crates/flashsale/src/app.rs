//! Wiring: builds the backends the configuration names, opens the shop, and serves HTTP until
//! told to stop. Used by `main` and, in-process, by the end-to-end tests.

use crate::config::Config;
use anyhow::{Context, Result};
use flashsale_core::tokens::BuyerTokens;
use flashsale_embedded::{InProcessStock, RedbQueue, RedbQueueConfig, SqliteStore};
use flashsale_http::{AppState, ConnectionLimits, RequestLimits};
use flashsale_service::{
    Backends, Clock, FilterConfig, ReaperConfig, Shop, ShopConfig, SystemClock, WriterConfig,
};
use secrecy::{ExposeSecret, SecretString};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// File names inside the data directory.
pub const ORDER_STORE_FILE: &str = "orders.sqlite";
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
pub async fn open_store(data_dir: &Path) -> Result<SqliteStore> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let path = data_dir.join(ORDER_STORE_FILE);
    SqliteStore::open(&path.to_string_lossy())
        .await
        .with_context(|| format!("cannot open the order store {}", path.display()))
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
    let buy_path_secret = match &config.buy_path_secret {
        Some(secret) => secret.clone(),
        None => load_or_create_secret(&config.data_dir.join(BUY_PATH_SECRET_FILE))?,
    };

    let store = open_store(&config.data_dir).await?;
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

    let backends = Backends {
        stock: Arc::new(InProcessStock::new()),
        queue: Arc::new(queue),
        store: Arc::new(store),
        clock,
    };
    let shop_config = ShopConfig {
        buy_path_secret: buy_path_secret.expose_secret().as_bytes().to_vec(),
        writers: WriterConfig {
            count: config.writers.count,
            batch_max: config.writers.batch_max,
            idle_wait_ms: config.writers.idle_wait_ms,
            retry_backoff_ms_max: config.writers.retry_backoff_ms_max,
        },
        reaper: ReaperConfig {
            interval_ms: config.reaper.interval_ms,
            batch_max: config.reaper.batch_max,
        },
        filters: filter_config(config),
        drain_timeout_ms: config.shutdown.drain_timeout_ms,
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
