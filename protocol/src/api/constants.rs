//! Numeric constants of the DbgKd layer: status codes, structure sizes, GetVersion flags, AMD64
//! CONTEXT and KSPECIAL_REGISTERS offsets. Each names the kd.md section it comes from.

// ---- Structure sizes -------------------------------------------------------------------------

/// DBGKD_ANY_WAIT_STATE_CHANGE on AMD64 (kd.md §3.1).
pub const STATE_CHANGE_LEN: usize = 0xF0;
/// The state change's union `u` at 0x20 (kd.md §3.1).
pub const STATE_CHANGE_UNION_LEN: usize = 0xA0;
/// AMD64_DBGKD_CONTROL_REPORT at 0xC0 (kd.md §3.1).
pub const CONTROL_REPORT_LEN: usize = 0x30;
/// DBGKD_MANIPULATE_STATE64 (kd.md §3.2).
pub const MANIPULATE_LEN: usize = 0x38;
/// The manipulate union `u` at packet offset 0x10 (kd.md §3.2).
pub const MANIPULATE_UNION_LEN: usize = 40;
/// DBGKD_GET_VERSION64 (kd.md §3.5).
pub const GET_VERSION_LEN: usize = 0x28;
/// DBGKD_DEBUG_IO (kd.md §3.9).
pub const DEBUG_IO_LEN: usize = 16;
/// DBGKD_FILE_IO (kd.md §3.9).
pub const FILE_IO_LEN: usize = 64;
/// DBGKD_TRACE_IO (kd.md §3.9).
pub const TRACE_IO_LEN: usize = 64;
/// The most data one manipulate reply can carry over KDCOM: PACKET_MAX_SIZE − 56 (kd.md §3.10).
pub const MAX_MANIPULATE_DATA: usize = crate::kd::MAX_PAYLOAD - MANIPULATE_LEN;
/// DBGKD_MAXSTREAM: bytes of instruction stream in a control report (kd.md §1.1).
pub const DBGKD_MAXSTREAM: usize = 16;
/// EXCEPTION_MAXIMUM_PARAMETERS: entries of ExceptionInformation (kd.md §3.1).
pub const EXCEPTION_MAXIMUM_PARAMETERS: usize = 15;

// ---- NTSTATUS and continue codes ----------------------------------------------------------------

pub const STATUS_SUCCESS: u32 = 0;
/// Failure of most APIs, and the answer to an unknown API (kd.md §2.8, §3.10).
pub const STATUS_UNSUCCESSFUL: u32 = 0xC000_0001;
/// VirtualBox's answer to an unknown API (kd.md §2.8).
pub const STATUS_NOT_IMPLEMENTED: u32 = 0xC000_0002;
/// Bad QueryMemory address space or SetContextEx range (kd.md §3.4, §3.7).
pub const STATUS_INVALID_PARAMETER: u32 = 0xC000_000D;
/// The host's refusal of a `.kdfiles` CreateFile (kd.md §2.9).
pub const STATUS_NO_SUCH_FILE: u32 = 0xC000_000F;
/// Exception code of a breakpoint stop (kd.md §3.1 SYZ value).
pub const STATUS_BREAKPOINT: u32 = 0x8000_0003;
/// Exception code after a Continue2 with TraceFlag = 1 (kd.md §3.6).
pub const STATUS_SINGLE_STEP: u32 = 0x8000_0004;
/// ContinueStatus: resume, exception handled or ignored (kd.md §3.6).
pub const DBG_CONTINUE: u32 = 0x0001_0002;
/// ContinueStatus: exception handled (kd.md §3.6).
pub const DBG_EXCEPTION_HANDLED: u32 = 0x0001_0001;
/// ContinueStatus: pass the exception on to the kernel's handlers (kd.md §3.6).
pub const DBG_EXCEPTION_NOT_HANDLED: u32 = 0x8001_0001;

// ---- GetVersion (kd.md §3.5) --------------------------------------------------------------------

/// DBGKD_64BIT_PROTOCOL_VERSION1 / VERSION2 (kd.md §3.5).
pub const DBGKD_64BIT_PROTOCOL_VERSION1: u8 = 5;
pub const DBGKD_64BIT_PROTOCOL_VERSION2: u8 = 6;
/// KD_SECONDARY_VERSION_AMD64_CONTEXT (kd.md §3.5).
pub const KD_SECONDARY_VERSION_AMD64_CONTEXT: u8 = 2;
/// GetVersion Flags bits (kd.md §3.5).
pub const DBGKD_VERS_FLAG_MP: u16 = 0x01;
pub const DBGKD_VERS_FLAG_DATA: u16 = 0x02;
pub const DBGKD_VERS_FLAG_PTR64: u16 = 0x04;
pub const DBGKD_VERS_FLAG_NOMM: u16 = 0x08;
pub const DBGKD_VERS_FLAG_HSS: u16 = 0x10;
pub const DBGKD_VERS_FLAG_PARTITIONS: u16 = 0x20;
/// MachineType values (kd.md §3.5).
pub const IMAGE_FILE_MACHINE_AMD64: u16 = 0x8664;
pub const IMAGE_FILE_MACHINE_I386: u16 = 0x014C;
pub const IMAGE_FILE_MACHINE_ARM64: u16 = 0xAA64;
/// MajorVersion low byte: 0xF free build, 0xC checked build (kd.md §3.5).
pub const MAJOR_VERSION_FREE: u16 = 0x0F;
pub const MAJOR_VERSION_CHECKED: u16 = 0x0C;

// ---- Control report (kd.md §3.1) ----------------------------------------------------------------

pub const REPORT_INCLUDES_SEGS: u16 = 0x0001;
pub const REPORT_STANDARD_CS: u16 = 0x0002;

// ---- Physical memory caching, carried in the request's ActualBytes (kd.md §3.4) -------------------

pub const DBGKD_CACHING_DEFAULT: u32 = 0;
pub const DBGKD_CACHING_CACHED: u32 = 1;
pub const DBGKD_CACHING_UNCACHED: u32 = 2;
pub const DBGKD_CACHING_WRITE_COMBINED: u32 = 3;

// ---- QueryMemory (kd.md §3.4) -------------------------------------------------------------------

pub const DBGKD_QUERY_MEMORY_PROCESS: u32 = 0;
pub const DBGKD_QUERY_MEMORY_SESSION: u32 = 1;
pub const DBGKD_QUERY_MEMORY_KERNEL: u32 = 2;
pub const DBGKD_QUERY_MEMORY_READ: u32 = 0x01;
pub const DBGKD_QUERY_MEMORY_WRITE: u32 = 0x02;
pub const DBGKD_QUERY_MEMORY_EXECUTE: u32 = 0x04;
pub const DBGKD_QUERY_MEMORY_FIXED: u32 = 0x08;

// ---- FillMemory flags (kd.md §3.4) ----------------------------------------------------------------

pub const DBGKD_FILL_MEMORY_VIRTUAL: u16 = 0x01;
pub const DBGKD_FILL_MEMORY_PHYSICAL: u16 = 0x02;

// ---- AMD64 control space selectors (kd.md §3.8) -------------------------------------------------

pub const AMD64_DEBUG_CONTROL_SPACE_KPCR: u64 = 0;
pub const AMD64_DEBUG_CONTROL_SPACE_KPRCB: u64 = 1;
pub const AMD64_DEBUG_CONTROL_SPACE_KSPECIAL: u64 = 2;
pub const AMD64_DEBUG_CONTROL_SPACE_KTHREAD: u64 = 3;

/// Offsets inside AMD64 KSPECIAL_REGISTERS, as read through control-space selector 2 (kd.md §3.8).
pub mod kspecial {
    pub const CR0: usize = 0x00;
    pub const CR2: usize = 0x08;
    pub const CR3: usize = 0x10;
    pub const CR4: usize = 0x18;
    pub const KERNEL_DR0: usize = 0x20;
    pub const KERNEL_DR1: usize = 0x28;
    pub const KERNEL_DR2: usize = 0x30;
    pub const KERNEL_DR3: usize = 0x38;
    pub const KERNEL_DR6: usize = 0x40;
    pub const KERNEL_DR7: usize = 0x48;
    /// Gdtr: `Pad[3]`, Limit u16 @+6, Base u64 @+8.
    pub const GDTR: usize = 0x50;
    pub const IDTR: usize = 0x60;
    pub const TR: usize = 0x70;
    pub const LDTR: usize = 0x72;
    pub const MXCSR: usize = 0x74;
    pub const DEBUG_CONTROL: usize = 0x78;
    pub const LAST_BRANCH_TO_RIP: usize = 0x80;
    pub const LAST_BRANCH_FROM_RIP: usize = 0x88;
    pub const LAST_EXCEPTION_TO_RIP: usize = 0x90;
    pub const LAST_EXCEPTION_FROM_RIP: usize = 0x98;
    pub const CR8: usize = 0xA0;
    pub const MSR_GS_BASE: usize = 0xA8;
    pub const MSR_GS_SWAP: usize = 0xB0;
    pub const MSR_STAR: usize = 0xB8;
    pub const MSR_LSTAR: usize = 0xC0;
    pub const MSR_CSTAR: usize = 0xC8;
    pub const MSR_SYSCALL_MASK: usize = 0xD0;
    pub const XCR0: usize = 0xD8;
    /// Windows 10/11 only.
    pub const MSR_FS_BASE: usize = 0xE0;
    /// Windows 8 size; Windows 11 has 0xF0.
    pub const SIZE_WIN8: usize = 0xE0;
    pub const SIZE_WIN11: usize = 0xF0;
    /// What ntoseye reads: enough for CR3 and KernelDr7 (kd.md §3.8).
    pub const NTOSEYE_READ_LEN: usize = 0xA8;
}

/// AMD64 CONTEXT: size, ContextFlags bits and register offsets (kd.md §3.7).
pub mod context {
    /// sizeof(CONTEXT) on AMD64; a GetContext reply is 56 + 0x4D0 = 1288 bytes.
    pub const SIZE: usize = 0x4D0;
    /// sizeof(CONTEXT) on x86 (kd.md §3.7), for reference.
    pub const X86_SIZE: usize = 0x2CC;

    pub const CONTEXT_AMD64: u32 = 0x0010_0000;
    pub const CONTEXT_CONTROL: u32 = CONTEXT_AMD64 | 0x01;
    pub const CONTEXT_INTEGER: u32 = CONTEXT_AMD64 | 0x02;
    pub const CONTEXT_SEGMENTS: u32 = CONTEXT_AMD64 | 0x04;
    pub const CONTEXT_FLOATING_POINT: u32 = CONTEXT_AMD64 | 0x08;
    pub const CONTEXT_DEBUG_REGISTERS: u32 = CONTEXT_AMD64 | 0x10;
    /// CONTROL | INTEGER | FLOATING_POINT = 0x10000B.
    pub const CONTEXT_FULL: u32 = CONTEXT_CONTROL | CONTEXT_INTEGER | CONTEXT_FLOATING_POINT;

    pub const P1_HOME: usize = 0x00;
    pub const P2_HOME: usize = 0x08;
    pub const P3_HOME: usize = 0x10;
    pub const P4_HOME: usize = 0x18;
    pub const P5_HOME: usize = 0x20;
    pub const P6_HOME: usize = 0x28;
    pub const CONTEXT_FLAGS: usize = 0x30;
    pub const MX_CSR: usize = 0x34;
    pub const SEG_CS: usize = 0x38;
    pub const SEG_DS: usize = 0x3A;
    pub const SEG_ES: usize = 0x3C;
    pub const SEG_FS: usize = 0x3E;
    pub const SEG_GS: usize = 0x40;
    pub const SEG_SS: usize = 0x42;
    pub const EFLAGS: usize = 0x44;
    pub const DR0: usize = 0x48;
    pub const DR1: usize = 0x50;
    pub const DR2: usize = 0x58;
    pub const DR3: usize = 0x60;
    pub const DR6: usize = 0x68;
    pub const DR7: usize = 0x70;
    pub const RAX: usize = 0x78;
    pub const RCX: usize = 0x80;
    pub const RDX: usize = 0x88;
    pub const RBX: usize = 0x90;
    pub const RSP: usize = 0x98;
    pub const RBP: usize = 0xA0;
    pub const RSI: usize = 0xA8;
    pub const RDI: usize = 0xB0;
    pub const R8: usize = 0xB8;
    pub const R9: usize = 0xC0;
    pub const R10: usize = 0xC8;
    pub const R11: usize = 0xD0;
    pub const R12: usize = 0xD8;
    pub const R13: usize = 0xE0;
    pub const R14: usize = 0xE8;
    pub const R15: usize = 0xF0;
    pub const RIP: usize = 0xF8;
    /// XMM_SAVE_AREA32, 512 bytes.
    pub const FLT_SAVE: usize = 0x100;
    /// `VectorRegister[26]`, 16 bytes each.
    pub const VECTOR_REGISTER: usize = 0x300;
    pub const VECTOR_CONTROL: usize = 0x4A0;
    pub const DEBUG_CONTROL: usize = 0x4A8;
    pub const LAST_BRANCH_TO_RIP: usize = 0x4B0;
    pub const LAST_BRANCH_FROM_RIP: usize = 0x4B8;
    pub const LAST_EXCEPTION_TO_RIP: usize = 0x4C0;
    pub const LAST_EXCEPTION_FROM_RIP: usize = 0x4C8;

    /// Offset of general-purpose register `n` in x86 encoding order (0 = RAX, 1 = RCX, 2 = RDX,
    /// 3 = RBX, 4 = RSP, 5 = RBP, 6 = RSI, 7 = RDI, 8..=15 = R8..R15); `None` above 15. The
    /// CONTEXT stores them contiguously from RAX in exactly this order.
    pub fn gpr_offset(n: usize) -> Option<usize> {
        (n < 16).then(|| RAX + 8 * n)
    }
}
