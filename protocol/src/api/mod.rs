//! DbgKd API messages carried in KD data packets, both directions, AMD64 (kd.md §2.8, §3).
//!
//! [`Message::parse`] turns a data packet's type and payload into a typed message; every message
//! type has `encode()` giving the payload back. Design rules:
//!
//! * Nothing is lost. Unknown API numbers are plain [`ApiNumber`] values, unknown union layouts are
//!   kept raw (`Other`), unknown packet types become [`Message::Other`].
//! * Byte-exact round trips of real traffic. Each fixed structure keeps its header padding and,
//!   next to the typed union view (`params` / `event`), the union bytes the view does not cover
//!   (`union_slack`). WinDbg sends stack garbage in unused union bytes and Windows echoes it;
//!   targets leave stale ExceptionInformation entries. `encode(parse(bytes)) == bytes` always.
//! * `parse(encode(v)) == v` for values whose `union_slack` is zero wherever the typed view writes
//!   (constructors and `parse` guarantee this; `set_union_slack` enforces it) and whose view is
//!   the one `parse` picks for the API number.
//! * Lengths and counts on the wire are data, not trusted: they are kept as sent, and the
//!   accessors that use them (`text()`, `load_symbols_path()`, …) bound them by the bytes present.
//!   The trailing bytes after each structure are always the message's `data`.

mod constants;
mod debug_io;
mod file_io;
mod manipulate;
mod number;
mod state_change;
mod trace_io;
mod wire;

use std::fmt;

use bytes::Bytes;

pub use constants::*;
pub use debug_io::{DebugIo, DebugIoParams, DebugIoUnion};
pub use file_io::{CreateFileParams, FileIo, FileIoParams, FileIoUnion, FileTransferParams};
pub use manipulate::{
    BusDataParams, ContextExParams, Continue2Params, CustomBreakPointParams, FillMemoryParams,
    InternalBreakPointParams, IoExtendedParams, IoParams, Manipulate, ManipulateParams,
    ManipulateUnion, MemoryParams, MsrParams, QueryMemoryParams, SearchMemoryParams, Version,
    WriteBreakPointParams,
};
pub use number::ApiNumber;
pub use state_change::{
    ControlReport, Exception, LoadSymbols, StateChange, StateChangeUnion, StateEvent,
};
pub use trace_io::{TraceIo, TraceIoParams, TraceIoUnion};

use crate::kd::{PacketType, MAX_PAYLOAD};
use crate::{Error, Result};

/// The payload of one KD data packet, typed by its packet type (kd.md §1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Type 7. Boxed: it is by far the largest message.
    StateChange(Box<StateChange>),
    /// Type 2.
    Manipulate(Manipulate),
    /// Type 3.
    DebugIo(DebugIo),
    /// Type 11.
    FileIo(FileIo),
    /// Type 9.
    TraceIo(TraceIo),
    /// Any other type (STATE_CHANGE32, CONTROL_REQUEST, unknown), payload kept verbatim.
    Other {
        packet_type: PacketType,
        payload: Bytes,
    },
}

impl Message {
    /// Parses a data packet's payload. Fails only if the payload is longer than the 4000-byte
    /// packet maximum, shorter than its fixed structure, or claims more than 15 exception
    /// parameters.
    pub fn parse(packet_type: PacketType, payload: &[u8]) -> Result<Self> {
        if payload.len() > MAX_PAYLOAD {
            return Err(Error::Oversize(payload.len()));
        }
        Ok(match packet_type {
            PacketType::StateChange64 => Self::StateChange(Box::new(StateChange::parse(payload)?)),
            PacketType::StateManipulate => Self::Manipulate(Manipulate::parse(payload)?),
            PacketType::DebugIo => Self::DebugIo(DebugIo::parse(payload)?),
            PacketType::FileIo => Self::FileIo(FileIo::parse(payload)?),
            PacketType::TraceIo => Self::TraceIo(TraceIo::parse(payload)?),
            other => Self::Other {
                packet_type: other,
                payload: Bytes::copy_from_slice(payload),
            },
        })
    }

    /// The payload bytes.
    pub fn encode(&self) -> Bytes {
        match self {
            Self::StateChange(m) => m.encode(),
            Self::Manipulate(m) => m.encode(),
            Self::DebugIo(m) => m.encode(),
            Self::FileIo(m) => m.encode(),
            Self::TraceIo(m) => m.encode(),
            Self::Other { payload, .. } => payload.clone(),
        }
    }

    /// The KD packet type this message travels in.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Self::StateChange(_) => PacketType::StateChange64,
            Self::Manipulate(_) => PacketType::StateManipulate,
            Self::DebugIo(_) => PacketType::DebugIo,
            Self::FileIo(_) => PacketType::FileIo,
            Self::TraceIo(_) => PacketType::TraceIo,
            Self::Other { packet_type, .. } => *packet_type,
        }
    }

    /// The API number / NewState of the message, if it has one.
    pub fn api(&self) -> Option<ApiNumber> {
        match self {
            Self::StateChange(m) => Some(m.new_state),
            Self::Manipulate(m) => Some(m.api),
            Self::DebugIo(m) => Some(m.api),
            Self::FileIo(m) => Some(m.api),
            Self::TraceIo(m) => Some(m.api),
            Self::Other { .. } => None,
        }
    }
}

impl From<StateChange> for Message {
    fn from(value: StateChange) -> Self {
        Self::StateChange(Box::new(value))
    }
}

impl From<Manipulate> for Message {
    fn from(value: Manipulate) -> Self {
        Self::Manipulate(value)
    }
}

impl From<DebugIo> for Message {
    fn from(value: DebugIo) -> Self {
        Self::DebugIo(value)
    }
}

impl From<FileIo> for Message {
    fn from(value: FileIo) -> Self {
        Self::FileIo(value)
    }
}

impl From<TraceIo> for Message {
    fn from(value: TraceIo) -> Self {
        Self::TraceIo(value)
    }
}

/// One line for capture decoders. Manipulate messages print every typed field, since request and
/// reply look alike on the wire; use [`Manipulate::summary`] when the direction is known.
impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StateChange(m) => m.fmt(f),
            Self::Manipulate(m) => m.fmt(f),
            Self::DebugIo(m) => m.fmt(f),
            Self::FileIo(m) => m.fmt(f),
            Self::TraceIo(m) => m.fmt(f),
            Self::Other {
                packet_type,
                payload,
            } => write!(
                f,
                "{} (type {}) len={:#x}",
                packet_type.name(),
                packet_type.to_u16(),
                payload.len()
            ),
        }
    }
}
