//! The real binary as a child process (the crash tests `kill -9` it). It binds port 0 itself
//! and the test reads the address it bound from its "flashsale serving" log line, so no
//! port is picked by the test, dropped and raced for.

use super::{ADMIN_TOKEN, BUYER_SECRET};
use reqwest::StatusCode;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct ServerProcess {
    pub child: Child,
    pub base: String,
    /// Everything the server logged so far (stderr).
    logs: Arc<Mutex<String>>,
    /// Reads stderr until the server exits.
    log_reader: tokio::task::JoinHandle<()>,
}

impl ServerProcess {
    /// `flashsale serve` on `data_dir` with these extra environment variables, logging what
    /// `log_filter` lets through (`RUST_LOG`; it must let in the `flashsale` target's info line
    /// with the address); returns once it is ready.
    pub async fn start(data_dir: &Path, env: &[(&str, &str)], log_filter: &str) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flashsale"));
        // The server reads every FLASHSALE_* variable and refuses unknown ones: keep the test's
        // own knobs (FLASHSALE_KILL_CYCLES, FLASHSALE_TEST_*) away from it.
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FLASHSALE_")) {
            command.env_remove(key);
        }
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("FLASHSALE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("FLASHSALE_BUYER_JWT_SECRET", BUYER_SECRET)
            .env("RUST_LOG", log_filter)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the flashsale binary");
        let logs = Arc::new(Mutex::new(String::new()));
        let (bound, bound_rx) = tokio::sync::oneshot::channel();
        // Reads the logs to their end, so the server never blocks on a full pipe.
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log_reader = tokio::spawn({
            let logs = logs.clone();
            async move {
                let mut bound = Some(bound);
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(addr) = serving_addr(&line)
                        && let Some(bound) = bound.take()
                    {
                        let _ = bound.send(addr);
                    }
                    let mut logs = logs.lock().unwrap();
                    logs.push_str(&line);
                    logs.push('\n');
                }
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(30), bound_rx)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the server never logged its address: {}",
                    logs.lock().unwrap()
                )
            })
            .unwrap_or_else(|_| {
                panic!("the server exited before serving: {}", logs.lock().unwrap())
            });
        let base = format!("http://{addr}");
        let http = reqwest::Client::new();
        for _ in 0..500 {
            if let Ok(response) = http.get(format!("{base}/readyz")).send().await
                && response.status() == StatusCode::OK
            {
                return Self {
                    child,
                    base,
                    logs,
                    log_reader,
                };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the server did not become ready");
    }

    /// SIGKILL: no shutdown hook runs.
    pub async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// Waits for the server to exit (after a signal the test sent) and returns all it logged.
    pub async fn logs_at_exit(mut self) -> String {
        self.child.wait().await.unwrap();
        self.log_reader.await.unwrap();
        std::mem::take(&mut *self.logs.lock().unwrap())
    }
}

/// What a test gives `ServerProcess::start` to hear little but warnings and the address
/// (`flashsale=info` also lets in the few info lines of the flashsale_* crates).
pub const QUIET_LOGS: &str = "warn,flashsale=info";

/// The address in the server's "flashsale serving" log line (text format, colours or not),
/// if this is it.
fn serving_addr(line: &str) -> Option<String> {
    let plain = without_colours(line);
    if !plain.contains("flashsale serving") {
        return None;
    }
    let (_, rest) = plain.split_once("addr=")?;
    rest.split_whitespace().next().map(str::to_owned)
}

/// The line without its ANSI colour sequences (`ESC [ ... m`).
fn without_colours(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}
