//! Windows x64 kernel crash dumps of the simulated machine (`kdleak sim --write-dump`): the
//! 0x2000-byte `DUMP_HEADER64` followed by physical memory ([`crate::sim::machine::physical`]),
//! in one of three real layouts:
//!
//! | `--dump-type` | DumpType | after the header | pages |
//! |---|---|---|---|
//! | `full` | 1 (DUMP_TYPE_FULL, a complete memory dump as `.dump /f` writes it) | nothing: the runs are in the header's PhysicalMemoryBlock | every RAM frame, run by run |
//! | `kernel` | 5 (bitmap) with an `SDMP` summary header | `SDMP`/`DUMP` header + bitmap | only frames in use (kernel data and page tables): a kernel memory dump |
//! | `bitmap` | 5 (bitmap) with an `FDMP` header | `FDMP`/`DUMP` header + bitmap | every RAM frame: a complete memory dump in bitmap form |
//! | `live` | 6 (live kernel bitmap dump, Task Manager on 22H2+) with an `SDMP` header, bug check 0x161 LIVE_SYSTEM_DUMP | `SDMP`/`DUMP` header + bitmap | frames in use |
//! | `rdmp-kernel` | 8 (`.dump /k`) | `RDMP_HEADER64`, PFN ranges | frames in use |
//! | `rdmp-kernel-user` | 9 (`.dump /ka`) | as 8 | frames in use (the simulated machine has no user memory) |
//! | `rdmp-complete` | 10 (`.dump /f` since 2022) | `RDMP_HEADER64` with NumberOfRanges and TotalNumberOfPages, PFN ranges | every RAM frame |
//!
//! The RDMP layout follows kdmp-parser's `kdmp-parser-structs.h` (`RDMP_HEADER64`: Marker 0x40,
//! `RDMP`, `DUMP`, MetadataSize, FirstPageOffset = 0x2020 + MetadataSize; `FULL_RDMP_HEADER64`:
//! NumberOfRanges, TotalNumberOfPages) and its `BuildPhysicalMemoryFromDump` (ranges of (PFN,
//! page count) from 0x2030, ended by a PFN 0 entry; the pages in range order from
//! FirstPageOffset). The metadata is padded with zero ranges so the first page is page-aligned.
//!
//! Sources (read for the facts, nothing copied): the header layout is Microsoft's `DUMP_HEADER64`
//! (windows-docs-rs `Win32::System::Diagnostics::Debug::DUMP_HEADER64`) with the offsets that
//! kdmp-parser's `kdmp-parser-structs.h` asserts (0x80 KdDebuggerDataBlock, 0x88
//! PhysicalMemoryBlockBuffer[700], 0x348 ContextRecord[3000], 0xF00 Exception, 0xF98 DumpType,
//! 0xFA0 RequiredDumpSpace, 0xFB0 Comment[128], 0x2000 the bitmap header). The bitmap header
//! fields (0x20 offset of the first page, 0x28 pages present, 0x30 bits in the bitmap, bitmap at
//! 0x38, bit n = frame n) follow rekall's `crashdump.py` as kdmp-parser, kdmp-parser-rs
//! (`bmp_physmem`) and volatility3's `WindowsCrashDump64Layer` read them; volatility3 accepts
//! DumpType 1 and 5 only, which is why both bitmap variants use 5. Windows fills the unused
//! parts of the header with the `PAGE` pattern (rizin's dmp64 and kdmp-parser's
//! `PHYSMEM_DESC::LooksGood` both test for it), and so does this writer.
//!
//! Output is streamed page by page to a temporary file beside the target and renamed over it
//! once complete and synced, so a reader never sees half a dump.

use std::io::{self, BufWriter, Read as _, Write};
use std::path::{Path, PathBuf};

use kdproto::api::IMAGE_FILE_MACHINE_AMD64;

use crate::sim::machine::memory::PAGE_SIZE;
use crate::sim::machine::physical::PhysicalMemory;
use crate::sim::machine::Machine;

/// Size of `DUMP_HEADER64`; the first page (full) or the bitmap header (bitmap) follows.
pub const HEADER_SIZE: usize = 0x2000;
/// 'PAGE', 'DU64': the header's Signature and ValidDump.
pub const SIGNATURE: &[u8; 4] = b"PAGE";
pub const VALID_DUMP_64: &[u8; 4] = b"DU64";
/// The bitmap header's signatures: kernel summary dump and full bitmap dump; ValidDump 'DUMP'.
pub const SUMMARY_SIGNATURE: &[u8; 4] = b"SDMP";
pub const FULL_BITMAP_SIGNATURE: &[u8; 4] = b"FDMP";
pub const BITMAP_VALID_DUMP: &[u8; 4] = b"DUMP";
/// DumpType values (rizin `dmp_specs.h`, kdmp-parser `DumpType_t`).
pub const DUMP_TYPE_FULL: u32 = 1;
pub const DUMP_TYPE_BITMAP: u32 = 5;
/// kdmp-parser `DumpType_t`: LiveKernelBitmapDump, KernelMemoryDump, KernelAndUserMemoryDump,
/// CompleteMemoryDump.
pub const DUMP_TYPE_LIVE_KERNEL: u32 = 6;
pub const DUMP_TYPE_RDMP_KERNEL: u32 = 8;
pub const DUMP_TYPE_RDMP_KERNEL_USER: u32 = 9;
pub const DUMP_TYPE_RDMP_COMPLETE: u32 = 10;
/// The RDMP header's signatures and marker.
pub const RDMP_SIGNATURE: &[u8; 4] = b"RDMP";
pub const RDMP_MARKER: u32 = 0x40;
/// LIVE_SYSTEM_DUMP: the bug check code of a live kernel dump (Microsoft's bug check reference).
pub const BUGCHECK_LIVE_SYSTEM_DUMP: u32 = 0x161;
/// MajorVersion of a free (retail) build; MinorVersion carries the build number.
pub const MAJOR_VERSION_FREE: u32 = 0xF;
/// MANUALLY_INITIATED_CRASH: what a dump forced from the debugger or keyboard reports.
pub const BUGCHECK_MANUALLY_INITIATED_CRASH: u32 = 0xE2;
/// STATUS_BREAKPOINT, the exception of a debugger-initiated stop.
const STATUS_BREAKPOINT: u32 = 0x8000_0003;
/// VER_NT_WORKSTATION.
const PRODUCT_TYPE_WORKSTATION: u32 = 1;

/// Field offsets in `DUMP_HEADER64`.
pub mod offsets {
    pub const SIGNATURE: usize = 0x000;
    pub const VALID_DUMP: usize = 0x004;
    pub const MAJOR_VERSION: usize = 0x008;
    pub const MINOR_VERSION: usize = 0x00C;
    pub const DIRECTORY_TABLE_BASE: usize = 0x010;
    pub const PFN_DATA_BASE: usize = 0x018;
    pub const PS_LOADED_MODULE_LIST: usize = 0x020;
    pub const PS_ACTIVE_PROCESS_HEAD: usize = 0x028;
    pub const MACHINE_IMAGE_TYPE: usize = 0x030;
    pub const NUMBER_PROCESSORS: usize = 0x034;
    pub const BUGCHECK_CODE: usize = 0x038;
    pub const BUGCHECK_PARAMETERS: usize = 0x040;
    pub const VERSION_USER: usize = 0x060;
    pub const KD_DEBUGGER_DATA_BLOCK: usize = 0x080;
    /// PHYSICAL_MEMORY_DESCRIPTOR64: NumberOfRuns u32 (+4 padding), NumberOfPages u64, then
    /// (BasePage u64, PageCount u64) runs; 700 bytes reserved.
    pub const PHYSICAL_MEMORY_BLOCK: usize = 0x088;
    pub const PHYSICAL_MEMORY_BLOCK_SIZE: usize = 700;
    pub const CONTEXT_RECORD: usize = 0x348;
    pub const CONTEXT_RECORD_SIZE: usize = 3000;
    /// EXCEPTION_RECORD64 (0x98 bytes).
    pub const EXCEPTION: usize = 0xF00;
    pub const EXCEPTION_SIZE: usize = 0x98;
    pub const DUMP_TYPE: usize = 0xF98;
    pub const REQUIRED_DUMP_SPACE: usize = 0xFA0;
    pub const SYSTEM_TIME: usize = 0xFA8;
    pub const COMMENT: usize = 0xFB0;
    pub const COMMENT_SIZE: usize = 128;
    pub const SYSTEM_UP_TIME: usize = 0x1030;
    pub const MINI_DUMP_FIELDS: usize = 0x1038;
    pub const SECONDARY_DATA_STATE: usize = 0x103C;
    pub const PRODUCT_TYPE: usize = 0x1040;
    pub const SUITE_MASK: usize = 0x1044;
    pub const WRITER_STATUS: usize = 0x1048;
    pub const KD_SECONDARY_VERSION: usize = 0x104D;
    pub const ATTRIBUTES: usize = 0x1050;
    pub const BOOT_ID: usize = 0x1054;
}

/// Bitmap header (at [`HEADER_SIZE`]) offsets.
pub mod bitmap_offsets {
    pub const SIGNATURE: usize = 0x00;
    pub const VALID_DUMP: usize = 0x04;
    /// File offset of the first page.
    pub const FIRST_PAGE: usize = 0x20;
    /// Number of set bits (pages in the file).
    pub const PRESENT_PAGES: usize = 0x28;
    /// Number of bits in the bitmap (frames covered).
    pub const BITMAP_BITS: usize = 0x30;
    pub const BITMAP: usize = 0x38;
}

/// Runs that fit the header's 700-byte PhysicalMemoryBlock after its 16-byte head.
pub const MAX_RUNS: usize = (offsets::PHYSICAL_MEMORY_BLOCK_SIZE - 16) / 16;

/// Which of the dump layouts to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpKind {
    Full,
    Kernel,
    Bitmap,
    Live,
    RdmpKernel,
    RdmpKernelUser,
    RdmpComplete,
}

impl DumpKind {
    pub const ALL: [DumpKind; 7] = [
        DumpKind::Full,
        DumpKind::Kernel,
        DumpKind::Bitmap,
        DumpKind::Live,
        DumpKind::RdmpKernel,
        DumpKind::RdmpKernelUser,
        DumpKind::RdmpComplete,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DumpKind::Full => "full",
            DumpKind::Kernel => "kernel",
            DumpKind::Bitmap => "bitmap",
            DumpKind::Live => "live",
            DumpKind::RdmpKernel => "rdmp-kernel",
            DumpKind::RdmpKernelUser => "rdmp-kernel-user",
            DumpKind::RdmpComplete => "rdmp-complete",
        }
    }

    pub fn dump_type(self) -> u32 {
        match self {
            DumpKind::Full => DUMP_TYPE_FULL,
            DumpKind::Kernel | DumpKind::Bitmap => DUMP_TYPE_BITMAP,
            DumpKind::Live => DUMP_TYPE_LIVE_KERNEL,
            DumpKind::RdmpKernel => DUMP_TYPE_RDMP_KERNEL,
            DumpKind::RdmpKernelUser => DUMP_TYPE_RDMP_KERNEL_USER,
            DumpKind::RdmpComplete => DUMP_TYPE_RDMP_COMPLETE,
        }
    }

    /// The header's BugCheckCode: a live dump says LIVE_SYSTEM_DUMP, the others a forced crash.
    pub fn bug_check_code(self) -> u32 {
        match self {
            DumpKind::Live => BUGCHECK_LIVE_SYSTEM_DUMP,
            _ => BUGCHECK_MANUALLY_INITIATED_CRASH,
        }
    }

    fn is_rdmp(self) -> bool {
        matches!(
            self,
            DumpKind::RdmpKernel | DumpKind::RdmpKernelUser | DumpKind::RdmpComplete
        )
    }
}

/// What the caller decides rather than the machine.
#[derive(Debug, Clone)]
pub struct DumpOptions {
    pub kind: DumpKind,
    /// SystemTime: a FILETIME (100 ns since 1601-01-01 UTC).
    pub system_time: u64,
    /// Written into the header's Comment (truncated to 127 bytes).
    pub comment: String,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpSummary {
    pub kind: DumpKind,
    pub dump_type: u32,
    pub cr3: u64,
    /// Pages stored in the file.
    pub pages: u64,
    pub file_size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("cannot write the dump {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{0} physical memory runs do not fit the header's PhysicalMemoryBlock (at most {MAX_RUNS})"
    )]
    TooManyRuns(usize),
    #[error("the machine has no processor to take the context record from")]
    NoProcessor,
}

/// FILETIME of `time` (100 ns ticks since 1601-01-01 UTC); 0 before 1970 or past 30828.
pub fn filetime(time: std::time::SystemTime) -> u64 {
    // Seconds from 1601-01-01 to 1970-01-01.
    const EPOCH_DIFFERENCE: u64 = 11_644_473_600;
    time.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| {
            (d.as_secs() + EPOCH_DIFFERENCE)
                .checked_mul(10_000_000)?
                .checked_add(u64::from(d.subsec_nanos() / 100))
        })
        .unwrap_or(0)
}

/// Which frames go into the file, in file order, and the bitmap (if any) that indexes them.
struct Layout {
    frames: Vec<u64>,
    /// For bitmap dumps: signature and bitmap bytes (bit n of byte n/8 = frame n, LSB first).
    bitmap: Option<(&'static [u8; 4], Vec<u8>)>,
    /// For RDMP dumps: the section after the header (RDMP header, ranges, padding).
    rdmp: Option<Vec<u8>>,
    /// Offset of the first page in the file.
    first_page: u64,
}

impl Layout {
    fn new(kind: DumpKind, physical: &PhysicalMemory) -> Self {
        let ram = || {
            physical
                .ram_runs()
                .into_iter()
                .flat_map(|(base, count)| base..base + count)
        };
        let (frames, signature): (Vec<u64>, _) = match kind {
            DumpKind::Full | DumpKind::RdmpComplete => (ram().collect(), None),
            DumpKind::Kernel | DumpKind::Live => {
                (physical.used_frames().collect(), Some(SUMMARY_SIGNATURE))
            }
            DumpKind::RdmpKernel | DumpKind::RdmpKernelUser => {
                (physical.used_frames().collect(), None)
            }
            DumpKind::Bitmap => (ram().collect(), Some(FULL_BITMAP_SIGNATURE)),
        };
        if kind.is_rdmp() {
            let rdmp = rdmp_section(kind, &frames);
            let first_page = (HEADER_SIZE + rdmp.len()) as u64;
            return Layout {
                frames,
                bitmap: None,
                rdmp: Some(rdmp),
                first_page,
            };
        }
        match signature {
            None => Layout {
                frames,
                bitmap: None,
                rdmp: None,
                first_page: HEADER_SIZE as u64,
            },
            Some(signature) => {
                // Whole bytes: kdmp-parser's C++ reader takes Pages / 8 bytes of bitmap.
                let bits = physical.end_pfn().next_multiple_of(8);
                let mut bitmap = vec![0u8; (bits / 8) as usize];
                for &pfn in &frames {
                    bitmap[(pfn / 8) as usize] |= 1 << (pfn % 8);
                }
                let end = (HEADER_SIZE + bitmap_offsets::BITMAP + bitmap.len()) as u64;
                Layout {
                    frames,
                    bitmap: Some((signature, bitmap)),
                    rdmp: None,
                    first_page: end.next_multiple_of(PAGE_SIZE),
                }
            }
        }
    }

    fn file_size(&self) -> u64 {
        self.first_page + self.frames.len() as u64 * PAGE_SIZE
    }
}

/// The RDMP section after the header: `RDMP_HEADER64`, the 16 kind-specific bytes, the (PFN,
/// pages) ranges of `frames` (ascending) and a PFN 0 end, zero-padded so the first page that
/// follows is page-aligned.
fn rdmp_section(kind: DumpKind, frames: &[u64]) -> Vec<u8> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &pfn in frames {
        match ranges.last_mut() {
            Some((first, count)) if *first + *count == pfn => *count += 1,
            _ => ranges.push((pfn, 1)),
        }
    }
    // RDMP_HEADER64 (0x20), kind-specific (0x10), ranges, one zero range; to a page boundary.
    let len = (HEADER_SIZE + 0x30 + (ranges.len() + 1) * 16).next_multiple_of(PAGE_SIZE as usize)
        - HEADER_SIZE;
    let mut section = vec![0u8; len];
    let metadata_size = (len - 0x20) as u64;
    put_u32(&mut section, 0, RDMP_MARKER);
    section[4..8].copy_from_slice(RDMP_SIGNATURE);
    section[8..12].copy_from_slice(BITMAP_VALID_DUMP);
    put_u64(&mut section, 0x10, metadata_size);
    put_u64(&mut section, 0x18, (HEADER_SIZE + len) as u64);
    if kind == DumpKind::RdmpComplete {
        put_u32(&mut section, 0x20, ranges.len() as u32);
        put_u64(&mut section, 0x28, frames.len() as u64);
    }
    for (i, (pfn, count)) in ranges.iter().enumerate() {
        put_u64(&mut section, 0x30 + i * 16, *pfn);
        put_u64(&mut section, 0x38 + i * 16, *count);
    }
    section
}

/// Writes a crash dump of `machine` to `path` (atomically: temporary file, fsync, rename).
pub fn write_dump(
    machine: &Machine,
    path: &Path,
    options: &DumpOptions,
) -> Result<DumpSummary, DumpError> {
    let physical = PhysicalMemory::build(&machine.memory, machine.self_map_slot);
    let layout = Layout::new(options.kind, &physical);
    let header = header(machine, &physical, &layout, options)?;
    let io_error = |source| DumpError::Io {
        path: path.to_path_buf(),
        source,
    };
    crate::atomic_file::write_atomically_with(path, |out| {
        write_body(out, &header, &layout, machine, &physical)
    })
    .map_err(io_error)?;
    Ok(DumpSummary {
        kind: options.kind,
        dump_type: options.kind.dump_type(),
        cr3: physical.cr3(),
        pages: layout.frames.len() as u64,
        file_size: layout.file_size(),
    })
}

/// Header, bitmap section, then one page at a time: memory use stays at one page plus the
/// writer's buffer whatever the dump's size.
fn write_body(
    out: &mut dyn Write,
    header: &[u8],
    layout: &Layout,
    machine: &Machine,
    physical: &PhysicalMemory,
) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, out);
    out.write_all(header)?;
    let mut written = header.len() as u64;
    if let Some(rdmp) = &layout.rdmp {
        out.write_all(rdmp)?;
    }
    if let Some((signature, bitmap)) = &layout.bitmap {
        let mut head = [0u8; bitmap_offsets::BITMAP];
        head[bitmap_offsets::SIGNATURE..][..4].copy_from_slice(*signature);
        head[bitmap_offsets::VALID_DUMP..][..4].copy_from_slice(BITMAP_VALID_DUMP);
        put_u64(&mut head, bitmap_offsets::FIRST_PAGE, layout.first_page);
        put_u64(
            &mut head,
            bitmap_offsets::PRESENT_PAGES,
            layout.frames.len() as u64,
        );
        put_u64(
            &mut head,
            bitmap_offsets::BITMAP_BITS,
            bitmap.len() as u64 * 8,
        );
        out.write_all(&head)?;
        out.write_all(bitmap)?;
        written += (head.len() + bitmap.len()) as u64;
        let padding = layout.first_page - written;
        io::copy(&mut io::repeat(0).take(padding), &mut out)?;
    }
    let mut page = [0u8; PAGE_SIZE as usize];
    for &pfn in &layout.frames {
        if !physical.copy_frame(&machine.memory, pfn, &mut page) {
            // Every listed frame is RAM by construction; a zero page keeps offsets right.
            page.fill(0);
        }
        out.write_all(&page)?;
    }
    out.flush()
}

/// The 0x2000-byte `DUMP_HEADER64`.
fn header(
    machine: &Machine,
    physical: &PhysicalMemory,
    layout: &Layout,
    options: &DumpOptions,
) -> Result<Vec<u8>, DumpError> {
    use offsets as o;
    let cpu = machine.cpu(0).ok_or(DumpError::NoProcessor)?;
    let mut h: Vec<u8> = SIGNATURE
        .iter()
        .copied()
        .cycle()
        .take(HEADER_SIZE)
        .collect();
    h[o::VALID_DUMP..][..4].copy_from_slice(VALID_DUMP_64);
    put_u32(&mut h, o::MAJOR_VERSION, MAJOR_VERSION_FREE);
    put_u32(&mut h, o::MINOR_VERSION, u32::from(machine.build));
    put_u64(&mut h, o::DIRECTORY_TABLE_BASE, physical.cr3());
    // KDBG holds the addresses of MmPfnDatabase (a pointer variable) and PsActiveProcessHead
    // (kd.md §4.2 offsets 0xC0, 0x50); the header holds the PFN array itself and the list head.
    // Decoded: the kernel writing the header knows its variables even when the block is encoded.
    let kdbg_field = |offset: u64| machine.kdbg_field(offset).unwrap_or(0);
    let pfn_database = match kdbg_field(0xC0) {
        0 => 0,
        variable => machine.memory.read_u64(variable).unwrap_or(0),
    };
    put_u64(&mut h, o::PFN_DATA_BASE, pfn_database);
    put_u64(
        &mut h,
        o::PS_LOADED_MODULE_LIST,
        machine.ps_loaded_module_list,
    );
    put_u64(&mut h, o::PS_ACTIVE_PROCESS_HEAD, kdbg_field(0x50));
    put_u32(
        &mut h,
        o::MACHINE_IMAGE_TYPE,
        u32::from(IMAGE_FILE_MACHINE_AMD64),
    );
    put_u32(
        &mut h,
        o::NUMBER_PROCESSORS,
        u32::from(machine.processor_count()),
    );
    put_u32(&mut h, o::BUGCHECK_CODE, options.kind.bug_check_code());
    h[o::BUGCHECK_CODE + 4..o::KD_DEBUGGER_DATA_BLOCK].fill(0); // padding, parameters, VersionUser
                                                                // A machine stopped in a bug check writes that one (code and parameters 1–4 as
                                                                // KiBugCheckData holds them; kdmp-parser's HEADER64 BugCheckCode/BugCheckCodeParameter).
                                                                // KDBG's KiBugcheckData (0x88, kd.md §4.2) says where they are.
    let data = kdbg_field(0x88);
    if options.kind != DumpKind::Live && data != 0 {
        {
            let code = machine.memory.read_u64(data).unwrap_or(0);
            if code != 0 {
                put_u32(&mut h, o::BUGCHECK_CODE, code as u32);
                for k in 0..4u64 {
                    let value = machine.memory.read_u64(data + 8 * (k + 1)).unwrap_or(0);
                    put_u64(&mut h, o::BUGCHECK_PARAMETERS + 8 * k as usize, value);
                }
            }
        }
    }
    put_u64(&mut h, o::KD_DEBUGGER_DATA_BLOCK, machine.kdbg);

    if options.kind == DumpKind::Full {
        let runs = physical.ram_runs();
        if runs.len() > MAX_RUNS {
            return Err(DumpError::TooManyRuns(runs.len()));
        }
        let block = &mut h[o::PHYSICAL_MEMORY_BLOCK..][..o::PHYSICAL_MEMORY_BLOCK_SIZE];
        block.fill(0);
        put_u32(block, 0, runs.len() as u32);
        put_u64(block, 8, physical.ram_pages());
        for (i, &(base, count)) in runs.iter().enumerate() {
            put_u64(block, 16 + i * 16, base);
            put_u64(block, 24 + i * 16, count);
        }
    }

    let context = &cpu.context[..cpu.context.len().min(o::CONTEXT_RECORD_SIZE)];
    h[o::CONTEXT_RECORD..][..context.len()].copy_from_slice(context);

    let exception = &mut h[o::EXCEPTION..][..o::EXCEPTION_SIZE];
    exception.fill(0);
    put_u32(exception, 0, STATUS_BREAKPOINT);
    put_u64(exception, 0x10, cpu.rip());

    put_u32(&mut h, o::DUMP_TYPE, options.kind.dump_type());
    put_u32(&mut h, o::DUMP_TYPE + 4, 0);
    put_u64(&mut h, o::REQUIRED_DUMP_SPACE, layout.file_size());
    put_u64(&mut h, o::SYSTEM_TIME, options.system_time);
    let comment = &mut h[o::COMMENT..][..o::COMMENT_SIZE];
    comment.fill(0);
    let text = options.comment.as_bytes();
    let n = text.len().min(o::COMMENT_SIZE - 1);
    comment[..n].copy_from_slice(&text[..n]);
    // SystemUpTime, MiniDumpFields, SecondaryDataState, SuiteMask, WriterStatus, Attributes and
    // BootId stay zero.
    h[o::SYSTEM_UP_TIME..o::BOOT_ID + 4].fill(0);
    put_u32(&mut h, o::PRODUCT_TYPE, PRODUCT_TYPE_WORKSTATION);
    h[o::KD_SECONDARY_VERSION] = machine.version().kd_secondary_version;
    Ok(h)
}

fn put_u64(bytes: &mut [u8], offset: usize, value: u64) {
    bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

fn put_u32(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn u32_at(bytes: &[u8], offset: usize) -> u32 {
        u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
    }

    fn u64_at(bytes: &[u8], offset: usize) -> u64 {
        u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
    }

    fn write(machine: &Machine, kind: DumpKind) -> (Vec<u8>, DumpSummary) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.dmp");
        let options = DumpOptions {
            kind,
            system_time: 0x01DA_0000_0000_0000,
            comment: "unit test".into(),
        };
        let summary = write_dump(machine, &path, &options).unwrap();
        // Only the dump is left: the temporary file was renamed.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        (std::fs::read(&path).unwrap(), summary)
    }

    /// Frame → file offset, read the way the format says (runs, or a bitmap at 0x2000).
    fn frame_offsets(file: &[u8]) -> BTreeMap<u64, u64> {
        let mut map = BTreeMap::new();
        match u32_at(file, offsets::DUMP_TYPE) {
            DUMP_TYPE_FULL => {
                let block = offsets::PHYSICAL_MEMORY_BLOCK;
                let mut offset = HEADER_SIZE as u64;
                for run in 0..u32_at(file, block) as usize {
                    let base = u64_at(file, block + 16 + run * 16);
                    let count = u64_at(file, block + 24 + run * 16);
                    for pfn in base..base + count {
                        map.insert(pfn, offset);
                        offset += PAGE_SIZE;
                    }
                }
            }
            DUMP_TYPE_RDMP_KERNEL | DUMP_TYPE_RDMP_KERNEL_USER | DUMP_TYPE_RDMP_COMPLETE => {
                let head = &file[HEADER_SIZE..];
                assert_eq!(u32_at(head, 0), RDMP_MARKER);
                assert_eq!(&head[4..12], b"RDMPDUMP");
                let mut offset = u64_at(head, 0x18);
                assert_eq!(offset, 0x2020 + u64_at(head, 0x10));
                for range in head[0x30..].chunks_exact(16) {
                    let (pfn, count) = (u64_at(range, 0), u64_at(range, 8));
                    if pfn == 0 {
                        break;
                    }
                    for pfn in pfn..pfn + count {
                        map.insert(pfn, offset);
                        offset += PAGE_SIZE;
                    }
                }
            }
            DUMP_TYPE_BITMAP | DUMP_TYPE_LIVE_KERNEL => {
                let head = &file[HEADER_SIZE..];
                let mut offset = u64_at(head, bitmap_offsets::FIRST_PAGE);
                let bits = u64_at(head, bitmap_offsets::BITMAP_BITS);
                for pfn in 0..bits {
                    let byte = head[bitmap_offsets::BITMAP + (pfn / 8) as usize];
                    if byte >> (pfn % 8) & 1 == 1 {
                        map.insert(pfn, offset);
                        offset += PAGE_SIZE;
                    }
                }
                assert_eq!(
                    map.len() as u64,
                    u64_at(head, bitmap_offsets::PRESENT_PAGES)
                );
            }
            other => panic!("unexpected DumpType {other}"),
        }
        map
    }

    /// The hardware walk over the dump's own frames.
    fn translate(file: &[u8], frames: &BTreeMap<u64, u64>, va: u64) -> Option<u64> {
        let mut table = u64_at(file, offsets::DIRECTORY_TABLE_BASE) & !0xFFF;
        for shift in [39u32, 30, 21, 12] {
            let offset = frames.get(&(table / PAGE_SIZE))? + ((va >> shift) & 0x1FF) * 8;
            let entry = u64_at(file, offset as usize);
            if entry & 1 == 0 {
                return None;
            }
            table = entry & 0x000F_FFFF_FFFF_F000;
        }
        Some(table | (va & 0xFFF))
    }

    #[test]
    fn every_mapped_page_reads_back_through_the_dump_in_every_layout() {
        let mut machine = Machine::builder().processors(2).build();
        machine.memory.map(0xffff_c000_0000_0000, b"pool bytes");
        for kind in DumpKind::ALL {
            let (file, summary) = write(&machine, kind);
            assert_eq!(summary.file_size, file.len() as u64);
            assert_eq!(
                u64_at(&file, offsets::REQUIRED_DUMP_SPACE),
                file.len() as u64
            );
            let frames = frame_offsets(&file);
            assert_eq!(frames.len() as u64, summary.pages, "{kind:?}");
            assert_eq!(
                frames.values().last().copied().unwrap() + PAGE_SIZE,
                file.len() as u64
            );
            for (va, _) in machine.memory.frames() {
                let pa = translate(&file, &frames, va).unwrap_or_else(|| panic!("{va:#x}"));
                let offset = frames[&(pa / PAGE_SIZE)] as usize;
                assert_eq!(
                    &file[offset..offset + PAGE_SIZE as usize],
                    machine.memory.page_bytes(va).unwrap(),
                    "{kind:?} {va:#x}"
                );
            }
        }
    }

    #[test]
    fn header_fields_and_the_three_layouts() {
        let machine = Machine::builder().processors(2).build();
        let (full, _) = write(&machine, DumpKind::Full);
        let (kernel, _) = write(&machine, DumpKind::Kernel);
        let (bitmap, _) = write(&machine, DumpKind::Bitmap);
        for file in [&full, &kernel, &bitmap] {
            assert_eq!(&file[..8], b"PAGEDU64");
            assert_eq!(u32_at(file, offsets::MAJOR_VERSION), 0xF);
            assert_eq!(
                u32_at(file, offsets::MINOR_VERSION),
                u32::from(machine.build)
            );
            assert_eq!(u64_at(file, offsets::DIRECTORY_TABLE_BASE), 0x1AD000);
            assert_eq!(
                u64_at(file, offsets::PS_LOADED_MODULE_LIST),
                machine.ps_loaded_module_list
            );
            assert_eq!(u64_at(file, offsets::KD_DEBUGGER_DATA_BLOCK), machine.kdbg);
            assert_eq!(u32_at(file, offsets::MACHINE_IMAGE_TYPE), 0x8664);
            assert_eq!(u32_at(file, offsets::NUMBER_PROCESSORS), 2);
            assert_eq!(u32_at(file, offsets::BUGCHECK_CODE), 0xE2);
            assert_eq!(u64_at(file, offsets::SYSTEM_TIME), 0x01DA_0000_0000_0000);
            assert_eq!(&file[offsets::COMMENT..][..10], b"unit test\0");
            assert_eq!(
                &file[offsets::CONTEXT_RECORD..][..machine.cpus[0].context.len()],
                &machine.cpus[0].context[..]
            );
            assert_eq!(u64_at(file, offsets::EXCEPTION + 0x10), machine.break_pc);
        }
        assert_eq!(u32_at(&full, offsets::DUMP_TYPE), 1);
        assert_eq!(u32_at(&full, offsets::PHYSICAL_MEMORY_BLOCK), 2);
        // Bitmap dumps leave the runs to the bitmap: the block keeps Windows' PAGE fill.
        for (file, signature) in [(&kernel, b"SDMP"), (&bitmap, b"FDMP")] {
            assert_eq!(u32_at(file, offsets::DUMP_TYPE), 5);
            assert_eq!(&file[offsets::PHYSICAL_MEMORY_BLOCK..][..4], b"PAGE");
            assert_eq!(
                &file[HEADER_SIZE..][..8],
                [&signature[..], b"DUMP"].concat()
            );
            assert_eq!(
                u64_at(file, HEADER_SIZE + bitmap_offsets::FIRST_PAGE) % PAGE_SIZE,
                0
            );
        }
        // The bitmap dump holds all RAM, like the full one; the kernel dump only frames in use.
        assert_eq!(
            frame_offsets(&full).keys().collect::<Vec<_>>(),
            frame_offsets(&bitmap).keys().collect::<Vec<_>>()
        );
        let physical = PhysicalMemory::build(&machine.memory, machine.self_map_slot);
        assert_eq!(
            frame_offsets(&kernel).into_keys().collect::<Vec<_>>(),
            physical.used_frames().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no such dir").join("memory.dmp");
        let options = DumpOptions {
            kind: DumpKind::Full,
            system_time: 0,
            comment: String::new(),
        };
        let error = write_dump(&Machine::default(), &missing, &options).unwrap_err();
        assert!(error.to_string().contains("memory.dmp"), "{error}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn filetime_counts_from_1601() {
        let unix_epoch = std::time::UNIX_EPOCH;
        assert_eq!(filetime(unix_epoch), 116_444_736_000_000_000);
        assert_eq!(
            filetime(unix_epoch + std::time::Duration::from_nanos(1_000_000_250)),
            116_444_736_010_000_002
        );
    }
}
