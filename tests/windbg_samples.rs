//! Today's WinDbg layout (`--windbg-style current`) against the public samples of
//! `tests/data/windbg_samples/` (README there: where each comes from): kdleak renders each
//! sample's values and must print the sample's lines, spacing included. x86 samples are checked
//! with 8-digit pointers, x64 ones with 16.

use std::collections::BTreeMap;

use kdleak::report::text::current::{self, DRIVER_LIST_HEADING};
use kdleak::verifier::model::{
    Allocation, DriverCounters, DriverReport, Frame, LeakReport, LogRecord, LogSummary,
    TargetSummary, VerifierState, SCHEMA_VERSION,
};

fn sample(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/windbg_samples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines of `text` from the first starting with `from` up to (not including) the first
/// after it starting with `to`, or to the end; each with its newline.
fn section(text: &str, from: &str, to: Option<&str>) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(from))
        .unwrap_or_else(|| panic!("no line starting with {from:?}"));
    let end = to
        .and_then(|to| {
            lines[start + 1..]
                .iter()
                .position(|l| l.starts_with(to))
                .map(|i| start + 1 + i)
        })
        .unwrap_or(lines.len());
    lines[start..end].concat()
}

/// Line by line, with a message naming the first line that differs.
fn assert_lines_eq(got: &str, want: &str, what: &str) {
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "{what}: line {} differs", i + 1);
    }
    assert_eq!(got, want, "{what}: line count or final newline differs");
}

#[test]
fn flag_lists_match_each_sample_byte_for_byte() {
    for (file, level, build) in [
        ("blog-poolhittag-win7-x86.txt", 0x8, 7601),
        ("docs-c4-0x62-win81-x86.txt", 0x209bb, 9600),
        ("ebpf-for-windows-1091-x64.txt", 0x1209bb, 19041),
        ("midi-366-win11-x64.txt", 0x1209bb, 22000),
    ] {
        let want = section(
            &sample(file),
            "Verify Flags Level",
            Some("Summary of All Verifier Statistics"),
        );
        assert_lines_eq(&current::flags_block(level, build), &want, file);
    }
    // Cut short in the issue: a prefix.
    let want = section(
        &sample("ebpf-for-windows-2092-x64.txt"),
        "Verify Flags Level",
        None,
    );
    let got = current::flags_block(0x1209bf, 19041);
    assert!(got.starts_with(&want), "{got}\n--- want a prefix:\n{want}");
    let want = section(
        &sample("openzfs-124-x64.txt"),
        "  STANDARD FLAGS:",
        Some("Summary of All Verifier Statistics"),
    );
    assert!(current::flags_block(0x1209bb, 19041).ends_with(&want));
}

#[test]
fn the_windows_8_1_list_is_every_flag_of_the_ovs_sample() {
    // That WinDbg printed `[X](0x…)`; today's prints a space after the mark.
    let text = sample("ovs-issues-50-win81-x64.txt").replace("[X](", "[X] (");
    let level = text
        .lines()
        .filter_map(|l| l.split("(0x").nth(1))
        .map(|rest| u64::from_str_radix(&rest[..8], 16).unwrap())
        .fold(0, |all, bit| all | bit);
    let got = current::flags_block(level, 9600);
    assert!(got.contains(&text), "{got}\n--- want:\n{text}");
}

/// The `MmVerifierData` field behind each summary label (verifier.md §1).
const LABELS: &[(&str, &str, Option<&str>)] = &[
    ("RaiseIrqls", "RaiseIrqls", None),
    ("AcquireSpinLocks", "AcquireSpinLocks", None),
    ("Synch Executions", "SynchronizeExecutions", None),
    ("Trims", "Trims", None),
    ("Pool Allocations Attempted", "AllocationsAttempted", None),
    ("Pool Allocations Succeeded", "AllocationsSucceeded", None),
    (
        "Pool Allocations Succeeded SpecialPool",
        "AllocationsSucceededSpecialPool",
        None,
    ),
    ("Pool Allocations With NO TAG", "AllocationsWithNoTag", None),
    ("Pool Allocations Failed", "AllocationsFailed", None),
    (
        "Current paged pool allocations",
        "CurrentPagedPoolAllocations",
        Some("PagedBytes"),
    ),
    (
        "Peak paged pool allocations",
        "PeakPagedPoolAllocations",
        Some("PeakPagedBytes"),
    ),
    (
        "Current nonpaged pool allocations",
        "CurrentNonPagedPoolAllocations",
        Some("NonPagedBytes"),
    ),
    (
        "Peak nonpaged pool allocations",
        "PeakNonPagedPoolAllocations",
        Some("PeakNonPagedBytes"),
    ),
];

/// The statistics a sample's summary lines show, by `MmVerifierData` field.
fn statistics_of(summary: &str) -> BTreeMap<String, u64> {
    let mut stats = BTreeMap::new();
    for line in summary.lines() {
        let line = line.trim();
        // Longest label first: "Pool Allocations Succeeded SpecialPool" before "… Succeeded".
        let mut labels: Vec<_> = LABELS.iter().collect();
        labels.sort_by_key(|(label, ..)| std::cmp::Reverse(label.len()));
        let Some((label, count, bytes)) = labels.into_iter().find(|(l, ..)| line.starts_with(l))
        else {
            continue;
        };
        let mut words = line[label.len()..].split_whitespace();
        let value = words.next().unwrap();
        stats.insert(
            count.to_string(),
            u64::from_str_radix(value.trim_start_matches("0x"), 16).unwrap(),
        );
        if let Some(bytes) = bytes {
            assert_eq!(words.next(), Some("for"));
            let value = u64::from_str_radix(words.next().unwrap(), 16).unwrap();
            stats.insert(bytes.to_string(), value);
        }
    }
    stats
}

#[test]
fn statistics_match_each_sample_byte_for_byte() {
    for file in [
        "blog-poolhittag-win7-x86.txt",
        "docs-c4-0x62-win81-x86.txt",
        "midi-366-win11-x64.txt",
    ] {
        let text = sample(file);
        let want = section(&text, "Summary of All Verifier Statistics", None);
        let want: String = want
            .split_inclusive('\n')
            .take_while(|l| !l.starts_with("  Peak nonpaged"))
            .chain(
                want.split_inclusive('\n')
                    .find(|l| l.starts_with("  Peak nonpaged")),
            )
            .collect();
        let stats = statistics_of(&want);
        assert_eq!(stats.len(), 17, "{file}: every counter parsed");
        assert_lines_eq(&current::summary_block(&stats), &want, file);
    }
    // Byte counts stay uppercase in today's WinDbg too (ebpf-for-windows #2197, 2023).
    let line = sample("ebpf-for-windows-2197-x64.txt");
    let stats = statistics_of(&line);
    assert!(current::summary_block(&stats).contains(line.trim_start()));
}

fn frame(address: u64, symbol: &str) -> Frame {
    Frame {
        address,
        symbol: symbol.to_string(),
    }
}

fn allocation(address: u64, size: u64, tag: &str, caller: u64, symbol: &str) -> Allocation {
    Allocation {
        address,
        size,
        tag: tag.to_string(),
        caller,
        caller_symbol: symbol.to_string(),
        pool: None,
        stack: Vec::new(),
        requested_size: None,
        thread: None,
        history: Vec::new(),
    }
}

/// Counters in `!verifier`'s order: current allocations, current bytes, peak allocations, peak
/// bytes, each (nonpaged, paged); then contiguous and peak contiguous bytes.
fn counters(values: [(u64, u64); 4], contiguous: Option<(u64, u64)>) -> DriverCounters {
    DriverCounters {
        current_nonpaged_allocations: values[0].0,
        current_paged_allocations: values[0].1,
        nonpaged_bytes: values[1].0,
        paged_bytes: values[1].1,
        peak_nonpaged_allocations: values[2].0,
        peak_paged_allocations: values[2].1,
        peak_nonpaged_bytes: values[3].0,
        peak_paged_bytes: values[3].1,
        contiguous_memory_bytes: contiguous.map(|c| c.0),
        peak_contiguous_memory_bytes: contiguous.map(|c| c.1),
    }
}

fn driver(
    name: &str,
    target: u64,
    loads: u64,
    unloads: u64,
    counters: DriverCounters,
    allocations: Vec<Allocation>,
) -> DriverReport {
    DriverReport {
        name: name.to_string(),
        entry: 0,
        state: "Loaded".to_string(),
        target_driver: Some(target),
        loads: Some(loads),
        unloads: Some(unloads),
        image_base: None,
        image_size: None,
        counters,
        allocations,
    }
}

fn report(build: u32, level: u64, statistics: BTreeMap<String, u64>) -> LeakReport {
    LeakReport {
        schema_version: SCHEMA_VERSION,
        target: TargetSummary {
            build,
            kernel_base: 0,
            time: String::new(),
            connection: String::new(),
            symbol_sources: Vec::new(),
            stops: Vec::new(),
            outside_s: None,
        },
        verifier: VerifierState {
            level,
            flags: Vec::new(),
            option_flags: None,
            pool_tracking: true,
            statistics,
            log: None,
        },
        drivers: Vec::new(),
        sites: Vec::new(),
        complete: true,
        incomplete_reasons: Vec::new(),
        symbols_skipped: Vec::new(),
        bugcheck: None,
        unloaded_modules: Vec::new(),
    }
}

#[test]
fn the_windows_7_post_is_one_whole_verifier_3_block() {
    // A 2021 WinDbg on a Windows 7 x86 target: the whole output after the command, except the
    // trailing spaces of the table header, which the post lost.
    let text = sample("blog-poolhittag-win7-x86.txt");
    let want: String = text.split_inclusive('\n').skip(1).collect();
    let stats = statistics_of(&section(&text, "Summary of All", Some("Driver")));
    let sample_driver = driver(
        "Sample.sys",
        0xa013f2c8,
        1,
        1,
        counters([(0, 1), (0, 0x70), (0, 1), (0, 0x70)], Some((0, 0))),
        vec![allocation(
            0x86491d10,
            0x70,
            "abcd",
            0xa05c1047,
            "Sample!DriverEntry+0x27",
        )],
    );
    let got = current::driver_report(&report(7601, 0x8, stats), &sample_driver, 8);
    let trimmed = |s: &str| s.lines().map(str::trim_end).collect::<Vec<_>>().join("\n");
    assert_lines_eq(&trimmed(&got), &trimmed(&want), "Windows 7 post");
    assert_eq!(got.lines().count(), want.lines().count());
}

#[test]
fn the_x64_driver_entry_matches_ebpf_for_windows_1908() {
    let text = sample("ebpf-for-windows-1908-x64.txt");
    assert!(text.starts_with(DRIVER_LIST_HEADING));
    let want = section(&text, "nt!_VF_TARGET_DRIVER", None);
    let ebpfcore = driver(
        "ebpfcore.sys",
        0xffffcb8438730e10,
        1,
        1,
        counters([(1, 0), (4, 0), (0x6f, 1), (0xbe59, 0x3e)], Some((0, 0))),
        vec![allocation(
            0xffffcb843b87aff0,
            4,
            "ebpf",
            0xfffff803569c53e1,
            "ebpfcore!ebpf_allocate+0x21",
        )],
    );
    let got = current::driver_entry(&ebpfcore, 16);
    assert!(got.starts_with(&want), "{got}\n--- want a prefix:\n{want}");
    assert_eq!(
        &got[want.len()..],
        "\n    Contiguous allocations are not displayed with public symbols.\n"
    );
}

#[test]
fn x64_table_rules_and_rows_match_ebpf_for_windows_2092() {
    let text = sample("ebpf-for-windows-2092-table-x64.txt");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(current::allocation_table_header(16)[1].as_str())
    );
    for (line, address) in lines.zip([0xffffaa0b72a64f40u64, 0xffffaa0b72a66f40]) {
        let a = allocation(
            address,
            0xb2,
            "entv",
            0xfffff8026ade780e,
            "eBPFCore!ebpf_allocate_with_tag+0x1e",
        );
        assert_eq!(current::allocation_row(&a, 16), line);
    }
    // The header, from #1908, with its trailing spaces.
    let header = section(
        &sample("ebpf-for-windows-1908-x64.txt"),
        "      Address",
        None,
    );
    assert_eq!(
        header.lines().take(2).collect::<Vec<_>>(),
        current::allocation_table_header(16)
    );
}

#[test]
fn the_c4_0x62_page_driver_entry_matches_but_for_its_older_case() {
    // 2017: uppercase pool byte counts and callers without offsets; same columns.
    let text = sample("docs-c4-0x62-win81-x86.txt");
    let want = section(
        &text,
        "    Pool Allocation Statistics",
        Some("kd> !verifier 0x80"),
    );
    let mydriver = driver(
        "MyDriver.sys",
        0x84226b28,
        1,
        0,
        counters([(3, 0), (0x1058, 0), (0x13, 0), (0x4a4a0, 0)], Some((0, 0))),
        vec![
            allocation(
                0x982a8fe0,
                0x20,
                "VMdl",
                0x9a3bf6ac,
                "MyDriver!DeviceControlDispatch",
            ),
            allocation(
                0x8645a000,
                0x1008,
                "mdrv",
                0x9a3bf687,
                "MyDriver!DeviceControlDispatch",
            ),
            allocation(
                0x9a836fd0,
                0x30,
                "Vfwi",
                0x9a3bf6ed,
                "MyDriver!GetNecessaryObjects",
            ),
        ],
    );
    let got = current::driver_entry(&mydriver, 8);
    let got = section(
        &got,
        "    Pool Allocation Statistics",
        Some("    Contiguous allocations"),
    );
    assert_lines_eq(&got.to_lowercase(), &want.to_lowercase(), "C4/0x62 page");
}

#[test]
fn the_log_search_matches_the_c4_0x62_page() {
    // The page renders the separator line as an empty Markdown heading and ends at the record.
    let text = sample("docs-c4-0x62-win81-x86.txt");
    let want: String = section(&text, "kd> !verifier 0x80", None)
        .split_inclusive('\n')
        .skip(1)
        .map(|l| {
            if l == "# \n" {
                format!("{}\n", "=".repeat(70))
            } else {
                l.to_string()
            }
        })
        .collect();
    let frames: Vec<Frame> = want
        .lines()
        .skip_while(|l| !l.starts_with("Pool block"))
        .skip(1)
        .map(|l| {
            let (address, symbol) = l.split_once(' ').unwrap();
            frame(u64::from_str_radix(address, 16).unwrap(), symbol)
        })
        .collect();
    assert_eq!(frames.len(), 13);
    let mut block = allocation(0x8645a000, 0x1008, "mdrv", 0x9a3bf687, "");
    block.stack = frames;
    block.requested_size = Some(0x1000);
    block.thread = Some(0x9c158bc0);
    let log = LogSummary {
        length: 0x10000,
        index: 0,
        frames_per_record: 13,
        records: 0x10000,
        whole_ring: true,
        entries_read: Some(0x10000),
    };
    let got = current::log_search(&log, &block, false, 8);
    assert!(got.starts_with(&want), "{got}\n--- want a prefix:\n{want}");
    assert_eq!(
        &got[want.len()..],
        "\nParsed entry 00010000/00010000...\nFinished parsing all pool tracking information.\n"
    );
}

#[test]
fn history_lists_the_free_before_the_allocation_like_the_vista_example() {
    let text = sample("docs-verifier-vista-x86.txt");
    let records: Vec<(u64, u64, u64, Vec<Frame>)> = text
        .split("Pool block ")
        .skip(1)
        .map(|record| {
            let mut lines = record.lines();
            let head: Vec<u64> = lines
                .next()
                .unwrap()
                .split(", ")
                .map(|field| u64::from_str_radix(field.rsplit(' ').next().unwrap(), 16).unwrap())
                .collect();
            let frames = lines
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let l = l.trim_start_matches("# ");
                    let (address, symbol) = l.split_once(' ').unwrap();
                    frame(u64::from_str_radix(address, 16).unwrap(), symbol)
                })
                .collect();
            (head[0], head[1], head[2], frames)
        })
        .collect();
    assert_eq!(records.len(), 2);
    let mut block = allocation(0xa2b1ce98, 0x168, "Vtag", 0, "");
    block.history = records
        .iter()
        .enumerate()
        .map(|(i, (address, size, thread, stack))| LogRecord {
            slot: 10 - i as u64,
            address: *address,
            size: *size,
            thread: *thread,
            stack: stack.clone(),
        })
        .collect();
    let log = LogSummary {
        length: 0x4000,
        index: 10,
        frames_per_record: 13,
        records: 0x4000,
        whole_ring: true,
        entries_read: Some(0x4000),
    };
    let got = current::log_search(&log, &block, true, 8);
    // Each record as the example prints it: the Pool block line, then its frames.
    let mut at = 0;
    for record in text.split("Pool block ").skip(1) {
        let body: String = record
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| format!("{}\n", l.trim_start_matches("# ")))
            .collect();
        let want = format!("Pool block {body}");
        let found = got[at..]
            .find(&want)
            .unwrap_or_else(|| panic!("{got}\n--- want:\n{want}"));
        at += found + want.len();
    }
}
