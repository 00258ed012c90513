//! The data built into the binary: the simulator's fixture kernels, drivers and PDBs, its ISF
//! tables and the scenario files (`captures/fixtures`, `captures/isf`, `captures/scenarios`),
//! packed by `build.rs` into one deflated zip. [`root`] unpacks it once per version into the
//! per-user cache (`~/.cache/kdleak/sim-data/VERSION-HASH/`, the same layout as the checkout's
//! `captures/`), so `kdleak attach sim` works after `cargo install` on a machine without the
//! repository, and the simulated target's symbol directory is a plain directory of PDBs.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The archive `build.rs` made.
pub static ARCHIVE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/embedded.zip"));

/// Version and content hash of [`ARCHIVE`]: the directory it unpacks into.
pub const KEY: &str = env!("KDLEAK_EMBEDDED_KEY");

/// The built-in data could not be unpacked.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot unpack the built-in simulator fixtures ({0}); set XDG_CACHE_HOME (or HOME) to a \
     writable directory"
)]
pub struct EmbeddedError(String);

/// The directory the built-in data is unpacked in (its `captures/…` paths are relative to it),
/// unpacking it on first use. Processes started together (a fleet of simulated targets) each
/// unpack into a private directory and rename it into place; the first rename wins and the
/// others use it.
pub fn root() -> Result<&'static Path, EmbeddedError> {
    static ROOT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ROOT.get_or_init(locate)
        .as_deref()
        .map_err(|e| EmbeddedError(e.clone()))
}

/// The files in the archive, with their sizes.
pub fn entries() -> Result<Vec<(String, u64)>, EmbeddedError> {
    let mut zip = open().map_err(EmbeddedError)?;
    (0..zip.len())
        .map(|i| {
            let entry = zip
                .by_index(i)
                .map_err(|e| EmbeddedError(format!("entry {i}: {e}")))?;
            Ok((entry.name().to_string(), entry.size()))
        })
        .collect()
}

fn open() -> Result<zip::ZipArchive<std::io::Cursor<&'static [u8]>>, String> {
    zip::ZipArchive::new(std::io::Cursor::new(ARCHIVE)).map_err(|e| format!("the archive: {e}"))
}

fn locate() -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    let private = crate::symbols::cache_dir::cache_base().map(|b| b.join("sim-data"));
    let shared = std::env::temp_dir().join(format!("kdleak-sim-data-{}", user_tag()));
    for base in private.into_iter().chain([shared]) {
        match unpack_in(&base) {
            Ok(dir) => return Ok(dir),
            Err(e) => {
                tracing::debug!(base = %base.display(), error = %e, "built-in data not unpacked");
                tried.push(format!("{}: {e}", base.display()));
            }
        }
    }
    Err(tried.join("; "))
}

/// Who owns the shared temporary directory, so one user never reads another's.
fn user_tag() -> String {
    #[cfg(unix)]
    {
        nix::unistd::getuid().to_string()
    }
    #[cfg(not(unix))]
    {
        std::env::var("USERNAME").unwrap_or_default()
    }
}

/// `base/KEY`, unpacked if it is not there complete.
fn unpack_in(base: &Path) -> Result<PathBuf, String> {
    let dir = base.join(KEY);
    std::fs::create_dir_all(base).map_err(|e| e.to_string())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(base).map_err(|e| e.to_string())?;
        if meta.uid() != nix::unistd::getuid().as_raw() {
            return Err("owned by another user".into());
        }
    }
    if complete(&dir)? {
        return Ok(dir);
    }
    // A damaged copy (a file deleted or cut short) is replaced.
    if dir.exists() {
        tracing::info!(dir = %dir.display(), "replacing an incomplete copy of the built-in data");
        let _ = std::fs::remove_dir_all(&dir);
    }
    // Private to this process and call: a crashed unpack leaves a dot-directory, never a
    // half-filled `KEY`.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let staging = base.join(format!(
        ".{KEY}.{}.{}",
        std::process::id(),
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let result = extract(&staging).and_then(|()| match std::fs::rename(&staging, &dir) {
        Ok(()) => Ok(()),
        // Another process put its copy in place first.
        Err(_) if complete(&dir)? => Ok(()),
        Err(e) => Err(format!("{} → {}: {e}", staging.display(), dir.display())),
    });
    let _ = std::fs::remove_dir_all(&staging);
    result.map(|()| dir)
}

/// Whether every file of the archive is in `dir` with its size.
fn complete(dir: &Path) -> Result<bool, String> {
    if !dir.is_dir() {
        return Ok(false);
    }
    let mut zip = open()?;
    for i in 0..zip.len() {
        let entry = zip.by_index(i).map_err(|e| e.to_string())?;
        let Some(name) = entry.enclosed_name() else {
            return Err(format!("entry `{}` escapes its directory", entry.name()));
        };
        match std::fs::metadata(dir.join(name)) {
            Ok(meta) if meta.is_file() && meta.len() == entry.size() => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

fn extract(to: &Path) -> Result<(), String> {
    let mut zip = open()?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| e.to_string())?;
        let Some(name) = entry.enclosed_name() else {
            return Err(format!("entry `{}` escapes its directory", entry.name()));
        };
        let path = to.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let mut bytes = Vec::with_capacity(entry.size().min(64 << 20) as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{}: {e}", entry.name()))?;
        std::fs::write(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_holds_every_fixture_and_table_the_scenarios_name() {
        let names: Vec<String> = entries().unwrap().into_iter().map(|(n, _)| n).collect();
        for build in ["win7-7601", "win10-19041", "win11-22000"] {
            for file in ["manifest.json", "ntkrnlmp.pdb", "myfault.pdb", "leaky.pdb"] {
                let want = format!("captures/fixtures/{build}/{file}");
                assert!(names.contains(&want), "{want} not in {names:?}");
            }
        }
        assert!(names
            .iter()
            .any(|n| n.starts_with("captures/isf/") && n.ends_with(".json.xz")));
        assert!(names.contains(&"captures/scenarios/watch-leak.toml".to_string()));
        // Compressed: smaller than what it holds.
        let unpacked: u64 = entries().unwrap().iter().map(|(_, s)| s).sum();
        assert!(
            (ARCHIVE.len() as u64) < unpacked,
            "{} >= {unpacked}",
            ARCHIVE.len()
        );
    }

    #[test]
    fn unpackers_racing_for_one_directory_all_get_the_complete_copy() {
        let base = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| unpack_in(base.path()).unwrap()))
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert!(dirs.iter().all(|d| *d == dirs[0]));
        assert!(complete(&dirs[0]).unwrap());
        // No staging directory is left behind.
        let left: Vec<_> = std::fs::read_dir(base.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from(KEY)]);
    }

    #[test]
    fn a_damaged_copy_is_detected_and_replaced() {
        let base = tempfile::tempdir().unwrap();
        let dir = unpack_in(base.path()).unwrap();
        assert!(complete(&dir).unwrap());
        let pdb = dir.join("captures/fixtures/win10-19041/ntkrnlmp.pdb");
        let original = std::fs::read(&pdb).unwrap();
        std::fs::write(&pdb, &original[..100]).unwrap();
        assert!(!complete(&dir).unwrap());
        let again = unpack_in(base.path()).unwrap();
        assert_eq!(again, dir);
        assert_eq!(std::fs::read(&pdb).unwrap(), original);
    }
}
