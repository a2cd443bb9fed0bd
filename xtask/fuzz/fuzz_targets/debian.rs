#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xtask_lib::fuzz::debian(data));
