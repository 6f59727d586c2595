//! A rough measure of the durable line, not a test: joins per second through the log with
//! concurrent callers, the syncs they took, the memory a member costs, and the replay at
//! open.
//!
//! `cargo run --release -p flashsale-embedded --example line_log_bench -- [joins] [callers] [dir]`
//! (defaults: 200000 joins, 64 callers, a temp dir). The memory figure is the growth of the
//! process's resident set over the joins, divided by the joins: allocator slack included.

use flashsale_core::line::{LineId, LineTimes, Seed};
use flashsale_core::{BuyerId, SaleId, Timestamp};
use flashsale_embedded::InProcessLine;
use flashsale_service::WaitingLine;
use std::sync::Arc;
use std::time::Instant;
use time::macros::datetime;

const T0: Timestamp = datetime!(2026-12-03 12:00 UTC);
const SEED: Seed = Seed([3; 32]);

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn member(sale: SaleId, n: usize) -> LineId {
    LineId::of(
        sale,
        &BuyerId::parse(&format!("bench-buyer-{n}")).expect("buyer id"),
    )
}

/// Joins `joins` members from `callers` tasks, each joining its share one after another;
/// `at` is the joins' time.
async fn crowd(
    line: &Arc<InProcessLine>,
    sale: SaleId,
    joins: usize,
    callers: usize,
    at: Timestamp,
) {
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let line = line.clone();
            tokio::spawn(async move {
                for n in (caller..joins).step_by(callers) {
                    let who = member(sale, n);
                    line.join(sale, who, SEED.draw_key(&who), at)
                        .await
                        .expect("join")
                        .expect("open");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller");
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let joins: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let callers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = args
        .next()
        .map_or_else(|| temp.path().to_path_buf(), Into::into);
    let path = dir.join("line-bench.log");
    let _ = std::fs::remove_file(&path);
    let times = LineTimes {
        opens_at: T0 - time::Duration::hours(1),
        starts_at: T0,
        ends_at: T0 + time::Duration::hours(1),
        admission_secs: 60,
    };

    // After the start: every join gets the next position.
    let line = Arc::new(InProcessLine::open(&path).expect("open"));
    let sale = SaleId(uuid::Uuid::from_u128(1));
    line.set_up(sale, times).await.expect("set up");
    let rss_before = resident_bytes();
    let started = Instant::now();
    crowd(&line, sale, joins, callers, T0).await;
    let secs = started.elapsed().as_secs_f64();
    let rss_after = resident_bytes();
    let commits = line.log_commits().unwrap_or(0);
    println!(
        "durable joins after the start: {joins} from {callers} callers in {secs:.2} s = {:.0} joins/s, {commits} syncs ({:.1} joins per sync)",
        joins as f64 / secs,
        joins as f64 / commits.max(1) as f64
    );
    println!(
        "memory per member (drawn line, resident set growth): {:.0} bytes",
        rss_after.saturating_sub(rss_before) as f64 / joins as f64
    );
    drop(line);
    let log_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    println!(
        "log: {log_bytes} bytes = {:.1} bytes per join",
        log_bytes as f64 / joins as f64
    );
    let started = Instant::now();
    let line = InProcessLine::open(&path).expect("reopen");
    println!(
        "replay at open: {:.2} s ({:.0} records/s)",
        started.elapsed().as_secs_f64(),
        joins as f64 / started.elapsed().as_secs_f64()
    );
    drop(line);
    std::fs::remove_file(&path).expect("remove the log");

    // Before the start: the pre-queue keeps each member with its draw key until the draw.
    let line = Arc::new(InProcessLine::open(&path).expect("open"));
    line.set_up(sale, times).await.expect("set up");
    let rss_before = resident_bytes();
    let started = Instant::now();
    crowd(&line, sale, joins, callers, T0 - time::Duration::minutes(1)).await;
    let secs = started.elapsed().as_secs_f64();
    let rss_after = resident_bytes();
    println!(
        "durable joins before the start: {:.0} joins/s; memory per pre-queue member: {:.0} bytes",
        joins as f64 / secs,
        rss_after.saturating_sub(rss_before) as f64 / joins as f64
    );
    drop(line);
    std::fs::remove_file(&path).expect("remove the log");

    // The same crowd in memory, for what the log costs.
    let line = Arc::new(InProcessLine::new());
    line.set_up(sale, times).await.expect("set up");
    let started = Instant::now();
    crowd(&line, sale, joins, callers, T0).await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "in-memory joins after the start: {:.0} joins/s",
        joins as f64 / secs
    );
}
