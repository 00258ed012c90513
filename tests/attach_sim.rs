//! `kdleak attach` against the simulated target: the reference scenario of verifier.md §1.

use std::time::Duration;

use kdleak::attach::{self, AttachOptions};
use kdleak::connect::ConnectSpec;
use kdleak::session::SessionOptions;
use kdleak::sim::world::isf::{read_field, Isf};
use kdleak::sim::world::scenario::Scenario;
use kdleak::stop::StopOptions;
use kdleak::verifier::{LeakReport, PullOptions};

fn options() -> AttachOptions {
    let mut symbols = kdleak::symbols::SymbolOptions::new(Some("")).unwrap();
    symbols.offline = true;
    AttachOptions {
        stop: StopOptions {
            session: SessionOptions {
                handle_signals: false,
                ..SessionOptions::default()
            },
            symbols: Some(symbols),
            ..StopOptions::default()
        },
        pull: PullOptions {
            history_limit: 8,
            ..PullOptions::default()
        },
    }
}

async fn pull(scenario: &str) -> kdleak::verifier::LeakReport {
    let spec: ConnectSpec = format!("sim:{scenario}").parse().unwrap();
    tokio::time::timeout(Duration::from_secs(120), attach::run(&spec, &options()))
        .await
        .expect("timed out")
        .unwrap()
        .report
}

#[tokio::test(flavor = "multi_thread")]
async fn the_win7_seed_table_and_stack() {
    let report = pull("win7-myfault").await;
    assert!(report.complete, "{:?}", report.incomplete_reasons);
    let driver = report
        .drivers
        .iter()
        .find(|d| d.name == "myfault.sys")
        .unwrap();
    let rows: Vec<(u64, u64, &str, u64)> = driver
        .allocations
        .iter()
        .map(|a| (a.address, a.size, a.tag.as_str(), a.caller))
        .collect();
    let seed: Vec<u64> = vec![
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
    assert_eq!(
        rows,
        seed.iter()
            .map(|&a| (a, 0xfb000, "Leak", 0xfffff8800447d634))
            .collect::<Vec<_>>()
    );

    // The seed's stack for fffffa8005400000, frame by frame (verifier.md §1).
    let first = &driver.allocations[0];
    let stack: Vec<&str> = first.stack.iter().map(|f| f.symbol.as_str()).collect();
    assert_eq!(
        stack,
        [
            "nt!VeAllocatePoolWithTagPriority+0x2b6",
            "nt!VerifierExAllocatePoolEx+0x1d",
            "myfault!MyfaultDeviceControl+0x358",
            "myfault!MyfaultDispatch+0xb7",
            "nt!IovCallDriver+0xa0",
            "nt!IopXxxControlFile+0x607",
            "nt!NtDeviceIoControlFile+0x56",
            "nt!KiSystemServiceCopyEnd+0x13",
        ]
    );
    assert_eq!(first.stack[2].address, 0xfffff8800447d634);
    assert_eq!(first.stack[3].address, 0xfffff8800447d727);
    assert_eq!(first.requested_size, Some(0xfa000));
    assert_eq!(first.thread, Some(0xfffffa80044ceb60));
    assert_eq!(first.caller_symbol, "myfault!MyfaultDeviceControl+0x358");
    assert_eq!(driver.entry, 0xfffffa80031b5830);
    assert_eq!(driver.counters.nonpaged_bytes, 0x9ce000);
    assert_eq!(driver.state, "Loaded");
    assert_eq!(
        report.verifier.statistics["AllocationsSucceededSpecialPool"],
        0xa
    );
}

/// The reference session's counter line, pulled from the simulated Windows 7 target through the
/// fixture kernel PDB, where (as in Microsoft's, issue 14) both counters behind it are `volatile`.
#[tokio::test(flavor = "multi_thread")]
async fn the_reference_counter_line_is_read_through_volatile_fields() {
    let report = pull("win7-myfault").await;
    let text = kdleak::report::text::render(&report, &kdleak::report::text::TextOptions::default());
    assert!(
        text.contains("Current nonpaged pool allocations      0xa for 009CE000 bytes\n"),
        "{text}"
    );
    let nt = kdleak::symbols::Pdb::open(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("captures/fixtures/win7-7601/ntkrnlmp.pdb"),
    )
    .unwrap();
    for member in ["CurrentNonPagedPoolAllocations", "NonPagedBytes"] {
        let field = nt.field("_MM_DRIVER_VERIFIER_DATA", member).unwrap();
        assert!(field.ty.qualifiers().volatile, "{member}: {field:?}");
    }
    assert_eq!(
        report.verifier.statistics["CurrentNonPagedPoolAllocations"],
        0xa
    );
    assert_eq!(report.verifier.statistics["NonPagedBytes"], 0x9ce000);
}

/// One allocation without its build-specific addresses: size, tag, caller symbol, stack symbols.
type LogicalAllocation = (u64, String, String, Vec<String>);

/// What the JSON says, with the build-specific addresses left out.
fn logical(report: &LeakReport) -> Vec<(String, Vec<LogicalAllocation>)> {
    report
        .drivers
        .iter()
        .map(|d| {
            (
                d.name.clone(),
                d.allocations
                    .iter()
                    .map(|a| {
                        (
                            a.size,
                            a.tag.clone(),
                            a.caller_symbol.clone(),
                            a.stack.iter().map(|f| f.symbol.clone()).collect(),
                        )
                    })
                    .collect(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn win7_win10_and_win11_give_the_same_logical_report() {
    let win7 = pull("win7-myfault").await;
    for scenario in ["win10-myfault", "win11-myfault"] {
        let other = pull(scenario).await;
        assert!(other.complete, "{scenario}: {:?}", other.incomplete_reasons);
        assert_eq!(logical(&other), logical(&win7), "{scenario}");
        // Windows 11 adds AllocationFreed (verifier.md §3); every counter both builds have agrees.
        for (name, value) in &win7.verifier.statistics {
            assert_eq!(
                other.verifier.statistics.get(name),
                Some(value),
                "{scenario} {name}"
            );
        }
    }
}

/// Outstanding set and newest stacks of a generated scenario with special-pool odd sizes,
/// freed slots and a wrapped log, against the scenario's own layout (read back through the ISF).
#[tokio::test(flavor = "multi_thread")]
async fn a_generated_scenario_with_odd_special_pool_frees_and_a_wrapped_log() {
    let name = "gen:build=19041,drivers=3,allocs=1500,log=1.0,ring=4096,free=10,seed=5";
    let layout = Scenario::resolve(name)
        .unwrap()
        .build_in(kdleak::sim::world::scenario::default_root().unwrap())
        .unwrap();
    let report = pull(name).await;
    assert!(report.complete, "{:?}", report.incomplete_reasons);

    // The scenario's truth: outstanding allocations, and the ring's records by exact address.
    let outstanding: Vec<_> = layout.allocations.iter().filter(|a| !a.freed).collect();
    assert!(
        outstanding.iter().any(|a| a.charged % 2 == 1),
        "no odd special-pool size"
    );
    assert!(
        layout.allocations.iter().any(|a| a.freed && !a.churn),
        "no freed slot"
    );
    let isf = Isf::load(&layout.isf_path).unwrap();
    let field = |f: &str| isf.field("_VF_POOL_TRACE", f).unwrap();
    let (address_field, stack_field) = (field("Address"), field("StackTrace"));
    let mut logged = std::collections::HashSet::new();
    let mut written = 0;
    for slot in 0..layout.trace_length {
        let at = layout.trace_array + slot * layout.trace_entry_size;
        let bytes = layout
            .image
            .read(at, layout.trace_entry_size as usize)
            .unwrap();
        let address = read_field(&bytes, &address_field).unwrap();
        if address != 0 {
            logged.insert(address);
            written += 1;
        }
    }
    assert_eq!(written, layout.trace_length, "the ring is full");
    assert!(
        layout.allocations.len() as u64 > layout.trace_length,
        "the ring wrapped"
    );
    let _ = stack_field;

    let got: std::collections::HashMap<u64, &kdleak::verifier::Allocation> = report
        .drivers
        .iter()
        .flat_map(|d| d.allocations.iter().map(|a| (a.address, a)))
        .collect();
    assert_eq!(got.len(), outstanding.len());
    let mut with_stack = 0;
    for want in &outstanding {
        let have = got
            .get(&want.address)
            .unwrap_or_else(|| panic!("{:#x} missing", want.address));
        assert_eq!(have.size, want.charged, "{:#x}", want.address);
        assert_eq!(have.caller, want.caller, "{:#x}", want.address);
        let frames: Vec<u64> = have.stack.iter().map(|f| f.address).collect();
        if logged.contains(&want.address) {
            assert_eq!(frames, want.stack, "newest stack of {:#x}", want.address);
            with_stack += 1;
        } else {
            assert!(frames.is_empty(), "{:#x} has no record left", want.address);
        }
    }
    assert!(
        with_stack > 0 && with_stack < outstanding.len(),
        "{with_stack} of {}",
        outstanding.len()
    );
}

/// Issue 8: no per-allocation round trips and no bytes fetched twice — the pull costs about
/// the bytes it needs in the largest requests the link carries.
#[tokio::test(flavor = "multi_thread")]
async fn the_pull_reads_what_it_needs_in_full_size_requests() {
    for scenario in ["win7-myfault", "win11-myfault"] {
        let spec: ConnectSpec = format!("sim:{scenario}").parse().unwrap();
        let attached =
            tokio::time::timeout(Duration::from_secs(120), attach::run(&spec, &options()))
                .await
                .expect("timed out")
                .unwrap();
        let cost = &attached.cost.session;
        let needed = cost.bytes_needed;
        assert!(needed > 1 << 20, "{scenario}: the log alone is megabytes");
        assert!(
            cost.bytes_read as f64 <= 1.01 * needed as f64,
            "{scenario}: read {} for {needed} needed",
            cost.bytes_read
        );
        let full_size = needed.div_ceil(attached.cost.read_size as u64);
        assert!(
            cost.requests as f64 <= 1.02 * full_size as f64 + 64.0,
            "{scenario}: {} requests where {full_size} full-size ones carry the bytes",
            cost.requests
        );
    }
}

/// The default log read (newest-first, `until_stacks`) stops early, and every allocation gets
/// the stack the whole-ring read (`--whole-log`) gives it.
#[tokio::test(flavor = "multi_thread")]
async fn until_stacks_gives_the_same_stacks_from_far_fewer_bytes() {
    // Small rings with the newest slot anywhere: for some seeds the newest-first batches
    // cross slot 0 on their way back to the allocations' records.
    let mut crossed = 0;
    for seed in 1..=8 {
        let spec: ConnectSpec = format!("sim:gen:drivers=2,allocs=100,ring=0x200,seed={seed}")
            .parse()
            .unwrap();
        let mut options = options();
        let whole = attach::run(&spec, &options).await.unwrap().report;
        options.pull.until_stacks = true;
        let quick = attach::run(&spec, &options).await.unwrap().report;
        let stacks = |r: &LeakReport| -> Vec<(u64, Vec<u64>)> {
            r.drivers
                .iter()
                .flat_map(|d| d.allocations.iter())
                .map(|a| (a.address, a.stack.iter().map(|f| f.address).collect()))
                .collect()
        };
        assert_eq!(stacks(&whole), stacks(&quick), "seed {seed}");
        let log = quick.verifier.log.as_ref().unwrap();
        assert!(
            !log.whole_ring,
            "seed {seed}: stopped before the end of the ring"
        );
        // What `!verifier 80`'s progress lines print: the entries read, not the ring.
        let read = log.entries_read.unwrap();
        assert!(
            log.records <= read && read < log.length,
            "seed {seed}: {read:#x}"
        );
        assert_eq!(
            whole.verifier.log.as_ref().unwrap().entries_read,
            Some(log.length)
        );
        if log.index & (log.length - 1) < log.records {
            crossed += 1;
        }
    }
    assert!(crossed > 0, "no seed made the read cross slot 0");
    let spec: ConnectSpec = "sim:win7-myfault".parse().unwrap();
    let run = |until_stacks: bool| {
        let mut options = options();
        options.pull.until_stacks = until_stacks;
        let spec = spec.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(120), attach::run(&spec, &options))
                .await
                .expect("timed out")
                .unwrap()
        }
    };
    let whole = run(false).await;
    let quick = run(true).await;
    let stacks = |a: &attach::Attached| -> Vec<(u64, Vec<u64>)> {
        a.report
            .drivers
            .iter()
            .flat_map(|d| d.allocations.iter())
            .map(|a| (a.address, a.stack.iter().map(|f| f.address).collect()))
            .collect()
    };
    assert_eq!(stacks(&whole), stacks(&quick));
    assert!(stacks(&quick).iter().all(|(_, s)| !s.is_empty()));
    let log = quick.report.verifier.log.as_ref().unwrap();
    assert!(!log.whole_ring);
    // Every entry read was fetched once: 0x80 bytes each on Windows 7.
    let read = log.entries_read.unwrap();
    assert!(read < log.length && read * 0x80 <= quick.cost.session.bytes_read);
    assert!(whole.report.verifier.log.as_ref().unwrap().whole_ring);
    assert!(
        quick.report.complete,
        "{:?}",
        quick.report.incomplete_reasons
    );
    let (w, q) = (whole.cost.session.bytes_read, quick.cost.session.bytes_read);
    assert!(q * 20 < w, "read {q} bytes, the whole ring {w}");
}

/// A second pull of an unchanged target (same stop here) takes every driver's tracker scan
/// from the cache and gives the same report; its reads are a small fraction of the first's.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_pull_of_an_unchanged_target_reuses_the_tracker_scans() {
    use kdleak::kernel_context::KernelContext;
    use kdleak::session::Session;
    use kdleak::stop::{with_stopped_target, StopContext};
    use kdleak::verifier::{pull_with, PullCache};

    let spec: ConnectSpec = "sim:gen:drivers=3,allocs=400,ring=0x1000,seed=5"
        .parse()
        .unwrap();
    let options = options();
    let (first, second, reused, first_bytes, second_bytes) = with_stopped_target(
        &spec,
        &options.stop,
        async |s: &mut Session, c: StopContext| {
            let kernel = KernelContext::load(s, &c.symbols).await?;
            let mut cache = PullCache::default();
            let before = s.stats().bytes_needed;
            let first = pull_with(s, &kernel, &c.symbols, &options.pull, &mut cache).await?;
            let first_bytes = s.stats().bytes_needed - before;
            assert_eq!(cache.last_reused_scans, 0);
            let before = s.stats().bytes_read;
            let second = pull_with(s, &kernel, &c.symbols, &options.pull, &mut cache).await?;
            let second_bytes = s.stats().bytes_read - before;
            Ok((
                first,
                second,
                cache.last_reused_scans,
                first_bytes,
                second_bytes,
            ))
        },
    )
    .await
    .unwrap();
    assert_eq!(reused, 3, "every driver's scan reused");
    let strip = |mut r: LeakReport| {
        r.target.time.clear();
        r
    };
    assert_eq!(strip(first), strip(second));
    // Same stop: the small reads come from the session cache; the pages are not read again.
    assert!(
        second_bytes * 100 < first_bytes,
        "{second_bytes} of {first_bytes}"
    );
}

async fn try_pull(scenario: &str) -> kdleak::session::Result<LeakReport> {
    let spec: ConnectSpec = format!("sim:{scenario}").parse().unwrap();
    tokio::time::timeout(Duration::from_secs(120), attach::run(&spec, &options()))
        .await
        .expect("timed out")
        .map(|attached| attached.report)
}

const WIN7_ISF: &str = "captures/isf/339E74133576439CBCDF7E0229DA3773-1.json.xz";
const WIN10_ISF: &str = "captures/isf/BBED7C2955FBE4522AAA23F4B8677AD9-1.json.xz";
const WIN11_ISF: &str = "captures/isf/32C1A669D5FFEFD41091F636CFDB6E99-1.json.xz";

/// Issue 14: the host reads a target laid out from another build's ISF with the fixture
/// kernel's PDB (`gen:fixture=…,isf=…`). Every pair of the shipped builds either gives a report
/// marked incomplete with a reason naming both numbers, or a clear exit-4 error — never a
/// report marked complete.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_pdb_of_another_build_is_never_a_complete_report() {
    let fixture = |label: &str| format!("captures/fixtures/{label}");
    let cases: [(&str, &str, &[&str]); 6] = [
        // _VF_TARGET_VERIFIED_DRIVER_DATA's counters moved by 8 bytes in Windows 11: the
        // Windows 10 offsets read 0 allocations next to trackers that hold them.
        (
            "win10-19041",
            WIN11_ISF,
            &[
                "myfault.sys: the counters say 0 allocations (0 paged, 0 nonpaged)",
                "but the trackers hold 20 of",
            ],
        ),
        // The other way, the counters read are the peaks; MmVerifierData's Windows 11 offsets
        // (AllocationFreed inserted) read other counters than the drivers add up to.
        (
            "win11-22000",
            WIN10_ISF,
            &[
                "MmVerifierData counts",
                "the verified drivers' counters add up to",
            ],
        ),
        // Windows 7's _VF_AVL_TREE and _VF_TARGET_DRIVER differ: the tree walk finds no
        // verified data — the drivers did not silently disappear.
        (
            "win7-7601",
            WIN10_ISF,
            &["myfault.sys is configured for verification and loaded (Loads 1, Unloads 0) but"],
        ),
        (
            "win7-7601",
            WIN11_ISF,
            &["leaky.sys is configured for verification and loaded (Loads 1, Unloads 0) but"],
        ),
        // Windows 10/11's _VF_AVL_TREE on Windows 7's layout: an exit-4 error, below.
        ("win10-19041", WIN7_ISF, &[]),
        ("win11-22000", WIN7_ISF, &[]),
    ];
    for (label, isf, reasons) in cases {
        let name = format!(
            "gen:fixture={},isf={isf},drivers=2,allocs=20,ring=0x1000,log=0.1,free=0",
            fixture(label)
        );
        match try_pull(&name).await {
            Ok(report) => {
                eprintln!("{label} PDB on {isf}: {:?}", report.incomplete_reasons);
                assert!(!report.complete, "{label} on {isf}: complete");
                for reason in reasons {
                    assert!(
                        report.incomplete_reasons.iter().any(|r| r.contains(reason)),
                        "{label} on {isf}: no {reason:?} in {:?}",
                        report.incomplete_reasons
                    );
                }
            }
            Err(error) => {
                eprintln!("{label} PDB on {isf}: exit {}: {error}", error.exit_code());
                assert!(reasons.is_empty(), "{label} on {isf}: {error}");
                assert_eq!(error.exit_code(), 4, "{error}");
                assert!(
                    error
                        .to_string()
                        .contains("is the kernel PDB the one of the target's kernel build?"),
                    "{error}"
                );
            }
        }
    }
}

/// A generated scenario on a fixture given by path, laid out from its own build's ISF given
/// by path, is the shipped generated scenario: complete, with every allocation's stack.
#[tokio::test(flavor = "multi_thread")]
async fn generated_scenarios_on_any_fixture_and_isf() {
    let by_path = pull(&format!(
        "gen:fixture=captures/fixtures/win11-22000,isf={WIN11_ISF},drivers=2,allocs=30,\
         ring=0x1000,log=0.1"
    ))
    .await;
    let shipped = pull("gen:build=22000,drivers=2,allocs=30,ring=0x1000,log=0.1").await;
    assert!(by_path.complete, "{:?}", by_path.incomplete_reasons);
    assert_eq!(logical(&by_path), logical(&shipped));
    assert!(by_path
        .drivers
        .iter()
        .flat_map(|d| &d.allocations)
        .all(|a| !a.stack.is_empty()));
}

/// A target whose counters lie (`captures/scenarios/lying-counters.toml`): the driver's
/// counters against its trackers, and MmVerifierData against the drivers, both flagged.
#[tokio::test(flavor = "multi_thread")]
async fn counters_that_lie_are_flagged_with_both_numbers() {
    let report = pull("captures/scenarios/lying-counters.toml").await;
    assert!(!report.complete);
    let reasons = &report.incomplete_reasons;
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].starts_with(
        "myfault.sys: the counters say 4 allocations (0 paged, 4 nonpaged) of 0x3ec000 bytes \
         but the trackers hold 10 of 0x9ce000 bytes"
    ));
    assert!(reasons[1].starts_with(
        "MmVerifierData counts 2 current nonpaged allocations of 0x1f6000 bytes but the \
         verified drivers' counters add up to 7 of 0x3ec630 bytes"
    ));
    // The table itself is what the trackers hold.
    let myfault = &report.drivers[0];
    assert_eq!(myfault.allocations.len(), 10);
}

/// No false alarm: unwrapped logs (where every outstanding block must have its record) on
/// every build are complete.
#[tokio::test(flavor = "multi_thread")]
async fn unwrapped_logs_on_every_build_are_complete() {
    for build in [7601, 19041, 22000] {
        let report = pull(&format!(
            "gen:build={build},drivers=3,allocs=200,ring=0x1000,log=0.2,free=20,seed=9"
        ))
        .await;
        assert!(report.complete, "{build}: {:?}", report.incomplete_reasons);
        let log = report.verifier.log.as_ref().unwrap();
        assert!(log.records < log.length, "{build}: the log wrapped");
    }
}
