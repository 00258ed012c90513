//! Issue 20, the leak Driver Verifier catches itself: a verified driver unloaded with pool
//! outstanding stops Windows in bug check 0xC4/0x62. On win7, win10 and win11 the scenario
//! `<build>-unload-leak` (captures/scenarios) is pulled live (the embedded simulator) and from
//! its crash dumps: the report names the stop and decodes its parameters, finds the driver's
//! allocations although the driver has left the verified-driver tree (through parameter 3),
//! checks parameter 4 against them, and gives the same allocations as the loaded-driver
//! equivalent of the scenario. The driver already unloaded puts its callers in
//! `<Unloaded_leaky.sys>+0x…`, from the kernel's unloaded-driver list.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kdleak::sim::world::scenario::{DriverState, Num, Scenario};
use serde_json::Value;

mod common;
use common::*;

const BUILDS: [(&str, &str); 3] = [
    ("win7", "win7-7601"),
    ("win10", "win10-19041"),
    ("win11", "win11-22000"),
];

fn run(command: std::process::Command) -> (bool, Vec<u8>, String) {
    let out = finish(spawn(command), Duration::from_secs(120));
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("not JSON: {e}"))
}

/// `kdleak attach sim:SCENARIO --format json`: (report, stderr).
fn attach(scenario: &str) -> (Value, String) {
    let mut attach = kdleak();
    attach.args([
        "attach",
        &format!("sim:{scenario}"),
        "--offline",
        "--format",
        "json",
    ]);
    let (_, stdout, stderr) = run(attach);
    (json(&stdout), stderr)
}

/// The fixture PDBs an in-process simulated target's symbols come from: the binary's built-in
/// copy (unpacked under the same HOME), so a dump's report names the same files as the live one.
fn sim_fixtures() -> std::path::PathBuf {
    kdleak::sim::world::scenario::default_root()
        .unwrap()
        .join("captures/fixtures")
}

fn analyze(path: &Path, fixture: &str) -> Value {
    let mut analyze = kdleak();
    analyze
        .arg("analyze")
        .arg(path)
        .args(["--offline", "--format", "json", "--sympath"])
        .arg(sim_fixtures().join(fixture));
    let (ok, stdout, stderr) = run(analyze);
    assert!(ok, "analyze {}: {stderr}", path.display());
    json(&stdout)
}

/// A variant of a built-in scenario written to `dir`, for `sim:PATH`.
fn variant(dir: &Path, name: &str, change: impl FnOnce(&mut Scenario)) -> PathBuf {
    let mut scenario = Scenario::builtin(name).expect("built-in");
    change(&mut scenario);
    let path = dir.join(format!("{}.toml", scenario.name));
    std::fs::write(&path, scenario.to_toml()).unwrap();
    path
}

/// Each allocation of `driver` as (address, size, tag, caller symbol, stack symbols).
fn allocations(report: &Value, driver: &str) -> Vec<(String, u64, String, String, Vec<String>)> {
    let mut out: Vec<_> = report["drivers"]
        .as_array()
        .expect("drivers")
        .iter()
        .filter(|d| d["name"] == driver)
        .flat_map(|d| d["allocations"].as_array().cloned().unwrap_or_default())
        .map(|a| {
            (
                a["address"].as_str().unwrap().to_string(),
                a["size"].as_u64().unwrap(),
                a["tag"].as_str().unwrap().to_string(),
                a["caller_symbol"].as_str().unwrap().to_string(),
                a["stack"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["symbol"].as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    out.sort();
    out
}

fn without_transport(mut report: Value) -> Value {
    let target = report["target"].as_object_mut().expect("a target object");
    for key in ["connection", "time", "stops", "outside_s"] {
        target.remove(key);
    }
    report
}

#[test]
fn the_unload_time_leak_is_named_and_its_allocations_found_on_every_build() {
    let dir = tempfile::tempdir().unwrap();
    for (build, fixture) in BUILDS {
        let scenario = format!("{build}-unload-leak");
        let (report, stderr) = attach(&scenario);
        let stop = &report["bugcheck"];
        assert_eq!(stop["code"], "0xc4", "{scenario}: {stop}");
        assert_eq!(stop["name"], "DRIVER_VERIFIER_DETECTED_VIOLATION");
        assert_eq!(stop["parameters"][0], "0x62");
        assert_eq!(stop["driver"], "leaky.sys", "{scenario}: parameter 2");
        assert_eq!(stop["not_freed"], 3);
        assert_eq!(stop["found"], 3);
        assert_eq!(
            report["complete"], true,
            "{scenario}: {}",
            report["incomplete_reasons"]
        );
        assert!(
            stderr.contains("resuming it now continues the crash"),
            "{scenario}: attach says what resuming does: {stderr}"
        );
        let leaked = allocations(&report, "leaky.sys");
        assert_eq!(leaked.len(), 3, "{scenario}");
        assert!(leaked
            .iter()
            .all(|a| a.3 == "leaky!LeakyAllocate+0x32" && a.4[2] == "leaky!LeakyAllocate+0x32"));

        // The loaded-driver equivalent: the same allocations and stacks, no bug check.
        let loaded = variant(dir.path(), &scenario, |s| {
            s.name = format!("{build}-loaded-leak");
            s.bugcheck = None;
            s.drivers[1].state = DriverState::Loaded;
        });
        let (equivalent, _) = attach(loaded.to_str().unwrap());
        assert!(equivalent.get("bugcheck").is_none());
        assert_eq!(allocations(&equivalent, "leaky.sys"), leaked, "{scenario}");

        // Its crash dump: the header's bug check, and the same report.
        let dump = dir.path().join(format!("{scenario}.dmp"));
        let mut sim = kdleak();
        sim.args(["sim", "--scenario", &scenario, "--write-dump"])
            .arg(&dump);
        let (ok, _, stderr) = run(sim);
        assert!(ok, "{stderr}");
        let bytes = std::fs::read(&dump).unwrap();
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        assert_eq!(
            u32::from_le_bytes(bytes[0x38..0x3c].try_into().unwrap()),
            0xC4
        );
        assert_eq!((u64_at(0x40), u64_at(0x58)), (0x62, 3), "{scenario} header");
        assert_eq!(
            without_transport(analyze(&dump, fixture)),
            without_transport(report),
            "{scenario}: the dump's report differs from the live one"
        );
    }
}

#[test]
fn callers_in_an_unloaded_driver_read_unloaded_and_a_wrong_count_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    // The same leak after the unload went through: image unmapped, loader entry gone, a
    // MmUnloadedDrivers record.
    let unloaded = variant(dir.path(), "win10-unload-leak", |s| {
        s.name = "win10-unloaded-leak".into();
        s.drivers[1].state = DriverState::Unloaded;
    });
    let (report, _) = attach(unloaded.to_str().unwrap());
    assert_eq!(report["bugcheck"]["driver"], "leaky.sys");
    assert_eq!(report["complete"], true, "{}", report["incomplete_reasons"]);
    let names: Vec<&str> = report["unloaded_modules"]
        .as_array()
        .expect("the unloaded-driver list was read")
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["leaky.sys", "myfault.sys"], "newest first");
    let leaked = allocations(&report, "leaky.sys");
    assert_eq!(leaked.len(), 3);
    for (_, _, _, caller, stack) in &leaked {
        assert_eq!(caller, "<Unloaded_leaky.sys>+0x1152");
        assert_eq!(stack[0], "nt!VeAllocatePoolWithTagPriority+0x2b6");
        assert!(stack[2].starts_with("<Unloaded_leaky.sys>+0x"), "{stack:?}");
    }

    // With the driver's file, the same frames symbolize through its PDB: then they equal the
    // loaded-driver equivalent's (addresses aside: the pool is laid out without its loader entry).
    let mut with_image = kdleak();
    with_image
        .args([
            "attach",
            &format!("sim:{}", unloaded.display()),
            "--offline",
        ])
        .args(["--format", "json", "--image"])
        .arg(format!(
            "leaky.sys={}",
            root()
                .join("captures/fixtures/win10-19041/leaky.sys")
                .display()
        ));
    let (_, stdout, stderr) = run(with_image);
    let symbolized = json(&stdout);
    assert_eq!(symbolized["complete"], true, "{stderr}");
    let loaded = variant(dir.path(), "win10-unload-leak", |s| {
        s.name = "win10-loaded-leak".into();
        s.bugcheck = None;
        s.drivers[1].state = DriverState::Loaded;
    });
    let (equivalent, _) = attach(loaded.to_str().unwrap());
    let without_address = |report: &Value| {
        let mut list: Vec<_> = allocations(report, "leaky.sys")
            .into_iter()
            .map(|(_, size, tag, caller, stack)| (size, tag, caller, stack))
            .collect();
        list.sort();
        list
    };
    assert_eq!(without_address(&symbolized), without_address(&equivalent));
    assert_ne!(without_address(&report), without_address(&equivalent));

    // `info` lists them like `lm`, and names the stop.
    let mut info = kdleak();
    info.args(["info", "sim:win10-unload-leak", "--offline"]);
    let (ok, stdout, stderr) = run(info);
    assert!(ok, "{stderr}");
    let text = String::from_utf8_lossy(&stdout);
    let listed = text
        .split("Unloaded modules:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no Unloaded modules in:\n{text}"));
    assert!(
        listed.starts_with("fffff880`0447c000 fffff880`04481000   myfault.sys"),
        "{listed}"
    );
    assert!(text.contains("Bug check:           0xC4 (DRIVER_VERIFIER_DETECTED_VIOLATION) (0x62,"));

    // --stay-broken keeps a bug-checked target stopped, and says so.
    let mut stay = kdleak();
    stay.args([
        "attach",
        "sim:win10-unload-leak",
        "--offline",
        "--stay-broken",
    ]);
    let (ok, _, stderr) = run(stay);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("--stay-broken keeps it stopped (resuming"),
        "{stderr}"
    );

    // An ordinary pull does not read the list.
    let (ordinary, _) = attach("win10-myfault");
    assert!(ordinary.get("unloaded_modules").is_none());
    assert!(ordinary.get("bugcheck").is_none());

    // watch across the stop: every poll of the bug-checked target names it in the series.
    let series = dir.path().join("series.jsonl");
    let mut watch = kdleak();
    watch
        .args(["watch", "sim:win7-unload-leak", "--offline", "--quiet"])
        .args(["--interval", "100ms", "--count", "2", "--out"])
        .arg(&series);
    let (ok, _, stderr) = run(watch);
    assert!(ok, "{stderr}");
    let polls: Vec<Value> = read_series(&series);
    assert_eq!(polls.len(), 2);
    for poll in &polls {
        assert_eq!(poll["bugcheck"]["code"], "0xc4", "{poll}");
        assert_eq!(poll["bugcheck"]["driver"], "leaky.sys");
        assert_eq!(poll["outstanding_count"], 3);
    }

    // Parameter 4 disagreeing with what was found makes the report incomplete.
    let lying = variant(dir.path(), "win11-unload-leak", |s| {
        s.name = "win11-lying-count".into();
        s.bugcheck.as_mut().unwrap().count = Some(Num(5));
    });
    let (report, _) = attach(lying.to_str().unwrap());
    assert_eq!(report["complete"], false);
    assert!(
        report["incomplete_reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r
                .as_str()
                .unwrap()
                .contains("counts 5 allocations of leaky.sys")),
        "{}",
        report["incomplete_reasons"]
    );
}

/// `watch` across the stop: the target runs as the loaded-driver equivalent, then (after the
/// second poll's Continue) unloads leaky.sys and stops in 0xC4/0x62 on its own, reporting the
/// stop unasked as Windows does to an attached debugger. The third poll names the bug check and
/// still finds the driver's three blocks in the same boot; its Continue continues the crash (the
/// machine restarts: the simulator counts one reboot), so the later polls meet a running,
/// rebooted target and no bug check. (watch marks a reboot only when the counters or the log
/// went back; this boot's equal the last one's, so none is marked here.)
#[test]
fn watch_across_a_bug_check_that_happens_while_the_target_runs() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kd.sock");
    let series = dir.path().join("series.jsonl");
    let mut sim = kdleak();
    sim.args(["sim", "--scenario", "win10-unload-leak", "--pipe"])
        .arg(&socket)
        .args(["--faults", "bugcheck_after_continues=2", "--state-file"])
        .arg(dir.path().join("state.json"));
    let _sim = spawn(sim);
    wait_for("the sim's socket", Duration::from_secs(30), || {
        socket.exists()
    });
    let mut watch = kdleak();
    watch
        .arg("watch")
        .arg(format!("com:pipe,port={},reconnect", socket.display()))
        .args(["--offline", "--sympath"])
        .arg(root().join("captures/fixtures/win10-19041"))
        .args(["--interval", "200ms", "--count", "5", "--quiet"])
        .args(["--give-up-after", "30s", "--out"])
        .arg(&series);
    let (ok, _, stderr) = run(watch);
    assert!(ok, "{stderr}");
    let polls: Vec<Value> = read_series(&series);
    assert_eq!(polls.len(), 5);
    let bugchecked: Vec<u64> = polls
        .iter()
        .filter(|p| p.get("bugcheck").is_some())
        .map(|p| p["poll"].as_u64().unwrap())
        .collect();
    assert_eq!(bugchecked, [3], "{polls:?}");
    let stop = &polls[2];
    assert_eq!(stop["bugcheck"]["code"], "0xc4", "{stop}");
    assert_eq!(stop["bugcheck"]["driver"], "leaky.sys");
    assert_eq!(stop["bugcheck"]["found"], 3);
    assert_eq!(stop["complete"], true, "{stop}");
    assert!(stop.get("discontinuity").is_none(), "the same boot: {stop}");
    let sim = state(&dir.path().join("state.json"));
    assert_eq!(
        (&sim["bug_checks"], &sim["reboots"]),
        (&1.into(), &1.into()),
        "{sim}"
    );
    for poll in &polls {
        assert_eq!(poll["ok"], true, "{poll}");
        assert_eq!(poll["outstanding_count"], 3, "{poll}");
    }
}
