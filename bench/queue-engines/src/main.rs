//! queue-engines (issue 16): side-by-side comparison of embedded storage engines for a durable reservation queue.
//!
//! `queue-engines bench --group 64 --rounds 3`  runs every engine once per round, each in a child
//! process (`queue-engines run ...`) with a fresh directory, and prints medians as a markdown table.

mod engines;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

pub const PAYLOAD: usize = 160;

pub const ENGINES: &[&str] = &[
    "redb",
    "redb-append",
    "fjall",
    "okaywal",
    "raft-engine",
    "plainfile",
    "plainfile-prealloc",
];

/// One queued record: monotonically increasing sequence number (position in the load),
/// order id (u128 key) and a random 160-byte payload.
pub struct Rec {
    pub seq: u64,
    pub key: u128,
    pub payload: [u8; PAYLOAD],
}

/// What every engine implements. `commit` must be durable when it returns.
pub trait Queue {
    /// Durably append `new` and durably ack `acks` (acks are always the oldest live records).
    fn commit(&mut self, new: &[Rec], acks: &[Rec]);
    /// Everything is acked: do whatever the engine does to give space back.
    fn reclaim(&mut self);
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn gen_records(n: usize) -> Vec<Rec> {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|i| {
            let key = ((rng.next() as u128) << 64) | rng.next() as u128;
            let mut payload = [0u8; PAYLOAD];
            for c in payload.chunks_mut(8) {
                c.copy_from_slice(&rng.next().to_le_bytes()[..c.len()]);
            }
            Rec {
                seq: i as u64,
                key,
                payload,
            }
        })
        .collect()
}

#[derive(Clone, Copy, Default)]
struct Usage {
    user_us: f64,
    sys_us: f64,
    write_bytes: u64,
    cancelled: u64,
    wchar: u64,
    dev_bytes: u64,
}

fn usage_now() -> Usage {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| -> u64 {
        io.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .map(|v| v.trim().parse().unwrap_or(0))
            .unwrap_or(0)
    };
    Usage {
        user_us: tv(ru.ru_utime),
        sys_us: tv(ru.ru_stime),
        write_bytes: field("write_bytes"),
        cancelled: field("cancelled_write_bytes"),
        wchar: field("wchar"),
        dev_bytes: dev_written(),
    }
}

/// bytes written to the device holding the data dir (whole machine, incl. fs journal/metadata):
/// sectors-written field of /sys/block/<dev>/stat. Device name from LOGCMP_DEV (default vda).
fn dev_written() -> u64 {
    let dev = std::env::var("LOGCMP_DEV").unwrap_or_else(|_| "vda".into());
    std::fs::read_to_string(format!("/sys/block/{dev}/stat"))
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(6)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|sectors| sectors * 512)
        .unwrap_or(0)
}

/// (allocated bytes = st_blocks*512, apparent bytes = st_size, file count)
pub fn dir_size(p: &Path) -> (u64, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut out = (0, 0, 0);
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = match e.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            if m.is_dir() {
                let s = dir_size(&e.path());
                out.0 += s.0;
                out.1 += s.1;
                out.2 += s.2;
            } else {
                out.0 += m.blocks() * 512;
                out.1 += m.len();
                out.2 += 1;
            }
        }
    }
    out
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn run_one(engine: &str, group: usize, n: usize, dir: &Path) {
    let recs = gen_records(n);
    std::fs::create_dir_all(dir).unwrap();
    let commits = n.div_ceil(group);

    let u0 = usage_now();
    let t0 = Instant::now();
    let mut q = engines::open(engine, dir);
    let mut lat: Vec<f64> = Vec::with_capacity(commits + 2);
    for c in 0..commits + 2 {
        let tc = Instant::now();
        let new: &[Rec] = if c < commits {
            &recs[c * group..((c + 1) * group).min(n)]
        } else {
            &[]
        };
        let acks: &[Rec] = if c >= 2 {
            &recs[(c - 2) * group..((c - 1) * group).min(n)]
        } else {
            &[]
        };
        q.commit(new, acks);
        lat.push(tc.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p50 = lat[lat.len() / 2];
    let p99 = lat[lat.len() * 99 / 100];
    let wall = t0.elapsed().as_secs_f64();
    let u1 = usage_now();
    let size_before = dir_size(dir);

    let t1 = Instant::now();
    q.reclaim();
    drop(q);
    let reclaim_s = t1.elapsed().as_secs_f64();
    let u2 = usage_now();
    let size_after = dir_size(dir);

    println!(
        "RESULT engine={engine} group={group} n={n} commits={} wall_s={wall:.4} p50_us={p50:.0} p99_us={p99:.0} user_us={:.1} sys_us={:.1} write_bytes={} cancelled={} wchar={} dev_bytes={} \
         size_before_alloc={} size_before_apparent={} files_before={} reclaim_s={reclaim_s:.4} reclaim_write_bytes={} reclaim_cpu_us={:.0} \
         size_after_alloc={} size_after_apparent={} files_after={}",
        commits + 2,
        u1.user_us - u0.user_us,
        u1.sys_us - u0.sys_us,
        u1.write_bytes - u0.write_bytes,
        u1.cancelled - u0.cancelled,
        u1.wchar - u0.wchar,
        u1.dev_bytes - u0.dev_bytes,
        size_before.0,
        size_before.1,
        size_before.2,
        u2.write_bytes - u1.write_bytes,
        (u2.user_us + u2.sys_us) - (u1.user_us + u1.sys_us),
        size_after.0,
        size_after.1,
        size_after.2,
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn human(b: f64) -> String {
    if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else if b >= 1024.0 {
        format!("{:.0} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

fn bench(args: &[String]) {
    let group: usize = arg(args, "--group", "64").parse().unwrap();
    let rounds: usize = arg(args, "--rounds", "3").parse().unwrap();
    let n: usize = arg(args, "--n", "200000").parse().unwrap();
    let base = PathBuf::from(arg(args, "--dir", "/tmp/queue-engines-data"));
    let settle: u64 = arg(args, "--settle", "3").parse().unwrap();
    let list = arg(args, "--engines", &ENGINES.join(","));
    let engines: Vec<&str> = list.split(',').collect();
    let exe = std::env::current_exe().unwrap();
    let mut results: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    std::fs::create_dir_all(&base).unwrap();
    unsafe { libc::sync() };
    for round in 0..rounds {
        for e in &engines {
            let dir = base.join(format!("{e}-g{group}-r{round}"));
            let _ = std::fs::remove_dir_all(&dir);
            let out = Command::new(&exe)
                .args([
                    "run",
                    "--engine",
                    e,
                    "--group",
                    &group.to_string(),
                    "--n",
                    &n.to_string(),
                    "--dir",
                ])
                .arg(&dir)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let line = stdout
                .lines()
                .find(|l| l.starts_with("RESULT "))
                .unwrap_or_else(|| {
                    panic!(
                        "{e} failed: {}\n{}",
                        stdout,
                        String::from_utf8_lossy(&out.stderr)
                    )
                });
            eprintln!("round {round}: {line}");
            let kv: BTreeMap<String, String> = line[7..]
                .split_whitespace()
                .filter_map(|p| {
                    p.split_once('=')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                })
                .collect();
            results.entry(e.to_string()).or_default().push(kv);
            std::fs::remove_dir_all(&dir).unwrap();
            // let the deletion (ext4 here is mounted with online `discard`) and writeback settle
            unsafe { libc::sync() };
            std::thread::sleep(std::time::Duration::from_secs(settle));
        }
    }
    let _ = std::fs::remove_dir(&base);
    println!("\nGROUP={group}, N={n}, rounds={rounds} (medians)\n");
    println!("| engine | records/s median (best) | commits/s | user µs/rec | sys µs/rec | device write B/rec (/sys/block) | page-cache write B/rec (/proc io write_bytes) | syscall write B/rec (wchar) | commit p50 / p99 µs | size after last ack | final size after reclaim | reclaim time |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for e in &engines {
        let rs = &results[*e];
        let m = |k: &str| median(rs.iter().map(|r| r[k].parse::<f64>().unwrap()).collect());
        let nf = n as f64;
        let wall = m("wall_s");
        println!(
            "| {e} | {:.0} ({:.0}) | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} / {:.0} | {} ({} files) | {} ({} files) | {:.3} s |",
            nf / wall,
            nf / rs.iter().map(|r| r["wall_s"].parse::<f64>().unwrap()).fold(f64::MAX, f64::min),
            m("commits") / wall,
            m("user_us") / nf,
            m("sys_us") / nf,
            m("dev_bytes") / nf,
            m("write_bytes") / nf,
            m("wchar") / nf,
            m("p50_us"),
            m("p99_us"),
            human(m("size_before_alloc")),
            m("files_before"),
            human(m("size_after_alloc")),
            m("files_after"),
            m("reclaim_s"),
        );
    }
    println!("\nraw records/s per round:");
    for e in &engines {
        let v: Vec<String> = results[*e]
            .iter()
            .map(|r| format!("{:.0}", n as f64 / r["wall_s"].parse::<f64>().unwrap()))
            .collect();
        println!("  {e}: {}", v.join(", "));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("run") => {
            let engine = arg(&args, "--engine", "plainfile");
            let group: usize = arg(&args, "--group", "64").parse().unwrap();
            let n: usize = arg(&args, "--n", "200000").parse().unwrap();
            let dir = PathBuf::from(arg(&args, "--dir", "/tmp/queue-engines-data/one"));
            run_one(&engine, group, n, &dir);
        }
        Some("bench") => bench(&args),
        _ => eprintln!("usage: queue-engines bench [--group 64] [--rounds 3] [--n 200000] [--dir /tmp/queue-engines-data] [--engines a,b]\n       queue-engines run --engine E --group G --n N --dir D"),
    }
}
