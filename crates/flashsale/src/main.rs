//! The flashsale command line: `serve`, `demo`, `migrate`, `bench`.

/// mimalloc, not the system allocator: a durable buy allocates many small, short-lived pieces
/// (headers, JSON, ids, batch entries), and glibc's malloc was a sixth of the node's CPU on that
/// path; mimalloc made scaled-out durable buys 14 % faster (BENCHMARKS.md, 2026-12-01).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use flashsale::config::{BackendFlags, Config, FlagOverrides, LogFormat};
use flashsale::{app, demo};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "flashsale",
    version,
    about = "A flash-sale engine that never oversells"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve sales (no demo sale, no development login unless asked for).
    Serve(ServeArgs),
    /// Serve a demo sale that goes live 30 s after start, with the development login on.
    Demo(ServeArgs),
    /// Create or upgrade the order store's schema, then exit.
    Migrate(CommonArgs),
    /// Play a crowd against a running flashsale, measure it, and check the invariants.
    Bench(Box<flashsale_bench::BenchArgs>),
    /// Download a sale's published line log and check it: the chains, the seed against its
    /// commitment, the draw, the admissions, and a receipt if given. Exits non-zero unless
    /// every check passes.
    VerifyLine(flashsale_bench::verify_line::VerifyLineArgs),
}

#[derive(Args)]
struct CommonArgs {
    /// A TOML config file layered over the defaults (see config/default.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for the embedded backends' files.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Stock and buyer limits: "memory" (embedded) or redis://HOST:PORT.
    #[arg(long, value_name = "memory|URL")]
    stock: Option<String>,
    /// The durable queue: "embedded" or nats://HOST:PORT (JetStream).
    #[arg(long, value_name = "embedded|URL")]
    queue: Option<String>,
    /// Sales and orders: "sqlite", sqlite://PATH, or postgres://USER@HOST:PORT/DB.
    #[arg(long, value_name = "sqlite|URL")]
    orders: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long)]
    listen: Option<String>,
    /// Turn on POST /api/dev/buyer-token (anyone can get a buyer token: demos and tests only).
    #[arg(long)]
    dev_login: bool,
}

fn load(common: &CommonArgs, listen: Option<String>, dev_login: bool) -> Result<Config> {
    let flags = FlagOverrides {
        listen,
        data_dir: common.data_dir.clone(),
        dev_login: dev_login.then_some(true),
        backends: BackendFlags {
            stock: common.stock.clone(),
            queue: common.queue.clone(),
            orders: common.orders.clone(),
        },
    };
    Ok(Config::load(
        common.config.as_deref(),
        std::env::vars(),
        &flags,
    )?)
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn serve(config: Config, is_demo: bool) -> Result<()> {
    let running = app::start(&config).await?;
    if is_demo {
        demo::create_sale_and_greet(&running, &config).await?;
    }
    tracing::info!(addr = %running.addr, data_dir = %config.data_dir.display(), dev_login = config.dev_login, "flashsale serving");
    wait_for_signal().await;
    tracing::info!("shutting down: finishing open requests and draining the queue");
    running.stop().await;
    tracing::info!("stopped");
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => match load(&args.common, args.listen, args.dev_login) {
            Ok(config) => {
                init_logs(config.log_format);
                serve(config, false).await
            }
            Err(error) => Err(error),
        },
        Command::Demo(args) => match load(&args.common, args.listen, true) {
            Ok(config) => {
                init_logs(config.log_format);
                serve(demo::prepare(config), true).await
            }
            Err(error) => Err(error),
        },
        Command::Migrate(common) => match load(&common, None, false) {
            Ok(config) => {
                init_logs(config.log_format);
                app::migrate(&config)
                    .await
                    .map(|place| println!("order store {place} is up to date"))
            }
            Err(error) => Err(error),
        },
        Command::Bench(args) => flashsale_bench::main(*args).await,
        Command::VerifyLine(args) => flashsale_bench::verify_line::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
