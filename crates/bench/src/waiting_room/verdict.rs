//! The line's verdict: four named checks over what the crowd was told (every join and
//! `line/me` answer, every buy without an admission), what the server holds (its order listing,
//! the status's commitment and seed, the line read twice a quiet second apart), and nothing else.
//! A pure function of a `LineObservation`, so a forged observation (a server that cheats) can
//! be fed to it in a test.
//!
//! What the checks can rely on, and why the tolerances:
//! - Admission times (`admitted_until`) come from the server's clock and never go down, so the
//!   order of admissions is checked exactly, without the bench's clock.
//! - A node answers `line/me` for a buyer not yet admitted from its copy of the line's summary,
//!   refreshed at most every 250 ms (the server's `LINE_SUMMARY_CACHE_MS`): an answer reflects
//!   the line as it was at most that long before it was asked. "Still waiting after the
//!   counter passed you" is only counted past `LINE_VIEW_STALE_MS_MAX`.
//! - A buy's ticket is checked at the same instant its reservation is timed, by the node's
//!   clock; the admission was timed by the line's backend (in Redis: Redis's clock), so the
//!   start of an admission is compared with `CLOCK_SKEW_MS_MAX` to spare.

use crate::api::OrderRow;
use crate::crowd::CrowdShape;
use crate::verdict::Check;
use flashsale_core::line::{LineId, Seed, draw_order};
use flashsale_core::{BuyerId, OrderStatus, SaleId};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use time::OffsetDateTime;

/// How stale an answer about the line may be, in milliseconds: four times the server's 250 ms
/// summary cache, for a node's clock and the time a request waits inside the server.
pub const LINE_VIEW_STALE_MS_MAX: u64 = 1000;
/// Largest difference between a node's clock and the line backend's clock, in milliseconds.
pub const CLOCK_SKEW_MS_MAX: i64 = 1000;
/// Problems listed in a check's detail; the count says how many there were in all.
const PROBLEMS_SHOWN_MAX: usize = 5;

/// A buyer's state as `line/me` (and the join) answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    PreQueue,
    Waiting,
    Admitted,
    Passed,
    SoldOut,
    Bought,
}

impl State {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pre_queue" => State::PreQueue,
            "waiting" => State::Waiting,
            "admitted" => State::Admitted,
            "passed" => State::Passed,
            "sold_out" => State::SoldOut,
            "bought" => State::Bought,
            _ => return None,
        })
    }

    /// The position has been let through (now or before).
    pub fn let_through(self) -> bool {
        matches!(self, State::Admitted | State::Passed | State::Bought)
    }

    /// The position has not been let through yet.
    pub fn not_yet(self) -> bool {
        matches!(self, State::Waiting | State::SoldOut)
    }

    /// Nothing can change for this member any more.
    pub fn is_final(self) -> bool {
        matches!(self, State::Passed | State::Bought)
    }
}

/// Which call an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    Join,
    Poll,
    /// After the crowd left, every member not done yet is asked once more.
    RollCall,
}

/// One answer about one member's place.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub member: u64,
    pub asked: Asked,
    /// Since the line opened, by the bench's clock.
    pub sent_ms: u64,
    pub received_ms: u64,
    pub state: State,
    pub position: Option<u64>,
    pub admitted_up_to: u64,
    pub admitted_until: Option<OffsetDateTime>,
}

/// Buys tried without the buyer's own admission, by how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cheats {
    pub kind: &'static str,
    pub tries: u64,
    /// Answered 2xx: must stay 0.
    pub wins: u64,
}

/// The line as the admins' line call answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct LineRead {
    pub length: u64,
    pub pre_queue: u64,
    pub admitted_up_to: u64,
    pub holders: u64,
    pub bought: u64,
    pub passed: u64,
    pub admit_per_sec: u64,
    pub paused: bool,
}

impl LineRead {
    pub fn of(body: &serde_json::Value) -> Self {
        let n = |k: &str| body[k].as_u64().unwrap_or(0);
        Self {
            length: n("length"),
            pre_queue: n("pre_queue"),
            admitted_up_to: n("admitted_up_to"),
            holders: n("holders"),
            bought: n("bought"),
            passed: n("passed"),
            admit_per_sec: n("admit_per_sec"),
            paused: body["paused"].as_bool().unwrap_or(false),
        }
    }
}

/// The line read twice, a quiet second apart, once the crowd has gone and the reaper has run:
/// in that second the line must let through as many as its rate, its free units and its
/// waiting members allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QuietSecond {
    pub before: LineRead,
    pub after: LineRead,
    /// Units not reserved by anyone (the lower of the readings before and after).
    pub available: u64,
}

/// Everything the line's checks look at.
pub struct LineObservation<'a> {
    pub shape: &'a CrowdShape,
    pub sale: SaleId,
    pub admission_secs: u64,
    /// The bench created the sale, so every member of the line and every order is the crowd's.
    pub fresh: bool,
    /// When the sale started, since the line opened, by the bench's clock.
    pub start_ms: u64,
    pub seen: &'a [Seen],
    /// The commitment the status showed before the start (the first one seen), and after.
    pub commitment_before: Option<String>,
    /// Another commitment was shown before the start than the first one.
    pub commitment_changed: bool,
    pub commitment_after: Option<String>,
    pub seed: Option<String>,
    /// The line at the end of the run.
    pub server: Option<LineRead>,
    pub cheats: &'a [Cheats],
    /// The status ever showed a buy path.
    pub buy_path_shown: bool,
    pub orders: &'a [OrderRow],
    pub orders_complete: bool,
    pub quiet: Option<QuietSecond>,
}

/// What the answers say about each member and each position.
#[derive(Debug, Default)]
pub struct Places {
    /// Each member's position (the first seen).
    pub position: HashMap<u64, u64>,
    /// Members seen at two positions.
    pub moved: Vec<(u64, u64, u64)>,
    /// Each admitted position's admission end (the first seen).
    pub admitted_until: BTreeMap<u64, OffsetDateTime>,
    /// Positions seen with two admission ends.
    pub readmitted: Vec<u64>,
    /// Members with an answer saying they were let through.
    pub let_through: HashSet<u64>,
    /// Members with an answer saying `admitted`.
    pub seen_admitted: HashSet<u64>,
    /// Members with an answer saying `passed`.
    pub seen_passed: HashSet<u64>,
    /// Members whose join put them in the pre-queue, with their first join's send time.
    pub pre_queue: BTreeMap<u64, u64>,
    /// Members whose join gave a position at once (after the draw): (first sent, first received).
    pub joined_after_draw: BTreeMap<u64, (u64, u64)>,
    /// Members who joined twice at once, and whether both answers agreed.
    pub double_joins: u64,
    pub double_joins_disagreeing: u64,
}

impl Places {
    /// Members told `passed` who never saw their `admitted`: they asked too rarely to catch
    /// their turn (what the poll rule is there to keep at zero for members who poll as told).
    pub fn passed_unseen(&self) -> usize {
        self.seen_passed.difference(&self.seen_admitted).count()
    }

    pub fn of(seen: &[Seen]) -> Self {
        let mut places = Places::default();
        let mut joins: HashMap<u64, Vec<&Seen>> = HashMap::new();
        for s in seen {
            if let Some(position) = s.position {
                let first = *places.position.entry(s.member).or_insert(position);
                if first != position {
                    places.moved.push((s.member, first, position));
                }
            }
            if s.state.let_through() {
                places.let_through.insert(s.member);
            }
            match s.state {
                State::Admitted => {
                    places.seen_admitted.insert(s.member);
                }
                State::Passed => {
                    places.seen_passed.insert(s.member);
                }
                _ => {}
            }
            if let (State::Admitted, Some(position), Some(until)) =
                (s.state, s.position, s.admitted_until)
            {
                let first = *places.admitted_until.entry(position).or_insert(until);
                if first != until {
                    places.readmitted.push(position);
                }
            }
            if s.asked == Asked::Join {
                joins.entry(s.member).or_default().push(s);
            }
        }
        for (member, answers) in joins {
            let sent = answers.iter().map(|s| s.sent_ms).min().unwrap_or(0);
            let received = answers.iter().map(|s| s.received_ms).min().unwrap_or(0);
            if answers.iter().any(|s| s.state == State::PreQueue) {
                places.pre_queue.insert(member, sent);
            } else {
                places.joined_after_draw.insert(member, (sent, received));
            }
            if answers.len() > 1 {
                places.double_joins += 1;
                let agree = answers
                    .windows(2)
                    .all(|w| (w[0].state == State::PreQueue) == (w[1].state == State::PreQueue));
                places.double_joins_disagreeing += u64::from(!agree);
            }
        }
        places
    }
}

/// The line's four checks, in the order the report shows them.
pub fn check(ob: &LineObservation<'_>) -> Vec<Check> {
    let places = Places::of(ob.seen);
    vec![
        nobody_bought_without_admission(ob, &places),
        admissions_followed_the_line(ob, &places),
        draw_matches_seed(ob, &places),
        returned_units_went_to_the_next(ob, &places),
    ]
}

fn verdict(name: &'static str, problems: Vec<String>, mut detail: String) -> Check {
    if !problems.is_empty() {
        detail.push_str(&format!("; {} problem(s)", problems.len()));
    }
    for problem in problems.iter().take(PROBLEMS_SHOWN_MAX) {
        detail.push_str("; ");
        detail.push_str(problem);
    }
    Check {
        name,
        passed: Some(problems.is_empty()),
        detail,
    }
}

/// Every order is a buyer's who was let through, reserved while its admission ran; no buy
/// without the buyer's own admission was accepted; the status never showed a buy path.
fn nobody_bought_without_admission(ob: &LineObservation<'_>, places: &Places) -> Check {
    let mut problems = Vec::new();
    let tries: u64 = ob.cheats.iter().map(|c| c.tries).sum();
    let wins: u64 = ob.cheats.iter().map(|c| c.wins).sum();
    if wins > 0 {
        let by_kind: Vec<String> = ob
            .cheats
            .iter()
            .filter(|c| c.wins > 0)
            .map(|c| format!("{} {}", c.kind, c.wins))
            .collect();
        problems.push(format!(
            "{wins} buys without the buyer's own admission were accepted ({})",
            by_kind.join(", ")
        ));
    }
    if ob.buy_path_shown {
        problems.push("the status showed a buy path for a sale with a line".into());
    }
    let admission = time::Duration::seconds(ob.admission_secs as i64);
    let skew = time::Duration::milliseconds(CLOCK_SKEW_MS_MAX);
    let mut timed = 0;
    for order in ob.orders {
        let Some(member) = ob.shape.member_of(&order.buyer) else {
            if ob.fresh {
                problems.push(format!(
                    "order {} is by {}, who is not in the crowd",
                    order.order_id, order.buyer
                ));
            }
            continue;
        };
        if !places.let_through.contains(&member) {
            problems.push(format!(
                "order {} is by member {member}, who was never seen admitted",
                order.order_id
            ));
            continue;
        }
        let until = places
            .position
            .get(&member)
            .and_then(|p| places.admitted_until.get(p));
        if let (Some(&until), Some(reserved)) = (until, order.reserved_at) {
            timed += 1;
            if reserved < until - admission - skew || reserved >= until {
                problems.push(format!(
                    "order {} was reserved at {reserved}, outside its buyer's admission (ending {until})",
                    order.order_id
                ));
            }
        }
    }
    let kinds: Vec<String> = ob
        .cheats
        .iter()
        .map(|c| format!("{} {}", c.kind, c.tries))
        .collect();
    let detail = format!(
        "{} orders{}, each by a member seen admitted ({timed} timed within its admission); {wins} of {tries} buys without the buyer's own admission accepted ({}); the status {} a buy path",
        ob.orders.len(),
        if ob.orders_complete {
            ""
        } else {
            " (listing incomplete)"
        },
        kinds.join(", "),
        if ob.buy_path_shown {
            "showed"
        } else {
            "never showed"
        }
    );
    verdict("nobody_bought_without_admission", problems, detail)
}

/// Positions were let through in order: each answer agrees with its own counter, admissions
/// were timed in position order, nobody was told to wait after the counter had passed them,
/// and each member holds one place of its own.
fn admissions_followed_the_line(ob: &LineObservation<'_>, places: &Places) -> Check {
    let mut problems = Vec::new();
    for s in ob.seen {
        if let Some(problem) = inconsistent(ob, s) {
            problems.push(problem);
        }
    }
    // Admissions in position order, by the server's clock.
    let mut latest: Option<(u64, OffsetDateTime)> = None;
    for (&position, &until) in &places.admitted_until {
        if let Some((before, before_until)) = latest
            && until < before_until
        {
            problems.push(format!(
                "position {position} was admitted (until {until}) before position {before} (until {before_until})"
            ));
        }
        latest = Some((position, until));
    }
    for position in &places.readmitted {
        problems.push(format!(
            "position {position} was admitted twice (two admission ends)"
        ));
    }
    problems.extend(told_to_wait_after_the_counter(ob.seen));
    let (positions, place_problems) = one_place_each(ob, places);
    problems.extend(place_problems);
    let detail = format!(
        "{} answers: let through exactly when at or below their counter; {} admissions in position order by the server's clock; nobody told to wait once the counter had passed them (+{LINE_VIEW_STALE_MS_MAX} ms for a node's copy); {} members on {positions} distinct positions, one place each ({} joined twice at once)",
        ob.seen.len(),
        places.admitted_until.len(),
        places.position.len(),
        places.double_joins
    );
    verdict("admissions_followed_the_line", problems, detail)
}

/// One answer against itself: let through exactly when at or below its own counter.
fn inconsistent(ob: &LineObservation<'_>, s: &Seen) -> Option<String> {
    let at = |what: &str| {
        format!(
            "member {} ({:?}, sent at {} ms) was told {what}",
            s.member, s.asked, s.sent_ms
        )
    };
    match (s.state, s.position) {
        (State::PreQueue, _) if s.sent_ms > ob.start_ms + LINE_VIEW_STALE_MS_MAX => {
            Some(at("pre_queue after the draw"))
        }
        (State::PreQueue, _) => None,
        (state, None) => Some(at(&format!("{state:?} without a position"))),
        (State::Admitted, Some(_)) if s.admitted_until.is_none() => {
            Some(at("admitted without an admission end"))
        }
        (state, Some(p)) if state.let_through() && p > s.admitted_up_to => Some(at(&format!(
            "{state:?} at position {p}, past the counter {}",
            s.admitted_up_to
        ))),
        (state, Some(p)) if state.not_yet() && p <= s.admitted_up_to => Some(at(&format!(
            "{state:?} at position {p}, within the counter {}",
            s.admitted_up_to
        ))),
        _ => None,
    }
}

/// Answers telling a position to wait although an answer received more than
/// `LINE_VIEW_STALE_MS_MAX` before it was asked showed the counter at or past that position.
fn told_to_wait_after_the_counter(seen: &[Seen]) -> Vec<String> {
    // The counter as known by each moment: the highest one shown (or implied by a position let
    // through) by any answer received by then.
    let mut known: Vec<(u64, u64)> = seen
        .iter()
        .map(|s| {
            let implied = if s.state.let_through() {
                s.position.unwrap_or(0)
            } else {
                0
            };
            (s.received_ms, s.admitted_up_to.max(implied))
        })
        .collect();
    known.sort_unstable();
    let mut highest = 0;
    for entry in &mut known {
        highest = highest.max(entry.1);
        entry.1 = highest;
    }
    let mut problems = Vec::new();
    for s in seen.iter().filter(|s| s.state.not_yet()) {
        let (Some(position), Some(by)) =
            (s.position, s.sent_ms.checked_sub(LINE_VIEW_STALE_MS_MAX))
        else {
            continue;
        };
        let i = known.partition_point(|(received, _)| *received <= by);
        if i > 0 && known[i - 1].1 >= position {
            problems.push(format!(
                "member {} at position {position} was told {:?} at {} ms, after an answer by {by} ms had shown the counter at {}",
                s.member,
                s.state,
                s.sent_ms,
                known[i - 1].1
            ));
        }
    }
    problems
}

/// Each member holds one position, and no two members share one; in a line of the crowd's
/// own, the positions seen are within its length. Returns the number of distinct positions.
fn one_place_each(ob: &LineObservation<'_>, places: &Places) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    for (member, first, then) in &places.moved {
        problems.push(format!(
            "member {member} was at position {first}, then at {then}"
        ));
    }
    if places.double_joins_disagreeing > 0 {
        problems.push(format!(
            "{} members who joined twice at once got different places",
            places.double_joins_disagreeing
        ));
    }
    let mut holder: HashMap<u64, u64> = HashMap::new();
    for (&member, &position) in &places.position {
        if let Some(other) = holder.insert(position, member)
            && other != member
        {
            problems.push(format!(
                "members {other} and {member} were both at position {position}"
            ));
        }
    }
    if ob.fresh
        && let Some(server) = ob.server
        && let Some(&highest) = holder.keys().max()
        && highest > server.length
    {
        problems.push(format!(
            "position {highest} was seen in a line of {}",
            server.length
        ));
    }
    (holder.len(), problems)
}

/// The seed's SHA-256 is the commitment published before the start; the pre-queue's positions
/// are the draw recomputed from the seed; later joiners follow in arrival order.
fn draw_matches_seed(ob: &LineObservation<'_>, places: &Places) -> Check {
    let mut problems = Vec::new();
    let seed = ob.seed.as_deref().and_then(Seed::parse);
    match (&seed, &ob.commitment_after) {
        (None, _) => problems.push("no seed was published after the start".into()),
        (Some(seed), Some(after)) if seed.commitment() != *after => problems.push(format!(
            "SHA-256 of the seed is {}, the commitment shown {after}",
            seed.commitment()
        )),
        (Some(_), None) => problems.push("no commitment was shown after the start".into()),
        _ => {}
    }
    match (&ob.commitment_before, &ob.commitment_after) {
        (None, _) => problems.push("no commitment was shown before the start".into()),
        (Some(before), Some(after)) if before != after => problems.push(format!(
            "the commitment before the start ({before}) is not the one after it ({after})"
        )),
        _ => {}
    }
    if ob.commitment_changed {
        problems.push("the commitment changed before the start".into());
    }
    // The pre-queue members whose positions the bench saw, in position order, against the draw.
    let mut drawn: Vec<(u64, u64)> = places
        .pre_queue
        .keys()
        .filter_map(|m| places.position.get(m).map(|p| (*p, *m)))
        .collect();
    drawn.sort_unstable();
    if let Some(seed) = &seed {
        let line_id = |member: u64| {
            BuyerId::parse(&ob.shape.buyer_id(member))
                .ok()
                .map(|buyer| LineId::of(ob.sale, &buyer))
        };
        let seen_order: Vec<Option<LineId>> = drawn.iter().map(|(_, m)| line_id(*m)).collect();
        let expected: Vec<Option<LineId>> = draw_order(seed, seen_order.iter().flatten().copied())
            .into_iter()
            .map(Some)
            .collect();
        if let Some(k) = (0..seen_order.len()).find(|&k| seen_order.get(k) != expected.get(k)) {
            problems.push(format!(
                "the pre-queue is not in the seed's draw order: the {}th member by position (position {}) is not the {}th by draw key",
                k + 1,
                drawn[k].0,
                k + 1
            ));
        }
    }
    let pre_queue_len = ob.server.map(|s| s.pre_queue);
    let whole = ob.fresh && pre_queue_len == Some(drawn.len() as u64);
    if whole
        && let Some((k, (p, _))) = drawn
            .iter()
            .enumerate()
            .find(|(k, (p, _))| *p != *k as u64 + 1)
    {
        problems.push(format!(
            "the pre-queue's {}th member by position is at position {p}",
            k + 1
        ));
    }
    problems.extend(later_joiners_in_arrival_order(
        places,
        pre_queue_len.unwrap_or(drawn.len() as u64),
    ));
    let detail = format!(
        "SHA-256(seed) {} the commitment shown before the start; {} pre-queue members' positions {} the draw recomputed from the seed{}; {} later joiners behind them in arrival order",
        if problems.is_empty() {
            "is"
        } else {
            "checked against"
        },
        drawn.len(),
        if problems.is_empty() {
            "follow"
        } else {
            "checked against"
        },
        if whole {
            format!(" (positions 1..={})", drawn.len())
        } else {
            String::new()
        },
        places.joined_after_draw.len()
    );
    verdict("draw_matches_seed", problems, detail)
}

/// Members who joined after the draw come after the pre-queue, and one whose join was answered
/// before another's was sent has the earlier position.
fn later_joiners_in_arrival_order(places: &Places, pre_queue_len: u64) -> Vec<String> {
    let mut problems = Vec::new();
    let mut late: Vec<(u64, u64, u64, u64)> = places
        .joined_after_draw
        .iter()
        .filter_map(|(m, (sent, received))| {
            places.position.get(m).map(|p| (*p, *m, *sent, *received))
        })
        .collect();
    late.sort_unstable();
    for (position, member, ..) in &late {
        if *position <= pre_queue_len {
            problems.push(format!(
                "member {member} joined after the draw and got position {position}, within the pre-queue of {pre_queue_len}"
            ));
        }
    }
    // From the back: the earliest answer among everyone behind each member.
    let mut earliest_behind: Option<(u64, u64, u64)> = None;
    for &(position, member, sent, received) in late.iter().rev() {
        if let Some((behind_received, behind_member, behind_position)) = earliest_behind
            && behind_received < sent
        {
            problems.push(format!(
                "member {behind_member} (position {behind_position}) had joined before member {member} (position {position}) asked to"
            ));
        }
        if earliest_behind.is_none_or(|(r, ..)| received < r) {
            earliest_behind = Some((received, member, position));
        }
    }
    problems
}

/// Units that came back went on to the line: admissions after the first return are the next
/// positions, and once quiet the line lets through what its rate, free units and waiting
/// members allow.
fn returned_units_went_to_the_next(ob: &LineObservation<'_>, places: &Places) -> Check {
    let mut problems = Vec::new();
    let returned: Vec<&OrderRow> = ob
        .orders
        .iter()
        .filter(|o| OrderStatus::parse(&o.status) == Some(OrderStatus::Expired))
        .collect();
    let first_return = returned.iter().filter_map(|o| o.expires_at).min();
    let admission = time::Duration::seconds(ob.admission_secs as i64);
    let mut after = BTreeSet::new();
    let mut before_max = 0;
    if let Some(first) = first_return {
        for (&position, &until) in &places.admitted_until {
            if until - admission > first {
                after.insert(position);
            } else {
                before_max = before_max.max(position);
            }
        }
        if let Some(&lowest) = after.first()
            && lowest <= before_max
        {
            problems.push(format!(
                "position {lowest} was admitted after the first unit came back, position {before_max} before it"
            ));
        }
    }
    let quiet = match ob.quiet {
        Some(q) => quiet_second(q, &mut problems),
        None => {
            problems.push("the line could not be read once quiet".into());
            String::new()
        }
    };
    let detail = format!(
        "{} units came back{}; {} positions seen admitted after that{}; {quiet}",
        returned.len(),
        first_return
            .map(|at| format!(" (the first at {at})"))
            .unwrap_or_default(),
        after.len(),
        match (after.first(), after.last()) {
            (Some(a), Some(b)) =>
                format!(" ({a}..={b}, all after the {before_max} admitted before)"),
            _ => String::new(),
        }
    );
    let mut check = verdict("returned_units_went_to_the_next", problems, detail);
    if returned.is_empty() && check.passed == Some(true) {
        // Nothing came back: the line's liveness was checked, the back-fill was not.
        check.passed = None;
        check
            .detail
            .push_str("; no unit came back in this run (more unpaid orders or a shorter payment window would)");
    }
    check
}

/// The quiet second's rule; its description for the detail.
fn quiet_second(q: QuietSecond, problems: &mut Vec<String>) -> String {
    let (before, after) = (q.before, q.after);
    let waiting = before.length.saturating_sub(before.admitted_up_to);
    let free = q.available.saturating_sub(before.holders);
    let rate = before.admit_per_sec.min(after.admit_per_sec);
    let owed = rate.min(free).min(waiting);
    if after.admitted_up_to < before.admitted_up_to {
        problems.push(format!(
            "the counter went back from {} to {}",
            before.admitted_up_to, after.admitted_up_to
        ));
    }
    let admitted = after.admitted_up_to.saturating_sub(before.admitted_up_to);
    if !before.paused && !after.paused && admitted < owed {
        problems.push(format!(
            "{free} units free ({} not reserved, {} held by admitted buyers) and {waiting} waiting, yet a quiet second at {rate}/s let through {admitted}",
            q.available, before.holders
        ));
    }
    format!(
        "once quiet: {} units not reserved, {} held, {waiting} waiting; a second at {rate}/s let through {admitted} (owed {owed})",
        q.available, before.holders
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-12-03 12:00 UTC);
    const ADMISSION_SECS: u64 = 10;
    /// The sale starts 5 s after the line opens.
    const START_MS: u64 = 5000;

    fn shape() -> CrowdShape {
        CrowdShape {
            buyers: 8,
            double_click_share: 0.0,
            repeat_share: 0.0,
            cheater_share: 0.0,
            pay_share: 0.0,
            run_id: "v".into(),
        }
    }

    fn sale() -> SaleId {
        SaleId::parse("6ba7b810-9dad-11d1-80b4-00c04fd430c8").unwrap()
    }

    fn seed() -> Seed {
        Seed([9; 32])
    }

    /// An honest run: members 0..6 join before the start and are drawn by the seed, member 6
    /// and 7 join after it; stock 2, rate 2/s. Positions 1 and 2 are admitted at the start;
    /// position 1 buys and pays, position 2 buys and does not pay, so its unit comes back at
    /// T0 + 6 s and position 3 is admitted for it at T0 + 7 s and buys.
    struct Run {
        seen: Vec<Seen>,
        orders: Vec<OrderRow>,
        /// Member at each position (index 0 = position 1).
        by_position: Vec<u64>,
    }

    fn answer(
        member: u64,
        asked: Asked,
        at_ms: u64,
        state: State,
        position: Option<u64>,
        up_to: u64,
    ) -> Seen {
        Seen {
            member,
            asked,
            sent_ms: at_ms,
            received_ms: at_ms + 5,
            state,
            position,
            admitted_up_to: up_to,
            admitted_until: None,
        }
    }

    fn honest() -> Run {
        let shape = shape();
        let ids: Vec<LineId> = (0..6)
            .map(|m| LineId::of(sale(), &BuyerId::parse(&shape.buyer_id(m)).unwrap()))
            .collect();
        let order = draw_order(&seed(), ids.clone());
        let mut by_position: Vec<u64> = order
            .iter()
            .map(|id| ids.iter().position(|x| x == id).unwrap() as u64)
            .collect();
        by_position.extend([6, 7]);
        let mut seen = Vec::new();
        for m in 0..6 {
            seen.push(answer(m, Asked::Join, 100 * m, State::PreQueue, None, 0));
        }
        seen.push(answer(6, Asked::Join, 5200, State::Waiting, Some(7), 2));
        seen.push(answer(7, Asked::Join, 5400, State::Waiting, Some(8), 2));
        let until = |secs: i64| Some(T0 + time::Duration::seconds(secs));
        for (i, &m) in by_position.iter().enumerate() {
            let position = i as u64 + 1;
            let mut s = match position {
                1 | 2 => answer(m, Asked::Poll, 5300, State::Admitted, Some(position), 2),
                _ => answer(m, Asked::Poll, 5300, State::Waiting, Some(position), 2),
            };
            if position <= 2 {
                s.admitted_until = until(ADMISSION_SECS as i64);
            }
            seen.push(s);
        }
        let third = by_position[2];
        let mut admitted = answer(third, Asked::Poll, 12_500, State::Admitted, Some(3), 3);
        admitted.admitted_until = until(7 + ADMISSION_SECS as i64);
        seen.push(admitted);
        for (i, &m) in by_position.iter().enumerate().skip(3) {
            seen.push(answer(
                m,
                Asked::RollCall,
                20_000,
                State::SoldOut,
                Some(i as u64 + 1),
                3,
            ));
        }
        let row = |member: u64, status: &str, reserved_s: i64| OrderRow {
            order_id: format!("order-{member}"),
            buyer: shape.buyer_id(member),
            status: status.into(),
            reserved_at: Some(T0 + time::Duration::seconds(reserved_s)),
            expires_at: Some(T0 + time::Duration::seconds(reserved_s + 5)),
        };
        let orders = vec![
            row(by_position[0], "paid", 1),
            row(by_position[1], "expired", 1),
            row(by_position[2], "pending_payment", 8),
        ];
        Run {
            seen,
            orders,
            by_position,
        }
    }

    fn quiet() -> QuietSecond {
        let read = LineRead {
            length: 8,
            pre_queue: 6,
            admitted_up_to: 3,
            holders: 0,
            bought: 3,
            passed: 0,
            admit_per_sec: 2,
            paused: false,
        };
        QuietSecond {
            before: read,
            after: read,
            available: 0,
        }
    }

    fn observe<'a>(
        run: &'a Run,
        shape: &'a CrowdShape,
        cheats: &'a [Cheats],
    ) -> LineObservation<'a> {
        LineObservation {
            shape,
            sale: sale(),
            admission_secs: ADMISSION_SECS,
            fresh: true,
            start_ms: START_MS,
            seen: &run.seen,
            commitment_before: Some(seed().commitment()),
            commitment_changed: false,
            commitment_after: Some(seed().commitment()),
            seed: Some(seed().to_hex()),
            server: Some(quiet().after),
            cheats,
            buy_path_shown: false,
            orders: &run.orders,
            orders_complete: true,
            quiet: Some(quiet()),
        }
    }

    fn failed(ob: &LineObservation<'_>) -> Vec<&'static str> {
        check(ob)
            .into_iter()
            .filter(|c| c.passed == Some(false))
            .map(|c| c.name)
            .collect()
    }

    const NO_CHEATS: [Cheats; 1] = [Cheats {
        kind: "guessed ticket",
        tries: 3,
        wins: 0,
    }];

    #[test]
    fn an_honest_run_passes_every_check() {
        let (run, shape) = (honest(), shape());
        let checks = check(&observe(&run, &shape, &NO_CHEATS));
        let names: Vec<&str> = checks.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "nobody_bought_without_admission",
                "admissions_followed_the_line",
                "draw_matches_seed",
                "returned_units_went_to_the_next"
            ]
        );
        for c in &checks {
            assert_eq!(c.passed, Some(true), "{c:?}");
        }
        assert!(
            checks[3].detail.contains("1 positions seen admitted after"),
            "{checks:?}"
        );
    }

    #[test]
    fn places_count_who_was_told_passed_without_seeing_admitted() {
        let seen = [
            answer(1, Asked::Poll, 100, State::Admitted, Some(1), 1),
            answer(1, Asked::Poll, 900, State::Passed, Some(1), 3),
            answer(2, Asked::Poll, 900, State::Passed, Some(2), 3),
            answer(3, Asked::Poll, 900, State::Waiting, Some(4), 3),
        ];
        let places = Places::of(&seen);
        assert_eq!(places.passed_unseen(), 1);
        assert_eq!(places.let_through.len(), 2);
        assert_eq!(Places::of(&honest().seen).passed_unseen(), 0);
    }

    #[test]
    fn a_buy_without_an_admission_fails() {
        let (mut run, shape) = (honest(), shape());
        // The server sold to position 5, never admitted.
        let fifth = run.by_position[4];
        run.orders.push(OrderRow {
            order_id: "stolen".into(),
            buyer: shape.buyer_id(fifth),
            status: "paid".into(),
            reserved_at: Some(T0 + time::Duration::seconds(2)),
            expires_at: None,
        });
        assert_eq!(
            failed(&observe(&run, &shape, &NO_CHEATS)),
            ["nobody_bought_without_admission"]
        );
        // And a server that accepts someone else's ticket.
        let run = honest();
        let cheats = [Cheats {
            kind: "someone else's ticket",
            tries: 2,
            wins: 1,
        }];
        assert_eq!(
            failed(&observe(&run, &shape, &cheats)),
            ["nobody_bought_without_admission"]
        );
        // And one whose admitted buyer bought after the admission ended.
        let mut run = honest();
        run.orders[0].reserved_at = Some(T0 + time::Duration::seconds(ADMISSION_SECS as i64));
        assert_eq!(
            failed(&observe(&run, &shape, &NO_CHEATS)),
            ["nobody_bought_without_admission"]
        );
    }

    #[test]
    fn a_skipped_position_fails() {
        let (mut run, shape) = (honest(), shape());
        // Position 4 is let through while position 3 is still told to wait, well after.
        let (third, fourth) = (run.by_position[2], run.by_position[3]);
        let mut skipped = answer(fourth, Asked::Poll, 12_000, State::Admitted, Some(4), 4);
        skipped.admitted_until = Some(T0 + time::Duration::seconds(17));
        run.seen.push(skipped);
        run.seen.push(answer(
            third,
            Asked::Poll,
            14_000,
            State::Waiting,
            Some(3),
            2,
        ));
        assert!(
            failed(&observe(&run, &shape, &NO_CHEATS)).contains(&"admissions_followed_the_line")
        );
    }

    #[test]
    fn admissions_out_of_order_fail() {
        let (mut run, shape) = (honest(), shape());
        // Position 3's admission is timed before positions 1 and 2's.
        for s in &mut run.seen {
            if s.position == Some(3) && s.state == State::Admitted {
                s.admitted_until = Some(T0 + time::Duration::seconds(5));
            }
        }
        assert!(
            failed(&observe(&run, &shape, &NO_CHEATS)).contains(&"admissions_followed_the_line")
        );
    }

    #[test]
    fn two_members_on_one_position_fail() {
        let (mut run, shape) = (honest(), shape());
        let last = run.by_position[7];
        run.seen
            .push(answer(last, Asked::Poll, 9_000, State::SoldOut, Some(6), 3));
        assert!(
            failed(&observe(&run, &shape, &NO_CHEATS)).contains(&"admissions_followed_the_line")
        );
    }

    #[test]
    fn a_draw_that_is_not_the_seeds_fails() {
        let (run, shape) = (honest(), shape());
        // Another seed, with its own commitment: the order seen is not its draw.
        let other = Seed([10; 32]);
        let mut ob = observe(&run, &shape, &NO_CHEATS);
        ob.seed = Some(other.to_hex());
        ob.commitment_after = Some(other.commitment());
        ob.commitment_before = Some(other.commitment());
        assert_eq!(failed(&ob), ["draw_matches_seed"]);
        // The right seed, but a commitment that was not its hash before the start.
        let mut ob = observe(&run, &shape, &NO_CHEATS);
        ob.commitment_before = Some(other.commitment());
        assert_eq!(failed(&ob), ["draw_matches_seed"]);
    }

    #[test]
    fn a_late_joiner_ahead_of_an_earlier_one_fails() {
        let (mut run, shape) = (honest(), shape());
        // Member 7 joined (and was answered) long before member 6, yet stands behind it.
        for s in &mut run.seen {
            if s.member == 7 && s.asked == Asked::Join {
                (s.sent_ms, s.received_ms) = (5_050, 5_060);
            }
        }
        assert_eq!(
            failed(&observe(&run, &shape, &NO_CHEATS)),
            ["draw_matches_seed"]
        );
    }

    #[test]
    fn a_unit_back_in_stock_while_buyers_wait_fails() {
        let (run, shape) = (honest(), shape());
        let mut ob = observe(&run, &shape, &NO_CHEATS);
        // One unit free, five waiting, rate 2/s: a quiet second must let one through.
        ob.quiet = Some(QuietSecond {
            available: 1,
            ..quiet()
        });
        assert_eq!(failed(&ob), ["returned_units_went_to_the_next"]);
        let mut moved = quiet();
        moved.after.admitted_up_to = 4;
        ob.quiet = Some(QuietSecond {
            available: 1,
            ..moved
        });
        assert!(failed(&ob).is_empty());
    }

    #[test]
    fn state_names_are_the_servers() {
        for (text, state) in [
            ("pre_queue", State::PreQueue),
            ("waiting", State::Waiting),
            ("admitted", State::Admitted),
            ("passed", State::Passed),
            ("sold_out", State::SoldOut),
            ("bought", State::Bought),
        ] {
            assert_eq!(State::parse(text), Some(state));
        }
        assert_eq!(State::parse("queued"), None);
    }
}
