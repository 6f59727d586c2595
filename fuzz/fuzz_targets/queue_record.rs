//! Fuzz target `queue_record`: see `flashsale_fuzz::queue::check_queue_record` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flashsale_fuzz::queue::check_queue_record(data));
