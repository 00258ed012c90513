//! Symbols: PDB type layouts by name, `module!Function+0xoff` names, module identity from the
//! RSDS record, and WinDbg's symbol path (local stores, CAB `.pd_`, `file.ptr`, HTTP symbol
//! servers into a cache in WinDbg's layout). `../shared/spec/symbols.md` has the background.
//! A module whose PDB cannot be had can take its layouts and addresses from an ISF table of a
//! Volatility 3 symbol pack ([`isf`], [`isfpack`]); [`ModuleSymbols`] is either, and
//! [`manifest`] is the list of PDBs an offline lab carries in (`symchk /om`'s format).
//!
//! ```text
//! let symbols = Symbols::new(SymbolOptions::new(Some("srv*~/sym*https://msdl.microsoft.com/download/symbols"))?);
//! let nt = symbols.load_module(&kernel_module.pdb.unwrap())?; // PDB, else ISF pack
//! let off = nt.offset("_KLDR_DATA_TABLE_ENTRY", "DllBase")?;   // 0x30
//! let rva = nt.symbol_rva("MmVerifierData")?;
//! let mut space = AddressSpace::new();
//! space.add("nt", base, size, Some(&nt));
//! space.symbolize(addr)                                     // "nt!IopXxxControlFile+0x607"
//! ```

pub mod cache_dir;
pub mod dt;
pub mod error;
pub mod fieldlist;
pub mod http;
pub mod identity;
pub mod isf;
pub mod isfpack;
pub mod kldr;
pub mod manifest;
pub mod module;
pub mod msf;
pub mod names;
pub mod pdbfile;
pub mod resolver;
pub mod safe_name;
pub mod store;
pub mod symbolize;
pub mod sympath;
pub mod types;

pub use cache_dir::default_cache_dir;
pub use error::{Result, SymbolError};
pub use identity::{read_pdb_id, PdbId};
pub use isf::IsfSymbols;
pub use kldr::module_layout;
pub use module::{ModuleSymbols, Requested, SourceKind};
pub use pdbfile::Pdb;
pub use resolver::{SymbolOptions, Symbols};
pub use symbolize::{module_display_name, AddressSpace};
pub use sympath::{Element, SymbolPath, Upstream};
pub use types::{
    Bitfield, Field, MemberInfo, Qualifiers, RecordInfo, RecordKind, TypeDesc, TypeTable,
};
