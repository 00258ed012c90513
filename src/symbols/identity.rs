//! Module identity: what the target's RSDS record asks for ([`PdbInfo`], read from target memory
//! by `kernel::pe`) against what a PDB file is (its GUID and its **DBI** age — the PDB-stream age
//! can be larger after source indexing, symbols.md §0.3).

use std::fmt;
use std::path::Path;

use super::error::{Result, SymbolError};
use crate::kernel::PdbInfo;

/// A PDB's identity: the key a symbol store files it under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PdbId {
    /// The PDB file name (basename of the RSDS path), e.g. `ntkrnlmp.pdb`.
    pub name: String,
    /// Registry form, upper case: `72E103A8-5CB2-4907-8B76-B2E7C06257B1`.
    pub guid: String,
    /// The RSDS age, which equals the PDB's DBI age.
    pub age: u32,
}

impl PdbId {
    /// What a module's RSDS record asks for. The name is the basename of the recorded path
    /// (split on `\` and `/`); trailing NULs were already removed by `PdbInfo::parse_rsds`.
    pub fn from_rsds(info: &PdbInfo) -> Self {
        Self {
            name: info.file_name().to_string(),
            guid: info.guid.to_ascii_uppercase(),
            age: info.age,
        }
    }

    /// The symbol-store directory: GUID without dashes, then the age in hex without padding.
    pub fn store_key(&self) -> String {
        format!("{}{:X}", self.guid.replace('-', ""), self.age)
    }

    /// `name/KEY/name`, the relative path in a store and under a symbol server URL.
    pub fn store_path(&self) -> String {
        format!("{}/{}/{}", self.name, self.store_key(), self.name)
    }

    /// True when `other` names the same build: equal GUID and age (names are not compared —
    /// the same PDB may be stored under another name).
    pub fn same_build(&self, other: &PdbId) -> bool {
        self.guid.eq_ignore_ascii_case(&other.guid) && self.age == other.age
    }
}

impl fmt::Display for PdbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {{{}}} age {}", self.name, self.guid, self.age)
    }
}

/// Reads the identity of the PDB file at `path`: the GUID from the PDB stream, the age from the
/// DBI stream (falling back to the PDB-stream age only when the DBI stream has none).
pub fn read_pdb_id(path: &Path) -> Result<PdbId> {
    let file = std::fs::File::open(path).map_err(|e| SymbolError::io(path, e))?;
    super::pdbfile::contain(path, "the PDB identity", || read_id_from(path, file))
}

/// [`read_pdb_id`] from any seekable source; `path` names it (and gives the name).
pub fn read_id_from<S>(path: &Path, source: S) -> Result<PdbId>
where
    S: std::io::Read + std::io::Seek + std::fmt::Debug + Send + 'static,
{
    let mut pdb = super::pdbfile::open_source(path, source)?;
    let info = pdb.pdb_information().map_err(|source| SymbolError::Pdb {
        pdb: path.to_path_buf(),
        what: "the PDB information stream",
        source,
    })?;
    let dbi_age = pdb.debug_information().ok().and_then(|d| d.age());
    Ok(PdbId {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        guid: info.guid.to_string().to_ascii_uppercase(),
        age: dbi_age.unwrap_or(info.age),
    })
}

/// Refuses a PDB whose GUID/age differ from what the module asks for, unless `force`.
pub fn check(path: &Path, expected: &PdbId, found: &PdbId, force: bool) -> Result<()> {
    if force || expected.same_build(found) {
        return Ok(());
    }
    Err(SymbolError::Mismatch {
        pdb: path.to_path_buf(),
        expected: expected.to_string(),
        found: found.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_key_and_path() {
        let mut rec = 0x5344_5352u32.to_le_bytes().to_vec();
        rec.extend_from_slice(&[
            0x41, 0x92, 0x25, 0xA6, 0x78, 0x8D, 0x49, 0x07, 0x4C, 0x4C, 0x44, 0x20, 0x50, 0x44,
            0x42, 0x2E,
        ]);
        rec.extend_from_slice(&1u32.to_le_bytes());
        rec.extend_from_slice(b"C:\\build\\obj\\ShowSSEConfig.pdb\0");
        let id = PdbId::from_rsds(&PdbInfo::parse_rsds(&rec).unwrap());
        assert_eq!(id.name, "ShowSSEConfig.pdb");
        assert_eq!(id.store_key(), "A62592418D7807494C4C44205044422E1");
        assert_eq!(
            id.store_path(),
            "ShowSSEConfig.pdb/A62592418D7807494C4C44205044422E1/ShowSSEConfig.pdb"
        );
    }
}
