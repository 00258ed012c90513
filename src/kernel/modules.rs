//! Walking PsLoadedModuleList (kd.md §4.3): name, base and size from each KLDR entry, bounded and
//! cycle-checked because the target may be stopped mid-update.

use std::collections::HashSet;

use super::pe::{read_pdb_info, PdbInfo};
use super::{le_u16, le_u32, le_u64, read_exact, read_u64, KernelError, Memory, Result};

/// Where the fields of a `PsLoadedModuleList` entry are: taken from the kernel's PDB
/// (`_KLDR_DATA_TABLE_ENTRY`, or `_LDR_DATA_TABLE_ENTRY` on Windows 7) by
/// `symbols::module_layout`, never hard-coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleLayout {
    /// `InLoadOrderLinks.Flink`.
    pub flink: usize,
    pub dll_base: usize,
    pub size_of_image: usize,
    pub full_dll_name: usize,
    pub base_dll_name: usize,
    /// `Buffer` inside `_UNICODE_STRING`.
    pub unicode_string_buffer: usize,
    /// Bytes of an entry that cover every field above.
    pub read_len: usize,
}

/// Most entries followed (kd.md §4.3).
pub const MAX_MODULES: usize = 4096;
/// Longest module name read, in bytes of UTF-16.
const MAX_NAME_BYTES: usize = 1024;

/// One loaded module.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Module {
    /// BaseDllName, e.g. `ntoskrnl.exe`.
    pub name: String,
    /// FullDllName, e.g. `\SystemRoot\system32\ntoskrnl.exe`.
    pub full_name: String,
    #[serde(serialize_with = "super::serde_hex::u64")]
    pub base: u64,
    pub size: u32,
    /// Address of the KLDR_DATA_TABLE_ENTRY.
    #[serde(serialize_with = "super::serde_hex::u64")]
    pub entry: u64,
    pub pdb: Option<PdbInfo>,
    /// Why `pdb` is missing, when it is not simply absent from the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pdb_error: Option<String>,
}

impl Module {
    pub fn end(&self) -> u64 {
        self.base.wrapping_add(u64::from(self.size))
    }
}

/// The walk's result; `problem` says why it stopped early, if it did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModuleList {
    pub modules: Vec<Module>,
    pub complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

async fn read_unicode_string<M: Memory>(
    mem: &mut M,
    entry: &[u8],
    at: usize,
    layout: &ModuleLayout,
) -> Result<String> {
    let len = le_u16(entry, at) as usize;
    let buffer = le_u64(entry, at + layout.unicode_string_buffer);
    super::read_utf16(mem, buffer, len, MAX_NAME_BYTES, "module name").await
}

/// Walks the list whose head is at `head`, reading each module's PDB identity as well.
pub async fn walk_modules<M: Memory>(
    mem: &mut M,
    head: u64,
    layout: &ModuleLayout,
) -> Result<ModuleList> {
    let mut modules = Vec::new();
    let mut seen = HashSet::new();
    let mut problem = None;
    let mut entry = read_u64(mem, head, "PsLoadedModuleList").await?;
    loop {
        if entry == head {
            break;
        }
        if modules.len() >= MAX_MODULES {
            problem = Some(format!("stopped after {MAX_MODULES} modules"));
            break;
        }
        if entry == 0 || !seen.insert(entry) {
            problem = Some(format!(
                "the list loops or breaks at {entry:#x} (the target may be stopped mid-update)"
            ));
            break;
        }
        let raw = match read_exact(mem, entry, layout.read_len, "module entry").await {
            Ok(raw) => raw,
            Err(KernelError::Unreadable { address, .. }) => {
                problem = Some(format!(
                    "module entry at {entry:#x} unreadable at {address:#x}"
                ));
                break;
            }
            Err(e) => return Err(e),
        };
        let base = le_u64(&raw, layout.dll_base);
        let size = le_u32(&raw, layout.size_of_image);
        let name =
            name_or_note(read_unicode_string(mem, &raw, layout.base_dll_name, layout).await)?;
        let full_name =
            name_or_note(read_unicode_string(mem, &raw, layout.full_dll_name, layout).await)?;
        let (pdb, pdb_error) = match read_pdb_info(mem, base, size).await {
            Ok(pdb) => (pdb, None),
            Err(KernelError::Session(e)) => return Err(e.into()),
            Err(e) => (None, Some(e.to_string())),
        };
        modules.push(Module {
            name,
            full_name,
            base,
            size,
            entry,
            pdb,
            pdb_error,
        });
        entry = le_u64(&raw, layout.flink);
    }
    Ok(ModuleList {
        complete: problem.is_none(),
        modules,
        problem,
    })
}

/// Bytes of the first entry searched by [`first_image`]: more than any x64 loader entry (0xA0
/// bytes on Windows 10/11, kd.md §4.3), so the search does not depend on the layout.
const ENTRY_SEARCH_LEN: usize = 0x100;
/// Candidate pointers tried as image bases before giving up.
const MAX_IMAGE_CANDIDATES: usize = 8;
/// Start of the x64 kernel half of the address space: DllBase is a kernel address.
const KERNEL_SPACE: u64 = 0xFFFF_8000_0000_0000;

/// An image found through the first entry of a module list, before any PDB is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstImage {
    /// Address of the first entry (the head's Flink).
    pub entry: u64,
    /// Offset in the entry of the field that leads to the image (DllBase, to be confirmed).
    pub field: usize,
    pub base: u64,
    pub pdb: PdbInfo,
}

/// The image the first entry of the list at `head` describes (ntoskrnl.exe on every Windows):
/// the first page-aligned kernel address in the entry where a PE image with an RSDS record
/// starts. Used when no KDBG gives the kernel base (a block kept encoded, kd.md §4.1,
/// stops-and-unloads.md §4). No entry layout is assumed: the caller checks, once the kernel's PDB
/// gives `_KLDR_DATA_TABLE_ENTRY`, that the field found is DllBase.
pub async fn first_image<M: Memory>(mem: &mut M, head: u64) -> Result<FirstImage> {
    let entry = read_u64(mem, head, "PsLoadedModuleList").await?;
    if entry == head || entry == 0 {
        return Err(KernelError::Invalid(format!(
            "the module list at {head:#x} is empty"
        )));
    }
    let read = mem.read(entry, ENTRY_SEARCH_LEN).await?;
    let bytes = read.readable_prefix();
    if bytes.len() < 8 {
        return Err(KernelError::Unreadable {
            what: "the first module entry".into(),
            address: entry,
        });
    }
    let mut tried = 0;
    for field in (0..bytes.len() / 8).map(|i| i * 8) {
        let value = le_u64(bytes, field);
        if value < KERNEL_SPACE || value & 0xFFF != 0 || value == entry || value == head {
            continue;
        }
        if tried == MAX_IMAGE_CANDIDATES {
            break;
        }
        tried += 1;
        match read_pdb_info(mem, value, 0).await {
            Ok(Some(pdb)) => {
                return Ok(FirstImage {
                    entry,
                    field,
                    base: value,
                    pdb,
                })
            }
            Err(KernelError::Session(e)) => return Err(KernelError::Session(e)),
            Ok(None) | Err(_) => {}
        }
    }
    Err(KernelError::Invalid(format!(
        "no field of the first module entry at {entry:#x} leads to a PE image with a debug \
         record ({tried} candidates tried)"
    )))
}

/// An unreadable name becomes a placeholder; transport errors still fail the walk.
fn name_or_note(result: Result<String>) -> Result<String> {
    match result {
        Ok(name) => Ok(name),
        Err(KernelError::Unreadable { address, .. }) => {
            Ok(format!("<name unreadable at {address:#x}>"))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::fake::FakeMemory;
    use crate::kernel::pe::synthetic_image;

    const HEAD: u64 = 0xfffff800_00100000;

    /// The x64 entry layout of Windows 10/11 (kd.md §4.3), as a test's own choice of layout.
    const LAYOUT: ModuleLayout = ModuleLayout {
        flink: 0,
        dll_base: 0x30,
        size_of_image: 0x40,
        full_dll_name: 0x48,
        base_dll_name: 0x58,
        unicode_string_buffer: 8,
        read_len: 0x68,
    };

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    fn entry(next: u64, base: u64, size: u32, name_at: u64, name: &str) -> Vec<u8> {
        let mut e = vec![0u8; LAYOUT.read_len];
        e[0..8].copy_from_slice(&next.to_le_bytes());
        e[LAYOUT.dll_base..][..8].copy_from_slice(&base.to_le_bytes());
        e[LAYOUT.size_of_image..][..4].copy_from_slice(&size.to_le_bytes());
        let len = (name.len() * 2) as u16;
        for at in [LAYOUT.base_dll_name, LAYOUT.full_dll_name] {
            e[at..at + 2].copy_from_slice(&len.to_le_bytes());
            e[at + 2..at + 4].copy_from_slice(&len.to_le_bytes());
            e[at + 8..at + 16].copy_from_slice(&name_at.to_le_bytes());
        }
        e
    }

    /// A list of `names` at 0x...200000 + i * 0x1000, images at 0x...400000 + i * 0x10000.
    fn fixture(names: &[&str], last_next: Option<u64>) -> FakeMemory {
        let mut mem = FakeMemory::default();
        let at = |i: usize| 0xfffff800_00200000 + i as u64 * 0x1000;
        mem.map(
            HEAD,
            [at(0).to_le_bytes(), at(names.len() - 1).to_le_bytes()].concat(),
        );
        for (i, name) in names.iter().enumerate() {
            let next = if i + 1 == names.len() {
                last_next.unwrap_or(HEAD)
            } else {
                at(i + 1)
            };
            let base = 0xfffff800_00400000 + i as u64 * 0x10000;
            mem.map(at(i), entry(next, base, 0x400, at(i) + 0x800, name));
            mem.map(at(i) + 0x800, utf16(name));
            mem.map(
                base,
                synthetic_image([i as u8; 16], i as u32 + 1, &format!("C:\\x\\{name}.pdb")),
            );
        }
        mem
    }

    #[tokio::test]
    async fn walks_names_bases_and_pdbs() {
        let mut mem = fixture(&["ntoskrnl.exe", "hal.dll", "kd.dll"], None);
        let list = walk_modules(&mut mem, HEAD, &LAYOUT).await.unwrap();
        assert!(list.complete, "{:?}", list.problem);
        let names: Vec<_> = list.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["ntoskrnl.exe", "hal.dll", "kd.dll"]);
        assert_eq!(list.modules[1].base, 0xfffff800_00410000);
        assert_eq!(list.modules[1].end(), 0xfffff800_00410400);
        let pdb = list.modules[2].pdb.as_ref().unwrap();
        assert_eq!(pdb.file_name(), "kd.dll.pdb");
        assert_eq!(pdb.age, 3);
    }

    #[tokio::test]
    async fn the_first_image_is_found_without_the_entry_layout() {
        let mut mem = fixture(&["ntoskrnl.exe", "hal.dll"], None);
        let first = first_image(&mut mem, HEAD).await.unwrap();
        assert_eq!(first.entry, 0xfffff800_00200000);
        assert_eq!(first.field, LAYOUT.dll_base);
        assert_eq!(first.base, 0xfffff800_00400000);
        assert_eq!(first.pdb.file_name(), "ntoskrnl.exe.pdb");
        // An entry whose pointers lead to no image.
        let mut empty = FakeMemory::default();
        empty.map(HEAD, [0xfffff800_00200000u64.to_le_bytes(); 2].concat());
        empty.map(
            0xfffff800_00200000,
            entry(HEAD, 0xfffff800_00900000, 0x400, 0, "x"),
        );
        let err = first_image(&mut empty, HEAD).await.unwrap_err();
        assert!(err.to_string().contains("no field"), "{err}");
        // An empty list.
        let mut none = FakeMemory::default();
        none.map(HEAD, [HEAD.to_le_bytes(); 2].concat());
        let err = first_image(&mut none, HEAD).await.unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
    }

    #[tokio::test]
    async fn a_cycle_stops_the_walk() {
        let first = 0xfffff800_00200000;
        let mut mem = fixture(&["a.sys", "b.sys"], Some(first));
        let list = walk_modules(&mut mem, HEAD, &LAYOUT).await.unwrap();
        assert!(!list.complete);
        assert_eq!(list.modules.len(), 2);
        assert!(list.problem.unwrap().contains("loops"));
    }

    #[tokio::test]
    async fn an_unreadable_entry_ends_the_walk_with_a_note() {
        let mut mem = fixture(&["a.sys"], Some(0xfffff800_dead0000));
        let list = walk_modules(&mut mem, HEAD, &LAYOUT).await.unwrap();
        assert_eq!(list.modules.len(), 1);
        assert!(list.problem.unwrap().contains("unreadable"));
    }
}
