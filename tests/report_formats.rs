//! The report formats against the reference WinDbg session of `../shared/spec/verifier.md` §1:
//! a hand-built `LeakReport` holding the seed (myfault.sys, ten 0xfb000 `Leak` blocks) renders the
//! seed's `!verifier 3` / `!verifier 80` output byte for byte.

use std::collections::BTreeMap;

use kdleak::report::text::{TextOptions, WindbgStyle};
use kdleak::report::{self, GroupBy};
use kdleak::verifier::model::{
    Allocation, DriverCounters, DriverReport, Frame, LeakReport, LeakSite, LogSummary,
    TargetSummary, VerifierState, SCHEMA_VERSION,
};

/// verifier.md §1, copied verbatim (the whole reference session).
const REFERENCE_SESSION: &str = "\
0: kd> !verifier 3 myfault.sys
Verify Level 8 ... enabled options are:
      All pool allocations checked on unload
Summary of All Verifier Statistics
RaiseIrqls                             0x0
AcquireSpinLocks                       0x0
Synch Executions                       0x0
Trims                                  0x0
Pool Allocations Attempted             0xb
Pool Allocations Succeeded             0xb
Pool Allocations Succeeded SpecialPool 0xa
Pool Allocations With NO TAG           0x1
Pool Allocations Failed                0x0
Resource Allocations Failed Deliberately   0x0
Current paged pool allocations         0x0 for 00000000 bytes
Peak paged pool allocations            0x1 for 00000080 bytes
Current nonpaged pool allocations      0xa for 009CE000 bytes
Peak nonpaged pool allocations         0xa for 009CE000 bytes
Driver Verification List
Entry     State           NonPagedPool   PagedPool   Module
fffffa80031b5830 Loaded           009ce000       00000000    myfault.sys
Current Pool Allocations  0000000a    00000000
Current Pool Bytes        009ce000    00000000
Peak Pool Allocations     0000000a    00000001
Peak Pool Bytes           009ce000    00000080
PoolAddress  SizeInBytes    Tag       CallersAddress
fffffa8005400000     0x000fb000     Leak      fffff8800447d634
fffffa80052fb000     0x000fb000     Leak      fffff8800447d634
fffffa8005200000     0x000fb000     Leak      fffff8800447d634
fffffa80050fb000     0x000fb000     Leak      fffff8800447d634
fffffa8005000000     0x000fb000     Leak      fffff8800447d634
fffffa8004efb000     0x000fb000     Leak      fffff8800447d634
fffffa8004e00000     0x000fb000     Leak      fffff8800447d634
fffffa8004cfb000     0x000fb000     Leak      fffff8800447d634
fffffa8004c00000     0x000fb000     Leak      fffff8800447d634
fffffa8004a66000     0x000fb000     Leak      fffff8800447d634

0: kd> !verifier 80 fffffa8005400000
Log of recent kernel pool Allocate and Free operations:
There are up to 0x10000 entries in the log.
Parsing 0x0000000000010000 log entries, searching for address 0xfffffa8005400000.
======================================================================
Pool block fffffa8005400000, Size 00000000000fa000, Thread fffffa80044ceb60
fffff80001927cc6 nt!VeAllocatePoolWithTagPriority+0x2b6
fffff80001927d3d nt!VerifierExAllocatePoolEx+0x1d
fffff8800447d634 myfault!MyfaultDeviceControl+0x358
fffff8800447d727 myfault!MyfaultDispatch+0xb7
fffff80001932750 nt!IovCallDriver+0xa0
fffff800017a7a97 nt!IopXxxControlFile+0x607
fffff800017a82f6 nt!NtDeviceIoControlFile+0x56
fffff8000148bed3 nt!KiSystemServiceCopyEnd+0x13
Parsed entry 0000000000010000/0000000000010000...
Finished parsing all pool tracking information.
";

/// The seed's ten PoolAddress values, in the reference table's order.
const SEED_ADDRESSES: [u64; 10] = [
    0xfffffa8005400000,
    0xfffffa80052fb000,
    0xfffffa8005200000,
    0xfffffa80050fb000,
    0xfffffa8005000000,
    0xfffffa8004efb000,
    0xfffffa8004e00000,
    0xfffffa8004cfb000,
    0xfffffa8004c00000,
    0xfffffa8004a66000,
];

const SEED_STACK: [(u64, &str); 8] = [
    (0xfffff80001927cc6, "nt!VeAllocatePoolWithTagPriority+0x2b6"),
    (0xfffff80001927d3d, "nt!VerifierExAllocatePoolEx+0x1d"),
    (0xfffff8800447d634, "myfault!MyfaultDeviceControl+0x358"),
    (0xfffff8800447d727, "myfault!MyfaultDispatch+0xb7"),
    (0xfffff80001932750, "nt!IovCallDriver+0xa0"),
    (0xfffff800017a7a97, "nt!IopXxxControlFile+0x607"),
    (0xfffff800017a82f6, "nt!NtDeviceIoControlFile+0x56"),
    (0xfffff8000148bed3, "nt!KiSystemServiceCopyEnd+0x13"),
];

fn seed_stack() -> Vec<Frame> {
    SEED_STACK
        .iter()
        .map(|&(address, symbol)| Frame {
            address,
            symbol: symbol.to_string(),
        })
        .collect()
}

fn seed_allocation(address: u64) -> Allocation {
    Allocation {
        address,
        size: 0xfb000,
        tag: "Leak".to_string(),
        caller: 0xfffff8800447d634,
        caller_symbol: "myfault!MyfaultDeviceControl+0x358".to_string(),
        pool: Some("nonpaged".to_string()),
        stack: seed_stack(),
        requested_size: Some(0xfa000),
        thread: Some(0xfffffa80044ceb60),
        history: Vec::new(),
    }
}

/// The layout of the reference session.
fn classic() -> TextOptions {
    TextOptions {
        style: WindbgStyle::Classic,
        ..TextOptions::default()
    }
}

/// The reference session as a `LeakReport`.
fn seed_report() -> LeakReport {
    let statistics: BTreeMap<String, u64> = [
        ("RaiseIrqls", 0),
        ("AcquireSpinLocks", 0),
        ("SynchronizeExecutions", 0),
        ("Trims", 0),
        ("AllocationsAttempted", 0xb),
        ("AllocationsSucceeded", 0xb),
        ("AllocationsSucceededSpecialPool", 0xa),
        ("AllocationsWithNoTag", 0x1),
        ("AllocationsFailed", 0),
        ("AllocationsFailedDeliberately", 0),
        ("CurrentPagedPoolAllocations", 0),
        ("PagedBytes", 0),
        ("PeakPagedPoolAllocations", 1),
        ("PeakPagedBytes", 0x80),
        ("CurrentNonPagedPoolAllocations", 0xa),
        ("NonPagedBytes", 0x9ce000),
        ("PeakNonPagedPoolAllocations", 0xa),
        ("PeakNonPagedBytes", 0x9ce000),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut report = LeakReport {
        schema_version: SCHEMA_VERSION,
        target: TargetSummary {
            build: 7601,
            kernel_base: 0xfffff8000140f000,
            time: "2026-11-27T04:40:00Z".to_string(),
            connection: "sim:win7-myfault".to_string(),
            symbol_sources: Vec::new(),
            stops: Vec::new(),
            outside_s: None,
        },
        verifier: VerifierState {
            level: 0x8,
            flags: vec!["Pool tracking".to_string()],
            option_flags: None,
            pool_tracking: true,
            statistics,
            log: Some(LogSummary {
                length: 0x10000,
                index: 0x2a,
                frames_per_record: 13,
                records: 0x2a,
                whole_ring: true,
                entries_read: Some(0x10000),
            }),
        },
        drivers: vec![DriverReport {
            name: "myfault.sys".to_string(),
            entry: 0xfffffa80031b5830,
            state: "Loaded".to_string(),
            target_driver: None,
            loads: Some(1),
            unloads: Some(0),
            image_base: Some(0xfffff88004477000),
            image_size: Some(0x8000),
            counters: DriverCounters {
                current_nonpaged_allocations: 0xa,
                current_paged_allocations: 0,
                nonpaged_bytes: 0x9ce000,
                paged_bytes: 0,
                peak_nonpaged_allocations: 0xa,
                peak_paged_allocations: 1,
                peak_nonpaged_bytes: 0x9ce000,
                peak_paged_bytes: 0x80,
                contiguous_memory_bytes: None,
                peak_contiguous_memory_bytes: None,
            },
            allocations: SEED_ADDRESSES.iter().map(|&a| seed_allocation(a)).collect(),
        }],
        sites: Vec::new(),
        complete: true,
        incomplete_reasons: Vec::new(),
        symbols_skipped: Vec::new(),
        bugcheck: None,
        unloaded_modules: Vec::new(),
    };
    report.sites = report::sites(&report, GroupBy::Caller);
    report
}

#[test]
fn reference_constant_is_verbatim_from_the_spec() {
    // Guards the copy above; the spec lives outside the repository, so skip when it is absent.
    let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/spec/verifier.md");
    if let Ok(text) = std::fs::read_to_string(&spec) {
        assert!(text.contains(REFERENCE_SESSION), "verifier.md §1 changed");
    }
    // The copy the line-shape tests read (tests/data/windbg_samples).
    let sample = include_str!("data/windbg_samples/ntdebugging-pool-leaks-part6-win7-x64.txt");
    assert_eq!(sample, REFERENCE_SESSION);
}

#[test]
fn text_starts_with_the_reference_session_byte_for_byte() {
    let text = report::text::render(&seed_report(), &classic());
    if !text.starts_with(REFERENCE_SESSION) {
        for (i, (got, want)) in text.lines().zip(REFERENCE_SESSION.lines()).enumerate() {
            assert_eq!(got, want, "line {}", i + 1);
        }
        panic!("output shorter than the reference:\n{text}");
    }
}

#[test]
fn seed_table_rows_match_the_reference() {
    let text = report::text::render(&seed_report(), &classic());
    // verifier.md §1, verbatim.
    let rows = "\
PoolAddress  SizeInBytes    Tag       CallersAddress
fffffa8005400000     0x000fb000     Leak      fffff8800447d634
fffffa80052fb000     0x000fb000     Leak      fffff8800447d634
fffffa8005200000     0x000fb000     Leak      fffff8800447d634
fffffa80050fb000     0x000fb000     Leak      fffff8800447d634
fffffa8005000000     0x000fb000     Leak      fffff8800447d634
fffffa8004efb000     0x000fb000     Leak      fffff8800447d634
fffffa8004e00000     0x000fb000     Leak      fffff8800447d634
fffffa8004cfb000     0x000fb000     Leak      fffff8800447d634
fffffa8004c00000     0x000fb000     Leak      fffff8800447d634
fffffa8004a66000     0x000fb000     Leak      fffff8800447d634
";
    assert!(text.contains(rows), "{text}");
    let stack = "\
Pool block fffffa8005400000, Size 00000000000fa000, Thread fffffa80044ceb60
fffff80001927cc6 nt!VeAllocatePoolWithTagPriority+0x2b6
fffff80001927d3d nt!VerifierExAllocatePoolEx+0x1d
fffff8800447d634 myfault!MyfaultDeviceControl+0x358
fffff8800447d727 myfault!MyfaultDispatch+0xb7
fffff80001932750 nt!IovCallDriver+0xa0
fffff800017a7a97 nt!IopXxxControlFile+0x607
fffff800017a82f6 nt!NtDeviceIoControlFile+0x56
fffff8000148bed3 nt!KiSystemServiceCopyEnd+0x13
";
    assert!(text.contains(stack), "{text}");
    // One `!verifier 80` block per outstanding allocation.
    for address in SEED_ADDRESSES {
        assert!(text.contains(&format!("0: kd> !verifier 80 {address:016x}\n")));
        assert!(text.contains(&format!(
            "Pool block {address:016x}, Size 00000000000fa000,"
        )));
    }
    assert_eq!(
        text.matches("Finished parsing all pool tracking information.\n")
            .count(),
        10
    );
}

#[test]
fn leak_table_has_one_site_with_ten_blocks() {
    let report = seed_report();
    assert_eq!(
        report.sites,
        vec![LeakSite {
            site: "myfault!MyfaultDeviceControl+0x358".to_string(),
            driver: "myfault.sys".to_string(),
            count: 10,
            bytes: 0x9ce000,
        }]
    );
    let text = report::text::render(&report, &classic());
    let tail = "\
Leak table (by caller)
Site                                Driver       Count     Bytes
myfault!MyfaultDeviceControl+0x358  myfault.sys     10  0x9ce000

Complete: every tracked allocation and log record was read.
";
    assert!(text.ends_with(tail), "{text}");
}

#[test]
fn incomplete_reports_say_why_and_missing_stacks_say_so() {
    let mut report = seed_report();
    report.complete = false;
    report.incomplete_reasons = vec![
        "log: 3 records unreadable".to_string(),
        "driver list: cycle after 12 entries".to_string(),
    ];
    let last = report.drivers[0].allocations.len() - 1;
    report.drivers[0].allocations[last].stack.clear();
    let text = report::text::render(&report, &classic());
    assert!(text
        .ends_with("INCOMPLETE: log: 3 records unreadable; driver list: cycle after 12 entries\n"));
    assert!(text.contains(
        "No allocation record for pool block fffffa8004a66000 is left in the log (overwritten since).\n"
    ));

    report.verifier.log = None;
    let text = report::text::render(&report, &classic());
    assert!(!text.contains("!verifier 80"));
    assert!(text.contains("No allocation stacks: the allocate/free log was not read.\n"));
}

#[test]
fn without_a_prompt_only_the_outputs_are_printed() {
    let options = TextOptions {
        prompt: None,
        ..classic()
    };
    let text = report::text::render(&seed_report(), &options);
    assert!(text.starts_with("Verify Level 8 ... enabled options are:\n"));
    assert!(!text.contains("kd>"));
}

#[test]
fn other_level_bits_use_the_flag_texts() {
    let mut report = seed_report();
    report.verifier.level = 0x9;
    report.verifier.flags = vec!["Special pool".to_string(), "Pool tracking".to_string()];
    let text = report::text::render(&report, &classic());
    assert!(text.contains(
        "Verify Level 9 ... enabled options are:\n      Special pool\n      All pool allocations checked on unload\nSummary"
    ));
}

#[test]
fn json_round_trips_and_has_the_documented_keys() {
    let report = seed_report();
    let json = report::json::render(&report);
    let back: LeakReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);

    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "schema_version",
        "target",
        "verifier",
        "drivers",
        "sites",
        "complete",
        "incomplete_reasons",
    ] {
        assert!(keys.contains(&key), "missing {key} in {keys:?}");
    }
    assert_eq!(value["schema_version"], SCHEMA_VERSION);
    let first = &value["drivers"][0]["allocations"][0];
    assert_eq!(first["address"], "0xfffffa8005400000");
    assert_eq!(first["size"], 0xfb000);
    assert_eq!(first["caller"], "0xfffff8800447d634");
    assert_eq!(first["stack"][0]["address"], "0xfffff80001927cc6");
    assert_eq!(
        first["stack"][7]["symbol"],
        "nt!KiSystemServiceCopyEnd+0x13"
    );
    assert_eq!(value["sites"][0]["bytes"], 0x9ce000);

    // Every key the README's "JSON output" section documents at the top level.
    let doc = include_str!("../README.md");
    for key in &keys {
        assert!(
            doc.contains(&format!("`{key}`")),
            "the README does not document `{key}`"
        );
    }
}

#[test]
fn csv_has_one_row_per_allocation_and_quotes_per_rfc_4180() {
    let mut report = seed_report();
    let csv = report::csv::render(&report);
    let lines: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 11);
    assert_eq!(
        lines[0],
        "driver,address,size,tag,caller,caller_symbol,requested_size,thread,stack"
    );
    assert_eq!(
        lines[1],
        "myfault.sys,0xfffffa8005400000,1028096,Leak,0xfffff8800447d634,\
         myfault!MyfaultDeviceControl+0x358,1024000,0xfffffa80044ceb60,\
         nt!VeAllocatePoolWithTagPriority+0x2b6 <- nt!VerifierExAllocatePoolEx+0x1d <- \
         myfault!MyfaultDeviceControl+0x358 <- myfault!MyfaultDispatch+0xb7 <- \
         nt!IovCallDriver+0xa0 <- nt!IopXxxControlFile+0x607 <- \
         nt!NtDeviceIoControlFile+0x56 <- nt!KiSystemServiceCopyEnd+0x13"
    );

    let a = &mut report.drivers[0].allocations[0];
    a.caller_symbol = "drv!operator new<int,char>+0x10".to_string();
    a.tag = "a\"b,".to_string();
    a.stack.clear();
    a.requested_size = None;
    a.thread = None;
    let csv = report::csv::render(&report);
    let row = csv.split_terminator("\r\n").nth(1).unwrap();
    assert_eq!(
        row,
        "myfault.sys,0xfffffa8005400000,1028096,\"a\"\"b,\",0xfffff8800447d634,\
         \"drv!operator new<int,char>+0x10\",,,"
    );
    assert_eq!(report::csv::quote("line\nbreak"), "\"line\nbreak\"");
    assert_eq!(report::csv::quote("plain"), "plain");
}

#[test]
fn group_by_stack_falls_back_to_the_caller() {
    let mut report = seed_report();
    let whole = SEED_STACK
        .iter()
        .map(|(_, s)| *s)
        .collect::<Vec<_>>()
        .join(" <- ");
    let sites = report::sites(&report, GroupBy::Stack);
    assert_eq!(sites.len(), 1);
    assert_eq!(sites[0].site, whole);
    assert_eq!((sites[0].count, sites[0].bytes), (10, 0x9ce000));

    report.drivers[0].allocations[9].stack.clear();
    report.drivers[0].allocations[8].stack.truncate(3);
    let sites = report::sites(&report, GroupBy::Stack);
    let got: Vec<(&str, u64, u64)> = sites
        .iter()
        .map(|s| (s.site.as_str(), s.count, s.bytes))
        .collect();
    assert_eq!(
        got,
        vec![
            (whole.as_str(), 8, 8 * 0xfb000),
            ("myfault!MyfaultDeviceControl+0x358", 1, 0xfb000),
            (
                "nt!VeAllocatePoolWithTagPriority+0x2b6 <- nt!VerifierExAllocatePoolEx+0x1d <- \
                 myfault!MyfaultDeviceControl+0x358",
                1,
                0xfb000
            ),
        ]
    );
    let text = report::text::render(
        &report,
        &TextOptions {
            group_by: GroupBy::Stack,
            ..classic()
        },
    );
    assert!(text.contains("Leak table (by stack)\n"));
}

#[test]
fn group_by_tag_spans_drivers_and_sorts_by_bytes() {
    let mut report = seed_report();
    for a in &mut report.drivers[0].allocations[..3] {
        a.tag = "Tag2".to_string();
    }
    let mut other = report.drivers[0].clone();
    other.name = "other.sys".to_string();
    other.allocations.truncate(1);
    other.allocations[0].size = 0x10;
    report.drivers.push(other);

    let got: Vec<(String, String, u64, u64)> = report::sites(&report, GroupBy::Tag)
        .into_iter()
        .map(|s| (s.site, s.driver, s.count, s.bytes))
        .collect();
    let s = |x: &str| x.to_string();
    assert_eq!(
        got,
        vec![
            (s("Leak"), s("myfault.sys"), 7, 7 * 0xfb000),
            (s("Tag2"), s("myfault.sys"), 3, 3 * 0xfb000),
            (s("Tag2"), s("other.sys"), 1, 0x10),
        ]
    );
    // Equal bytes: by site name.
    let mut report = seed_report();
    report.drivers[0].allocations[0].caller_symbol = "a!first".to_string();
    report.drivers[0].allocations.truncate(2);
    report.drivers[0].allocations[1].caller_symbol = "b!second".to_string();
    let names: Vec<String> = report::sites(&report, GroupBy::Caller)
        .into_iter()
        .map(|s| s.site)
        .collect();
    assert_eq!(names, vec!["a!first", "b!second"]);
}

#[test]
fn group_by_parses_and_prints() {
    for g in [GroupBy::Caller, GroupBy::Stack, GroupBy::Tag] {
        assert_eq!(g.to_string().parse::<GroupBy>().unwrap(), g);
    }
    assert!("module".parse::<GroupBy>().is_err());
    assert_eq!(GroupBy::default(), GroupBy::Caller);
}

#[test]
fn history_prints_every_record_newest_first() {
    let mut report = seed_report();
    let a = &mut report.drivers[0].allocations[0];
    a.history = vec![
        kdleak::verifier::model::LogRecord {
            slot: 0x29,
            address: a.address,
            size: 0xfa000,
            thread: 0xfffffa80044ceb60,
            stack: seed_stack(),
        },
        kdleak::verifier::model::LogRecord {
            slot: 0x10,
            address: a.address + 0x20,
            size: 0x40,
            thread: 0xfffffa8004000000,
            stack: seed_stack()[..2].to_vec(),
        },
    ];
    let options = TextOptions {
        history: true,
        ..classic()
    };
    let text = report::text::render(&report, &options);
    let want = format!(
        "{sep}\nPool block fffffa8005400000, Size 00000000000fa000, Thread fffffa80044ceb60\n\
         fffff80001927cc6 nt!VeAllocatePoolWithTagPriority+0x2b6\n",
        sep = "=".repeat(70)
    );
    assert!(text.contains(&want));
    assert!(text.contains(&format!(
        "{sep}\nPool block fffffa8005400020, Size 0000000000000040, Thread fffffa8004000000\n\
         fffff80001927cc6 nt!VeAllocatePoolWithTagPriority+0x2b6\n\
         fffff80001927d3d nt!VerifierExAllocatePoolEx+0x1d\n\
         Parsed entry 0000000000010000/0000000000010000...\n",
        sep = "=".repeat(70)
    )));
}

#[test]
fn progress_lines_say_how_many_entries_were_read_in_both_layouts() {
    // The default newest-first read stopped after 0x400 of the 0x10000 entries.
    let mut report = seed_report();
    let log = report.verifier.log.as_mut().unwrap();
    log.whole_ring = false;
    log.entries_read = Some(0x400);
    for style in [WindbgStyle::Classic, WindbgStyle::Current] {
        let options = TextOptions {
            style,
            ..TextOptions::default()
        };
        let text = report::text::render(&report, &options);
        assert_eq!(
            text.matches("Parsing 0x0000000000000400 log entries, searching for address 0x")
                .count(),
            10,
            "{style}"
        );
        assert_eq!(
            text.matches("Parsed entry 0000000000000400/0000000000000400...\n")
                .count(),
            10,
            "{style}"
        );
        assert!(!text.contains("0000000000010000"), "{style}: {text}");
        assert!(text.contains("There are up to 0x10000 entries in the log."));
        assert!(text.contains("newest-first, 0x400 of 0x10000 entries holding 0x2a records"));
    }
    // A report written before `entries_read` existed: what it holds, never the whole ring.
    let log = report.verifier.log.as_mut().unwrap();
    log.entries_read = None;
    let text = report::text::render(&report, &classic());
    assert!(text.contains("Parsing 0x000000000000002a log entries"));
    // A block whose record was not among the entries read says so, not "overwritten".
    report.drivers[0].allocations[0].stack.clear();
    report.verifier.log.as_mut().unwrap().entries_read = Some(0x400);
    let text = report::text::render(&report, &classic());
    assert!(text.contains(
        "No allocation record for pool block fffffa8005400000 among the 0x400 newest log entries read.\n"
    ));
}

#[test]
fn the_current_layout_renders_the_seed_as_todays_windbg_would() {
    let mut report = seed_report();
    report.drivers[0].target_driver = Some(0xfffffa80031b5a40);
    let text = report::text::render(&report, &TextOptions::default());
    let head = "\
0: kd> !verifier 3 myfault.sys

Verify Flags Level 0x00000008

  STANDARD FLAGS:
    [X] (0x00000000) Automatic Checks
    [ ] (0x00000001) Special pool
";
    assert!(text.starts_with(head), "{text}");
    for want in [
        "  Pool Allocations Failed                0x0\n\n  Current paged pool allocations         0x0 for 00000000 bytes\n",
        "nt!_VF_TARGET_DRIVER 0xfffffa80031b5a40: myfault.sys (Loaded)\n",
        "      Peak Pool Bytes:          ( 0x009ce000 / 0x00000080 )\n\n    Pool Allocations:\n",
        "      0xfffffa8004a66000  0x000fb000  Leak  0xfffff8800447d634  myfault!MyfaultDeviceControl+0x358\n\n0: kd> !verifier 80 fffffa8005400000\n",
        "Parsing 0x0000000000010000 log entries, searching for address 0xfffffa8005400000.\n\n======================================================================\n\nPool block fffffa8005400000,",
        "fffff8000148bed3 nt!KiSystemServiceCopyEnd+0x13\n\nParsed entry 0000000000010000/0000000000010000...\nFinished parsing all pool tracking information.\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("Resource Allocations Failed Deliberately"));
    // No contiguous counters in this report: no contiguous lines either.
    assert!(!text.contains("Contiguous"));
}

#[test]
fn history_in_the_current_layout_lists_frees_and_allocations_newest_first() {
    let mut report = seed_report();
    let a = &mut report.drivers[0].allocations[0];
    let free_stack = vec![
        Frame {
            address: 0xfffff80001800010,
            symbol: "nt!ExFreePoolWithTag+0x4b".to_string(),
        },
        Frame {
            address: 0xfffff8800447d650,
            symbol: "myfault!MyfaultDeviceControl+0x374".to_string(),
        },
    ];
    a.history = vec![
        kdleak::verifier::model::LogRecord {
            slot: 0x29,
            address: a.address,
            size: 0xfa000,
            thread: 0xfffffa80044ceb60,
            stack: seed_stack(),
        },
        kdleak::verifier::model::LogRecord {
            slot: 0x20,
            address: a.address,
            size: 0xfb000,
            thread: 0xfffffa80044ceb60,
            stack: free_stack,
        },
    ];
    let options = TextOptions {
        history: true,
        ..TextOptions::default()
    };
    let text = report::text::render(&report, &options);
    let sep = "=".repeat(70);
    let want = format!(
        "\n{sep}\n\nPool block fffffa8005400000, Size 00000000000fa000, Thread fffffa80044ceb60\n\
         fffff80001927cc6 nt!VeAllocatePoolWithTagPriority+0x2b6\n"
    );
    let alloc = text.find(&want).expect("the allocation record");
    let free = format!(
        "\n{sep}\n\nPool block fffffa8005400000, Size 00000000000fb000, Thread fffffa80044ceb60\n\
         fffff80001800010 nt!ExFreePoolWithTag+0x4b\n\
         fffff8800447d650 myfault!MyfaultDeviceControl+0x374\n\nParsed entry"
    );
    let free_at = text.find(&free).expect("the free record, then the trailer");
    assert!(alloc < free_at, "newest first");
}
