//! The seam between the image formats and the rest: what every format's reader hands back (the
//! machine's facts and where each physical page is in the file), and the one place that decides
//! which reader a file goes to.
//!
//! Adding a format is adding its reader beside [`super::crashdump`], [`super::elf`] and
//! [`super::raw`] — a function from the file's first bytes and the whole [`Source`] to a
//! [`Layout`] — and a signature check in [`read`]. Everything after that (the scan for what the
//! format does not say, the page-table walk, virtual reads, the `Memory` trait) is shared.

use super::error::{DumpError, Result};
use super::physmap::PhysMap;
use super::{crashdump, elf, raw, Source};

/// The most bytes any format needs to recognise itself and read its header.
const HEAD_LEN: usize = crashdump::HEADER_LEN;

/// What an image says about the machine it was taken from, whatever its format: what the host
/// needs before it reads any memory. Formats that do not say a fact leave it 0; the scan
/// ([`super::scan`]) and the kernel PDB fill in what the pull needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineFacts {
    /// The build number (as GetVersion's MinorVersion); 0 if the format does not say.
    pub build: u16,
    pub checked_build: bool,
    /// CR3 of the process that was current: the kernel half of every address space is shared.
    /// 0 until found, for formats that do not say.
    pub directory_table_base: u64,
    /// 0 if the format does not say.
    pub ps_loaded_module_list: u64,
    /// Where KDDEBUGGER_DATA64 ("KDBG") is, decoded, in the image's memory; 0 if not known.
    pub kd_debugger_data_block: u64,
    /// Where `nt` is loaded, when the image's scan found it; 0 if not known (crash dumps: their
    /// KDBG or module list gives it).
    pub kern_base: u64,
    pub number_processors: u32,
    pub bug_check_code: u32,
    /// The header's BugCheckParameter1–4 (zeros when the format has none).
    pub bug_check_parameters: [u64; 4],
    /// When the image was taken (FILETIME), 0 if unknown.
    pub system_time: u64,
}

impl MachineFacts {
    /// Nothing known: an image format without a header about the machine.
    pub fn unknown() -> Self {
        Self {
            build: 0,
            checked_build: false,
            directory_table_base: 0,
            ps_loaded_module_list: 0,
            kd_debugger_data_block: 0,
            kern_base: 0,
            number_processors: 0,
            bug_check_code: 0,
            bug_check_parameters: [0; 4],
            system_time: 0,
        }
    }
}

/// What a format's reader returns.
#[derive(Debug, Clone)]
pub struct Layout {
    pub facts: MachineFacts,
    /// Physical page frame → file offset.
    pub map: PhysMap,
    /// What the file is, for the output: "complete memory dump (DumpType 10 …)",
    /// "QEMU ELF core (2 CPU(s), …)", "raw physical image (…)".
    pub format: String,
    /// Page-table roots the image names besides the header's (an ELF core's CPUs' CR3), to be
    /// checked before any scan; a CPU caught in user mode may hold a root without the kernel.
    pub cr3_candidates: Vec<u64>,
}

/// Which reader a file goes to: found from its first bytes, or told (`kdleak analyze --format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FormatHint {
    #[default]
    Detect,
    /// A Windows crash dump (`PAGEDU64`).
    CrashDump,
    /// An ELF core of a VM (QEMU, libvirt).
    Elf,
    /// Raw physical memory (`.raw`, `.mem`, `.vmem`).
    Raw,
}

/// Reads the facts and page map of the image in `src`, with the reader of its format.
pub fn read<S: Source + ?Sized>(src: &S, hint: FormatHint) -> Result<Layout> {
    let head_len = src.len().min(HEAD_LEN as u64) as usize;
    let mut head = vec![0u8; head_len];
    src.read_at(0, &mut head)
        .map_err(|e| DumpError::corrupt(0, format!("reading the header failed: {e}")))?;
    match hint {
        FormatHint::CrashDump => crashdump::read(&head, src),
        FormatHint::Elf => elf::read(&head, src),
        FormatHint::Raw => raw::read(src),
        FormatHint::Detect if head.starts_with(elf::MAGIC) => elf::read(&head, src),
        FormatHint::Detect
            if head.len() >= 4
                && !crashdump::is_signature(&head[..4])
                && src.len() >= raw::MIN_GUESSED_LEN =>
        {
            raw::read(src)
        }
        // The crash dump reader is the last resort: its header check says what a file that no
        // reader takes is instead (a minidump, a 32-bit dump, not a dump at all).
        FormatHint::Detect => crashdump::read(&head, src),
    }
}
