//! Fuzz target `stored_rows`: see `flashsale_fuzz::stored::check_stored_rows` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flashsale_fuzz::stored::check_stored_rows(data));
