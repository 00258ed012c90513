//! One PDB file, opened lazily: the identity is read when the file is accepted; the type table
//! and the name index are each built on their first use and then kept (the [`super::Symbols`]
//! cache keeps the `Pdb` for the life of the process). Each part opens the file itself, so a
//! `Pdb` holds no file handle and is `Send + Sync`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::error::{Result, SymbolError};
use super::identity::{read_pdb_id, PdbId};
use super::names::NameIndex;
use super::types::{Field, TypeTable};

#[derive(Debug)]
pub struct Pdb {
    path: PathBuf,
    id: PdbId,
    types: OnceLock<std::result::Result<Arc<TypeTable>, String>>,
    names: OnceLock<std::result::Result<Arc<NameIndex>, String>>,
}

fn open(path: &Path) -> Result<pdb2::PDB<'static, std::fs::File>> {
    let file = std::fs::File::open(path).map_err(|e| SymbolError::io(path, e))?;
    pdb2::PDB::open(file).map_err(|source| SymbolError::Pdb {
        pdb: path.to_path_buf(),
        what: "the MSF container",
        source,
    })
}

/// A build step that failed once fails the same way on every later use (the file does not
/// change under a running process); the message is kept, the error re-created.
fn again(path: &Path, message: &str) -> SymbolError {
    SymbolError::io(path, std::io::Error::other(message.to_string()))
}

impl Pdb {
    /// Opens `path` and reads its identity (GUID, DBI age). Types and names are not read yet.
    pub fn open(path: &Path) -> Result<Self> {
        let id = read_pdb_id(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            id,
            types: OnceLock::new(),
            names: OnceLock::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's own identity (GUID and DBI age).
    pub fn id(&self) -> &PdbId {
        &self.id
    }

    /// The type table, read on first use.
    pub fn types(&self) -> Result<Arc<TypeTable>> {
        let built = self.types.get_or_init(|| {
            open(&self.path)
                .and_then(|mut pdb| TypeTable::read(&self.path, &mut pdb))
                .map(Arc::new)
                .map_err(|e| e.to_string())
        });
        built.clone().map_err(|m| again(&self.path, &m))
    }

    /// The name/address index, built on first use.
    pub fn names(&self) -> Result<Arc<NameIndex>> {
        let built = self.names.get_or_init(|| {
            open(&self.path)
                .and_then(|mut pdb| NameIndex::read(&self.path, &mut pdb))
                .map(Arc::new)
                .map_err(|e| e.to_string())
        });
        built.clone().map_err(|m| again(&self.path, &m))
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

    /// True when the PDB defines `type_name` (for per-build fallbacks such as
    /// `_KLDR_DATA_TABLE_ENTRY` → `_LDR_DATA_TABLE_ENTRY`).
    pub fn has_type(&self, type_name: &str) -> Result<bool> {
        Ok(self.types()?.find(type_name).is_ok())
    }

    /// RVA of a public or global symbol; an error names the PDB and the symbol.
    pub fn symbol_rva(&self, name: &str) -> Result<u32> {
        self.names()?
            .rva_of(name)
            .ok_or_else(|| SymbolError::SymbolNotFound {
                pdb: self.path.clone(),
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
