//! `RedisLine`: the scaled-out waiting line, `flashsale_core::line::Line`'s rules run as Lua
//! scripts over one sale's keys (`layout.rs` documents them), so every node shares exactly one
//! place per buyer and one admission counter per sale.
//!
//! Each `WaitingLine` operation is one script call, so it is atomic however many nodes call at
//! once: concurrent joins get gap-free positions, and two nodes advancing at the same moment
//! admit once. `members` is the exception that needs none: it reads a line after the draw,
//! whose positions never change, in bounded pages.
//!
//! Times are the caller's, passed in whole Unix milliseconds (floored); the scripts never read
//! Redis's clock, and `advance` never moves the line's time backwards (`Line::advance`).
//!
//! A Redis that restarted empty has no `line:meta`, so every call answers
//! `LineRefused::NotSetUp`: a lost line is never mistaken for an empty one. What that means
//! (refusing with "line lost", or setting it up again while nobody can have joined) is the
//! service's decision.

use crate::connect;
use crate::layout::{LUA_EXACT_MAX, LineKeys, draw_key_hex, encode_rate};
use crate::scripts::LineScripts;
use crate::{RedisStockConfig, RedisStockOpenError, redis_error};
use async_trait::async_trait;
use flashsale_core::line::{
    AdmitInputs, DrawKey, JoinProof, JoinRecord, LineControl, LineEvent, LineId, LineSummary,
    LineTimes, Place, Standing,
};
use flashsale_core::{SaleId, Timestamp};
use flashsale_service::{BackendError, BackendResult, LineAnswer, WaitingLine};
use redis::Script;
use redis::aio::ConnectionManager;
use reply::BACKEND;
use std::sync::Arc;

mod reply;

/// Members one `members` script call returns at most: a page of 640 KB of line ids, so a
/// large page never holds Redis in one long call.
const MEMBERS_PER_CALL_MAX: usize = 10_000;

/// Every sale's waiting line, in Redis beside its stock, shared by every node.
///
/// Cheap to clone: clones share the multiplexed connection, which reconnects by itself.
#[derive(Clone)]
pub struct RedisLine {
    connection: ConnectionManager,
    prefix: String,
    scripts: Arc<LineScripts>,
}

impl std::fmt::Debug for RedisLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLine")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLine {
    /// Connects to `url` (`redis://host:port[/db]`) as `RedisStock::connect` does (the same
    /// prefix, so a sale's line and stock share one hash tag; `lease` is not the line's and is
    /// ignored) and loads the line's scripts.
    pub async fn connect(url: &str, config: RedisStockConfig) -> Result<Self, RedisStockOpenError> {
        let scripts = LineScripts::new();
        let connection = connect::open(url, &config, &scripts.all()).await?;
        Ok(Self {
            connection,
            prefix: config.key_prefix,
            scripts: Arc::new(scripts),
        })
    }

    /// Runs a line script over `sale`'s keys and reads its answer as `T`.
    async fn run<T: redis::FromRedisValue>(
        &self,
        what: &str,
        script: &Script,
        sale: SaleId,
        args: &[&str],
        writes: bool,
    ) -> BackendResult<T> {
        let keys = LineKeys::new(&self.prefix, sale);
        let mut invocation = script.prepare_invoke();
        for key in keys.all() {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let mut connection = self.connection.clone();
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|e| redis_error(BACKEND, what, &e, writes))
    }
}

impl RedisLine {
    /// Reads records from `from` (1-based), at most `limit`, in calls of at most
    /// `MEMBERS_PER_CALL_MAX` (members after the draw, or a chain: records that never change
    /// once there, so the pages join up). `kind` is the script's first argument, if it takes
    /// one. At least one call, even for no records: an unknown sale answers `NotSetUp`.
    async fn paged<T>(
        &self,
        script: &Script,
        kind: Option<&str>,
        sale: SaleId,
        from: u64,
        limit: usize,
        read: fn(&[String]) -> BackendResult<LineAnswer<Vec<T>>>,
    ) -> BackendResult<LineAnswer<Vec<T>>> {
        let mut first = from.clamp(1, LUA_EXACT_MAX);
        let mut records = Vec::new();
        loop {
            let page = (limit - records.len()).min(MEMBERS_PER_CALL_MAX);
            let (first_text, page_text) = (first.to_string(), page.to_string());
            let mut args: Vec<&str> = kind.into_iter().collect();
            args.extend([first_text.as_str(), page_text.as_str()]);
            let answer: Vec<String> = self
                .run("reading the line", script, sale, &args, false)
                .await?;
            let got = match read(&answer)? {
                Ok(got) => got,
                Err(refused) => return Ok(Err(refused)),
            };
            let short = got.len() < page;
            first = first.saturating_add(got.len() as u64).min(LUA_EXACT_MAX);
            records.extend(got);
            if short || records.len() >= limit {
                break;
            }
        }
        Ok(Ok(records))
    }
}

/// A time as the scripts take it: whole Unix milliseconds, floored.
fn ms(at: Timestamp) -> BackendResult<String> {
    let ms = at.unix_timestamp_nanos().div_euclid(1_000_000);
    if ms.unsigned_abs() > u128::from(LUA_EXACT_MAX) {
        return Err(BackendError::determinate(
            BACKEND,
            format!("{at} is beyond the times a line keeps exactly"),
        ));
    }
    Ok(ms.to_string())
}

/// A count of units as the scripts take it. Clamping at `LUA_EXACT_MAX` changes no answer:
/// units are only compared with positions and holders, which never come near it.
fn units(count: u64) -> String {
    count.min(LUA_EXACT_MAX).to_string()
}

#[async_trait]
impl WaitingLine for RedisLine {
    async fn set_up(&self, sale: SaleId, times: LineTimes) -> BackendResult<()> {
        if times.opens_at >= times.starts_at {
            // `Line::new` asserts this; here it is a refusal, before anything is written.
            return Err(BackendError::determinate(
                BACKEND,
                format!("sale {sale}: a line opens before its sale starts"),
            ));
        }
        let admission_ms = (u64::from(times.admission_secs) * 1000).to_string();
        let (opens, starts, ends) = (
            ms(times.opens_at)?,
            ms(times.starts_at)?,
            ms(times.ends_at)?,
        );
        let answer: String = self
            .run(
                "setting up a line",
                &self.scripts.set_up,
                sale,
                &[&opens, &starts, &ends, &admission_ms],
                true,
            )
            .await?;
        match answer.as_str() {
            "created" | "moved" | "kept" => Ok(()),
            other => Err(reply::unexpected("setting up a line", &[other.to_owned()])),
        }
    }

    async fn join_with(
        &self,
        sale: SaleId,
        line: LineId,
        key: DrawKey,
        now: Timestamp,
        proof: JoinProof,
    ) -> BackendResult<LineAnswer<Place>> {
        let proof = match proof {
            JoinProof::NotAsked => String::new(),
            JoinProof::Missing => "-".to_owned(),
            JoinProof::Solved(id) => flashsale_core::line::hex(&id),
        };
        let args = [line.to_hex(), draw_key_hex(&key), ms(now)?, proof];
        let answer: Vec<String> = self
            .run(
                "joining the line",
                &self.scripts.join,
                sale,
                &args.each_ref().map(String::as_str),
                true,
            )
            .await?;
        reply::joined(&answer)
    }

    async fn place(
        &self,
        sale: SaleId,
        line: LineId,
        now: Timestamp,
    ) -> BackendResult<LineAnswer<Option<Place>>> {
        // It may draw (a write), so its outcome after a timeout is unknown; the draw is the
        // same whoever makes it, so a retry is harmless.
        let args = [line.to_hex(), ms(now)?];
        let answer: Vec<String> = self
            .run(
                "finding a place",
                &self.scripts.place,
                sale,
                &args.each_ref().map(String::as_str),
                true,
            )
            .await?;
        reply::place(&answer)
    }

    async fn advance(
        &self,
        sale: SaleId,
        now: Timestamp,
        inputs: AdmitInputs,
    ) -> BackendResult<LineAnswer<LineSummary>> {
        let args = [
            ms(now)?,
            inputs.rate_per_sec.to_string(),
            units(inputs.units_left),
        ];
        let answer: Vec<String> = self
            .run(
                "advancing the line",
                &self.scripts.advance,
                sale,
                &args.each_ref().map(String::as_str),
                true,
            )
            .await?;
        reply::summary(&answer)
    }

    async fn standing(
        &self,
        sale: SaleId,
        line: LineId,
        now: Timestamp,
        inputs: AdmitInputs,
    ) -> BackendResult<LineAnswer<Option<Standing>>> {
        // Only the units within reach count (`Line::standing`): left plus returnable.
        let reach = inputs.units_left.saturating_add(inputs.units_returnable);
        let args = [line.to_hex(), ms(now)?, units(reach)];
        let answer: Vec<String> = self
            .run(
                "reading a standing",
                &self.scripts.standing,
                sale,
                &args.each_ref().map(String::as_str),
                true,
            )
            .await?;
        reply::standing(&answer)
    }

    async fn record_bought(&self, sale: SaleId, position: u64) -> BackendResult<LineAnswer<()>> {
        if position > LUA_EXACT_MAX {
            return Err(BackendError::determinate(
                BACKEND,
                format!("sale {sale}: position {position} is beyond any line"),
            ));
        }
        let answer: String = self
            .run(
                "noting a buy",
                &self.scripts.record_bought,
                sale,
                &[&position.to_string()],
                true,
            )
            .await?;
        reply::done("noting a buy", &answer)
    }

    async fn set_control(
        &self,
        sale: SaleId,
        control: LineControl,
    ) -> BackendResult<LineAnswer<()>> {
        let paused = if control.paused { "1" } else { "0" };
        let rate = encode_rate(control.rate);
        let answer: String = self
            .run(
                "steering the line",
                &self.scripts.set_control,
                sale,
                &[paused, &rate],
                true,
            )
            .await?;
        reply::done("steering the line", &answer)
    }

    async fn members(
        &self,
        sale: SaleId,
        from: u64,
        limit: usize,
    ) -> BackendResult<LineAnswer<Vec<LineId>>> {
        // Pages of bounded calls: after the draw a position's member never changes, so the
        // pages join up without one script holding Redis for a whole long page.
        self.paged(
            &self.scripts.members,
            None,
            sale,
            from,
            limit,
            reply::members,
        )
        .await
    }

    async fn receipt(&self, sale: SaleId, line: LineId) -> BackendResult<LineAnswer<Option<u64>>> {
        let answer: Vec<String> = self
            .run(
                "finding a receipt",
                &self.scripts.chain,
                sale,
                &["receipt", &line.to_hex()],
                false,
            )
            .await?;
        reply::receipt(&answer)
    }

    async fn join_records(
        &self,
        sale: SaleId,
        from: u64,
        limit: usize,
    ) -> BackendResult<LineAnswer<Vec<JoinRecord>>> {
        let script = &self.scripts.chain;
        self.paged(
            script,
            Some("joins"),
            sale,
            from,
            limit,
            reply::join_records,
        )
        .await
    }

    async fn events(
        &self,
        sale: SaleId,
        from: u64,
        limit: usize,
    ) -> BackendResult<LineAnswer<Vec<LineEvent>>> {
        let script = &self.scripts.chain;
        self.paged(script, Some("events"), sale, from, limit, reply::events)
            .await
    }
}
