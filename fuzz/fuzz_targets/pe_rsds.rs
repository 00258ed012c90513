//! Fuzz target `pe_rsds`: see `fuzz/shared/pe_rsds.rs`.
#![no_main]

#[path = "../shared/pe_rsds.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
