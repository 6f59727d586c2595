//! The crowd: who arrives, how they click, and the workers that send their clicks.
//!
//! Buyer `b`'s behaviour is a pure function of (seed, b), so nothing per buyer is kept before
//! it arrives: a million buyers cost no memory until they win, and tokens are signed when the
//! buyer clicks (HS256 signing costs microseconds).

use crate::client::{Conn, Target};
use crate::stats::Recorder;
use flashsale_core::BuyerId;
use flashsale_core::tokens::BuyerTokens;
use futures_util::future::join_all;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::mpsc;

/// Concurrent buys one "many keys" cheater fires at once.
pub const MULTI_KEY_CLICKS: usize = 8;

/// How the crowd behaves, as shares of buyers (0.0..=1.0).
#[derive(Debug, Clone)]
pub struct CrowdShape {
    pub buyers: u64,
    /// Buyers whose click fires twice at once with the same Idempotency-Key.
    pub double_click_share: f64,
    /// Buyers who click again with a new key after the first answer.
    pub repeat_share: f64,
    /// Buyers who cheat (forged token, expired token, guessed buy path, many keys at once).
    pub cheater_share: f64,
    /// Winners who pay; the others never pay, so the reaper returns their units.
    pub pay_share: f64,
    /// Makes buyer names and choices differ between runs against one server.
    pub run_id: String,
}

/// One buyer's visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    Honest { double_click: bool, repeat: bool },
    ForgedToken,
    ExpiredToken,
    GuessedPath,
    ManyKeys,
}

/// splitmix64: a fast, well-mixed hash for per-buyer choices.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform number in [0, 1) from (buyer, purpose).
pub(crate) fn unit(buyer: u64, purpose: u64) -> f64 {
    (mix(buyer.wrapping_mul(31).wrapping_add(purpose)) >> 11) as f64 / (1u64 << 53) as f64
}

impl CrowdShape {
    pub fn visit(&self, buyer: u64) -> Visit {
        if unit(buyer, 1) < self.cheater_share {
            return match mix(buyer) % 4 {
                0 => Visit::ForgedToken,
                1 => Visit::ExpiredToken,
                2 => Visit::GuessedPath,
                _ => Visit::ManyKeys,
            };
        }
        Visit::Honest {
            double_click: unit(buyer, 2) < self.double_click_share,
            repeat: unit(buyer, 3) < self.repeat_share,
        }
    }

    pub fn pays(&self, buyer: u64) -> bool {
        unit(buyer, 4) < self.pay_share
    }

    pub fn buyer_id(&self, buyer: u64) -> String {
        format!("b{}-{buyer}", self.run_id)
    }

    /// The buyer number of a buyer id this crowd made (`None` for anyone else's).
    pub fn member_of(&self, buyer_id: &str) -> Option<u64> {
        let number = buyer_id
            .strip_prefix('b')?
            .strip_prefix(self.run_id.as_str())?;
        let number = number.strip_prefix('-')?;
        // Only the canonical form: "b<run>-007" is not buyer 7's id.
        let buyer = number.parse::<u64>().ok()?;
        (buyer.to_string() == number).then_some(buyer)
    }

    pub fn key(&self, buyer: u64, click: usize) -> String {
        format!("{}-{buyer}-{click}", self.run_id)
    }
}

/// Signs buyer tokens on demand: valid, forged (wrong secret) and expired ones.
#[derive(Clone)]
pub struct Signer {
    valid: BuyerTokens,
    forged: BuyerTokens,
}

/// Lifetime of the tokens the crowd carries, in seconds.
const TOKEN_TTL_SECS: i64 = 6 * 3600;

impl Signer {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            valid: BuyerTokens::new(secret),
            forged: BuyerTokens::new(b"not the shop's secret, a forger's guess"),
        }
    }

    pub fn token(&self, name: &str) -> String {
        let now = OffsetDateTime::now_utc();
        self.issue(
            &self.valid,
            name,
            now,
            now + time::Duration::seconds(TOKEN_TTL_SECS),
        )
    }

    fn forged(&self, name: &str) -> String {
        let now = OffsetDateTime::now_utc();
        self.issue(
            &self.forged,
            name,
            now,
            now + time::Duration::seconds(TOKEN_TTL_SECS),
        )
    }

    fn expired(&self, name: &str) -> String {
        let now = OffsetDateTime::now_utc();
        self.issue(
            &self.valid,
            name,
            now - time::Duration::hours(2),
            now - time::Duration::hours(1),
        )
    }

    fn issue(
        &self,
        with: &BuyerTokens,
        name: &str,
        now: OffsetDateTime,
        exp: OffsetDateTime,
    ) -> String {
        // Buyer names are made here from safe characters; parse cannot fail on them.
        let buyer = BuyerId::parse(name).expect("generated buyer ids are valid");
        with.issue(&buyer, now, exp)
    }
}

/// One accepted buy: which buyer, which click (key), which order id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub buyer: u64,
    pub click: usize,
    pub order_id: String,
    /// Since the crowd was released.
    pub at: Duration,
}

/// When requests are sent.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Each worker sends its next visit as soon as the last one was answered.
    Closed,
    /// Visits arrive at `rate_per_sec` (times `spike_factor` for the first `spike_secs`),
    /// whatever the answers; latency counts from the intended send time.
    Open {
        rate_per_sec: f64,
        spike_factor: f64,
        spike_secs: f64,
    },
}

impl Pace {
    /// When visit `i` is meant to be sent, after the release.
    pub fn intended(&self, i: u64) -> Option<Duration> {
        match *self {
            Pace::Closed => None,
            Pace::Open {
                rate_per_sec,
                spike_factor,
                spike_secs,
            } => {
                let spike_rate = rate_per_sec * spike_factor;
                let spike_visits = (spike_rate * spike_secs).floor();
                let i = i as f64;
                let secs = if i < spike_visits {
                    i / spike_rate
                } else {
                    spike_secs + (i - spike_visits) / rate_per_sec
                };
                Some(Duration::from_secs_f64(secs))
            }
        }
    }
}

/// Everything the workers share.
pub struct Crowd {
    pub shape: CrowdShape,
    pub signer: Signer,
    /// The nodes: worker `w` sends to node `w % len`, as a load balancer that keeps each
    /// connection on one node would.
    pub targets: Vec<Target>,
    pub buy_path: String,
    /// A buy path with a made-up token (what a cheater guesses).
    pub guessed_path: String,
    pub pace: Pace,
    pub connections: usize,
    /// Stop releasing new visits after this long (None: when every buyer has come).
    pub duration: Option<Duration>,
    /// Whether answers are flashsale's (parse order ids) or the peer's.
    pub collect: bool,
    pub recorder: Arc<Recorder>,
    pub accepted: Mutex<Vec<Accepted>>,
    /// 2xx answers to forged tokens, expired tokens or guessed paths: must stay 0.
    pub cheater_wins: AtomicU64,
    /// Visits started.
    pub next_visit: AtomicU64,
    /// Winners who will pay, for the payer tasks.
    /// Taken (closed) once the crowd is done.
    pub payments: Mutex<Option<mpsc::Sender<(u64, String)>>>,
}

impl Crowd {
    /// Runs the crowd from `released` until every buyer came (or the duration ran out).
    pub async fn run(self: &Arc<Self>, released: Instant) {
        let workers: Vec<_> = (0..self.connections)
            .map(|worker| {
                let crowd = self.clone();
                tokio::spawn(async move { crowd.worker(worker, released).await })
            })
            .collect();
        for worker in workers {
            let _ = worker.await;
        }
    }

    async fn worker(&self, worker: usize, released: Instant) {
        // Lazily grown: most visits use one connection, double clicks two, many-keys eight.
        let node = self.targets[worker % self.targets.len()].clone();
        let mut conns: Vec<Conn> = vec![Conn::new(node)];
        loop {
            let i = self.next_visit.fetch_add(1, Ordering::Relaxed);
            if i >= self.shape.buyers {
                return;
            }
            let intended = self.pace.intended(i).map(|at| released + at);
            let stop = self.duration.map(|d| released + d);
            let due = intended.unwrap_or_else(Instant::now);
            if stop.is_some_and(|stop| due >= stop) {
                return;
            }
            if let Some(at) = intended {
                tokio::time::sleep_until(at.into()).await;
            }
            // Buyers arrive in a shuffled order, so the first arrivals are not buyers 0, 1, 2...
            let buyer = permute(i, self.shape.buyers);
            self.visit(worker, buyer, &mut conns, released, intended)
                .await;
        }
    }

    async fn visit(
        &self,
        worker: usize,
        buyer: u64,
        conns: &mut Vec<Conn>,
        released: Instant,
        intended: Option<Instant>,
    ) {
        let name = self.shape.buyer_id(buyer);
        let visit = self.shape.visit(buyer);
        let (token, path, clicks, same_key) = match visit {
            Visit::Honest { double_click, .. } => (
                self.signer.token(&name),
                &self.buy_path,
                if double_click { 2 } else { 1 },
                true,
            ),
            Visit::ForgedToken => (self.signer.forged(&name), &self.buy_path, 1, true),
            Visit::ExpiredToken => (self.signer.expired(&name), &self.buy_path, 1, true),
            Visit::GuessedPath => (self.signer.token(&name), &self.guessed_path, 1, true),
            Visit::ManyKeys => (
                self.signer.token(&name),
                &self.buy_path,
                MULTI_KEY_CLICKS,
                false,
            ),
        };
        while conns.len() < clicks {
            let node = self.targets[worker % self.targets.len()].clone();
            conns.push(Conn::new(node));
        }
        let auth = format!("Bearer {token}");
        let keys: Vec<String> = (0..clicks)
            .map(|c| self.shape.key(buyer, if same_key { 0 } else { c }))
            .collect();
        let sends = conns.iter_mut().zip(&keys).map(|(conn, key)| {
            let auth = &auth;
            async move {
                let sent = Instant::now();
                let answer = conn
                    .send(
                        hyper::Method::POST,
                        path,
                        &[
                            ("authorization", auth.as_str()),
                            ("idempotency-key", key.as_str()),
                        ],
                        None,
                    )
                    .await;
                (sent, answer)
            }
        });
        let answers = join_all(sends).await;
        for (click, (sent, answer)) in answers.into_iter().enumerate() {
            let click = if same_key { 0 } else { click };
            self.answered(
                worker,
                buyer,
                visit,
                click,
                released,
                intended.unwrap_or(sent),
                answer,
            );
        }
        if let Visit::Honest { repeat: true, .. } = visit {
            // The impatient buyer clicks again with a new key once the first answer is in.
            let key = self.shape.key(buyer, 1);
            let sent = Instant::now();
            let answer = conns[0]
                .send(
                    hyper::Method::POST,
                    path,
                    &[
                        ("authorization", auth.as_str()),
                        ("idempotency-key", key.as_str()),
                    ],
                    None,
                )
                .await;
            self.answered(worker, buyer, visit, 1, released, sent, answer);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn answered(
        &self,
        worker: usize,
        buyer: u64,
        visit: Visit,
        click: usize,
        released: Instant,
        from: Instant,
        answer: anyhow::Result<crate::client::Answer>,
    ) {
        let now = Instant::now();
        let status = answer.as_ref().map(|a| a.status.as_u16()).unwrap_or(0);
        self.recorder.record(
            worker,
            status,
            from.saturating_duration_since(released),
            now.saturating_duration_since(from),
        );
        let Ok(answer) = answer else { return };
        if !self.collect || !answer.status.is_success() {
            return;
        }
        match visit {
            Visit::ForgedToken | Visit::ExpiredToken | Visit::GuessedPath => {
                self.cheater_wins.fetch_add(1, Ordering::Relaxed);
            }
            Visit::Honest { .. } | Visit::ManyKeys => {
                let order_id = answer
                    .json()
                    .ok()
                    .and_then(|v| v["order_id"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                if self.shape.pays(buyer)
                    && let Some(payments) =
                        &*self.payments.lock().unwrap_or_else(|p| p.into_inner())
                {
                    // A full payment queue means this winner gives up paying: fine, the reaper
                    // covers it.
                    let _ = payments.try_send((buyer, order_id.clone()));
                }
                self.accepted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Accepted {
                        buyer,
                        click,
                        order_id,
                        at: now.saturating_duration_since(released),
                    });
            }
        }
    }
}

/// A bijection on 0..n (a multiplicative step coprime with n), so arrivals are shuffled
/// without a table.
pub fn permute(i: u64, n: u64) -> u64 {
    if n <= 1 {
        return 0;
    }
    let mut step = (n / 2 + 1) | 1;
    while gcd(step, n) != 1 {
        step += 2;
    }
    ((u128::from(i) * u128::from(step) + 7) % u128::from(n)) as u64
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_is_a_bijection() {
        for n in [1u64, 2, 3, 10, 97, 100, 1024] {
            let mut seen: Vec<u64> = (0..n).map(|i| permute(i, n)).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n = {n}");
        }
    }

    #[test]
    fn buyer_ids_read_back_to_their_numbers() {
        let shape = CrowdShape {
            buyers: 10,
            double_click_share: 0.0,
            repeat_share: 0.0,
            cheater_share: 0.0,
            pay_share: 0.0,
            run_id: "r1".into(),
        };
        assert_eq!(shape.member_of(&shape.buyer_id(7)), Some(7));
        assert_eq!(shape.member_of(&shape.buyer_id(u64::MAX)), Some(u64::MAX));
        for other in ["br1-007", "br2-7", "br1-7-friend", "b", "r1-7"] {
            assert_eq!(shape.member_of(other), None, "{other}");
        }
    }

    #[test]
    fn open_pace_spikes_then_settles() {
        let pace = Pace::Open {
            rate_per_sec: 100.0,
            spike_factor: 10.0,
            spike_secs: 1.0,
        };
        assert_eq!(pace.intended(0), Some(Duration::ZERO));
        assert_eq!(pace.intended(500), Some(Duration::from_millis(500)));
        assert_eq!(pace.intended(1000), Some(Duration::from_secs(1)));
        assert_eq!(pace.intended(1100), Some(Duration::from_secs(2)));
        assert_eq!(Pace::Closed.intended(5), None);
    }

    #[test]
    fn shares_come_out_near_their_targets() {
        let shape = CrowdShape {
            buyers: 100_000,
            double_click_share: 0.2,
            repeat_share: 0.1,
            cheater_share: 0.04,
            pay_share: 0.5,
            run_id: "t".into(),
        };
        let (mut cheaters, mut doubles, mut payers) = (0, 0, 0);
        for b in 0..shape.buyers {
            match shape.visit(b) {
                Visit::Honest { double_click, .. } => doubles += u64::from(double_click),
                _ => cheaters += 1,
            }
            payers += u64::from(shape.pays(b));
        }
        assert!((3_000..5_000).contains(&cheaters), "{cheaters}");
        assert!((18_000..21_000).contains(&doubles), "{doubles}");
        assert!((48_000..52_000).contains(&payers), "{payers}");
    }
}
