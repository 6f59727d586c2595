//! The simulated wall clock: tokio's paused clock plus jumps the simulation makes.

use flashsale_core::Timestamp;
use flashsale_service::Clock;
use std::sync::atomic::{AtomicI64, Ordering};
use time::Duration;

/// Wall time of a simulated run. It moves with tokio's (paused, auto-advancing) clock, so the
/// service's sleeps (writers, reaper) and its timestamps stay in step, and it jumps when the
/// simulation says so (a clock step around the sale's start, end or a payment deadline).
#[derive(Debug)]
pub struct SimClock {
    origin_wall: Timestamp,
    origin_tokio: tokio::time::Instant,
    /// Sum of all jumps, in milliseconds (negative: the clock was stepped back).
    jumped_ms: AtomicI64,
}

impl SimClock {
    /// Must be called inside the run's runtime (it reads tokio's clock).
    pub fn new(origin_wall: Timestamp) -> Self {
        Self {
            origin_wall,
            origin_tokio: tokio::time::Instant::now(),
            jumped_ms: AtomicI64::new(0),
        }
    }

    /// Steps the wall clock by `by` (either way); tokio's clock does not move.
    pub fn jump(&self, by: Duration) {
        let ms = i64::try_from(by.whole_milliseconds()).unwrap_or(i64::MAX);
        self.jumped_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Steps the wall clock to `at` if that is later than now.
    pub fn jump_forward_to(&self, at: Timestamp) {
        let now = self.now();
        if at > now {
            self.jump(at - now);
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        let elapsed = tokio::time::Instant::now() - self.origin_tokio;
        let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::MAX);
        self.origin_wall + elapsed + Duration::milliseconds(self.jumped_ms.load(Ordering::Relaxed))
    }
}
