//! Reading kernel facts through target memory: the debugger data block (KDBG), the loaded-module
//! list and each module's PDB identity (kd.md §4).
//!
//! Everything reads through the [`Memory`] trait, implemented by [`Session`] and by test fakes.

pub mod arch;
pub mod boot;
pub mod kdbg;
pub mod modules;
pub mod pe;

use std::future::Future;

use crate::session::{self, ReadOutcome, Session};
pub use boot::{BootIdentity, SharedDataLayout};
pub use kdbg::{find_kdbg, read_kdbg, Kdbg};
pub use modules::{
    first_image, walk_modules, FirstImage, Module, ModuleLayout, ModuleList, MAX_MODULES,
};
pub use pe::{pdb_info_from_file, read_pdb_info, PdbInfo};

/// Target virtual memory.
pub trait Memory {
    /// Reads `len` bytes at `address`; unreadable parts are reported, not errors.
    fn read(
        &mut self,
        address: u64,
        len: usize,
    ) -> impl Future<Output = session::Result<ReadOutcome>>;
}

impl Memory for Session {
    fn read(
        &mut self,
        address: u64,
        len: usize,
    ) -> impl Future<Output = session::Result<ReadOutcome>> {
        self.read_virtual(address, len)
    }
}

/// Why kernel facts could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Session(#[from] session::Error),
    #[error("cannot read {what} at {address:#x}: the memory is not readable")]
    Unreadable { what: String, address: u64 },
    #[error("{0}")]
    Invalid(String),
}

impl From<KernelError> for session::Error {
    /// Memory that cannot be used is target data this host cannot use (exit 4, README "Exit
    /// codes"); a failing link stays what it is.
    fn from(value: KernelError) -> Self {
        match value {
            KernelError::Session(e) => e,
            other => session::Error::TargetData(other.to_string()),
        }
    }
}

/// Serialises addresses as `0x…` strings: JSON numbers lose precision above 2^53.
pub mod serde_hex {
    pub fn u64<S: serde::Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{value:#x}"))
    }

    /// An optional address: `null` when absent.
    pub fn opt_u64<S: serde::Serializer>(value: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => u64(v, s),
            None => s.serialize_none(),
        }
    }
}

pub type Result<T, E = KernelError> = std::result::Result<T, E>;

/// Reads exactly `len` bytes or fails naming `what`.
pub async fn read_exact<M: Memory>(
    mem: &mut M,
    address: u64,
    len: usize,
    what: &str,
) -> Result<Vec<u8>> {
    let out = mem.read(address, len).await?;
    match out.unreadable.first() {
        None => Ok(out.bytes),
        Some(range) => Err(KernelError::Unreadable {
            what: what.to_string(),
            address: range.start,
        }),
    }
}

/// Reads the UTF-16 text of a UNICODE_STRING (`len` bytes at `buffer`), at most `max_bytes`;
/// an empty or NULL string is empty.
pub async fn read_utf16<M: Memory>(
    mem: &mut M,
    buffer: u64,
    len: usize,
    max_bytes: usize,
    what: &str,
) -> Result<String> {
    let len = len.min(max_bytes) & !1;
    if len == 0 || buffer == 0 {
        return Ok(String::new());
    }
    let bytes = read_exact(mem, buffer, len, what).await?;
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    Ok(escape_controls(&String::from_utf16_lossy(&units)))
}

/// A name from target memory never carries control characters to a terminal or a file: each is
/// written as `<1b>` (no `\` or `/`, so the name splits as before).
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("<{:02x}>", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

pub async fn read_u64<M: Memory>(mem: &mut M, address: u64, what: &str) -> Result<u64> {
    let bytes = read_exact(mem, address, 8, what).await?;
    Ok(le_u64(&bytes, 0))
}

pub(crate) fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A fake [`Memory`] for tests: sparse mapped regions, everything else unreadable.
#[cfg(test)]
pub(crate) mod fake {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Default)]
    pub struct FakeMemory {
        pub regions: BTreeMap<u64, Vec<u8>>,
        pub reads: usize,
    }

    impl FakeMemory {
        pub fn map(&mut self, address: u64, bytes: impl Into<Vec<u8>>) {
            self.regions.insert(address, bytes.into());
        }

        fn byte(&self, address: u64) -> Option<u8> {
            let (base, bytes) = self.regions.range(..=address).next_back()?;
            bytes.get((address - base) as usize).copied()
        }
    }

    impl Memory for FakeMemory {
        async fn read(&mut self, address: u64, len: usize) -> session::Result<ReadOutcome> {
            self.reads += 1;
            let mut out = ReadOutcome {
                address,
                bytes: vec![0; len],
                unreadable: vec![],
            };
            for i in 0..len {
                let a = address + i as u64;
                match self.byte(a) {
                    Some(b) => out.bytes[i] = b,
                    None => match out.unreadable.last_mut() {
                        Some(r) if r.end == a => r.end = a + 1,
                        _ => out.unreadable.push(a..a + 1),
                    },
                }
            }
            Ok(out)
        }
    }
}
