//! The waiting-room crowd at work: each member is a task that joins the line at its time,
//! polls `line/me` as the server says (`poll_after_secs`, with jitter), buys with its own buy
//! path once admitted (or cheats, or never buys), and records every answer for the verdict.
//! When the sale asks a proof of work (`--pow-bits`), a member first gets a challenge and
//! solves it (`pow.rs`), and joins with it.

use super::plan::{Arrival, Cheat, LineShape, Plan};
use super::pow::{PowCrowd, Probe};
use super::verdict::{Asked, Cheats, Seen, State};
use super::wins::Wins;
use crate::api::parse_time;
use crate::client::{Answer, Pool};
use crate::crowd::{CrowdShape, Signer, mix};
use crate::stats::Recorder;
use bytes::Bytes;
use futures_util::future::join_all;
use hyper::Method;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::time::sleep_until;

/// Join attempts per member (joining is idempotent, so a lost answer is simply asked again).
const JOIN_TRIES_MAX: u32 = 5;
/// Wait before asking again after a failed join or poll, in milliseconds.
const RETRY_WAIT_MS: u64 = 500;
/// Failed polls in a row after which a member gives up.
const POLL_FAILURES_MAX: u32 = 20;
/// A poll waits what the server said times 1 to 1 + this many thousandths, so a crowd told the
/// same wait does not come back at the same instant.
const POLL_JITTER_PER_MILLE_MAX: u64 = 250;
/// A late-ticket cheater tries its ticket this long after its admission ended, in milliseconds.
const LATE_TICKET_AFTER_MS: u64 = 1000;

/// How a buy without the buyer's own admission was tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheatKind {
    /// A made-up buy path before the start (the status watcher's).
    BeforeStart,
    GuessedTicket,
    SharedTicket,
    LateTicket,
}

impl CheatKind {
    const ALL: [CheatKind; 4] = [
        CheatKind::BeforeStart,
        CheatKind::GuessedTicket,
        CheatKind::SharedTicket,
        CheatKind::LateTicket,
    ];

    fn label(self) -> &'static str {
        match self {
            CheatKind::BeforeStart => "guessed path before the start",
            CheatKind::GuessedTicket => "guessed ticket",
            CheatKind::SharedTicket => "someone else's ticket",
            CheatKind::LateTicket => "ticket after its admission",
        }
    }
}

/// Tries and 2xx answers per `CheatKind`.
#[derive(Default)]
pub struct CheatCounts {
    counts: [(AtomicU64, AtomicU64); 4],
}

impl CheatCounts {
    pub fn record(&self, kind: CheatKind, won: bool) {
        let (tries, wins) = &self.counts[kind as usize];
        tries.fetch_add(1, Ordering::Relaxed);
        wins.fetch_add(u64::from(won), Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Vec<Cheats> {
        CheatKind::ALL
            .iter()
            .map(|&kind| {
                let (tries, wins) = &self.counts[kind as usize];
                Cheats {
                    kind: kind.label(),
                    tries: tries.load(Ordering::Relaxed),
                    wins: wins.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    pub fn wins(&self) -> u64 {
        self.counts
            .iter()
            .map(|(_, wins)| wins.load(Ordering::Relaxed))
            .sum()
    }
}

/// Everything the members share.
pub struct LineCrowd {
    pub shape: CrowdShape,
    pub line: LineShape,
    pub signer: Signer,
    /// One pool per node; member `m` uses node `m % len`, as a sticky load balancer would.
    pub pools: Vec<Pool>,
    pub sale_id: String,
    /// The bench's instants of the line's opening and the sale's start; members leave at
    /// `leave`.
    pub opened: Instant,
    pub start: Instant,
    pub leave: Instant,
    /// Joins, polls and buys, each measured on its own.
    pub joins: Recorder,
    pub polls: Recorder,
    pub buys: Recorder,
    /// Every join and `line/me` answer.
    pub seen: Mutex<Vec<Seen>>,
    /// Every 202 to a member's own buy, and the winners who will pay.
    pub wins: Wins,
    pub cheats: CheatCounts,
    pub join_failures: AtomicU64,
    pub poll_failures: AtomicU64,
    /// Admitted answers without a buy path.
    pub admitted_without_path: AtomicU64,
    /// Own buys of admitted members answered 410: the line let more through than the units.
    pub admitted_sold_out: AtomicU64,
    /// The sale asks a proof of work: what the members share for it.
    pub pow: Option<PowCrowd>,
}

/// Why a join or a `line/me` got no place.
enum Refused {
    /// An error answer, with its code (`error.code`).
    Code(String),
    /// No usable answer.
    NoAnswer,
}

/// One answer to a join or a `line/me`.
struct LineAnswer {
    seen: Seen,
    poll_after_secs: u64,
    buy_path: Option<String>,
}

/// The bench's instant of a server time (the bench's clock is assumed to agree with the
/// server's, as it does when it sets the sale's times).
pub fn local(at: OffsetDateTime) -> Instant {
    let now = Instant::now();
    let ahead = at - OffsetDateTime::now_utc();
    if ahead.is_positive() {
        now + ahead.unsigned_abs()
    } else {
        now.checked_sub(ahead.unsigned_abs()).unwrap_or(now)
    }
}

impl LineCrowd {
    pub fn since_open(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.opened)
    }

    /// The instant `ms` milliseconds after the start (before it if negative), never before
    /// the line opened.
    fn at(&self, ms: i64) -> Instant {
        let at = if ms >= 0 {
            self.start + Duration::from_millis(ms as u64)
        } else {
            self.start
                .checked_sub(Duration::from_millis(ms.unsigned_abs()))
                .unwrap_or(self.opened)
        };
        at.max(self.opened)
    }

    fn pool(&self, member: u64) -> &Pool {
        &self.pools[(member % self.pools.len() as u64) as usize]
    }

    async fn send(
        &self,
        member: u64,
        method: Method,
        path: &str,
        auth: &str,
        key: Option<&str>,
    ) -> (Instant, anyhow::Result<Answer>) {
        self.send_body(member, method, path, auth, key, None).await
    }

    async fn send_body(
        &self,
        member: u64,
        method: Method,
        path: &str,
        auth: &str,
        key: Option<&str>,
        body: Option<Bytes>,
    ) -> (Instant, anyhow::Result<Answer>) {
        let mut headers = vec![("authorization", auth)];
        if let Some(key) = key {
            headers.push(("idempotency-key", key));
        }
        let sent = Instant::now();
        let answer = self.pool(member).send(method, path, &headers, body).await;
        (sent, answer)
    }

    fn record(
        &self,
        recorder: &Recorder,
        member: u64,
        sent: Instant,
        answer: &anyhow::Result<Answer>,
    ) {
        let status = answer.as_ref().map(|a| a.status.as_u16()).unwrap_or(0);
        recorder.record(
            member as usize,
            status,
            self.since_open(sent),
            sent.elapsed(),
        );
    }

    /// One member, from its join to its leaving.
    pub async fn live(&self, member: u64) {
        let plan = self.line.plan(&self.shape, member);
        let auth = format!("Bearer {}", self.signer.token(&self.shape.buyer_id(member)));
        sleep_until(self.at(plan.join_at_ms).into()).await;
        let Some(mut answer) = self.join(member, &plan, &auth).await else {
            self.join_failures.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if plan.cheat == Cheat::GuessedTicket {
            sleep_until((self.start + plan.reaction).max(Instant::now()).into()).await;
            let path = format!(
                "/api/sales/{}/buy/{}",
                self.sale_id,
                crate::guessed_token(member)
            );
            self.try_without_admission(member, CheatKind::GuessedTicket, &path, &auth)
                .await;
        }
        let me = format!("/api/sales/{}/line/me", self.sale_id);
        let mut polls = 0;
        loop {
            match answer.seen.state {
                State::Admitted => return self.admitted(member, &plan, &auth, answer).await,
                state if state.is_final() => return,
                _ => {}
            }
            let mut wait = poll_wait(member, polls, answer.poll_after_secs);
            let mut failures = 0;
            answer = loop {
                let next = Instant::now() + wait;
                if next >= self.leave {
                    return;
                }
                sleep_until(next.into()).await;
                polls += 1;
                match self.ask(member, &auth, Asked::Poll, &me).await {
                    Some(answer) => break answer,
                    None => {
                        self.poll_failures.fetch_add(1, Ordering::Relaxed);
                        failures += 1;
                        if failures >= POLL_FAILURES_MAX {
                            return;
                        }
                        wait = Duration::from_millis(RETRY_WAIT_MS);
                    }
                }
            };
        }
    }

    /// Joins (from two tabs at once for some), asking again after a failure; the first answer.
    /// When the sale asks a proof of work, the member pays for its place first, and both tabs
    /// of a double join send the same solved challenge (one is refused as used).
    async fn join(&self, member: u64, plan: &Plan, auth: &str) -> Option<LineAnswer> {
        let path = format!("/api/sales/{}/line", self.sale_id);
        let proof = match &self.pow {
            Some(pow) => Some(self.pay_for_place(member, plan, auth, pow).await?),
            None => None,
        };
        if plan.double_join {
            let (a, b) = tokio::join!(
                self.join_once(member, auth, &path, proof.clone(), false),
                self.join_once(member, auth, &path, proof.clone(), false)
            );
            match a.or(b) {
                // Both tabs were told the challenge was used: one of them had bought the
                // place, its answer lost. A member joins again without a body.
                None if proof.is_some() => self.join_once(member, auth, &path, None, true).await,
                answer => answer,
            }
        } else {
            self.join_once(member, auth, &path, proof, true).await
        }
    }

    /// One tab's join, asking again after a failure. A tab whose challenge was refused as used
    /// joins again without a body if it is the only one (its own earlier try bought the place);
    /// the second tab of a double join stops there (the first has the answer).
    async fn join_once(
        &self,
        member: u64,
        auth: &str,
        path: &str,
        mut proof: Option<Bytes>,
        alone: bool,
    ) -> Option<LineAnswer> {
        for _ in 0..JOIN_TRIES_MAX {
            let paying = proof.is_some();
            if paying && let Some(pow) = &self.pow {
                pow.proof_sent(member);
            }
            match self
                .ask_with(member, auth, Asked::Join, path, proof.clone())
                .await
            {
                Ok(answer) => {
                    if paying && let Some(pow) = &self.pow {
                        pow.proof_accepted(member);
                    }
                    return Some(answer);
                }
                Err(Refused::Code(code)) if code == "challenge_used" => {
                    if let Some(pow) = &self.pow {
                        pow.challenge_used.fetch_add(1, Ordering::Relaxed);
                    }
                    if !alone {
                        return None;
                    }
                    proof = None;
                    continue;
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(RETRY_WAIT_MS)).await;
        }
        None
    }

    /// Gets a challenge and solves it (a bot on the bots' cores); the join's body. A cheater
    /// first tries to join without paying (`Probe`). `None` when no challenge came or no nonce
    /// was found.
    async fn pay_for_place(
        &self,
        member: u64,
        plan: &Plan,
        auth: &str,
        pow: &PowCrowd,
    ) -> Option<Bytes> {
        let cheater = plan.cheat != Cheat::None;
        if cheater {
            self.probe(member, auth, pow, Probe::NoProof, None).await;
        }
        let Some((challenge, bits)) = self.challenge(member, auth, pow).await else {
            pow.challenge_failures.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        if cheater {
            let unsolved = unsolving_nonce(&challenge, bits);
            let body = proof_body(&challenge, &unsolved);
            self.probe(member, auth, pow, Probe::Unsolved, Some(body))
                .await;
        }
        let bot = plan.arrival == Arrival::LastSecond;
        let Some(nonce) = pow
            .solve(member, bot, challenge.clone(), bits, self.start)
            .await
        else {
            pow.challenge_failures.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let body = proof_body(&challenge, &nonce);
        if cheater {
            // A friend with an account of their own tries the member's solved challenge.
            let friend = format!("{}-friend", self.shape.buyer_id(member));
            let friend_auth = format!("Bearer {}", self.signer.token(&friend));
            self.probe(
                member,
                &friend_auth,
                pow,
                Probe::Borrowed,
                Some(body.clone()),
            )
            .await;
        }
        Some(body)
    }

    /// `GET line/challenge`, asking again after a failure: the challenge and its difficulty.
    async fn challenge(&self, member: u64, auth: &str, pow: &PowCrowd) -> Option<(String, u8)> {
        let path = format!("/api/sales/{}/line/challenge", self.sale_id);
        for _ in 0..JOIN_TRIES_MAX {
            let (sent, answer) = self.send(member, Method::GET, &path, auth, None).await;
            self.record(&pow.challenges, member, sent, &answer);
            let body = answer
                .ok()
                .filter(|a| a.status.is_success())
                .and_then(|a| a.json().ok());
            if let Some(body) = body
                && let (Some(challenge), Some(bits)) =
                    (body["challenge"].as_str(), body["difficulty_bits"].as_u64())
            {
                return Some((challenge.to_owned(), u8::try_from(bits).ok()?));
            }
            tokio::time::sleep(Duration::from_millis(RETRY_WAIT_MS)).await;
        }
        None
    }

    /// One join without a proof of the member's own; any 2xx is a place not paid for.
    async fn probe(
        &self,
        member: u64,
        auth: &str,
        pow: &PowCrowd,
        probe: Probe,
        body: Option<Bytes>,
    ) {
        let path = format!("/api/sales/{}/line", self.sale_id);
        let (_, answer) = self
            .send_body(member, Method::POST, &path, auth, None, body)
            .await;
        if let Ok(answer) = answer {
            pow.probed(probe, answer.status.is_success());
        }
    }

    /// Asks where the member stands (a join is a POST to the line, a poll a GET of
    /// `line/me`), recording the answer; `None` if there was no usable answer.
    async fn ask(&self, member: u64, auth: &str, asked: Asked, path: &str) -> Option<LineAnswer> {
        self.ask_with(member, auth, asked, path, None).await.ok()
    }

    /// `ask` with a body (a join's proof of work); a refusal says its error code.
    async fn ask_with(
        &self,
        member: u64,
        auth: &str,
        asked: Asked,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<LineAnswer, Refused> {
        // The roll call is the bench's burst, not the crowd's experience: its latency (mostly
        // waiting for a free connection) is not the polls'.
        let (method, recorder) = match asked {
            Asked::Join => (Method::POST, Some(&self.joins)),
            Asked::Poll => (Method::GET, Some(&self.polls)),
            Asked::RollCall => (Method::GET, None),
        };
        let (sent, answer) = self.send_body(member, method, path, auth, None, body).await;
        let received = Instant::now();
        if let Some(recorder) = recorder {
            self.record(recorder, member, sent, &answer);
        }
        let answer = answer.map_err(|_| Refused::NoAnswer)?;
        let body = answer.json().map_err(|_| Refused::NoAnswer)?;
        if !answer.status.is_success() {
            return Err(body["error"]["code"]
                .as_str()
                .map_or(Refused::NoAnswer, |code| Refused::Code(code.to_owned())));
        }
        let state = body["state"]
            .as_str()
            .and_then(State::parse)
            .ok_or(Refused::NoAnswer)?;
        let seen = Seen {
            member,
            asked,
            sent_ms: self.since_open(sent).as_millis() as u64,
            received_ms: self.since_open(received).as_millis() as u64,
            state,
            position: body["position"].as_u64(),
            admitted_up_to: body["admitted_up_to"].as_u64().unwrap_or(0),
            admitted_until: parse_time(&body["admitted_until"]),
        };
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(seen.clone());
        Ok(LineAnswer {
            seen,
            poll_after_secs: body["poll_after_secs"].as_u64().unwrap_or(1),
            buy_path: body["buy_path"].as_str().map(str::to_owned),
        })
    }

    /// The roll call: asks once where the member stands, from outside its life.
    pub async fn roll_call(&self, member: u64) -> Option<Seen> {
        let auth = format!("Bearer {}", self.signer.token(&self.shape.buyer_id(member)));
        let me = format!("/api/sales/{}/line/me", self.sale_id);
        self.ask(member, &auth, Asked::RollCall, &me)
            .await
            .map(|answer| answer.seen)
    }

    /// Admitted: cheat if that is the plan, then buy after the member's reaction time (unless
    /// it never buys).
    async fn admitted(&self, member: u64, plan: &Plan, auth: &str, answer: LineAnswer) {
        let Some(path) = answer.buy_path else {
            self.admitted_without_path.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let until = answer
            .seen
            .admitted_until
            .map(local)
            .unwrap_or_else(Instant::now);
        match plan.cheat {
            Cheat::SharedTicket => {
                // A friend with an account of their own tries the member's buy path first.
                let friend = format!("{}-friend", self.shape.buyer_id(member));
                let friend_auth = format!("Bearer {}", self.signer.token(&friend));
                self.try_without_admission(member, CheatKind::SharedTicket, &path, &friend_auth)
                    .await;
            }
            Cheat::LateTicket => {
                let at = until + Duration::from_millis(LATE_TICKET_AFTER_MS);
                if at < self.leave {
                    sleep_until(at.into()).await;
                    self.try_without_admission(member, CheatKind::LateTicket, &path, auth)
                        .await;
                }
                return;
            }
            Cheat::None | Cheat::GuessedTicket => {}
        }
        if !plan.buys {
            return;
        }
        sleep_until((Instant::now() + plan.reaction).min(until).into()).await;
        self.buy(member, plan, auth, &path).await;
    }

    /// A buy without the member's own running admission; any 2xx is a cheat that won.
    async fn try_without_admission(&self, member: u64, kind: CheatKind, path: &str, auth: &str) {
        let key = self.shape.key(member, 7);
        let (sent, answer) = self
            .send(member, Method::POST, path, auth, Some(&key))
            .await;
        self.record(&self.buys, member, sent, &answer);
        let won = answer.is_ok_and(|a| a.status.is_success());
        self.cheats.record(kind, won);
    }

    /// The member's own buy with its buy path (two clicks at once with one key for some).
    async fn buy(&self, member: u64, plan: &Plan, auth: &str, path: &str) {
        let key = self.shape.key(member, 0);
        let clicks = if plan.double_click { 2 } else { 1 };
        let sends = (0..clicks).map(|_| self.send(member, Method::POST, path, auth, Some(&key)));
        for (sent, answer) in join_all(sends).await {
            self.record(&self.buys, member, sent, &answer);
            let Ok(answer) = answer else { continue };
            match answer.status.as_u16() {
                202 => self.wins.accepted(
                    &self.shape,
                    member,
                    &answer,
                    self.since_open(Instant::now()),
                ),
                410 => {
                    self.admitted_sold_out.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    }
}

/// A join's body: the challenge and the nonce that solves it.
fn proof_body(challenge: &str, nonce: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "challenge": challenge, "nonce": nonce }).to_string())
}

/// A nonce that does not solve `challenge` at `bits` (the first of "x0", "x1", … that fails;
/// at 0 bits every nonce solves, so the last one tried).
fn unsolving_nonce(challenge: &str, bits: u8) -> String {
    let nonce = |n: u32| format!("x{n}");
    (0..64)
        .map(nonce)
        .find(|n| !flashsale_core::pow::solves(challenge, n, bits))
        .unwrap_or_else(|| nonce(64))
}

/// How long a member waits before polling again: what the server said, plus jitter.
fn poll_wait(member: u64, polls: u64, poll_after_secs: u64) -> Duration {
    let jitter = mix(member ^ (polls << 40)) % (POLL_JITTER_PER_MILLE_MAX + 1);
    Duration::from_millis(poll_after_secs.max(1) * (1000 + jitter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_wait_at_least_as_told_and_not_much_more() {
        for member in 0..200 {
            for polls in 0..5 {
                let wait = poll_wait(member, polls, 3);
                assert!(wait >= Duration::from_secs(3), "{wait:?}");
                assert!(wait <= Duration::from_millis(3750), "{wait:?}");
            }
        }
        assert_eq!(
            poll_wait(1, 1, 0).max(Duration::from_secs(1)),
            poll_wait(1, 1, 0)
        );
    }

    #[test]
    fn the_unsolving_nonce_does_not_solve_and_the_proof_is_the_documented_body() {
        for bits in [1, 8, 16] {
            for challenge in ["a", "bench-challenge", "Zm9vYmFy"] {
                let nonce = unsolving_nonce(challenge, bits);
                assert!(!flashsale_core::pow::solves(challenge, &nonce, bits));
            }
        }
        let body: serde_json::Value = serde_json::from_slice(&proof_body("c\"1", "42")).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"challenge": "c\"1", "nonce": "42"})
        );
    }

    #[test]
    fn cheat_counts_add_up_by_kind() {
        let counts = CheatCounts::default();
        counts.record(CheatKind::SharedTicket, false);
        counts.record(CheatKind::SharedTicket, true);
        counts.record(CheatKind::BeforeStart, false);
        let snapshot = counts.snapshot();
        assert_eq!(snapshot.len(), 4);
        assert_eq!((snapshot[2].tries, snapshot[2].wins), (2, 1));
        assert_eq!((snapshot[0].tries, snapshot[0].wins), (1, 0));
        assert_eq!(counts.wins(), 1);
    }
}
