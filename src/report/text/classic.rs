//! The Windows 7-era `!verifier` layout of the reference session (verifier.md §1, the ntdebugging
//! "Troubleshooting Pool Leaks Part 6" post, WinDbg of about 2011), reproduced byte for byte when
//! the whole log was read (`--whole-log --windbg-style classic`).

use std::fmt::Write as _;

use super::{no_record_line, pool_block, pool_blocks, TextOptions};
use crate::verifier::facts::WIN7_POOL_TRACKING_TEXT;
use crate::verifier::model::{Allocation, DriverReport, LeakReport, LogSummary};

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

/// Label, count field and byte field of each pool summary line (both layouts).
pub(super) const POOL_SUMMARY: &[(&str, &str, &str)] = &[
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

/// One `!verifier 3 <driver>` block (verifier.md §1): level and options, the global statistics,
/// the driver's row and counters, and its allocation table.
pub fn verifier_3(
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

/// One row of the classic `!verifier 3` allocation table, without the newline.
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
                    WIN7_POOL_TRACKING_TEXT.to_string()
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
                    WIN7_POOL_TRACKING_TEXT.to_string()
                } else {
                    text.clone()
                }
            })
            .collect()
    }
}

/// One `!verifier 80 <address>` block (verifier.md §6.4) for an outstanding allocation. The
/// entry counts are those the pull read: the ring's length after a whole-log read (the
/// reference's `0x…10000`), fewer after a newest-first read that stopped early.
pub fn verifier_80(
    out: &mut String,
    log: &LogSummary,
    allocation: &Allocation,
    options: &TextOptions,
) {
    if let Some(prompt) = &options.prompt {
        let _ = writeln!(out, "{prompt}!verifier 80 {:016x}", allocation.address);
    }
    let parsed = log.entries_parsed();
    out.push_str("Log of recent kernel pool Allocate and Free operations:\n");
    let _ = writeln!(out, "There are up to {:#x} entries in the log.", log.length);
    let _ = writeln!(
        out,
        "Parsing 0x{parsed:016x} log entries, searching for address 0x{:016x}.",
        allocation.address
    );
    let blocks = pool_blocks(allocation, options.history);
    if blocks.is_empty() {
        out.push_str(&no_record_line(log, allocation.address));
        out.push('\n');
    }
    for block in &blocks {
        let _ = writeln!(out, "{}", "=".repeat(70));
        pool_block(out, block, 16);
    }
    let _ = writeln!(out, "Parsed entry {parsed:016x}/{parsed:016x}...");
    out.push_str("Finished parsing all pool tracking information.\n");
}
