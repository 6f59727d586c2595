//! A line anyone can check: the hash chains over a sale's joins and its admissions, and the
//! verifier `flashsale verify-line` runs over the published log.
//!
//! **The contract a third party checks** (all hashes SHA-256, shown as lowercase hex):
//!
//! - **The join chain.** Record `i` (1-based) is a member's first join: its line id (32
//!   bytes) and its time as the line took it (whole Unix milliseconds, floored, as a signed
//!   64-bit big-endian number). Its hash is `SHA-256(hash of record i-1 ‖ line id ‖ time)`; the
//!   hash "of record 0" is `SHA-256("flashsale line joins v1" ‖ 0x00 ‖ the sale id as 36 ASCII
//!   characters)`. A buyer's **receipt** is their record's index and hash: any change, removal
//!   or insertion before it changes it.
//! - **The event chain.** Record `i` is one of
//!   - an admission: `0x61` 'a', the last position admitted (u64 big-endian), the admission's
//!     time in Unix ms (i64 big-endian);
//!   - a buy under an admission: `0x62` 'b', the position (u64 big-endian);
//!   - admissions ended: `0x70` 'p', the last position of the last admission that ended (u64
//!     big-endian); every position up to it with no buy before this record **passed**;
//!   - the stock ran out: `0x73` 's', the last position admitted then (u64 big-endian); the
//!     positions after it are **sold out** unless units come back (a later admission is that
//!     back-fill).
//!
//!   Its hash is `SHA-256(hash of record i-1 ‖ those bytes)`, from `SHA-256("flashsale line
//!   events v1" ‖ 0x00 ‖ the sale id)`. A buy noted after the 'p' that covers its position is a
//!   buy accepted in its admission's last moments: the buy path notes a buy once it has been
//!   accepted, and the line may see the admission end in between. It counts as bought.
//! - **The pre-queue** is the first `pre_queue` records of the join chain (everyone who joined
//!   before the draw at the start); positions `1..=pre_queue` are those line ids in draw order
//!   (`line::draw_order` with the published seed), and position `pre_queue + k` is join record
//!   `pre_queue + k`.
//!
//! What the chains cannot show (RELIABILITY.md, "What the line's log proves"): who is behind
//! a line id (a shop could create accounts of its own), and an insertion before a receipt
//! that nobody holding a later receipt, or nobody who saw the published head, compares.

use crate::ids::SaleId;
use crate::line::{JoinRecord, LineEvent, LineId, Seed, draw_order, unhex};
use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// The hash before a sale's first join.
pub fn joins_genesis(sale: SaleId) -> Hash {
    genesis(b"flashsale line joins v1\0", sale)
}

/// The hash before a sale's first admission or buy.
pub fn events_genesis(sale: SaleId) -> Hash {
    genesis(b"flashsale line events v1\0", sale)
}

fn genesis(domain: &[u8], sale: SaleId) -> Hash {
    Sha256::new()
        .chain_update(domain)
        .chain_update(
            sale.encode(&mut [0; uuid::fmt::Hyphenated::LENGTH])
                .as_bytes(),
        )
        .finalize()
        .into()
}

/// The hash of a join record after `prev`.
pub fn join_hash(prev: &Hash, record: &JoinRecord) -> Hash {
    Sha256::new()
        .chain_update(prev)
        .chain_update(record.line.0)
        .chain_update(record.joined_at_ms.to_be_bytes())
        .finalize()
        .into()
}

/// The hash of an event record after `prev`.
pub fn event_hash(prev: &Hash, event: &LineEvent) -> Hash {
    let mut hasher = Sha256::new().chain_update(prev);
    match *event {
        LineEvent::Admitted { up_to, at_ms } => {
            hasher.update([b'a']);
            hasher.update(up_to.to_be_bytes());
            hasher.update(at_ms.to_be_bytes());
        }
        LineEvent::Bought { position } => {
            hasher.update([b'b']);
            hasher.update(position.to_be_bytes());
        }
        LineEvent::Passed { up_to } => {
            hasher.update([b'p']);
            hasher.update(up_to.to_be_bytes());
        }
        LineEvent::SoldOut { after } => {
            hasher.update([b's']);
            hasher.update(after.to_be_bytes());
        }
    }
    hasher.finalize().into()
}

/// A chain's hashes as far as they have been computed (a node extends it as records come).
#[derive(Debug, Clone)]
pub struct Chain {
    genesis: Hash,
    hashes: Vec<Hash>,
}

impl Chain {
    pub fn new(genesis: Hash) -> Self {
        Self {
            genesis,
            hashes: Vec::new(),
        }
    }

    pub fn len(&self) -> u64 {
        self.hashes.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The hash of the last record (the genesis while empty).
    pub fn head(&self) -> Hash {
        self.hashes.last().copied().unwrap_or(self.genesis)
    }

    /// The hash of record `index` (1-based); index 0 is the genesis.
    pub fn hash(&self, index: u64) -> Option<Hash> {
        match index {
            0 => Some(self.genesis),
            i => self.hashes.get(i as usize - 1).copied(),
        }
    }

    pub fn push_join(&mut self, record: &JoinRecord) -> Hash {
        let hash = join_hash(&self.head(), record);
        self.hashes.push(hash);
        hash
    }

    pub fn push_event(&mut self, event: &LineEvent) -> Hash {
        let hash = event_hash(&self.head(), event);
        self.hashes.push(hash);
        hash
    }
}

pub use crate::line::hex;

/// A hash from 64 lowercase hex characters.
pub fn parse_hash(text: &str) -> Option<Hash> {
    unhex(text)
}

/// A chain's published head: how many records, and the last one's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub length: u64,
    pub hash: Hash,
}

/// A join as the log publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedJoin {
    pub index: u64,
    pub record: JoinRecord,
    pub hash: Hash,
}

/// An event as the log publishes it. An admission also states the first position it admits
/// (`from`), which must follow the last admission's; so does an end of admissions (the first
/// position whose admission it ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedEvent {
    pub index: u64,
    pub event: LineEvent,
    /// For an admission: the first position it admits; for an end: the first it ends.
    pub from: Option<u64>,
    pub hash: Hash,
}

/// The whole published log of one sale's line, as downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedLog {
    pub sale: SaleId,
    pub starts_at_ms: i64,
    /// SHA-256 of the seed (hex), as published from the moment the line opened.
    pub commitment: String,
    /// The seed (hex), published once the sale has started.
    pub seed: Option<String>,
    /// Members drawn at the start: the first `pre_queue` joins.
    pub pre_queue: u64,
    pub joins_head: Head,
    pub events_head: Head,
    pub joins: Vec<PublishedJoin>,
    /// Line ids in position order.
    pub positions: Vec<LineId>,
    pub events: Vec<PublishedEvent>,
}

/// One named check and what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    /// `Ok` with what was checked, or `Err` with the first problem.
    pub outcome: Result<String, String>,
}

/// Everything `verify` checked; the log passes when every check did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub checks: Vec<Check>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|check| check.outcome.is_ok())
    }

    /// The names of the checks that failed.
    pub fn failed(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|check| check.outcome.is_err())
            .map(|check| check.name)
            .collect()
    }
}

/// Checks everything a third party can check of a published log (the module docs), and,
/// given one, that a receipt's hash is in the join chain.
pub fn verify(log: &PublishedLog, receipt: Option<&Hash>) -> Verdict {
    let joins = check_join_chain(log);
    let mut checks = vec![
        Check {
            name: "join chain intact",
            outcome: joins
                .clone()
                .map(|n| format!("{n} joins, each hash follows")),
        },
        Check {
            name: "join chain head",
            outcome: check_head(
                &log.joins.iter().map(|j| j.hash).collect::<Vec<_>>(),
                joins_genesis(log.sale),
                log.joins_head,
            ),
        },
        Check {
            name: "seed matches the commitment",
            outcome: check_seed(log).map(|_| "SHA-256(seed) = commitment".to_owned()),
        },
        Check {
            name: "pre-queue joined before the start",
            outcome: check_pre_queue_times(log),
        },
        Check {
            name: "positions are the seeded draw, then arrival order",
            outcome: check_positions(log),
        },
        Check {
            name: "event chain intact",
            outcome: check_event_chain(log).map(|n| format!("{n} events, each hash follows")),
        },
        Check {
            name: "event chain head",
            outcome: check_head(
                &log.events.iter().map(|e| e.hash).collect::<Vec<_>>(),
                events_genesis(log.sale),
                log.events_head,
            ),
        },
        Check {
            name: "admissions follow positions",
            outcome: check_admissions(log),
        },
        Check {
            name: "every admission ends bought or passed",
            outcome: check_outcomes(log).map(|outcomes| outcomes.to_string()),
        },
    ];
    if let Some(receipt) = receipt {
        checks.push(Check {
            name: "receipt in the join chain",
            outcome: match log.joins.iter().find(|j| &j.hash == receipt) {
                Some(join) => Ok(format!(
                    "join #{} of line id {}{}",
                    join.index,
                    join.record.line,
                    log.positions
                        .iter()
                        .position(|line| *line == join.record.line)
                        .map(|p| format!(", position {}: {}", p + 1, outcome_of(log, p as u64 + 1)))
                        .unwrap_or_default()
                )),
                None => Err(format!("{} is not the hash of any join", hex(receipt))),
            },
        });
    }
    Verdict { checks }
}

fn check_join_chain(log: &PublishedLog) -> Result<usize, String> {
    let mut prev = joins_genesis(log.sale);
    let mut seen = std::collections::HashSet::new();
    for (i, join) in log.joins.iter().enumerate() {
        let index = i as u64 + 1;
        if join.index != index {
            return Err(format!("record {index} says it is #{}", join.index));
        }
        if join_hash(&prev, &join.record) != join.hash {
            return Err(format!(
                "join #{index}'s hash does not follow from its record and the one before \
                 (a record changed, moved, inserted or removed)"
            ));
        }
        if !seen.insert(join.record.line) {
            return Err(format!(
                "join #{index}: line id {} joins a second time",
                join.record.line
            ));
        }
        prev = join.hash;
    }
    Ok(log.joins.len())
}

fn check_event_chain(log: &PublishedLog) -> Result<usize, String> {
    let mut prev = events_genesis(log.sale);
    for (i, event) in log.events.iter().enumerate() {
        let index = i as u64 + 1;
        if event.index != index {
            return Err(format!("event {index} says it is #{}", event.index));
        }
        if event_hash(&prev, &event.event) != event.hash {
            return Err(format!(
                "event #{index}'s hash does not follow from its record and the one before"
            ));
        }
        prev = event.hash;
    }
    Ok(log.events.len())
}

fn check_head(hashes: &[Hash], genesis: Hash, head: Head) -> Result<String, String> {
    let at = match head.length {
        0 => Some(genesis),
        n => hashes.get(n as usize - 1).copied(),
    };
    match at {
        Some(hash) if hash == head.hash => Ok(format!(
            "the published head (#{}, {}) is in the chain",
            head.length,
            hex(&head.hash)
        )),
        Some(_) => Err(format!(
            "the published head #{} is {}, the chain's hash there is not",
            head.length,
            hex(&head.hash)
        )),
        None => Err(format!(
            "the published head is #{}, the log has {} records",
            head.length,
            hashes.len()
        )),
    }
}

fn check_seed(log: &PublishedLog) -> Result<Seed, String> {
    let text = log
        .seed
        .as_deref()
        .ok_or("the seed is not published (has the sale started?)")?;
    let seed = Seed::parse(text).ok_or("the seed is not 64 lowercase hex characters")?;
    if seed.commitment() != log.commitment {
        return Err(format!(
            "SHA-256 of the seed is {}, the commitment published before the line opened is {}",
            seed.commitment(),
            log.commitment
        ));
    }
    Ok(seed)
}

fn check_pre_queue_times(log: &PublishedLog) -> Result<String, String> {
    let pre_queue = usize::try_from(log.pre_queue).unwrap_or(usize::MAX);
    if pre_queue > log.joins.len() {
        return Err(format!(
            "the pre-queue is said to hold {pre_queue} members, the join chain has {}",
            log.joins.len()
        ));
    }
    match log.joins[..pre_queue]
        .iter()
        .find(|join| join.record.joined_at_ms >= log.starts_at_ms)
    {
        Some(late) => Err(format!(
            "join #{} is in the pre-queue but joined at {} ms, at or after the start ({} ms)",
            late.index, late.record.joined_at_ms, log.starts_at_ms
        )),
        None => Ok(format!("{pre_queue} joins before the start")),
    }
}

fn check_positions(log: &PublishedLog) -> Result<String, String> {
    let seed = check_seed(log).map_err(|why| format!("cannot redo the draw: {why}"))?;
    let pre_queue = usize::try_from(log.pre_queue)
        .unwrap_or(usize::MAX)
        .min(log.joins.len());
    let drawn = draw_order(&seed, log.joins[..pre_queue].iter().map(|j| j.record.line));
    let expected: Vec<LineId> = drawn
        .into_iter()
        .chain(log.joins[pre_queue..].iter().map(|j| j.record.line))
        .collect();
    if log.positions.len() < pre_queue {
        return Err(format!(
            "{} positions published, fewer than the pre-queue's {pre_queue}",
            log.positions.len()
        ));
    }
    if log.positions.len() > expected.len() {
        return Err(format!(
            "{} positions published for {} joins",
            log.positions.len(),
            expected.len()
        ));
    }
    match log
        .positions
        .iter()
        .zip(&expected)
        .position(|(published, wanted)| published != wanted)
    {
        Some(p) => Err(format!(
            "position {} is line id {}; the draw and the join chain put {} there",
            p + 1,
            log.positions[p],
            expected[p]
        )),
        None => Ok(format!(
            "{} positions: {pre_queue} drawn by the seed, {} in arrival order",
            log.positions.len(),
            log.positions.len() - pre_queue
        )),
    }
}

fn check_admissions(log: &PublishedLog) -> Result<String, String> {
    let members = log.joins.len().max(log.positions.len()) as u64;
    let mut admitted_up_to = 0u64;
    let mut last_at = i64::MIN;
    let mut admissions = 0u64;
    let mut bought = std::collections::HashSet::new();
    for event in &log.events {
        match event.event {
            LineEvent::Admitted { up_to, at_ms } => {
                let from = event.from.unwrap_or(admitted_up_to + 1);
                if from != admitted_up_to + 1 {
                    return Err(format!(
                        "event #{} admits from position {from}, but the last admission ended \
                         at {admitted_up_to} (a position skipped or admitted twice)",
                        event.index
                    ));
                }
                if up_to < from {
                    return Err(format!(
                        "event #{} admits up to {up_to}, not past {admitted_up_to}",
                        event.index
                    ));
                }
                if up_to > members {
                    return Err(format!(
                        "event #{} admits up to {up_to}; the line has {members} members",
                        event.index
                    ));
                }
                if at_ms < last_at {
                    return Err(format!("event #{} goes back in time", event.index));
                }
                admitted_up_to = up_to;
                last_at = at_ms;
                admissions += 1;
            }
            LineEvent::Bought { position } => {
                if position == 0 || position > admitted_up_to {
                    return Err(format!(
                        "event #{}: position {position} bought before it was admitted",
                        event.index
                    ));
                }
                if !bought.insert(position) {
                    return Err(format!(
                        "event #{}: position {position} bought twice",
                        event.index
                    ));
                }
            }
            LineEvent::Passed { .. } | LineEvent::SoldOut { .. } => {}
        }
    }
    Ok(format!(
        "{admissions} admissions in position order up to {admitted_up_to}, {} bought under \
         their admission",
        bought.len()
    ))
}

/// How the admitted positions of a log ended, as `check_outcomes` counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Outcomes {
    admitted: u64,
    bought: u64,
    /// Bought, noted after the end of the admission was chained.
    bought_late: u64,
    passed: u64,
    /// Admitted, admission not ended in the log yet.
    running: u64,
    sold_out: u64,
    sold_out_after: Option<u64>,
}

impl std::fmt::Display for Outcomes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} admitted: {} bought ({} noted after their admission's end), {} passed, {} \
             admission still running",
            self.admitted, self.bought, self.bought_late, self.passed, self.running
        )?;
        match self.sold_out_after {
            Some(after) => write!(
                f,
                "; the stock ran out {} time(s), last with positions up to {after} admitted",
                self.sold_out
            ),
            None => write!(f, "; the stock never ran out"),
        }
    }
}

/// Every end of admissions ('p') ends whole admissions in order, after they were made; every
/// run-out of stock ('s') names the last position admitted then, once per admission; and so
/// each admitted position ends bought, passed, or is still running.
fn check_outcomes(log: &PublishedLog) -> Result<Outcomes, String> {
    let mut admitted_up_to = 0u64;
    // The last position of each admission, in order.
    let mut admission_ends = std::collections::BTreeSet::new();
    let mut ended_up_to = 0u64;
    // Each position bought, and whether its buy was noted after its admission's end.
    let mut bought = std::collections::BTreeMap::new();
    let mut outcomes = Outcomes::default();
    for event in &log.events {
        let index = event.index;
        match event.event {
            LineEvent::Admitted { up_to, .. } => {
                admitted_up_to = admitted_up_to.max(up_to);
                admission_ends.insert(up_to);
            }
            LineEvent::Bought { position } => {
                let late = (1..=ended_up_to).contains(&position);
                if bought.insert(position, late).is_none() && late {
                    // Counted as passed at the end; it bought.
                    outcomes.bought_late += 1;
                    outcomes.passed -= 1;
                }
            }
            LineEvent::Passed { up_to } => {
                let from = event.from.unwrap_or(ended_up_to + 1);
                if from != ended_up_to + 1 || up_to <= ended_up_to {
                    return Err(format!(
                        "event #{index} ends admissions from {from} to {up_to}, but the last \
                         end was at {ended_up_to} (ended out of order or twice)"
                    ));
                }
                if !admission_ends.contains(&up_to) {
                    return Err(format!(
                        "event #{index} ends admissions up to {up_to}, which is not where an \
                         admission before it ended (admitted up to {admitted_up_to})"
                    ));
                }
                let bought_here = bought.range(from..=up_to).count();
                outcomes.passed += up_to - ended_up_to - bought_here as u64;
                ended_up_to = up_to;
            }
            LineEvent::SoldOut { after } => {
                if after != admitted_up_to {
                    return Err(format!(
                        "event #{index} says the stock ran out after position {after}, but \
                         positions up to {admitted_up_to} were admitted"
                    ));
                }
                if outcomes.sold_out_after == Some(after) {
                    return Err(format!(
                        "event #{index} says the stock ran out again with no admission since"
                    ));
                }
                outcomes.sold_out += 1;
                outcomes.sold_out_after = Some(after);
            }
        }
    }
    outcomes.admitted = admitted_up_to;
    outcomes.bought = bought.len() as u64;
    outcomes.running =
        admitted_up_to - ended_up_to - bought.range(ended_up_to + 1..).count() as u64;
    Ok(outcomes)
}

/// What the log says of one position: waiting, admitted, bought, passed, or sold out.
fn outcome_of(log: &PublishedLog, position: u64) -> String {
    let mut admitted_at = None;
    let mut outcome = None;
    let mut sold_out_at = None;
    for event in &log.events {
        match event.event {
            LineEvent::Admitted { up_to, .. } if admitted_at.is_none() && position <= up_to => {
                admitted_at = Some(event.index);
            }
            LineEvent::Bought { position: p } if p == position => {
                outcome = Some(format!("bought (event #{})", event.index));
            }
            LineEvent::Passed { up_to } if outcome.is_none() && position <= up_to => {
                outcome = Some(format!("passed (event #{})", event.index));
            }
            LineEvent::SoldOut { after } if admitted_at.is_none() && position > after => {
                sold_out_at = Some(event.index);
            }
            _ => {}
        }
    }
    match (admitted_at, outcome, sold_out_at) {
        (Some(at), Some(outcome), _) => format!("admitted (event #{at}), {outcome}"),
        (Some(at), None, _) => format!("admitted (event #{at}), admission running"),
        (None, _, Some(at)) => format!("sold out (event #{at})"),
        (None, _, None) => "not admitted yet".to_owned(),
    }
}

/// The event chain as the log publishes it: each event with its hash, each admission with
/// the first position it admits (the one after the previous admission's last), each end of
/// admissions with the first position it ends.
pub fn publish_events(sale: SaleId, events: &[LineEvent]) -> Vec<PublishedEvent> {
    let mut chain = Chain::new(events_genesis(sale));
    events
        .iter()
        .zip(first_positions(events))
        .enumerate()
        .map(|(i, (event, from))| PublishedEvent {
            index: i as u64 + 1,
            event: *event,
            from,
            hash: chain.push_event(event),
        })
        .collect()
}

/// Each event's `from` as the log publishes it: for an admission the first position it
/// admits, for an end of admissions the first position it ends (each the one after the
/// previous one's last); `None` for the others. Hashing aside, what a published page needs.
pub fn first_positions(events: &[LineEvent]) -> impl Iterator<Item = Option<u64>> + '_ {
    let (mut admitted_up_to, mut ended_up_to) = (0, 0);
    events.iter().map(move |event| match *event {
        LineEvent::Admitted { up_to, .. } => {
            let from = admitted_up_to + 1;
            admitted_up_to = up_to;
            Some(from)
        }
        LineEvent::Passed { up_to } => {
            let from = ended_up_to + 1;
            ended_up_to = up_to;
            Some(from)
        }
        LineEvent::Bought { .. } | LineEvent::SoldOut { .. } => None,
    })
}

/// The log of a line as the core keeps it: for tests and for a backend that publishes from a
/// `Line` (the shop builds the same from its backend's pages).
pub fn publish(
    sale: SaleId,
    seed: &Seed,
    starts_at_ms: i64,
    pre_queue: u64,
    joins: &[JoinRecord],
    positions: &[LineId],
    events: &[LineEvent],
) -> PublishedLog {
    let mut join_chain = Chain::new(joins_genesis(sale));
    let joins: Vec<PublishedJoin> = joins
        .iter()
        .enumerate()
        .map(|(i, record)| PublishedJoin {
            index: i as u64 + 1,
            record: *record,
            hash: join_chain.push_join(record),
        })
        .collect();
    let events = publish_events(sale, events);
    let events_head = Head {
        length: events.len() as u64,
        hash: events.last().map_or(events_genesis(sale), |e| e.hash),
    };
    PublishedLog {
        sale,
        starts_at_ms,
        commitment: seed.commitment(),
        seed: Some(seed.to_hex()),
        pre_queue,
        joins_head: Head {
            length: join_chain.len(),
            hash: join_chain.head(),
        },
        events_head,
        joins,
        positions: positions.to_vec(),
        events,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::BuyerId;
    use crate::line::{AdmitInputs, Advanced, Line, LineTimes, unix_ms};
    use time::macros::datetime;
    use time::{Duration, OffsetDateTime};

    const T0: OffsetDateTime = datetime!(2026-12-24 12:00 UTC);
    const SEED: Seed = Seed([3; 32]);

    fn sale() -> SaleId {
        SaleId(uuid::Uuid::from_u128(0xabcd))
    }

    fn member(n: u32) -> LineId {
        LineId::of(sale(), &BuyerId::parse(&format!("chain-{n}")).unwrap())
    }

    /// A line whose `pre_queue` members joined before the start, a minute to buy once admitted.
    fn pre_queued(pre_queue: u32) -> Line {
        let mut line = Line::new(LineTimes {
            opens_at: T0 - Duration::minutes(10),
            starts_at: T0,
            ends_at: T0 + Duration::hours(1),
            admission_secs: 60,
        });
        for n in 0..pre_queue {
            let at = T0 - Duration::seconds(300 - i64::from(n));
            line.join(member(n), SEED.draw_key(&member(n)), at).unwrap();
        }
        line
    }

    fn published(line: &Line) -> PublishedLog {
        publish(
            sale(),
            &SEED,
            unix_ms(T0),
            line.summary(T0).pre_queue,
            line.join_records(1, usize::MAX),
            line.members(),
            line.events(1, usize::MAX),
        )
    }

    /// A line with a drawn pre-queue of 20, 5 later joiners, two admissions and two buys.
    fn honest() -> PublishedLog {
        let mut line = pre_queued(20);
        for n in 20..25 {
            let at = T0 + Duration::seconds(i64::from(n));
            line.join(member(n), SEED.draw_key(&member(n)), at).unwrap();
        }
        let inputs = AdmitInputs {
            rate_per_sec: 4,
            units_left: 10,
            units_returnable: 0,
        };
        line.advance(T0 + Duration::seconds(30), inputs);
        line.record_bought(2);
        line.advance(T0 + Duration::seconds(32), inputs);
        line.record_bought(5);
        line.record_bought(5);
        published(&line)
    }

    fn rehash(log: &mut PublishedLog) {
        let joins: Vec<JoinRecord> = log.joins.iter().map(|j| j.record).collect();
        let events: Vec<LineEvent> = log.events.iter().map(|e| e.event).collect();
        let seed = Seed::parse(log.seed.as_deref().unwrap()).unwrap();
        let commitment = log.commitment.clone();
        *log = publish(
            log.sale,
            &seed,
            log.starts_at_ms,
            log.pre_queue,
            &joins,
            &log.positions,
            &events,
        );
        log.commitment = commitment;
    }

    #[test]
    fn an_honest_log_passes_with_its_receipts() {
        let log = honest();
        assert_eq!(log.joins.len(), 25);
        assert_eq!(log.pre_queue, 20);
        assert_eq!(
            log.events.len(),
            4,
            "two admissions, two buys (the repeat is none)"
        );
        let receipt = log.joins[7].hash;
        let verdict = verify(&log, Some(&receipt));
        assert!(verdict.passed(), "{verdict:#?}");
        assert_eq!(verdict.checks.len(), 10);
        let stranger = [7u8; 32];
        let verdict = verify(&log, Some(&stranger));
        assert_eq!(verdict.failed(), ["receipt in the join chain"]);
    }

    #[test]
    fn the_chain_is_the_documented_bytes() {
        let record = JoinRecord {
            line: LineId([1; 32]),
            joined_at_ms: -2,
        };
        let mut bytes = joins_genesis(sale()).to_vec();
        bytes.extend_from_slice(&[1; 32]);
        bytes.extend_from_slice(&(-2i64).to_be_bytes());
        let expected: Hash = Sha256::digest(&bytes).into();
        assert_eq!(join_hash(&joins_genesis(sale()), &record), expected);
        let genesis: Hash = Sha256::digest(
            b"flashsale line joins v1\x0000000000-0000-0000-0000-00000000abcd".as_slice(),
        )
        .into();
        assert_eq!(joins_genesis(sale()), genesis);
        assert_ne!(joins_genesis(sale()), events_genesis(sale()));
    }

    #[test]
    fn a_moved_record_is_caught() {
        let mut log = honest();
        log.joins.swap(3, 4);
        log.joins[3].index = 4;
        log.joins[4].index = 5;
        assert!(verify(&log, None).failed().contains(&"join chain intact"));
        // Moved and every hash recomputed: the published head no longer matches, and a receipt
        // handed out before no longer is in the chain.
        let receipt = honest().joins[10].hash;
        let head = log.joins_head;
        rehash(&mut log);
        log.joins_head = head;
        let failed = verify(&log, Some(&receipt)).failed();
        assert!(failed.contains(&"join chain head"), "{failed:?}");
        assert!(failed.contains(&"receipt in the join chain"), "{failed:?}");
    }

    #[test]
    fn a_join_inserted_into_the_pre_queue_after_the_start_is_caught() {
        let mut log = honest();
        let late = JoinRecord {
            line: member(99),
            joined_at_ms: log.starts_at_ms + 5_000,
        };
        let mut joins: Vec<JoinRecord> = log.joins.iter().map(|j| j.record).collect();
        joins.insert(3, late);
        log.joins = joins
            .iter()
            .enumerate()
            .map(|(i, record)| PublishedJoin {
                index: i as u64 + 1,
                record: *record,
                hash: [0; 32],
            })
            .collect();
        log.pre_queue += 1;
        let seed = Seed::parse(log.seed.as_deref().unwrap()).unwrap();
        log.positions = draw_order(&seed, joins[..21].iter().map(|j| j.line))
            .into_iter()
            .chain(joins[21..].iter().map(|j| j.line))
            .collect();
        let head = log.joins_head;
        rehash(&mut log);
        log.joins_head = head;
        let failed = verify(&log, None).failed();
        assert!(
            failed.contains(&"pre-queue joined before the start"),
            "{failed:?}"
        );
        assert!(failed.contains(&"join chain head"), "{failed:?}");
        // Even stamped before the start, it moves every later receipt.
        let receipt = honest().joins[20].hash;
        log.joins[3].record.joined_at_ms = log.starts_at_ms - 1;
        rehash(&mut log);
        assert!(
            verify(&log, Some(&receipt))
                .failed()
                .contains(&"receipt in the join chain")
        );
    }

    #[test]
    fn a_changed_seed_is_caught() {
        let mut log = honest();
        log.seed = Some(Seed([4; 32]).to_hex());
        let failed = verify(&log, None).failed();
        assert!(
            failed.contains(&"seed matches the commitment"),
            "{failed:?}"
        );
        assert!(
            failed.contains(&"positions are the seeded draw, then arrival order"),
            "{failed:?}"
        );
        // Changed with its commitment: the draw no longer gives the published positions.
        log.commitment = Seed([4; 32]).commitment();
        let failed = verify(&log, None).failed();
        assert_eq!(
            failed,
            ["positions are the seeded draw, then arrival order"],
            "{failed:?}"
        );
    }

    #[test]
    fn a_skipped_position_is_caught() {
        // In the positions: someone's place taken by the one behind.
        let mut log = honest();
        log.positions.remove(4);
        assert_eq!(
            verify(&log, None).failed(),
            ["positions are the seeded draw, then arrival order"]
        );
        // In the admissions: position 5 never admitted, the next admission starting at 6.
        let mut log = honest();
        let second = log
            .events
            .iter_mut()
            .filter(|e| matches!(e.event, LineEvent::Admitted { .. }))
            .nth(1)
            .unwrap();
        second.from = Some(second.from.unwrap() + 1);
        assert_eq!(verify(&log, None).failed(), ["admissions follow positions"]);
        // A buy by a position never admitted.
        let mut log = honest();
        log.events.push(PublishedEvent {
            index: 5,
            event: LineEvent::Bought { position: 24 },
            from: None,
            hash: [0; 32],
        });
        let events: Vec<LineEvent> = log.events.iter().map(|e| e.event).collect();
        let mut chain = Chain::new(events_genesis(log.sale));
        for (event, published) in events.iter().zip(log.events.iter_mut()) {
            published.hash = chain.push_event(event);
        }
        assert!(
            verify(&log, None)
                .failed()
                .contains(&"admissions follow positions")
        );
    }

    /// Three admitted and one buys; the admissions end (one buy noted late), the stock runs
    /// out, a unit comes back and is back-filled, and the stock runs out again.
    fn with_outcomes() -> PublishedLog {
        let mut line = pre_queued(10);
        let units = |units_left| AdmitInputs {
            rate_per_sec: 4,
            units_left,
            units_returnable: 0,
        };
        let first = line.advance(T0, units(3));
        assert_eq!(first.admission.map(|a| a.0), Some(3));
        line.record_bought(1);
        // Positions 1 to 3 end: 2 and 3 passed, then 3's buy is noted late.
        let ended = line.advance(T0 + Duration::seconds(60), units(1));
        assert_eq!(ended.ended_up_to, Some(3));
        assert_eq!(ended.admission.map(|a| a.0), Some(4));
        line.record_bought(3);
        let out = line.advance(T0 + Duration::seconds(61), units(0));
        assert_eq!(out.sold_out_after, Some(4));
        assert_eq!(out.admission, None);
        // Asked again with nothing changed: the stock ran out once.
        assert_eq!(
            line.advance(T0 + Duration::seconds(62), units(0)),
            Advanced::default()
        );
        // Two units free (position 4 holds one): back-fill for position 5, then out again.
        assert_eq!(
            line.advance(T0 + Duration::seconds(70), units(2))
                .admission
                .map(|a| a.0),
            Some(5)
        );
        assert_eq!(
            line.advance(T0 + Duration::seconds(71), units(0))
                .sold_out_after,
            Some(5)
        );
        published(&line)
    }

    #[test]
    fn passed_and_sold_out_are_chained_and_checked() {
        let log = with_outcomes();
        let kinds: Vec<LineEvent> = log.events.iter().map(|e| e.event).collect();
        assert_eq!(
            kinds,
            [
                LineEvent::Admitted {
                    up_to: 3,
                    at_ms: unix_ms(T0)
                },
                LineEvent::Bought { position: 1 },
                LineEvent::Passed { up_to: 3 },
                LineEvent::Admitted {
                    up_to: 4,
                    at_ms: unix_ms(T0) + 60_000
                },
                LineEvent::Bought { position: 3 },
                LineEvent::SoldOut { after: 4 },
                LineEvent::Admitted {
                    up_to: 5,
                    at_ms: unix_ms(T0) + 70_000
                },
                LineEvent::SoldOut { after: 5 },
            ]
        );
        assert_eq!(
            log.events[2].from,
            Some(1),
            "the end states its first position"
        );
        let verdict = verify(&log, Some(&log.joins[0].hash));
        assert!(verdict.passed(), "{verdict:#?}");
        let outcomes = &verdict.checks[8];
        assert_eq!(outcomes.name, "every admission ends bought or passed");
        assert_eq!(
            outcomes.outcome.as_deref(),
            Ok(
                "5 admitted: 2 bought (1 noted after their admission's end), 1 passed, 2 \
                admission still running; the stock ran out 2 time(s), last with positions up \
                to 5 admitted"
            )
        );
        // Each position's outcome, as a receipt's holder reads it.
        let position_of = |p: u64| {
            let line = log.positions[p as usize - 1];
            let join = log.joins.iter().find(|j| j.record.line == line).unwrap();
            verify(&log, Some(&join.hash)).checks[9]
                .outcome
                .clone()
                .unwrap()
        };
        assert!(position_of(2).ends_with("position 2: admitted (event #1), passed (event #3)"));
        assert!(position_of(3).ends_with("position 3: admitted (event #1), bought (event #5)"));
        assert!(position_of(5).ends_with("admitted (event #7), admission running"));
        assert!(position_of(6).ends_with("position 6: sold out (event #8)"));
    }

    /// Rewrites a log's events and rehashes them, as a forger would.
    fn with_events(log: &PublishedLog, events: &[LineEvent]) -> PublishedLog {
        let mut forged = log.clone();
        forged.events = publish_events(log.sale, events);
        forged.events_head = Head {
            length: forged.events.len() as u64,
            hash: forged
                .events
                .last()
                .map_or(events_genesis(log.sale), |e| e.hash),
        };
        forged
    }

    #[test]
    fn a_false_outcome_is_caught() {
        let log = with_outcomes();
        let honest: Vec<LineEvent> = log.events.iter().map(|e| e.event).collect();
        let outcomes = ["every admission ends bought or passed"];
        // An end of positions never admitted.
        let mut events = honest.clone();
        events[2] = LineEvent::Passed { up_to: 7 };
        assert_eq!(verify(&with_events(&log, &events), None).failed(), outcomes);
        // An end in the middle of an admission (position 2 passed, 3 not).
        events[2] = LineEvent::Passed { up_to: 2 };
        assert_eq!(verify(&with_events(&log, &events), None).failed(), outcomes);
        // The same admissions ended twice.
        let mut events = honest.clone();
        events.insert(3, LineEvent::Passed { up_to: 3 });
        assert_eq!(verify(&with_events(&log, &events), None).failed(), outcomes);
        // An end chained before the admission it ends.
        let mut events = honest.clone();
        events.swap(0, 2);
        assert!(
            verify(&with_events(&log, &events), None)
                .failed()
                .contains(&outcomes[0])
        );
        // Sold out named after a position not the last admitted, and twice in a row.
        let mut events = honest.clone();
        events[5] = LineEvent::SoldOut { after: 3 };
        assert_eq!(verify(&with_events(&log, &events), None).failed(), outcomes);
        let mut events = honest.clone();
        events.insert(6, LineEvent::SoldOut { after: 4 });
        assert_eq!(verify(&with_events(&log, &events), None).failed(), outcomes);
        // The honest events, rehashed the same way, pass: the forger's tool is not the catch.
        assert!(verify(&with_events(&log, &honest), None).passed());
        // Any of these published under the old head fails the head check too.
        let mut events = honest.clone();
        events[2] = LineEvent::Passed { up_to: 4 };
        let mut forged = with_events(&log, &events);
        forged.events_head = log.events_head;
        assert!(verify(&forged, None).failed().contains(&"event chain head"));
    }

    #[test]
    fn a_chain_extends_record_by_record() {
        let mut chain = Chain::new(joins_genesis(sale()));
        assert_eq!(chain.head(), joins_genesis(sale()));
        assert_eq!(chain.hash(0), Some(joins_genesis(sale())));
        let record = JoinRecord {
            line: member(1),
            joined_at_ms: 5,
        };
        let hash = chain.push_join(&record);
        assert_eq!(chain.hash(1), Some(hash));
        assert_eq!(chain.hash(2), None);
        assert_eq!(parse_hash(&hex(&hash)), Some(hash));
        assert_eq!(parse_hash("zz"), None);
    }
}
