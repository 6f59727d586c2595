//! The ledger's Lua scripts (`src/lua/*.lua`, compiled in), each prefixed with the layout's
//! prelude and hashed once at start, so every call goes by SHA.

use crate::layout::lua_prelude;
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

#[cfg(test)]
mod tests {
    use super::*;

    const FILES: [(&str, &str); 10] = [
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
