//! DBGKD_TRACE_IO (packet type 9): ETW/WMI trace data from the target (kd.md §3.9).

use std::fmt;

use bytes::Bytes;

use super::constants::TRACE_IO_LEN;
use super::wire::{compose, encode_io, get_u32, parse_io_head, put_u32, slack_of};
use super::ApiNumber;
use crate::Result;

/// The 56-byte union at 0x08 (`ReserveSpace[7]`).
pub type TraceIoUnion = [u8; 56];

/// One TRACE_IO message: the 64-byte structure and the trace data after it. Only PrintTrace is
/// known; the host merely ACKs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceIo {
    /// 0x3330 PrintTrace.
    pub api: ApiNumber,
    /// @0x04.
    pub processor_level: u16,
    /// @0x06.
    pub processor: u16,
    pub params: TraceIoParams,
    pub union_slack: TraceIoUnion,
    pub data: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceIoParams {
    /// LengthOfData @0x08.
    PrintTrace {
        length_of_data: u32,
    },
    Other(TraceIoUnion),
}

impl TraceIoParams {
    pub fn parse(api: ApiNumber, union: &TraceIoUnion) -> Self {
        match api {
            ApiNumber::PRINT_TRACE => Self::PrintTrace {
                length_of_data: get_u32(union, 0),
            },
            _ => Self::Other(*union),
        }
    }

    pub fn write(&self, u: &mut TraceIoUnion) {
        match self {
            Self::PrintTrace { length_of_data } => put_u32(u, 0, *length_of_data),
            Self::Other(raw) => *u = *raw,
        }
    }
}

impl TraceIo {
    pub fn print_trace(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Self {
            api: ApiNumber::PRINT_TRACE,
            processor_level: 0,
            processor: 0,
            params: TraceIoParams::PrintTrace {
                length_of_data: u32::try_from(data.len()).unwrap_or(u32::MAX),
            },
            union_slack: [0; 56],
            data,
        }
    }

    pub fn parse(payload: &[u8]) -> Result<Self> {
        let head = parse_io_head("DBGKD_TRACE_IO", TRACE_IO_LEN, payload)?;
        let api = ApiNumber(head.api);
        let params = TraceIoParams::parse(api, &head.union);
        Ok(Self {
            api,
            processor_level: head.processor_level,
            processor: head.processor,
            params,
            union_slack: slack_of(&head.union, |u| params.write(u)),
            data: head.data,
        })
    }

    /// Sets the slack from a raw union, dropping the bytes `params` owns.
    pub fn set_union_slack(&mut self, raw: TraceIoUnion) {
        self.union_slack = slack_of(&raw, |u| self.params.write(u));
    }

    pub fn union_bytes(&self) -> TraceIoUnion {
        compose(&self.union_slack, |u| self.params.write(u))
    }

    pub fn encode(&self) -> Bytes {
        encode_io(
            self.api.0,
            self.processor_level,
            self.processor,
            &self.union_bytes(),
            &self.data,
        )
    }
}

impl fmt::Display for TraceIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.params {
            TraceIoParams::PrintTrace { length_of_data } => write!(
                f,
                "PrintTrace len={length_of_data:#x} data={:#x}",
                self.data.len()
            ),
            TraceIoParams::Other(_) => {
                write!(f, "TraceIo {} data={:#x}", self.api, self.data.len())
            }
        }
    }
}
