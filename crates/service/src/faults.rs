//! Named fault points at the durability boundaries, for the fault-injection tests
//! (`crates/embedded/tests/fault_points.rs`, listed in RELIABILITY.md).
//!
//! Built on the `fail` crate: every point compiles to nothing unless `fail`'s `failpoints`
//! feature is on, which only the tests' dev-dependencies switch on. A test configures a point
//! with `fail::cfg(name, action)`:
//!
//! | action        | effect at an async point (`point`)            | at a blocking point (`injected`) |
//! |---------------|-----------------------------------------------|----------------------------------|
//! | `return`      | a backend error: determinate before the write, indeterminate after it | the same |
//! | `return(250)` | pauses 250 ms with an async sleep, so the caller can be cancelled meanwhile | pauses the thread 250 ms |
//! | `panic`       | panics                                        | panics                           |

use crate::ports::{BackendError, BackendResult};
use std::time::Duration;

/// Whether the write guarded by a point has happened when the point fires: it decides whether
/// an injected error is determinate (nothing changed) or not (the outcome is unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Happened {
    No,
    Yes,
}

/// What a configured point asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    Error,
    Pause(Duration),
}

/// The action configured at `name`, if any. A `panic` action panics here.
pub fn injected(name: &str) -> Option<Injected> {
    #[allow(clippy::redundant_closure_call)]
    let argument: Option<Option<String>> = (|| {
        fail::fail_point!(name, Some);
        let _ = name;
        None
    })();
    let argument = argument?;
    Some(match argument.as_deref().map(str::parse::<u64>) {
        Some(Ok(pause_ms)) => Injected::Pause(Duration::from_millis(pause_ms)),
        _ => Injected::Error,
    })
}

/// The error an injected fault answers with.
pub fn error(name: &str, happened: Happened) -> BackendError {
    let message = format!("fault injected at {name}");
    match happened {
        Happened::No => BackendError::determinate("fault point", message),
        Happened::Yes => BackendError::indeterminate("fault point", message),
    }
}

/// What a point asks of its caller: an error to return, or a pause to take first.
fn consult(name: &str, happened: Happened) -> BackendResult<Option<Duration>> {
    match injected(name) {
        None => Ok(None),
        Some(Injected::Error) => Err(error(name, happened)),
        Some(Injected::Pause(pause)) => Ok(Some(pause)),
    }
}

/// An async fault point: pauses, fails or panics as configured, else returns `Ok` at once.
pub async fn point(name: &str, happened: Happened) -> BackendResult<()> {
    if let Some(pause) = consult(name, happened)? {
        tokio::time::sleep(pause).await;
    }
    Ok(())
}

/// A fault point on a plain thread (the embedded queue's committer): pauses the thread.
pub fn blocking_point(name: &str, happened: Happened) -> BackendResult<()> {
    if let Some(pause) = consult(name, happened)? {
        std::thread::sleep(pause);
    }
    Ok(())
}
