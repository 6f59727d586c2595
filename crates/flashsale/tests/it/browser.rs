//! The pages in a real browser: starts a server on the system clock (the pages count down in
//! real time) and runs `tests/browser/pages.test.mjs` against it in headless Chromium, driven
//! by playwright-core. Screenshots land in `target/screenshots/` (not committed).
//!
//! Missing Chromium, Node.js or the scripts' `node_modules` fail this test with the command
//! that fixes it; it never skips (`scripts/test` installs all of them, then runs the tests).

use crate::support::{ADMIN_TOKEN, test_env};
use flashsale::app;
use flashsale::config::{Config, FlagOverrides};
use flashsale_service::SystemClock;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Debian's Chromium; `CHROMIUM` overrides it.
const CHROMIUM_DEFAULT: &str = "/usr/bin/chromium";
/// The whole browser run, Chromium's start included.
const BROWSER_RUN_SECS_MAX: u64 = 300;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Panics, naming the fix, unless Chromium and the scripts' dependencies are installed.
fn check_prerequisites(scripts: &Path, chromium: &Path) {
    const FIX: &str = "run `scripts/test` (it installs what is missing, then runs the tests)";
    assert!(
        chromium.is_file(),
        "the browser tests need Chromium at {}: {FIX}, or `apt-get install -y chromium`",
        chromium.display()
    );
    let read = |path: PathBuf| -> Option<Value> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    };
    let wanted = read(scripts.join("package.json"))
        .and_then(|p| {
            p["dependencies"]["playwright-core"]
                .as_str()
                .map(str::to_owned)
        })
        .expect("tests/browser/package.json names playwright-core");
    let installed = read(scripts.join("node_modules/playwright-core/package.json"))
        .and_then(|p| p["version"].as_str().map(str::to_owned));
    assert!(
        installed.as_deref() == Some(wanted.as_str()),
        "the browser tests need playwright-core {wanted} in tests/browser/node_modules (found \
         {installed:?}): {FIX}, or `npm ci --prefix tests/browser`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sale_page_and_dashboard_work_in_headless_chromium() {
    let root = workspace_root();
    let scripts = root.join("tests/browser");
    let chromium = std::env::var_os("CHROMIUM").map_or(CHROMIUM_DEFAULT.into(), PathBuf::from);
    check_prerequisites(&scripts, &chromium);

    let dir = tempfile::tempdir().expect("temp dir");
    let flags = FlagOverrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().join("data")),
        dev_login: Some(true),
        ..Default::default()
    };
    // The status micro-cache as in production: the pages must cope with its slightly old time.
    let env = test_env(&[("FLASHSALE_FILTERS__STATUS_CACHE_MS", "100")]);
    let config = Config::load(None, env, &flags).expect("config");
    let server = app::start_with_clock(&config, Arc::new(SystemClock))
        .await
        .expect("server starts");

    let screenshots = root.join("target/screenshots");
    let started = Instant::now();
    let child = tokio::process::Command::new("node")
        .args(["--test-reporter=spec", "pages.test.mjs"])
        .current_dir(&scripts)
        .env("FLASHSALE_URL", format!("http://{}", server.addr))
        .env("FLASHSALE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SCREENSHOT_DIR", &screenshots)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `node` ({e}): install Node.js 20 or later (`apt-get install -y nodejs npm`), or run `scripts/test`")
        });
    let output = tokio::time::timeout(
        Duration::from_secs(BROWSER_RUN_SECS_MAX),
        child.wait_with_output(),
    )
    .await
    .unwrap_or_else(|_| panic!("the browser tests took over {BROWSER_RUN_SECS_MAX} s"))
    .expect("node ran");
    server.stop().await;

    // Shown by `cargo test` on failure, or always with `-- --nocapture`.
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    println!(
        "browser tests took {:.1} s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        screenshots.display()
    );
    assert!(
        output.status.success(),
        "the browser tests failed ({}); their output is above",
        output.status
    );
}
