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
    open_source(path, file)
}

/// Opens a PDB from `source` after checking its container ([`super::msf::check`]): from then
/// on, nothing `pdb2` reads is larger than the file. `path` names it in errors.
pub fn open_source<S>(path: &Path, mut source: S) -> Result<pdb2::PDB<'static, S>>
where
    S: std::io::Read + std::io::Seek + std::fmt::Debug + Send + 'static,
{
    let malformed = |reason: String| SymbolError::Malformed {
        pdb: path.to_path_buf(),
        reason,
    };
    let len = source
        .seek(std::io::SeekFrom::End(0))
        .map_err(|e| SymbolError::io(path, e))?;
    super::msf::check(&mut source, len).map_err(malformed)?;
    source
        .seek(std::io::SeekFrom::Start(0))
        .map_err(|e| SymbolError::io(path, e))?;
    let mut pdb = pdb2::PDB::open(source).map_err(|source| SymbolError::Pdb {
        pdb: path.to_path_buf(),
        what: "the MSF container",
        source,
    })?;
    if let Ok(Some(dbi)) = pdb.raw_stream(pdb2::StreamIndex(DBI_STREAM)) {
        check_dbi_header(&dbi).map_err(malformed)?;
    }
    Ok(pdb)
}

/// The DBI stream's number in the MSF (llvm.org/docs/PDB/DbiStream.html).
const DBI_STREAM: u16 = 3;
/// The DBI header's length (`DbiStreamHeader`, llvm.org/docs/PDB/DbiStream.html).
const DBI_HEADER_LEN: usize = 64;

/// The DBI header's substream sizes (module info, section contributions, section map, source
/// info, type server map, optional debug header, EC) must be non-negative and fit the stream:
/// `pdb2` adds them as `u32`s to find the optional debug header, which overflows otherwise.
fn check_dbi_header(dbi: &[u8]) -> std::result::Result<(), String> {
    if dbi.len() < DBI_HEADER_LEN {
        return Ok(()); // pdb2 reads an old or empty header itself, with bounds checks
    }
    let size = |at: usize| i32::from_le_bytes([dbi[at], dbi[at + 1], dbi[at + 2], dbi[at + 3]]);
    // ModInfoSize @24, SectionContributionSize @28, SectionMapSize @32, SourceInfoSize @36,
    // TypeServerMapSize @40, OptionalDbgHeaderSize @48, ECSubstreamSize @52.
    let mut total = DBI_HEADER_LEN as u64;
    for at in [24, 28, 32, 36, 40, 48, 52] {
        let n = size(at);
        if n < 0 {
            return Err(format!(
                "the DBI header gives a substream a negative size ({n})"
            ));
        }
        total += n as u64;
    }
    if total > dbi.len() as u64 {
        return Err(format!(
            "the DBI header's substreams add up to {total} bytes, the stream has {}",
            dbi.len()
        ));
    }
    Ok(())
}

/// Runs one step of reading the PDB at `path`, turning a panic of the PDB reader into an error
/// that names the file. The last line of defence only: the container is checked first, the
/// record kinds that `pdb2` mis-sizes are never handed to it, and field lists are parsed here.
/// (A panic still prints its message on stderr through the panic hook.)
pub fn contain<T>(path: &Path, what: &str, step: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(SymbolError::Malformed {
            pdb: path.to_path_buf(),
            reason: format!("the PDB reader failed on {what}: {message}"),
        })
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
            contain(&self.path, "the type stream", || {
                open(&self.path).and_then(|mut pdb| TypeTable::read(&self.path, &mut pdb))
            })
            .map(Arc::new)
            .map_err(|e| e.to_string())
        });
        built.clone().map_err(|m| again(&self.path, &m))
    }

    /// The name/address index, built on first use.
    pub fn names(&self) -> Result<Arc<NameIndex>> {
        let built = self.names.get_or_init(|| {
            contain(&self.path, "the symbols", || {
                open(&self.path).and_then(|mut pdb| NameIndex::read(&self.path, &mut pdb))
            })
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
