//! DUMP_HEADER64, the first 0x2000 bytes of a Windows x64 kernel crash dump, read through typed
//! little-endian field reads at fixed offsets, and sorted into what kdleak can use.
//!
//! Layout: `DUMP_HEADER64` in the Windows SDK's `mindumpdef.h` (field order), with the offsets
//! that public readers agree on (kdmp-parser `structs.rs`, Volatility `crash.py`, rizin
//! `dmp_specs.h`). The DumpType values are dbgeng's `DUMP_TYPE_*` (`dbgeng.h`) and, for the
//! types WinDbg and Windows write since 2022 (6: Task Manager's live kernel dump on 22H2+; 8, 9,
//! 10: `.dump /k`, `/ka`, `/f`), kdmp-parser's `DumpType_t` (`src/lib/kdmp-parser-structs.h`).

use crate::image::error::{DumpError, Result};
use crate::kernel::{le_u32, le_u64};

/// Size of DUMP_HEADER64; what follows it depends on the dump type.
pub const HEADER_LEN: usize = 0x2000;
/// The first eight bytes of a 64-bit kernel dump: Signature `PAGE`, ValidDump `DU64`.
const SIGNATURE: &[u8; 4] = b"PAGE";
const VALID_DUMP64: &[u8; 4] = b"DU64";
/// ValidDump of a 32-bit kernel dump (DUMP_HEADER32).
const VALID_DUMP32: &[u8; 4] = b"DUMP";
/// MINIDUMP_HEADER.Signature (`minidumpapiset.h`).
const MINIDUMP_SIGNATURE: &[u8; 4] = b"MDMP";
/// IMAGE_FILE_MACHINE_AMD64.
const MACHINE_AMD64: u32 = 0x8664;

// DUMP_HEADER64 field offsets.
const MAJOR_VERSION: usize = 0x08;
const MINOR_VERSION: usize = 0x0c;
const DIRECTORY_TABLE_BASE: usize = 0x10;
const PS_LOADED_MODULE_LIST: usize = 0x20;
const MACHINE_IMAGE_TYPE: usize = 0x30;
const NUMBER_PROCESSORS: usize = 0x34;
const BUG_CHECK_CODE: usize = 0x38;
/// BugCheckParameter1–4, u64 each (kdmp-parser's `HEADER64`; stops-and-unloads.md §2).
const BUG_CHECK_PARAMETERS: usize = 0x40;
const KD_DEBUGGER_DATA_BLOCK: usize = 0x80;
/// PhysicalMemoryBlockBuffer: a PHYSICAL_MEMORY_DESCRIPTOR64 in a 700-byte buffer.
pub const PHYSICAL_MEMORY_BLOCK: usize = 0x88;
pub const PHYSICAL_MEMORY_BLOCK_LEN: usize = 700;
const DUMP_TYPE: usize = 0xf98;
/// SystemTime: a FILETIME (100 ns units since 1601-01-01 UTC).
const SYSTEM_TIME: usize = 0xfa8;

/// The dump kinds that hold the kernel's memory, as the header's DumpType says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpKind {
    /// DUMP_TYPE_FULL (1): every physical page, in the runs of the header's memory descriptor.
    Full,
    /// DUMP_TYPE_BITMAP_FULL (5) or DUMP_TYPE_BITMAP_KERNEL (6): the pages whose bits are set in
    /// the bitmap after the header. Both complete and kernel memory dumps of Windows 8 and
    /// later are written this way, and so is the live kernel dump Task Manager writes on
    /// Windows 11 22H2+ (DumpType 6, bug check 0x161 LIVE_SYSTEM_DUMP): the same layout, taken
    /// while the machine ran on.
    Bitmap,
    /// The RDMP layout (DumpType 8 `.dump /k`, 9 `.dump /ka`, 10 `.dump /f` in WinDbg since
    /// 2022): an `RDMP_HEADER64` after the header, then PFN ranges, then the pages.
    Rdmp,
}

/// Bug check 0x161, LIVE_SYSTEM_DUMP: what a live kernel dump's header carries (Microsoft's
/// bug check reference, "Bug Check 0x161: LIVE_SYSTEM_DUMP").
pub const LIVE_SYSTEM_DUMP: u32 = 0x161;

/// What a DumpType is, in the words WinDbg and Windows' settings use.
pub fn describe_dump_type(dump_type: u32, bug_check_code: u32) -> &'static str {
    match dump_type {
        1 => "complete memory dump (DumpType 1, physical memory runs)",
        5 => "bitmap memory dump (DumpType 5)",
        6 if bug_check_code == LIVE_SYSTEM_DUMP => {
            "live kernel memory dump (DumpType 6, Task Manager; taken while the machine ran)"
        }
        6 => "kernel bitmap memory dump (DumpType 6)",
        8 => "kernel memory dump (DumpType 8, RDMP layout: `.dump /k`)",
        9 => "kernel and user memory dump (DumpType 9, RDMP layout: `.dump /ka`)",
        10 => "complete memory dump (DumpType 10, RDMP layout: `.dump /f`)",
        _ => "crash dump",
    }
}

/// What the host uses from the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpHeader {
    pub kind: DumpKind,
    /// DumpType as written (1, 5, 6, 8, 9 or 10).
    pub dump_type: u32,
    /// MinorVersion: the build number, as GetVersion's MinorVersion.
    pub build: u16,
    /// MajorVersion's low nibble is 0xC on a checked build (as in GetVersion).
    pub checked_build: bool,
    /// CR3 of the process that was current: the kernel half of every address space is shared.
    pub directory_table_base: u64,
    pub ps_loaded_module_list: u64,
    /// Where KDDEBUGGER_DATA64 ("KDBG") is, decoded, in the dumped memory.
    pub kd_debugger_data_block: u64,
    pub number_processors: u32,
    pub bug_check_code: u32,
    pub bug_check_parameters: [u64; 4],
    /// When the dump was written (FILETIME), 0 if unknown.
    pub system_time: u64,
}

/// What to set on the target so the next dump is usable; part of every refusal.
pub const CONFIGURE_HINT: &str = "on the target set System Properties > Advanced > Startup and \
     Recovery > Write debugging information to \"Kernel memory dump\" or \"Complete memory dump\" \
     (CrashDumpEnabled = 2 or 1 under HKLM\\SYSTEM\\CurrentControlSet\\Control\\CrashControl), \
     reproduce the leak, crash or `.dump /f` it, and analyze that MEMORY.DMP";

/// Sorts `head` (the file's first bytes, at most [`HEADER_LEN`]) into a usable header or a
/// refusal that says why.
pub fn parse(head: &[u8]) -> Result<DumpHeader> {
    if head.len() < 8 {
        return Err(DumpError::NotADump(format!(
            "the file is {} bytes long, shorter than any dump header",
            head.len()
        )));
    }
    let (signature, valid) = (&head[0..4], &head[4..8]);
    if signature == MINIDUMP_SIGNATURE {
        return Err(DumpError::Unsupported(format!(
            "this is a minidump (signature MDMP): it holds a few threads' stacks and selected \
             pages, not the pool and Driver Verifier's tracking data; {CONFIGURE_HINT}"
        )));
    }
    if signature != SIGNATURE {
        return Err(DumpError::NotADump(format!(
            "it starts with {}, not PAGE (a kernel dump) or MDMP (a minidump), nor \\x7fELF (a \
             VM's ELF core); a raw physical image (no header) is read with --image-format raw",
            printable(signature)
        )));
    }
    if valid == VALID_DUMP32 {
        return Err(DumpError::Unsupported(
            "this is a 32-bit kernel dump (PAGEDUMP): only x64 Windows is supported".into(),
        ));
    }
    if valid != VALID_DUMP64 {
        return Err(DumpError::NotADump(format!(
            "the header says PAGE but then {}, not DU64",
            printable(valid)
        )));
    }
    if head.len() < HEADER_LEN {
        return Err(DumpError::corrupt(
            head.len() as u64,
            format!(
                "the file ends after {:#x} bytes, inside the {HEADER_LEN:#x}-byte dump header",
                head.len()
            ),
        ));
    }
    let machine = le_u32(head, MACHINE_IMAGE_TYPE);
    if machine != MACHINE_AMD64 {
        return Err(DumpError::Unsupported(format!(
            "the dump is of a machine of type {machine:#x}, not x64 (0x8664): only x64 Windows \
             is supported"
        )));
    }
    let dump_type = le_u32(head, DUMP_TYPE);
    let kind = match dump_type {
        1 => DumpKind::Full,
        5 | 6 => DumpKind::Bitmap,
        4 => {
            return Err(DumpError::Unsupported(format!(
                "this is a small memory dump (triage dump, DumpType 4): it holds the crashing \
                 thread and a few pages, not the pool and Driver Verifier's tracking data; \
                 {CONFIGURE_HINT}"
            )))
        }
        2 | 3 => {
            return Err(DumpError::Unsupported(format!(
                "DumpType {dump_type} (a {} dump) is not supported: {CONFIGURE_HINT}",
                if dump_type == 2 {
                    "pre-bitmap summary"
                } else {
                    "header-only"
                }
            )))
        }
        8..=10 => DumpKind::Rdmp,
        other => {
            return Err(DumpError::corrupt(
                DUMP_TYPE as u64,
                format!("unknown DumpType {other:#x}"),
            ))
        }
    };
    let minor = le_u32(head, MINOR_VERSION);
    let build = u16::try_from(minor).map_err(|_| {
        DumpError::corrupt(
            MINOR_VERSION as u64,
            format!("MinorVersion {minor:#x} is not a Windows build number"),
        )
    })?;
    Ok(DumpHeader {
        kind,
        dump_type,
        build,
        checked_build: le_u32(head, MAJOR_VERSION) & 0xf == 0xc,
        directory_table_base: le_u64(head, DIRECTORY_TABLE_BASE),
        ps_loaded_module_list: le_u64(head, PS_LOADED_MODULE_LIST),
        kd_debugger_data_block: le_u64(head, KD_DEBUGGER_DATA_BLOCK),
        number_processors: le_u32(head, NUMBER_PROCESSORS),
        bug_check_code: le_u32(head, BUG_CHECK_CODE),
        bug_check_parameters: [0, 1, 2, 3].map(|k| le_u64(head, BUG_CHECK_PARAMETERS + 8 * k)),
        system_time: le_u64(head, SYSTEM_TIME),
    })
}

/// Four signature bytes as text when printable, else as hex.
fn printable(bytes: &[u8]) -> String {
    if bytes.iter().all(|b| b.is_ascii_graphic()) {
        format!("\"{}\"", String::from_utf8_lossy(bytes))
    } else {
        format!("0x{}", hex::encode(bytes))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid DUMP_HEADER64 of `dump_type` for build 19041.
    pub fn header(dump_type: u32) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[0..4].copy_from_slice(SIGNATURE);
        h[4..8].copy_from_slice(VALID_DUMP64);
        h[MAJOR_VERSION..MAJOR_VERSION + 4].copy_from_slice(&0xfu32.to_le_bytes());
        h[MINOR_VERSION..MINOR_VERSION + 4].copy_from_slice(&19041u32.to_le_bytes());
        h[MACHINE_IMAGE_TYPE..MACHINE_IMAGE_TYPE + 4].copy_from_slice(&MACHINE_AMD64.to_le_bytes());
        h[DUMP_TYPE..DUMP_TYPE + 4].copy_from_slice(&dump_type.to_le_bytes());
        h
    }

    #[test]
    fn a_full_and_a_bitmap_header_are_accepted() {
        let full = parse(&header(1)).unwrap();
        assert_eq!(
            (full.kind, full.build, full.checked_build),
            (DumpKind::Full, 19041, false)
        );
        assert_eq!(parse(&header(5)).unwrap().kind, DumpKind::Bitmap);
        assert_eq!(parse(&header(6)).unwrap().kind, DumpKind::Bitmap);
    }

    #[test]
    fn a_minidump_is_refused_with_what_to_configure() {
        let mut file = b"MDMP\x93\xa7\0\0".to_vec();
        file.resize(64, 0);
        let err = parse(&file).unwrap_err();
        assert!(matches!(err, DumpError::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("minidump"), "{err}");
        assert!(err.to_string().contains("Kernel memory dump"), "{err}");
        assert_eq!(err.exit_code(), 4);
    }

    #[test]
    fn a_triage_dump_is_refused_with_what_to_configure() {
        let err = parse(&header(4)).unwrap_err();
        assert!(err.to_string().contains("triage dump, DumpType 4"), "{err}");
        assert!(err.to_string().contains("CrashDumpEnabled"), "{err}");
        assert_eq!(err.exit_code(), 4);
    }

    #[test]
    fn a_wrong_signature_is_not_a_dump() {
        let mut h = header(1);
        h[0..4].copy_from_slice(b"\x7fELF");
        let err = parse(&h).unwrap_err();
        assert!(err.to_string().contains("0x7f454c46"), "{err}");
        assert_eq!(err.exit_code(), 2);
        h[0..8].copy_from_slice(b"PAGEDU32");
        assert!(parse(&h).unwrap_err().to_string().contains("\"DU32\""));
        h[0..8].copy_from_slice(b"PAGEDUMP");
        assert!(parse(&h).unwrap_err().to_string().contains("32-bit"));
    }

    #[test]
    fn a_header_cut_short_says_where_it_ends() {
        let h = header(1);
        let err = parse(&h[..0x1234]).unwrap_err();
        assert!(err.to_string().contains("after 0x1234 bytes"), "{err}");
        assert_eq!(err.exit_code(), 2);
        assert!(parse(&h[..3]).unwrap_err().to_string().contains("3 bytes"));
    }

    #[test]
    fn other_machines_and_unknown_types_are_refused() {
        let mut h = header(1);
        h[MACHINE_IMAGE_TYPE..MACHINE_IMAGE_TYPE + 4].copy_from_slice(&0xaa64u32.to_le_bytes());
        assert!(parse(&h).unwrap_err().to_string().contains("0xaa64"));
        assert!(parse(&header(0x77))
            .unwrap_err()
            .to_string()
            .contains("unknown DumpType 0x77"));
        assert_eq!(parse(&header(8)).unwrap().kind, DumpKind::Rdmp);
        assert_eq!(parse(&header(10)).unwrap().kind, DumpKind::Rdmp);
        assert!(parse(&header(7))
            .unwrap_err()
            .to_string()
            .contains("unknown DumpType 0x7"));
        let mut h = header(1);
        h[MINOR_VERSION..MINOR_VERSION + 4].copy_from_slice(&0x10000u32.to_le_bytes());
        assert!(parse(&h).unwrap_err().to_string().contains("MinorVersion"));
    }
}
