//! Files replaced whole or not at all (report `--out`, `--stats`, watch series and pages, the
//! simulator's crash dumps): a temporary file beside the target, fsync, rename.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` so that `path` is either untouched or complete: the data goes to a
/// new temporary file in the same directory, is flushed to disk (`fsync`), and is then renamed
/// over `path` (the directory is synced too, where the platform allows). On any error the
/// temporary file is removed and `path` keeps its old content.
pub fn write_atomically(path: impl AsRef<Path>, bytes: &[u8]) -> io::Result<()> {
    write_atomically_with(path, |w| w.write_all(bytes))
}

/// [`write_atomically`] for output produced piece by piece: `fill` writes into a buffered
/// temporary file, so a large report is never held in memory whole.
pub fn write_atomically_with(
    path: impl AsRef<Path>,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    write_atomically_to_file(path, |file| {
        let mut buffered = io::BufWriter::new(file);
        fill(&mut buffered)?;
        buffered.flush()
    })
}

/// [`write_atomically`] for output that needs the file itself: `fill` may seek, so a sparse
/// file (a memory image with holes) keeps its holes.
pub fn write_atomically_to_file(
    path: impl AsRef<Path>,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let path = path.as_ref();
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (temp, mut file) = loop {
        let candidate = dir.join(format!(
            ".{}.{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(file) => break (candidate, file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let filled = fill(&mut file);
    let written = filled.and_then(|()| file.sync_all()).and_then(|()| {
        drop(file);
        fs::rename(&temp, path)
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    // Make the rename itself durable; not every platform can open a directory.
    if let Ok(dir) = File::open(&dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}
