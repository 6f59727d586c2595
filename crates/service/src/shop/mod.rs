//! The sale service of one node: `Shop`, the one public face of the buy flow, orders and
//! payment, admin changes, the reaper, recovery and the cluster sync, each a module of its own.
//!
//! `Shop` composes the ports. It holds each sale's definition in memory (the status endpoint
//! and the buy path never read the store) and keeps the stock ledger in step with admin edits.
//!
//! The modules use each other in one direction only: `buy` → `batch` → `orders`; `cluster` →
//! `orders` and `recovery`; `admin` → `recovery`; `table` uses none of them. The types several
//! share (`ServiceError`, `BuyOutcome`) live here.

mod admin;
mod batch;
mod buy;
mod cluster;
mod line;
mod line_log;
mod orders;
mod reaper;
mod recovery;
mod table;

pub use crate::config::{ClusterConfig, Design, ReaperConfig, ReservationConfig, ShopConfig};
use crate::filters::Limiters;
use crate::layers::Counters;
use crate::ports::{
    BackendError, Clock, LineId, OrderStore, ReservationQueue, StockLedger, WaitingLine,
};
use crate::ttl_cache::TtlCache;
use crate::writers::{GiveWay, WriterPool};
pub use admin::{AdminError, SaleCounters, SaleView};
use batch::{BuyRequest, batcher_waiting_max, run_batcher};
use buy::WindowCache;
use cluster::{ClusterState, run_sync};
use flashsale_core::pow::ChallengeSigner;
use flashsale_core::tokens::{BuyPathSigner, LineSigner};
use flashsale_core::{OrderId, Phase, Sale, SaleId, Timestamp};
pub use line::{
    CHALLENGE_EXPIRES_SECS, JoinSolution, LineChallenge, LineMe, LineOutcome, LineStatus,
};
pub use line_log::{
    LOG_PAGE_DEFAULT, LOG_PAGE_RECORDS_MAX, LogHeader, LogOutcome, LogPart, LogRecords, Receipt,
};
pub use orders::{OrderView, OrderViewStatus, PayAnswer};
use reaper::run_reaper;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use table::SaleTable;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The ports a shop runs on.
#[derive(Clone)]
pub struct Backends {
    pub stock: Arc<dyn StockLedger>,
    pub queue: Arc<dyn ReservationQueue>,
    pub store: Arc<dyn OrderStore>,
    /// The waiting lines of the sales that have one.
    pub line: Arc<dyn WaitingLine>,
    pub clock: Arc<dyn Clock>,
}

/// Something broke in the service (never a business answer).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("state is inconsistent: {0}")]
    Corrupt(String),
    /// A bug: a task panicked. What it held is as after a crash (see RELIABILITY.md).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The answer to a buy. Business answers, not errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuyOutcome {
    /// The reservation is durable; `replay` when this request was answered before.
    Accepted {
        order_id: OrderId,
        replay: bool,
    },
    /// No such sale, or the buy-path token is wrong (the two look the same from outside).
    UnknownBuyPath,
    NotLive,
    SoldOut,
    LimitReached,
    /// The same request is being handled right now; retry shortly.
    InProgress,
    /// The durable queue is full or filling (load shedding), or could not take the
    /// reservation; nothing was taken.
    Overloaded,
    /// Over a rate limit (client, buyer or sale); retry after this many seconds.
    RateLimited {
        retry_after_secs: u32,
    },
    /// The sale has a line and this buy carries no valid admission for this buyer (none, or
    /// ended, or another buyer's).
    NotYourTurn,
}

/// What the status endpoint shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleStatus {
    pub sale_id: SaleId,
    pub phase: Phase,
    pub server_time: Timestamp,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    /// The buy-path token; only while live, and never for a sale with a line (its buyers get
    /// their own, the admission ticket, from `line/me`).
    pub buy_token: Option<String>,
    /// The sale's line, if it has one.
    pub line: Option<LineStatus>,
}

/// The sale service of one node.
pub struct Shop {
    backends: Backends,
    config: ShopConfig,
    /// The sales, their sold-out flags and the orders accepted here.
    table: SaleTable,
    // Serializes admin changes so the store, the ledger and the slot move together.
    admin: tokio::sync::Mutex<()>,
    writers: WriterPool,
    shutdown: CancellationToken,
    ready: AtomicBool,
    /// Raised while a reaper sweep may have expired orders without returning their units;
    /// the next sweep then looks for such orders first. Raised at start for the same reason.
    rescan_returns: AtomicBool,
    /// The per-buyer window cache; `None` when its window is 0.
    window: Option<WindowCache>,
    limiters: Limiters,
    /// What each layer and outcome counted, per node (each sale's own counts are in its slot).
    counters: Counters,
    /// Where buys wait for their batch (`Design::Batched`); `None` in the classic design.
    batcher: Option<mpsc::Sender<BuyRequest>>,
    /// What only a scaled-out node keeps; `None` on an embedded, single-node shop.
    cluster: Option<ClusterState>,
    /// The lines' seeds and admission tickets.
    line_signer: LineSigner,
    /// The lines' proof-of-work challenges.
    challenge_signer: ChallengeSigner,
    /// What this node knows of line members (positions fixed once drawn, receipts once
    /// joined), so a poll asks the line nothing: one entry a member, one lookup a poll.
    members: TtlCache<(SaleId, LineId), line::Known>,
}

impl Shop {
    /// Opens the shop: loads every sale and rebuilds the stock ledger from durable state only
    /// (orders in the store plus reservations still in the queue), then starts the writers and
    /// the reaper. Must be called inside a tokio runtime.
    pub async fn open(backends: Backends, config: ShopConfig) -> Result<Arc<Self>, ServiceError> {
        let signer = BuyPathSigner::new(&config.buy_path_secret);
        let line_signer = LineSigner::new(&config.buy_path_secret);
        // The same secret, under its own domain (`pow`'s MAC input starts with its own tag).
        let challenge_signer = ChallengeSigner::new(&config.buy_path_secret);
        let writers = WriterPool::new(
            backends.queue.clone(),
            backends.store.clone(),
            backends.clock.clone(),
            config.writers.clone(),
            GiveWay {
                heat: Arc::default(),
                // Half of where shedding starts: pausing writers never makes the shop shed.
                queue_fill_percent_max: config.filters.shed_queue_fill_percent_start / 2,
            },
        );
        let window = (config.filters.buyer_window_ms > 0).then(|| {
            TtlCache::new(
                Some(Duration::from_millis(config.filters.buyer_window_ms)),
                config.filters.buyer_window_entries_max,
            )
        });
        let reservations = config.reservations.clone();
        let (batcher, gathered) = match reservations.design {
            Design::Batched => {
                let (sender, receiver) = mpsc::channel(batcher_waiting_max(&reservations));
                (Some(sender), Some(receiver))
            }
            Design::Classic => (None, None),
        };
        let shop = Arc::new(Self {
            batcher,
            cluster: config.cluster.clone().map(ClusterState::new),
            window,
            limiters: Limiters::new(&config.filters),
            counters: Counters::register(),
            table: SaleTable::new(signer, config.filters.clone()),
            writers,
            backends,
            config,
            admin: tokio::sync::Mutex::new(()),
            shutdown: CancellationToken::new(),
            ready: AtomicBool::new(false),
            rescan_returns: AtomicBool::new(true),
            line_signer,
            challenge_signer,
            members: TtlCache::new(None, line::LINE_POSITIONS_CACHED_MAX as u64),
        });
        shop.recover().await?;
        if let Some(gathered) = gathered {
            tokio::spawn(run_batcher(Arc::downgrade(&shop), gathered, reservations));
        }
        shop.writers.set_count(shop.config.writers.count).await;
        tokio::spawn(run_reaper(shop.clone()));
        if let Some(cluster) = &shop.cluster {
            tokio::spawn(run_sync(Arc::downgrade(&shop), cluster.sync_interval()));
        }
        shop.ready.store(true, Ordering::Release);
        Ok(shop)
    }

    pub fn now(&self) -> Timestamp {
        self.backends.clock.now()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.shutdown.is_cancelled()
    }

    /// The sale's definition, for the sale page.
    pub fn sale(&self, id: SaleId) -> Option<Sale> {
        self.table.get(id).map(|slot| slot.sale.clone())
    }

    /// The status endpoint's answer; reads memory only.
    pub fn status(&self, id: SaleId) -> Option<SaleStatus> {
        let slot = self.table.get(id)?;
        let now = self.now();
        let phase = slot.sale.phase(now, !slot.is_sold_out());
        Some(SaleStatus {
            sale_id: id,
            phase,
            server_time: now,
            starts_at: slot.sale.spec.starts_at,
            ends_at: slot.sale.spec.ends_at,
            buy_token: (phase == Phase::Live && slot.sale.spec.waiting_room.is_none())
                .then(|| slot.buy_token.clone()),
            line: self.line_status(&slot, now),
        })
    }

    // ----- shutdown -----

    /// Graceful shutdown: stop the reaper, let the writers drain the queue (bounded by the
    /// drain timeout), then stop them.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        // The server has stopped taking requests: what this node holds beyond its reservations
        // goes back for the other nodes now, not when its leases expire.
        for sale in self.table.ids() {
            if let Err(error) = self.backends.stock.release_lease(sale).await {
                tracing::warn!(sale_id = %sale, %error, "could not give back a stock lease at shutdown; it comes back when it expires");
            }
        }
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.config.drain_timeout_ms);
        if self.writers.count() == 0 {
            self.writers.set_count(1).await;
        }
        while self.backends.queue.depth() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.backends.queue.depth();
        if left > 0 {
            tracing::warn!(
                left,
                "shutting down with reservations still queued; they are durable and will be written at the next start"
            );
        }
        self.writers.stop_all().await;
    }
}
