//! Names: public and global symbols → RVA, and RVA → `Function+0xoff`.
//!
//! Built once per PDB on first use. Private procedures (S_GPROC32/S_LPROC32 from the module
//! streams, with their lengths) win when they cover the address — that is how a `static` function
//! without a public symbol gets its own name. Otherwise the nearest preceding public symbol in
//! the same section names the address, as WinDbg does with public symbols
//! (`nt!PrecedingPublic+0xBIG` — symbols.md §1.2 calls this choice out). C++ public names are
//! undecorated to their qualified name without arguments (`google_breakpad::C::f`).

use std::collections::HashMap;
use std::path::Path;

use pdb2::{FallibleIterator, SymbolData};

use super::error::{Result, SymbolError};

/// The symbol kinds names come from, the only ones handed to `pdb2`'s parser (others, like
/// S_CALLEES, make it reserve room for as many entries as a count claims): S_PUB32(_ST),
/// S_LDATA32(_ST), S_GDATA32(_ST), S_LPROC32(_ST), S_GPROC32(_ST), S_LPROC32_ID, S_GPROC32_ID,
/// S_LPROC32_DPC(_ID) (cvinfo.h `SYM_ENUM_e`).
const NAME_KINDS: [u16; 14] = [
    0x110e, 0x1009, 0x110c, 0x1007, 0x110d, 0x1008, 0x110f, 0x100a, 0x1110, 0x100b, 0x1146, 0x1147,
    0x1155, 0x1156,
];

#[derive(Debug, Clone)]
struct Proc {
    start: u32,
    end: u32,
    name: u32,
}

#[derive(Debug, Clone, Copy)]
struct Public {
    rva: u32,
    name: u32,
    function: bool,
}

/// The name and address index of one PDB.
#[derive(Debug, Default)]
pub struct NameIndex {
    strings: Vec<String>,
    /// Public and global-data symbols by (raw, decorated) name.
    by_name: HashMap<String, u32>,
    /// Sorted by start, non-overlapping after construction (first wins).
    procs: Vec<Proc>,
    /// Sorted by RVA, one per RVA.
    publics: Vec<Public>,
    /// `[start, end)` of each section.
    sections: Vec<(u32, u32)>,
    /// Whether the PDB had private procedure records at all.
    private: bool,
}

/// WinDbg-style display name of a public symbol: MSVC-decorated names are undecorated without
/// arguments or return type; everything else is kept.
pub fn display_name(raw: &str) -> String {
    if raw.starts_with('?') {
        if let Ok(name) = msvc_demangler::demangle(raw, msvc_demangler::DemangleFlags::NAME_ONLY) {
            return name;
        }
    }
    raw.to_string()
}

impl NameIndex {
    pub fn read<S: pdb2::Source<'static> + 'static>(
        path: &Path,
        pdb: &mut pdb2::PDB<'static, S>,
    ) -> Result<Self> {
        let err = |what: &'static str| {
            let pdb = path.to_path_buf();
            move |source| SymbolError::Pdb { pdb, what, source }
        };
        let map = pdb.address_map().map_err(err("the section map"))?;
        let mut ix = NameIndex::default();
        if let Ok(Some(sections)) = pdb.sections() {
            ix.sections = sections
                .iter()
                .map(|s| {
                    let len = s.virtual_size.max(s.size_of_raw_data);
                    (s.virtual_address, s.virtual_address.saturating_add(len))
                })
                .collect();
        }
        let globals = pdb.global_symbols().map_err(err("the globals stream"))?;
        let mut it = globals.iter();
        while let Some(sym) = it.next().map_err(err("a global symbol"))? {
            if !NAME_KINDS.contains(&sym.raw_kind()) {
                continue;
            }
            match sym.parse() {
                Ok(SymbolData::Public(p)) => {
                    let Some(rva) = p.offset.to_rva(&map) else {
                        continue;
                    };
                    let raw = p.name.to_string();
                    ix.by_name.entry(raw.to_string()).or_insert(rva.0);
                    let name = ix.intern(display_name(&raw));
                    ix.publics.push(Public {
                        rva: rva.0,
                        name,
                        function: p.function || p.code,
                    });
                }
                Ok(SymbolData::Data(d)) => {
                    if let Some(rva) = d.offset.to_rva(&map) {
                        ix.by_name
                            .entry(d.name.to_string().into_owned())
                            .or_insert(rva.0);
                    }
                }
                _ => {}
            }
        }
        let dbi = pdb.debug_information().map_err(err("the DBI stream"))?;
        let mut modules = dbi.modules().map_err(err("the module list"))?;
        let mut procs = Vec::new();
        while let Some(module) = modules.next().map_err(err("a module record"))? {
            let Ok(Some(info)) = pdb.module_info(&module) else {
                continue;
            };
            let Ok(mut symbols) = info.symbols() else {
                continue;
            };
            while let Ok(Some(sym)) = symbols.next() {
                if !NAME_KINDS.contains(&sym.raw_kind()) {
                    continue;
                }
                if let Ok(SymbolData::Procedure(p)) = sym.parse() {
                    let Some(rva) = p.offset.to_rva(&map) else {
                        continue;
                    };
                    let name = p.name.to_string().into_owned();
                    if p.global {
                        ix.by_name.entry(name.clone()).or_insert(rva.0);
                    }
                    procs.push((rva.0, p.len, name));
                }
            }
        }
        ix.private = !procs.is_empty();
        procs.sort_by_key(|(start, len, _)| (*start, std::cmp::Reverse(*len)));
        for (start, len, name) in procs {
            if let Some(last) = ix.procs.last() {
                if last.start == start {
                    continue;
                }
            }
            let name = ix.intern(name);
            ix.procs.push(Proc {
                start,
                end: start.saturating_add(len.max(1)),
                name,
            });
        }
        // One public per RVA: functions before data, then the first seen.
        ix.publics
            .sort_by_key(|p| (p.rva, std::cmp::Reverse(p.function)));
        ix.publics.dedup_by_key(|p| p.rva);
        Ok(ix)
    }

    /// The index of a source that has only names and RVAs (an ISF symbol pack's `symbols`): no
    /// sections, no sizes, no function flags. An address takes the name of the nearest
    /// preceding symbol, as with a public-only PDB; where two names share an RVA, the one that
    /// sorts first names it.
    pub fn from_symbols(symbols: impl IntoIterator<Item = (String, u32)>) -> Self {
        let mut ix = NameIndex::default();
        let mut sorted: Vec<(u32, String)> =
            symbols.into_iter().map(|(name, rva)| (rva, name)).collect();
        sorted.sort_unstable();
        for (rva, raw) in sorted {
            ix.by_name.entry(raw.clone()).or_insert(rva);
            if ix.publics.last().is_some_and(|p| p.rva == rva) {
                continue;
            }
            let name = ix.intern(display_name(&raw));
            ix.publics.push(Public {
                rva,
                name,
                function: false,
            });
        }
        ix
    }

    fn intern(&mut self, s: String) -> u32 {
        self.strings.push(s);
        (self.strings.len() - 1) as u32
    }

    /// RVA of the public or global symbol `name` (decorated names as stored; private function
    /// names as the compiler wrote them).
    pub fn rva_of(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// Number of public symbols and procedures indexed.
    pub fn counts(&self) -> (usize, usize) {
        (self.publics.len(), self.procs.len())
    }

    pub fn has_private_procedures(&self) -> bool {
        self.private
    }

    fn section_of(&self, rva: u32) -> Option<usize> {
        self.sections.iter().position(|&(s, e)| s <= rva && rva < e)
    }

    /// The symbol covering `rva` and the offset into it.
    pub fn lookup(&self, rva: u32) -> Option<(&str, u32)> {
        let i = self.procs.partition_point(|p| p.start <= rva);
        if i > 0 {
            let p = &self.procs[i - 1];
            if rva < p.end {
                return Some((&self.strings[p.name as usize], rva - p.start));
            }
        }
        let i = self.publics.partition_point(|p| p.rva <= rva);
        if i == 0 {
            return None;
        }
        let p = self.publics[i - 1];
        if !self.sections.is_empty() && self.section_of(p.rva) != self.section_of(rva) {
            return None;
        }
        Some((&self.strings[p.name as usize], rva - p.rva))
    }
}
