//! What the crowd saw: an HDR latency histogram per outcome, counts per status code, and a
//! timeline (requests per outcome per 100 ms, a coarser latency histogram per second) for the
//! live line and the plots. Sharded by worker so recording takes an uncontended lock.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::Mutex;
use std::time::Duration;

/// Slowest latency a histogram holds, in microseconds; slower answers are clamped to it.
pub const LATENCY_US_MAX: u64 = 60_000_000;
/// Width of one timeline bucket of counts, in milliseconds.
pub const TIMELINE_BUCKET_MS: u64 = 100;
/// Width of one timeline bucket of latency, in milliseconds.
pub const LATENCY_BUCKET_MS: u64 = 1000;
/// Shards of the recorder; workers pick one by index.
const SHARDS: usize = 8;

/// The outcome classes a buy is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Outcome {
    /// 202 (200 from the peer)
    Accepted,
    /// 410
    SoldOut,
    /// 409
    Conflict,
    /// 429
    RateLimited,
    /// 503
    Overloaded,
    /// anything else: 401/404 for cheaters, errors, timeouts
    Other,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Accepted,
        Outcome::SoldOut,
        Outcome::Conflict,
        Outcome::RateLimited,
        Outcome::Overloaded,
        Outcome::Other,
    ];

    pub fn of(status: u16) -> Self {
        match status {
            // The peer answers 200 to everything; it stands in for an accepted buy.
            200 | 202 => Outcome::Accepted,
            410 => Outcome::SoldOut,
            409 => Outcome::Conflict,
            429 => Outcome::RateLimited,
            503 => Outcome::Overloaded,
            _ => Outcome::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "202",
            Outcome::SoldOut => "410",
            Outcome::Conflict => "409",
            Outcome::RateLimited => "429",
            Outcome::Overloaded => "503",
            Outcome::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

fn histogram() -> Histogram<u64> {
    // 3 significant figures over 1 µs..60 s: about 150 KiB per histogram, a few dozen of them.
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// The timeline's histograms: 2 significant figures and 32-bit counts (about 10 KiB each), one
/// per second per shard, so a long run stays small.
pub fn coarse_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 2).expect("valid histogram bounds")
}

/// Everything one shard recorded.
#[derive(Clone)]
pub struct Tally {
    pub latency: Vec<Histogram<u64>>,
    /// Answers per HTTP status (index = status code; 0 = no answer at all).
    pub statuses: Vec<u64>,
    /// Answers per outcome per `TIMELINE_BUCKET_MS`, by time since the crowd was released.
    pub timeline: Vec<[u64; 6]>,
    /// Latency of all answers per `LATENCY_BUCKET_MS`.
    pub latency_timeline: Vec<Histogram<u32>>,
}

impl Tally {
    pub fn new() -> Self {
        Self {
            latency: Outcome::ALL.iter().map(|_| histogram()).collect(),
            statuses: vec![0; 600],
            timeline: Vec::new(),
            latency_timeline: Vec::new(),
        }
    }

    fn record(&mut self, status: u16, since_start: Duration, latency: Duration) {
        let outcome = Outcome::of(status);
        let us = (latency.as_micros() as u64).clamp(1, LATENCY_US_MAX);
        self.latency[outcome.index()].saturating_record(us);
        self.statuses[usize::from(status).min(599)] += 1;
        let millis = since_start.as_millis() as u64;
        let slot = (millis / TIMELINE_BUCKET_MS) as usize;
        if self.timeline.len() <= slot {
            self.timeline.resize(slot + 1, [0; 6]);
        }
        self.timeline[slot][outcome.index()] += 1;
        let slot = (millis / LATENCY_BUCKET_MS) as usize;
        if self.latency_timeline.len() <= slot {
            self.latency_timeline
                .resize_with(slot + 1, coarse_histogram);
        }
        self.latency_timeline[slot].saturating_record(us);
    }

    pub fn merge(&mut self, other: &Tally) {
        for (mine, theirs) in self.latency.iter_mut().zip(&other.latency) {
            mine.add(theirs).expect("same bounds");
        }
        for (mine, theirs) in self.statuses.iter_mut().zip(&other.statuses) {
            *mine += theirs;
        }
        if self.timeline.len() < other.timeline.len() {
            self.timeline.resize(other.timeline.len(), [0; 6]);
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(&other.timeline) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a += b;
            }
        }
        if self.latency_timeline.len() < other.latency_timeline.len() {
            self.latency_timeline
                .resize_with(other.latency_timeline.len(), coarse_histogram);
        }
        for (mine, theirs) in self
            .latency_timeline
            .iter_mut()
            .zip(&other.latency_timeline)
        {
            mine.add(theirs).expect("same bounds");
        }
    }

    pub fn count(&self, outcome: Outcome) -> u64 {
        self.latency[outcome.index()].len()
    }

    pub fn total(&self) -> u64 {
        self.latency.iter().map(|h| h.len()).sum()
    }

    pub fn histogram(&self, outcome: Outcome) -> &Histogram<u64> {
        &self.latency[outcome.index()]
    }

    /// All outcomes in one histogram.
    pub fn all(&self) -> Histogram<u64> {
        let mut all = histogram();
        for h in &self.latency {
            all.add(h).expect("same bounds");
        }
        all
    }
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

/// The shared recorder.
pub struct Recorder {
    shards: Vec<Mutex<Tally>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Tally::new())).collect(),
        }
    }

    /// Records one answer (`status` 0 = none: connection error or timeout).
    pub fn record(&self, worker: usize, status: u16, since_start: Duration, latency: Duration) {
        // A poisoned shard only means a worker panicked mid-record; the counts are still usable.
        let mut shard = self.shards[worker % SHARDS]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        shard.record(status, since_start, latency);
    }

    /// A merged copy of everything so far.
    pub fn snapshot(&self) -> Tally {
        let mut total = Tally::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            total.merge(&shard);
        }
        total
    }
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of<T: hdrhistogram::Counter>(h: &Histogram<T>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}
