//! Memory images written from the simulated machine, one file per format: Windows' crash dumps
//! ([`crashdump`], `kdleak sim --write-dump` with `--dump-type`), and what a hypervisor writes of
//! a VM: a QEMU-style ELF core ([`elf`]) and a raw physical image ([`raw`])
//! (`--write-image elf|raw`), both placed by [`vm`]. Each writer reads the machine's physical
//! memory and page tables ([`crate::sim::machine::physical`]) and writes a file the host's
//! readers (`crate::image`) and other tools (Volatility 3, kdmp-parser) open.

pub mod crashdump;
pub mod elf;
pub mod raw;
pub mod vm;

use std::path::PathBuf;

pub use crashdump::{filetime, write_dump, DumpKind, DumpOptions, DumpSummary};
pub use elf::write_elf;
pub use raw::write_raw;
pub use vm::Placement;

/// What an ELF or raw image writer wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    pub format: &'static str,
    pub cr3: u64,
    /// Pages written (the rest are holes).
    pub pages: u64,
    /// The file's length, holes included.
    pub file_size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot write the image {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Placement(#[from] vm::PlacementError),
}
