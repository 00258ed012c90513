//! DbgKd API numbers (kd.md §3.3) and state-change codes (kd.md §3.1).

use std::fmt;

/// The 32-bit `ApiNumber` / `NewState` that opens every DbgKd message.
///
/// A newtype rather than an enum: every u32 is a valid value, so an unknown number is kept as is
/// (never an error, never lost) and cannot be spelled two ways (an enum with an `Other(u32)` arm
/// would let `Other(0x3130)` and `ReadVirtualMemory` encode alike but compare unequal). The known
/// numbers are associated constants, usable in `match` patterns.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ApiNumber(pub u32);

macro_rules! api_numbers {
    ($( $(#[$doc:meta])* $konst:ident = $value:literal, $name:literal, $reply:literal; )*) => {
        impl ApiNumber {
            $( $(#[$doc])* pub const $konst: ApiNumber = ApiNumber($value); )*

            /// Every number this crate knows, in numeric order (for tests and decoders).
            pub const ALL: &'static [ApiNumber] = &[$(ApiNumber($value)),*];

            /// WinDbg-style name (`DbgKdReadVirtualMemoryApi`), or `None` for an unknown number.
            pub fn known_name(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some($name), )*
                    _ => None,
                }
            }

            /// Whether the peer answers this message with a data packet of its own (beyond the
            /// link-level ACK). Unknown numbers answer `true`: a target echoes an unknown manipulate
            /// API with STATUS_UNSUCCESSFUL (kd.md §2.8).
            pub fn has_reply(self) -> bool {
                match self.0 {
                    $( $value => $reply, )*
                    _ => true,
                }
            }
        }
    };
}

api_numbers! {
    // State changes, kd.md §3.1 (NewState of DBGKD_ANY_WAIT_STATE_CHANGE). They are stops, not
    // requests: the host answers with manipulate requests and finally a continue, not a reply.
    /// A breakpoint, single step or other exception stopped the target.
    EXCEPTION_STATE_CHANGE = 0x3030, "DbgKdExceptionStateChange", false;
    /// A module was loaded or unloaded (only when the target breaks on module load).
    LOAD_SYMBOLS_STATE_CHANGE = 0x3031, "DbgKdLoadSymbolsStateChange", false;
    /// A command string (two strings after the structure) from the target.
    COMMAND_STRING_STATE_CHANGE = 0x3032, "DbgKdCommandStringStateChange", false;

    // Manipulate APIs, kd.md §3.3; the no-reply ones are listed in kd.md §2.8.
    READ_VIRTUAL_MEMORY = 0x3130, "DbgKdReadVirtualMemoryApi", true;
    WRITE_VIRTUAL_MEMORY = 0x3131, "DbgKdWriteVirtualMemoryApi", true;
    GET_CONTEXT = 0x3132, "DbgKdGetContextApi", true;
    SET_CONTEXT = 0x3133, "DbgKdSetContextApi", true;
    WRITE_BREAKPOINT = 0x3134, "DbgKdWriteBreakPointApi", true;
    RESTORE_BREAKPOINT = 0x3135, "DbgKdRestoreBreakPointApi", true;
    CONTINUE = 0x3136, "DbgKdContinueApi", false;
    READ_CONTROL_SPACE = 0x3137, "DbgKdReadControlSpaceApi", true;
    WRITE_CONTROL_SPACE = 0x3138, "DbgKdWriteControlSpaceApi", true;
    READ_IO_SPACE = 0x3139, "DbgKdReadIoSpaceApi", true;
    WRITE_IO_SPACE = 0x313A, "DbgKdWriteIoSpaceApi", true;
    REBOOT = 0x313B, "DbgKdRebootApi", false;
    CONTINUE2 = 0x313C, "DbgKdContinueApi2", false;
    READ_PHYSICAL_MEMORY = 0x313D, "DbgKdReadPhysicalMemoryApi", true;
    WRITE_PHYSICAL_MEMORY = 0x313E, "DbgKdWritePhysicalMemoryApi", true;
    QUERY_SPECIAL_CALLS = 0x313F, "DbgKdQuerySpecialCallsApi", true;
    SET_SPECIAL_CALL = 0x3140, "DbgKdSetSpecialCallApi", false;
    CLEAR_SPECIAL_CALLS = 0x3141, "DbgKdClearSpecialCallsApi", false;
    SET_INTERNAL_BREAKPOINT = 0x3142, "DbgKdSetInternalBreakPointApi", false;
    GET_INTERNAL_BREAKPOINT = 0x3143, "DbgKdGetInternalBreakPointApi", true;
    READ_IO_SPACE_EXTENDED = 0x3144, "DbgKdReadIoSpaceExtendedApi", true;
    WRITE_IO_SPACE_EXTENDED = 0x3145, "DbgKdWriteIoSpaceExtendedApi", true;
    GET_VERSION = 0x3146, "DbgKdGetVersionApi", true;
    WRITE_BREAKPOINT_EX = 0x3147, "DbgKdWriteBreakPointExApi", true;
    RESTORE_BREAKPOINT_EX = 0x3148, "DbgKdRestoreBreakPointExApi", true;
    CAUSE_BUGCHECK = 0x3149, "DbgKdCauseBugCheckApi", false;
    /// No reply: the new CPU reports a fresh state change instead (kd.md §2.8).
    SWITCH_PROCESSOR = 0x3150, "DbgKdSwitchProcessor", false;
    PAGE_IN = 0x3151, "DbgKdPageInApi", true;
    READ_MSR = 0x3152, "DbgKdReadMachineSpecificRegister", true;
    WRITE_MSR = 0x3153, "DbgKdWriteMachineSpecificRegister", true;
    OLD_VLM1 = 0x3154, "OldVlm1", true;
    OLD_VLM2 = 0x3155, "OldVlm2", true;
    SEARCH_MEMORY = 0x3156, "DbgKdSearchMemoryApi", true;
    GET_BUS_DATA = 0x3157, "DbgKdGetBusDataApi", true;
    SET_BUS_DATA = 0x3158, "DbgKdSetBusDataApi", true;
    CHECK_LOW_MEMORY = 0x3159, "DbgKdCheckLowMemoryApi", true;
    CLEAR_ALL_INTERNAL_BREAKPOINTS = 0x315A, "DbgKdClearAllInternalBreakpointsApi", false;
    FILL_MEMORY = 0x315B, "DbgKdFillMemoryApi", true;
    QUERY_MEMORY = 0x315C, "DbgKdQueryMemoryApi", true;
    SWITCH_PARTITION = 0x315D, "DbgKdSwitchPartition", true;
    // From 0x315E up real Windows and ReactOS disagree; Windows numbering is used (kd.md §9 item 1).
    /// Real Windows: not handled by ntoskrnl (ReactOS calls 0x315E WriteCustomBreakpoint).
    MIDORI = 0x315E, "DbgKdMidoriApi", true;
    GET_CONTEXT_EX = 0x315F, "DbgKdGetContextExApi", true;
    SET_CONTEXT_EX = 0x3160, "DbgKdSetContextExApi", true;
    /// Real Windows numbering (ReactOS: 0x315E); ReactOS calls 0x3161 DbgKdMaximumManipulate.
    WRITE_CUSTOM_BREAKPOINT = 0x3161, "DbgKdWriteCustomBreakpointApi", true;
    /// Real Windows only; its union layout is not documented (kd.md §3.3).
    READ_PHYSICAL_MEMORY_LONG = 0x3162, "DbgKdReadPhysicalMemoryLongApi", true;

    // DEBUG_IO, TRACE_IO, FILE_IO and CONTROL_REQUEST families (kd.md §3.3, §3.9).
    /// DbgPrint text; the host only ACKs it (kd.md §2.9).
    PRINT_STRING = 0x3230, "DbgKdPrintStringApi", false;
    /// DbgPrompt: the host answers with the input string (kd.md §2.9).
    GET_STRING = 0x3231, "DbgKdGetStringApi", true;
    PRINT_TRACE = 0x3330, "DbgKdPrintTraceApi", false;
    CREATE_FILE = 0x3430, "DbgKdCreateFileApi", true;
    READ_FILE = 0x3431, "DbgKdReadFileApi", true;
    WRITE_FILE = 0x3432, "DbgKdWriteFileApi", true;
    CLOSE_FILE = 0x3433, "DbgKdCloseFileApi", true;
    REQUEST_HARDWARE_BP = 0x4300, "DbgKdRequestHardwareBp", true;
    RELEASE_HARDWARE_BP = 0x4301, "DbgKdReleaseHardwareBp", true;
}

impl ApiNumber {
    /// DbgKdMinimumStateChange / DbgKdMaximumStateChange (kd.md §3.1; exclusive maximum).
    pub const MINIMUM_STATE_CHANGE: u32 = 0x3030;
    pub const MAXIMUM_STATE_CHANGE: u32 = 0x3033;
    /// DbgKdAlternateStateChange: OR-ed into NewState by an alternate source (kd.md §3.1).
    pub const ALTERNATE_STATE_CHANGE_FLAG: u32 = 0x0001_0000;
    /// DbgKdMinimumManipulate (kd.md §3.3); GetVersion's MaxManipulate counts from here.
    pub const MINIMUM_MANIPULATE: u32 = 0x3130;

    /// WinDbg-style name, or "DbgKdUnknownApi" for a number outside kd.md §3.3.
    pub fn name(self) -> &'static str {
        self.known_name().unwrap_or("DbgKdUnknownApi")
    }

    pub fn is_known(self) -> bool {
        self.known_name().is_some()
    }
}

impl From<u32> for ApiNumber {
    fn from(value: u32) -> Self {
        Self(value)
    }
}

impl From<ApiNumber> for u32 {
    fn from(value: ApiNumber) -> Self {
        value.0
    }
}

impl fmt::Debug for ApiNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiNumber({:#06x} {})", self.0, self.name())
    }
}

/// The name for known numbers, `DbgKdUnknownApi(0x...)` otherwise.
impl fmt::Display for ApiNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.known_name() {
            Some(name) => f.write_str(name),
            None => write!(f, "DbgKdUnknownApi({:#x})", self.0),
        }
    }
}
