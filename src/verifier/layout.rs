//! Named access to kernel structures: every offset and size comes from the kernel's symbols
//! (its PDB, or an ISF table of a symbol pack), read through the target's memory.

use crate::kernel::{self, Memory};
use crate::symbols::{Field, ModuleSymbols};

use super::error::{Result, VerifierError};

/// The kernel's symbols positioned at the kernel's load address.
pub struct Nt<'a> {
    pub pdb: &'a ModuleSymbols,
    pub kern_base: u64,
}

impl<'a> Nt<'a> {
    pub fn new(pdb: &'a ModuleSymbols, kern_base: u64) -> Self {
        Self { pdb, kern_base }
    }

    /// The address of a kernel global (a public symbol).
    pub fn symbol(&self, name: &str) -> Result<u64> {
        self.try_symbol(name)?
            .ok_or_else(|| VerifierError::MissingSymbol(name.to_string()))
    }

    pub fn try_symbol(&self, name: &str) -> Result<Option<u64>> {
        Ok(self
            .pdb
            .try_symbol_rva(name)
            .map_err(|e| VerifierError::Symbols(e.to_string()))?
            .map(|rva| self.kern_base + u64::from(rva)))
    }

    pub fn field(&self, ty: &str, path: &str) -> Result<Field> {
        self.pdb
            .field(ty, path)
            .map_err(|e| VerifierError::Symbols(e.to_string()))
    }

    pub fn offset(&self, ty: &str, path: &str) -> Result<u64> {
        Ok(self.field(ty, path)?.offset)
    }

    pub fn has_field(&self, ty: &str, path: &str) -> bool {
        self.pdb.field(ty, path).is_ok()
    }

    pub fn has_type(&self, ty: &str) -> bool {
        self.pdb.has_type(ty).unwrap_or(false)
    }

    pub fn size(&self, ty: &str) -> Result<u64> {
        self.pdb
            .type_size(ty)
            .map_err(|e| VerifierError::Symbols(e.to_string()))
    }

    /// Reads a whole `ty` at `address`.
    pub async fn read<M: Memory>(
        &self,
        mem: &mut M,
        ty: &'static str,
        address: u64,
    ) -> Result<Struct<'_, 'a>> {
        let size = self.size(ty)? as usize;
        let bytes = read(mem, address, size, ty).await?;
        Ok(Struct {
            nt: self,
            ty,
            address,
            bytes,
        })
    }

    /// Views bytes already read (e.g. one slot of a page) as a `ty` at `address`.
    pub fn view(&self, ty: &'static str, address: u64, bytes: Vec<u8>) -> Struct<'_, 'a> {
        Struct {
            nt: self,
            ty,
            address,
            bytes,
        }
    }
}

/// One structure read from the target.
pub struct Struct<'n, 'a> {
    nt: &'n Nt<'a>,
    pub ty: &'static str,
    pub address: u64,
    pub bytes: Vec<u8>,
}

impl Struct<'_, '_> {
    /// An integer or pointer field by name (bitfields masked and shifted).
    pub fn get(&self, path: &str) -> Result<u64> {
        let field = self.nt.field(self.ty, path)?;
        value(&self.bytes, &field).ok_or_else(|| VerifierError::Corrupt {
            what: format!("{}.{path}", self.ty),
            address: self.address,
            why: "field lies outside the structure read".into(),
        })
    }

    /// A field that older or newer builds may not have.
    pub fn get_opt(&self, path: &str) -> Option<u64> {
        self.nt
            .field(self.ty, path)
            .ok()
            .and_then(|field| value(&self.bytes, &field))
    }

    /// The target address of a field (for LIST_ENTRY heads and embedded structures).
    pub fn address_of(&self, path: &str) -> Result<u64> {
        Ok(self.address + self.nt.offset(self.ty, path)?)
    }
}

/// Decodes a field of up to 8 bytes.
pub fn value(bytes: &[u8], field: &Field) -> Option<u64> {
    let start = usize::try_from(field.offset).ok()?;
    let size = usize::try_from(field.size).ok()?.min(8);
    let raw = bytes.get(start..start.checked_add(size)?)?;
    let mut wide = [0u8; 8];
    wide[..size].copy_from_slice(raw);
    let whole = u64::from_le_bytes(wide);
    Some(match &field.bitfield {
        Some(bits) => {
            let width = u32::from(bits.width);
            let mask = if width >= 64 {
                u64::MAX
            } else {
                (1u64 << width) - 1
            };
            (whole >> bits.position) & mask
        }
        None => whole,
    })
}

/// Reads exactly `len` bytes, or fails naming what was being read.
pub async fn read<M: Memory>(mem: &mut M, address: u64, len: usize, what: &str) -> Result<Vec<u8>> {
    kernel::read_exact(mem, address, len, what)
        .await
        .map_err(VerifierError::from)
}

pub async fn read_u64<M: Memory>(mem: &mut M, address: u64, what: &str) -> Result<u64> {
    let bytes = read(mem, address, 8, what).await?;
    Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
}

pub async fn read_u32<M: Memory>(mem: &mut M, address: u64, what: &str) -> Result<u32> {
    let bytes = read(mem, address, 4, what).await?;
    Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
}
