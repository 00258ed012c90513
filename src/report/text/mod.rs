//! The text output: per driver a WinDbg-style `!verifier 3 <driver>` block, per outstanding
//! allocation a `!verifier 80 <address>` block, then the leak table of allocation sites, a
//! completeness line, how long a live pull froze the target, and where each module's symbols
//! came from.
//!
//! The WinDbg blocks come in two layouts ([`WindbgStyle`]): [`current`], as today's WinDbg prints
//! them (whatever the target's Windows version; the flag lists follow the target's build), and
//! [`classic`], the Windows 7-era layout of the reference session (verifier.md §1), reproduced
//! byte for byte. The public samples each layout was checked against are in
//! `tests/data/windbg_samples/`.
//!
//! [`render`] is a sequence of blocks; a new block (a bug-check summary, say) is one more call.

pub mod classic;
pub mod current;

use std::fmt::{self, Write as _};

use super::{sites, GroupBy};
use crate::verifier::model::{Allocation, LeakReport, LogSummary, TargetStop};

/// Which WinDbg layout the `!verifier` blocks follow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum WindbgStyle {
    /// As today's WinDbg prints `!verifier 3` and `!verifier 80` (the layout since the Windows
    /// 8.1-era debuggers, whatever the target): flag lists, indented statistics, a
    /// `Pool Allocations:` table with symbolized callers.
    #[default]
    Current,
    /// The Windows 7-era layout of the reference session (verifier.md §1).
    Classic,
}

impl WindbgStyle {
    pub fn as_str(self) -> &'static str {
        match self {
            WindbgStyle::Current => "current",
            WindbgStyle::Classic => "classic",
        }
    }
}

impl fmt::Display for WindbgStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How [`render`] lays the report out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextOptions {
    /// How the leak table groups allocations.
    pub group_by: GroupBy,
    /// Echo each WinDbg command before its output, after this prompt (`"0: kd> "` as in the
    /// reference session); `None` prints the outputs only.
    pub prompt: Option<String>,
    /// Print every log record of a block's range (allocations and frees, newest first) as
    /// `!verifier 80` does, instead of only the most recent allocation stack.
    pub history: bool,
    /// The layout of the WinDbg blocks.
    pub style: WindbgStyle,
}

impl Default for TextOptions {
    fn default() -> Self {
        TextOptions {
            group_by: GroupBy::Caller,
            prompt: Some("0: kd> ".to_string()),
            history: false,
            style: WindbgStyle::Current,
        }
    }
}

/// Renders the whole report: per driver a `!verifier 3` block, per outstanding allocation a
/// `!verifier 80` block, then the leak table, the completeness line and the symbols line. Every
/// line ends in `\n`.
pub fn render(report: &LeakReport, options: &TextOptions) -> String {
    let mut out = String::new();
    for line in bugcheck_lines(report) {
        out.push_str(&line);
        out.push('\n');
    }
    if report.bugcheck.is_some() {
        out.push('\n');
    }
    for (i, driver) in report.drivers.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match options.style {
            WindbgStyle::Current => current::verifier_3(&mut out, report, driver, options),
            WindbgStyle::Classic => classic::verifier_3(&mut out, report, driver, options),
        }
        match &report.verifier.log {
            Some(log) => {
                for allocation in &driver.allocations {
                    out.push('\n');
                    verifier_80(&mut out, log, allocation, options);
                }
            }
            None if !driver.allocations.is_empty() => {
                out.push('\n');
                out.push_str("No allocation stacks: the allocate/free log was not read.\n");
            }
            None => {}
        }
    }
    if !report.drivers.is_empty() {
        out.push('\n');
    }
    render_sites(&mut out, report, options.group_by);
    out.push('\n');
    out.push_str(&completeness_line(report));
    out.push('\n');
    if let Some(line) = frozen_line(report) {
        out.push_str(&line);
        out.push('\n');
    }
    if let Some(line) = symbols_line(report) {
        out.push_str(&line);
        out.push('\n');
    }
    for line in skipped_symbols_lines(report) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The bug check the target stopped in, as `!analyze` names it, with what its parameters mean
/// for Driver Verifier's unload-time leak check (0xC4/0x62); no lines for a break-in.
pub fn bugcheck_lines(report: &LeakReport) -> Vec<String> {
    let Some(stop) = &report.bugcheck else {
        return Vec::new();
    };
    let mut lines = vec![format!(
        "Stopped in bug check {}: Arg1 {}, Arg2 {}, Arg3 {}, Arg4 {} ({}).",
        stop.title(),
        stop.parameters[0],
        stop.parameters[1],
        stop.parameters[2],
        stop.parameters[3],
        stop.source
    )];
    if let Some(meaning) = &stop.meaning {
        lines.push(format!("Arg1 {}: {meaning}.", stop.parameters[0]));
        let driver = stop.driver.as_deref().unwrap_or("(name unreadable)");
        lines.push(format!(
            "Arg2 {}: the driver, {driver}.",
            stop.parameters[1]
        ));
        lines.push(format!(
            "Arg3 {}: the verifier's structure with that driver's information.",
            stop.parameters[2]
        ));
        if let Some(counted) = stop.not_freed {
            let found = match stop.found {
                Some(found) if found == counted => "all found below".to_string(),
                Some(found) => format!("the pull found {found}"),
                None => "not checked".to_string(),
            };
            lines.push(format!(
                "Arg4 {}: {counted} allocations (paged + nonpaged) not freed; {found}.",
                stop.parameters[3]
            ));
        }
    }
    lines
}

/// How long a live pull froze the target and how long the host worked while it ran, without the
/// newline: `Target frozen 0.412 s in 2 stops (identify 0.011 s, read 0.401 s); 6.204 s of host
/// work while it ran.` `None` for a dump (no stops).
pub fn frozen_line(report: &LeakReport) -> Option<String> {
    if report.target.stops.is_empty() {
        return None;
    }
    let mut line = format!("Target {}", frozen_summary(&report.target.stops));
    if let Some(outside) = report.target.outside_s {
        let _ = write!(line, "; {outside:.3} s of host work while it ran");
    }
    line.push('.');
    Some(line)
}

/// `frozen 0.402 s in one stop`, or with more stops each one's purpose and time:
/// `frozen 0.412 s in 2 stops (identify 0.011 s, read 0.401 s after a reboot)`.
pub fn frozen_summary(stops: &[TargetStop]) -> String {
    let total: f64 = stops.iter().map(|stop| stop.frozen_s).sum();
    match stops {
        [] => "not stopped".to_string(),
        [_] => format!("frozen {total:.3} s in one stop"),
        _ => {
            let each: Vec<String> = stops
                .iter()
                .map(|stop| {
                    format!(
                        "{} {:.3} s{}",
                        stop.purpose.as_str(),
                        stop.frozen_s,
                        if stop.new_boot { " after a reboot" } else { "" }
                    )
                })
                .collect();
            format!(
                "frozen {total:.3} s in {} stops ({})",
                stops.len(),
                each.join(", ")
            )
        }
    }
}

use crate::symbols::safe_name::printable;

/// One line per module whose symbols were skipped. Module and PDB names come from the target:
/// control characters are shown escaped, never sent to the terminal.
pub fn skipped_symbols_lines(report: &LeakReport) -> Vec<String> {
    report
        .symbols_skipped
        .iter()
        .map(|s| {
            format!(
                "Symbols skipped for {} (PDB path `{}`): {}; its frames read module+offset.",
                printable(&s.module, 80),
                printable(&s.pdb, 80),
                printable(&s.reason, 400)
            )
        })
        .collect()
}

/// One `!verifier 80 <address>` block for an outstanding allocation, in the chosen layout.
pub fn verifier_80(
    out: &mut String,
    log: &LogSummary,
    allocation: &Allocation,
    options: &TextOptions,
) {
    match options.style {
        WindbgStyle::Current => current::verifier_80(out, log, allocation, options),
        WindbgStyle::Classic => classic::verifier_80(out, log, allocation, options),
    }
}

/// One record of a `!verifier 80` block: what it prints for every matching log entry.
#[derive(Debug, Clone, Copy)]
pub struct PoolBlock<'a> {
    pub address: u64,
    pub size: u64,
    pub thread: u64,
    pub stack: &'a [crate::verifier::model::Frame],
}

/// The records a `!verifier 80 <address>` block prints, newest first: with `history`, every
/// log record of the block's range (allocations and frees, as `!verifier 80` lists them);
/// otherwise the newest allocation record. Empty when the log read holds none.
pub fn pool_blocks<'a>(allocation: &'a Allocation, history: bool) -> Vec<PoolBlock<'a>> {
    if history && !allocation.history.is_empty() {
        allocation
            .history
            .iter()
            .map(|r| PoolBlock {
                address: r.address,
                size: r.size,
                thread: r.thread,
                stack: &r.stack,
            })
            .collect()
    } else if !allocation.stack.is_empty() {
        vec![PoolBlock {
            address: allocation.address,
            size: allocation.requested_size.unwrap_or(allocation.size),
            thread: allocation.thread.unwrap_or(0),
            stack: &allocation.stack,
        }]
    } else {
        Vec::new()
    }
}

/// The line for a block whose allocation record was not found, saying how much was searched.
pub fn no_record_line(log: &LogSummary, address: u64) -> String {
    let parsed = log.entries_parsed();
    if parsed < log.length {
        format!(
            "No allocation record for pool block {address:016x} among the {parsed:#x} newest \
             log entries read."
        )
    } else {
        format!(
            "No allocation record for pool block {address:016x} is left in the log (overwritten \
             since)."
        )
    }
}

/// `Pool block …, Size …, Thread …` and the frames, `pointer_digits`-wide hex (both layouts;
/// 16 on x64).
pub fn pool_block(out: &mut String, block: &PoolBlock<'_>, pointer_digits: usize) {
    let w = pointer_digits;
    let _ = writeln!(
        out,
        "Pool block {:0w$x}, Size {:0w$x}, Thread {:0w$x}",
        block.address, block.size, block.thread
    );
    for frame in block.stack {
        let _ = writeln!(out, "{:0w$x} {}", frame.address, frame.symbol);
    }
}

/// The leak table: allocation sites, biggest first.
fn render_sites(out: &mut String, report: &LeakReport, group_by: GroupBy) {
    let _ = writeln!(out, "Leak table (by {group_by})");
    let rows = sites(report, group_by);
    if rows.is_empty() {
        out.push_str("No outstanding tracked allocations.\n");
        return;
    }
    let bytes: Vec<String> = rows.iter().map(|s| format!("{:#x}", s.bytes)).collect();
    let site_w = rows.iter().map(|s| s.site.len()).max().unwrap_or(0).max(4);
    let driver_w = rows
        .iter()
        .map(|s| s.driver.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let count_w = rows
        .iter()
        .map(|s| s.count.to_string().len())
        .max()
        .unwrap_or(0)
        .max(5);
    let bytes_w = bytes.iter().map(String::len).max().unwrap_or(0).max(5);
    let _ = writeln!(
        out,
        "{:<site_w$}  {:<driver_w$}  {:>count_w$}  {:>bytes_w$}",
        "Site", "Driver", "Count", "Bytes"
    );
    for (site, bytes) in rows.iter().zip(&bytes) {
        let _ = writeln!(
            out,
            "{:<site_w$}  {:<driver_w$}  {:>count_w$}  {:>bytes_w$}",
            site.site, site.driver, site.count, bytes
        );
    }
}

/// `Symbols: nt from ntkrnlmp.pdb; myfault from myfault.pdb`: where each module's symbols came
/// from (`target.symbol_sources`; the JSON has the full paths and the reasons), without the
/// newline; `None` when the report does not say.
pub fn symbols_line(report: &LeakReport) -> Option<String> {
    use crate::verifier::model::SourceKind;
    let sources = &report.target.symbol_sources;
    if sources.is_empty() {
        return None;
    }
    let file = |location: &Option<String>| {
        let location = location.as_deref().unwrap_or_default();
        location
            .rsplit(['/', '\\', '!'])
            .next()
            .unwrap_or(location)
            .to_string()
    };
    let parts: Vec<String> = sources
        .iter()
        .map(|s| match s.source {
            SourceKind::Pdb => format!("{} from {}", s.module, file(&s.location)),
            SourceKind::Isf => format!("{} from the ISF table {}", s.module, file(&s.location)),
            SourceKind::None => format!("{}: none", s.module),
        })
        .collect();
    Some(format!("Symbols: {}", parts.join("; ")))
}

/// "Complete: …" or "INCOMPLETE: <reasons>", without the newline.
pub fn completeness_line(report: &LeakReport) -> String {
    let partial_log = report.verifier.log.as_ref().filter(|log| !log.whole_ring);
    if report.complete && report.incomplete_reasons.is_empty() {
        match partial_log {
            Some(log) => format!(
                "Complete: every tracked allocation and its newest log record was read (the log \
                 newest-first, {:#x} of {:#x} entries holding {:#x} records, until every \
                 allocation had its stack).",
                log.entries_parsed(),
                log.length,
                log.records
            ),
            None => "Complete: every tracked allocation and log record was read.".to_string(),
        }
    } else if report.incomplete_reasons.is_empty() {
        "INCOMPLETE: (no reason recorded)".to_string()
    } else {
        format!("INCOMPLETE: {}", report.incomplete_reasons.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frozen_line_says_each_stop_when_there_are_several() {
        use crate::verifier::model::StopPurpose;
        let stop = |purpose, frozen_s, new_boot| TargetStop {
            purpose,
            frozen_s,
            new_boot,
        };
        assert_eq!(
            frozen_summary(&[stop(StopPurpose::Read, 0.4021, false)]),
            "frozen 0.402 s in one stop"
        );
        assert_eq!(
            frozen_summary(&[
                stop(StopPurpose::Identify, 0.011, false),
                stop(StopPurpose::Read, 0.401, true)
            ]),
            "frozen 0.412 s in 2 stops (identify 0.011 s, read 0.401 s after a reboot)"
        );
    }

    #[test]
    fn styles_parse_and_print() {
        use clap::ValueEnum;
        for style in [WindbgStyle::Current, WindbgStyle::Classic] {
            assert_eq!(WindbgStyle::from_str(style.as_str(), false), Ok(style));
        }
        assert_eq!(WindbgStyle::default(), WindbgStyle::Current);
    }
}
