//! The text output: WinDbg-compatible `!verifier 3 <driver>` and `!verifier 80 <address>` blocks
//! in the Windows 7 style of the reference session (verifier.md §1, §6.4, §9), then the leak table
//! of allocation sites and a completeness line.

use std::fmt::Write as _;

use super::{sites, GroupBy};
use crate::verifier::model::{Allocation, DriverReport, Frame, LeakReport, LogSummary};

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
}

impl Default for TextOptions {
    fn default() -> Self {
        TextOptions {
            group_by: GroupBy::Caller,
            prompt: Some("0: kd> ".to_string()),
            history: false,
        }
    }
}

/// The line `!verifier` (Win7-era kdexts) prints for level bit 0x8.
const POOL_TRACKING_TEXT: &str = "All pool allocations checked on unload";

/// Label (padded as in the reference) and `MmVerifierData` field of each summary counter line.
const SUMMARY: &[(&str, &str)] = &[
    ("RaiseIrqls                             ", "RaiseIrqls"),
    (
        "AcquireSpinLocks                       ",
        "AcquireSpinLocks",
    ),
    (
        "Synch Executions                       ",
        "SynchronizeExecutions",
    ),
    ("Trims                                  ", "Trims"),
    (
        "Pool Allocations Attempted             ",
        "AllocationsAttempted",
    ),
    (
        "Pool Allocations Succeeded             ",
        "AllocationsSucceeded",
    ),
    (
        "Pool Allocations Succeeded SpecialPool ",
        "AllocationsSucceededSpecialPool",
    ),
    (
        "Pool Allocations With NO TAG           ",
        "AllocationsWithNoTag",
    ),
    (
        "Pool Allocations Failed                ",
        "AllocationsFailed",
    ),
    (
        "Resource Allocations Failed Deliberately   ",
        "AllocationsFailedDeliberately",
    ),
];

/// Label, count field and byte field of each pool summary line.
const POOL_SUMMARY: &[(&str, &str, &str)] = &[
    (
        "Current paged pool allocations         ",
        "CurrentPagedPoolAllocations",
        "PagedBytes",
    ),
    (
        "Peak paged pool allocations            ",
        "PeakPagedPoolAllocations",
        "PeakPagedBytes",
    ),
    (
        "Current nonpaged pool allocations      ",
        "CurrentNonPagedPoolAllocations",
        "NonPagedBytes",
    ),
    (
        "Peak nonpaged pool allocations         ",
        "PeakNonPagedPoolAllocations",
        "PeakNonPagedBytes",
    ),
];

/// Renders the whole report: per driver a `!verifier 3` block, per outstanding allocation a
/// `!verifier 80` block, then the leak table and the completeness line. Every line ends in `\n`.
pub fn render(report: &LeakReport, options: &TextOptions) -> String {
    let mut out = String::new();
    for (i, driver) in report.drivers.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        render_driver(&mut out, report, driver, options);
        match &report.verifier.log {
            Some(log) => {
                for allocation in &driver.allocations {
                    out.push('\n');
                    render_log_search(&mut out, log, allocation, options);
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
    out
}

/// One `!verifier 3 <driver>` block (verifier.md §1): level and options, the global statistics,
/// the driver's row and counters, and its allocation table.
pub fn render_driver(
    out: &mut String,
    report: &LeakReport,
    driver: &DriverReport,
    options: &TextOptions,
) {
    let verifier = &report.verifier;
    let stat = |name: &str| verifier.statistics.get(name).copied().unwrap_or(0);
    if let Some(prompt) = &options.prompt {
        let _ = writeln!(out, "{prompt}!verifier 3 {}", driver.name);
    }
    let _ = writeln!(
        out,
        "Verify Level {:x} ... enabled options are:",
        verifier.level
    );
    for text in option_lines(verifier.level, &verifier.flags) {
        let _ = writeln!(out, "      {text}");
    }
    out.push_str("Summary of All Verifier Statistics\n");
    for (label, field) in SUMMARY {
        let _ = writeln!(out, "{label}{:#x}", stat(field));
    }
    for (label, count, bytes) in POOL_SUMMARY {
        let _ = writeln!(
            out,
            "{label}{:#x} for {:08X} bytes",
            stat(count),
            stat(bytes)
        );
    }
    out.push_str("Driver Verification List\n");
    out.push_str("Entry     State           NonPagedPool   PagedPool   Module\n");
    let c = &driver.counters;
    let _ = writeln!(
        out,
        "{:016x} {:<17}{:08x}       {:08x}    {}",
        driver.entry, driver.state, c.nonpaged_bytes, c.paged_bytes, driver.name
    );
    let _ = writeln!(
        out,
        "Current Pool Allocations  {:08x}    {:08x}",
        c.current_nonpaged_allocations, c.current_paged_allocations
    );
    let _ = writeln!(
        out,
        "Current Pool Bytes        {:08x}    {:08x}",
        c.nonpaged_bytes, c.paged_bytes
    );
    let _ = writeln!(
        out,
        "Peak Pool Allocations     {:08x}    {:08x}",
        c.peak_nonpaged_allocations, c.peak_paged_allocations
    );
    let _ = writeln!(
        out,
        "Peak Pool Bytes           {:08x}    {:08x}",
        c.peak_nonpaged_bytes, c.peak_paged_bytes
    );
    out.push_str("PoolAddress  SizeInBytes    Tag       CallersAddress\n");
    for a in &driver.allocations {
        out.push_str(&allocation_row(a));
        out.push('\n');
    }
}

/// One row of the `!verifier 3` allocation table, without the newline.
pub fn allocation_row(a: &Allocation) -> String {
    format!(
        "{:016x}     0x{:08x}     {:<4}      {:016x}",
        a.address, a.size, a.tag, a.caller
    )
}

/// The option lines under "Verify Level": one per set bit of `level`, from `flags` (one text per
/// set bit, lowest first), except bit 0x8, which reads as the Win7 reference prints it.
fn option_lines(level: u64, flags: &[String]) -> Vec<String> {
    let bits: Vec<u64> = (0..64)
        .map(|bit| 1u64 << bit)
        .filter(|mask| level & mask != 0)
        .collect();
    if bits.len() == flags.len() {
        bits.iter()
            .zip(flags)
            .map(|(&bit, text)| {
                if bit == 0x8 {
                    POOL_TRACKING_TEXT.to_string()
                } else {
                    text.clone()
                }
            })
            .collect()
    } else {
        // The texts do not line up with the bits: print them as given.
        flags
            .iter()
            .map(|text| {
                if text == "Pool tracking" {
                    POOL_TRACKING_TEXT.to_string()
                } else {
                    text.clone()
                }
            })
            .collect()
    }
}

/// One `!verifier 80 <address>` block (verifier.md §6.4) for an outstanding allocation.
pub fn render_log_search(
    out: &mut String,
    log: &LogSummary,
    allocation: &Allocation,
    options: &TextOptions,
) {
    if let Some(prompt) = &options.prompt {
        let _ = writeln!(out, "{prompt}!verifier 80 {:016x}", allocation.address);
    }
    out.push_str("Log of recent kernel pool Allocate and Free operations:\n");
    let _ = writeln!(out, "There are up to {:#x} entries in the log.", log.length);
    let _ = writeln!(
        out,
        "Parsing 0x{:016x} log entries, searching for address 0x{:016x}.",
        log.length, allocation.address
    );
    let separator = "=".repeat(70);
    if options.history && !allocation.history.is_empty() {
        for record in &allocation.history {
            let _ = writeln!(out, "{separator}");
            pool_block(
                out,
                record.address,
                record.size,
                record.thread,
                &record.stack,
            );
        }
    } else if !allocation.stack.is_empty() {
        let _ = writeln!(out, "{separator}");
        pool_block(
            out,
            allocation.address,
            allocation.requested_size.unwrap_or(allocation.size),
            allocation.thread.unwrap_or(0),
            &allocation.stack,
        );
    } else {
        let _ = writeln!(
            out,
            "No allocation record for pool block {:016x} is left in the log (overwritten since).",
            allocation.address
        );
    }
    let _ = writeln!(
        out,
        "Parsed entry {:016x}/{:016x}...",
        log.length, log.length
    );
    out.push_str("Finished parsing all pool tracking information.\n");
}

fn pool_block(out: &mut String, address: u64, size: u64, thread: u64, stack: &[Frame]) {
    let _ = writeln!(
        out,
        "Pool block {address:016x}, Size {size:016x}, Thread {thread:016x}"
    );
    for frame in stack {
        let _ = writeln!(out, "{:016x} {}", frame.address, frame.symbol);
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

/// "Complete: …" or "INCOMPLETE: <reasons>", without the newline.
pub fn completeness_line(report: &LeakReport) -> String {
    let partial_log = report.verifier.log.as_ref().filter(|log| !log.whole_ring);
    if report.complete && report.incomplete_reasons.is_empty() {
        match partial_log {
            Some(log) => format!(
                "Complete: every tracked allocation and its newest log record was read (the log \
                 newest-first, {:#x} records, until every allocation had its stack).",
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
