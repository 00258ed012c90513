//! DBGKD_ANY_WAIT_STATE_CHANGE, AMD64 (packet type 7): the target reports that it stopped
//! (kd.md §3.1).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use nom::bytes::complete::take;
use nom::multi::count;
use nom::number::complete::{le_u16, le_u32, le_u64, u8 as le_u8};
use nom::Parser;

use super::constants::{
    CONTROL_REPORT_LEN, DBGKD_MAXSTREAM, EXCEPTION_MAXIMUM_PARAMETERS, STATE_CHANGE_LEN,
    STATE_CHANGE_UNION_LEN, STATUS_BREAKPOINT, STATUS_SINGLE_STEP,
};
use super::wire::{
    array, compose, escape, parse_fixed, put_u32, put_u64, put_u8, slack_of, PResult,
};
use super::ApiNumber;
use crate::{Error, Result};

/// The state change's union `u`: 0xA0 bytes at offset 0x20 (kd.md §3.1).
pub type StateChangeUnion = [u8; STATE_CHANGE_UNION_LEN];

/// Offset of the union inside the structure (kd.md §3.1).
const UNION_AT: usize = 0x20;
/// Offset of AMD64_DBGKD_CONTROL_REPORT (kd.md §3.1).
const CONTROL_REPORT_AT: usize = 0xC0;

/// One state change: the 240-byte structure and whatever follows it.
///
/// The union follows the same rule as [`Manipulate`](super::Manipulate): `event` is the typed
/// view, `union_slack` holds every other union byte (owned bytes zeroed). Real targets leave
/// junk there — ExceptionInformation entries past NumberParameters hold stale kernel pointers
/// (kd.md §3.1), the LoadSymbols tail holds stack bytes — and re-encoding keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// NewState @0x00: 0x3030 Exception, 0x3031 LoadSymbols, 0x3032 CommandString.
    pub new_state: ApiNumber,
    /// @0x04.
    pub processor_level: u16,
    /// @0x06: the CPU that stopped.
    pub processor: u16,
    /// @0x08.
    pub number_processors: u32,
    /// The alignment gap at 0x0C.
    pub header_pad: u32,
    /// @0x10: KTHREAD address.
    pub thread: u64,
    /// @0x18.
    pub program_counter: u64,
    /// The union @0x20, typed by `new_state`.
    pub event: StateEvent,
    /// Union bytes not covered by `event`.
    pub union_slack: StateChangeUnion,
    /// @0xC0.
    pub control_report: ControlReport,
    /// After the 240 bytes: the NUL-terminated path of LoadSymbols, the two strings of
    /// CommandString; normally empty for exceptions.
    pub data: Bytes,
}

/// The typed view of the union (kd.md §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateEvent {
    Exception(Exception),
    LoadSymbols(LoadSymbols),
    /// DBGKD_COMMAND_STRING: Flags @0x20 (Reserved1/Reserved2 stay in the slack).
    CommandString {
        flags: u32,
    },
    /// Any other NewState: the raw union.
    Other(StateChangeUnion),
}

/// DBGKM_EXCEPTION64: EXCEPTION_RECORD64 + FirstChance (kd.md §3.1; offsets are structure
/// offsets).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Exception {
    /// @0x20: e.g. 0x80000003 breakpoint, 0x80000004 single step.
    pub code: u32,
    /// @0x24.
    pub flags: u32,
    /// @0x28: chained record pointer.
    pub record: u64,
    /// @0x30.
    pub address: u64,
    /// ExceptionInformation[0..NumberParameters] @0x40; NumberParameters @0x38 is their count.
    /// At most 15 ([`EXCEPTION_MAXIMUM_PARAMETERS`]); encode writes only the first 15.
    pub parameters: Vec<u64>,
    /// @0xB8.
    pub first_chance: u32,
}

impl Exception {
    /// A first-chance breakpoint at `address`, as Windows reports `int3` (one parameter, 0).
    pub fn breakpoint(address: u64) -> Self {
        Self {
            code: STATUS_BREAKPOINT,
            flags: 0,
            record: 0,
            address,
            parameters: vec![0],
            first_chance: 1,
        }
    }

    /// The stop after a Continue2 with TraceFlag = 1 (kd.md §3.6).
    pub fn single_step(address: u64) -> Self {
        Self {
            code: STATUS_SINGLE_STEP,
            parameters: Vec::new(),
            ..Self::breakpoint(address)
        }
    }
}

/// DBGKD_LOAD_SYMBOLS64 (kd.md §3.1; structure offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadSymbols {
    /// @0x20: length of the path after the structure, NUL included.
    pub path_name_length: u32,
    /// @0x28.
    pub base_of_dll: u64,
    /// @0x30.
    pub process_id: u64,
    /// @0x38.
    pub checksum: u32,
    /// @0x3C.
    pub size_of_image: u32,
    /// @0x40: BOOLEAN UnloadSymbols, kept as the raw byte so odd values survive a round trip.
    pub unload: u8,
}

/// AMD64_DBGKD_CONTROL_REPORT, 0x30 bytes at 0xC0 (kd.md §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ControlReport {
    /// @0xC0.
    pub dr6: u64,
    /// @0xC8.
    pub dr7: u64,
    /// @0xD0.
    pub eflags: u32,
    /// @0xD4: valid bytes of `instruction_stream` (≤ 16).
    pub instruction_count: u16,
    /// @0xD6: REPORT_INCLUDES_SEGS | REPORT_STANDARD_CS.
    pub report_flags: u16,
    /// @0xD8: bytes at PC, breakpoints already removed.
    pub instruction_stream: [u8; DBGKD_MAXSTREAM],
    /// @0xE8.
    pub cs: u16,
    /// @0xEA.
    pub ds: u16,
    /// @0xEC.
    pub es: u16,
    /// @0xEE.
    pub fs: u16,
}

impl ControlReport {
    /// The valid part of the instruction stream (InstructionCount bounded by 16).
    pub fn instructions(&self) -> &[u8] {
        let n = usize::from(self.instruction_count).min(DBGKD_MAXSTREAM);
        &self.instruction_stream[..n]
    }
}

// ---- Codec ---------------------------------------------------------------------------------------

fn exception(i: &[u8]) -> PResult<'_, (Exception, u32)> {
    let (i, (code, flags, record, address, number_parameters, _pad)) =
        (le_u32, le_u32, le_u64, le_u64, le_u32, le_u32).parse(i)?;
    let (i, (information, first_chance)) =
        (count(le_u64, EXCEPTION_MAXIMUM_PARAMETERS), le_u32).parse(i)?;
    let n = (number_parameters as usize).min(EXCEPTION_MAXIMUM_PARAMETERS);
    let exception = Exception {
        code,
        flags,
        record,
        address,
        parameters: information[..n].to_vec(),
        first_chance,
    };
    Ok((i, (exception, number_parameters)))
}

fn load_symbols(i: &[u8]) -> PResult<'_, LoadSymbols> {
    (le_u32, le_u32, le_u64, le_u64, le_u32, le_u32, le_u8)
        .map(
            |(path_name_length, _pad, base_of_dll, process_id, checksum, size_of_image, unload)| {
                LoadSymbols {
                    path_name_length,
                    base_of_dll,
                    process_id,
                    checksum,
                    size_of_image,
                    unload,
                }
            },
        )
        .parse(i)
}

fn control_report(i: &[u8]) -> PResult<'_, ControlReport> {
    let (i, (dr6, dr7, eflags, instruction_count, report_flags, stream)) = (
        le_u64,
        le_u64,
        le_u32,
        le_u16,
        le_u16,
        take(DBGKD_MAXSTREAM),
    )
        .parse(i)?;
    let (i, (cs, ds, es, fs)) = (le_u16, le_u16, le_u16, le_u16).parse(i)?;
    Ok((
        i,
        ControlReport {
            dr6,
            dr7,
            eflags,
            instruction_count,
            report_flags,
            instruction_stream: array(stream),
            cs,
            ds,
            es,
            fs,
        },
    ))
}

impl StateEvent {
    /// The typed view `new_state` gives to the union. The DbgKdAlternateStateChange flag is
    /// ignored for the choice. Fails only for NumberParameters > 15.
    pub fn parse(new_state: ApiNumber, union: &StateChangeUnion) -> Result<Self> {
        let truncated = |_| Error::Truncated {
            what: "DBGKD_ANY_WAIT_STATE_CHANGE union",
            needed: STATE_CHANGE_UNION_LEN,
            available: union.len(),
        };
        match ApiNumber(new_state.0 & !ApiNumber::ALTERNATE_STATE_CHANGE_FLAG) {
            ApiNumber::EXCEPTION_STATE_CHANGE => {
                let (_, (exception, n)) = exception(union).map_err(truncated)?;
                if n as usize > EXCEPTION_MAXIMUM_PARAMETERS {
                    return Err(Error::InvalidField {
                        field: "ExceptionRecord.NumberParameters",
                        value: u64::from(n),
                    });
                }
                Ok(Self::Exception(exception))
            }
            ApiNumber::LOAD_SYMBOLS_STATE_CHANGE => {
                let (_, info) = load_symbols(union).map_err(truncated)?;
                Ok(Self::LoadSymbols(info))
            }
            ApiNumber::COMMAND_STRING_STATE_CHANGE => Ok(Self::CommandString {
                flags: super::wire::get_u32(union, 0),
            }),
            _ => Ok(Self::Other(*union)),
        }
    }

    /// Writes the typed fields over `u` (union-relative offsets = structure offset − 0x20).
    pub fn write(&self, u: &mut StateChangeUnion) {
        match self {
            Self::Exception(e) => {
                let n = e.parameters.len().min(EXCEPTION_MAXIMUM_PARAMETERS);
                put_u32(u, 0x00, e.code);
                put_u32(u, 0x04, e.flags);
                put_u64(u, 0x08, e.record);
                put_u64(u, 0x10, e.address);
                put_u32(u, 0x18, n as u32);
                for (k, value) in e.parameters.iter().take(n).enumerate() {
                    put_u64(u, 0x20 + 8 * k, *value);
                }
                put_u32(u, 0x98, e.first_chance);
            }
            Self::LoadSymbols(l) => {
                put_u32(u, 0x00, l.path_name_length);
                put_u64(u, 0x08, l.base_of_dll);
                put_u64(u, 0x10, l.process_id);
                put_u32(u, 0x18, l.checksum);
                put_u32(u, 0x1C, l.size_of_image);
                put_u8(u, 0x20, l.unload);
            }
            Self::CommandString { flags } => put_u32(u, 0x00, *flags),
            Self::Other(raw) => *u = *raw,
        }
    }

    /// The NewState that goes with this view (`None` for `Other`).
    pub fn new_state(&self) -> Option<ApiNumber> {
        match self {
            Self::Exception(_) => Some(ApiNumber::EXCEPTION_STATE_CHANGE),
            Self::LoadSymbols(_) => Some(ApiNumber::LOAD_SYMBOLS_STATE_CHANGE),
            Self::CommandString { .. } => Some(ApiNumber::COMMAND_STRING_STATE_CHANGE),
            Self::Other(_) => None,
        }
    }
}

impl StateChange {
    /// A state change carrying `event`, NewState set to match, one CPU, everything else zero.
    /// For `StateEvent::Other` NewState stays 0: set it.
    pub fn new(event: StateEvent) -> Self {
        Self {
            new_state: event.new_state().unwrap_or_default(),
            processor_level: 0,
            processor: 0,
            number_processors: 1,
            header_pad: 0,
            thread: 0,
            program_counter: 0,
            event,
            union_slack: [0; STATE_CHANGE_UNION_LEN],
            control_report: ControlReport::default(),
            data: Bytes::new(),
        }
    }

    /// An exception stop at the exception's address.
    pub fn exception(exception: Exception) -> Self {
        let pc = exception.address;
        Self {
            program_counter: pc,
            ..Self::new(StateEvent::Exception(exception))
        }
    }

    /// A LoadSymbols stop: `path` (without NUL) goes after the structure with a NUL appended, and
    /// PathNameLength counts it (kd.md §3.1, §8 item 10).
    pub fn load_symbols(mut info: LoadSymbols, path: &[u8]) -> Self {
        let mut data = BytesMut::with_capacity(path.len() + 1);
        data.put_slice(path);
        data.put_u8(0);
        info.path_name_length = u32::try_from(data.len()).unwrap_or(u32::MAX);
        Self {
            data: data.freeze(),
            ..Self::new(StateEvent::LoadSymbols(info))
        }
    }

    /// Parses a type-7 payload: the 240-byte structure and whatever follows.
    pub fn parse(payload: &[u8]) -> Result<Self> {
        let (new_state, processor_level, processor, number_processors, header_pad, thread, pc) =
            parse_fixed(
                "DBGKD_ANY_WAIT_STATE_CHANGE",
                STATE_CHANGE_LEN,
                payload,
                |i| (le_u32, le_u16, le_u16, le_u32, le_u32, le_u64, le_u64).parse(i),
            )?;
        let new_state = ApiNumber(new_state);
        let union: StateChangeUnion = array(&payload[UNION_AT..]);
        let event = StateEvent::parse(new_state, &union)?;
        let union_slack = slack_of(&union, |u| event.write(u));
        let control_report = parse_fixed(
            "AMD64_DBGKD_CONTROL_REPORT",
            CONTROL_REPORT_LEN,
            &payload[CONTROL_REPORT_AT..],
            control_report,
        )?;
        Ok(Self {
            new_state,
            processor_level,
            processor,
            number_processors,
            header_pad,
            thread,
            program_counter: pc,
            event,
            union_slack,
            control_report,
            data: Bytes::copy_from_slice(&payload[STATE_CHANGE_LEN..]),
        })
    }

    /// The 0xA0 union bytes as they go on the wire.
    pub fn union_bytes(&self) -> StateChangeUnion {
        compose(&self.union_slack, |u| self.event.write(u))
    }

    /// Sets the slack from a raw union, dropping the bytes `event` owns.
    pub fn set_union_slack(&mut self, raw: StateChangeUnion) {
        self.union_slack = slack_of(&raw, |u| self.event.write(u));
    }

    pub fn encode(&self) -> Bytes {
        let r = &self.control_report;
        let mut out = BytesMut::with_capacity(STATE_CHANGE_LEN + self.data.len());
        out.put_u32_le(self.new_state.0);
        out.put_u16_le(self.processor_level);
        out.put_u16_le(self.processor);
        out.put_u32_le(self.number_processors);
        out.put_u32_le(self.header_pad);
        out.put_u64_le(self.thread);
        out.put_u64_le(self.program_counter);
        out.put_slice(&self.union_bytes());
        out.put_u64_le(r.dr6);
        out.put_u64_le(r.dr7);
        out.put_u32_le(r.eflags);
        out.put_u16_le(r.instruction_count);
        out.put_u16_le(r.report_flags);
        out.put_slice(&r.instruction_stream);
        out.put_u16_le(r.cs);
        out.put_u16_le(r.ds);
        out.put_u16_le(r.es);
        out.put_u16_le(r.fs);
        out.put_slice(&self.data);
        out.freeze()
    }

    pub fn exception_info(&self) -> Option<&Exception> {
        match &self.event {
            StateEvent::Exception(e) => Some(e),
            _ => None,
        }
    }

    /// The LoadSymbols path without its NUL, bounded by PathNameLength and by the bytes present.
    pub fn load_symbols_path(&self) -> Option<&[u8]> {
        let StateEvent::LoadSymbols(info) = &self.event else {
            return None;
        };
        let declared = usize::try_from(info.path_name_length).unwrap_or(usize::MAX);
        let path = &self.data[..declared.min(self.data.len())];
        Some(until_nul(path))
    }

    /// CommandString's two NUL-terminated strings (name, command); a missing second string is
    /// empty.
    pub fn command_strings(&self) -> Option<(&[u8], &[u8])> {
        if !matches!(self.event, StateEvent::CommandString { .. }) {
            return None;
        }
        let name = until_nul(&self.data);
        let rest = self.data.get(name.len() + 1..).unwrap_or_default();
        Some((name, until_nul(rest)))
    }
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// "StateChange Exception code=0x80000003 pc=fffff802c55e3380 cpu=1/2 first_chance=1".
impl fmt::Display for StateChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpu = format!("cpu={}/{}", self.processor, self.number_processors);
        match &self.event {
            StateEvent::Exception(e) => write!(
                f,
                "StateChange Exception code={:#x} pc={:016x} {cpu} first_chance={} params={}",
                e.code,
                self.program_counter,
                e.first_chance,
                e.parameters.len()
            ),
            StateEvent::LoadSymbols(l) => write!(
                f,
                "StateChange {} base={:016x} size={:#x} pc={:016x} {cpu} path=\"{}\"",
                if l.unload != 0 {
                    "UnloadSymbols"
                } else {
                    "LoadSymbols"
                },
                l.base_of_dll,
                l.size_of_image,
                self.program_counter,
                escape(self.load_symbols_path().unwrap_or_default(), 200)
            ),
            StateEvent::CommandString { flags } => {
                let (name, command) = self.command_strings().unwrap_or_default();
                write!(
                    f,
                    "StateChange CommandString flags={flags:#x} pc={:016x} {cpu} name=\"{}\" command=\"{}\"",
                    self.program_counter,
                    escape(name, 100),
                    escape(command, 200)
                )
            }
            StateEvent::Other(_) => write!(
                f,
                "StateChange {} pc={:016x} {cpu}",
                self.new_state, self.program_counter
            ),
        }
    }
}
