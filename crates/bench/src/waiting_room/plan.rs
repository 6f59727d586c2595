//! Who the waiting-room crowd is: when each member arrives, how fast it reacts once it may
//! buy, whether it buys at all, and how it cheats. A pure function of the member number, as
//! the rush crowd's clicks are (`crowd.rs`), so the round with the line and the round without
//! it play the same crowd.
//!
//! The crowd's model of speed is stated here, because the contrast rests on it: the members
//! who arrive in the last second before the start are bots, and bots react at once
//! (`BOT_REACTION_MS_MAX`); everyone else is a person who arrived earlier and clicks after a
//! human reaction time. Without a line the server takes buys in order of arrival, so the bots'
//! head start decides who wins; with a line, the draw does.

use crate::crowd::{CrowdShape, mix, unit};
use std::time::Duration;

/// The last second before the start, when the bots join, in milliseconds.
pub const LAST_SECOND_MS: u64 = 1000;
/// Members who join after the start arrive within this long after it, in milliseconds.
pub const LATE_JOIN_SPREAD_MS: u64 = 2000;
/// A bot clicks within this long of being let through, in milliseconds.
pub const BOT_REACTION_MS_MAX: u64 = 100;
/// A person clicks this long after being let through, in milliseconds (uniform between).
pub const HUMAN_REACTION_MS_MIN: u64 = 300;
pub const HUMAN_REACTION_MS_MAX: u64 = 2000;

/// The waiting-room crowd's shares and times, from the flags.
#[derive(Debug, Clone)]
pub struct LineShape {
    /// How long before the start the line opens; the early members join over it.
    pub lead: Duration,
    /// How long after the start the members keep polling before they leave.
    pub stay: Duration,
    /// Members who join in the last second before the start (the bots).
    pub last_second_share: f64,
    /// Members who join only after the start (behind the draw, in arrival order).
    pub late_share: f64,
    /// Admitted members who never buy (their admissions pass).
    pub never_buy_share: f64,
}

/// When a member arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Some time over the lead, up to the last second.
    Early,
    /// In the last second before the start: a bot.
    LastSecond,
    /// After the start.
    Late,
}

/// How a member tries to buy without its own admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cheat {
    None,
    /// Buys on a made-up ticket once the sale has started.
    GuessedTicket,
    /// Once admitted, hands its buy path to a friend (another account), who tries it first.
    SharedTicket,
    /// Once admitted, waits until its admission has ended and tries its ticket then.
    LateTicket,
}

/// One member's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub arrival: Arrival,
    /// When it joins (and, without a line, arrives), relative to the start, in milliseconds
    /// (negative: before it).
    pub join_at_ms: i64,
    /// How long after being let through it clicks.
    pub reaction: Duration,
    /// Whether it buys once let through (the others never do).
    pub buys: bool,
    pub cheat: Cheat,
    /// Joins from two tabs at once.
    pub double_join: bool,
    /// Its click fires twice at once with the same key.
    pub double_click: bool,
}

// Purposes of `unit` for the line's choices; 1 to 4 are the rush crowd's (`crowd.rs`), and
// 1 (cheater) and 2 (double click) mean the same here.
const CHEATER: u64 = 1;
const DOUBLE_CLICK: u64 = 2;
const ARRIVAL: u64 = 11;
const JOIN_TIME: u64 = 12;
const REACTION: u64 = 13;
const NEVER_BUYS: u64 = 14;
const DOUBLE_JOIN: u64 = 15;

impl LineShape {
    pub fn plan(&self, crowd: &CrowdShape, member: u64) -> Plan {
        let arrival = match unit(member, ARRIVAL) {
            x if x < self.last_second_share => Arrival::LastSecond,
            x if x < self.last_second_share + self.late_share => Arrival::Late,
            _ => Arrival::Early,
        };
        let lead_ms = self.lead.as_millis() as u64;
        let at = unit(member, JOIN_TIME);
        let join_at_ms = match arrival {
            // Over the lead up to the last second (all of the lead if it is that short).
            Arrival::Early => {
                let early_ms = lead_ms.saturating_sub(LAST_SECOND_MS).max(1);
                -(lead_ms as i64) + (at * early_ms as f64) as i64
            }
            Arrival::LastSecond => -((at * LAST_SECOND_MS.min(lead_ms) as f64) as i64) - 1,
            Arrival::Late => (at * LATE_JOIN_SPREAD_MS as f64) as i64,
        };
        let reaction_ms = match arrival {
            Arrival::LastSecond => unit(member, REACTION) * BOT_REACTION_MS_MAX as f64,
            Arrival::Early | Arrival::Late => {
                HUMAN_REACTION_MS_MIN as f64
                    + unit(member, REACTION)
                        * (HUMAN_REACTION_MS_MAX - HUMAN_REACTION_MS_MIN) as f64
            }
        };
        let cheat = if unit(member, CHEATER) < crowd.cheater_share {
            match mix(member) % 3 {
                0 => Cheat::GuessedTicket,
                1 => Cheat::SharedTicket,
                _ => Cheat::LateTicket,
            }
        } else {
            Cheat::None
        };
        Plan {
            arrival,
            join_at_ms,
            reaction: Duration::from_millis(reaction_ms as u64),
            // A late-ticket cheater waits out its admission instead of buying.
            buys: unit(member, NEVER_BUYS) >= self.never_buy_share && cheat != Cheat::LateTicket,
            cheat,
            double_join: unit(member, DOUBLE_JOIN) < crowd.double_click_share,
            double_click: unit(member, DOUBLE_CLICK) < crowd.double_click_share,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes() -> (CrowdShape, LineShape) {
        let crowd = CrowdShape {
            buyers: 20_000,
            double_click_share: 0.2,
            repeat_share: 0.0,
            cheater_share: 0.06,
            pay_share: 0.5,
            run_id: "t".into(),
        };
        let line = LineShape {
            lead: Duration::from_secs(10),
            stay: Duration::from_secs(30),
            last_second_share: 0.2,
            late_share: 0.1,
            never_buy_share: 0.2,
        };
        (crowd, line)
    }

    #[test]
    fn arrivals_fall_in_their_windows_and_bots_react_fastest() {
        let (crowd, line) = shapes();
        let (mut bots, mut late, mut cheats, mut buyers) = (0, 0, 0, 0);
        for m in 0..crowd.buyers {
            let plan = line.plan(&crowd, m);
            match plan.arrival {
                Arrival::Early => {
                    assert!((-10_000..=-1000).contains(&plan.join_at_ms), "{plan:?}");
                    assert!(plan.reaction >= Duration::from_millis(HUMAN_REACTION_MS_MIN));
                }
                Arrival::LastSecond => {
                    bots += 1;
                    assert!((-1001..0).contains(&plan.join_at_ms), "{plan:?}");
                    assert!(plan.reaction <= Duration::from_millis(BOT_REACTION_MS_MAX));
                }
                Arrival::Late => {
                    late += 1;
                    assert!((0..LATE_JOIN_SPREAD_MS as i64).contains(&plan.join_at_ms));
                }
            }
            cheats += u64::from(plan.cheat != Cheat::None);
            buyers += u64::from(plan.buys);
            assert_eq!(plan, line.plan(&crowd, m), "a plan is a pure function");
        }
        assert!((3_700..4_300).contains(&bots), "{bots}");
        assert!((1_800..2_200).contains(&late), "{late}");
        assert!((1_000..1_400).contains(&cheats), "{cheats}");
        assert!((15_300..16_300).contains(&buyers), "{buyers}");
    }
}
