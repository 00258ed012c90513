//! The loaded-module entry layout from the kernel PDB — what replaces the stopgap constants in
//! `kernel::version_facts` once the module walk takes its offsets from here.
//! `_KLDR_DATA_TABLE_ENTRY` (Windows 8+) or, where the PDB lacks it (Windows 7),
//! `_LDR_DATA_TABLE_ENTRY`, whose prefix has the same fields.

use super::error::Result;
use super::pdbfile::Pdb;

/// Offsets of the `PsLoadedModuleList` entry fields the module walk reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KldrLayout {
    pub flink: u64,
    pub dll_base: u64,
    pub entry_point: u64,
    pub size_of_image: u64,
    pub full_dll_name: u64,
    pub base_dll_name: u64,
    /// `Buffer` inside `_UNICODE_STRING`.
    pub unicode_string_buffer: u64,
    /// Bytes of an entry that cover every field above.
    pub read_len: u64,
}

impl KldrLayout {
    pub fn from_pdb(nt: &Pdb) -> Result<Self> {
        let ty = if nt.has_type("_KLDR_DATA_TABLE_ENTRY")? {
            "_KLDR_DATA_TABLE_ENTRY"
        } else {
            "_LDR_DATA_TABLE_ENTRY"
        };
        let f = |path: &str| nt.offset(ty, path);
        let unicode = nt.field("_UNICODE_STRING", "Buffer")?;
        let full = nt.field(ty, "FullDllName")?;
        let base = nt.field(ty, "BaseDllName")?;
        Ok(Self {
            flink: f("InLoadOrderLinks.Flink")?,
            dll_base: f("DllBase")?,
            entry_point: f("EntryPoint")?,
            size_of_image: f("SizeOfImage")?,
            full_dll_name: full.offset,
            base_dll_name: base.offset,
            unicode_string_buffer: unicode.offset,
            read_len: (full.offset + full.size).max(base.offset + base.size),
        })
    }
}
