//! The seam between the image formats and the rest: what every format's reader hands back (the
//! machine's facts and where each physical page is in the file), and the one place that decides
//! which reader a file goes to.
//!
//! Adding a format is adding its reader beside [`super::crashdump`] — a function from the file's
//! first bytes and the whole [`Source`] to a [`Layout`] — and a signature check in [`read`].
//! Everything after that (the page-table walk, virtual reads, the `Memory` trait) is shared.

use super::crashdump;
use super::error::{DumpError, Result};
use super::physmap::PhysMap;
use super::Source;

/// The most bytes any format needs to recognise itself and read its header.
const HEAD_LEN: usize = crashdump::HEADER_LEN;

/// What an image says about the machine it was taken from, whatever its format: what the host
/// needs before it reads any memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineFacts {
    /// The build number (as GetVersion's MinorVersion).
    pub build: u16,
    pub checked_build: bool,
    /// CR3 of the process that was current: the kernel half of every address space is shared.
    pub directory_table_base: u64,
    /// 0 if the format does not say.
    pub ps_loaded_module_list: u64,
    /// Where KDDEBUGGER_DATA64 ("KDBG") is, decoded, in the image's memory; 0 if not known.
    pub kd_debugger_data_block: u64,
    pub number_processors: u32,
    pub bug_check_code: u32,
    /// When the image was taken (FILETIME), 0 if unknown.
    pub system_time: u64,
}

/// What a format's reader returns.
#[derive(Debug, Clone)]
pub struct Layout {
    pub facts: MachineFacts,
    /// Physical page frame → file offset.
    pub map: PhysMap,
}

/// Reads the facts and page map of the image in `src`, with the reader of its format.
pub fn read<S: Source + ?Sized>(src: &S) -> Result<Layout> {
    let head_len = src.len().min(HEAD_LEN as u64) as usize;
    let mut head = vec![0u8; head_len];
    src.read_at(0, &mut head)
        .map_err(|e| DumpError::corrupt(0, format!("reading the header failed: {e}")))?;
    // The crash dump reader is the last resort: its header check says what a file that no
    // reader takes is instead (a minidump, a 32-bit dump, not a dump at all).
    crashdump::read(&head, src)
}
