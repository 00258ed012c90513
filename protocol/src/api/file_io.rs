//! DBGKD_FILE_IO (packet type 11): `.kdfiles` driver replacement, target asks the host for files
//! (kd.md §3.9, §2.9).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use nom::number::complete::{le_u32, le_u64};
use nom::Parser;

use super::constants::{FILE_IO_LEN, STATUS_NO_SUCH_FILE};
use super::wire::{array, compose, escape, parse_fixed, put_u32, put_u64, slack_of, PResult};
use super::ApiNumber;
use crate::Result;

/// The 56-byte union of DBGKD_FILE_IO at 0x08 (kd.md §3.9; `ReserveSpace[7]`).
pub type FileIoUnion = [u8; 56];

/// One FILE_IO message: the 64-byte structure and the data after it (the UTF-16 file name of
/// CreateFile, file contents of Read/WriteFile). Union bytes a variant does not use stay in
/// `union_slack`, as for [`Manipulate`](super::Manipulate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIo {
    /// 0x3430 CreateFile … 0x3433 CloseFile.
    pub api: ApiNumber,
    /// @0x04: NTSTATUS of the host's answer.
    pub status: u32,
    pub params: FileIoParams,
    pub union_slack: FileIoUnion,
    pub data: Bytes,
}

/// The union, typed by the API number (kd.md §3.9; offsets are packet offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileIoParams {
    CreateFile(CreateFileParams),
    ReadFile(FileTransferParams),
    WriteFile(FileTransferParams),
    /// Handle @0x08.
    CloseFile {
        handle: u64,
    },
    Other(FileIoUnion),
}

/// DBGKD_CREATE_FILE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CreateFileParams {
    /// @0x08.
    pub desired_access: u32,
    /// @0x0C.
    pub file_attributes: u32,
    /// @0x10.
    pub share_access: u32,
    /// @0x14.
    pub create_disposition: u32,
    /// @0x18.
    pub create_options: u32,
    /// @0x20: set by the host's answer.
    pub handle: u64,
    /// @0x28: the file length, set by the host's answer.
    pub length: u64,
}

/// DBGKD_READ_FILE / DBGKD_WRITE_FILE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileTransferParams {
    /// @0x08.
    pub handle: u64,
    /// @0x10.
    pub offset: u64,
    /// @0x18.
    pub length: u32,
}

fn create_file(i: &[u8]) -> PResult<'_, FileIoParams> {
    (
        le_u32, le_u32, le_u32, le_u32, le_u32, le_u32, le_u64, le_u64,
    )
        .map(
            |(
                desired_access,
                file_attributes,
                share_access,
                create_disposition,
                create_options,
                _pad,
                handle,
                length,
            )| {
                FileIoParams::CreateFile(CreateFileParams {
                    desired_access,
                    file_attributes,
                    share_access,
                    create_disposition,
                    create_options,
                    handle,
                    length,
                })
            },
        )
        .parse(i)
}

fn transfer(i: &[u8]) -> PResult<'_, FileTransferParams> {
    (le_u64, le_u64, le_u32)
        .map(|(handle, offset, length)| FileTransferParams {
            handle,
            offset,
            length,
        })
        .parse(i)
}

impl FileIoParams {
    pub fn parse(api: ApiNumber, union: &FileIoUnion) -> Self {
        let i: &[u8] = union;
        let parsed = match api {
            ApiNumber::CREATE_FILE => create_file(i),
            ApiNumber::READ_FILE => transfer.map(Self::ReadFile).parse(i),
            ApiNumber::WRITE_FILE => transfer.map(Self::WriteFile).parse(i),
            ApiNumber::CLOSE_FILE => le_u64.map(|handle| Self::CloseFile { handle }).parse(i),
            _ => Ok((i, Self::Other(*union))),
        };
        parsed
            .map(|(_, params)| params)
            .unwrap_or(Self::Other(*union))
    }

    pub fn write(&self, u: &mut FileIoUnion) {
        match self {
            Self::CreateFile(c) => {
                put_u32(u, 0x00, c.desired_access);
                put_u32(u, 0x04, c.file_attributes);
                put_u32(u, 0x08, c.share_access);
                put_u32(u, 0x0C, c.create_disposition);
                put_u32(u, 0x10, c.create_options);
                put_u64(u, 0x18, c.handle);
                put_u64(u, 0x20, c.length);
            }
            Self::ReadFile(t) | Self::WriteFile(t) => {
                put_u64(u, 0x00, t.handle);
                put_u64(u, 0x08, t.offset);
                put_u32(u, 0x10, t.length);
            }
            Self::CloseFile { handle } => put_u64(u, 0x00, *handle),
            Self::Other(raw) => *u = *raw,
        }
    }
}

impl FileIo {
    pub fn new(api: ApiNumber, params: FileIoParams) -> Self {
        Self {
            api,
            status: 0,
            params,
            union_slack: [0; 56],
            data: Bytes::new(),
        }
    }

    /// A target's CreateFile for `name`, sent as UTF-16LE with a terminating NUL.
    pub fn create_file(params: CreateFileParams, name: &str) -> Self {
        let mut data = BytesMut::with_capacity(2 * name.len() + 2);
        for unit in name.encode_utf16().chain(std::iter::once(0)) {
            data.put_u16_le(unit);
        }
        Self {
            data: data.freeze(),
            ..Self::new(ApiNumber::CREATE_FILE, FileIoParams::CreateFile(params))
        }
    }

    /// The host's refusal of a CreateFile (no replacement driver): the request echoed with
    /// Status = STATUS_NO_SUCH_FILE and no data (kd.md §2.9).
    pub fn refuse(request: &FileIo) -> Self {
        Self::reply_to(request, STATUS_NO_SUCH_FILE, Bytes::new())
    }

    /// A host answer: the request's structure echoed, `status`, `data` after it.
    pub fn reply_to(request: &FileIo, status: u32, data: impl Into<Bytes>) -> Self {
        Self {
            status,
            data: data.into(),
            ..request.clone()
        }
    }

    pub fn parse(payload: &[u8]) -> Result<Self> {
        let (api, status) = parse_fixed("DBGKD_FILE_IO", FILE_IO_LEN, payload, |i| {
            (le_u32, le_u32).parse(i)
        })?;
        let api = ApiNumber(api);
        let union: FileIoUnion = array(&payload[8..]);
        let params = FileIoParams::parse(api, &union);
        Ok(Self {
            api,
            status,
            params,
            union_slack: slack_of(&union, |u| params.write(u)),
            data: Bytes::copy_from_slice(&payload[FILE_IO_LEN..]),
        })
    }

    /// Sets the slack from a raw union, dropping the bytes `params` owns.
    pub fn set_union_slack(&mut self, raw: FileIoUnion) {
        self.union_slack = slack_of(&raw, |u| self.params.write(u));
    }

    pub fn union_bytes(&self) -> FileIoUnion {
        compose(&self.union_slack, |u| self.params.write(u))
    }

    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(FILE_IO_LEN + self.data.len());
        out.put_u32_le(self.api.0);
        out.put_u32_le(self.status);
        out.put_slice(&self.union_bytes());
        out.put_slice(&self.data);
        out.freeze()
    }

    /// CreateFile's name: `data` read as UTF-16LE up to the first NUL (or the end; an odd last
    /// byte is ignored), decoded lossily. `None` for other APIs.
    pub fn file_name(&self) -> Option<String> {
        if !matches!(self.params, FileIoParams::CreateFile(_)) {
            return None;
        }
        let units: Vec<u16> = self
            .data
            .chunks_exact(2)
            .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
            .take_while(|&unit| unit != 0)
            .collect();
        Some(String::from_utf16_lossy(&units))
    }
}

impl fmt::Display for FileIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.api)?;
        match &self.params {
            FileIoParams::CreateFile(c) => write!(
                f,
                " \"{}\" access={:#x} disposition={} handle={:#x} length={:#x}",
                escape(self.file_name().unwrap_or_default().as_bytes(), 300),
                c.desired_access,
                c.create_disposition,
                c.handle,
                c.length
            )?,
            FileIoParams::ReadFile(t) | FileIoParams::WriteFile(t) => write!(
                f,
                " handle={:#x} offset={:#x} len={:#x}",
                t.handle, t.offset, t.length
            )?,
            FileIoParams::CloseFile { handle } => write!(f, " handle={handle:#x}")?,
            FileIoParams::Other(_) => {}
        }
        write!(f, " status={:#x}", self.status)?;
        if !self.data.is_empty() {
            write!(f, " data={:#x}", self.data.len())?;
        }
        Ok(())
    }
}
