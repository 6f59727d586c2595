//! Fuzz target `queue_log`: see `flashsale_fuzz::queue::check_queue_log` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flashsale_fuzz::queue::check_queue_log(data));
