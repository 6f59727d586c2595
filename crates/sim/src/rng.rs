//! The one source of randomness of a simulated run: SplitMix64, tiny and good enough to draw
//! faults and schedules. Every choice of a seed comes from here, so a seed replays exactly.

use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0). The modulo bias is irrelevant for drawing faults.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high.saturating_sub(low) + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.below(100) < u64::from(percent)
    }
}

/// The run's generator, shared by the driver and the fault wrappers. All tasks run on one
/// thread in a fixed order, so the sequence of draws, and with it the run, follows the seed.
#[derive(Debug, Clone)]
pub struct SharedRng(Arc<Mutex<SimRng>>);

impl SharedRng {
    pub fn new(seed: u64) -> Self {
        Self(Arc::new(Mutex::new(SimRng::new(seed))))
    }

    /// Runs `f` on the generator; the guard never outlives the call, so never an await.
    pub fn with<T>(&self, f: impl FnOnce(&mut SimRng) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn below(&self, n: u64) -> u64 {
        self.with(|rng| rng.below(n))
    }

    pub fn between(&self, low: u64, high: u64) -> u64 {
        self.with(|rng| rng.between(low, high))
    }

    pub fn chance(&self, percent: u32) -> bool {
        self.with(|rng| rng.chance(percent))
    }
}
