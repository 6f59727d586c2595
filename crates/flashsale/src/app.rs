//! Wiring: builds the backends the configuration names, opens the shop, and serves HTTP until
//! told to stop. Used by `main` and, in-process, by the end-to-end tests.

use crate::config::{Config, Deployment};
use anyhow::{Context, Result};
use flashsale_core::tokens::BuyerTokens;
use flashsale_embedded::{
    InProcessLine, InProcessStock, LogQueue, QueueEngine, RedbQueue, SqliteStore,
};
use flashsale_http::AppState;
use flashsale_nats::{JetStreamQueue, JetStreamQueueConfig};
use flashsale_postgres::PgStore;
use flashsale_redis::{LeaseConfig, RedisLine, RedisStock, RedisStockConfig};
use flashsale_service::ports::redact_password;
use flashsale_service::{
    Backends, Clock, Design, Enqueued, ReservationQueue, Shop, ShopConfig, SystemClock,
};
use secrecy::{ExposeSecret, SecretString};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// File names inside the data directory.
/// The reservation log's directory (`queue.engine = "log"`, the default).
pub const QUEUE_DIR: &str = "queue";
/// The redb queue's file (`queue.engine = "redb"`); imported into the log at start otherwise.
pub const QUEUE_FILE: &str = "queue.redb";
/// What an imported redb queue file is renamed to.
pub const QUEUE_FILE_IMPORTED: &str = "queue.redb.imported";
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

/// The embedded default's durable queue, on the engine `[queue]` names. With the log (the
/// default), a `queue.redb` the engine before it left in the data directory is imported first:
/// its reservations are appended to the log (durably; an import a crash interrupts is done
/// again, and a batch already in the log is not stored twice), then the file is renamed
/// `queue.redb.imported`.
pub async fn open_embedded_queue(config: &Config) -> Result<Arc<dyn ReservationQueue>> {
    let redb_path = config.data_dir.join(QUEUE_FILE);
    if config.queue.engine == QueueEngine::Redb {
        let queue = RedbQueue::open(&redb_path, config.queue.clone())
            .with_context(|| format!("cannot open the durable queue {}", redb_path.display()))?;
        return Ok(Arc::new(queue));
    }
    let dir = config.data_dir.join(QUEUE_DIR);
    let queue = LogQueue::open(&dir, config.queue.clone())
        .with_context(|| format!("cannot open the durable queue {}", dir.display()))?;
    if redb_path.exists() {
        import_redb_queue(&redb_path, &queue, config).await?;
    }
    Ok(Arc::new(queue))
}

async fn import_redb_queue(path: &Path, log: &LogQueue, config: &Config) -> Result<()> {
    let context = || {
        format!(
            "cannot import the redb queue {} into the reservation log (to drain it with the \
             engine that wrote it instead, set queue.engine = \"redb\" until its depth is 0)",
            path.display()
        )
    };
    let old = RedbQueue::open(path, config.queue.clone()).with_context(context)?;
    let queued = old.all_queued().await.with_context(context)?;
    // Whole batches, oldest first: a batch is durable all or none in either engine.
    let mut batches: Vec<(flashsale_core::BatchId, Vec<flashsale_core::Reservation>)> = Vec::new();
    let mut slot_of = std::collections::HashMap::new();
    for q in &queued {
        let slot = *slot_of.entry(q.batch).or_insert_with(|| {
            batches.push((q.batch, Vec::new()));
            batches.len() - 1
        });
        batches[slot].1.push(q.reservation.clone());
    }
    for (batch, reservations) in batches {
        match log
            .enqueue(batch, reservations)
            .await
            .with_context(context)?
        {
            Enqueued::Durable => {}
            Enqueued::Full => anyhow::bail!(
                "{}: it holds {} reservations, more than queue.capacity_reservations ({})",
                context(),
                queued.len(),
                config.queue.capacity_reservations
            ),
        }
    }
    drop(old);
    let renamed = path.with_file_name(QUEUE_FILE_IMPORTED);
    std::fs::rename(path, &renamed).with_context(context)?;
    std::fs::File::open(&config.data_dir)
        .and_then(|dir| dir.sync_all())
        .with_context(context)?;
    tracing::info!(
        reservations = queued.len(),
        from = %path.display(),
        renamed = %renamed.display(),
        "imported the redb queue into the reservation log"
    );
    Ok(())
}

/// The stock ledger, queue and order store the configuration names. A backend that cannot be
/// reached is an error naming it (`backends.*`) and why.
async fn open_backends(config: &Config, clock: Arc<dyn Clock>) -> Result<Backends> {
    match config.deployment()? {
        Deployment::Embedded { orders_file } => {
            let store = open_sqlite_store(&orders_file).await?;
            let queue = open_embedded_queue(config).await?;
            let line_path = config.data_dir.join(LINE_FILE);
            let line = InProcessLine::open(&line_path).with_context(|| {
                format!("cannot open the waiting lines' log {}", line_path.display())
            })?;
            Ok(Backends {
                stock: Arc::new(InProcessStock::new()),
                queue,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FlagOverrides;
    use flashsale_core::{BatchId, BuyerId, OrderId, Reservation, SaleId};
    use time::macros::datetime;

    fn config_in(dir: &Path) -> Config {
        let flags = FlagOverrides {
            data_dir: Some(dir.to_path_buf()),
            ..FlagOverrides::default()
        };
        Config::load(None, Vec::new(), &flags).expect("config")
    }

    fn reservation(n: u128) -> Reservation {
        Reservation::new(
            OrderId(uuid::Uuid::from_u128(n)),
            SaleId(uuid::Uuid::from_u128(9)),
            BuyerId::parse(&format!("buyer-{n}")).expect("buyer"),
            datetime!(2030-01-01 12:00 UTC),
            600,
        )
    }

    /// A data directory the redb engine left reservations in: the log takes them over once
    /// (whole batches, nothing twice, also when the import is run again after a crash), and the
    /// file is set aside.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_redb_queue_left_in_the_data_dir_is_imported_into_the_log_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = config_in(dir.path());
        let redb_path = dir.path().join(QUEUE_FILE);
        let batch = BatchId(uuid::Uuid::from_u128(1 << 100));
        let alone = reservation(1);
        {
            let old = RedbQueue::open(&redb_path, config.queue.clone()).expect("redb");
            old.enqueue(batch, vec![reservation(2), reservation(3)])
                .await
                .expect("enqueue");
            old.enqueue(BatchId::of_order(alone.order_id), vec![alone.clone()])
                .await
                .expect("enqueue");
        }
        // A crash after the import's appends and before the rename: the first run's work is
        // in the log already, and the import runs again.
        {
            let log =
                LogQueue::open(dir.path().join(QUEUE_DIR), config.queue.clone()).expect("log");
            log.enqueue(batch, vec![reservation(2), reservation(3)])
                .await
                .expect("enqueue");
        }
        let queue = open_embedded_queue(&config).await.expect("open");
        let mut held: Vec<(BatchId, u128)> = queue
            .all_queued()
            .await
            .expect("all")
            .into_iter()
            .map(|q| (q.batch, q.reservation.order_id.0.as_u128()))
            .collect();
        held.sort();
        let mut expected = vec![
            (batch, 2),
            (batch, 3),
            (BatchId::of_order(alone.order_id), 1),
        ];
        expected.sort();
        assert_eq!(held, expected);
        assert!(!redb_path.exists());
        assert!(dir.path().join(QUEUE_FILE_IMPORTED).exists());
        drop(queue);
        let again = open_embedded_queue(&config).await.expect("reopen");
        assert_eq!(again.depth(), 3, "imported once");
    }
}
