//! The bots' share of the units (issue 15): in every round of `--waiting-room` (through the
//! line, without one, and through a line asking a proof of work), how many of the units the
//! crowd won went to its bots. A bot is a member whose plan has it arrive in the last second
//! before the start (`plan::Arrival::LastSecond`); everyone else, early or late, is a person.
//! The classes come from the plan, not from what happened, so a bot that joined late (its
//! proof of work took past the start) is still counted as a bot.
//!
//! A unit won is an order accepted (a 202) for a member's own buy, counted once however many
//! clicks it took. A unit a winner left unpaid comes back and may be won again, so the units
//! won can exceed the stock; the share is of the orders accepted.

use crate::crowd::Accepted;
use serde::Serialize;
use std::collections::HashSet;

/// Bots and people, and what each won, in one round.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct BotShare {
    /// Members of the crowd by plan: bots (the last-second arrivals) and people (the rest).
    pub bots: u64,
    pub humans: u64,
    /// Orders accepted for the members' own buys.
    pub bot_units: u64,
    pub human_units: u64,
    /// bot_units ÷ (bot_units + human_units); `None` when nobody won.
    pub bot_share: Option<f64>,
    /// bots ÷ members: the share a draw blind to arrival would give them on average.
    pub bot_member_share: f64,
}

impl BotShare {
    /// The share among `members` members (numbered 0..members), `is_bot` telling the bots,
    /// from the 202s the round saw.
    pub fn of(members: u64, is_bot: impl Fn(u64) -> bool, accepted: &[Accepted]) -> Self {
        let bots = (0..members).filter(|&m| is_bot(m)).count() as u64;
        let orders: HashSet<(u64, &str)> = accepted
            .iter()
            .map(|a| (a.buyer, a.order_id.as_str()))
            .collect();
        let bot_units = orders.iter().filter(|(m, _)| is_bot(*m)).count() as u64;
        let human_units = orders.len() as u64 - bot_units;
        let units = bot_units + human_units;
        Self {
            bots,
            humans: members - bots,
            bot_units,
            human_units,
            bot_share: (units > 0).then(|| bot_units as f64 / units as f64),
            bot_member_share: if members == 0 {
                0.0
            } else {
                bots as f64 / members as f64
            },
        }
    }
}

/// A share as a percentage for the text report ("-" when there is none).
pub fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "-".into(), |s| format!("{:.1} %", s * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn won(buyer: u64, order: &str) -> Accepted {
        Accepted {
            buyer,
            click: 0,
            order_id: order.into(),
            at: Duration::ZERO,
        }
    }

    #[test]
    fn units_are_orders_counted_once_and_split_by_plan() {
        // Members 0..10; the bots are 7, 8 and 9.
        let is_bot = |m: u64| m >= 7;
        let accepted = [
            won(1, "o1"),
            // A double click: two 202s, one order.
            won(8, "o8"),
            won(8, "o8"),
            won(9, "o9"),
            won(3, "o3"),
            won(7, "o7"),
        ];
        let share = BotShare::of(10, is_bot, &accepted);
        assert_eq!(share.bots, 3);
        assert_eq!(share.humans, 7);
        assert_eq!(share.bot_units, 3);
        assert_eq!(share.human_units, 2);
        assert_eq!(share.bot_share, Some(0.6));
        assert!((share.bot_member_share - 0.3).abs() < 1e-12);
        assert_eq!(percent(share.bot_share), "60.0 %");
    }

    #[test]
    fn nobody_won_means_no_share() {
        let share = BotShare::of(4, |m| m == 0, &[]);
        assert_eq!((share.bots, share.humans), (1, 3));
        assert_eq!(share.bot_share, None);
        assert_eq!(percent(share.bot_share), "-");
        assert_eq!(BotShare::of(0, |_| true, &[]).bot_member_share, 0.0);
    }
}
