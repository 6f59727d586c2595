//! Fuzz target `sale_spec`: see `flashsale_fuzz::sale::check_sale_spec` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flashsale_fuzz::sale::check_sale_spec(data));
