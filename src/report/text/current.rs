//! `!verifier 3` and `!verifier 80` as today's WinDbg prints them, whatever the target: checked
//! against the public samples in `tests/data/windbg_samples/` (README there: Microsoft's C4/0x62
//! page, a 2021 WinDbg on Windows 7, GitHub issues pasting Windows 10 and 11 sessions). The flag
//! lists follow the target's build ([`facts::windbg_flag_list`]).
//!
//! Widths: addresses and the `!verifier 80` entry count are pointer-width (16 hex digits on x64,
//! 8 on x86, as the samples show); the functions taking `pointer_digits` exist so the tests can
//! check the x86 samples too. kdleak's targets are x64: [`POINTER_DIGITS`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::classic::POOL_SUMMARY;
use super::{no_record_line, pool_block, pool_blocks, TextOptions};
use crate::verifier::facts::{self, AUTOMATIC_CHECKS, RESERVED_FLAG_NAME};
use crate::verifier::model::{Allocation, DriverReport, LeakReport, LogSummary};

/// Hex digits of a pointer on the x64 targets kdleak reads.
pub const POINTER_DIGITS: usize = 16;

/// The separator WinDbg prints before each `!verifier 80` record (70 `=`, as in the reference
/// session; Microsoft's pages render it as a Markdown heading).
const RECORD_SEPARATOR: &str =
    "======================================================================";

/// The first group of summary counters: label padded to 21 columns (every sample).
const LOCK_SUMMARY: &[(&str, &str)] = &[
    ("RaiseIrqls", "RaiseIrqls"),
    ("AcquireSpinLocks", "AcquireSpinLocks"),
    ("Synch Executions", "SynchronizeExecutions"),
    ("Trims", "Trims"),
];

/// The pool counters: label padded to 39 columns, as in the Windows 7-era layout; today's
/// WinDbg no longer prints "Resource Allocations Failed Deliberately".
const POOL_COUNTERS: &[(&str, &str)] = &[
    ("Pool Allocations Attempted", "AllocationsAttempted"),
    ("Pool Allocations Succeeded", "AllocationsSucceeded"),
    (
        "Pool Allocations Succeeded SpecialPool",
        "AllocationsSucceededSpecialPool",
    ),
    ("Pool Allocations With NO TAG", "AllocationsWithNoTag"),
    ("Pool Allocations Failed", "AllocationsFailed"),
];

/// One `!verifier 3 <driver>` block: the flag lists, the global statistics, the driver's
/// entry with its counters and outstanding allocations.
pub fn verifier_3(
    out: &mut String,
    report: &LeakReport,
    driver: &DriverReport,
    options: &TextOptions,
) {
    if let Some(prompt) = &options.prompt {
        let _ = writeln!(out, "{prompt}!verifier 3 {}", driver.name);
    }
    out.push_str(&driver_report(report, driver, POINTER_DIGITS));
}

/// The output of [`verifier_3`] after the command line, for `pointer_digits`-wide pointers.
pub fn driver_report(report: &LeakReport, driver: &DriverReport, pointer_digits: usize) -> String {
    let mut out = String::from("\n");
    out.push_str(&flags_block(report.verifier.level, report.target.build));
    out.push_str(&summary_block(&report.verifier.statistics));
    out.push('\n');
    out.push_str(DRIVER_LIST_HEADING);
    out.push_str(&driver_entry(driver, pointer_digits));
    out
}

/// `Verify Flags Level 0x…`, the STANDARD and ADDITIONAL lists of the target's build with each
/// flag checked or not, a RESERVED list for set bits the build does not name, and the legend;
/// ends with the blank lines before "Summary of All Verifier Statistics".
pub fn flags_block(level: u64, build: u32) -> String {
    let list = facts::windbg_flag_list(build);
    let mark = |bit: u64| if level & bit != 0 { 'X' } else { ' ' };
    let mut out = String::new();
    let _ = writeln!(out, "Verify Flags Level 0x{level:08x}\n");
    out.push_str("  STANDARD FLAGS:\n");
    let _ = writeln!(out, "    [X] (0x{:08x}) {AUTOMATIC_CHECKS}", 0);
    for flag in list.standard {
        let _ = writeln!(
            out,
            "    [{}] (0x{:08x}) {}",
            mark(flag.bit),
            flag.bit,
            flag.name
        );
    }
    out.push_str("\n  ADDITIONAL FLAGS:\n");
    for flag in list.additional {
        let _ = writeln!(
            out,
            "    [{}] (0x{:08x}) {}",
            mark(flag.bit),
            flag.bit,
            flag.name
        );
    }
    out.push('\n');
    let named = list
        .standard
        .iter()
        .chain(list.additional)
        .fold(0u64, |bits, flag| bits | flag.bit);
    let reserved = level & !named;
    if reserved != 0 {
        out.push_str("  RESERVED FLAGS (use of these flags is unsupported):\n");
        for bit in (0..64).map(|n| 1u64 << n).filter(|bit| reserved & bit != 0) {
            let _ = writeln!(out, "    [X] (0x{bit:08x}) {RESERVED_FLAG_NAME}");
        }
        out.push('\n');
    }
    out.push_str("    [X] Indicates flag is enabled\n\n");
    // Every public sample without a RESERVED list has two blank lines here, every sample with
    // one has one (tests/data/windbg_samples: the C4/0x62 page and the Windows 7 post; the
    // ebpf-for-windows, openzfs and MIDI sessions).
    if reserved == 0 {
        out.push('\n');
    }
    out
}

/// "Summary of All Verifier Statistics" with its three indented groups (IRQL and lock
/// counters, pool counters, current and peak pool allocations), each group's last line
/// included, no blank line after it.
pub fn summary_block(statistics: &BTreeMap<String, u64>) -> String {
    let stat = |name: &str| statistics.get(name).copied().unwrap_or(0);
    let mut out = String::from("Summary of All Verifier Statistics\n\n");
    for (label, field) in LOCK_SUMMARY {
        let _ = writeln!(out, "  {label:<21}{:#x}", stat(field));
    }
    out.push('\n');
    for (label, field) in POOL_COUNTERS {
        let _ = writeln!(out, "  {label:<39}{:#x}", stat(field));
    }
    out.push('\n');
    for (label, count, bytes) in POOL_SUMMARY {
        let _ = writeln!(
            out,
            "  {label}{:#x} for {:08X} bytes",
            stat(count),
            stat(bytes)
        );
    }
    out
}

/// The heading of the driver list, underlined, and the blank line after it.
pub const DRIVER_LIST_HEADING: &str = "Driver Verification List\n------------------------\n\n";

/// The state in parentheses after the driver's name, from its suspect entry's Loads and
/// Unloads (inferred from the samples: a driver caught leaking at unload, Loads = Unloads = 1,
/// reads "Loaded and Unloaded"; a running one "Loaded").
pub fn driver_state(driver: &DriverReport) -> &'static str {
    match (driver.loads, driver.unloads) {
        (Some(loads), Some(unloads)) if loads > 0 && unloads > 0 => "Loaded and Unloaded",
        (Some(0), Some(unloads)) if unloads > 0 => "Unloaded",
        (Some(_), Some(_)) => "Loaded",
        _ => match driver.state.as_str() {
            "Unloaded" => "Unloaded",
            _ => "Loaded",
        },
    }
}

/// One driver of the list: `nt!_VF_TARGET_DRIVER 0x…: name (state)`, its pool statistics
/// (nonpaged / paged), the contiguous-memory counters when the build has them, and the
/// `Pool Allocations:` table.
pub fn driver_entry(driver: &DriverReport, pointer_digits: usize) -> String {
    let w = pointer_digits;
    let c = &driver.counters;
    let mut out = String::new();
    match driver.target_driver {
        Some(target) => {
            let _ = writeln!(
                out,
                "nt!_VF_TARGET_DRIVER 0x{target:0w$x}: {} ({})\n",
                driver.name,
                driver_state(driver)
            );
        }
        // A report from before the `_VF_TARGET_DRIVER` address was kept: no address to show.
        None => {
            let _ = writeln!(out, "{} ({})\n", driver.name, driver_state(driver));
        }
    }
    out.push_str("    Pool Allocation Statistics: ( NonPagedPool / PagedPool )\n\n");
    for (label, nonpaged, paged) in [
        (
            "Current Pool Allocations:",
            c.current_nonpaged_allocations,
            c.current_paged_allocations,
        ),
        ("Current Pool Bytes:", c.nonpaged_bytes, c.paged_bytes),
        (
            "Peak Pool Allocations:",
            c.peak_nonpaged_allocations,
            c.peak_paged_allocations,
        ),
        (
            "Peak Pool Bytes:",
            c.peak_nonpaged_bytes,
            c.peak_paged_bytes,
        ),
    ] {
        let _ = writeln!(out, "      {label:<26}( 0x{nonpaged:08x} / 0x{paged:08x} )");
    }
    let contiguous =
        c.contiguous_memory_bytes.is_some() || c.peak_contiguous_memory_bytes.is_some();
    if contiguous {
        for (label, value) in [
            ("Contiguous Memory Bytes:", c.contiguous_memory_bytes),
            (
                "Peak Contiguous Memory Bytes:",
                c.peak_contiguous_memory_bytes,
            ),
        ] {
            let _ = writeln!(out, "      {label:<31}0x{:08x}", value.unwrap_or(0));
        }
    }
    out.push_str("\n    Pool Allocations:\n\n");
    for line in allocation_table_header(w) {
        out.push_str(&line);
        out.push('\n');
    }
    for a in &driver.allocations {
        out.push_str(&allocation_row(a, w));
        out.push('\n');
    }
    if contiguous {
        // kdexts cannot list contiguous allocations from public symbols; kdleak has only those.
        out.push_str("\n    Contiguous allocations are not displayed with public symbols.\n");
    }
    out
}

/// The table's header and dash rule: `Address`, `Length`, `Tag`, `Caller Address` columns of
/// pointer, 10, 4 and pointer width, two spaces apart, the header padded to full width (so it
/// ends in spaces, as the samples do). The caller column reads `Caller` when a pointer is
/// narrower than `Caller Address` (x86).
pub fn allocation_table_header(pointer_digits: usize) -> [String; 2] {
    let w = pointer_digits + 2;
    let caller = if w >= "Caller Address".len() {
        "Caller Address"
    } else {
        "Caller"
    };
    [
        format!(
            "      {:<w$}  {:<10}  {:<4}  {:<w$}",
            "Address", "Length", "Tag", caller
        ),
        format!(
            "      {}  {}  {}  {}",
            "-".repeat(w),
            "-".repeat(10),
            "-".repeat(4),
            "-".repeat(w)
        ),
    ]
}

/// One row: `0x`-prefixed address, length and caller, the tag, and the caller's symbol when it
/// resolves to a module (`module!Function+0xoff`); without the newline.
pub fn allocation_row(a: &Allocation, pointer_digits: usize) -> String {
    let w = pointer_digits;
    let mut row = format!(
        "      0x{:0w$x}  0x{:08x}  {:<4}  0x{:0w$x}",
        a.address, a.size, a.tag, a.caller
    );
    // A caller outside every module symbolizes to its raw address: nothing to add.
    if !a.caller_symbol.is_empty() && !a.caller_symbol.starts_with("0x") {
        row.push_str("  ");
        row.push_str(&a.caller_symbol);
    }
    row
}

/// One `!verifier 80 <address>` block: the header lines separated by blank lines, then each
/// record (newest first; with `--history` every allocation and free of the block's range, as
/// WinDbg lists them) after a separator, then the progress lines. The entry counts are those
/// the pull read: fewer than the ring's length when the newest-first read stopped early.
pub fn verifier_80(
    out: &mut String,
    log: &LogSummary,
    allocation: &Allocation,
    options: &TextOptions,
) {
    if let Some(prompt) = &options.prompt {
        let _ = writeln!(out, "{prompt}!verifier 80 {:016x}", allocation.address);
    }
    out.push_str(&log_search(
        log,
        allocation,
        options.history,
        POINTER_DIGITS,
    ));
}

/// The output of [`verifier_80`] after the command line, for `pointer_digits`-wide pointers.
pub fn log_search(
    log: &LogSummary,
    allocation: &Allocation,
    history: bool,
    pointer_digits: usize,
) -> String {
    let w = pointer_digits;
    let mut out = String::new();
    let parsed = log.entries_parsed();
    out.push_str("\nLog of recent kernel pool Allocate and Free operations:\n\n");
    let _ = writeln!(
        out,
        "There are up to {:#x} entries in the log.\n",
        log.length
    );
    let _ = writeln!(
        out,
        "Parsing 0x{parsed:0w$x} log entries, searching for address 0x{:0w$x}.",
        allocation.address
    );
    let blocks = pool_blocks(allocation, history);
    if blocks.is_empty() {
        out.push('\n');
        out.push_str(&no_record_line(log, allocation.address));
        out.push('\n');
    }
    for block in &blocks {
        let _ = writeln!(out, "\n{RECORD_SEPARATOR}\n");
        pool_block(&mut out, block, w);
    }
    let _ = writeln!(out, "\nParsed entry {parsed:0w$x}/{parsed:0w$x}...");
    out.push_str("Finished parsing all pool tracking information.\n");
    out
}
