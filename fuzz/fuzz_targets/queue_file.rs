//! Fuzz target `queue_file`: see `flashsale_fuzz::queue::check_queue_file` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flashsale_fuzz::queue::check_queue_file(data));
