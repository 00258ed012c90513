//! Finding a module's ISF table in symbol packs: directories and zip files laid out as
//! Volatility 3 lays them out, `windows/<pdb name>/<GUID>-<AGE>.json.xz` (also `.json` and
//! `.json.gz`), and Volatility's own symbol directories when Volatility is installed.
//!
//! Volatility 3 (2.28.2, `framework/constants/__init__.py` `SYMBOL_BASEPATHS`, `CACHE_PATH`,
//! `ISF_EXTENSIONS`; `framework/symbols/windows/pdbutil.py`) reads tables from
//! `volatility3/symbols/`, `volatility3/framework/symbols/` and the user cache
//! `$XDG_CACHE_HOME/volatility3/symbols` (`~/.cache/…`; `%APPDATA%\volatility3\symbols` on
//! Windows), and writes the tables it converts to `windows/<pdb>/<GUID>-<AGE>.json.xz` there;
//! packs (`windows.zip`) go into those directories as they are. [`default_locations`] finds the
//! same directories of the Volatility installations it can see.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::{Result, SymbolError};
use super::identity::PdbId;
use super::store::child;

/// The largest table read (decompressed). A real kernel's table is 3–7 MB (symbols.md §5.5 —
/// the shipped ISF files); a pack entry claiming more is refused before it fills memory.
pub const MAX_TABLE_BYTES: u64 = 256 << 20;
/// Directory entries looked at when listing a pack directory for zip files.
const MAX_DIR_ENTRIES: usize = 10_000;
/// Entries of one zip file looked at (Volatility's `windows.zip` has a few thousand).
const MAX_ZIP_ENTRIES: usize = 1_000_000;

/// The file extensions of a table, in Volatility's order of preference (`ISF_EXTENSIONS`,
/// less `.json.bz2`, which kdleak does not decompress).
const EXTENSIONS: [&str; 3] = [".json", ".json.xz", ".json.gz"];

/// Where a table was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableFile {
    File(PathBuf),
    /// An entry of a zip file.
    Zipped {
        zip: PathBuf,
        entry: String,
    },
}

impl TableFile {
    /// `path`, or `pack.zip!entry` (Volatility's `jar:` URLs name zip entries the same way).
    pub fn location(&self) -> String {
        match self {
            TableFile::File(path) => path.display().to_string(),
            TableFile::Zipped { zip, entry } => format!("{}!{entry}", zip.display()),
        }
    }

    fn name(&self) -> &str {
        match self {
            TableFile::File(path) => path.file_name().and_then(|n| n.to_str()).unwrap_or(""),
            TableFile::Zipped { entry, .. } => entry.rsplit('/').next().unwrap_or(entry),
        }
    }

    /// The table's JSON, decompressed by its extension, at most [`MAX_TABLE_BYTES`].
    pub fn read(&self) -> Result<Vec<u8>> {
        let location = self.location();
        let bad = |reason: String| SymbolError::Isf {
            location: location.clone(),
            reason,
        };
        let raw = match self {
            TableFile::File(path) => {
                let file = std::fs::File::open(path).map_err(|e| SymbolError::io(path, e))?;
                read_bounded(file).map_err(|e| bad(e.to_string()))?
            }
            TableFile::Zipped { zip, entry } => {
                let file = std::fs::File::open(zip).map_err(|e| SymbolError::io(zip, e))?;
                let mut archive =
                    zip::ZipArchive::new(file).map_err(|e| bad(format!("not a zip file: {e}")))?;
                let member = archive
                    .by_name(entry)
                    .map_err(|e| bad(format!("cannot open the entry: {e}")))?;
                if member.size() > MAX_TABLE_BYTES {
                    return Err(bad(format!(
                        "the entry is {} bytes, more than the {MAX_TABLE_BYTES} a table may have",
                        member.size()
                    )));
                }
                read_bounded(member).map_err(|e| bad(e.to_string()))?
            }
        };
        let name = self.name().to_ascii_lowercase();
        if name.ends_with(".xz") {
            let mut out = Bounded::default();
            lzma_rs::xz_decompress(&mut &raw[..], &mut out)
                .map_err(|e| bad(format!("not xz data: {e}")))?;
            Ok(out.bytes)
        } else if name.ends_with(".gz") {
            read_bounded(flate2::read::GzDecoder::new(&raw[..]))
                .map_err(|e| bad(format!("not gzip data: {e}")))
        } else {
            Ok(raw)
        }
    }
}

fn too_large() -> std::io::Error {
    std::io::Error::other(format!(
        "more than {MAX_TABLE_BYTES} bytes: not a symbol table kdleak reads"
    ))
}

fn read_bounded(reader: impl Read) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(MAX_TABLE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_TABLE_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// A sink that refuses to grow past [`MAX_TABLE_BYTES`] (an xz bomb stops there).
#[derive(Default)]
struct Bounded {
    bytes: Vec<u8>,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() as u64 + buf.len() as u64 > MAX_TABLE_BYTES {
            return Err(too_large());
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `GUID-AGE`, the file name Volatility gives a table (`pdbutil.py`: `guid.upper() + "-" +
/// str(age)`, the GUID without dashes, the age in decimal).
pub fn table_stem(id: &PdbId) -> String {
    format!(
        "{}-{}",
        id.guid.replace('-', "").to_ascii_uppercase(),
        id.age
    )
}

/// What one search saw.
#[derive(Debug, Default)]
pub struct Search {
    pub looked: Vec<String>,
}

/// Finds the table for `id` in `locations` (directories or zip files), first match wins.
pub fn find(locations: &[PathBuf], id: &PdbId, search: &mut Search) -> Option<TableFile> {
    locations.iter().find_map(|location| {
        let found = if location.is_dir() {
            find_in_dir(location, id)
        } else {
            find_in_zip(location, id)
        };
        if found.is_none() {
            search.looked.push(location.display().to_string());
        }
        found
    })
}

fn with_extensions(dir: &Path, stem: &str) -> Option<PathBuf> {
    EXTENSIONS
        .iter()
        .find_map(|ext| child(dir, &format!("{stem}{ext}")).filter(|p| p.is_file()))
}

/// `DIR/windows/NAME/STEM.ext`, `DIR/NAME/STEM.ext`, `DIR/STEM.ext`, then the zip files in
/// `DIR` and `DIR/*/`.
fn find_in_dir(dir: &Path, id: &PdbId) -> Option<TableFile> {
    let stem = table_stem(id);
    let in_dirs = [
        child(dir, "windows").and_then(|d| child(&d, &id.name)),
        child(dir, &id.name),
        Some(dir.to_path_buf()),
    ];
    if let Some(path) = in_dirs
        .into_iter()
        .flatten()
        .find_map(|d| with_extensions(&d, &stem))
    {
        return Some(TableFile::File(path));
    }
    zips_in(dir)
        .into_iter()
        .find_map(|zip| find_in_zip(&zip, id))
}

fn zips_in(dir: &Path) -> Vec<PathBuf> {
    let mut zips = Vec::new();
    let mut subdirs = Vec::new();
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    for entry in entries.take(MAX_DIR_ENTRIES) {
        let path = entry.path();
        if path.is_dir() {
            subdirs.push(path);
        } else if is_zip(&path) {
            zips.push(path);
        }
    }
    zips.sort();
    subdirs.sort();
    for sub in subdirs {
        let entries = std::fs::read_dir(&sub).into_iter().flatten().flatten();
        let mut inner: Vec<PathBuf> = entries
            .take(MAX_DIR_ENTRIES)
            .map(|e| e.path())
            .filter(|p| is_zip(p))
            .collect();
        inner.sort();
        zips.extend(inner);
    }
    zips
}

fn is_zip(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
}

/// An entry ending in `NAME/STEM.ext` (Volatility's match for packs), or named `STEM.ext`.
fn find_in_zip(zip: &Path, id: &PdbId) -> Option<TableFile> {
    let file = std::fs::File::open(zip).ok()?;
    let archive = match zip::ZipArchive::new(file) {
        Ok(archive) => archive,
        Err(error) => {
            tracing::debug!(zip = %zip.display(), %error, "not a readable zip file");
            return None;
        }
    };
    let stem = table_stem(id).to_ascii_lowercase();
    let name = id.name.to_ascii_lowercase();
    let wanted: Vec<(String, String)> = EXTENSIONS
        .iter()
        .map(|ext| (format!("{name}/{stem}{ext}"), format!("{stem}{ext}")))
        .collect();
    let names: Vec<&str> = archive.file_names().take(MAX_ZIP_ENTRIES).collect();
    for (in_dir, alone) in &wanted {
        let hit = names.iter().find(|entry| {
            let lower = entry.to_ascii_lowercase();
            lower.ends_with(&format!("/{in_dir}")) || lower == *in_dir || lower == *alone
        });
        if let Some(entry) = hit {
            return Some(TableFile::Zipped {
                zip: zip.to_path_buf(),
                entry: entry.to_string(),
            });
        }
    }
    None
}

/// Volatility 3's symbol directories on this machine that exist, in Volatility's order: each
/// installed package's `volatility3/symbols` and `volatility3/framework/symbols`, then the user
/// cache's `volatility3/symbols`.
///
/// Packages are looked for where Python installs them: `$VIRTUAL_ENV`, `~/.local`,
/// `~/.pyenv/versions/*`, `/usr/local` and `/usr` (`lib/python3*/site-packages` and
/// `dist-packages`, and Debian's `/usr/lib/python3/dist-packages`).
pub fn default_locations() -> Vec<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut prefixes: Vec<PathBuf> = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        prefixes.push(PathBuf::from(venv));
    }
    if let Some(home) = &home {
        prefixes.push(home.join(".local"));
        let versions = home.join(".pyenv/versions");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&versions)
            .into_iter()
            .flatten()
            .flatten()
            .take(MAX_DIR_ENTRIES)
            .map(|e| e.path())
            .collect();
        found.sort();
        prefixes.extend(found);
    }
    prefixes.push(PathBuf::from("/usr/local"));
    prefixes.push(PathBuf::from("/usr"));
    let mut package_dirs = Vec::new();
    for prefix in &prefixes {
        let lib = prefix.join("lib");
        let mut pythons: Vec<PathBuf> = std::fs::read_dir(&lib)
            .into_iter()
            .flatten()
            .flatten()
            .take(MAX_DIR_ENTRIES)
            .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
            .map(|e| e.path())
            .collect();
        pythons.sort();
        for python in pythons {
            package_dirs.push(python.join("site-packages"));
            package_dirs.push(python.join("dist-packages"));
        }
    }
    let mut out = Vec::new();
    for packages in package_dirs {
        let package = packages.join("volatility3");
        out.push(package.join("symbols"));
        out.push(package.join("framework/symbols"));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home.map(|h| h.join(".cache")));
    if let Some(cache) = cache {
        out.push(cache.join("volatility3/symbols"));
    }
    if let Some(appdata) = std::env::var_os("APPDATA") {
        out.push(PathBuf::from(appdata).join("volatility3/symbols"));
    }
    let mut seen = std::collections::HashSet::new();
    out.into_iter()
        .filter(|p| p.is_dir())
        .filter(|p| seen.insert(p.canonicalize().unwrap_or_else(|_| p.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn id() -> PdbId {
        PdbId {
            name: "ntkrnlmp.pdb".into(),
            guid: "BBED7C29-55FB-E452-2AAA-23F4B8677AD9".into(),
            age: 1,
        }
    }

    #[test]
    fn volatility_names_the_file_guid_dash_decimal_age() {
        let mut id = id();
        id.age = 0x1a;
        assert_eq!(table_stem(&id), "BBED7C2955FBE4522AAA23F4B8677AD9-26");
    }

    #[test]
    fn directories_in_volatility_layout_flat_and_zipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut search = Search::default();
        assert_eq!(find(&[dir.path().to_path_buf()], &id(), &mut search), None);
        assert_eq!(search.looked, [dir.path().display().to_string()]);

        let flat = dir.path().join("BBED7C2955FBE4522AAA23F4B8677AD9-1.json");
        std::fs::write(&flat, b"{}").unwrap();
        let found = find(&[dir.path().to_path_buf()], &id(), &mut search).unwrap();
        assert_eq!(found, TableFile::File(flat.clone()));

        let nested = dir.path().join("windows/ntkrnlmp.pdb");
        std::fs::create_dir_all(&nested).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"{\"gz\": 1}").unwrap();
        std::fs::write(
            nested.join("BBED7C2955FBE4522AAA23F4B8677AD9-1.json.gz"),
            gz.finish().unwrap(),
        )
        .unwrap();
        let found = find(&[dir.path().to_path_buf()], &id(), &mut search).unwrap();
        assert_eq!(
            found.read().unwrap(),
            b"{\"gz\": 1}",
            "Volatility's layout first"
        );

        let packs = tempfile::tempdir().unwrap();
        let zip_path = packs.path().join("windows.zip");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        let options = zip::write::SimpleFileOptions::default();
        zip.start_file(
            "windows/ntkrnlmp.pdb/BBED7C2955FBE4522AAA23F4B8677AD9-1.json",
            options,
        )
        .unwrap();
        zip.write_all(b"{\"zip\": 1}").unwrap();
        zip.finish().unwrap();
        let found = find(&[packs.path().to_path_buf()], &id(), &mut search).unwrap();
        assert_eq!(found.read().unwrap(), b"{\"zip\": 1}");
        assert!(found
            .location()
            .ends_with("windows.zip!windows/ntkrnlmp.pdb/BBED7C2955FBE4522AAA23F4B8677AD9-1.json"));
        assert_eq!(find(&[zip_path], &id(), &mut search), Some(found));
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_bound() {
        let mut sink = Bounded::default();
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        let err = loop {
            match std::io::Write::write(&mut sink, &chunk) {
                Ok(n) => written += n as u64,
                Err(e) => break e,
            }
        };
        assert!(written <= MAX_TABLE_BYTES);
        assert!(err.to_string().contains("more than"), "{err}");
    }
}
