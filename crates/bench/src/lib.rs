//! `flashsale bench`: plays a crowd against a running flashsale (or the hello peer), measures
//! it with HDR histograms, and ends with a verdict on the invariants of DESIGN.md.
//!
//! A run: create a sale (or take `--sale`), poll its status like real clients until it is
//! live (cheaters try guessed buy paths meanwhile), release the crowd, pay for a share of the
//! winners, wait for the queue to drain and the reaper to run, then judge. With `--peer hello`
//! the same crowd also loads an in-process hello-world in alternating rounds.

pub mod api;
pub mod client;
pub mod crowd;
pub mod report;
pub mod stats;
pub mod verdict;
pub mod verify_line;
pub mod waiting_room;

use crate::api::{Api, layer_metrics, parse_time};
use crate::client::{Conn, Target};
use crate::crowd::{Crowd, CrowdShape, Pace, Signer};
use crate::report::{Drain, Report, RoundReport, Sample};
use crate::stats::{Outcome, Percentiles, Recorder};
use crate::verdict::{Evidence, Verdict};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use flashsale_core::line::AdmitRate;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often the live line and the counter monitor refresh, in milliseconds.
const PROGRESS_INTERVAL_MS: u64 = 250;
/// How often clients poll the status endpoint before go-live, in milliseconds.
pub(crate) const STATUS_POLL_INTERVAL_MS: u64 = 100;
/// Longest wait for a sale to go live, in seconds.
const GO_LIVE_WAIT_SECS_MAX: u64 = 3600;
/// Winners waiting to pay; past it a winner gives up paying (the reaper covers it).
pub(crate) const PAYMENTS_QUEUED_MAX: usize = 100_000;
/// Tasks paying for winners' orders.
const PAYERS: usize = 4;
/// Longest a payer waits for an order to be written before giving up, in milliseconds.
const PAY_WAIT_MS: u64 = 10_000;

/// Which peer to load in alternating rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Peer {
    /// An axum hello-world on flashsale's accept loop and runtime settings.
    Hello,
}

/// `flashsale bench` flags.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The flashsale node(s) to load, `http://host:port`, comma-separated or repeated. With
    /// several, each load connection sticks to one node in turn, as behind a load balancer;
    /// the sale is created and judged through the first.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    pub target: Vec<String>,
    /// Another flashsale deployment (node URLs as for --target), loaded the same way in
    /// alternating rounds with its own sale and verdict; the report gives ours ÷ theirs. For
    /// example the same engines with `reservations.design = "classic"`.
    #[arg(long, value_delimiter = ',')]
    pub versus: Vec<String>,
    /// Hold the order writers of every node at 0 while the crowd runs, then set them to this
    /// count and time the queue draining into the order store: orders written per second by
    /// the writers alone. The writers stay at this count afterwards. Winners do not pay in
    /// such a round (their orders are not written until the drain).
    #[arg(long)]
    pub drain_writers: Option<usize>,
    /// Admin bearer token of the target.
    #[arg(long, env = "FLASHSALE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
    /// HS256 secret the target verifies buyer JWTs with.
    #[arg(long, env = "FLASHSALE_BUYER_JWT_SECRET", hide_env_values = true)]
    pub buyer_jwt_secret: String,
    /// Use this sale instead of creating one (rounds then all load it).
    #[arg(long)]
    pub sale: Option<String>,
    /// Units on sale (when the bench creates the sale).
    #[arg(long, default_value_t = 1000)]
    pub stock: u32,
    /// Per-buyer limit of the created sale.
    #[arg(long, default_value_t = 1)]
    pub per_buyer_limit: u32,
    /// The created sale goes live this long after it is created, in seconds.
    #[arg(long, default_value_t = 3)]
    pub start_in_secs: u64,
    /// Payment window of the created sale, in seconds (short, so the reaper runs in the run).
    #[arg(long, default_value_t = 5)]
    pub payment_window_secs: u32,
    /// Distinct buyers in the crowd; each comes once (with its repeats).
    #[arg(long, default_value_t = 100_000)]
    pub buyers: u64,
    /// Concurrent load workers (each keeps its own keep-alive connections).
    #[arg(long, default_value_t = 256)]
    pub connections: usize,
    /// Open loop: buyers arriving per second (latency from the intended send time).
    /// Without it: closed loop, as fast as the workers get answers.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open loop: the first `--spike-secs` arrive this many times faster.
    #[arg(long, default_value_t = 1.0)]
    pub spike_factor: f64,
    /// Open loop: length of the spike, in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub spike_secs: f64,
    /// Stop releasing buyers after this long, in seconds (default: when all came).
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Share of buyers whose click fires twice at once with the same key.
    #[arg(long, default_value_t = 0.2)]
    pub double_click_share: f64,
    /// Share of buyers who click again with a new key after the first answer.
    #[arg(long, default_value_t = 0.1)]
    pub repeat_share: f64,
    /// Share of buyers who cheat (forged/expired token, guessed path, many keys at once).
    #[arg(long, default_value_t = 0.02)]
    pub cheater_share: f64,
    /// Share of winners who pay; the rest never pay, so the reaper returns their units.
    #[arg(long, default_value_t = 0.5)]
    pub pay_share: f64,
    /// Give the sale a waiting room (a fair line): the crowd joins before the start, polls its
    /// place as told and buys when admitted; the verdict adds the line's checks and the
    /// fairness figure, and each round is followed by the same crowd at a sale without a line,
    /// for contrast. Not with --sale, --versus, --peer, --drain-writers or --rate.
    #[arg(long)]
    pub waiting_room: bool,
    /// With --waiting-room: the line opens this long before the start, and the crowd joins
    /// over it, in seconds. The sale starts at --start-in-secs or a second after the lead,
    /// whichever is later.
    #[arg(long, default_value_t = 10)]
    pub line_lead_secs: u64,
    /// With --waiting-room: buyers let through per second, a whole number or "auto".
    #[arg(long, default_value = "200", value_parser = parse_admit_rate)]
    pub admit_per_sec: AdmitRate,
    /// With --waiting-room: how long an admitted buyer has to buy, in seconds (10 to 3600).
    #[arg(long, default_value_t = 10)]
    pub admission_secs: u32,
    /// With --waiting-room: how long the crowd keeps polling after the start before it
    /// leaves, in seconds.
    #[arg(long, default_value_t = 30)]
    pub line_stay_secs: u64,
    /// With --waiting-room: share of the crowd that joins in the last second before the start
    /// and clicks at once when let through (the bots).
    #[arg(long, default_value_t = 0.2)]
    pub last_second_share: f64,
    /// With --waiting-room: share of the crowd that arrives only after the start.
    #[arg(long, default_value_t = 0.1)]
    pub late_share: f64,
    /// With --waiting-room: share of admitted buyers who never buy (their admissions pass).
    #[arg(long, default_value_t = 0.2)]
    pub never_buy_share: f64,
    /// With --waiting-room: a third round, the same crowd through a line whose sale asks this
    /// many bits of proof of work (`waiting_room.pow_difficulty_bits`, 1 to 32). Each member
    /// gets a challenge and solves it before joining: people as they arrive over the lead, the
    /// bots all in their last second on this machine's cores, so a bot whose solve ends after
    /// the start joins behind the pre-queue. Every round then reports the bots' share of the
    /// units; this one also the CPU seconds the bots paid per place and per unit won. 0 (the
    /// default): no such round.
    #[arg(long, default_value_t = 0)]
    pub pow_bits: u8,
    /// Also load this peer the same way, in alternating rounds, and print ratios.
    #[arg(long, value_enum)]
    pub peer: Option<Peer>,
    /// Rounds (with `--peer`: A B A B ...; ratios are medians over rounds).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Write the whole report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an HTML report with SVG plots of throughput and latency over time here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No live progress line (for logs and tests).
    #[arg(long)]
    pub quiet: bool,
}

impl BenchArgs {
    fn validate(&self) -> Result<()> {
        for (name, share) in [
            ("--double-click-share", self.double_click_share),
            ("--repeat-share", self.repeat_share),
            ("--cheater-share", self.cheater_share),
            ("--pay-share", self.pay_share),
        ] {
            if !(0.0..=1.0).contains(&share) {
                bail!("{name} must be between 0 and 1");
            }
        }
        if self.connections == 0 || self.buyers == 0 || self.rounds == 0 {
            bail!("--connections, --buyers and --rounds must be at least 1");
        }
        if self.target.is_empty() {
            bail!("--target needs at least one node");
        }
        if self.connections < self.target.len() {
            bail!("--connections must be at least the number of --target nodes");
        }
        if self.rate.is_some_and(|r| r <= 0.0) || self.spike_factor <= 0.0 {
            bail!("--rate and --spike-factor must be positive");
        }
        if self.waiting_room {
            self.validate_waiting_room()?;
        } else if self.pow_bits > 0 {
            bail!("--pow-bits adds a round to --waiting-room: not without it");
        }
        Ok(())
    }

    fn validate_waiting_room(&self) -> Result<()> {
        if self.sale.is_some()
            || !self.versus.is_empty()
            || self.peer.is_some()
            || self.drain_writers.is_some()
            || self.rate.is_some()
        {
            bail!(
                "--waiting-room creates its own sales and paces its own crowd: not with --sale, --versus, --peer, --drain-writers or --rate"
            );
        }
        for (name, share) in [
            ("--last-second-share", self.last_second_share),
            ("--late-share", self.late_share),
            ("--never-buy-share", self.never_buy_share),
        ] {
            if !(0.0..=1.0).contains(&share) {
                bail!("{name} must be between 0 and 1");
            }
        }
        if self.last_second_share + self.late_share > 1.0 {
            bail!("--last-second-share and --late-share add up to more than the crowd");
        }
        if self.line_lead_secs < LINE_LEAD_SECS_MIN {
            bail!("--line-lead-secs must be at least {LINE_LEAD_SECS_MIN}");
        }
        if self.pow_bits > flashsale_core::pow::DIFFICULTY_BITS_MAX {
            bail!(
                "--pow-bits must be between 0 and {}",
                flashsale_core::pow::DIFFICULTY_BITS_MAX
            );
        }
        Ok(())
    }

    fn pace(&self) -> Pace {
        match self.rate {
            None => Pace::Closed,
            Some(rate_per_sec) => Pace::Open {
                rate_per_sec,
                spike_factor: self.spike_factor,
                spike_secs: self.spike_secs,
            },
        }
    }
}

/// Shortest line lead: the early members join before its last second, the bots within it.
const LINE_LEAD_SECS_MIN: u64 = 2;

/// `--admit-per-sec`: a whole number or "auto", as the sale spec takes it.
fn parse_admit_rate(text: &str) -> Result<AdmitRate, String> {
    let json = match text {
        "auto" => "\"auto\"".to_owned(),
        number => number.to_owned(),
    };
    serde_json::from_str(&json).map_err(|_| format!("{text}: not a whole number or \"auto\""))
}

/// Runs the bench, prints the report, writes the files asked for; an error if any
/// invariant failed (so the process exits non-zero).
pub async fn main(args: BenchArgs) -> Result<()> {
    let report = run(&args).await?;
    println!("{}", report::text(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(dir) = &args.report {
        report::write_html(dir, &report)?;
    }
    if !report.passed() {
        bail!("the verdict failed: at least one invariant was broken (see above)");
    }
    Ok(())
}

/// The nodes of one deployment: the crowd spreads over them, the admin calls go to the first.
pub(crate) struct Deployment {
    pub(crate) nodes: Vec<Target>,
    pub(crate) api: Api,
    /// One admin client per node, for settings each node has its own of (the writers).
    node_apis: Vec<Api>,
}

impl Deployment {
    fn parse(urls: &[String], admin_token: &str) -> Result<Self> {
        let nodes = urls
            .iter()
            .map(|url| Target::parse(url))
            .collect::<Result<Vec<_>>>()?;
        let first = nodes
            .first()
            .context("a deployment needs at least one node")?;
        Ok(Self {
            api: Api::new(first.clone(), admin_token),
            node_apis: nodes
                .iter()
                .map(|node| Api::new(node.clone(), admin_token))
                .collect(),
            nodes,
        })
    }

    async fn set_writers(&self, count: usize) -> Result<()> {
        for api in &self.node_apis {
            api.set_writers(count).await?;
        }
        Ok(())
    }
}

/// Runs every round and returns the report (without printing it).
pub async fn run(args: &BenchArgs) -> Result<Report> {
    args.validate()?;
    let ours = Deployment::parse(&args.target, &args.admin_token)?;
    let versus = (!args.versus.is_empty())
        .then(|| Deployment::parse(&args.versus, &args.admin_token))
        .transpose()?;
    let signer = Signer::new(args.buyer_jwt_secret.as_bytes());
    let peer = match args.peer {
        Some(Peer::Hello) => Some(HelloPeer::start()?),
        None => None,
    };
    let mut report = Report::new(args);
    for round in 0..args.rounds {
        if args.waiting_room {
            let with = waiting_room::line_round(args, round, &ours, &signer, 0).await?;
            report.rounds.push(with);
            let without = waiting_room::rush::rush_round(args, round, &ours, &signer).await?;
            report.rounds.push(without);
            if args.pow_bits > 0 {
                let pow =
                    waiting_room::line_round(args, round, &ours, &signer, args.pow_bits).await?;
                report.rounds.push(pow);
            }
            continue;
        }
        let mine = flashsale_round(args, round, &ours, &signer, "flashsale").await?;
        report.rounds.push(mine);
        if let Some(versus) = &versus {
            let theirs = flashsale_round(args, round, versus, &signer, "versus").await?;
            report.rounds.push(theirs);
        }
        if let Some(peer) = &peer {
            let theirs = peer_round(args, round, &peer.target, &signer).await?;
            report.rounds.push(theirs);
        }
    }
    report.summarize();
    Ok(report)
}

/// The hello peer on its own runtime (as a separate server process would have), on a free
/// port of 127.0.0.1.
struct HelloPeer {
    target: Target,
    shutdown: CancellationToken,
}

impl HelloPeer {
    fn start() -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        std::thread::Builder::new()
            .name("hello-peer".into())
            .spawn(move || {
                // The same runtime flashsale's `main` builds: multi-threaded, one worker per core.
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime for the peer");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("a tokio listener for the peer");
                    flashsale_http::peer::serve_hello(listener, stop).await;
                });
            })?;
        Ok(Self {
            target: Target::parse(&format!("http://{addr}"))?,
            shutdown,
        })
    }
}

impl Drop for HelloPeer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub(crate) fn shape(args: &BenchArgs, round: usize) -> CrowdShape {
    CrowdShape {
        buyers: args.buyers,
        double_click_share: args.double_click_share,
        repeat_share: args.repeat_share,
        cheater_share: args.cheater_share,
        pay_share: args.pay_share,
        // Distinct buyers per run and round, so runs against one server never collide.
        run_id: format!("{}r{round}", uuid::Uuid::new_v4().simple()),
    }
}

pub(crate) struct Live {
    pub(crate) sale_id: String,
    pub(crate) buy_path: String,
    pub(crate) starts_at: OffsetDateTime,
    pub(crate) ends_at: OffsetDateTime,
    pub(crate) per_buyer_limit: u64,
    pub(crate) payment_window_secs: u64,
    pub(crate) status_polls: u64,
    pub(crate) early_wins: u64,
}

/// Creates (or takes) the sale and polls its status like real clients until it is live;
/// meanwhile a cheater keeps trying guessed buy paths.
pub(crate) async fn go_live(
    args: &BenchArgs,
    api: &Api,
    target: &Target,
    signer: &Signer,
    shape: &CrowdShape,
) -> Result<Live> {
    let sale_id = match &args.sale {
        Some(id) => id.clone(),
        None => {
            let starts_at =
                OffsetDateTime::now_utc() + time::Duration::seconds(args.start_in_secs as i64);
            api.create_sale(
                args.stock,
                args.per_buyer_limit,
                starts_at,
                starts_at + time::Duration::hours(1),
                args.payment_window_secs,
                None,
            )
            .await?
        }
    };
    let view = api.sale(&sale_id).await?;
    let per_buyer_limit = view["per_buyer_limit"].as_u64().unwrap_or(1);
    let payment_window_secs = view["payment_window_secs"].as_u64().unwrap_or(3600);
    let mut conn = Conn::new(target.clone());
    let mut cheat = Conn::new(target.clone());
    let cheat_auth = format!("Bearer {}", signer.token(&shape.buyer_id(u64::MAX)));
    let deadline = Instant::now() + Duration::from_secs(GO_LIVE_WAIT_SECS_MAX);
    let (mut status_polls, mut early_wins) = (0, 0);
    loop {
        let status = api.status(&mut conn, &sale_id).await?;
        status_polls += 1;
        match status["phase"].as_str() {
            Some("live") | Some("sold_out") => {
                let buy_path = status["buy_path"].as_str().unwrap_or_default().to_owned();
                if buy_path.is_empty() && status["phase"] == "live" {
                    bail!("sale {sale_id} is live but its status has no buy_path");
                }
                return Ok(Live {
                    // A sold-out sale has no buy path; its buys all meet the sold-out layers.
                    buy_path: if buy_path.is_empty() {
                        format!("/api/sales/{sale_id}/buy/sold-out-no-path-given")
                    } else {
                        buy_path
                    },
                    starts_at: parse_time(&status["starts_at"]).context("status.starts_at")?,
                    ends_at: parse_time(&status["ends_at"]).context("status.ends_at")?,
                    sale_id,
                    per_buyer_limit,
                    payment_window_secs,
                    status_polls,
                    early_wins,
                });
            }
            Some("ended") => bail!("sale {sale_id} has ended"),
            _ => {}
        }
        if Instant::now() > deadline {
            bail!("sale {sale_id} did not go live within {GO_LIVE_WAIT_SECS_MAX} s");
        }
        // Guessing before the start: a made-up token, and no token at all.
        for guess in [
            format!("/api/sales/{sale_id}/buy/{}", guessed_token(status_polls)),
            format!("/api/sales/{sale_id}/buy/"),
        ] {
            let key = format!("early-{status_polls}");
            if let Ok(answer) = cheat
                .send(
                    hyper::Method::POST,
                    &guess,
                    &[
                        ("authorization", cheat_auth.as_str()),
                        ("idempotency-key", key.as_str()),
                    ],
                    None,
                )
                .await
                && answer.status.is_success()
            {
                early_wins += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(STATUS_POLL_INTERVAL_MS)).await;
    }
}

/// A made-up buy-path token of the real length (22 characters of base64url).
pub(crate) fn guessed_token(n: u64) -> String {
    format!("{:022x}", crowd::mix(n) as u128 * 0x1_0000 + 0xbeef)
        .chars()
        .take(22)
        .collect()
}

async fn flashsale_round(
    args: &BenchArgs,
    round: usize,
    deployment: &Deployment,
    signer: &Signer,
    kind: &'static str,
) -> Result<RoundReport> {
    let (api, target) = (&deployment.api, &deployment.nodes[0]);
    let shape = shape(args, round);
    let live = go_live(args, api, target, signer, &shape).await?;
    let before = api.counters(&live.sale_id).await?;
    if args.drain_writers.is_some() {
        deployment.set_writers(0).await?;
    }
    let (pay_tx, pay_rx) = mpsc::channel(PAYMENTS_QUEUED_MAX);
    let crowd = Arc::new(Crowd {
        guessed_path: format!(
            "/api/sales/{}/buy/{}",
            live.sale_id,
            guessed_token(round as u64)
        ),
        buy_path: live.buy_path.clone(),
        shape: shape.clone(),
        signer: signer.clone(),
        targets: deployment.nodes.clone(),
        pace: args.pace(),
        connections: args.connections,
        duration: args.duration_secs.map(Duration::from_secs_f64),
        collect: true,
        recorder: Arc::new(Recorder::new()),
        accepted: Default::default(),
        cheater_wins: AtomicU64::new(0),
        next_visit: AtomicU64::new(0),
        payments: std::sync::Mutex::new(Some(pay_tx)),
    });
    let released = Instant::now();
    let stop = CancellationToken::new();
    // No payers while the writers are held: nothing could be paid before the drain.
    let pay_rx = if args.drain_writers.is_some() {
        drop(pay_rx);
        None
    } else {
        Some(pay_rx)
    };
    let payers = spawn_payers(target, signer, &shape, pay_rx);
    let paid = payers.1.clone();
    let monitor = tokio::spawn(monitor(
        Api::new(target.clone(), &args.admin_token),
        live.sale_id.clone(),
        released,
        stop.clone(),
    ));
    let progress = progress(args, &crowd, released, stop.clone(), kind);
    crowd.run(released).await;
    let crowd_secs = released.elapsed().as_secs_f64();
    let tally = crowd.recorder.snapshot();
    let drain = match args.drain_writers {
        Some(writers) => Some(drain(deployment, &live.sale_id, writers).await?),
        None => None,
    };
    // The crowd is done: the payers finish the queue they have, then the monitor stops.
    drop(
        crowd
            .payments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(),
    );
    for payer in payers.0 {
        let _ = payer.await;
    }
    stop.cancel();
    let _ = progress.await;
    let samples = monitor.await.unwrap_or_default();
    let live_max_sampled = samples.iter().map(|s| s.live).max().unwrap_or(0);

    let accepted = std::mem::take(&mut *crowd.accepted.lock().unwrap_or_else(|p| p.into_inner()));
    let last_accept = accepted
        .iter()
        .map(|a| released + a.at)
        .max()
        .unwrap_or(released);
    let verdict = verdict::judge(
        api,
        target,
        &Evidence {
            sale_id: &live.sale_id,
            shape: &shape,
            signer,
            accepted: &accepted,
            cheater_wins: crowd.cheater_wins.load(Ordering::Relaxed),
            early_wins: live.early_wins,
            before,
            starts_at: live.starts_at,
            ends_at: live.ends_at,
            per_buyer_limit: live.per_buyer_limit,
            payment_window_secs: live.payment_window_secs,
            last_accept,
            live_max_sampled,
        },
    )
    .await?;
    let view = api.sale(&live.sale_id).await.unwrap_or_default();
    let metrics = layer_metrics(&api.metrics().await);
    let mut report = RoundReport::new(
        kind,
        round,
        &tally,
        crowd_secs,
        Some(live.sale_id),
        live.status_polls,
        paid.load(Ordering::Relaxed),
        view.get("layers").cloned(),
        metrics,
        samples,
        Some(verdict),
    );
    report.drain = drain;
    Ok(report)
}

/// How long to wait for a drain before giving up, in seconds.
const DRAIN_WAIT_SECS_MAX: u64 = 600;

/// Starts `writers` order writers on every node of the deployment and times the sale's queue
/// draining into the order store.
async fn drain(deployment: &Deployment, sale_id: &str, writers: usize) -> Result<Drain> {
    let api = &deployment.api;
    let queued = api.counters(sale_id).await?.queued;
    let started = Instant::now();
    deployment.set_writers(writers).await?;
    let deadline = started + Duration::from_secs(DRAIN_WAIT_SECS_MAX);
    loop {
        if api.counters(sale_id).await?.queued == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the queue of sale {sale_id} did not drain within {DRAIN_WAIT_SECS_MAX} s");
        }
        tokio::time::sleep(Duration::from_millis(DRAIN_POLL_INTERVAL_MS)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Drain {
        writers,
        orders: queued,
        secs,
        orders_per_sec: queued as f64 / secs.max(1e-9),
    })
}

/// How often the drain looks at the queue, in milliseconds.
const DRAIN_POLL_INTERVAL_MS: u64 = 20;

async fn peer_round(
    args: &BenchArgs,
    round: usize,
    target: &Target,
    signer: &Signer,
) -> Result<RoundReport> {
    let shape = shape(args, round);
    // The same request shapes as the real crowd: a buy path, a bearer JWT, a key.
    let fake_sale = uuid::Uuid::new_v4();
    let crowd = Arc::new(Crowd {
        guessed_path: format!("/api/sales/{fake_sale}/buy/{}", guessed_token(1)),
        buy_path: format!("/api/sales/{fake_sale}/buy/{}", guessed_token(2)),
        shape,
        signer: signer.clone(),
        targets: vec![target.clone()],
        pace: args.pace(),
        connections: args.connections,
        duration: args.duration_secs.map(Duration::from_secs_f64),
        collect: false,
        recorder: Arc::new(Recorder::new()),
        accepted: Default::default(),
        cheater_wins: AtomicU64::new(0),
        next_visit: AtomicU64::new(0),
        payments: std::sync::Mutex::new(None),
    });
    let stop = CancellationToken::new();
    let released = Instant::now();
    let progress = progress(args, &crowd, released, stop.clone(), "peer");
    crowd.run(released).await;
    let secs = released.elapsed().as_secs_f64();
    stop.cancel();
    let _ = progress.await;
    let tally = crowd.recorder.snapshot();
    Ok(RoundReport::new(
        "peer",
        round,
        &tally,
        secs,
        None,
        0,
        0,
        None,
        Vec::new(),
        Vec::new(),
        None::<Verdict>,
    ))
}

/// Payer tasks: wait for the winner's order to be written, then pay it once.
pub(crate) fn spawn_payers(
    target: &Target,
    signer: &Signer,
    shape: &CrowdShape,
    rx: Option<mpsc::Receiver<(u64, String)>>,
) -> (Vec<tokio::task::JoinHandle<()>>, Arc<AtomicU64>) {
    let paid = Arc::new(AtomicU64::new(0));
    let Some(rx) = rx else {
        return (Vec::new(), paid);
    };
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let tasks = (0..PAYERS)
        .map(|_| {
            let (rx, target, signer, shape, paid) = (
                rx.clone(),
                target.clone(),
                signer.clone(),
                shape.clone(),
                paid.clone(),
            );
            tokio::spawn(async move {
                let mut conn = Conn::new(target);
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some((buyer, order_id)) = next else {
                        return;
                    };
                    let auth = format!("Bearer {}", signer.token(&shape.buyer_id(buyer)));
                    let deadline = Instant::now() + Duration::from_millis(PAY_WAIT_MS);
                    while Instant::now() < deadline {
                        let answer = conn
                            .post_json(
                                &format!("/api/orders/{order_id}/pay"),
                                &[("authorization", auth.as_str())],
                                &serde_json::json!({ "payment_id": format!("pay-{order_id}") }),
                            )
                            .await;
                        match answer {
                            Ok(a) if a.status.is_success() => {
                                paid.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            // Not written yet: try again shortly.
                            Ok(a) if a.body.windows(17).any(|w| w == b"order_not_written") => {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            _ => break,
                        }
                    }
                }
            })
        })
        .collect();
    (tasks, paid)
}

/// Samples the sale's counters while the crowd runs (time to sell out, orders written/s).
pub(crate) async fn monitor(
    api: Api,
    sale_id: String,
    released: Instant,
    stop: CancellationToken,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    loop {
        let stopping = stop.is_cancelled();
        if let Ok(c) = api.counters(&sale_id).await {
            samples.push(Sample::of(released.elapsed(), c));
        }
        // One last sample once stopped: a short crowd can finish within one interval, and the
        // report must still see the state it ended in (e.g. sold out).
        if stopping {
            return samples;
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(PROGRESS_INTERVAL_MS)) => {}
        }
    }
}

/// The live line: requests/s, outcomes and p99 of the last second.
fn progress(
    args: &BenchArgs,
    crowd: &Arc<Crowd>,
    released: Instant,
    stop: CancellationToken,
    label: &'static str,
) -> tokio::task::JoinHandle<()> {
    let quiet = args.quiet;
    let crowd = crowd.clone();
    tokio::spawn(async move {
        if quiet {
            return;
        }
        let bar = ProgressBar::new(crowd.shape.buyers);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {bar:20} {pos}/{len} buyers  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(label);
        let mut last_total = 0;
        let mut last_at = Instant::now();
        loop {
            let stopped = tokio::select! {
                _ = stop.cancelled() => true,
                _ = tokio::time::sleep(Duration::from_millis(PROGRESS_INTERVAL_MS * 2)) => false,
            };
            let tally = crowd.recorder.snapshot();
            let total = tally.total();
            let rate = (total - last_total) as f64 / last_at.elapsed().as_secs_f64();
            (last_total, last_at) = (total, Instant::now());
            let second = (released.elapsed().as_millis() as u64 / stats::LATENCY_BUCKET_MS)
                .saturating_sub(1) as usize;
            let p99 = tally
                .latency_timeline
                .get(second)
                .map(|h| Percentiles::of(h).p99_ms)
                .unwrap_or(0.0);
            let outcomes: Vec<String> = Outcome::ALL
                .iter()
                .map(|o| format!("{}:{}", o.label(), tally.count(*o)))
                .collect();
            bar.set_position(
                crowd
                    .next_visit
                    .load(Ordering::Relaxed)
                    .min(crowd.shape.buyers),
            );
            bar.set_message(format!(
                "{rate:>8.0} req/s  p99 {p99:.1} ms  {}",
                outcomes.join(" ")
            ));
            if stopped {
                bar.finish();
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    /// Bench flags as the command line gives them (with a token and a secret).
    pub(crate) fn args(flags: &[&str]) -> BenchArgs {
        let mut argv = vec!["bench", "--admin-token", "a", "--buyer-jwt-secret", "s"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).expect("the flags parse").bench
    }

    #[test]
    fn pow_bits_default_to_no_round_and_need_the_waiting_room() {
        let plain = args(&[]);
        assert_eq!(plain.pow_bits, 0);
        assert!(plain.validate().is_ok());
        assert!(
            args(&["--waiting-room", "--pow-bits", "16"])
                .validate()
                .is_ok()
        );
        let alone = args(&["--pow-bits", "16"]).validate().unwrap_err();
        assert!(alone.to_string().contains("--waiting-room"), "{alone}");
        let too_hard = args(&["--waiting-room", "--pow-bits", "33"])
            .validate()
            .unwrap_err();
        assert!(too_hard.to_string().contains("--pow-bits"), "{too_hard}");
    }
}
