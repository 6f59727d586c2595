//! Reading the line scripts' answers: each is a word (the outcome, or a refusal) followed by
//! its numbers, all as text (`line_*.lua` document theirs). An answer this code never gives
//! is an error whose outcome is unknown: the script may have run.

use crate::layout::{
    ADMITTED_EVENT, BOUGHT_EVENT, CHAIN_FIELD_SEPARATOR, PASSED_EVENT, SOLD_OUT_EVENT, decode_rate,
};
use flashsale_core::Timestamp;
use flashsale_core::line::{
    JoinRecord, LineControl, LineEvent, LineId, LineSummary, Place, Standing,
};
use flashsale_service::{BackendError, BackendResult, LineAnswer, LineRefused};

pub(super) const BACKEND: &str = "redis line";

/// The answer the scripts give to a sale with no line here (never set up, or lost).
const NOT_SET_UP: &str = "not_set_up";

pub(super) fn unexpected(what: &str, answer: &[String]) -> BackendError {
    BackendError::indeterminate(BACKEND, format!("{what}: unexpected answer {answer:?}"))
}

/// Reads a script's answer with `read`, which sees the word and the fields after it; a
/// missing or extra field, or a word `read` does not know, is `unexpected`.
fn decode<T>(
    what: &str,
    answer: &[String],
    read: impl FnOnce(&str, &[String]) -> Option<LineAnswer<T>>,
) -> BackendResult<LineAnswer<T>> {
    let decoded = match answer.split_first() {
        Some((word, [])) if word == NOT_SET_UP => Some(Err(LineRefused::NotSetUp)),
        Some((word, fields)) => read(word, fields),
        None => None,
    };
    decoded.ok_or_else(|| unexpected(what, answer))
}

fn number(text: &str) -> Option<u64> {
    text.parse().ok()
}

fn flag(text: &str) -> Option<bool> {
    match text {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// A time the scripts answer, in Unix ms.
fn time_of(text: &str) -> Option<Timestamp> {
    let ms: i64 = text.parse().ok()?;
    Timestamp::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

/// `line_join.lua`'s answer.
pub(super) fn joined(answer: &[String]) -> BackendResult<LineAnswer<Place>> {
    decode("joining the line", answer, |word, fields| {
        match (word, fields) {
            ("pre_queue", []) => Some(Ok(Place::PreQueue)),
            ("position", [p]) => number(p).map(|p| Ok(Place::Position(p))),
            ("not_open", []) => Some(Err(LineRefused::NotOpen)),
            ("ended", []) => Some(Err(LineRefused::Ended)),
            ("proof_missing", []) => Some(Err(LineRefused::ProofMissing)),
            ("challenge_used", []) => Some(Err(LineRefused::ChallengeUsed)),
            _ => None,
        }
    })
}

/// `line_place.lua`'s answer.
pub(super) fn place(answer: &[String]) -> BackendResult<LineAnswer<Option<Place>>> {
    decode("finding a place", answer, |word, fields| {
        match (word, fields) {
            ("pre_queue", []) => Some(Ok(Some(Place::PreQueue))),
            ("position", [p]) => number(p).map(|p| Ok(Some(Place::Position(p)))),
            ("none", []) => Some(Ok(None)),
            _ => None,
        }
    })
}

/// `line_summary.lua`'s answer (what `line_advance.lua` gives).
pub(super) fn summary(answer: &[String]) -> BackendResult<LineAnswer<LineSummary>> {
    decode("advancing the line", answer, |word, fields| {
        let (
            "ok",
            [
                length,
                pre_queue,
                drawn,
                admitted,
                holders,
                bought,
                paused,
                rate,
            ],
        ) = (word, fields)
        else {
            return None;
        };
        Some(Ok(LineSummary {
            length: number(length)?,
            pre_queue: number(pre_queue)?,
            drawn: flag(drawn)?,
            admitted_up_to: number(admitted)?,
            holders: number(holders)?,
            bought: number(bought)?,
            control: LineControl {
                paused: flag(paused)?,
                rate: decode_rate(rate)?,
            },
        }))
    })
}

/// `line_standing.lua`'s answer.
pub(super) fn standing(answer: &[String]) -> BackendResult<LineAnswer<Option<Standing>>> {
    decode("reading a standing", answer, |word, fields| {
        let standing = match (word, fields) {
            ("none", []) => None,
            ("pre_queue", []) => Some(Standing::PreQueue),
            ("waiting", [p, ahead]) => Some(Standing::Waiting {
                position: number(p)?,
                ahead: number(ahead)?,
            }),
            ("admitted", [p, until]) => Some(Standing::Admitted {
                position: number(p)?,
                until: time_of(until)?,
            }),
            ("bought", [p]) => Some(Standing::Bought {
                position: number(p)?,
            }),
            ("passed", [p]) => Some(Standing::Passed {
                position: number(p)?,
            }),
            ("sold_out", [p, ahead]) => Some(Standing::SoldOut {
                position: number(p)?,
                ahead: number(ahead)?,
            }),
            _ => return None,
        };
        Some(Ok(standing))
    })
}

/// `line_members.lua`'s answer.
pub(super) fn members(answer: &[String]) -> BackendResult<LineAnswer<Vec<LineId>>> {
    decode("listing the members", answer, |word, fields| {
        if word != "ok" {
            return None;
        }
        let members = fields.iter().map(|line| LineId::parse(line));
        members.collect::<Option<Vec<LineId>>>().map(Ok)
    })
}

/// `line_chain.lua`'s answer to `receipt`.
pub(super) fn receipt(answer: &[String]) -> BackendResult<LineAnswer<Option<u64>>> {
    decode("finding a receipt", answer, |word, fields| {
        match (word, fields) {
            ("ok", []) => Some(Ok(None)),
            ("ok", [index]) => number(index).map(|i| Ok(Some(i))),
            _ => None,
        }
    })
}

/// `line_chain.lua`'s answer to `joins`: `<line id hex>:<Unix ms>` each.
pub(super) fn join_records(answer: &[String]) -> BackendResult<LineAnswer<Vec<JoinRecord>>> {
    decode("reading the join chain", answer, |word, fields| {
        if word != "ok" {
            return None;
        }
        let records = fields.iter().map(|record| {
            let (line, ms) = record.split_once(CHAIN_FIELD_SEPARATOR)?;
            Some(JoinRecord {
                line: LineId::parse(line)?,
                joined_at_ms: ms.parse().ok()?,
            })
        });
        records.collect::<Option<Vec<_>>>().map(Ok)
    })
}

/// `line_chain.lua`'s answer to `events`: `a:<up to>:<Unix ms>`, `b:<position>`, `p:<up to>`
/// or `s:<after>` each.
pub(super) fn events(answer: &[String]) -> BackendResult<LineAnswer<Vec<LineEvent>>> {
    decode("reading the event chain", answer, |word, fields| {
        if word != "ok" {
            return None;
        }
        let events = fields.iter().map(|record| {
            let mut parts = record.split(CHAIN_FIELD_SEPARATOR);
            let event = match (parts.next()?, parts.next(), parts.next()) {
                (ADMITTED_EVENT, Some(up_to), Some(ms)) => LineEvent::Admitted {
                    up_to: number(up_to)?,
                    at_ms: ms.parse().ok()?,
                },
                (BOUGHT_EVENT, Some(position), None) => LineEvent::Bought {
                    position: number(position)?,
                },
                (PASSED_EVENT, Some(up_to), None) => LineEvent::Passed {
                    up_to: number(up_to)?,
                },
                (SOLD_OUT_EVENT, Some(after), None) => LineEvent::SoldOut {
                    after: number(after)?,
                },
                _ => return None,
            };
            parts.next().is_none().then_some(event)
        });
        events.collect::<Option<Vec<_>>>().map(Ok)
    })
}

/// The answer of a script that answers only `ok` (or that the line is not set up).
pub(super) fn done(what: &str, answer: &str) -> BackendResult<LineAnswer<()>> {
    match answer {
        "ok" => Ok(Ok(())),
        NOT_SET_UP => Ok(Err(LineRefused::NotSetUp)),
        other => Err(unexpected(what, &[other.to_owned()])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn answers_read_as_the_ports_values() {
        assert_eq!(
            joined(&words("position 41")).expect("reads"),
            Ok(Place::Position(41))
        );
        assert_eq!(
            joined(&words("not_set_up")).expect("reads"),
            Err(LineRefused::NotSetUp)
        );
        assert_eq!(place(&words("none")).expect("reads"), Ok(None));
        let summary = summary(&words("ok 5 3 1 2 1 1 0 auto")).expect("reads");
        assert_eq!(
            summary.map(|s| (s.length, s.holders, s.control.paused)),
            Ok((5, 1, false))
        );
        assert_eq!(
            standing(&words("sold_out 9 4")).expect("reads"),
            Ok(Some(Standing::SoldOut {
                position: 9,
                ahead: 4
            }))
        );
        assert_eq!(done("noting a buy", "ok").expect("reads"), Ok(()));
    }

    /// An error whose outcome is unknown, as every answer the scripts never give must be.
    fn unknown<T: std::fmt::Debug>(answer: BackendResult<T>) -> bool {
        answer.is_err_and(|e| !e.outcome_known)
    }

    #[test]
    fn answers_this_code_never_gives_are_errors_of_unknown_outcome() {
        let answer = |text: &str| if text.is_empty() { vec![] } else { words(text) };
        for bad in [
            "",
            "position",
            "position x",
            "position 1 2",
            "not_set_up 1",
            "ok",
        ] {
            assert!(unknown(joined(&answer(bad))), "{bad:?}");
        }
        for bad in [
            "ok 5 3 2 2 1 1 0 auto",
            "ok 5 3 1 2 1 1 0 fast",
            "ok 5",
            "none",
        ] {
            assert!(unknown(summary(&answer(bad))), "{bad:?}");
        }
        for bad in ["waiting 1", "admitted 1 x", "bought", "ended"] {
            assert!(unknown(standing(&answer(bad))), "{bad:?}");
        }
        assert!(
            unknown(members(&words("ok 00"))),
            "a line id is 64 hex characters"
        );
        assert!(unknown(done("noting a buy", "maybe")));
    }
}
