//! The fair line in front of a sale's buy path: joining, where a buyer stands, the admission
//! tickets the buy path checks, and the admins' control. The rules are `core::line::Line`'s;
//! the line itself is kept by the `WaitingLine` port (in process, or in Redis).
//!
//! What a poll costs: `line/me` is what every waiting browser asks, so for a buyer not yet
//! admitted it reads only this node's copy of the line's summary (refreshed at most every
//! `LINE_SUMMARY_CACHE_MS`, which is also when the counter advances from this node) and the
//! buyer's position (fixed once drawn, kept in a bounded per-node cache). Only an admitted
//! position asks the line for its exact standing.

use super::line_log::{Chains, Receipt};
use super::table::SaleSlot;
use super::{ServiceError, Shop};
use crate::ports::{AdmitInputs, LineRefused, LineSummary, Place, Standing};
use flashsale_core::line::{self, AdmitRate, JoinProof, LineControl, LineId};
use flashsale_core::line_log::Head;
use flashsale_core::pow::ChallengeRefused;
use flashsale_core::tokens::{Admission, TicketRefused};
use flashsale_core::{BuyerId, Phase, Sale, SaleId, Timestamp};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a node answers `line/me` from its copy of a line's summary.
pub(crate) const LINE_SUMMARY_CACHE_MS: u64 = 250;
/// Members a node remembers (`Known`), across sales.
pub(crate) const LINE_POSITIONS_CACHED_MAX: usize = 1_000_000;

/// What a node knows of a line member; each part is fixed once known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Known {
    /// After the draw.
    pub(super) position: Option<u64>,
    pub(super) receipt: Option<Receipt>,
}
/// "auto" admits at least this many buyers per second, so a line starts moving before the
/// durable path has measured anything.
pub(crate) const AUTO_ADMIT_PER_SEC_MIN: u32 = 50;
/// "auto" admits at most this many.
pub(crate) const AUTO_ADMIT_PER_SEC_MAX: u32 = line::ADMIT_PER_SEC_MAX;
/// How often "auto" measures the accepted buys per second.
const AUTO_SAMPLE_MS: u64 = 1000;
/// "auto" halves its rate while the writers run this far behind the buyers' 202s.
const AUTO_WRITER_LAG_MS_MAX: u64 = 2000;
/// How long a proof-of-work challenge may be solved and used, in seconds: long enough for a
/// slow phone at the hardest difficulty a sale should ask, short enough that a challenge
/// hoarded before a sale is worth little.
pub const CHALLENGE_EXPIRES_SECS: i64 = 300;
/// The window over which a node measures the line's join rate (for a rising difficulty).
const JOIN_RATE_SAMPLE_MS: i128 = 1000;

/// A join's proof of work, as the buyer sent it (`pow`'s rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinSolution {
    pub challenge: String,
    pub nonce: String,
}

/// A challenge to solve before joining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineChallenge {
    pub challenge: String,
    pub difficulty_bits: u8,
    pub expires_at: Timestamp,
}

/// Where a buyer stands, as `line/me` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineMe {
    pub standing: Standing,
    pub admitted_up_to: u64,
    /// Seconds until this position is likely admitted (waiting), or until the draw
    /// (pre-queue).
    pub eta_secs: Option<u64>,
    /// The admission ticket, which is the buy path's token while admitted.
    pub buy_token: Option<String>,
    pub admitted_until: Option<Timestamp>,
    /// How long to wait before asking again.
    pub poll_after_secs: u64,
    /// The buyer's receipt: their join's place and hash in the join chain.
    pub receipt: Option<Receipt>,
}

/// The answer to a join or a `line/me`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineOutcome {
    /// Boxed: the refusals are small and travel in `Result`s.
    Standing(Box<LineMe>),
    UnknownSale,
    /// The sale has no waiting room.
    NoLine,
    NotOpen,
    Ended,
    /// `line/me` of a buyer who never joined.
    NotInLine,
    /// A newcomer's join without the proof of work the sale asks.
    ChallengeRequired,
    /// The challenge already bought a place.
    ChallengeUsed,
    /// The challenge or its solution is not good.
    Challenge(ChallengeRefused),
    /// The line's state is gone (a Redis that restarted empty); nobody's place can be told,
    /// so nobody is told a wrong one.
    Lost,
}

/// The line as the status endpoint and the admin view show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineStatus {
    pub opens_at: Timestamp,
    /// The SHA-256 of the seed, from the moment the line opens.
    pub commitment: Option<String>,
    /// The proof of work a new place costs now (0: none).
    pub pow_difficulty_bits: u8,
    /// The seed, once the sale has started.
    pub seed: Option<String>,
    /// This node's latest copy of the summary (none before anyone asked).
    pub summary: Option<LineSummary>,
    /// The admission rate in force now (the admins' override, or the sale's; "auto" measured).
    pub admit_per_sec: u32,
    pub lost: bool,
    /// The chains' heads as far as this node has read them (none before it has).
    pub joins_head: Option<Head>,
    pub events_head: Option<Head>,
}

/// Per sale, on this node: the latest summary and the "auto" rate's measurement.
#[derive(Default)]
pub(super) struct LineCache {
    /// The summary and the inputs it was advanced with, and when (the shop's clock, so a
    /// test that moves the clock sees the line move at once).
    summary: std::sync::Mutex<Option<(Timestamp, LineSummary, AdmitInputs)>>,
    auto: std::sync::Mutex<AutoRate>,
    joins: std::sync::Mutex<JoinRate>,
    /// This node's copy of the line's chains (`line_log.rs`).
    pub(super) chains: Chains,
    /// The draw's keyed HMAC (the seed never changes for a sale): a join needs its draw key.
    draw_keys: std::sync::OnceLock<line::DrawKeys>,
}

/// The line's join rate as this node sees it: members added between two summaries at least
/// `JOIN_RATE_SAMPLE_MS` apart (every node's joins count, since the summary is the line's).
#[derive(Default)]
struct JoinRate {
    sampled: Option<(Timestamp, u64)>,
    per_sec: u64,
}

#[derive(Default)]
struct AutoRate {
    sampled: Option<(Instant, u64)>,
    rate: u32,
}

impl LineCache {
    fn fresh_summary(&self, now: Timestamp) -> Option<(LineSummary, AdmitInputs)> {
        let cached = self.summary.lock().unwrap_or_else(|e| e.into_inner());
        let fresh_ms = LINE_SUMMARY_CACHE_MS as i128;
        cached
            .filter(|(at, ..)| (0..fresh_ms).contains(&((now - *at).whole_milliseconds())))
            .map(|(_, summary, inputs)| (summary, inputs))
    }

    pub(super) fn latest_summary(&self) -> Option<LineSummary> {
        self.summary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|(_, summary, _)| summary)
    }

    fn keep(&self, now: Timestamp, summary: LineSummary, inputs: AdmitInputs) {
        *self.summary.lock().unwrap_or_else(|e| e.into_inner()) = Some((now, summary, inputs));
        let mut joins = self.joins.lock().unwrap_or_else(|e| e.into_inner());
        match joins.sampled {
            Some((at, length)) => {
                let elapsed_ms = (now - at).whole_milliseconds();
                if elapsed_ms >= JOIN_RATE_SAMPLE_MS {
                    let added = summary.length.saturating_sub(length);
                    joins.per_sec = (i128::from(added) * 1000 / elapsed_ms) as u64;
                    joins.sampled = Some((now, summary.length));
                } else if elapsed_ms < 0 {
                    // The clock went back (a test's, or a stepped one): start again.
                    joins.sampled = Some((now, summary.length));
                }
            }
            None => joins.sampled = Some((now, summary.length)),
        }
    }

    fn joins_per_sec(&self) -> u64 {
        self.joins.lock().map(|j| j.per_sec).unwrap_or(0)
    }

    /// The admins changed the control on this node: the next poll advances with it at once.
    /// (Another node learns it from its next refresh, and uses it from the one after.)
    fn stale_with(&self, control: LineControl) {
        let mut cached = self.summary.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, summary, _)) = cached.as_mut() {
            *at = Timestamp::UNIX_EPOCH;
            summary.control = control;
        }
    }
}

impl Shop {
    /// A proof-of-work challenge for this buyer in this sale's line, at the difficulty a new
    /// place costs now. Costs no state: the challenge is signed (`pow::ChallengeSigner`).
    pub fn line_challenge(
        &self,
        sale_id: SaleId,
        buyer: &BuyerId,
    ) -> Result<LineChallenge, LineOutcome> {
        let (slot, now) = self.open_line(sale_id)?;
        if slot
            .sale
            .line_times()
            .is_some_and(|times| now >= times.ends_at)
        {
            return Err(LineOutcome::Ended);
        }
        let difficulty_bits = self.pow_difficulty_bits(&slot);
        let expires_at = now + time::Duration::seconds(CHALLENGE_EXPIRES_SECS);
        let salt: [u8; 8] = uuid::Uuid::new_v4().as_bytes()[..8]
            .try_into()
            .expect("8 bytes");
        let line = LineId::of(sale_id, buyer);
        let challenge =
            self.challenge_signer
                .issue(sale_id, &line, difficulty_bits, expires_at, salt);
        Ok(LineChallenge {
            challenge,
            difficulty_bits,
            expires_at,
        })
    }

    /// The difficulty a new place in this sale's line costs now.
    fn pow_difficulty_bits(&self, slot: &SaleSlot) -> u8 {
        slot.sale.spec.waiting_room.as_ref().map_or(0, |room| {
            room.pow_difficulty_bits_at(slot.shared.line.joins_per_sec())
        })
    }

    /// Joins a sale's line (idempotent per buyer) and tells where the buyer stands. When the
    /// sale asks a proof of work, a newcomer brings a solved challenge; a member needs none.
    pub async fn line_join(
        self: &Arc<Self>,
        sale_id: SaleId,
        buyer: &BuyerId,
        solution: Option<&JoinSolution>,
    ) -> Result<LineOutcome, ServiceError> {
        let (slot, now) = match self.open_line(sale_id) {
            Ok(open) => open,
            Err(outcome) => return Ok(outcome),
        };
        if slot
            .sale
            .line_times()
            .is_some_and(|times| now >= times.ends_at)
        {
            return Ok(LineOutcome::Ended);
        }
        let line = LineId::of(sale_id, buyer);
        let asks_proof = slot.sale.spec.waiting_room.as_ref().is_some_and(|room| {
            room.pow_difficulty_bits_max
                .unwrap_or(room.pow_difficulty_bits)
                > 0
        });
        let proof = match (asks_proof, solution) {
            (false, _) => JoinProof::NotAsked,
            (true, None) => JoinProof::Missing,
            (true, Some(solution)) => match self.challenge_signer.check_solution(
                sale_id,
                &line,
                &solution.challenge,
                &solution.nonce,
                now,
            ) {
                Ok(info) => JoinProof::Solved(info.id),
                Err(refused) => return Ok(LineOutcome::Challenge(refused)),
            },
        };
        let key = slot
            .shared
            .line
            .draw_keys
            .get_or_init(|| self.line_signer.seed(sale_id).draw_keys())
            .of(&line);
        let joined = self
            .backends
            .line
            .join_with(sale_id, line, key, now, proof)
            .await?;
        match joined {
            Ok(place) => {
                let known = self.known(sale_id, line);
                self.line_me_at(&slot, line, place, known, now).await
            }
            Err(refused) => Ok(self.refused(&slot, refused, now)),
        }
    }

    /// Where a buyer stands in a sale's line.
    pub async fn line_me(
        self: &Arc<Self>,
        sale_id: SaleId,
        buyer: &BuyerId,
    ) -> Result<LineOutcome, ServiceError> {
        let (slot, now) = match self.open_line(sale_id) {
            Ok(open) => open,
            Err(outcome) => return Ok(outcome),
        };
        let line = LineId::of(sale_id, buyer);
        let known = self.known(sale_id, line);
        let place = match known.position {
            Some(position) => Place::Position(position),
            None => match self.backends.line.place(sale_id, line, now).await? {
                Ok(Some(place)) => place,
                Ok(None) => return Ok(LineOutcome::NotInLine),
                Err(refused) => return Ok(self.refused(&slot, refused, now)),
            },
        };
        self.line_me_at(&slot, line, place, known, now).await
    }

    /// What this node knows of a member (nothing yet for a stranger).
    fn known(&self, sale_id: SaleId, line: LineId) -> Known {
        self.members.get(&(sale_id, line)).unwrap_or_default()
    }

    /// The sale's slot and the time, if the sale exists, has a line, and the line is open.
    fn open_line(&self, sale_id: SaleId) -> Result<(Arc<SaleSlot>, Timestamp), LineOutcome> {
        let slot = self.table.get(sale_id).ok_or(LineOutcome::UnknownSale)?;
        let times = slot.sale.line_times().ok_or(LineOutcome::NoLine)?;
        let now = self.now();
        if now < times.opens_at {
            return Err(LineOutcome::NotOpen);
        }
        Ok((slot, now))
    }

    /// Where a member stands, from their `place` and what this node knew of them (`known`,
    /// which it keeps with whatever this answer learned).
    async fn line_me_at(
        &self,
        slot: &SaleSlot,
        line: LineId,
        place: Place,
        known: Known,
        now: Timestamp,
    ) -> Result<LineOutcome, ServiceError> {
        let sale = &slot.sale;
        let (summary, inputs) = match self.line_summary(slot, now).await? {
            Ok(pair) => pair,
            Err(refused) => return Ok(self.refused(slot, refused, now)),
        };
        let until_start_secs = (sale.spec.starts_at - now).whole_seconds().max(0) as u64;
        let standing = match place {
            Place::PreQueue if !summary.drawn => Standing::PreQueue,
            Place::PreQueue => {
                // Drawn since this buyer last asked: the exact answer, and its position kept.
                match self.exact_standing(slot, line, now, inputs).await? {
                    Ok(Some(standing)) => standing,
                    Ok(None) => return Ok(LineOutcome::NotInLine),
                    Err(refused) => return Ok(self.refused(slot, refused, now)),
                }
            }
            Place::Position(position) if position > summary.admitted_up_to => {
                let ahead = position - summary.admitted_up_to - 1;
                let reach =
                    (inputs.units_left + inputs.units_returnable).saturating_sub(summary.holders);
                if ahead >= reach {
                    Standing::SoldOut { position, ahead }
                } else {
                    Standing::Waiting { position, ahead }
                }
            }
            Place::Position(_) => match self.exact_standing(slot, line, now, inputs).await? {
                Ok(Some(standing)) => standing,
                Ok(None) => return Ok(LineOutcome::NotInLine),
                Err(refused) => return Ok(self.refused(slot, refused, now)),
            },
        };
        let mut learned = known;
        if let Some(position) = standing_position(&standing) {
            learned.position = Some(position);
        }
        let eta_secs = match standing {
            Standing::PreQueue => Some(until_start_secs),
            Standing::Waiting { ahead, .. } => Some(line::eta_secs(ahead, inputs.rate_per_sec)),
            _ => None,
        };
        let (buy_token, admitted_until) = match standing {
            Standing::Admitted { position, until } => (
                Some(
                    self.line_signer
                        .ticket(sale.id, &line, Admission { position, until }),
                ),
                Some(until),
            ),
            _ => (None, None),
        };
        let poll_after_secs = line::poll_after_secs(
            &standing,
            eta_secs.unwrap_or(0),
            until_start_secs,
            sale.spec
                .waiting_room
                .as_ref()
                .map_or(line::ADMISSION_SECS_MAX, |r| r.admission_secs),
        );
        let receipt = match known.receipt {
            Some(receipt) => Some(receipt),
            None => match self.receipt(slot, line).await? {
                Ok(receipt) => receipt,
                Err(refused) => return Ok(self.refused(slot, refused, now)),
            },
        };
        learned.receipt = receipt;
        if learned != known {
            self.members.insert((sale.id, line), learned);
        }
        Ok(LineOutcome::Standing(Box::new(LineMe {
            standing,
            admitted_up_to: summary.admitted_up_to,
            eta_secs,
            buy_token,
            admitted_until,
            poll_after_secs,
            receipt,
        })))
    }

    async fn exact_standing(
        &self,
        slot: &SaleSlot,
        line: LineId,
        now: Timestamp,
        inputs: AdmitInputs,
    ) -> Result<Result<Option<Standing>, LineRefused>, ServiceError> {
        Ok(self
            .backends
            .line
            .standing(slot.sale.id, line, now, inputs)
            .await?)
    }

    /// This node's copy of the line's summary, advancing the line when the copy is stale.
    async fn line_summary(
        &self,
        slot: &SaleSlot,
        now: Timestamp,
    ) -> Result<Result<(LineSummary, AdmitInputs), LineRefused>, ServiceError> {
        let cache = &slot.shared.line;
        if let Some(fresh) = cache.fresh_summary(now) {
            return Ok(Ok(fresh));
        }
        let inputs = self.admit_inputs(slot, cache.latest_summary()).await?;
        let advanced = self
            .backends
            .line
            .advance(slot.sale.id, now, inputs)
            .await?;
        let Ok(summary) = advanced else {
            return Ok(advanced.map(|summary| (summary, inputs)));
        };
        cache.keep(now, summary, inputs);
        self.refresh_chains(slot).await;
        Ok(Ok((summary, inputs)))
    }

    /// The line's summary now (this node's copy if fresh), or why there is none.
    pub(super) async fn line_summary_now(
        &self,
        slot: &SaleSlot,
        now: Timestamp,
    ) -> Result<Result<LineSummary, LineOutcome>, ServiceError> {
        Ok(match self.line_summary(slot, now).await? {
            Ok((summary, _)) => Ok(summary),
            Err(refused) => Err(self.refused(slot, refused, now)),
        })
    }

    /// What the line needs to know of the sale now: the rate and the units.
    async fn admit_inputs(
        &self,
        slot: &SaleSlot,
        summary: Option<LineSummary>,
    ) -> Result<AdmitInputs, ServiceError> {
        let sale = &slot.sale;
        let available = u64::from(self.backends.stock.available(sale.id).await?);
        let rate = summary
            .and_then(|s| s.control.rate)
            .or_else(|| sale.spec.waiting_room.as_ref().map(|r| r.admit_per_sec))
            .unwrap_or(AdmitRate::Auto);
        Ok(AdmitInputs {
            rate_per_sec: match rate {
                AdmitRate::Fixed(rate) => rate,
                AdmitRate::Auto => self.auto_rate(slot),
            },
            units_left: available,
            // Every unit taken may still come back until it is paid; counting the paid ones
            // too (this node does not read the store here) only tells a buyer "sold out"
            // later, never wrongly.
            units_returnable: u64::from(sale.spec.stock).saturating_sub(available),
        })
    }

    /// "auto": twice the buys this node made durable per second over the last sample, at
    /// least `AUTO_ADMIT_PER_SEC_MIN`, halved while the durable queue is over half full and
    /// halved again while the writers run more than `AUTO_WRITER_LAG_MS_MAX` behind, so the
    /// line never lets through faster than the durable path keeps up.
    fn auto_rate(&self, slot: &SaleSlot) -> u32 {
        let queued = slot
            .shared
            .stats
            .snapshot()
            .get(crate::layers::Layer::Queued);
        let mut auto = slot
            .shared
            .line
            .auto
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match auto.sampled {
            Some((at, before))
                if now.duration_since(at) >= Duration::from_millis(AUTO_SAMPLE_MS) =>
            {
                let secs = now.duration_since(at).as_secs_f64();
                let per_sec = (queued.saturating_sub(before) as f64 / secs) as u64;
                let mut rate = per_sec.saturating_mul(2).clamp(
                    u64::from(AUTO_ADMIT_PER_SEC_MIN),
                    u64::from(AUTO_ADMIT_PER_SEC_MAX),
                ) as u32;
                let queue = &self.backends.queue;
                if queue.depth() * 2 > queue.capacity() {
                    rate = (rate / 2).max(1);
                }
                if self.writers.lag_ms() > AUTO_WRITER_LAG_MS_MAX {
                    rate = (rate / 2).max(1);
                }
                auto.rate = rate;
                auto.sampled = Some((now, queued));
            }
            Some(_) => {}
            None => {
                auto.rate = AUTO_ADMIT_PER_SEC_MIN;
                auto.sampled = Some((now, queued));
            }
        }
        auto.rate
    }

    pub(super) fn refused(
        &self,
        slot: &SaleSlot,
        refused: LineRefused,
        now: Timestamp,
    ) -> LineOutcome {
        match refused {
            LineRefused::NotOpen => LineOutcome::NotOpen,
            LineRefused::Ended => LineOutcome::Ended,
            LineRefused::ProofMissing => LineOutcome::ChallengeRequired,
            LineRefused::ChallengeUsed => LineOutcome::ChallengeUsed,
            LineRefused::NotSetUp => {
                self.line_lost(slot, now);
                LineOutcome::Lost
            }
        }
    }

    /// The backend has no line for a sale whose line is open: its state is gone. Said loudly,
    /// once per sale and node; every line answer for it is then `Lost` (503).
    fn line_lost(&self, slot: &SaleSlot, now: Timestamp) {
        if !slot.shared.line_lost.swap(true, Ordering::AcqRel) {
            tracing::error!(
                sale_id = %slot.sale.id,
                %now,
                "the sale's waiting line is gone from its backend (a Redis that restarted empty?); joins, line/me and buys answer 503 line_lost until an admin decides (see README: the line)"
            );
        }
    }

    /// Sets a sale's line up in its backend after this node created or changed the sale
    /// (`changed`), or checks that it is there (recovery, a change seen from another node).
    /// A line that should hold members and is missing is lost, never set up empty in its place.
    pub(super) async fn set_up_line(&self, sale: &Sale, changed: bool) -> Result<(), ServiceError> {
        let Some(times) = sale.line_times() else {
            return Ok(());
        };
        let now = self.now();
        if changed || now < times.opens_at {
            self.backends.line.set_up(sale.id, times).await?;
            return Ok(());
        }
        if now >= times.ends_at {
            return Ok(());
        }
        if let Err(LineRefused::NotSetUp) = self.backends.line.members(sale.id, 1, 0).await?
            && let Some(slot) = self.table.get(sale.id)
        {
            self.line_lost(&slot, now);
        }
        Ok(())
    }

    /// Checks a buy's admission ticket (the buy path's token when the sale has a line).
    pub(super) fn check_ticket(
        &self,
        slot: &SaleSlot,
        buyer: &BuyerId,
        ticket: &str,
        now: Timestamp,
    ) -> Result<Admission, TicketRefused> {
        let line = LineId::of(slot.sale.id, buyer);
        self.line_signer.verify(slot.sale.id, &line, ticket, now)
    }

    /// Notes that `position` bought, so its holder stops holding.
    pub(super) async fn line_bought(&self, sale: SaleId, position: u64) {
        match self.backends.line.record_bought(sale, position).await {
            Ok(Ok(())) => {}
            Ok(Err(refused)) => {
                tracing::warn!(sale_id = %sale, position, %refused, "could not note a buy in the line")
            }
            Err(error) => {
                // Only costs the line: the position holds until its admission ends.
                tracing::warn!(sale_id = %sale, position, %error, "could not note a buy in the line")
            }
        }
    }

    /// The admins pause, resume or re-rate a line.
    /// Answers `Err` with why not (no such sale, no line, lost).
    pub async fn set_line_control(
        &self,
        sale_id: SaleId,
        control: LineControl,
    ) -> Result<Result<(), LineOutcome>, ServiceError> {
        let Some(slot) = self.table.get(sale_id) else {
            return Ok(Err(LineOutcome::UnknownSale));
        };
        if slot.sale.spec.waiting_room.is_none() {
            return Ok(Err(LineOutcome::NoLine));
        }
        match self.backends.line.set_control(sale_id, control).await? {
            Ok(()) => {
                slot.shared.line.stale_with(control);
                Ok(Ok(()))
            }
            Err(refused) => Ok(Err(self.refused(&slot, refused, self.now()))),
        }
    }

    /// The line as the status endpoint shows it (memory only).
    pub(super) fn line_status(&self, slot: &SaleSlot, now: Timestamp) -> Option<LineStatus> {
        let room = slot.sale.spec.waiting_room.as_ref()?;
        let times = slot.sale.line_times()?;
        let seed = self.line_signer.seed(slot.sale.id);
        let summary = slot.shared.line.latest_summary();
        let heads = slot.shared.line.chains.heads();
        let rate = summary
            .and_then(|s| s.control.rate)
            .unwrap_or(room.admit_per_sec);
        Some(LineStatus {
            opens_at: times.opens_at,
            commitment: (now >= times.opens_at).then(|| seed.commitment()),
            pow_difficulty_bits: self.pow_difficulty_bits(slot),
            seed: (now >= times.starts_at).then(|| seed.to_hex()),
            summary,
            admit_per_sec: match rate {
                AdmitRate::Fixed(rate) => rate,
                AdmitRate::Auto => slot.shared.line.auto.lock().map(|a| a.rate).unwrap_or(0),
            },
            lost: slot.shared.line_lost.load(Ordering::Acquire),
            joins_head: heads.map(|(joins, _)| joins),
            events_head: heads.map(|(_, events)| events),
        })
    }

    /// The line for the admin view: advanced now (not from the cache).
    pub async fn line_view(&self, sale_id: SaleId) -> Result<Option<LineStatus>, ServiceError> {
        let Some(slot) = self.table.get(sale_id) else {
            return Ok(None);
        };
        if slot.sale.spec.waiting_room.is_none() {
            return Ok(None);
        }
        let now = self.now();
        if now >= slot.sale.line_times().map_or(now, |t| t.opens_at)
            && slot.sale.phase(now, true) != Phase::Ended
        {
            let inputs = self
                .admit_inputs(&slot, slot.shared.line.latest_summary())
                .await?;
            match self.backends.line.advance(sale_id, now, inputs).await? {
                Ok(summary) => slot.shared.line.keep(now, summary, inputs),
                Err(refused) => {
                    self.refused(&slot, refused, now);
                }
            }
        }
        Ok(self.line_status(&slot, now))
    }
}

fn standing_position(standing: &Standing) -> Option<u64> {
    match *standing {
        Standing::PreQueue => None,
        Standing::Waiting { position, .. }
        | Standing::Admitted { position, .. }
        | Standing::Bought { position }
        | Standing::Passed { position }
        | Standing::SoldOut { position, .. } => Some(position),
    }
}
