//! `kdleak analyze` on the images `kdleak sim --write-dump` writes gives the report `kdleak attach`
//! pulls from the same scenario live: for win7, win10 and win11, and for every format — the crash
//! dump types (full: DumpType 1; kernel: bitmap `SDMP` with only the frames in use; bitmap: `FDMP`
//! with every frame; live: DumpType 6; the RDMP types 8, 9, 10), the QEMU ELF core and the raw
//! physical image (whose CR3 and kernel analyze finds by scanning) — the JSON is equal except
//! the transport fields (`target.connection`, `target.time`, and the live pull's `target.stops`,
//! `target.outside_s`). Both sides are the binaries; symbols come from the fixture directory
//! through `--sympath`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::*;

/// Every image the simulator writes: `--dump-type` values, then `--write-image` ones.
const DUMP_TYPES: [&str; 9] = [
    "full",
    "kernel",
    "bitmap",
    "live",
    "rdmp-kernel",
    "rdmp-kernel-user",
    "rdmp-complete",
    "elf",
    "raw",
];

fn run_ok(what: &str, command: std::process::Command) -> Vec<u8> {
    let out = finish(spawn(command), Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{what}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn json(what: &str, bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"))
}

/// The report without the fields that say how the target was reached, when, and how long it
/// was stopped (a dump has no stops).
/// The fixture PDBs the simulated target's symbols come from: the binary's built-in copy
/// (unpacked under the same HOME), so the reports name the same files.
fn sim_fixtures() -> std::path::PathBuf {
    kdleak::sim::world::scenario::default_root()
        .unwrap()
        .join("captures/fixtures")
}

fn without_transport(mut report: Value) -> Value {
    let target = report["target"].as_object_mut().expect("a target object");
    for key in ["connection", "time", "stops", "outside_s"] {
        target.remove(key);
    }
    report
}

fn write_dump(scenario: &str, dump_type: &str, path: &Path) {
    let mut sim = kdleak();
    sim.args(["sim", "--scenario", scenario, "--write-dump"])
        .arg(path);
    if matches!(dump_type, "elf" | "raw") {
        sim.args(["--write-image", dump_type]);
    } else {
        sim.args(["--dump-type", dump_type]);
    }
    run_ok(&format!("sim {scenario} --write-dump {dump_type}"), sim);
}

fn analyze(path: &Path, fixture: &str, args: &[&str]) -> Vec<u8> {
    let mut analyze = kdleak();
    analyze
        .arg("analyze")
        .arg(path)
        .args(["--offline", "--sympath"])
        .arg(sim_fixtures().join(fixture))
        .args(args);
    run_ok(&format!("analyze {}", path.display()), analyze)
}

fn attach_live(scenario: &str, args: &[&str]) -> Vec<u8> {
    let mut attach = kdleak();
    attach
        .args(["attach", &format!("sim:{scenario}"), "--offline"])
        .args(args);
    run_ok(&format!("attach sim:{scenario}"), attach)
}

/// Every dump type of `scenario` analyzes to the live report.
fn every_dump_type_equals_the_live_pull(scenario: &str, fixture: &str) {
    let started = Instant::now();
    let live = json("attach", &attach_live(scenario, &["--format", "json"]));
    assert_eq!(
        live["complete"], true,
        "{scenario}: the live pull is incomplete"
    );
    let allocations: usize = live["drivers"]
        .as_array()
        .expect("drivers")
        .iter()
        .map(|d| d["allocations"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(
        allocations > 0,
        "{scenario}: the live pull found no allocation"
    );
    let live = without_transport(live);
    let dir = tempfile::tempdir().unwrap();
    for dump_type in DUMP_TYPES {
        let path = dir.path().join(format!("{scenario}-{dump_type}.dmp"));
        write_dump(scenario, dump_type, &path);
        let report = json("analyze", &analyze(&path, fixture, &["--format", "json"]));
        assert_eq!(
            report["target"]["connection"],
            format!("dump:{}", path.display()),
            "{scenario} {dump_type}"
        );
        let time = report["target"]["time"].as_str().unwrap_or_default();
        assert!(
            time.len() == 20 && time.ends_with('Z'),
            "{scenario}: time {time:?}"
        );
        assert_eq!(
            without_transport(report),
            live,
            "{scenario}: analyze of the {dump_type} dump differs from attach"
        );
    }
    eprintln!(
        "{scenario}: {allocations} allocations, {} dump types equal to the live pull in {:.1?}",
        DUMP_TYPES.len(),
        started.elapsed()
    );
}

#[test]
fn win7_dumps_of_every_type_give_the_live_report() {
    every_dump_type_equals_the_live_pull("win7-myfault", "win7-7601");
}

#[test]
fn win10_dumps_of_every_type_give_the_live_report() {
    every_dump_type_equals_the_live_pull("win10-myfault", "win10-19041");
}

#[test]
fn win11_dumps_of_every_type_give_the_live_report() {
    every_dump_type_equals_the_live_pull("win11-myfault", "win11-22000");
}

/// A dump of a machine that booted without a debugger keeps KDBG encoded (stops-and-unloads.md
/// §4): the header's KdDebuggerDataBlock leads to no usable block, so the kernel base comes from
/// the first entry of PsLoadedModuleList — and the report is still the live one. The same holds
/// when the header's KdDebuggerDataBlock is garbage (unmapped).
#[test]
fn a_dump_whose_kdbg_is_unusable_still_gives_the_live_report() {
    let live = without_transport(json(
        "attach",
        &attach_live("win10-myfault", &["--format", "json"]),
    ));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("encoded.dmp");
    let mut sim = kdleak();
    sim.args(["sim", "--scenario", "win10-myfault", "--write-dump"])
        .arg(&path)
        .args(["--dump-type", "kernel", "--quirks", "kdbg=encoded"]);
    run_ok("sim --write-dump --quirks kdbg=encoded", sim);
    let mut verbose = kdleak();
    verbose
        .args(["-v", "analyze"])
        .arg(&path)
        .args(["--offline", "--format", "json", "--sympath"])
        .arg(sim_fixtures().join("win10-19041"));
    let out = finish(spawn(verbose), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("is tagged") && stderr.contains("not KDBG"),
        "the dump's KDBG is not encoded: {stderr}"
    );
    assert!(
        stderr.contains("comes from the first entry of PsLoadedModuleList"),
        "{stderr}"
    );
    assert_eq!(without_transport(json("analyze", &out.stdout)), live);

    // KdDebuggerDataBlock (u64 at 0x80 of DUMP_HEADER64) pointing at unmapped memory.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0x80..0x88].copy_from_slice(&0xfffff800_dead0000u64.to_le_bytes());
    let garbage = dir.path().join("garbage.dmp");
    std::fs::write(&garbage, bytes).unwrap();
    let report = analyze(&garbage, "win10-19041", &["--format", "json"]);
    assert_eq!(without_transport(json("analyze", &report)), live);
}

/// The report options are attach's: a filtered, stack-grouped CSV is byte for byte the live one
/// (CSV carries no transport fields).
#[test]
fn report_options_work_as_for_attach() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("win10-kernel.dmp");
    write_dump("win10-myfault", "kernel", &path);
    let args = [
        "--format",
        "csv",
        "--group-by",
        "stack",
        "--driver",
        "myfault",
        "--history",
    ];
    let from_dump = analyze(&path, "win10-19041", &args);
    let live = attach_live("win10-myfault", &args);
    assert!(from_dump.starts_with(b"driver,address,size,tag"));
    assert!(String::from_utf8_lossy(&from_dump).contains("myfault.sys,0x"));
    assert_eq!(
        String::from_utf8_lossy(&from_dump),
        String::from_utf8_lossy(&live)
    );
    // --out writes the same bytes to a file.
    let out = dir.path().join("report.csv");
    let mut with_out = args.to_vec();
    with_out.extend(["--out", out.to_str().unwrap()]);
    assert!(analyze(&path, "win10-19041", &with_out).is_empty());
    assert_eq!(std::fs::read(&out).unwrap(), live);

    // Both WinDbg layouts: the text equals the live one's but for the lines about the
    // transport (how long the target was frozen; where symbols were found is the same).
    let frozen = |text: &[u8]| -> String {
        String::from_utf8_lossy(text)
            .lines()
            .filter(|l| !l.starts_with("Target frozen "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let texts: Vec<String> = ["current", "classic"]
        .into_iter()
        .map(|style| {
            let args = ["--windbg-style", style, "--driver", "myfault"];
            let from_dump = frozen(&analyze(&path, "win10-19041", &args));
            assert_eq!(
                from_dump,
                frozen(&attach_live("win10-myfault", &args)),
                "{style}"
            );
            assert!(from_dump.contains("myfault.sys"), "{style}: {from_dump}");
            from_dump
        })
        .collect();
    assert_ne!(texts[0], texts[1], "the two layouts differ");
}

/// Without the kernel's PDB on the symbol path the dump cannot be read: exit 4, naming the PDB.
#[test]
fn a_dump_without_its_kernel_pdb_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("win11-full.dmp");
    write_dump("win11-myfault", "full", &path);
    let mut analyze = kdleak();
    analyze
        .arg("analyze")
        .arg(&path)
        .args(["--offline", "--sympath"])
        .arg(dir.path());
    let out = finish(spawn(analyze), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("ntkrnlmp.pdb"), "{stderr}");
}

/// Symbols are found as attach finds them: `_NT_SYMBOL_PATH` when no option is given, and
/// `--symbol-path` as another spelling of `--sympath`.
#[test]
fn the_symbol_path_comes_from_the_environment_or_either_option_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("win7-bitmap.dmp");
    write_dump("win7-myfault", "bitmap", &path);
    let fixture = sim_fixtures().join("win7-7601");
    let mut from_env = kdleak();
    from_env
        .arg("analyze")
        .arg(&path)
        .args(["--offline", "--format", "json"])
        .env("_NT_SYMBOL_PATH", &fixture);
    let from_env = json("analyze", &run_ok("analyze with _NT_SYMBOL_PATH", from_env));
    let mut spelled = kdleak();
    spelled
        .arg("analyze")
        .arg(&path)
        .args(["--offline", "--format", "json", "--symbol-path"])
        .arg(&fixture);
    let spelled = json("analyze", &run_ok("analyze --symbol-path", spelled));
    assert_eq!(from_env["complete"], true);
    assert_eq!(without_transport(from_env), without_transport(spelled));
}

/// A page a kernel dump left out reads as unreadable, as memory that is paged out over a live
/// link: with the frame of myfault.sys's image header cut from the dump (bitmap bit cleared, page
/// removed), the pull still succeeds and myfault's frames show `myfault+0xoff`.
#[test]
fn a_page_missing_from_the_dump_is_unreadable_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("win10-kernel.dmp");
    write_dump("win10-myfault", "kernel", &path);
    let whole = json(
        "analyze",
        &analyze(&path, "win10-19041", &["--format", "json"]),
    );
    let driver = &whole["drivers"][0];
    assert_eq!(driver["name"], "myfault.sys");
    let base = u64::from_str_radix(&driver["image_base"].as_str().unwrap()[2..], 16).unwrap();

    let dump = kdleak::image::open(&path, kdleak::image::FormatHint::Detect).unwrap();
    let frame = match dump.translate(base).unwrap() {
        kdleak::image::Translation::Physical(pa) => pa / 0x1000,
        other => panic!("myfault's base is not in the dump: {other:?}"),
    };
    let offset = dump.phys_map().file_offset(frame).unwrap() as usize;
    drop(dump);
    let mut file = std::fs::read(&path).unwrap();
    file.drain(offset..offset + 0x1000);
    // The bitmap (after the 0x38-byte SDMP header at 0x2000), then TotalPresentPages.
    file[0x2038 + (frame / 8) as usize] &= !(1u8 << (frame % 8));
    let present = u64::from_le_bytes(file[0x2028..0x2030].try_into().unwrap());
    file[0x2028..0x2030].copy_from_slice(&(present - 1).to_le_bytes());
    let holed = dir.path().join("holed.dmp");
    std::fs::write(&holed, file).unwrap();

    let report = json(
        "analyze",
        &analyze(&holed, "win10-19041", &["--format", "json"]),
    );
    let caller = |r: &Value| r["drivers"][0]["allocations"][0]["caller_symbol"].clone();
    assert!(
        caller(&whole).as_str().unwrap().starts_with("myfault!"),
        "{}",
        caller(&whole)
    );
    assert!(
        caller(&report).as_str().unwrap().starts_with("myfault+0x"),
        "{}",
        caller(&report)
    );
    assert_eq!(
        report["drivers"][0]["allocations"].as_array().map(Vec::len),
        whole["drivers"][0]["allocations"].as_array().map(Vec::len)
    );
}

/// `--image-format` overrides detection: a raw image named as raw is scanned, and analyze says
/// on stderr how it found the page-table root and the kernel (an image has neither in a
/// header); a file named as a format it is not is refused saying what was expected.
#[test]
fn image_format_overrides_detection_and_the_scan_says_how_it_found_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("win10.raw");
    write_dump("win10-myfault", "raw", &raw);
    let mut named = kdleak();
    named
        .arg("analyze")
        .arg(&raw)
        .args(["--image-format", "raw", "--offline", "--format", "json"])
        .arg("--sympath")
        .arg(sim_fixtures().join("win10-19041"));
    let out = finish(spawn(named), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("found by its self-map entry at PML4 slot"),
        "{stderr}"
    );
    assert!(
        stderr.contains("found by its image header and RSDS record"),
        "{stderr}"
    );
    let live = without_transport(json(
        "attach",
        &attach_live("win10-myfault", &["--format", "json"]),
    ));
    assert_eq!(without_transport(json("analyze", &out.stdout)), live);

    for wrong in ["elf", "dump"] {
        let mut misnamed = kdleak();
        misnamed
            .arg("analyze")
            .arg(&raw)
            .args(["--image-format", wrong, "--offline", "--sympath"])
            .arg(sim_fixtures().join("win10-19041"));
        let out = finish(spawn(misnamed), Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "--image-format {wrong}: {stderr}"
        );
        assert!(stderr.contains("win10.raw"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
