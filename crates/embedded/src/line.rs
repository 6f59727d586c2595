//! The embedded waiting lines: `flashsale_core::line::Line` per sale, in process.
//!
//! Durability: none yet — a restart loses the lines (members, admissions, buys noted). The
//! durable log is the next step of issue 14; until it lands the service refuses a restart
//! with a live line rather than reorder it silently (see `Shop::line_lost`).

use async_trait::async_trait;
use flashsale_core::line::{
    AdmitInputs, DrawKey, Line, LineControl, LineId, LineSummary, LineTimes, Place, Standing,
};
use flashsale_core::{SaleId, Timestamp};
use flashsale_service::{BackendResult, LineAnswer, LineRefused, WaitingLine};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Every sale's line, in process.
#[derive(Default)]
pub struct InProcessLine {
    lines: Mutex<HashMap<SaleId, Line>>,
}

impl InProcessLine {
    pub fn new() -> Self {
        Self::default()
    }

    fn lines(&self) -> MutexGuard<'_, HashMap<SaleId, Line>> {
        // A panic while holding the lock left a line mid-change only in ways `Line`'s own
        // assertions allow (each change is one call); keep serving.
        self.lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn with<T>(&self, sale: SaleId, f: impl FnOnce(&mut Line) -> T) -> LineAnswer<T> {
        let mut lines = self.lines();
        let line = lines.get_mut(&sale).ok_or(LineRefused::NotSetUp)?;
        Ok(f(line))
    }
}

#[async_trait]
impl WaitingLine for InProcessLine {
    async fn set_up(&self, sale: SaleId, times: LineTimes) -> BackendResult<()> {
        let mut lines = self.lines();
        match lines.get_mut(&sale) {
            Some(line) => line.set_times(times),
            None => {
                lines.insert(sale, Line::new(times));
            }
        }
        Ok(())
    }

    async fn join(
        &self,
        sale: SaleId,
        line: LineId,
        key: DrawKey,
        now: Timestamp,
    ) -> BackendResult<LineAnswer<Place>> {
        Ok(self
            .with(sale, |l| l.join(line, key, now))
            .and_then(|joined| joined.map_err(LineRefused::from)))
    }

    async fn place(
        &self,
        sale: SaleId,
        line: LineId,
        now: Timestamp,
    ) -> BackendResult<LineAnswer<Option<Place>>> {
        Ok(self.with(sale, |l| {
            l.draw_if_due(now);
            l.place(&line)
        }))
    }

    async fn advance(
        &self,
        sale: SaleId,
        now: Timestamp,
        inputs: AdmitInputs,
    ) -> BackendResult<LineAnswer<LineSummary>> {
        Ok(self.with(sale, |l| {
            l.advance(now, inputs);
            l.summary(now)
        }))
    }

    async fn standing(
        &self,
        sale: SaleId,
        line: LineId,
        now: Timestamp,
        inputs: AdmitInputs,
    ) -> BackendResult<LineAnswer<Option<Standing>>> {
        Ok(self.with(sale, |l| {
            l.draw_if_due(now);
            l.standing(&line, now, inputs)
        }))
    }

    async fn record_bought(&self, sale: SaleId, position: u64) -> BackendResult<LineAnswer<()>> {
        Ok(self.with(sale, |l| l.record_bought(position)))
    }

    async fn set_control(
        &self,
        sale: SaleId,
        control: LineControl,
    ) -> BackendResult<LineAnswer<()>> {
        Ok(self.with(sale, |l| l.set_control(control)))
    }

    async fn members(
        &self,
        sale: SaleId,
        from: u64,
        limit: usize,
    ) -> BackendResult<LineAnswer<Vec<LineId>>> {
        Ok(self.with(sale, |l| {
            let start = usize::try_from(from.saturating_sub(1)).unwrap_or(usize::MAX);
            l.members()
                .iter()
                .skip(start)
                .take(limit)
                .copied()
                .collect()
        }))
    }
}
