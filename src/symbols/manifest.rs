//! The symbol manifest an air-gapped lab carries out: the PDBs a pull needs, one a line, in the
//! format of `symchk /om` manifests, so that either tool reads the other's (`symchk /im
//! needed.txt /s srv*DIR*URL` fetches what `kdleak symbols manifest` listed).
//!
//! A line is `NAME,KEY,1`: the PDB's file name; its GUID as 32 upper-case hex digits (Data1,
//! Data2, Data3 as numbers, Data4 as bytes — the symbol-store key's digits) followed by the age
//! in lower-case hex; then `1`. Microsoft documents how to use manifests ("Using a Manifest File
//! with SymChk", learn.microsoft.com/windows-hardware/drivers/debugger/using-a-manifest-file-with-symchk)
//! but not the line format; this is the format Microsoft's own `pdblister` writes "compatible
//! with symchk", citing symchk's `SymChkCheckFiles` format string
//! `"%s,%08X%04X%04X%02X%02X%02X%02X%02X%02X%02X%02X%x,1"` (github.com/microsoft/pdblister,
//! `src/main.rs` `get_pdb`). The third field's meaning is not documented: kdleak writes `1` and
//! ignores it when reading.

use std::fmt::Write as _;
use std::path::Path;

use super::error::{Result, SymbolError};
use super::identity::PdbId;
use super::isf::registry_guid;

/// The most lines a manifest may have (a whole `symchk /om /r C:\Windows` is ~10,000).
const MAX_LINES: usize = 1_000_000;

/// One manifest line for `id`.
pub fn line(id: &PdbId) -> String {
    format!("{},{}{:x},1", id.name, id.guid.replace('-', ""), id.age)
}

/// A manifest: one line per PDB, duplicates dropped, in the order given.
pub fn render(ids: &[PdbId]) -> String {
    let mut out = String::new();
    let mut seen = Vec::new();
    for id in ids {
        let text = line(id);
        if seen.contains(&text) {
            continue;
        }
        let _ = writeln!(out, "{text}");
        seen.push(text);
    }
    out
}

/// Reads a manifest written by kdleak or `symchk /om`: blank lines are skipped; anything else
/// that is not `NAME,GUIDAGE,N` is an error naming the line.
pub fn parse(path: &Path, text: &str) -> Result<Vec<PdbId>> {
    let mut ids = Vec::new();
    for (number, raw) in text.lines().enumerate() {
        let line = raw.trim().trim_start_matches('\u{feff}');
        if line.is_empty() {
            continue;
        }
        if number >= MAX_LINES {
            return Err(bad(path, number, format!("more than {MAX_LINES} lines")));
        }
        ids.push(parse_line(line).map_err(|reason| bad(path, number, reason))?);
    }
    Ok(ids)
}

fn bad(path: &Path, number: usize, reason: String) -> SymbolError {
    SymbolError::BadManifest {
        path: path.to_path_buf(),
        line: number + 1,
        reason,
    }
}

fn parse_line(line: &str) -> std::result::Result<PdbId, String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let [name, key, _kind] = fields[..] else {
        return Err(format!(
            "`{line}`: expected NAME,GUIDAGE,1 (e.g. ntkrnlmp.pdb,3844DBB920174967BE7AA4A2C20430FA2,1)"
        ));
    };
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        return Err(format!("`{name}` is not a PDB file name"));
    }
    let guid = key
        .get(..32)
        .and_then(registry_guid)
        .ok_or_else(|| format!("`{key}` does not start with a GUID's 32 hex digits"))?;
    let age_hex = &key[32..];
    let age = u32::from_str_radix(age_hex, 16)
        .map_err(|_| format!("`{key}`: the age after the GUID (`{age_hex}`) is not hex"))?;
    Ok(PdbId {
        name: name.to_string(),
        guid,
        age,
    })
}

/// What fetching one manifest line gave.
#[derive(Debug)]
pub struct Fetched {
    pub id: PdbId,
    /// The PDB file (in the first downstream store of `srv*DIR*URL`), or why there is none.
    pub result: Result<std::path::PathBuf>,
}

/// Finds every PDB of a manifest through `symbols`' symbol path, downloading what its symbol
/// servers have into its downstream stores (as `symchk /im MANIFEST /s srv*DIR*URL` does).
/// A file already in a store is not fetched again; each file is checked against its GUID/age.
pub fn fetch(symbols: &super::Symbols, ids: &[PdbId]) -> Vec<Fetched> {
    ids.iter()
        .map(|id| Fetched {
            id: id.clone(),
            result: symbols.locate(id),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nt() -> PdbId {
        PdbId {
            name: "ntkrnlmp.pdb".into(),
            guid: "3844DBB9-2017-4967-BE7A-A4A2C20430FA".into(),
            age: 0x2a,
        }
    }

    #[test]
    fn lines_are_symchks() {
        // The age in lower-case hex after the upper-case GUID, as symchk's format string has it.
        assert_eq!(
            line(&nt()),
            "ntkrnlmp.pdb,3844DBB920174967BE7AA4A2C20430FA2a,1"
        );
        let text = render(&[nt(), nt()]);
        assert_eq!(text.lines().count(), 1);
        assert_eq!(parse(Path::new("m"), &text).unwrap(), vec![nt()]);
    }

    #[test]
    fn symchk_lines_with_other_spellings_are_read() {
        let text = "\u{feff}ntkrnlmp.pdb,3844dbb920174967be7aa4a2c20430fa2A,1\r\n\r\nhal.pdb,0123456789ABCDEF0123456789ABCDEF1,2\n";
        let ids = parse(Path::new("m"), text).unwrap();
        assert_eq!(ids[0], nt());
        assert_eq!(ids[1].name, "hal.pdb");
        assert_eq!(ids[1].age, 1);
    }

    #[test]
    fn a_bad_line_is_named() {
        for (text, says) in [
            ("ntkrnlmp.pdb\n", "expected NAME,GUIDAGE,1"),
            ("ntkrnlmp.pdb,XYZ,1\n", "32 hex digits"),
            (
                "ntkrnlmp.pdb,3844DBB920174967BE7AA4A2C20430FA,1\n",
                "not hex",
            ),
            (
                "../x.pdb,3844DBB920174967BE7AA4A2C20430FA1,1\n",
                "not a PDB file name",
            ),
        ] {
            let err = parse(Path::new("needed.txt"), &format!("\n{text}")).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            let err = err.to_string();
            assert!(
                err.starts_with("needed.txt:2: ") && err.contains(says),
                "{err}"
            );
        }
    }
}
