//! Fuzz target `ids`: see `flashsale_fuzz::ids::check_ids` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flashsale_fuzz::ids::check_ids(data));
