//! The trace of a run: one line per step, answer and injected fault. Two runs of one seed
//! must produce the same trace; a failing seed prints the end of it.

use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default)]
pub struct Trace(Arc<Mutex<Vec<String>>>);

impl Trace {
    /// Appends a line.
    pub fn push(&self, line: impl FnOnce() -> String) {
        let line = line();
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
