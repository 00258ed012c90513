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

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

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

/// Writes a VM image of `size` bytes to `path` atomically: `fill` writes its contents and
/// returns how many pages it wrote; the file is then extended to `size` (holes at the end).
fn write_image(
    path: &Path,
    format: &'static str,
    frames: &vm::Frames,
    size: u64,
    fill: impl FnOnce(&mut File) -> io::Result<u64>,
) -> Result<ImageSummary, ImageError> {
    let mut pages = 0;
    crate::atomic_file::write_atomically_to_file(path, |file| {
        pages = fill(file)?;
        file.set_len(size)
    })
    .map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(ImageSummary {
        format,
        cr3: frames.cr3(),
        pages,
        file_size: size,
    })
}
