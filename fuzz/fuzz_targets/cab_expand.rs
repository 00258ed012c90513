//! Fuzz target `cab_expand`: see `fuzz/shared/cab_expand.rs`.
#![no_main]

#[path = "../shared/cab_expand.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
