//! The checks behind the fuzz targets, one function per target, each taking the raw fuzz
//! input. They live in a library so the seed corpora also run as ordinary unit tests
//! (`cargo test --manifest-path fuzz/Cargo.toml --lib`) with the same assertions.
//!
//! Every check asserts more than "no panic": a verifier is compared with an independent
//! re-implementation of what it should accept, and a parser's output is serialized and
//! parsed again (or stored and read back) and must come back the same.

// A fuzz harness reports a broken property by panicking, so `expect`/`unwrap` are the point.
#![allow(clippy::unwrap_used)]

pub mod ids;
pub mod queue;
pub mod sale;
pub mod stored;
pub mod tokens;

use time::OffsetDateTime;
use time::macros::datetime;

/// The fixed "now" every check runs at: the core takes time as an argument.
pub const NOW: OffsetDateTime = datetime!(2030-01-01 12:00 UTC);

/// A target's check: panics when the input breaks a property.
pub type Check = fn(&[u8]);

/// Every target by name, with its check: what the fuzz binaries call and the corpus tests
/// iterate over.
pub const TARGETS: &[(&str, Check)] = &[
    ("buyer_jwt", tokens::check_buyer_jwt),
    ("buyer_jwt_mutated", tokens::check_buyer_jwt_mutated),
    ("buy_path_token", tokens::check_buy_path_token),
    ("admin_token", tokens::check_admin_token),
    ("ids", ids::check_ids),
    ("sale_spec", sale::check_sale_spec),
    ("sale_patch", sale::check_sale_patch),
    ("stored_rows", stored::check_stored_rows),
    ("queue_record", queue::check_queue_record),
    ("queue_file", queue::check_queue_file),
    ("queue_log", queue::check_queue_log),
];

#[cfg(test)]
mod tests {
    use super::TARGETS;
    use std::path::Path;

    /// Runs every check over its committed seed corpus, so `cargo test` exercises the same
    /// assertions as the fuzzer.
    #[test]
    fn every_seed_passes_its_check() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        for (name, check) in TARGETS {
            let dir = corpus.join(name);
            let mut seeds = 0;
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
                let path = entry.unwrap().path();
                check(&std::fs::read(&path).unwrap());
                seeds += 1;
            }
            assert!(seeds > 0, "{name} has no seeds");
        }
    }
}
