//! Fuzz target `sale_patch`: see `flashsale_fuzz::sale::check_sale_patch` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flashsale_fuzz::sale::check_sale_patch(data));
