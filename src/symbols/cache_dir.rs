//! The default downstream store (symbol cache), in WinDbg's layout so WinDbg can share it:
//!
//! * `KDLEAK_SYMBOL_CACHE` if set;
//! * Linux and other Unix: `$XDG_CACHE_HOME/kdleak/symbols`, else `~/.cache/kdleak/symbols`;
//! * macOS: `~/Library/Caches/kdleak/symbols`;
//! * Windows: `%LOCALAPPDATA%\kdleak\symbols`;
//! * with no home directory at all: `./kdleak-symbols`.

use std::path::PathBuf;

fn env_dir(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = env_dir("KDLEAK_SYMBOL_CACHE") {
        return dir;
    }
    match cache_base() {
        Some(base) => base.join("symbols"),
        None => PathBuf::from("kdleak-symbols"),
    }
}

/// kdleak's directory in the platform's per-user cache (`$XDG_CACHE_HOME/kdleak`, else
/// `~/.cache/kdleak`; `~/Library/Caches/kdleak` on macOS; `%LOCALAPPDATA%\kdleak` on Windows);
/// `None` without a home directory. The symbol cache and the unpacked built-in fixtures
/// ([`crate::embedded`]) live under it.
pub fn cache_base() -> Option<PathBuf> {
    let base = if cfg!(target_os = "macos") {
        env_dir("HOME").map(|h| h.join("Library").join("Caches"))
    } else if cfg!(windows) {
        env_dir("LOCALAPPDATA")
    } else {
        env_dir("XDG_CACHE_HOME")
            .filter(|p| p.is_absolute())
            .or_else(|| env_dir("HOME").map(|h| h.join(".cache")))
    };
    base.map(|b| b.join("kdleak"))
}
