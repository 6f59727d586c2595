//! Fuzz target `buyer_jwt`: see `flashsale_fuzz::tokens::check_buyer_jwt` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flashsale_fuzz::tokens::check_buyer_jwt(data));
