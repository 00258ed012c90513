//! DBGKD_DEBUG_IO (packet type 3): DbgPrint output and DbgPrompt input (kd.md §3.9, §2.9).

use std::fmt;

use bytes::Bytes;

use super::constants::DEBUG_IO_LEN;
use super::wire::{compose, encode_io, escape, get_u32, parse_io_head, put_u32, slack_of};
use super::ApiNumber;
use crate::Result;

/// The 8-byte union of DBGKD_DEBUG_IO at 0x08 (kd.md §3.9).
pub type DebugIoUnion = [u8; 8];

/// One DEBUG_IO message: the 16-byte structure and the text after it.
///
/// Lengths are kept as sent: the text is `data` (every byte after the structure), and
/// [`text`](Self::text) bounds it by the declared length. Union bytes a variant does not use are
/// kept in `union_slack` (Windows leaves junk in PrintString's unused second word).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugIo {
    /// 0x3230 PrintString or 0x3231 GetString.
    pub api: ApiNumber,
    /// @0x04.
    pub processor_level: u16,
    /// @0x06.
    pub processor: u16,
    pub params: DebugIoParams,
    pub union_slack: DebugIoUnion,
    /// The text after the 16 bytes (not NUL-terminated for PrintString).
    pub data: Bytes,
}

/// The union, typed by the API number (kd.md §3.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugIoParams {
    /// LengthOfString @0x08.
    PrintString {
        length_of_string: u32,
    },
    /// LengthOfPromptString @0x08, LengthOfStringRead @0x0C. The target sends the prompt with
    /// LengthOfStringRead = the most it accepts; the host answers with the bytes returned.
    GetString {
        length_of_prompt_string: u32,
        length_of_string_read: u32,
    },
    Other(DebugIoUnion),
}

impl DebugIoParams {
    pub fn parse(api: ApiNumber, union: &DebugIoUnion) -> Self {
        match api {
            ApiNumber::PRINT_STRING => Self::PrintString {
                length_of_string: get_u32(union, 0),
            },
            ApiNumber::GET_STRING => Self::GetString {
                length_of_prompt_string: get_u32(union, 0),
                length_of_string_read: get_u32(union, 4),
            },
            _ => Self::Other(*union),
        }
    }

    pub fn write(&self, u: &mut DebugIoUnion) {
        match self {
            Self::PrintString { length_of_string } => put_u32(u, 0, *length_of_string),
            Self::GetString {
                length_of_prompt_string,
                length_of_string_read,
            } => {
                put_u32(u, 0, *length_of_prompt_string);
                put_u32(u, 4, *length_of_string_read);
            }
            Self::Other(raw) => *u = *raw,
        }
    }
}

impl DebugIo {
    /// DbgPrint output, as the target sends it.
    pub fn print_string(text: impl Into<Bytes>) -> Self {
        let text = text.into();
        Self {
            api: ApiNumber::PRINT_STRING,
            processor_level: 0,
            processor: 0,
            params: DebugIoParams::PrintString {
                length_of_string: len32(&text),
            },
            union_slack: [0; 8],
            data: text,
        }
    }

    /// DbgPrompt, as the target sends it: the prompt text and the most input it accepts.
    pub fn get_string(prompt: impl Into<Bytes>, max_read: u32) -> Self {
        let prompt = prompt.into();
        Self {
            api: ApiNumber::GET_STRING,
            processor_level: 0,
            processor: 0,
            params: DebugIoParams::GetString {
                length_of_prompt_string: len32(&prompt),
                length_of_string_read: max_read,
            },
            union_slack: [0; 8],
            data: prompt,
        }
    }

    /// The host's answer to a GetString: the request's header echoed, LengthOfStringRead = the
    /// input length, the input as data (kd.md §3.9). The input is cut to the request's maximum.
    pub fn get_string_reply(request: &DebugIo, input: impl Into<Bytes>) -> Self {
        let mut input = input.into();
        let mut reply = request.clone();
        if let DebugIoParams::GetString {
            length_of_string_read,
            ..
        } = &mut reply.params
        {
            input.truncate(usize::try_from(*length_of_string_read).unwrap_or(usize::MAX));
            *length_of_string_read = len32(&input);
        }
        reply.data = input;
        reply
    }

    pub fn parse(payload: &[u8]) -> Result<Self> {
        let head = parse_io_head("DBGKD_DEBUG_IO", DEBUG_IO_LEN, payload)?;
        let api = ApiNumber(head.api);
        let params = DebugIoParams::parse(api, &head.union);
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
    pub fn set_union_slack(&mut self, raw: DebugIoUnion) {
        self.union_slack = slack_of(&raw, |u| self.params.write(u));
    }

    pub fn union_bytes(&self) -> DebugIoUnion {
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

    /// The printed text: `data` bounded by LengthOfString for PrintString; all of `data`
    /// otherwise (use [`prompt`](Self::prompt) / [`input`](Self::input) for GetString).
    pub fn text(&self) -> &[u8] {
        match self.params {
            DebugIoParams::PrintString { length_of_string } => {
                bounded(&self.data, length_of_string)
            }
            _ => &self.data,
        }
    }

    /// A target GetString's prompt: `data` bounded by LengthOfPromptString.
    pub fn prompt(&self) -> Option<&[u8]> {
        match self.params {
            DebugIoParams::GetString {
                length_of_prompt_string,
                ..
            } => Some(bounded(&self.data, length_of_prompt_string)),
            _ => None,
        }
    }

    /// A host GetString answer's input: `data` bounded by LengthOfStringRead.
    pub fn input(&self) -> Option<&[u8]> {
        match self.params {
            DebugIoParams::GetString {
                length_of_string_read,
                ..
            } => Some(bounded(&self.data, length_of_string_read)),
            _ => None,
        }
    }
}

/// The first `declared` bytes, or all of them when fewer are present.
fn bounded(data: &[u8], declared: u32) -> &[u8] {
    let declared = usize::try_from(declared).unwrap_or(usize::MAX);
    &data[..declared.min(data.len())]
}

/// `PrintString "BD: Boot Debugger Initialized\n"`.
impl fmt::Display for DebugIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.params {
            DebugIoParams::PrintString { .. } => {
                write!(f, "PrintString \"{}\"", escape(self.text(), 400))
            }
            DebugIoParams::GetString {
                length_of_prompt_string,
                length_of_string_read,
            } => write!(
                f,
                "GetString prompt_len={length_of_prompt_string} read_len={length_of_string_read} \
                 text=\"{}\"",
                escape(&self.data, 400)
            ),
            DebugIoParams::Other(_) => {
                write!(f, "DebugIo {} data={:#x}", self.api, self.data.len())
            }
        }
    }
}

fn len32(bytes: &Bytes) -> u32 {
    u32::try_from(bytes.len()).unwrap_or(u32::MAX)
}
