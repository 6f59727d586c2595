//! One simulated run: the world (models, fault plan, the live node), the driver that steps it
//! from the seed, and the two phases.

use crate::check;
use crate::clock::SimClock;
use crate::faults::{FaultRates, Faults, FaultyQueue, FaultyStock, FaultyStore};
use crate::queue::SimQueue;
use crate::rng::SharedRng;
use crate::stock::{ReserveMode, SimStock};
use crate::store::{ExpiryMode, SimStore};
use crate::trace::Trace;
use flashsale_core::tokens::BuyPathSigner;
use flashsale_core::{
    BuyerId, IdempotencyKey, OrderId, OrderStatus, PaymentId, Sale, SaleId, SaleSpec, Timestamp,
};
use flashsale_service::{
    Backends, BuyOutcome, Clock, Design, FilterConfig, OrderStore, PayAnswer, ReaperConfig,
    ReservationConfig, ReservationQueue, Shop, ShopConfig, WriterConfig,
};
use std::collections::{BTreeMap, BTreeSet};
use std::num::{NonZeroU64, NonZeroUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Which models the run uses: the correct ones, or one of the deliberately broken canaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Correct,
    /// The stock ledger checks, yields, then takes: two buys can take the last unit.
    CheckThenActReserve,
    /// The store expires orders past their deadline without checking they are unpaid.
    BlindExpiry,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Correct => "correct",
            Variant::CheckThenActReserve => "check_then_act_reserve",
            Variant::BlindExpiry => "blind_expiry",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Variant::Correct,
            Variant::CheckThenActReserve,
            Variant::BlindExpiry,
        ]
        .into_iter()
        .find(|v| v.name() == text)
    }
}

/// What a run did, summed over seeds by the soak.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub steps: u64,
    pub buys: u64,
    pub accepted: u64,
    pub paid: u64,
    pub expired: u64,
    pub restarts: u64,
    pub faults_injected: u64,
    /// Units held by no live order after the queue drained and the reaper ran, before the
    /// last restart rebuilt the ledger (indeterminate failures strand units until a rebuild).
    pub stranded_until_rebuild: u64,
    pub simulated_ms: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.steps += other.steps;
        self.buys += other.buys;
        self.accepted += other.accepted;
        self.paid += other.paid;
        self.expired += other.expired;
        self.restarts += other.restarts;
        self.faults_injected += other.faults_injected;
        self.stranded_until_rebuild += other.stranded_until_rebuild;
        self.simulated_ms += other.simulated_ms;
    }
}

/// The result of one seed.
#[derive(Debug)]
pub struct SeedReport {
    pub seed: u64,
    pub variant: Variant,
    /// The first invariant violation, if any.
    pub violation: Option<String>,
    pub trace: Vec<String>,
    pub stats: Stats,
}

/// Trace lines shown with a failure (the whole trace comes with a replay).
const FAILURE_TRACE_LINES: usize = 80;

impl SeedReport {
    /// What a failing seed prints: the seed, the violation, how to replay it, and the end of
    /// its trace.
    pub fn failure_message(&self) -> String {
        let violation = self.violation.as_deref().unwrap_or("none");
        let variant = match self.variant {
            Variant::Correct => String::new(),
            other => format!("FLASHSALE_SIM_VARIANT={} ", other.name()),
        };
        let skip = self.trace.len().saturating_sub(FAILURE_TRACE_LINES);
        let tail = self.trace[skip..].join("\n");
        format!(
            "simulation seed {seed} ({name}) violated an invariant: {violation}\n\
             replay: {variant}FLASHSALE_SIM_SEED={seed} cargo test -p flashsale-sim --test sim -- replay --exact --nocapture\n\
             last {shown} of {total} trace lines:\n{tail}",
            seed = self.seed,
            name = self.variant.name(),
            shown = self.trace.len() - skip,
            total = self.trace.len(),
        )
    }
}

/// Runs one seed to the end (or to its first violation) on a fresh single-threaded runtime
/// with a paused clock: the same seed gives the same trace.
pub fn run_seed(seed: u64, variant: Variant) -> SeedReport {
    let trace = Trace::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build();
    let (violation, stats) = match runtime {
        Ok(runtime) => {
            let outcome = runtime.block_on(simulate(seed, variant, trace.clone()));
            // Dropping the runtime drops every task still parked (dead nodes' calls).
            drop(runtime);
            outcome
        }
        Err(error) => (
            Some(format!("could not build a runtime: {error}")),
            Stats::default(),
        ),
    };
    SeedReport {
        seed,
        variant,
        violation,
        trace: trace.lines(),
        stats,
    }
}

/// What the clients were told, kept by the driver's tasks.
#[derive(Debug, Default)]
pub(crate) struct History {
    /// Order ids of every buy request sent.
    pub requested: BTreeSet<OrderId>,
    /// Every order id answered `Accepted`, with its buyer.
    pub accepted: BTreeMap<OrderId, BuyerId>,
    /// Every order answered `Paid`, with the payment it was paid by.
    pub paid: BTreeMap<OrderId, PaymentId>,
    /// Wrong answers the tasks saw (checked with the invariants).
    pub wrong_answers: Vec<String>,
    pub buys: u64,
}

/// The node running now: its shop, its (volatile) stock ledger and the tasks it serves.
struct Node {
    id: u64,
    shop: Arc<Shop>,
    stock: Arc<SimStock>,
    queue: Arc<dyn ReservationQueue>,
    store: Arc<dyn OrderStore>,
    tasks: Vec<JoinHandle<()>>,
}

pub(crate) struct World {
    pub rng: SharedRng,
    pub trace: Trace,
    pub clock: Arc<SimClock>,
    pub queue: Arc<SimQueue>,
    pub store: Arc<SimStore>,
    pub faults: Arc<Faults>,
    pub sale: Sale,
    pub history: Arc<Mutex<History>>,
    reserve_mode: ReserveMode,
    config: ShopConfig,
    token: String,
    buyers: Vec<BuyerId>,
    keys: Vec<IdempotencyKey>,
    payments: Vec<PaymentId>,
    node: Option<Node>,
    next_node: u64,
    restarts: u64,
    steps: u64,
}

impl World {
    pub fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live node's stock ledger (the checker reads it).
    pub fn live_stock(&self) -> Option<&Arc<SimStock>> {
        self.node.as_ref().map(|node| &node.stock)
    }

    pub fn live_shop(&self) -> Option<&Arc<Shop>> {
        self.node.as_ref().map(|node| &node.shop)
    }
}

/// Most restarts in one seed's safety phase: enough to cross several, few enough to sell.
const RESTARTS_MAX: u64 = 3;
/// Attempts to open the shop after a crash before giving up (faults may fail an attempt).
const OPEN_ATTEMPTS_MAX: u32 = 40;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn short(order: OrderId) -> String {
    order.0.simple().to_string()[..8].to_owned()
}

fn ids<T>(prefix: &str, n: u64, parse: impl Fn(&str) -> Option<T>) -> Vec<T> {
    (0..n)
        .filter_map(|i| parse(&format!("{prefix}{i}")))
        .collect()
}

/// The wall time every run starts near (any fixed instant will do).
const EPOCH_UNIX_SECS: i64 = 1_893_456_000;

async fn simulate(seed: u64, variant: Variant, trace: Trace) -> (Option<String>, Stats) {
    let rng = SharedRng::new(seed);
    let started = tokio::time::Instant::now();
    let mut world = match World::new(seed, variant, rng, trace.clone()) {
        Ok(world) => world,
        Err(error) => return (Some(error), Stats::default()),
    };
    // The sale exists before the first start, as an admin would have made it. Written straight
    // into the store: `Shop::create_sale` draws a random (UUID v7) id, and a run must not.
    let created = world.store.create_sale(&world.sale).await;
    let mut violation = match created {
        Ok(()) => world.start_node().await.err(),
        Err(error) => Some(format!("creating the sale: {error}")),
    };
    if violation.is_none() {
        violation = world.safety_phase().await.err();
    }
    let mut stranded = 0;
    if violation.is_none() {
        match world.convergence_phase().await {
            Ok(units) => stranded = units,
            Err(error) => violation = Some(error),
        }
    }
    if let Some(violation) = &violation {
        trace.push(|| format!("VIOLATION: {violation}"));
    }
    let history = world.history();
    let orders = world.store.orders();
    let stats = Stats {
        steps: world.steps,
        buys: history.buys,
        accepted: history.accepted.len() as u64,
        paid: history.paid.len() as u64,
        expired: orders
            .iter()
            .filter(|o| o.status == OrderStatus::Expired)
            .count() as u64,
        restarts: world.restarts,
        faults_injected: world.faults.injected(),
        stranded_until_rebuild: stranded,
        simulated_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    drop(history);
    (violation, stats)
}

impl World {
    fn new(seed: u64, variant: Variant, rng: SharedRng, trace: Trace) -> Result<Self, String> {
        let epoch = Timestamp::from_unix_timestamp(EPOCH_UNIX_SECS).map_err(|e| e.to_string())?;
        let starts_at = epoch + time::Duration::seconds(10);
        let spec = SaleSpec {
            name: "simulated sale".to_owned(),
            price_cents: 100,
            stock: rng.between(1, 6) as u32,
            starts_at,
            ends_at: starts_at + time::Duration::seconds(rng.between(10, 60) as i64),
            per_buyer_limit: rng.between(1, 3) as u32,
            payment_window_secs: rng.between(5, 20) as u32,
            waiting_room: None,
        };
        let sale_id = SaleId(uuid::Uuid::from_u64_pair(0x51a1_0000, seed));
        let sale = Sale::new(sale_id, spec).map_err(|e| format!("bad simulated sale: {e}"))?;
        // The clock starts up to 5 s before the start, so early buys see "not live".
        let clock = Arc::new(SimClock::new(
            starts_at - time::Duration::milliseconds(rng.between(0, 5000) as i64),
        ));
        let stock = u64::from(sale.spec.stock);
        let queue = Arc::new(SimQueue::new(
            clock.clone(),
            rng.between(1, stock * 3 + 2) as usize,
            time::Duration::milliseconds(rng.between(200, 5000) as i64),
        ));
        let store = Arc::new(SimStore::new(match variant {
            Variant::BlindExpiry => ExpiryMode::Blind,
            _ => ExpiryMode::CompareAndSet,
        }));
        let draw_rates = || {
            if rng.chance(25) {
                FaultRates::default()
            } else {
                FaultRates {
                    delay_percent: rng.between(0, 40) as u32,
                    refuse_percent: rng.between(0, 10) as u32,
                    lost_request_percent: rng.between(0, 8) as u32,
                    lost_reply_percent: rng.between(0, 8) as u32,
                }
            }
        };
        let rates = [draw_rates(), draw_rates(), draw_rates()];
        let faults = Arc::new(Faults::new(
            rng.clone(),
            trace.clone(),
            rates,
            rng.between(1, 200),
            rng.between(50, 1000),
        ));
        let config = ShopConfig {
            buy_path_secret: b"simulation buy-path secret".to_vec(),
            // Both designs, drawn per seed; batched with small, varied limits so batches of
            // several buys, and batches running side by side, both happen.
            reservations: if rng.chance(50) {
                ReservationConfig {
                    design: Design::Classic,
                    ..ReservationConfig::default()
                }
            } else {
                ReservationConfig {
                    design: Design::Batched,
                    batch_max: NonZeroUsize::new(rng.between(1, 6) as usize).expect("from 1"),
                    batches_in_flight_max: NonZeroUsize::new(rng.between(1, 3) as usize)
                        .expect("from 1"),
                    ..ReservationConfig::default()
                }
            },
            writers: WriterConfig {
                count: rng.between(0, 2) as usize,
                batch_max: NonZeroUsize::new(rng.between(1, 4) as usize).expect("from 1"),
                idle_wait_ms: NonZeroU64::new(rng.between(10, 100)).expect("from 10"),
                linger_ms: rng.between(0, 50),
                retry_backoff_ms_max: 200,
                // Real time: would make the run depend on the host (the simulation) or slow the
                // drain the test waits for.
                give_way_ms: 0,
            },
            reaper: ReaperConfig {
                interval_ms: NonZeroU64::new(rng.between(100, 2000)).expect("from 100"),
                batch_max: NonZeroUsize::new(rng.between(1, 3) as usize).expect("from 1"),
            },
            // Every layer that reads the real clock (the buyer window, governor's limiters) is
            // off: the simulation must not depend on how fast the host runs.
            filters: FilterConfig {
                buyer_window_ms: 0,
                buyer_rate_per_sec: 0,
                client_rate_per_sec: 0,
                sale_rate_per_sec: 0,
                shed_queue_fill_percent_start: rng.between(50, 100) as u32,
                ..FilterConfig::default()
            },
            drain_timeout_ms: 0,
            cluster: None,
        };
        let token = BuyPathSigner::new(&config.buy_path_secret).token(sale.id, sale.spec.starts_at);
        let buyers = ids("buyer", rng.between(2, 8), |s| BuyerId::parse(s).ok());
        let keys = ids("key", rng.between(1, 3), |s| IdempotencyKey::parse(s).ok());
        let payments = ids("pay", 2, |s| PaymentId::parse(s).ok());
        trace.push(|| {
            format!(
                "seed {seed} variant {}: stock {} limit {} window {}s sale {}..{} buyers {} keys {} \
                 queue capacity {} reservations {:?} writers {:?} reaper {:?} faults {rates:?}",
                variant.name(),
                sale.spec.stock,
                sale.spec.per_buyer_limit,
                sale.spec.payment_window_secs,
                sale.spec.starts_at.unix_timestamp(),
                sale.spec.ends_at.unix_timestamp(),
                buyers.len(),
                keys.len(),
                queue.capacity(),
                config.reservations,
                config.writers,
                config.reaper,
            )
        });
        Ok(Self {
            rng,
            trace,
            clock,
            queue,
            store,
            faults,
            sale,
            history: Arc::default(),
            reserve_mode: match variant {
                Variant::CheckThenActReserve => ReserveMode::CheckThenAct,
                _ => ReserveMode::Atomic,
            },
            config,
            token,
            buyers,
            keys,
            payments,
            node: None,
            next_node: 0,
            restarts: 0,
            steps: 0,
        })
    }

    /// Starts a node on the durable models: a fresh, empty stock ledger (it lived in the dead
    /// process), the queue's deliveries forgotten, then `Shop::open` rebuilds the ledger.
    /// An attempt that a fault fails is a start that failed; the next attempt is a new process.
    async fn start_node(&mut self) -> Result<(), String> {
        let mut last_error = String::new();
        for _ in 0..OPEN_ATTEMPTS_MAX {
            let id = self.next_node;
            self.next_node += 1;
            self.faults.set_alive(id);
            self.queue.reopen();
            let stock = Arc::new(SimStock::new(self.reserve_mode));
            let queue: Arc<dyn ReservationQueue> = Arc::new(FaultyQueue {
                inner: self.queue.clone(),
                faults: self.faults.clone(),
                node: id,
            });
            let store: Arc<dyn OrderStore> = Arc::new(FaultyStore {
                inner: self.store.clone(),
                faults: self.faults.clone(),
                node: id,
            });
            let backends = Backends {
                stock: Arc::new(FaultyStock {
                    inner: stock.clone(),
                    faults: self.faults.clone(),
                    node: id,
                }),
                queue: queue.clone(),
                store: store.clone(),
                // The simulated sales have no line.
                line: Arc::new(flashsale_embedded::InProcessLine::new()),
                clock: self.clock.clone(),
            };
            match Shop::open(backends, self.config.clone()).await {
                Ok(shop) => {
                    self.trace.push(|| format!("node n{id} open"));
                    self.node = Some(Node {
                        id,
                        shop,
                        stock,
                        queue,
                        store,
                        tasks: Vec::new(),
                    });
                    return Ok(());
                }
                Err(error) => {
                    self.trace
                        .push(|| format!("node n{id} failed to open: {error}"));
                    last_error = error.to_string();
                    self.faults.kill_nodes();
                }
            }
        }
        Err(format!(
            "the shop did not open in {OPEN_ATTEMPTS_MAX} attempts; last error: {last_error}"
        ))
    }

    /// A crash: the node's calls in flight never answer, its tasks die with it.
    async fn crash_node(&mut self) {
        self.faults.kill_nodes();
        if let Some(node) = self.node.take() {
            self.trace.push(|| format!("node n{} crashes", node.id));
            for task in node.tasks {
                task.abort();
            }
        }
    }

    fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        if let Some(node) = &mut self.node {
            node.tasks.retain(|t| !t.is_finished());
            node.tasks.push(tokio::spawn(task));
        }
    }

    fn pick<T: Clone>(&self, items: &[T]) -> Option<T> {
        items
            .get(self.rng.below(items.len() as u64) as usize)
            .cloned()
    }

    async fn safety_phase(&mut self) -> Result<(), String> {
        let steps = self.rng.between(40, 150);
        for step in 0..steps {
            self.steps += 1;
            self.step(step).await?;
            for _ in 0..self.rng.between(0, 2) {
                tokio::task::yield_now().await;
            }
            check::safety(self).map_err(|e| format!("after step {step}: {e}"))?;
        }
        Ok(())
    }

    async fn step(&mut self, step: u64) -> Result<(), String> {
        let roll = self.rng.below(100);
        match roll {
            0..30 => self.buy_burst(step),
            30..43 => self.pay(step),
            43..48 => self.reap(step),
            48..52 => self.pay_expiry_race(step),
            52..68 => {
                let wait = self.rng.between(1, 400);
                self.trace.push(|| format!("step {step}: sleep {wait}ms"));
                tokio::time::sleep(ms(wait)).await;
            }
            68..76 => {
                let yields = self.rng.between(1, 5);
                self.trace.push(|| format!("step {step}: yield x{yields}"));
                for _ in 0..yields {
                    tokio::task::yield_now().await;
                }
            }
            76..86 => self.clock_jump(step),
            86..91 => self.set_writers(step),
            91..97 => self.crashing_writer(step),
            _ => {
                if self.restarts < RESTARTS_MAX {
                    self.restarts += 1;
                    self.trace.push(|| format!("step {step}: node restart"));
                    self.crash_node().await;
                    self.start_node().await?;
                }
            }
        }
        Ok(())
    }

    fn buy_burst(&mut self, step: u64) {
        let Some(shop) = self.live_shop().cloned() else {
            return;
        };
        let burst = self.rng.between(1, 4);
        for _ in 0..burst {
            let (Some(buyer), Some(key)) = (self.pick(&self.buyers), self.pick(&self.keys)) else {
                return;
            };
            let sale_id = self.sale.id;
            let expected = OrderId::derive(sale_id, &buyer, &key);
            {
                let mut history = self.history();
                history.requested.insert(expected);
                history.buys += 1;
            }
            self.trace
                .push(|| format!("step {step}: buy {buyer}/{key} ({})", short(expected)));
            let (shop, token) = (shop.clone(), self.token.clone());
            let (history, trace) = (self.history.clone(), self.trace.clone());
            self.spawn(async move {
                let answer = shop.buy(sale_id, &token, &buyer, &key, None).await;
                trace.push(|| format!("  buy {buyer}/{key} -> {answer:?}"));
                if let Ok(BuyOutcome::Accepted { order_id, .. }) = answer {
                    let mut history = history.lock().unwrap_or_else(|e| e.into_inner());
                    if order_id != expected {
                        history.wrong_answers.push(format!(
                            "buy {buyer}/{key} accepted as order {order_id}, expected {expected}"
                        ));
                    }
                    history.accepted.insert(order_id, buyer);
                }
            });
        }
    }

    /// An accepted order (most of the time) or any requested one.
    fn pick_order(&self) -> Option<(OrderId, BuyerId)> {
        let history = self.history();
        let accepted: Vec<(OrderId, BuyerId)> = history
            .accepted
            .iter()
            .map(|(id, buyer)| (*id, buyer.clone()))
            .collect();
        drop(history);
        self.pick(&accepted)
    }

    fn spawn_pay(&mut self, order: OrderId, buyer: BuyerId) {
        let Some(shop) = self.live_shop().cloned() else {
            return;
        };
        let Some(payment) = self.pick(&self.payments) else {
            return;
        };
        let (history, trace) = (self.history.clone(), self.trace.clone());
        self.spawn(async move {
            let answer = shop.pay(&buyer, order, &payment).await;
            trace.push(|| format!("  pay {} by {payment} -> {answer:?}", short(order)));
            if let Ok(PayAnswer::Paid(_)) = answer {
                let mut history = history.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(earlier) = history.paid.get(&order).cloned()
                    && earlier != payment
                {
                    history.wrong_answers.push(format!(
                        "order {order} answered paid by {earlier} and by {payment}"
                    ));
                }
                history.paid.insert(order, payment);
            }
        });
    }

    fn pay(&mut self, step: u64) {
        if let Some((order, buyer)) = self.pick_order() {
            self.trace
                .push(|| format!("step {step}: pay {} for {buyer}", short(order)));
            self.spawn_pay(order, buyer);
        }
    }

    fn spawn_reap(&mut self) {
        let Some(shop) = self.live_shop().cloned() else {
            return;
        };
        let trace = self.trace.clone();
        self.spawn(async move {
            let answer = shop.reap_once().await;
            trace.push(|| format!("  reap -> {answer:?}"));
        });
    }

    fn reap(&mut self, step: u64) {
        self.trace.push(|| format!("step {step}: reap"));
        self.spawn_reap();
    }

    /// The clock steps to just around an order's payment deadline, and a payment and a
    /// reaper sweep race for it.
    fn pay_expiry_race(&mut self, step: u64) {
        let Some((order, buyer)) = self.pick_order() else {
            return;
        };
        let Some(stored) = self.store.orders().into_iter().find(|o| o.id == order) else {
            return;
        };
        let offset = self.rng.between(0, 400) as i64 - 300;
        self.clock
            .jump_forward_to(stored.expires_at + time::Duration::milliseconds(offset));
        self.trace.push(|| {
            format!(
                "step {step}: pay/expiry race on {} at deadline{offset:+}ms",
                short(order)
            )
        });
        if self.rng.chance(50) {
            self.spawn_pay(order, buyer);
            self.spawn_reap();
        } else {
            self.spawn_reap();
            self.spawn_pay(order, buyer);
        }
    }

    fn clock_jump(&mut self, step: u64) {
        let around = |at: Timestamp, rng: &SharedRng| {
            at + time::Duration::milliseconds(rng.between(0, 3000) as i64 - 1500)
        };
        let now = self.clock.now();
        let target = match self.rng.below(5) {
            0 => around(self.sale.spec.starts_at, &self.rng),
            1 => around(self.sale.spec.ends_at, &self.rng),
            2 => match self.pick(&self.store.orders()) {
                Some(order) => around(order.expires_at, &self.rng),
                None => now,
            },
            3 => now + time::Duration::milliseconds(self.rng.between(1, 10_000) as i64),
            // A small step back, as an NTP correction would make.
            _ => now - time::Duration::milliseconds(self.rng.between(1, 2000) as i64),
        };
        let by = target - now;
        // Steps back are kept small, as an NTP correction would make them.
        if by > time::Duration::seconds(-2) {
            self.clock.jump(by);
            self.trace
                .push(|| format!("step {step}: clock jumps {}ms", by.whole_milliseconds()));
        }
    }

    fn set_writers(&mut self, step: u64) {
        let Some(shop) = self.live_shop().cloned() else {
            return;
        };
        let count = self.rng.between(0, 3) as usize;
        self.trace
            .push(|| format!("step {step}: writers -> {count}"));
        self.spawn(async move { shop.set_writer_count(count).await });
    }

    /// A writer that takes a batch (and maybe writes it) and dies before the ack: the batch
    /// comes back after the ack deadline.
    fn crashing_writer(&mut self, step: u64) {
        let Some(node) = &self.node else {
            return;
        };
        let (queue, store) = (node.queue.clone(), node.store.clone());
        let max = self.rng.between(1, 3) as usize;
        let writes = self.rng.chance(50);
        let trace = self.trace.clone();
        self.trace
            .push(|| format!("step {step}: writer takes {max}, writes: {writes}, dies"));
        self.spawn(async move {
            let Ok(batch) = queue.take_batch(max, ms(10)).await else {
                return;
            };
            if writes && !batch.is_empty() {
                let written = store.insert_orders(&batch).await;
                trace.push(|| format!("  dying writer wrote {} -> {written:?}", batch.len()));
            }
        });
    }

    /// Faults off: every answer comes, the queue drains, the reaper expires what is due, and
    /// a last restart rebuilds the ledger. Returns the units stranded before that rebuild.
    async fn convergence_phase(&mut self) -> Result<u64, String> {
        self.faults.disable();
        self.trace.push(|| "convergence: faults off".to_owned());
        let tasks = self
            .node
            .as_mut()
            .map(|node| std::mem::take(&mut node.tasks))
            .unwrap_or_default();
        for task in tasks {
            if tokio::time::timeout(Duration::from_secs(600), task)
                .await
                .is_err()
            {
                return Err("a request never finished once the faults stopped".to_owned());
            }
        }
        check::safety(self).map_err(|e| format!("after the last answers: {e}"))?;
        let shop = self.live_shop().cloned().ok_or("no node is running")?;
        if shop.writer_count() == 0 {
            shop.set_writer_count(1).await;
        }
        // Deliveries to dead writers come back after the ack deadline (at most 5 s).
        for _ in 0..600 {
            if self.queue.depth() == 0 {
                break;
            }
            tokio::time::sleep(ms(100)).await;
        }
        if self.queue.depth() > 0 {
            return Err(format!(
                "the queue did not drain: {} reservations left",
                self.queue.depth()
            ));
        }
        check::all_accepted_written(self)?;
        // Every payment window closes; the reaper must expire every unpaid order.
        let last_deadline = self.store.orders().iter().map(|o| o.expires_at).max();
        if let Some(deadline) = last_deadline {
            self.clock
                .jump_forward_to(deadline + time::Duration::seconds(1));
        }
        loop {
            match shop.reap_once().await {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) => return Err(format!("reaper failed without faults: {error}")),
            }
        }
        check::nothing_due(self)?;
        check::safety(self).map_err(|e| format!("after the reaper: {e}"))?;
        let stranded = check::stranded_units(self);
        self.trace
            .push(|| format!("convergence: {stranded} unit(s) stranded until rebuild"));
        shop.shutdown().await;
        self.crash_node().await;
        self.start_node().await?;
        check::converged(self).await?;
        Ok(stranded)
    }
}
