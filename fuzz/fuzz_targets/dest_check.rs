//! `dest_check`: see the property table in `fuzz/harness/src/lib.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmstate_fuzz_harness::dest_check(data));
