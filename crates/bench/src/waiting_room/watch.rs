//! The status watcher of a sale with a line: polls the status like a sale page until the seed
//! is out, noting the commitment before the start (and whether it ever changed), the
//! commitment and seed after it, and any buy path the status shows (it must never show one);
//! meanwhile a cheater guesses buy paths before the start.

use super::member::{CheatKind, LineCrowd};
use crate::STATUS_POLL_INTERVAL_MS;
use crate::client::{Conn, Target};
use anyhow::{Result, bail};
use hyper::Method;
use std::time::{Duration, Instant};

/// How long past the start the watcher waits for the seed, in seconds.
const SEED_WAIT_SECS_MAX: u64 = 30;

/// What the status showed.
#[derive(Debug, Clone, Default)]
pub struct Watched {
    pub commitment_before: Option<String>,
    pub commitment_changed: bool,
    pub commitment_after: Option<String>,
    pub seed: Option<String>,
    pub buy_path_shown: bool,
    pub polls: u64,
    /// The highest `line.pow_difficulty_bits` the status showed.
    pub pow_difficulty_bits: Option<u64>,
}

impl Watched {
    /// Notes one status answer; whether the watch is done (the seed is out).
    fn note(&mut self, status: &serde_json::Value) -> bool {
        self.polls += 1;
        self.buy_path_shown |= !status["buy_path"].is_null();
        let line = &status["line"];
        if let Some(bits) = line["pow_difficulty_bits"].as_u64() {
            self.pow_difficulty_bits = self.pow_difficulty_bits.max(Some(bits));
        }
        let commitment = line["commitment"].as_str().map(str::to_owned);
        if status["phase"] == "upcoming" {
            match (&self.commitment_before, commitment) {
                (None, commitment) => self.commitment_before = commitment,
                (Some(first), Some(now)) if *first != now => self.commitment_changed = true,
                _ => {}
            }
            return false;
        }
        self.commitment_after = commitment;
        self.seed = line["seed"].as_str().map(str::to_owned);
        self.seed.is_some()
    }
}

/// Watches the status until the seed is out (or `SEED_WAIT_SECS_MAX` past the start).
pub async fn watch(crowd: &LineCrowd, target: &Target) -> Result<Watched> {
    let mut conn = Conn::new(target.clone());
    let mut cheat = Conn::new(target.clone());
    let cheat_auth = format!(
        "Bearer {}",
        crowd.signer.token(&crowd.shape.buyer_id(u64::MAX))
    );
    let path = format!("/api/sales/{}/status", crowd.sale_id);
    let deadline = crowd.start + Duration::from_secs(SEED_WAIT_SECS_MAX);
    let mut watched = Watched::default();
    loop {
        let answer = conn.get(&path, &[]).await?;
        if !answer.status.is_success() {
            bail!("GET {path} answered {}", answer.status);
        }
        let status = answer.json()?;
        if watched.note(&status) || Instant::now() > deadline {
            return Ok(watched);
        }
        if status["phase"] == "upcoming" {
            // A cheater guessing before the start, with a made-up ticket.
            let guess = format!(
                "/api/sales/{}/buy/{}",
                crowd.sale_id,
                crate::guessed_token(watched.polls)
            );
            let key = format!("early-{}", watched.polls);
            let headers = [
                ("authorization", cheat_auth.as_str()),
                ("idempotency-key", key.as_str()),
            ];
            if let Ok(answer) = cheat.send(Method::POST, &guess, &headers, None).await {
                crowd
                    .cheats
                    .record(CheatKind::BeforeStart, answer.status.is_success());
            }
        }
        tokio::time::sleep(Duration::from_millis(STATUS_POLL_INTERVAL_MS)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_commitment_before_and_the_seed_after_the_start_are_kept() {
        let mut watched = Watched::default();
        assert!(!watched.note(&json!({"phase": "upcoming", "line": {}})));
        assert!(!watched.note(&json!({"phase": "upcoming", "line": {"commitment": "c1"}})));
        assert!(!watched.note(&json!({"phase": "upcoming", "line": {"commitment": "c1"}})));
        assert!(!watched.commitment_changed);
        assert!(!watched.note(
            &json!({"phase": "upcoming", "line": {"commitment": "c2", "pow_difficulty_bits": 8}})
        ));
        assert!(watched.commitment_changed);
        assert!(watched.note(&json!({"phase": "live", "line": {"commitment": "c1", "seed": "s"}})));
        assert_eq!(watched.commitment_before.as_deref(), Some("c1"));
        assert_eq!(watched.commitment_after.as_deref(), Some("c1"));
        assert_eq!(watched.seed.as_deref(), Some("s"));
        assert!(!watched.buy_path_shown);
        watched.note(&json!({"phase": "live", "buy_path": "/x", "line": {}}));
        assert!(watched.buy_path_shown);
        assert_eq!(watched.polls, 6);
        assert_eq!(watched.pow_difficulty_bits, Some(8));
    }
}
