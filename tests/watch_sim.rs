//! `kdleak watch` (the binary) against the simulated target's `watch-leak` scenario, whose
//! timeline makes leaky.sys leak 4 KiB per target minute while myfault.sys allocates and frees
//! steadily. Target time is compressed (`KDLEAK_SIM_TIME_SCALE` for the in-process `sim:`
//! target, `--time-scale` for `kdleak sim`), so each test takes a few seconds.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

mod common;
use common::*;

/// Runs `kdleak watch sim:watch-leak` with target time × `scale`; returns the output and the
/// series' records.
fn watch_embedded(scale: &str, args: &[&str], dir: &Path) -> (Output, Vec<Value>) {
    let series = dir.join("series.jsonl");
    let mut watch = kdleak();
    watch
        .env("KDLEAK_SIM_TIME_SCALE", scale)
        .args(["watch", "sim:watch-leak", "--offline", "--sympath", ""])
        .arg("--out")
        .arg(&series)
        .args(args);
    let out = finish(spawn(watch), Duration::from_secs(60));
    (out, read_series(&series))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn watch_flags_only_the_leaking_site_with_its_stack() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.html");
    // 1200×: 100 ms of running = 2 target minutes = 2 leaked blocks per poll.
    let (out, records) = watch_embedded(
        "1200",
        &[
            "--interval",
            "100ms",
            "--count",
            "7",
            "--format",
            "json",
            "--report",
            report.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(records.len(), 7, "one record per poll");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["poll"], i as u64 + 1);
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["complete"], true, "{r}");
        assert!(r["wire_bytes"].as_u64().unwrap() > 0);
    }
    let last = records.last().unwrap();
    let leaks = last["suspected_leaks"].as_array().unwrap();
    assert_eq!(leaks.len(), 1, "only leaky.sys's site: {leaks:?}");
    let leak = &leaks[0];
    assert_eq!(leak["driver"], "leaky.sys");
    assert_eq!(leak["site"], "leaky!LeakyAllocate+0x32");
    assert_eq!(leak["tag"], "Leak");
    let stack: Vec<&str> = leak["stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(
        stack,
        [
            "nt!VeAllocatePoolWithTagPriority+0x2b6",
            "nt!VerifierExAllocatePoolEx+0x1d",
            "leaky!LeakyAllocate+0x32",
            "leaky!LeakyDeviceControl+0x5c",
            "nt!IovCallDriver+0xa0",
            "nt!IopXxxControlFile+0x607",
            "nt!NtDeviceIoControlFile+0x56",
            "nt!KiSystemServiceCopyEnd+0x13",
        ]
    );
    // myfault.sys allocated and freed all along (log records) but never grew.
    let myfault = last["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["driver"] == "myfault.sys")
        .unwrap();
    assert_eq!(myfault["growth_streak"], 0);
    assert_eq!(
        myfault["bytes"],
        records[0]["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["driver"] == "myfault.sys")
            .unwrap()["bytes"]
    );
    assert!(
        last["log_records_read"].as_u64().unwrap() > 2,
        "myfault's churn is logged"
    );
    // leaky's outstanding bytes rise by 4 KiB blocks (charged 0x1010 each).
    let leaky_bytes: Vec<u64> = records
        .iter()
        .map(|r| {
            r["sites"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["driver"] == "leaky.sys")
                .map_or(0, |s| s["bytes"].as_u64().unwrap())
        })
        .collect();
    assert!(leaky_bytes.last() > leaky_bytes.first(), "{leaky_bytes:?}");
    assert!(
        leaky_bytes.iter().all(|b| b % 0x1010 == 0),
        "{leaky_bytes:?}"
    );
    // The summary on stdout says the same.
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["polls"], 7);
    assert_eq!(summary["suspected_leaks"][0]["driver"], "leaky.sys");
    // The HTML report is self-contained.
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.contains("<svg") && html.contains("<polyline"));
    assert!(html.contains("leaky!LeakyAllocate+0x32"));
    for external in ["<script", "<link", "src=", "url(", "@import"] {
        assert!(!html.contains(external), "external resource: {external}");
    }
    assert_eq!(
        html.matches("http").count(),
        html.matches("http://www.w3.org/2000/svg").count(),
        "no URL but the SVG namespace"
    );
}

#[test]
fn fail_on_growth_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let (out, records) = watch_embedded(
        "1200",
        &[
            "--interval",
            "100ms",
            "--count",
            "30",
            "--fail-on-growth",
            "10000",
            "--quiet",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--fail-on-growth"),
        "{}",
        stderr(&out)
    );
    assert!(records.len() < 30, "the watch stops at the threshold");
    let last = records.last().unwrap();
    assert!(last["growth_bytes"].as_i64().unwrap() > 10000);
    assert!(records[..records.len() - 1]
        .iter()
        .all(|r| r["growth_bytes"].as_i64().unwrap() <= 10000));
}

#[test]
fn later_polls_of_a_quiet_target_read_at_most_5_percent_of_the_first() {
    let dir = tempfile::tempdir().unwrap();
    // Time nearly stands still on the target: nothing is allocated between polls.
    let (out, records) = watch_embedded(
        "0.0001",
        &["--interval", "50ms", "--count", "5", "--quiet"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(records.len(), 5);
    let first = records[0]["wire_bytes"].as_u64().unwrap();
    assert_eq!(records[0]["log_read"], "full");
    for r in &records[1..] {
        let bytes = r["wire_bytes"].as_u64().unwrap();
        let ratio = bytes as f64 / first as f64;
        eprintln!(
            "poll {}: {bytes} wire bytes = {:.2} % of the first poll's {first}",
            r["poll"],
            ratio * 100.0
        );
        assert_eq!(r["log_read"], "since");
        assert_eq!(r["log_records_read"], 0);
        assert!(ratio <= 0.05, "poll {} read {bytes} of {first}", r["poll"]);
    }
}

#[test]
fn a_reboot_mid_watch_is_handled_and_marked() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kd.sock");
    let series = dir.path().join("series.jsonl");
    let mut sim = kdleak();
    sim.args([
        "sim",
        "--scenario",
        "watch-leak",
        "--time-scale",
        "1200",
        "--pipe",
    ])
    .arg(&socket)
    // After the 15th poll's Continue: the reboot falls mid-watch however fast this machine is.
    .args(["--faults", "reboot_after_continues=15"]);
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
        .args([
            "--interval",
            "200ms",
            "--count",
            "45",
            "--quiet",
            "--give-up-after",
            "30s",
        ])
        .arg("--out")
        .arg(&series);
    let out = finish(spawn(watch), Duration::from_secs(90));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let records = read_series(&series);
    assert_eq!(records.len(), 45, "one record per poll");
    let reboots: Vec<&Value> = records
        .iter()
        .filter(|r| r["discontinuity"]["kind"] == "reboot")
        .collect();
    assert_eq!(reboots.len(), 1, "{records:?}");
    let at = reboots[0]["poll"].as_u64().unwrap() as usize;
    assert!(at > 1 && at <= 45);
    let before = &records[at - 2];
    let after = &records[at - 1];
    assert_eq!(after["ok"], true);
    assert_eq!(after["growth_bytes"], 0, "a new baseline after the reboot");
    assert!(
        after["outstanding_bytes"].as_u64() < before["outstanding_bytes"].as_u64(),
        "the leak starts over after the reboot"
    );
    assert!(records
        .iter()
        .all(|r| r["ok"] == true || r["error"].is_string()));
}

#[test]
fn a_fast_timeline_fills_new_tracker_pages_and_wraps_the_log() {
    let dir = tempfile::tempdir().unwrap();
    // 60000×: 1000 target minutes per wall second; the 0x1000-record ring wraps.
    let (out, records) = watch_embedded(
        "60000",
        &["--interval", "100ms", "--count", "12", "--quiet"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(records.len(), 12);
    for r in &records {
        // The pull cross-checks tracker bytes against the driver's counters.
        assert_eq!(r["complete"], true, "{r}");
    }
    // Only what was written since the previous poll is read — unless the ring wrapped past it in
    // between (a slow machine lets more target time pass between polls), when all of it is.
    const RING: u64 = 0x1000;
    for pair in records.windows(2) {
        let written =
            pair[1]["log_index"].as_u64().unwrap() - pair[0]["log_index"].as_u64().unwrap();
        let expect = if written < RING { "since" } else { "full" };
        assert_eq!(
            pair[1]["log_read"], expect,
            "{written:#x} written: {}",
            pair[1]
        );
    }
    let last = records.last().unwrap();
    assert!(last["log_index"].as_u64().unwrap() > 0x1000, "{last}");
    let leaky = last["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["driver"] == "leaky.sys")
        .unwrap();
    let count = leaky["count"].as_u64().unwrap();
    assert!(
        count > 2 * 126,
        "more blocks than two tracker pages hold: {count}"
    );
    assert_eq!(leaky["bytes"].as_u64().unwrap(), count * 0x1010);
    let leak = &last["suspected_leaks"][0];
    assert_eq!(leak["driver"], "leaky.sys");
    assert_eq!(leak["stack"].as_array().unwrap().len(), 8, "{leak}");
}

#[test]
fn ctrl_c_resumes_the_target_and_writes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kd.sock");
    let state_file = dir.path().join("state.json");
    let series = dir.path().join("series.jsonl");
    let report = dir.path().join("report.html");
    let mut sim = kdleak();
    sim.args([
        "sim",
        "--scenario",
        "watch-leak",
        "--time-scale",
        "1200",
        "--pipe",
    ])
    .arg(&socket)
    .arg("--state-file")
    .arg(&state_file);
    let _sim = spawn(sim);
    wait_for("the sim's socket", Duration::from_secs(30), || {
        socket.exists()
    });
    let mut watch = kdleak();
    watch
        .arg("watch")
        .arg(format!("com:pipe,port={}", socket.display()))
        .args(["--offline", "--sympath"])
        .arg(root().join("captures/fixtures/win10-19041"))
        .args(["--interval", "100ms", "--count", "100000", "--quiet"])
        .arg("--out")
        .arg(&series)
        .arg("--report")
        .arg(&report);
    let running = spawn(watch);
    wait_for("three polls", Duration::from_secs(60), || {
        std::fs::read_to_string(&series).is_ok_and(|t| t.lines().count() >= 3)
    });
    let status = Command::new("kill")
        .args(["-INT", &running.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = finish(running, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let records = read_series(&series);
    assert!(records.len() >= 3);
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        html.contains(&format!("{} polls", records.len())),
        "the report covers every poll"
    );
    wait_for("the target running again", Duration::from_secs(30), || {
        state(&state_file)["state"] == "running"
    });
}

#[test]
fn a_target_that_stops_answering_is_retried_then_given_up_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kd.sock");
    let series = dir.path().join("series.jsonl");
    let mut sim = kdleak();
    sim.args([
        "sim",
        "--scenario",
        "watch-leak",
        "--time-scale",
        "1200",
        "--pipe",
    ])
    .arg(&socket)
    .args(["--faults", "stall_after=1500ms"]);
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
        .args(["--interval", "200ms", "--count", "1000", "--quiet"])
        .args([
            "--connect-timeout",
            "1",
            "--timeout",
            "2",
            "--give-up-after",
            "3s",
        ])
        .arg("--out")
        .arg(&series);
    let out = finish(spawn(watch), Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let records = read_series(&series);
    assert!(records.len() >= 2, "{records:?}");
    let last = records.last().unwrap();
    assert_eq!(last["ok"], false, "the gap is recorded: {last}");
    assert!(last["error"].is_string());
    assert!(records[..records.len() - 1].iter().all(|r| r["ok"] == true));
}

#[test]
fn the_text_summary_ends_with_the_leaking_drivers_windbg_blocks_in_either_style() {
    for (style, driver_line, row_shape) in [
        ("current", "nt!_VF_TARGET_DRIVER 0x", "Caller Address"),
        ("classic", "Driver Verification List", "CallersAddress"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        // 60000×: a millisecond of running leaks a block, so the last poll has grown however
        // late a loaded machine makes it; one growing poll flags the site.
        let (out, records) = watch_embedded(
            "60000",
            &[
                "--interval",
                "100ms",
                "--count",
                "3",
                "--growth-polls",
                "1",
                "--quiet",
                "--windbg-style",
                style,
            ],
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = String::from_utf8(out.stdout).unwrap();
        let leaks = records.last().unwrap()["suspected_leaks"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(leaks, 1, "{text}");
        let (_, windbg) = text
            .split_once("The leaking drivers at the last poll:")
            .unwrap_or_else(|| panic!("no WinDbg blocks for the leaking driver:\n{text}"));
        assert!(
            windbg.contains("!verifier 3 leaky.sys"),
            "{style}: {windbg}"
        );
        assert!(windbg.contains(driver_line), "{style}: {windbg}");
        assert!(windbg.contains(row_shape), "{style}: {windbg}");
        assert!(
            windbg.contains("leaky!LeakyAllocate+0x32"),
            "{style}: {windbg}"
        );
        // Only the suspected driver: myfault.sys allocated and freed but did not grow.
        assert!(!windbg.contains("myfault.sys"), "{style}: {windbg}");
    }
}
