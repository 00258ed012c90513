//! Local symbol stores and plain directories: `name/KEY/name`, the two-tier layout selected by
//! `index2.txt` (`na/name/KEY/name`), CAB-compressed `name.pd_`, and `file.ptr` redirects.
//! Files are written into caches atomically (temporary file + rename) in WinDbg's layout.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::error::{Result, SymbolError};
use super::identity::PdbId;

/// What a key directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    File(PathBuf),
    /// A CAB-compressed file (`name.pd_`) to expand before use.
    Compressed(PathBuf),
}

/// `ntkrnlmp.pdb` → `ntkrnlmp.pd_`.
pub fn compressed_name(name: &str) -> String {
    let mut s = name.to_string();
    s.pop();
    s.push('_');
    s
}

/// `dir/name`, matching `name` case-insensitively when the exact spelling is absent (caches
/// copied from Windows).
pub fn child(dir: &Path, name: &str) -> Option<PathBuf> {
    let exact = dir.join(name);
    if exact.exists() {
        return Some(exact);
    }
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().eq_ignore_ascii_case(name))
        .map(|e| e.path())
}

/// The key directories a store may use for `id`.
pub fn key_dirs(store: &Path, id: &PdbId) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let key = id.store_key();
    if store.join("index2.txt").exists() {
        let prefix: String = id.name.chars().take(2).collect();
        if let Some(d) = child(store, &prefix)
            .and_then(|d| child(&d, &id.name))
            .and_then(|d| child(&d, &key))
        {
            out.push(d);
        }
    }
    if let Some(d) = child(store, &id.name).and_then(|d| child(&d, &key)) {
        out.push(d);
    }
    out
}

/// Reads a `file.ptr`: `PATH:<path>` or a bare path; `MSG:` entries point nowhere.
fn read_ptr(ptr: &Path) -> Option<PathBuf> {
    let text = fs::read_to_string(ptr).ok()?;
    let line = text.lines().next()?.trim();
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case("MSG:") {
        return None;
    }
    let path = if line.len() >= 5 && line[..5].eq_ignore_ascii_case("PATH:") {
        &line[5..]
    } else {
        line
    };
    (!path.is_empty()).then(|| PathBuf::from(path.trim()))
}

fn classify(path: PathBuf) -> Found {
    if path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.ends_with('_'))
    {
        Found::Compressed(path)
    } else {
        Found::File(path)
    }
}

/// What a key directory (or a `file.ptr` target) offers for `name`.
pub fn probe_key_dir(dir: &Path, name: &str) -> Option<Found> {
    if let Some(p) = child(dir, name).filter(|p| p.is_file()) {
        return Some(Found::File(p));
    }
    if let Some(p) = child(dir, &compressed_name(name)).filter(|p| p.is_file()) {
        return Some(Found::Compressed(p));
    }
    let target = read_ptr(&child(dir, "file.ptr")?)?;
    if target.is_dir() {
        // A pointer to a directory: the file (or its compressed form) inside it.
        let inner = child(&target, name)
            .filter(|p| p.is_file())
            .map(Found::File)
            .or_else(|| {
                child(&target, &compressed_name(name))
                    .filter(|p| p.is_file())
                    .map(Found::Compressed)
            });
        return inner;
    }
    target.is_file().then(|| classify(target))
}

/// Looks `id` up in a store.
pub fn probe_store(store: &Path, id: &PdbId) -> Option<Found> {
    key_dirs(store, id)
        .into_iter()
        .find_map(|d| probe_key_dir(&d, &id.name))
}

/// Candidates in a plain directory: `DIR/name`, `DIR/<ext>/name`, `DIR/symbols/<ext>/name`, and
/// the store layout.
pub fn probe_plain_dir(dir: &Path, id: &PdbId) -> Vec<Found> {
    let ext = Path::new(&id.name)
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out: Vec<Found> = [
        child(dir, &id.name),
        child(dir, &ext).and_then(|d| child(&d, &id.name)),
        child(dir, "symbols")
            .and_then(|d| child(&d, &ext))
            .and_then(|d| child(&d, &id.name)),
    ]
    .into_iter()
    .flatten()
    .filter(|p| p.is_file())
    .map(Found::File)
    .collect();
    out.extend(probe_store(dir, id));
    out
}

/// Where `id` lives in a cache: `cache/name/KEY/name`.
pub fn cache_path(cache: &Path, id: &PdbId) -> PathBuf {
    cache.join(&id.name).join(id.store_key()).join(&id.name)
}

/// A temporary file beside `dest` (same directory, so the final rename is atomic).
pub fn temp_beside(dest: &Path) -> Result<(fs::File, PathBuf)> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| SymbolError::io(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.{}.partial",
        dest.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let file = fs::File::create(&tmp).map_err(|e| SymbolError::io(&tmp, e))?;
    Ok((file, tmp))
}

pub fn commit(tmp: &Path, dest: &Path) -> Result<()> {
    fs::rename(tmp, dest).map_err(|e| {
        let _ = fs::remove_file(tmp);
        SymbolError::io(dest, e)
    })
}

/// Copies `src` into `dest` atomically (no-op when it is the same file).
pub fn install_copy(src: &Path, dest: &Path) -> Result<()> {
    if src == dest || dest.is_file() {
        return Ok(());
    }
    let (mut out, tmp) = temp_beside(dest)?;
    let mut input = fs::File::open(src).map_err(|e| SymbolError::io(src, e))?;
    std::io::copy(&mut input, &mut out).map_err(|e| SymbolError::io(&tmp, e))?;
    drop(out);
    commit(&tmp, dest)
}

/// Expands the CAB `cab` (one file: the PDB) into `dest` atomically.
pub fn expand_cab(cab: &Path, dest: &Path) -> Result<()> {
    let bad = |reason: String| SymbolError::Cab {
        path: cab.to_path_buf(),
        reason,
    };
    let file = fs::File::open(cab).map_err(|e| SymbolError::io(cab, e))?;
    let mut cabinet = cab::Cabinet::new(file).map_err(|e| bad(e.to_string()))?;
    let names: Vec<String> = cabinet
        .folder_entries()
        .flat_map(|f| f.file_entries().map(|e| e.name().to_string()))
        .collect();
    let wanted = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let entry = names
        .iter()
        .find(|n| n.eq_ignore_ascii_case(&wanted))
        .or(names.first())
        .ok_or_else(|| bad("the cabinet holds no file".into()))?
        .clone();
    let (mut out, tmp) = temp_beside(dest)?;
    let mut reader = cabinet.read_file(&entry).map_err(|e| bad(e.to_string()))?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            bad(format!("{entry}: {e}"))
        })?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .map_err(|e| SymbolError::io(&tmp, e))?;
    }
    drop(out);
    commit(&tmp, dest)
}
