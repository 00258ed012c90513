//! Memory images written from the simulated machine, one file per format: today Windows' crash
//! dumps ([`crashdump`], `kdleak sim --write-dump`). Each writer reads the machine's physical
//! memory and page tables ([`crate::sim::machine::physical`]) and writes a file the host's
//! readers (`crate::image`) and other tools (Volatility 3, kdmp-parser) open.

pub mod crashdump;

pub use crashdump::{filetime, write_dump, DumpKind, DumpOptions, DumpSummary};
