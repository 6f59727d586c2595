//! Fuzz target `admin_token`: see `flashsale_fuzz::tokens::check_admin_token` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flashsale_fuzz::tokens::check_admin_token(data));
