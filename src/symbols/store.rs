//! Local symbol stores and plain directories: `name/KEY/name`, the two-tier layout selected by
//! `index2.txt` (`na/name/KEY/name`), CAB-compressed `name.pd_`, and `file.ptr` redirects.
//! Files are written into caches atomically (temporary file + rename) in WinDbg's layout.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

/// The most of a `file.ptr` read: one line naming a path.
pub const MAX_POINTER_BYTES: u64 = 4096;

/// Reads a `file.ptr`: `PATH:<path>` or a bare path; `MSG:` entries point nowhere.
pub fn read_ptr(ptr: &Path) -> Option<PathBuf> {
    let mut text = String::new();
    fs::File::open(ptr)
        .ok()?
        .take(MAX_POINTER_BYTES)
        .read_to_string(&mut text)
        .ok()?;
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

pub fn classify(path: PathBuf) -> Found {
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

/// Temporary files older than this in a cache directory are left by a killed process (a live
/// download writes to its file at least every transfer timeout): removed when a new one is made
/// beside them.
const STALE_TEMP: Duration = Duration::from_secs(3600);
const TEMP_SUFFIX: &str = ".partial";

/// A file being written beside its destination (same directory, so the final rename is
/// atomic) under a name no cache lookup matches (`.NAME.PID.N.partial`). Removed when dropped
/// unless [`TempFile::persist`]ed: a failed, refused or interrupted write never leaves a file
/// where the cache expects a PDB.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    file: Option<fs::File>,
}

impl TempFile {
    /// A new temporary file beside `dest` (creating its directory).
    pub fn beside(dest: &Path) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = dest.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| SymbolError::io(dir, e))?;
        sweep_stale(dir);
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        loop {
            let path = dir.join(format!(
                ".{name}.{}.{}{TEMP_SUFFIX}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(Self {
                        path,
                        file: Some(file),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(SymbolError::io(&path, e)),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes everything `input` gives, at most `limit` bytes (more is an error naming
    /// `what`); returns the bytes written.
    pub fn fill_from(&mut self, input: &mut dyn Read, limit: u64, what: &str) -> Result<u64> {
        let file = self
            .file
            .as_mut()
            .expect("a temporary file is open until persisted");
        let mut out = std::io::BufWriter::with_capacity(1 << 16, file);
        let copied = std::io::copy(&mut input.take(limit.saturating_add(1)), &mut out)
            .and_then(|n| out.flush().map(|()| n))
            .map_err(|e| SymbolError::io(&self.path, e))?;
        if copied > limit {
            return Err(SymbolError::io(
                &self.path,
                std::io::Error::other(format!(
                    "{what} is larger than the limit of {limit} bytes (--symbol-max-download, in MiB)"
                )),
            ));
        }
        Ok(copied)
    }

    /// The open file, for writers that stream into it.
    pub fn writer(&mut self) -> &mut fs::File {
        self.file
            .as_mut()
            .expect("a temporary file is open until persisted")
    }

    /// Flushes to disk and renames over `dest` (replacing whatever is there, which only another
    /// process writing the same file can have put there), then syncs the directory.
    pub fn persist(mut self, dest: &Path) -> Result<()> {
        if let Some(file) = self.file.take() {
            file.sync_all()
                .map_err(|e| SymbolError::io(&self.path, e))?;
        }
        fs::rename(&self.path, dest).map_err(|e| SymbolError::io(dest, e))?;
        if let Some(dir) = dest.parent().and_then(|d| fs::File::open(d).ok()) {
            let _ = dir.sync_all();
        }
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            self.file.take();
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Removes temporary files that killed processes left in `dir`.
fn sweep_stale(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with('.') && name.ends_with(TEMP_SUFFIX)) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TEMP);
        if old {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Copies `src` into `dest` atomically (no-op when it is the same file or `dest` exists), at
/// most `limit` bytes.
pub fn install_copy(src: &Path, dest: &Path, limit: u64) -> Result<()> {
    if src == dest || dest.is_file() {
        return Ok(());
    }
    copy_to_temp(src, dest, limit)?.persist(dest)
}

/// `src` copied into a temporary file beside `dest`, at most `limit` bytes; only regular files
/// are read (a `file.ptr` may name a device or a pipe).
pub fn copy_to_temp(src: &Path, dest: &Path, limit: u64) -> Result<TempFile> {
    let regular = fs::metadata(src).map_err(|e| SymbolError::io(src, e))?;
    if !regular.is_file() {
        return Err(SymbolError::io(
            src,
            std::io::Error::other("not a regular file"),
        ));
    }
    let mut input = fs::File::open(src).map_err(|e| SymbolError::io(src, e))?;
    let mut temp = TempFile::beside(dest)?;
    temp.fill_from(&mut input, limit, &src.display().to_string())?;
    Ok(temp)
}

/// Expands the CAB `cab` (one file: the PDB) into a temporary file beside `dest`; the caller
/// checks it and persists it. The file inside must declare a size within `limit`, and is
/// expanded to exactly that size.
pub fn expand_cab(cab: &Path, dest: &Path, limit: u64) -> Result<TempFile> {
    let file = fs::File::open(cab).map_err(|e| SymbolError::io(cab, e))?;
    let wanted = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut temp = TempFile::beside(dest)?;
    let mut out = std::io::BufWriter::new(temp.writer());
    let expanded = expand_cab_into(file, &wanted, limit, &mut out)
        .and_then(|n| out.flush().map(|()| n).map_err(|e| e.to_string()));
    drop(out);
    expanded.map_err(|reason| SymbolError::Cab {
        path: cab.to_path_buf(),
        reason,
    })?;
    Ok(temp)
}

/// Expands the file called `wanted` (else the first file) of the cabinet `input` into `out`:
/// refused when it declares more than `limit` bytes, never more than it declares, and an error
/// when it holds fewer. Returns the bytes written. The whole of what a `.pd_` from a symbol
/// server gets to do; fuzzed (`cab_expand`).
pub fn expand_cab_into<R: Read>(
    input: R,
    wanted: &str,
    limit: u64,
    out: &mut dyn Write,
) -> std::result::Result<u64, String> {
    // The cab crate indexes past its block list when a file claims data beyond its folder's
    // (found by the cab_expand fuzz target): the layout is checked here first.
    let mut bytes = Vec::new();
    input
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "the cabinet is larger than the limit of {limit} bytes (--symbol-max-download, in MiB)"
        ));
    }
    if let Some(problem) = cab_layout_problem(&bytes) {
        return Err(problem);
    }
    let mut cabinet = cab::Cabinet::new(std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let entries: Vec<(String, u64)> = cabinet
        .folder_entries()
        .flat_map(|f| {
            f.file_entries()
                .map(|e| (e.name().to_string(), u64::from(e.uncompressed_size())))
        })
        .collect();
    let (name, declared) = entries
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(wanted))
        .or(entries.first())
        .cloned()
        .ok_or("the cabinet holds no file")?;
    if declared > limit {
        return Err(format!(
            "{name} declares {declared} bytes, more than the limit of {limit} (--symbol-max-download, in MiB)"
        ));
    }
    let reader = cabinet
        .read_file(&name)
        .map_err(|e| format!("{name}: {e}"))?;
    let written =
        std::io::copy(&mut reader.take(declared), out).map_err(|e| format!("{name}: {e}"))?;
    if written != declared {
        return Err(format!("{name}: {written} of its {declared} bytes"));
    }
    Ok(written)
}

/// What is wrong with a cabinet's layout that the cab crate would not survive: every file must
/// lie within the data its folder's blocks hold, and every block within the file. A single
/// cabinet only (no set). Layout: `CFHEADER`, `CFFOLDER`, `CFFILE`, `CFDATA` of the Microsoft
/// Cabinet Format (learn.microsoft.com/previous-versions/bb417343(v=msdn.10)). Shapes the crate
/// refuses itself (a bad signature, a short header) are left to it.
fn cab_layout_problem(b: &[u8]) -> Option<String> {
    let u16_at = |at: usize| {
        b.get(at..at + 2)
            .map(|x| u64::from(u16::from_le_bytes([x[0], x[1]])))
    };
    let u32_at = |at: usize| {
        b.get(at..at + 4)
            .map(|x| u64::from(u32::from_le_bytes([x[0], x[1], x[2], x[3]])))
    };
    let truncated = || Some("the cabinet is truncated".to_string());
    if b.len() < 36 || &b[..4] != b"MSCF" {
        return None;
    }
    let flags = u16_at(30)?;
    if flags & 3 != 0 {
        return Some("a cabinet spanning several files is not a .pd_".into());
    }
    let (mut at, mut folder_reserve, mut data_reserve) = (36usize, 0usize, 0usize);
    if flags & 4 != 0 {
        let Some(header_reserve) = u16_at(36) else {
            return truncated();
        };
        folder_reserve = usize::from(*b.get(38)?);
        data_reserve = usize::from(*b.get(39)?);
        at = 40 + header_reserve as usize;
    }
    let (folders, files, files_at) = (u16_at(26)?, u16_at(28)?, u32_at(16)?);
    let mut folder_sizes = Vec::new();
    for _ in 0..folders {
        let (Some(start), Some(blocks)) = (u32_at(at), u16_at(at + 4)) else {
            return truncated();
        };
        at += 8 + folder_reserve;
        let (mut p, mut total) = (start as usize, 0u64);
        for _ in 0..blocks {
            let (Some(data), Some(uncompressed)) = (u16_at(p + 4), u16_at(p + 6)) else {
                return truncated();
            };
            total += uncompressed;
            p += 8 + data_reserve + data as usize;
            if p > b.len() {
                return Some("a data block runs past the end of the cabinet".into());
            }
        }
        folder_sizes.push(total);
    }
    let mut at = files_at as usize;
    for _ in 0..files {
        let (Some(size), Some(offset), Some(folder)) = (u32_at(at), u32_at(at + 4), u16_at(at + 8))
        else {
            return truncated();
        };
        let Some(&held) = folder_sizes.get(folder as usize) else {
            return Some(format!(
                "a file names folder {folder:#x}, the cabinet has {folders}"
            ));
        };
        if offset + size > held {
            return Some(format!(
                "a file claims bytes {offset}..{} of a folder that holds {held}",
                offset + size
            ));
        }
        let name = b.get(at + 16..)?;
        let Some(nul) = name.iter().position(|&c| c == 0) else {
            return truncated();
        };
        at += 16 + nul + 1;
    }
    None
}

/// An exclusive lock on a key directory (`flock` on the directory itself, so nothing is left in
/// the cache): the processes sharing a cache fetch each PDB once, the others wait and then find
/// it. Released when dropped, or when the process dies.
#[derive(Debug)]
pub struct KeyLock {
    _lock: Option<nix::fcntl::Flock<fs::File>>,
}

impl KeyLock {
    /// Locks `dir`, waiting at most `wait` for another holder; after that (a holder that hangs)
    /// goes on without the lock, which the atomic writes make safe, only wasteful.
    pub fn acquire(dir: &Path, wait: Duration) -> Self {
        use nix::fcntl::{Flock, FlockArg};
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(10);
        loop {
            let Ok(handle) = fs::File::open(dir) else {
                return Self { _lock: None };
            };
            match Flock::lock(handle, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Self { _lock: Some(lock) },
                Err((_, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Err((_, errno)) => {
                    tracing::debug!(dir = %dir.display(), %errno, "symbol cache: going on without the lock");
                    return Self { _lock: None };
                }
            }
        }
    }
}
