//! Address → text exactly as WinDbg prints a stack frame: `module!Function+0xoff` (lower-case
//! hex, no arguments, `+0x0` omitted), `module+0xoff` when the module has no symbol there (or no
//! PDB), and the raw address (`0xfffff880`0447d634`, WinDbg's 64-bit form) outside every module.

use std::sync::Arc;

use super::module::ModuleSymbols;
use super::names::NameIndex;
use super::pdbfile::Pdb;

/// What names addresses in a module: a PDB, or a module's symbols from either source.
pub trait AddressNames {
    /// The module's name index; `None` when it cannot be built.
    fn address_names(&self) -> Option<Arc<NameIndex>>;
}

impl AddressNames for Pdb {
    fn address_names(&self) -> Option<Arc<NameIndex>> {
        self.names().ok()
    }
}

impl AddressNames for ModuleSymbols {
    fn address_names(&self) -> Option<Arc<NameIndex>> {
        self.names().ok()
    }
}

/// `name+0xoff`, or `name` alone at offset 0.
pub fn with_offset(name: &str, offset: u64) -> String {
    if offset == 0 {
        name.to_string()
    } else {
        format!("{name}+{offset:#x}")
    }
}

/// WinDbg's module name for an image name: the file name without its extension, and `nt` for
/// the kernel (`ntoskrnl.exe`, `ntkrnlmp.exe`, `ntkrnlpa.exe`, `ntkrpamp.exe`).
pub fn module_display_name(image_name: &str) -> String {
    let file = image_name.rsplit(['\\', '/']).next().unwrap_or(image_name);
    let stem = match file.rfind('.') {
        Some(dot) if dot > 0 => &file[..dot],
        _ => file,
    };
    match stem.to_ascii_lowercase().as_str() {
        "ntoskrnl" | "ntkrnlmp" | "ntkrnlpa" | "ntkrpamp" => "nt".to_string(),
        // The name comes from target memory: control characters are shown escaped.
        _ => super::safe_name::printable(stem, 256),
    }
}

/// The raw form WinDbg prints for an address no module covers.
pub fn raw_address(address: u64) -> String {
    if address > u64::from(u32::MAX) {
        format!("0x{:08x}`{:08x}", address >> 32, address & 0xffff_ffff)
    } else {
        format!("0x{address:08x}")
    }
}

struct Loaded {
    name: String,
    base: u64,
    size: u64,
    names: Option<Arc<NameIndex>>,
}

/// The modules of one target with their symbols; built once per stop (or once per run), then
/// symbolizes any number of addresses. Each module's address index is built once (in its `Pdb`
/// or ISF table).
#[derive(Default)]
pub struct AddressSpace {
    modules: Vec<Loaded>,
}

impl AddressSpace {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a module. `name` is the display name (see [`module_display_name`]); `symbols` is
    /// `None` for a module without usable symbols. Symbols whose index cannot be built count as
    /// none.
    pub fn add<S: AddressNames + ?Sized>(
        &mut self,
        name: &str,
        base: u64,
        size: u64,
        symbols: Option<&S>,
    ) {
        let names = symbols.and_then(AddressNames::address_names);
        let at = self.modules.partition_point(|m| m.base < base);
        self.modules.insert(
            at,
            Loaded {
                name: name.to_string(),
                base,
                size,
                names,
            },
        );
    }

    /// Symbolizes one address.
    pub fn symbolize(&self, address: u64) -> String {
        let i = self.modules.partition_point(|m| m.base <= address);
        if i == 0 {
            return raw_address(address);
        }
        let m = &self.modules[i - 1];
        let offset = address - m.base;
        if offset >= m.size {
            return raw_address(address);
        }
        let symbol = u32::try_from(offset)
            .ok()
            .and_then(|rva| m.names.as_ref()?.lookup(rva));
        match symbol {
            Some((function, off)) => {
                format!("{}!{}", m.name, with_offset(function, u64::from(off)))
            }
            None => with_offset(&m.name, offset),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(with_offset("f", 0), "f");
        assert_eq!(with_offset("f", 0x358), "f+0x358");
        assert_eq!(module_display_name("ntoskrnl.exe"), "nt");
        assert_eq!(
            module_display_name("\\SystemRoot\\System32\\drivers\\myfault.sys"),
            "myfault"
        );
        assert_eq!(raw_address(0xfffff8800447d634), "0xfffff880`0447d634");
        assert_eq!(module_display_name("evil\u{1b}[2J.sys"), "evil<1b>[2J");
        let mut space = AddressSpace::new();
        space.add("myfault", 0x1000, 0x100, None::<&Pdb>);
        assert_eq!(space.symbolize(0x1010), "myfault+0x10");
        assert_eq!(space.symbolize(0x1000), "myfault");
        assert_eq!(space.symbolize(0x1100), "0x00001100");
    }
}
