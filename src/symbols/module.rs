//! [`ModuleSymbols`]: one module's structure layouts and symbol addresses, whichever source they
//! came from — the module's PDB through the symbol path, or an ISF table from a symbol pack
//! (air-gapped labs, README). Both give the same [`TypeTable`] and [`NameIndex`], so the
//! kernel context, the verifier's reads and symbolization do not care which.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::{Result, SymbolError};
use super::identity::PdbId;
use super::isf::IsfSymbols;
use super::names::NameIndex;
use super::pdbfile::Pdb;
use super::types::{Field, TypeTable};

/// Where a module's symbols came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// The module's PDB, found through the symbol path.
    Pdb,
    /// An ISF table from a symbol pack (`--isf`, or Volatility 3's symbol directories).
    Isf,
    /// None: the module's frames show as `module+0xoff`.
    None,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Pdb => "PDB",
            SourceKind::Isf => "ISF",
            SourceKind::None => "none",
        }
    }
}

/// A module's layouts and symbols.
#[derive(Debug, Clone)]
pub enum ModuleSymbols {
    Pdb(Arc<Pdb>),
    Isf(Arc<IsfSymbols>),
}

impl From<Arc<Pdb>> for ModuleSymbols {
    fn from(pdb: Arc<Pdb>) -> Self {
        ModuleSymbols::Pdb(pdb)
    }
}

impl ModuleSymbols {
    pub fn kind(&self) -> SourceKind {
        match self {
            ModuleSymbols::Pdb(_) => SourceKind::Pdb,
            ModuleSymbols::Isf(_) => SourceKind::Isf,
        }
    }

    /// The PDB file, or the ISF table (`pack.zip!entry` inside a zip).
    pub fn location(&self) -> String {
        match self {
            ModuleSymbols::Pdb(pdb) => pdb.path().display().to_string(),
            ModuleSymbols::Isf(isf) => isf.location().to_string(),
        }
    }

    /// The identity of the PDB the symbols are (or were converted from).
    pub fn id(&self) -> &PdbId {
        match self {
            ModuleSymbols::Pdb(pdb) => pdb.id(),
            ModuleSymbols::Isf(isf) => isf.id(),
        }
    }

    /// The type table, read on first use (a PDB's) or when the table was loaded (an ISF's).
    pub fn types(&self) -> Result<Arc<TypeTable>> {
        match self {
            ModuleSymbols::Pdb(pdb) => pdb.types(),
            ModuleSymbols::Isf(isf) => Ok(isf.types()),
        }
    }

    /// The name/address index.
    pub fn names(&self) -> Result<Arc<NameIndex>> {
        match self {
            ModuleSymbols::Pdb(pdb) => pdb.names(),
            ModuleSymbols::Isf(isf) => Ok(isf.names()),
        }
    }

    /// `sizeof(type_name)`.
    pub fn type_size(&self, type_name: &str) -> Result<u64> {
        self.types()?.size_of(type_name)
    }

    /// A field by dotted path, e.g. `field("_VF_TARGET_DRIVER", "TreeNode.Base.p")`.
    pub fn field(&self, type_name: &str, path: &str) -> Result<Field> {
        self.types()?.field(type_name, path)
    }

    /// Byte offset of a field by dotted path.
    pub fn offset(&self, type_name: &str, path: &str) -> Result<u64> {
        Ok(self.field(type_name, path)?.offset)
    }

    /// True when the source defines `type_name`.
    pub fn has_type(&self, type_name: &str) -> Result<bool> {
        Ok(self.types()?.find(type_name).is_ok())
    }

    /// RVA of a public or global symbol; an error names the source and the symbol.
    pub fn symbol_rva(&self, name: &str) -> Result<u32> {
        self.try_symbol_rva(name)?
            .ok_or_else(|| SymbolError::SymbolNotFound {
                pdb: PathBuf::from(self.location()),
                name: name.to_string(),
            })
    }

    /// RVA of a symbol that may be absent in this build.
    pub fn try_symbol_rva(&self, name: &str) -> Result<Option<u32>> {
        Ok(self.names()?.rva_of(name))
    }

    /// `Function+0xoff` (no `+0x0`) for an RVA, or `None` when no symbol covers it.
    pub fn name_at(&self, rva: u32) -> Result<Option<String>> {
        Ok(self
            .names()?
            .lookup(rva)
            .map(|(name, off)| super::symbolize::with_offset(name, u64::from(off))))
    }
}

/// A module identity a pull asked for ([`super::Symbols::requested`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    pub id: PdbId,
    /// What gave its symbols; `None`: neither the symbol path nor a pack had them.
    pub found: Option<SourceKind>,
}

impl super::Symbols {
    /// A module's symbols from its RSDS record: its PDB through the symbol path, else its ISF
    /// table from a symbol pack. Every identity asked for is remembered ([`Self::requested`]).
    pub fn load_module(&self, rsds: &crate::kernel::PdbInfo) -> Result<ModuleSymbols> {
        self.load_module_id(&PdbId::from_rsds(rsds))
    }

    /// [`Self::load_module`] for an identity.
    pub fn load_module_id(&self, id: &PdbId) -> Result<ModuleSymbols> {
        let result = self.load_module_uncounted(id);
        let mut requested = self.requested.lock().expect("symbol request log lock");
        let answered = result.as_ref().ok().map(ModuleSymbols::kind);
        match requested
            .iter_mut()
            .find(|r| r.id.same_build(id) && r.id.name.eq_ignore_ascii_case(&id.name))
        {
            Some(known) => known.found = known.found.or(answered),
            None => requested.push(Requested {
                id: id.clone(),
                found: answered,
            }),
        }
        result
    }

    /// A module's symbols if this host has them without asking a symbol server: its PDB from
    /// the process cache, directories, stores and caches, else its ISF table from a pack;
    /// `Ok(None)` when only a server on the symbol path may have them. No request leaves the
    /// host, so it is cheap enough to ask while the target is stopped.
    pub fn load_module_without_network(
        &self,
        rsds: &crate::kernel::PdbInfo,
    ) -> Result<Option<ModuleSymbols>> {
        // `Ok(None)`: a server may have it; an error: nothing on the symbol path will.
        let pdb_error = match self.load_without_network(rsds) {
            Ok(Some(pdb)) => return Ok(Some(ModuleSymbols::Pdb(pdb))),
            Ok(None) => None,
            Err(error @ SymbolError::UnsafeName { .. }) => return Err(error),
            Err(error) => Some(error),
        };
        match (self.load_table(&PdbId::from_rsds(rsds)), pdb_error) {
            (Ok(table), _) => Ok(Some(ModuleSymbols::Isf(table))),
            (Err(SymbolError::IsfNotFound { .. }), None) => Ok(None),
            (Err(isf @ SymbolError::IsfNotFound { .. }), Some(pdb)) => {
                Err(SymbolError::NoSymbols {
                    pdb: Box::new(pdb),
                    isf: Box::new(isf),
                })
            }
            (Err(error), _) => Err(error),
        }
    }

    fn load_module_uncounted(&self, id: &PdbId) -> Result<ModuleSymbols> {
        let pdb_error = match self.load_id(id) {
            Ok(pdb) => return Ok(ModuleSymbols::Pdb(pdb)),
            // A name refused as a path is refused as a pack's path too: that is the news.
            Err(error @ SymbolError::UnsafeName { .. }) => return Err(error),
            Err(error) => error,
        };
        match self.load_table(id) {
            Ok(table) => {
                tracing::info!(
                    module = %id,
                    table = table.location(),
                    pdb = %pdb_error,
                    "symbols from an ISF symbol pack"
                );
                Ok(ModuleSymbols::Isf(table))
            }
            // No pack has it: both searches are in the message.
            Err(isf @ SymbolError::IsfNotFound { .. }) => Err(SymbolError::NoSymbols {
                pdb: Box::new(pdb_error),
                isf: Box::new(isf),
            }),
            // A pack has it, but it cannot be used: that is the news.
            Err(isf) => Err(isf),
        }
    }

    /// The ISF table for `id` from the packs in [`super::SymbolOptions::isf`], checked
    /// against `id` (GUID and age, as a PDB is; `--force-symbols` accepts a mismatch).
    pub fn load_table(&self, id: &PdbId) -> Result<Arc<IsfSymbols>> {
        // The name comes from target memory and becomes a path inside the packs.
        if let Some(reason) = super::safe_name::problem(&id.name) {
            return Err(SymbolError::UnsafeName {
                name: super::safe_name::printable(&id.name, 64),
                reason,
            });
        }
        let key = super::resolver::cache_key(id);
        if let Some(table) = self.tables.lock().expect("ISF cache lock").get(&key) {
            return Ok(table.clone());
        }
        let options = self.options();
        let mut search = super::isfpack::Search::default();
        let Some(file) = super::isfpack::find(&options.isf, id, &mut search) else {
            return Err(SymbolError::IsfNotFound {
                name: id.name.clone(),
                file: super::isfpack::table_stem(id),
                looked: search.looked,
            });
        };
        let location = file.location();
        let table = IsfSymbols::parse(&location, &file.read()?, &id.name)?;
        super::identity::check(
            std::path::Path::new(&location),
            id,
            table.id(),
            options.force,
        )?;
        let table = Arc::new(table);
        let mut tables = self.tables.lock().expect("ISF cache lock");
        Ok(tables.entry(key).or_insert(table).clone())
    }

    /// Every module identity [`Self::load_module`] was asked for, in order, whether or not
    /// its symbols were found: what a pull needed.
    pub fn requested(&self) -> Vec<Requested> {
        self.requested
            .lock()
            .expect("symbol request log lock")
            .clone()
    }
}
