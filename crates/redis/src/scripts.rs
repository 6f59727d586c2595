//! The Lua scripts (`src/lua/*.lua`, compiled in), each prefixed with the layout's prelude
//! and hashed once at start, so every call goes by SHA: the stock ledger's, and the waiting
//! line's (`line_*.lua`, each after the shared `line_head.lua`).

use crate::layout::{line_lua_prelude, lua_prelude};
use redis::Script;

/// The script files, by name. `release.lua` is not a script of its own: it is the shared head
/// of the two that give units back.
const RESERVE: &str = include_str!("lua/reserve.lua");
const CONFIRM: &str = include_str!("lua/confirm.lua");
const RELEASE: &str = include_str!("lua/release.lua");
const CANCEL_PENDING: &str = include_str!("lua/cancel_pending.lua");
const RETURN_UNIT: &str = include_str!("lua/return_unit.lua");
const AVAILABLE: &str = include_str!("lua/available.lua");
const RELEASE_LEASE: &str = include_str!("lua/release_lease.lua");
const PENDING: &str = include_str!("lua/pending.lua");
const ENTRY: &str = include_str!("lua/entry.lua");
const SWAP_IN: &str = include_str!("lua/swap_in.lua");
/// The line's files. `line_head.lua` (the rules several operations share) starts every line
/// script; `line_summary.lua` is the answer of `line_advance.lua`.
const LINE_HEAD: &str = include_str!("lua/line_head.lua");
const LINE_SUMMARY: &str = include_str!("lua/line_summary.lua");
const LINE_SET_UP: &str = include_str!("lua/line_set_up.lua");
const LINE_JOIN: &str = include_str!("lua/line_join.lua");
const LINE_PLACE: &str = include_str!("lua/line_place.lua");
const LINE_ADVANCE: &str = include_str!("lua/line_advance.lua");
const LINE_STANDING: &str = include_str!("lua/line_standing.lua");
const LINE_RECORD_BOUGHT: &str = include_str!("lua/line_record_bought.lua");
const LINE_SET_CONTROL: &str = include_str!("lua/line_set_control.lua");
const LINE_MEMBERS: &str = include_str!("lua/line_members.lua");
const LINE_CHAIN: &str = include_str!("lua/line_chain.lua");

/// The scripts, hashed once at start.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) reserve: Script,
    pub(crate) confirm: Script,
    pub(crate) cancel_pending: Script,
    pub(crate) return_unit: Script,
    pub(crate) available: Script,
    pub(crate) release_lease: Script,
    pub(crate) pending: Script,
    pub(crate) entry: Script,
    pub(crate) swap_in: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        let prelude = lua_prelude();
        let script = |parts: &[&str]| Script::new(&format!("{prelude}{}", parts.concat()));
        Self {
            reserve: script(&[RESERVE]),
            confirm: script(&[CONFIRM]),
            cancel_pending: script(&[RELEASE, CANCEL_PENDING]),
            return_unit: script(&[RELEASE, RETURN_UNIT]),
            available: script(&[AVAILABLE]),
            release_lease: script(&[RELEASE_LEASE]),
            pending: script(&[PENDING]),
            entry: script(&[ENTRY]),
            swap_in: script(&[SWAP_IN]),
        }
    }

    pub(crate) fn all(&self) -> [&Script; 9] {
        [
            &self.reserve,
            &self.confirm,
            &self.cancel_pending,
            &self.return_unit,
            &self.available,
            &self.release_lease,
            &self.pending,
            &self.entry,
            &self.swap_in,
        ]
    }
}

/// The waiting line's scripts, one per `WaitingLine` operation, hashed once at start.
#[derive(Debug)]
pub(crate) struct LineScripts {
    pub(crate) set_up: Script,
    pub(crate) join: Script,
    pub(crate) place: Script,
    pub(crate) advance: Script,
    pub(crate) standing: Script,
    pub(crate) record_bought: Script,
    pub(crate) set_control: Script,
    pub(crate) members: Script,
    pub(crate) chain: Script,
}

impl LineScripts {
    pub(crate) fn new() -> Self {
        let prelude = line_lua_prelude();
        let script =
            |parts: &[&str]| Script::new(&format!("{prelude}{LINE_HEAD}{}", parts.concat()));
        Self {
            set_up: script(&[LINE_SET_UP]),
            join: script(&[LINE_JOIN]),
            place: script(&[LINE_PLACE]),
            advance: script(&[LINE_SUMMARY, LINE_ADVANCE]),
            standing: script(&[LINE_STANDING]),
            record_bought: script(&[LINE_RECORD_BOUGHT]),
            set_control: script(&[LINE_SET_CONTROL]),
            members: script(&[LINE_MEMBERS]),
            chain: script(&[LINE_CHAIN]),
        }
    }

    pub(crate) fn all(&self) -> [&Script; 9] {
        [
            &self.set_up,
            &self.join,
            &self.place,
            &self.advance,
            &self.standing,
            &self.record_bought,
            &self.set_control,
            &self.members,
            &self.chain,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILES: [(&str, &str); 21] = [
        ("reserve", RESERVE),
        ("confirm", CONFIRM),
        ("release", RELEASE),
        ("cancel_pending", CANCEL_PENDING),
        ("return_unit", RETURN_UNIT),
        ("available", AVAILABLE),
        ("release_lease", RELEASE_LEASE),
        ("pending", PENDING),
        ("entry", ENTRY),
        ("swap_in", SWAP_IN),
        ("line_head", LINE_HEAD),
        ("line_summary", LINE_SUMMARY),
        ("line_set_up", LINE_SET_UP),
        ("line_join", LINE_JOIN),
        ("line_place", LINE_PLACE),
        ("line_advance", LINE_ADVANCE),
        ("line_standing", LINE_STANDING),
        ("line_record_bought", LINE_RECORD_BOUGHT),
        ("line_set_control", LINE_SET_CONTROL),
        ("line_members", LINE_MEMBERS),
        ("line_chain", LINE_CHAIN),
    ];

    /// The entry and lease formats are stated once, in `layout.rs`: a script that slices an
    /// entry or matches a lease itself, or spells a state letter, would be a second copy that
    /// can drift from the Rust side.
    #[test]
    fn scripts_read_entries_and_leases_only_through_the_prelude() {
        for (name, text) in FILES {
            let code: String = text
                .lines()
                .filter(|line| !line.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            for forbidden in [
                "string.sub",
                "string.match",
                "'T'",
                "'P'",
                "'D'",
                "'R'",
                "':'",
            ] {
                assert!(
                    !code.contains(forbidden),
                    "{name}.lua uses {forbidden}: go through the layout prelude instead"
                );
            }
        }
    }
}
