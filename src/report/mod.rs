//! Output formats for the leak pull's [`LeakReport`]: WinDbg-compatible text ([`text`]), JSON
//! ([`json`], documented in the README) and CSV ([`csv`]); the leak table of allocation sites
//! ([`sites`]); and [`write_atomically`] for `--out`.

pub mod csv;
pub mod json;
pub mod text;

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::verifier::model::{Allocation, LeakReport, LeakSite};

/// What makes two outstanding allocations the same "site" in the leak table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum GroupBy {
    /// The caller's symbol (`myfault!MyfaultDeviceControl+0x358`).
    #[default]
    Caller,
    /// The whole allocation stack's symbols joined by `" <- "` (newest frame first); the caller's
    /// symbol when the log no longer holds the allocation's stack.
    Stack,
    /// The pool tag.
    Tag,
}

impl GroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Caller => "caller",
            GroupBy::Stack => "stack",
            GroupBy::Tag => "tag",
        }
    }

    /// The site name of one allocation under this grouping.
    pub fn site_of(self, allocation: &Allocation) -> String {
        match self {
            GroupBy::Caller => allocation.caller_symbol.clone(),
            GroupBy::Stack if allocation.stack.is_empty() => allocation.caller_symbol.clone(),
            GroupBy::Stack => stack_symbols(allocation),
            GroupBy::Tag => allocation.tag.clone(),
        }
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GroupBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "caller" => Ok(GroupBy::Caller),
            "stack" => Ok(GroupBy::Stack),
            "tag" => Ok(GroupBy::Tag),
            other => Err(format!(
                "unknown grouping `{other}` (expected caller, stack or tag)"
            )),
        }
    }
}

/// An allocation's stack as its frames' symbols joined by `" <- "`, newest frame first.
pub fn stack_symbols(allocation: &Allocation) -> String {
    allocation
        .stack
        .iter()
        .map(|frame| frame.symbol.as_str())
        .collect::<Vec<_>>()
        .join(" <- ")
}

/// Groups the outstanding allocations of every driver in `report` by site (one [`LeakSite`] per
/// site and driver), with the number of blocks and the sum of their charged sizes; biggest first
/// (bytes descending, then site name, then driver name).
pub fn sites(report: &LeakReport, group_by: GroupBy) -> Vec<LeakSite> {
    let mut index: HashMap<(String, &str), usize> = HashMap::new();
    let mut out: Vec<LeakSite> = Vec::new();
    for driver in &report.drivers {
        for allocation in &driver.allocations {
            let site = group_by.site_of(allocation);
            let slot = *index
                .entry((site.clone(), driver.name.as_str()))
                .or_insert_with(|| {
                    out.push(LeakSite {
                        site,
                        driver: driver.name.clone(),
                        count: 0,
                        bytes: 0,
                    });
                    out.len() - 1
                });
            out[slot].count += 1;
            out[slot].bytes = out[slot].bytes.saturating_add(allocation.size);
        }
    }
    out.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then_with(|| a.site.cmp(&b.site))
            .then_with(|| a.driver.cmp(&b.driver))
    });
    out
}

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
    let mut buffered = io::BufWriter::new(&mut file);
    let filled = fill(&mut buffered).and_then(|()| buffered.flush());
    drop(buffered);
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
