//! Fuzz target `pdb_parse`: see `fuzz/shared/pdb_parse.rs`.
#![no_main]

#[path = "../shared/pdb_parse.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
