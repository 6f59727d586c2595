//! A rough measure of what the Redis line's calls cost: joins (one at a time, and from many
//! tasks at once), advances and standings on a line of many members. Not a test and not a
//! benchmark suite; run it against a local Redis with
//! `cargo run --release -p flashsale-redis --example line_cost`.
//!
//! It writes under a fresh key prefix and deletes those keys at the end.

use flashsale_core::line::{AdmitInputs, LineId, LineTimes, Seed};
use flashsale_core::{BuyerId, SaleId, Timestamp};
use flashsale_redis::{RedisLine, RedisStockConfig};
use flashsale_service::WaitingLine;
use flashsale_service::conformance::env::{REDIS, unique_name};
use std::time::{Duration, Instant};

const SEED: Seed = Seed([1; 32]);
/// Members joined before the line is advanced: a line of a real flash sale's size.
const MEMBERS: usize = 100_000;
const ADVANCES: usize = 20_000;
const STANDINGS: usize = 20_000;
const TASKS: usize = 64;

fn at_ms(start: Timestamp, ms: i64) -> Timestamp {
    start + time::Duration::milliseconds(ms)
}

fn member(sale: SaleId, n: usize) -> LineId {
    LineId::of(sale, &BuyerId::parse(&format!("b{n}")).expect("buyer"))
}

/// Redis's own count of script calls and the µs it spent in them (`INFO commandstats`), so a
/// phase's server time can be told apart from the round trip. Other clients' scripts would
/// count too: the numbers are only clean on a Redis nobody else is using.
fn script_stats() -> (u64, u64) {
    let client = redis::Client::open(REDIS.url()).expect("client");
    let mut connection = client.get_connection().expect("connection");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut connection)
        .expect("info");
    let line = info
        .lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .unwrap_or("");
    let field = |name: &str| {
        line.split([':', ','])
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("calls"), field("usec"))
}

fn report(what: &str, calls: usize, elapsed: Duration, before: (u64, u64)) {
    let after = script_stats();
    let (scripts, usec) = (after.0 - before.0, after.1 - before.1);
    eprintln!(
        "{what}: {calls} calls in {elapsed:.2?}: {:.1} µs per call, {:.0} calls/s; in Redis {:.1} µs per script ({scripts} scripts)",
        elapsed.as_secs_f64() * 1e6 / calls as f64,
        calls as f64 / elapsed.as_secs_f64(),
        usec as f64 / scripts.max(1) as f64,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let prefix = unique_name("bench-");
    let config = RedisStockConfig {
        key_prefix: prefix.clone(),
        ..RedisStockConfig::default()
    };
    let line = RedisLine::connect(&REDIS.url(), config)
        .await
        .unwrap_or_else(|e| panic!("{e} {}", REDIS.hint()));
    let start = Timestamp::from_unix_timestamp(1_900_000_000).expect("time");
    let sale = SaleId(uuid::Uuid::now_v7());
    let times = LineTimes {
        opens_at: at_ms(start, -600_000),
        starts_at: start,
        ends_at: at_ms(start, 3_600_000),
        admission_secs: 600,
    };
    line.set_up(sale, times).await.expect("set up");

    // The floor every call stands on: one round trip that runs nothing.
    let client = redis::Client::open(REDIS.url()).expect("client");
    let mut ping = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let (began, stats) = (Instant::now(), script_stats());
    for _ in 0..STANDINGS {
        redis::cmd("PING")
            .query_async::<()>(&mut ping)
            .await
            .expect("ping");
    }
    report(
        "PING (the round trip alone)",
        STANDINGS,
        began.elapsed(),
        stats,
    );

    // Half the crowd joins before the start (the pre-queue), one call at a time.
    let (began, stats) = (Instant::now(), script_stats());
    for n in 0..MEMBERS / 2 {
        let who = member(sale, n);
        line.join(sale, who, SEED.draw_key(&who), at_ms(start, -1_000))
            .await
            .expect("join")
            .expect("open");
    }
    report(
        "join before the start, one at a time",
        MEMBERS / 2,
        began.elapsed(),
        stats,
    );

    // The other half after the start, from many tasks at once over the one connection.
    let (began, stats) = (Instant::now(), script_stats());
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let line = line.clone();
            tokio::spawn(async move {
                for n in (MEMBERS / 2 + task..MEMBERS).step_by(TASKS) {
                    let who = member(sale, n);
                    line.join(sale, who, SEED.draw_key(&who), at_ms(start, 1_000))
                        .await
                        .expect("join")
                        .expect("open");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    report(
        &format!("join after the start, {TASKS} tasks at once"),
        MEMBERS / 2,
        began.elapsed(),
        stats,
    );

    // A repeat join of a pre-queue member after the draw: the ZRANK path.
    let (began, stats) = (Instant::now(), script_stats());
    for n in 0..STANDINGS {
        let who = member(sale, n % (MEMBERS / 2));
        line.join(sale, who, SEED.draw_key(&who), at_ms(start, 2_000))
            .await
            .expect("join")
            .expect("open");
    }
    report(
        "repeat join after the draw, one at a time",
        STANDINGS,
        began.elapsed(),
        stats,
    );

    // Advances every 10 ms of line time at 100 buyers per second, admissions piling up (600 s
    // each): the counter moves on most calls.
    let inputs = AdmitInputs {
        rate_per_sec: 100,
        units_left: 1_000_000,
        units_returnable: 0,
    };
    let (began, stats) = (Instant::now(), script_stats());
    for i in 0..ADVANCES {
        line.advance(sale, at_ms(start, 2_000 + 10 * i as i64), inputs)
            .await
            .expect("advance")
            .expect("set up");
    }
    report("advance, one at a time", ADVANCES, began.elapsed(), stats);
    let now = at_ms(start, 2_000 + 10 * ADVANCES as i64);
    let summary = line
        .advance(sale, now, inputs)
        .await
        .expect("advance")
        .expect("set up");
    eprintln!(
        "  after them: {} members, {} admitted, {} holders",
        summary.length, summary.admitted_up_to, summary.holders
    );

    let (began, stats) = (Instant::now(), script_stats());
    for n in 0..STANDINGS {
        let who = member(sale, (n * 7919) % MEMBERS);
        line.standing(sale, who, now, inputs)
            .await
            .expect("standing")
            .expect("set up");
    }
    report("standing, one at a time", STANDINGS, began.elapsed(), stats);

    use redis::Commands as _;
    let client = redis::Client::open(REDIS.url()).expect("client");
    let mut connection = client.get_connection().expect("connection");
    let keys: Vec<String> = connection
        .scan_match::<_, String>(format!("{{fs:{prefix}:*"))
        .expect("scan")
        .collect::<redis::RedisResult<_>>()
        .expect("keys");
    let mut bytes = 0;
    for key in &keys {
        let used: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query(&mut connection)
            .expect("memory usage");
        bytes += used.unwrap_or(0);
    }
    eprintln!(
        "memory: {:.1} MB for {MEMBERS} members, {:.0} bytes per member",
        bytes as f64 / 1e6,
        bytes as f64 / MEMBERS as f64
    );
    redis::cmd("DEL")
        .arg(&keys)
        .query::<()>(&mut connection)
        .expect("delete");
}
