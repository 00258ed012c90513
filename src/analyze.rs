//! `kdleak analyze FILE.dmp`: the leak pull from a Windows kernel crash dump instead of a live
//! target — the same kernel context, verifier pull and report, reading memory through the
//! dump's page tables ([`crate::image`]).

use std::path::Path;

use crate::image::{self, DumpError};
use tracing::info;

use crate::kernel_context::{read_nt_u32, KernelContext};
use crate::session;
use crate::stop::symbol_loader;
use crate::symbols::SymbolOptions;
use crate::verifier::{self, LeakReport, PullOptions};

/// What to pull and where the symbols are.
#[derive(Debug, Clone, Default)]
pub struct AnalyzeOptions {
    /// The image's format, when not found from its first bytes.
    pub format: image::FormatHint,
    /// Say on stderr what the image is and how the facts its format lacks were found.
    pub announce: bool,
    /// How to find PDBs; `None`: `_NT_ALT_SYMBOL_PATH`/`_NT_SYMBOL_PATH` and the default cache.
    pub symbols: Option<SymbolOptions>,
    /// `connection` is set by [`run`] (`dump:PATH`).
    pub pull: PullOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// The file is not a dump kdleak can read.
    #[error(transparent)]
    Dump(#[from] DumpError),
    /// The memory in the dump, or the symbols, cannot be used.
    #[error(transparent)]
    Pull(#[from] session::Error),
}

impl AnalyzeError {
    /// README "Exit codes": 2 for a file that is not a usable dump, 4 for a dump whose kind,
    /// memory or symbols this host cannot use.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Dump(e) => e.exit_code(),
            Self::Pull(e) => e.exit_code(),
        }
    }
}

/// How a report names a dump as its source (`target.connection`).
pub fn connection(path: &Path) -> String {
    format!("dump:{}", path.display())
}

/// Opens the dump at `path` and pulls the report from it. Sites are left for the caller to
/// group; `target.time` is when the dump was written (the header's SystemTime) when it says.
pub async fn run(path: &Path, options: &AnalyzeOptions) -> Result<LeakReport, AnalyzeError> {
    let mut dump = image::open(path, options.format)?;
    let say = |line: &str| {
        info!("{line}");
        if options.announce {
            eprintln!("kdleak: {line}");
        }
    };
    say(&format!("{}: {}", path.display(), dump.format));
    dump.locate().await?;
    for finding in &dump.findings {
        say(finding);
    }
    let symbols = symbol_loader(options.symbols.as_ref(), None)?;
    let header = dump.facts.clone();
    let kernel = KernelContext::load_from_dump(&mut dump, &header, &symbols).await?;
    let processors = match header.number_processors {
        0 => read_nt_u32(&mut dump, &kernel, "KeNumberProcessors")
            .await
            .unwrap_or(0),
        n => n,
    };
    // The crash a dump was written for (not the dumps taken on purpose: Task Manager's live
    // dump, a forced crash), beside KiBugCheckData in its memory.
    let bug_check = match header.bug_check_code {
        0 | LIVE_SYSTEM_DUMP | MANUALLY_INITIATED_CRASH => None,
        code => {
            let p = header.bug_check_parameters;
            Some([u64::from(code), p[0], p[1], p[2], p[3]])
        }
    };
    let pull = PullOptions {
        connection: connection(path),
        processors,
        bug_check,
        ..options.pull.clone()
    };
    let mut report = verifier::pull(&mut dump, &kernel, &symbols, &pull)
        .await
        .map_err(session::Error::from)?;
    info!(
        "{} bytes read from {}",
        dump.source().bytes_read(),
        path.display()
    );
    if let Some(time) = filetime_rfc3339(header.system_time) {
        report.target.time = time;
    }
    Ok(report)
}

/// Bug check 0x161 (Task Manager's live kernel dump) and 0xE2 (a crash forced from the keyboard
/// or by NotMyFault/the debugger): dumps taken on purpose, not a failure (Microsoft's bug check
/// reference).
const LIVE_SYSTEM_DUMP: u32 = 0x161;
const MANUALLY_INITIATED_CRASH: u32 = 0xE2;

/// A FILETIME (100 ns ticks since 1601-01-01 UTC) as RFC 3339 UTC; `None` outside 1970..10000
/// (unset, or the `PAGE` filler Windows leaves in unused header fields).
fn filetime_rfc3339(filetime: u64) -> Option<String> {
    /// Seconds from 1601-01-01 to 1970-01-01.
    const EPOCH_DIFFERENCE: u64 = 11_644_473_600;
    /// 10000-01-01T00:00:00Z: RFC 3339 has four-digit years.
    const YEAR_10000: u64 = 253_402_300_800;
    let secs = (filetime / 10_000_000).checked_sub(EPOCH_DIFFERENCE)?;
    (secs > 0 && secs < YEAR_10000).then(|| verifier::rfc3339(secs as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dump_time_is_its_filetime_in_utc() {
        // 2024-02-29T12:34:56Z = 1709210096 s after 1970.
        let filetime = (1_709_210_096 + 11_644_473_600) * 10_000_000 + 1234;
        assert_eq!(
            filetime_rfc3339(filetime).as_deref(),
            Some("2024-02-29T12:34:56Z")
        );
        assert_eq!(filetime_rfc3339(0), None);
        assert_eq!(filetime_rfc3339(5), None);
        assert_eq!(filetime_rfc3339(u64::from_le_bytes(*b"PAGEPAGE")), None);
    }
}
