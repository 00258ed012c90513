//! `kdleak attach` (the binary) against `kdleak sim` (the binary): the reference report over a
//! Unix socket and KDNET, the target running afterwards (sim state file), and the documented
//! failures: pool tracking off, a driver that is not verified, no kernel PDB.

use std::process::Output;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::*;

/// Serves `scenario` on a Unix socket, runs `kdleak attach` with `args`, checks the target runs
/// afterwards, and returns attach's output.
fn attach_over_pipe(scenario: &str, fixture: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kd.sock");
    let state_file = dir.path().join("state.json");
    let mut sim = kdleak();
    sim.args(["sim", "--scenario", scenario, "--pipe"])
        .arg(&socket)
        .arg("--state-file")
        .arg(&state_file);
    let _sim = spawn(sim);
    wait_for("the sim's socket", Duration::from_secs(30), || {
        socket.exists()
    });
    let mut attach = kdleak();
    attach
        .arg("attach")
        .arg(format!("com:pipe,port={}", socket.display()))
        .args(["--offline", "--sympath"])
        .arg(root().join("captures/fixtures").join(fixture))
        .args(args);
    let out = finish(spawn(attach), Duration::from_secs(120));
    wait_for("the target running again", Duration::from_secs(30), || {
        let s = state(&state_file);
        s["state"] == "running" && s["continues"] == 1
    });
    out
}

const SEED_ROWS: &str = "\
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

#[test]
fn the_reference_report_over_a_unix_socket_and_the_target_runs_afterwards() {
    let out = attach_over_pipe("win7-myfault", "win7-7601", &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(SEED_ROWS), "{text}");
    for line in [
        "Pool block fffffa8005400000, Size 00000000000fa000, Thread fffffa80044ceb60",
        "nt!VeAllocatePoolWithTagPriority+0x2b6",
        "fffff8800447d634 myfault!MyfaultDeviceControl+0x358",
        "fffff8800447d727 myfault!MyfaultDispatch+0xb7",
        "nt!KiSystemServiceCopyEnd+0x13",
        "myfault!MyfaultDeviceControl+0x358  myfault.sys     10  0x9ce000",
        // By default the log is read newest-first until every block has its stack.
        "Complete: every tracked allocation and its newest log record was read",
    ] {
        assert!(text.contains(line), "missing {line:?}");
    }
}

#[test]
fn json_over_kdnet_for_win10_written_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    let out_file = dir.path().join("report.json");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut attach = kdleak();
    attach
        .arg("attach")
        .arg(format!("net:port={port},key=1.2.3.4"))
        .args(["--format", "json", "--offline", "--out"])
        .arg(&out_file)
        .arg("--sympath")
        .arg(root().join("captures/fixtures/win10-19041"));
    let attach = spawn(attach);
    std::thread::sleep(Duration::from_millis(300));
    let mut sim = kdleak();
    sim.args(["sim", "--scenario", "win10-myfault", "--key", "1.2.3.4"])
        .args(["--poke-interval", "0.2", "--kdnet"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--state-file")
        .arg(&state_file);
    let _sim = spawn(sim);
    // An 8 MiB log in ~1 KiB KDNET reads, debug builds on a busy 2-core machine: generous.
    let out = finish(attach, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["target"]["build"], 19041);
    assert_eq!(json["complete"], true);
    let driver = &json["drivers"][0];
    assert_eq!(driver["name"], "myfault.sys");
    assert_eq!(driver["allocations"].as_array().unwrap().len(), 10);
    assert_eq!(
        driver["allocations"][0]["stack"][2]["symbol"],
        "myfault!MyfaultDeviceControl+0x358"
    );
    assert_eq!(json["sites"][0]["bytes"], 0x9ce000);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    wait_for("the target running again", Duration::from_secs(30), || {
        let s = state(&state_file);
        s["state"] == "running" && s["continues"] == 1
    });
}

#[test]
fn pool_tracking_off_says_what_to_run_on_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("captures/scenarios/win10-myfault.toml"))
        .unwrap()
        .replace("level = 0x8", "level = 0x1");
    let scenario = dir.path().join("special-pool-only.toml");
    std::fs::write(&scenario, text).unwrap();
    let out = attach_over_pipe(scenario.to_str().unwrap(), "win10-19041", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("verifier /flags 8 /driver"), "{stderr}");
}

#[test]
fn a_driver_that_is_not_verified_is_named() {
    let out = attach_over_pipe("win10-myfault", "win10-19041", &["--driver", "leaky"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("leaky is not a verified"), "{stderr}");
}

#[test]
fn no_kernel_pdb_is_a_clear_error_and_the_target_still_resumes() {
    let out = attach_over_pipe("win10-myfault", "win7-7601", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("ntkrnlmp.pdb"), "{stderr}");
}
