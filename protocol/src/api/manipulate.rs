//! DBGKD_MANIPULATE_STATE64 (packet type 2): host requests and target replies (kd.md §3.2–§3.8).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use nom::number::complete::{le_u16, le_u32, le_u64, u8 as le_u8};
use nom::Parser;

use super::constants::{
    DBGKD_CACHING_DEFAULT, MANIPULATE_LEN, MANIPULATE_UNION_LEN, STATUS_SUCCESS,
};
use super::wire::{compose, parse_fixed, put_u16, put_u32, put_u64, put_u8, slack_of, PResult};
use super::ApiNumber;
use crate::Result;

/// The union of a manipulate message: 40 bytes at packet offset 0x10 (kd.md §3.2).
pub type ManipulateUnion = [u8; MANIPULATE_UNION_LEN];

/// One DBGKD_MANIPULATE_STATE64 message plus the data that follows its 56 bytes.
///
/// Encoding starts from [`union_slack`](Self::union_slack) and writes the typed
/// [`params`](Self::params) over it. Parsing fills `params` from the bytes the API's layout uses and
/// keeps every other union byte in `union_slack` (with the owned bytes zeroed). That gives both
/// round trips: `encode(parse(bytes)) == bytes` for real captures full of WinDbg's stack junk, and
/// `parse(encode(v)) == v` for values built with the constructors (slack all zero), provided
/// `params` is the variant [`ManipulateParams::parse`] picks for `api`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manipulate {
    pub api: ApiNumber,
    /// Hosts send 0; Windows echoes the request's value in the reply (kd.md §3.2; LIB capture).
    pub processor_level: u16,
    /// The CPU a request is about; the reply echoes it (kd.md §3.2).
    pub processor: u16,
    /// NTSTATUS of a reply; 0 in requests (WinDbg leaves junk here).
    pub return_status: u32,
    /// The alignment gap at 0x0C. Kept because WinDbg sends junk in it and Windows echoes it.
    pub header_pad: u32,
    pub params: ManipulateParams,
    /// Union bytes not covered by `params`; see the type's documentation.
    pub union_slack: ManipulateUnion,
    /// Everything after the 56-byte structure: memory contents, CONTEXT, patterns.
    pub data: Bytes,
}

/// The typed view of the manipulate union, chosen by the API number (kd.md §3.4). Offsets in the
/// field documentation are packet offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManipulateParams {
    /// Read/WriteVirtualMemory, Read/WritePhysicalMemory, Read/WriteControlSpace.
    Memory(MemoryParams),
    /// SetContext: ContextFlags @0x10.
    SetContext {
        context_flags: u32,
    },
    WriteBreakPoint(WriteBreakPointParams),
    /// RestoreBreakPoint: BreakPointHandle @0x10.
    RestoreBreakPoint {
        handle: u32,
    },
    /// Continue: ContinueStatus @0x10.
    Continue {
        status: u32,
    },
    Continue2(Continue2Params),
    /// Read/WriteIoSpace.
    Io(IoParams),
    /// Read/WriteIoSpaceExtended.
    IoExtended(IoExtendedParams),
    /// QuerySpecialCalls: NumberOfSpecialCalls @0x10; the u64 list follows as data.
    QuerySpecialCalls {
        number_of_special_calls: u32,
    },
    /// SetSpecialCall: SpecialCall @0x10.
    SetSpecialCall {
        special_call: u64,
    },
    /// SetInternalBreakPoint: BreakpointAddress @0x10, Flags @0x18.
    SetInternalBreakPoint {
        address: u64,
        flags: u32,
    },
    GetInternalBreakPoint(InternalBreakPointParams),
    GetVersion(Version),
    /// Write/RestoreBreakPointEx: BreakPointCount @0x10, ContinueStatus @0x14; array follows.
    BreakPointEx {
        break_point_count: u32,
        continue_status: u32,
    },
    /// Read/WriteMSR.
    Msr(MsrParams),
    SearchMemory(SearchMemoryParams),
    /// Get/SetBusData.
    BusData(BusDataParams),
    FillMemory(FillMemoryParams),
    QueryMemory(QueryMemoryParams),
    /// SwitchPartition: Partition @0x10.
    SwitchPartition {
        partition: u32,
    },
    WriteCustomBreakPoint(CustomBreakPointParams),
    /// Get/SetContextEx.
    ContextEx(ContextExParams),
    /// APIs that do not use the union: GetContext (its `Unused` field stays in the slack),
    /// SwitchProcessor, Reboot, CauseBugCheck, ClearSpecialCalls, ClearAllInternalBreakpoints.
    Unused,
    /// Any API whose union layout is not known (PageIn, CheckLowMemory, OldVlm*, Midori,
    /// ReadPhysicalMemoryLong, unknown numbers): the raw 40 bytes.
    Other(ManipulateUnion),
}

/// DBGKD_READ_MEMORY64 / DBGKD_WRITE_MEMORY64 (kd.md §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryParams {
    /// @0x10. For control space on AMD64 this is a selector 0–3 (kd.md §3.8).
    pub target_base_address: u64,
    /// @0x18.
    pub transfer_count: u32,
    /// @0x1C: ActualBytesRead/Written in replies; for physical requests, the caching type.
    pub actual_bytes: u32,
}

/// DBGKD_WRITE_BREAKPOINT64 (kd.md §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteBreakPointParams {
    /// @0x10.
    pub address: u64,
    /// @0x18: set by the reply; 0 = failure.
    pub handle: u32,
}

/// DBGKD_CONTINUE2 with the AMD64 control set. The header packs it to 4 bytes, so the control set
/// starts at 0x14, not 0x18 (kd.md §3.6, §8 item 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Continue2Params {
    /// @0x10.
    pub status: u32,
    /// @0x14: 1 = single step.
    pub trace_flag: u32,
    /// @0x18.
    pub dr7: u64,
    /// @0x20: 1 = "leave the step-over range alone" (ReactOS updates it only when ≠ 1).
    pub symbol_start: u64,
    /// @0x28.
    pub symbol_end: u64,
}

/// DBGKD_READ_WRITE_IO64 (kd.md §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoParams {
    /// @0x10.
    pub io_address: u64,
    /// @0x18.
    pub data_size: u32,
    /// @0x1C.
    pub data_value: u32,
}

/// DBGKD_READ_WRITE_IO_EXTENDED64 (kd.md §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoExtendedParams {
    /// @0x10.
    pub data_size: u32,
    /// @0x14.
    pub interface_type: u32,
    /// @0x18.
    pub bus_number: u32,
    /// @0x1C.
    pub address_space: u32,
    /// @0x20.
    pub io_address: u64,
    /// @0x28.
    pub data_value: u32,
}

/// DBGKD_GET_INTERNAL_BREAKPOINT64 (kd.md §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InternalBreakPointParams {
    /// @0x10.
    pub address: u64,
    /// @0x18.
    pub flags: u32,
    /// @0x1C.
    pub calls: u32,
    /// @0x20.
    pub max_calls_per_period: u32,
    /// @0x24.
    pub min_instructions: u32,
    /// @0x28.
    pub max_instructions: u32,
    /// @0x2C.
    pub total_instructions: u32,
}

/// DBGKD_GET_VERSION64: the whole 40-byte union (kd.md §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Version {
    /// @0x10: `(major type << 8) | 0xF` (free) or `| 0xC` (checked).
    pub major_version: u16,
    /// @0x12: the build number.
    pub minor_version: u16,
    /// @0x14: 6 = DBGKD_64BIT_PROTOCOL_VERSION2.
    pub protocol_version: u8,
    /// @0x15: 2 = KD_SECONDARY_VERSION_AMD64_CONTEXT.
    pub kd_secondary_version: u8,
    /// @0x16: DBGKD_VERS_FLAG_* bits.
    pub flags: u16,
    /// @0x18: 0x8664 AMD64.
    pub machine_type: u16,
    /// @0x1A.
    pub max_packet_type: u8,
    /// @0x1B.
    pub max_state_change: u8,
    /// @0x1C: number of manipulate APIs the target knows.
    pub max_manipulate: u8,
    /// @0x1D: 0 none, 1 EXDI.
    pub simulation: u8,
    /// @0x1E.
    pub unused: u16,
    /// @0x20.
    pub kern_base: u64,
    /// @0x28.
    pub ps_loaded_module_list: u64,
    /// @0x30: address of KdpDebuggerDataListHead.
    pub debugger_data_list: u64,
}

impl Version {
    /// The build number (MinorVersion).
    pub fn build(&self) -> u16 {
        self.minor_version
    }

    /// Whether MajorVersion's low nibble says "checked build" (0xC).
    pub fn is_checked_build(&self) -> bool {
        self.major_version & 0xF == 0xC
    }
}

/// DBGKD_READ_WRITE_MSR (kd.md §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsrParams {
    /// @0x10.
    pub msr: u32,
    /// @0x14.
    pub low: u32,
    /// @0x18.
    pub high: u32,
}

impl MsrParams {
    /// The 64-bit MSR value `high:low`.
    pub fn value(&self) -> u64 {
        (u64::from(self.high) << 32) | u64::from(self.low)
    }

    pub fn with_value(msr: u32, value: u64) -> Self {
        Self {
            msr,
            low: value as u32,
            high: (value >> 32) as u32,
        }
    }
}

/// DBGKD_SEARCH_MEMORY (kd.md §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SearchMemoryParams {
    /// @0x10: SearchAddress in requests, FoundAddress in replies.
    pub address: u64,
    /// @0x18.
    pub search_length: u64,
    /// @0x20; the pattern follows as data.
    pub pattern_length: u32,
}

/// DBGKD_GET_SET_BUS_DATA (kd.md §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BusDataParams {
    /// @0x10.
    pub bus_data_type: u32,
    /// @0x14.
    pub bus_number: u32,
    /// @0x18.
    pub slot_number: u32,
    /// @0x1C.
    pub offset: u32,
    /// @0x20.
    pub length: u32,
}

/// DBGKD_FILL_MEMORY (kd.md §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FillMemoryParams {
    /// @0x10.
    pub address: u64,
    /// @0x18.
    pub length: u32,
    /// @0x1C: 1 virtual, 2 physical.
    pub flags: u16,
    /// @0x1E; the pattern follows as data.
    pub pattern_length: u16,
}

/// DBGKD_QUERY_MEMORY (kd.md §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueryMemoryParams {
    /// @0x10.
    pub address: u64,
    /// @0x18.
    pub reserved: u64,
    /// @0x20: must be 0 in requests; reply 0 process, 1 session, 2 kernel.
    pub address_space: u32,
    /// @0x24: reply: 1 read, 2 write, 4 execute, 8 fixed.
    pub flags: u32,
}

/// DBGKD_WRITE_CUSTOM_BREAKPOINT (kd.md §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CustomBreakPointParams {
    /// @0x10.
    pub address: u64,
    /// @0x18.
    pub instruction: u64,
    /// @0x20.
    pub handle: u32,
    /// @0x24.
    pub instruction_size: u8,
    /// @0x25.
    pub instruction_alignment: u8,
}

/// DBGKD_CONTEXT_EX (kd.md §3.4, §3.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContextExParams {
    /// @0x10.
    pub offset: u32,
    /// @0x14: GetContextEx reply: the full context size.
    pub byte_count: u32,
    /// @0x18: SetContextEx request: the total staged size; replies: bytes actually copied.
    pub bytes_copied: u32,
}

// ---- Union codec ------------------------------------------------------------------------------

fn memory(i: &[u8]) -> PResult<'_, ManipulateParams> {
    (le_u64, le_u32, le_u32)
        .map(|(target_base_address, transfer_count, actual_bytes)| {
            ManipulateParams::Memory(MemoryParams {
                target_base_address,
                transfer_count,
                actual_bytes,
            })
        })
        .parse(i)
}

fn continue2(i: &[u8]) -> PResult<'_, ManipulateParams> {
    (le_u32, le_u32, le_u64, le_u64, le_u64)
        .map(|(status, trace_flag, dr7, symbol_start, symbol_end)| {
            ManipulateParams::Continue2(Continue2Params {
                status,
                trace_flag,
                dr7,
                symbol_start,
                symbol_end,
            })
        })
        .parse(i)
}

fn version(i: &[u8]) -> PResult<'_, Version> {
    let (i, (major_version, minor_version, protocol_version, kd_secondary_version, flags)) =
        (le_u16, le_u16, le_u8, le_u8, le_u16).parse(i)?;
    let (i, (machine_type, max_packet_type, max_state_change, max_manipulate, simulation)) =
        (le_u16, le_u8, le_u8, le_u8, le_u8).parse(i)?;
    let (i, (unused, kern_base, ps_loaded_module_list, debugger_data_list)) =
        (le_u16, le_u64, le_u64, le_u64).parse(i)?;
    Ok((
        i,
        Version {
            major_version,
            minor_version,
            protocol_version,
            kd_secondary_version,
            flags,
            machine_type,
            max_packet_type,
            max_state_change,
            max_manipulate,
            simulation,
            unused,
            kern_base,
            ps_loaded_module_list,
            debugger_data_list,
        },
    ))
}

fn union_params(api: ApiNumber, i: &[u8]) -> PResult<'_, ManipulateParams> {
    use ManipulateParams as P;
    match api {
        ApiNumber::READ_VIRTUAL_MEMORY
        | ApiNumber::WRITE_VIRTUAL_MEMORY
        | ApiNumber::READ_PHYSICAL_MEMORY
        | ApiNumber::WRITE_PHYSICAL_MEMORY
        | ApiNumber::READ_CONTROL_SPACE
        | ApiNumber::WRITE_CONTROL_SPACE => memory(i),
        ApiNumber::SET_CONTEXT => le_u32
            .map(|context_flags| P::SetContext { context_flags })
            .parse(i),
        ApiNumber::WRITE_BREAKPOINT => (le_u64, le_u32)
            .map(|(address, handle)| P::WriteBreakPoint(WriteBreakPointParams { address, handle }))
            .parse(i),
        ApiNumber::RESTORE_BREAKPOINT => le_u32
            .map(|handle| P::RestoreBreakPoint { handle })
            .parse(i),
        ApiNumber::CONTINUE => le_u32.map(|status| P::Continue { status }).parse(i),
        ApiNumber::CONTINUE2 => continue2(i),
        ApiNumber::READ_IO_SPACE | ApiNumber::WRITE_IO_SPACE => (le_u64, le_u32, le_u32)
            .map(|(io_address, data_size, data_value)| {
                P::Io(IoParams {
                    io_address,
                    data_size,
                    data_value,
                })
            })
            .parse(i),
        ApiNumber::READ_IO_SPACE_EXTENDED | ApiNumber::WRITE_IO_SPACE_EXTENDED => {
            (le_u32, le_u32, le_u32, le_u32, le_u64, le_u32)
                .map(
                    |(
                        data_size,
                        interface_type,
                        bus_number,
                        address_space,
                        io_address,
                        data_value,
                    )| {
                        P::IoExtended(IoExtendedParams {
                            data_size,
                            interface_type,
                            bus_number,
                            address_space,
                            io_address,
                            data_value,
                        })
                    },
                )
                .parse(i)
        }
        ApiNumber::QUERY_SPECIAL_CALLS => le_u32
            .map(|number_of_special_calls| P::QuerySpecialCalls {
                number_of_special_calls,
            })
            .parse(i),
        ApiNumber::SET_SPECIAL_CALL => le_u64
            .map(|special_call| P::SetSpecialCall { special_call })
            .parse(i),
        ApiNumber::SET_INTERNAL_BREAKPOINT => (le_u64, le_u32)
            .map(|(address, flags)| P::SetInternalBreakPoint { address, flags })
            .parse(i),
        ApiNumber::GET_INTERNAL_BREAKPOINT => {
            (le_u64, le_u32, le_u32, le_u32, le_u32, le_u32, le_u32)
                .map(
                    |(
                        address,
                        flags,
                        calls,
                        max_calls_per_period,
                        min_instructions,
                        max_instructions,
                        total_instructions,
                    )| {
                        P::GetInternalBreakPoint(InternalBreakPointParams {
                            address,
                            flags,
                            calls,
                            max_calls_per_period,
                            min_instructions,
                            max_instructions,
                            total_instructions,
                        })
                    },
                )
                .parse(i)
        }
        ApiNumber::GET_VERSION => version.map(P::GetVersion).parse(i),
        ApiNumber::WRITE_BREAKPOINT_EX | ApiNumber::RESTORE_BREAKPOINT_EX => (le_u32, le_u32)
            .map(|(break_point_count, continue_status)| P::BreakPointEx {
                break_point_count,
                continue_status,
            })
            .parse(i),
        ApiNumber::READ_MSR | ApiNumber::WRITE_MSR => (le_u32, le_u32, le_u32)
            .map(|(msr, low, high)| P::Msr(MsrParams { msr, low, high }))
            .parse(i),
        ApiNumber::SEARCH_MEMORY => (le_u64, le_u64, le_u32)
            .map(|(address, search_length, pattern_length)| {
                P::SearchMemory(SearchMemoryParams {
                    address,
                    search_length,
                    pattern_length,
                })
            })
            .parse(i),
        ApiNumber::GET_BUS_DATA | ApiNumber::SET_BUS_DATA => {
            (le_u32, le_u32, le_u32, le_u32, le_u32)
                .map(|(bus_data_type, bus_number, slot_number, offset, length)| {
                    P::BusData(BusDataParams {
                        bus_data_type,
                        bus_number,
                        slot_number,
                        offset,
                        length,
                    })
                })
                .parse(i)
        }
        ApiNumber::FILL_MEMORY => (le_u64, le_u32, le_u16, le_u16)
            .map(|(address, length, flags, pattern_length)| {
                P::FillMemory(FillMemoryParams {
                    address,
                    length,
                    flags,
                    pattern_length,
                })
            })
            .parse(i),
        ApiNumber::QUERY_MEMORY => (le_u64, le_u64, le_u32, le_u32)
            .map(|(address, reserved, address_space, flags)| {
                P::QueryMemory(QueryMemoryParams {
                    address,
                    reserved,
                    address_space,
                    flags,
                })
            })
            .parse(i),
        ApiNumber::SWITCH_PARTITION => le_u32
            .map(|partition| P::SwitchPartition { partition })
            .parse(i),
        ApiNumber::WRITE_CUSTOM_BREAKPOINT => (le_u64, le_u64, le_u32, le_u8, le_u8)
            .map(
                |(address, instruction, handle, instruction_size, instruction_alignment)| {
                    P::WriteCustomBreakPoint(CustomBreakPointParams {
                        address,
                        instruction,
                        handle,
                        instruction_size,
                        instruction_alignment,
                    })
                },
            )
            .parse(i),
        ApiNumber::GET_CONTEXT_EX | ApiNumber::SET_CONTEXT_EX => (le_u32, le_u32, le_u32)
            .map(|(offset, byte_count, bytes_copied)| {
                P::ContextEx(ContextExParams {
                    offset,
                    byte_count,
                    bytes_copied,
                })
            })
            .parse(i),
        ApiNumber::GET_CONTEXT
        | ApiNumber::SWITCH_PROCESSOR
        | ApiNumber::REBOOT
        | ApiNumber::CAUSE_BUGCHECK
        | ApiNumber::CLEAR_SPECIAL_CALLS
        | ApiNumber::CLEAR_ALL_INTERNAL_BREAKPOINTS => Ok((i, P::Unused)),
        _ => Ok((i, P::Other(super::wire::array(i)))),
    }
}

impl ManipulateParams {
    /// The typed view `api` gives to a 40-byte union. Every API has one (unknown → `Other`), so
    /// this cannot fail.
    pub fn parse(api: ApiNumber, union: &ManipulateUnion) -> Self {
        union_params(api, union)
            .map(|(_, params)| params)
            .unwrap_or(ManipulateParams::Other(*union))
    }

    /// Writes the typed fields over `union`, touching only the bytes the layout owns.
    pub fn write(&self, u: &mut ManipulateUnion) {
        use ManipulateParams as P;
        match self {
            P::Memory(m) => {
                put_u64(u, 0x00, m.target_base_address);
                put_u32(u, 0x08, m.transfer_count);
                put_u32(u, 0x0C, m.actual_bytes);
            }
            P::SetContext { context_flags } => put_u32(u, 0x00, *context_flags),
            P::WriteBreakPoint(b) => {
                put_u64(u, 0x00, b.address);
                put_u32(u, 0x08, b.handle);
            }
            P::RestoreBreakPoint { handle } => put_u32(u, 0x00, *handle),
            P::Continue { status } => put_u32(u, 0x00, *status),
            P::Continue2(c) => {
                put_u32(u, 0x00, c.status);
                put_u32(u, 0x04, c.trace_flag);
                put_u64(u, 0x08, c.dr7);
                put_u64(u, 0x10, c.symbol_start);
                put_u64(u, 0x18, c.symbol_end);
            }
            P::Io(io) => {
                put_u64(u, 0x00, io.io_address);
                put_u32(u, 0x08, io.data_size);
                put_u32(u, 0x0C, io.data_value);
            }
            P::IoExtended(io) => {
                put_u32(u, 0x00, io.data_size);
                put_u32(u, 0x04, io.interface_type);
                put_u32(u, 0x08, io.bus_number);
                put_u32(u, 0x0C, io.address_space);
                put_u64(u, 0x10, io.io_address);
                put_u32(u, 0x18, io.data_value);
            }
            P::QuerySpecialCalls {
                number_of_special_calls,
            } => put_u32(u, 0x00, *number_of_special_calls),
            P::SetSpecialCall { special_call } => put_u64(u, 0x00, *special_call),
            P::SetInternalBreakPoint { address, flags } => {
                put_u64(u, 0x00, *address);
                put_u32(u, 0x08, *flags);
            }
            P::GetInternalBreakPoint(b) => {
                put_u64(u, 0x00, b.address);
                put_u32(u, 0x08, b.flags);
                put_u32(u, 0x0C, b.calls);
                put_u32(u, 0x10, b.max_calls_per_period);
                put_u32(u, 0x14, b.min_instructions);
                put_u32(u, 0x18, b.max_instructions);
                put_u32(u, 0x1C, b.total_instructions);
            }
            P::GetVersion(v) => {
                put_u16(u, 0x00, v.major_version);
                put_u16(u, 0x02, v.minor_version);
                put_u8(u, 0x04, v.protocol_version);
                put_u8(u, 0x05, v.kd_secondary_version);
                put_u16(u, 0x06, v.flags);
                put_u16(u, 0x08, v.machine_type);
                put_u8(u, 0x0A, v.max_packet_type);
                put_u8(u, 0x0B, v.max_state_change);
                put_u8(u, 0x0C, v.max_manipulate);
                put_u8(u, 0x0D, v.simulation);
                put_u16(u, 0x0E, v.unused);
                put_u64(u, 0x10, v.kern_base);
                put_u64(u, 0x18, v.ps_loaded_module_list);
                put_u64(u, 0x20, v.debugger_data_list);
            }
            P::BreakPointEx {
                break_point_count,
                continue_status,
            } => {
                put_u32(u, 0x00, *break_point_count);
                put_u32(u, 0x04, *continue_status);
            }
            P::Msr(m) => {
                put_u32(u, 0x00, m.msr);
                put_u32(u, 0x04, m.low);
                put_u32(u, 0x08, m.high);
            }
            P::SearchMemory(s) => {
                put_u64(u, 0x00, s.address);
                put_u64(u, 0x08, s.search_length);
                put_u32(u, 0x10, s.pattern_length);
            }
            P::BusData(b) => {
                put_u32(u, 0x00, b.bus_data_type);
                put_u32(u, 0x04, b.bus_number);
                put_u32(u, 0x08, b.slot_number);
                put_u32(u, 0x0C, b.offset);
                put_u32(u, 0x10, b.length);
            }
            P::FillMemory(f) => {
                put_u64(u, 0x00, f.address);
                put_u32(u, 0x08, f.length);
                put_u16(u, 0x0C, f.flags);
                put_u16(u, 0x0E, f.pattern_length);
            }
            P::QueryMemory(q) => {
                put_u64(u, 0x00, q.address);
                put_u64(u, 0x08, q.reserved);
                put_u32(u, 0x10, q.address_space);
                put_u32(u, 0x14, q.flags);
            }
            P::SwitchPartition { partition } => put_u32(u, 0x00, *partition),
            P::WriteCustomBreakPoint(b) => {
                put_u64(u, 0x00, b.address);
                put_u64(u, 0x08, b.instruction);
                put_u32(u, 0x10, b.handle);
                put_u8(u, 0x14, b.instruction_size);
                put_u8(u, 0x15, b.instruction_alignment);
            }
            P::ContextEx(c) => {
                put_u32(u, 0x00, c.offset);
                put_u32(u, 0x04, c.byte_count);
                put_u32(u, 0x08, c.bytes_copied);
            }
            P::Unused => {}
            P::Other(raw) => *u = *raw,
        }
    }
}

// ---- The message ------------------------------------------------------------------------------

impl Manipulate {
    /// A request for `api` with the given union view; everything else zero.
    pub fn new(api: ApiNumber, params: ManipulateParams) -> Self {
        Self {
            api,
            processor_level: 0,
            processor: 0,
            return_status: STATUS_SUCCESS,
            header_pad: 0,
            params,
            union_slack: [0; MANIPULATE_UNION_LEN],
            data: Bytes::new(),
        }
    }

    /// Parses a type-2 payload: the 56-byte structure and whatever follows it.
    pub fn parse(payload: &[u8]) -> Result<Self> {
        let (api, processor_level, processor, return_status, header_pad) =
            parse_fixed("DBGKD_MANIPULATE_STATE64", MANIPULATE_LEN, payload, |i| {
                (le_u32, le_u16, le_u16, le_u32, le_u32).parse(i)
            })?;
        let api = ApiNumber(api);
        let union: ManipulateUnion = super::wire::array(&payload[0x10..]);
        let params = ManipulateParams::parse(api, &union);
        let union_slack = slack_of(&union, |u| params.write(u));
        Ok(Self {
            api,
            processor_level,
            processor,
            return_status,
            header_pad,
            params,
            union_slack,
            data: Bytes::copy_from_slice(&payload[MANIPULATE_LEN..]),
        })
    }

    /// The 40 union bytes as they go on the wire.
    pub fn union_bytes(&self) -> ManipulateUnion {
        compose(&self.union_slack, |u| self.params.write(u))
    }

    /// Sets the slack from a raw union, dropping the bytes `params` owns (so the value still
    /// round-trips). Useful to imitate a peer's junk.
    pub fn set_union_slack(&mut self, raw: ManipulateUnion) {
        self.union_slack = slack_of(&raw, |u| self.params.write(u));
    }

    /// The payload: 56 bytes followed by `data`.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(MANIPULATE_LEN + self.data.len());
        out.put_u32_le(self.api.0);
        out.put_u16_le(self.processor_level);
        out.put_u16_le(self.processor);
        out.put_u32_le(self.return_status);
        out.put_u32_le(self.header_pad);
        out.put_slice(&self.union_bytes());
        out.put_slice(&self.data);
        out.freeze()
    }

    /// Builder: sets the header's Processor (the CPU the request is about).
    pub fn on_processor(mut self, processor: u16) -> Self {
        self.processor = processor;
        self
    }

    /// Builder: sets the trailing data.
    pub fn with_data(mut self, data: impl Into<Bytes>) -> Self {
        self.data = data.into();
        self
    }

    // ---- Host requests ----

    fn memory_request(api: ApiNumber, address: u64, count: u32, actual: u32) -> Self {
        Self::new(
            api,
            ManipulateParams::Memory(MemoryParams {
                target_base_address: address,
                transfer_count: count,
                actual_bytes: actual,
            }),
        )
    }

    /// ReadVirtualMemory of `len` bytes at `address` (kd.md §1.6 worked example). Targets clamp
    /// `len` to [`MAX_MANIPULATE_DATA`](super::constants::MAX_MANIPULATE_DATA) (kd.md §3.10).
    pub fn read_virtual_memory(address: u64, len: u32) -> Self {
        Self::memory_request(ApiNumber::READ_VIRTUAL_MEMORY, address, len, 0)
    }

    /// WriteVirtualMemory: TransferCount = `bytes.len()`, the bytes follow the structure.
    pub fn write_virtual_memory(address: u64, bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self::memory_request(ApiNumber::WRITE_VIRTUAL_MEMORY, address, len32(&bytes), 0)
            .with_data(bytes)
    }

    /// ReadPhysicalMemory; `caching` (DBGKD_CACHING_*) travels in ActualBytes (kd.md §3.4).
    pub fn read_physical_memory(address: u64, len: u32, caching: u32) -> Self {
        Self::memory_request(ApiNumber::READ_PHYSICAL_MEMORY, address, len, caching)
    }

    /// WritePhysicalMemory with default caching.
    pub fn write_physical_memory(address: u64, bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self::memory_request(
            ApiNumber::WRITE_PHYSICAL_MEMORY,
            address,
            len32(&bytes),
            DBGKD_CACHING_DEFAULT,
        )
        .with_data(bytes)
    }

    /// ReadControlSpace: on AMD64 `selector` is 0 KPCR, 1 KPRCB, 2 KSPECIAL, 3 KTHREAD (kd.md §3.8).
    pub fn read_control_space(selector: u64, len: u32) -> Self {
        Self::memory_request(ApiNumber::READ_CONTROL_SPACE, selector, len, 0)
    }

    pub fn write_control_space(selector: u64, bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self::memory_request(ApiNumber::WRITE_CONTROL_SPACE, selector, len32(&bytes), 0)
            .with_data(bytes)
    }

    /// GetContext of the header's Processor (kd.md §3.7).
    pub fn get_context() -> Self {
        Self::new(ApiNumber::GET_CONTEXT, ManipulateParams::Unused)
    }

    /// SetContext: the full CONTEXT follows; only accepted after a GetContext in the same stop.
    pub fn set_context(context_flags: u32, context: impl Into<Bytes>) -> Self {
        Self::new(
            ApiNumber::SET_CONTEXT,
            ManipulateParams::SetContext { context_flags },
        )
        .with_data(context)
    }

    /// GetContextEx: a window of `len` bytes at `offset` of the CONTEXT (kd.md §3.7).
    pub fn get_context_ex(offset: u32, len: u32) -> Self {
        Self::new(
            ApiNumber::GET_CONTEXT_EX,
            ManipulateParams::ContextEx(ContextExParams {
                offset,
                byte_count: len,
                bytes_copied: 0,
            }),
        )
    }

    /// SetContextEx: one chunk at `offset`; BytesCopied carries `total`, the whole staged size,
    /// which Windows requires (kd.md §3.7, §8 item 6).
    pub fn set_context_ex(offset: u32, total: u32, chunk: impl Into<Bytes>) -> Self {
        let chunk = chunk.into();
        Self::new(
            ApiNumber::SET_CONTEXT_EX,
            ManipulateParams::ContextEx(ContextExParams {
                offset,
                byte_count: len32(&chunk),
                bytes_copied: total,
            }),
        )
        .with_data(chunk)
    }

    pub fn write_breakpoint(address: u64) -> Self {
        Self::new(
            ApiNumber::WRITE_BREAKPOINT,
            ManipulateParams::WriteBreakPoint(WriteBreakPointParams { address, handle: 0 }),
        )
    }

    pub fn restore_breakpoint(handle: u32) -> Self {
        Self::new(
            ApiNumber::RESTORE_BREAKPOINT,
            ManipulateParams::RestoreBreakPoint { handle },
        )
    }

    /// The old Continue (0x3136): no control set. No reply.
    pub fn continue1(status: u32) -> Self {
        Self::new(ApiNumber::CONTINUE, ManipulateParams::Continue { status })
    }

    /// Continue2 without tracing. CurrentSymbolStart = 1 ("no step-over range", as in the kd.md
    /// §1.6 worked example, checksum 0x75 for DBG_CONTINUE / Dr7 0x400). No reply.
    pub fn continue2(status: u32, dr7: u64) -> Self {
        Self::continue2_with(Self::continue2_params(status, dr7))
    }

    /// Continue2 with TraceFlag = 1: the next stop is STATUS_SINGLE_STEP (kd.md §3.6).
    pub fn single_step(status: u32, dr7: u64) -> Self {
        Self::continue2_with(Continue2Params {
            trace_flag: 1,
            ..Self::continue2_params(status, dr7)
        })
    }

    fn continue2_params(status: u32, dr7: u64) -> Continue2Params {
        Continue2Params {
            status,
            trace_flag: 0,
            dr7,
            symbol_start: 1,
            symbol_end: 0,
        }
    }

    pub fn continue2_with(params: Continue2Params) -> Self {
        Self::new(ApiNumber::CONTINUE2, ManipulateParams::Continue2(params))
    }

    pub fn get_version() -> Self {
        Self::new(
            ApiNumber::GET_VERSION,
            ManipulateParams::GetVersion(Version::default()),
        )
    }

    pub fn read_msr(msr: u32) -> Self {
        Self::new(
            ApiNumber::READ_MSR,
            ManipulateParams::Msr(MsrParams {
                msr,
                low: 0,
                high: 0,
            }),
        )
    }

    pub fn write_msr(msr: u32, value: u64) -> Self {
        Self::new(
            ApiNumber::WRITE_MSR,
            ManipulateParams::Msr(MsrParams::with_value(msr, value)),
        )
    }

    /// QueryMemory with AddressSpace 0 (Windows rejects anything else with 0xC000000D).
    pub fn query_memory(address: u64) -> Self {
        Self::new(
            ApiNumber::QUERY_MEMORY,
            ManipulateParams::QueryMemory(QueryMemoryParams {
                address,
                ..QueryMemoryParams::default()
            }),
        )
    }

    /// SwitchProcessor to `processor` (the header's Processor field). No reply: that CPU sends a
    /// state change (kd.md §2.8).
    pub fn switch_processor(processor: u16) -> Self {
        Self::new(ApiNumber::SWITCH_PROCESSOR, ManipulateParams::Unused).on_processor(processor)
    }

    pub fn search_memory(address: u64, search_length: u64, pattern: impl Into<Bytes>) -> Self {
        let pattern = pattern.into();
        Self::new(
            ApiNumber::SEARCH_MEMORY,
            ManipulateParams::SearchMemory(SearchMemoryParams {
                address,
                search_length,
                pattern_length: len32(&pattern),
            }),
        )
        .with_data(pattern)
    }

    /// FillMemory; `flags` is DBGKD_FILL_MEMORY_VIRTUAL or _PHYSICAL. The pattern length is a u16
    /// on the wire, so longer patterns are cut to 65535 bytes.
    pub fn fill_memory(address: u64, length: u32, flags: u16, pattern: impl Into<Bytes>) -> Self {
        let mut pattern = pattern.into();
        pattern.truncate(usize::from(u16::MAX));
        Self::new(
            ApiNumber::FILL_MEMORY,
            ManipulateParams::FillMemory(FillMemoryParams {
                address,
                length,
                flags,
                pattern_length: pattern.len() as u16,
            }),
        )
        .with_data(pattern)
    }

    pub fn get_bus_data(params: BusDataParams) -> Self {
        Self::new(ApiNumber::GET_BUS_DATA, ManipulateParams::BusData(params))
    }

    pub fn set_bus_data(params: BusDataParams, bytes: impl Into<Bytes>) -> Self {
        Self::new(ApiNumber::SET_BUS_DATA, ManipulateParams::BusData(params)).with_data(bytes)
    }

    pub fn read_io(io_address: u64, data_size: u32) -> Self {
        Self::new(
            ApiNumber::READ_IO_SPACE,
            ManipulateParams::Io(IoParams {
                io_address,
                data_size,
                data_value: 0,
            }),
        )
    }

    pub fn write_io(io_address: u64, data_size: u32, data_value: u32) -> Self {
        Self::new(
            ApiNumber::WRITE_IO_SPACE,
            ManipulateParams::Io(IoParams {
                io_address,
                data_size,
                data_value,
            }),
        )
    }

    /// No reply (kd.md §2.8).
    pub fn reboot() -> Self {
        Self::new(ApiNumber::REBOOT, ManipulateParams::Unused)
    }

    /// No reply; the target bugchecks with 0xE2 (kd.md §2.8).
    pub fn cause_bugcheck() -> Self {
        Self::new(ApiNumber::CAUSE_BUGCHECK, ManipulateParams::Unused)
    }

    // ---- Target replies ----

    /// The reply a target sends to `request`, as real targets build it: the request's header and
    /// union echoed (junk included), ReturnStatus = `status`, `data` after the structure. For the
    /// APIs that return data, the count of bytes returned is set from `data`: ActualBytesRead for
    /// Read{Virtual,Physical}Memory and ReadControlSpace, BytesCopied for GetContextEx. Anything
    /// else (a GetVersion block, a breakpoint handle, MSR value…) the caller sets in `params`.
    pub fn reply_to(request: &Manipulate, status: u32, data: impl Into<Bytes>) -> Self {
        let data = data.into();
        let mut reply = request.clone();
        reply.return_status = status;
        match (&mut reply.params, request.api) {
            (
                ManipulateParams::Memory(m),
                ApiNumber::READ_VIRTUAL_MEMORY
                | ApiNumber::READ_PHYSICAL_MEMORY
                | ApiNumber::READ_CONTROL_SPACE,
            ) => m.actual_bytes = len32(&data),
            (ManipulateParams::ContextEx(c), ApiNumber::GET_CONTEXT_EX) => {
                c.bytes_copied = len32(&data)
            }
            _ => {}
        }
        reply.data = data;
        reply
    }

    /// The GetVersion reply: the request echoed with the union replaced by `version` (Windows
    /// copies its whole KdVersionBlock there, kd.md §3.10).
    pub fn get_version_reply(request: &Manipulate, version: Version) -> Self {
        let mut reply = Self::reply_to(request, STATUS_SUCCESS, Bytes::new());
        reply.params = ManipulateParams::GetVersion(version);
        reply.union_slack = [0; MANIPULATE_UNION_LEN];
        reply
    }

    /// The answer to an API the target does not implement: echo, STATUS_UNSUCCESSFUL, no data
    /// (kd.md §2.8).
    pub fn unsupported_reply(request: &Manipulate) -> Self {
        Self::reply_to(request, super::constants::STATUS_UNSUCCESSFUL, Bytes::new())
    }

    // ---- Accessors ----

    pub fn memory(&self) -> Option<&MemoryParams> {
        match &self.params {
            ManipulateParams::Memory(m) => Some(m),
            _ => None,
        }
    }

    pub fn version(&self) -> Option<&Version> {
        match &self.params {
            ManipulateParams::GetVersion(v) => Some(v),
            _ => None,
        }
    }

    /// A one-line description. Whether the message is a request or a reply cannot be told from
    /// its bytes (ReturnStatus 0 is both), so the caller says which.
    pub fn summary(&self, is_reply: bool) -> String {
        let mut out = format!(
            "{} {}",
            self.api,
            if is_reply { "reply" } else { "request" }
        );
        if self.processor != 0 {
            out.push_str(&format!(" cpu={}", self.processor));
        }
        let params = self.params_summary(Some(is_reply));
        if !params.is_empty() {
            out.push(' ');
            out.push_str(&params);
        }
        if is_reply {
            out.push_str(&format!(" status={:#x}", self.return_status));
        }
        if !self.data.is_empty() {
            out.push_str(&format!(" data={:#x}", self.data.len()));
        }
        out
    }

    /// The typed fields; `is_reply` picks the interesting ones, `None` prints them all.
    fn params_summary(&self, is_reply: Option<bool>) -> String {
        use ManipulateParams as P;
        let reply = is_reply == Some(true);
        let request = is_reply == Some(false);
        match &self.params {
            P::Memory(m) if request => format!(
                "addr={:016x} len={:#x}",
                m.target_base_address, m.transfer_count
            ),
            P::Memory(m) => format!(
                "addr={:016x} len={:#x} actual={:#x}",
                m.target_base_address, m.transfer_count, m.actual_bytes
            ),
            P::SetContext { context_flags } => format!("flags={context_flags:#x}"),
            P::WriteBreakPoint(b) if request => format!("addr={:016x}", b.address),
            P::WriteBreakPoint(b) => format!("addr={:016x} handle={}", b.address, b.handle),
            P::RestoreBreakPoint { handle } => format!("handle={handle}"),
            P::Continue { status } => format!("continue_status={status:#x}"),
            P::Continue2(c) => format!(
                "continue_status={:#x} trace={} dr7={:#x} symbols={:#x}..{:#x}",
                c.status, c.trace_flag, c.dr7, c.symbol_start, c.symbol_end
            ),
            P::Io(io) => format!(
                "port={:#x} size={} value={:#x}",
                io.io_address, io.data_size, io.data_value
            ),
            P::IoExtended(io) => format!(
                "port={:#x} size={} value={:#x} interface={} bus={} space={}",
                io.io_address,
                io.data_size,
                io.data_value,
                io.interface_type,
                io.bus_number,
                io.address_space
            ),
            P::QuerySpecialCalls {
                number_of_special_calls,
            } => format!("count={number_of_special_calls}"),
            P::SetSpecialCall { special_call } => format!("addr={special_call:016x}"),
            P::SetInternalBreakPoint { address, flags } => {
                format!("addr={address:016x} flags={flags:#x}")
            }
            P::GetInternalBreakPoint(b) => format!(
                "addr={:016x} flags={:#x} calls={}",
                b.address, b.flags, b.calls
            ),
            P::GetVersion(_) if request => String::new(),
            P::GetVersion(v) => format!(
                "build {} machine {:#x} protocol {} flags={:#x} kernbase={:016x} \
                 psloadedmodulelist={:016x} debuggerdatalist={:016x}",
                v.build(),
                v.machine_type,
                v.protocol_version,
                v.flags,
                v.kern_base,
                v.ps_loaded_module_list,
                v.debugger_data_list
            ),
            P::BreakPointEx {
                break_point_count,
                continue_status,
            } => format!("count={break_point_count} continue_status={continue_status:#x}"),
            P::Msr(m) if request && self.api == ApiNumber::READ_MSR => format!("msr={:#x}", m.msr),
            P::Msr(m) => format!("msr={:#x} value={:#x}", m.msr, m.value()),
            P::SearchMemory(s) => format!(
                "addr={:016x} len={:#x} pattern={:#x}",
                s.address, s.search_length, s.pattern_length
            ),
            P::BusData(b) => format!(
                "type={} bus={} slot={} offset={:#x} len={:#x}",
                b.bus_data_type, b.bus_number, b.slot_number, b.offset, b.length
            ),
            P::FillMemory(f) => format!(
                "addr={:016x} len={:#x} flags={:#x} pattern={:#x}",
                f.address, f.length, f.flags, f.pattern_length
            ),
            P::QueryMemory(q) if request => format!("addr={:016x}", q.address),
            P::QueryMemory(q) => format!(
                "addr={:016x} space={} flags={:#x}",
                q.address, q.address_space, q.flags
            ),
            P::SwitchPartition { partition } => format!("partition={partition}"),
            P::WriteCustomBreakPoint(b) => format!(
                "addr={:016x} instruction={:#x} size={} handle={}",
                b.address, b.instruction, b.instruction_size, b.handle
            ),
            P::ContextEx(c) if request && self.api == ApiNumber::GET_CONTEXT_EX => {
                format!("offset={:#x} len={:#x}", c.offset, c.byte_count)
            }
            P::ContextEx(c) if request => format!(
                "offset={:#x} len={:#x} total={:#x}",
                c.offset, c.byte_count, c.bytes_copied
            ),
            P::ContextEx(c) => format!(
                "offset={:#x} count={:#x} copied={:#x}",
                c.offset, c.byte_count, c.bytes_copied
            ),
            P::Unused if self.api == ApiNumber::SWITCH_PROCESSOR && !reply => {
                format!("to={}", self.processor)
            }
            P::Unused => String::new(),
            P::Other(_) => String::new(),
        }
    }
}

/// Direction-neutral: the API name and every typed field, then status and data length.
impl fmt::Display for Manipulate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.api)?;
        let params = self.params_summary(None);
        if !params.is_empty() {
            write!(f, " {params}")?;
        }
        write!(f, " status={:#x}", self.return_status)?;
        if !self.data.is_empty() {
            write!(f, " data={:#x}", self.data.len())?;
        }
        Ok(())
    }
}

/// Lengths of data this crate puts into one packet are below 4000; saturate rather than wrap.
fn len32(bytes: &Bytes) -> u32 {
    u32::try_from(bytes.len()).unwrap_or(u32::MAX)
}
