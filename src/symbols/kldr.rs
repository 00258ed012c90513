//! The loaded-module entry layout from the kernel's types (its PDB's or ISF table's):
//! `_KLDR_DATA_TABLE_ENTRY` (Windows 8+) or, where they lack it (Windows 7),
//! `_LDR_DATA_TABLE_ENTRY`, whose prefix has the same fields.

use super::error::Result;
use super::types::TypeTable;
use crate::kernel::ModuleLayout;

/// Offsets of the `PsLoadedModuleList` entry fields the module walk reads, by name.
pub fn module_layout(nt: &TypeTable) -> Result<ModuleLayout> {
    let ty = if nt.find("_KLDR_DATA_TABLE_ENTRY").is_ok() {
        "_KLDR_DATA_TABLE_ENTRY"
    } else {
        "_LDR_DATA_TABLE_ENTRY"
    };
    let at = |path: &str| nt.field(ty, path).map(|f| f.offset as usize);
    let full = nt.field(ty, "FullDllName")?;
    let base = nt.field(ty, "BaseDllName")?;
    Ok(ModuleLayout {
        flink: at("InLoadOrderLinks.Flink")?,
        dll_base: at("DllBase")?,
        size_of_image: at("SizeOfImage")?,
        full_dll_name: full.offset as usize,
        base_dll_name: base.offset as usize,
        unicode_string_buffer: nt.field("_UNICODE_STRING", "Buffer")?.offset as usize,
        read_len: (full.offset + full.size).max(base.offset + base.size) as usize,
    })
}
