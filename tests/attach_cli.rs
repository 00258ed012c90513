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

/// verifier.md §1, the reference session, verbatim (the whole of it).
fn reference_session() -> String {
    std::fs::read_to_string(
        root().join("tests/data/windbg_samples/ntdebugging-pool-leaks-part6-win7-x64.txt"),
    )
    .unwrap()
}

/// `nt!…` frames point into the fixture kernel, which sits elsewhere than the reference
/// session's kernel: their addresses are masked, their symbols kept.
fn mask_nt_frames(text: &str) -> String {
    text.lines()
        .map(|line| match line.split_once(" nt!") {
            Some((address, symbol)) if address.len() == 16 => {
                format!("{} nt!{symbol}\n", "?".repeat(16))
            }
            _ => format!("{line}\n"),
        })
        .collect()
}

#[test]
fn the_reference_session_over_a_unix_socket_and_the_target_runs_afterwards() {
    // The classic layout with the whole log read is the reference session, line for line.
    let out = attach_over_pipe(
        "win7-myfault",
        "win7-7601",
        &["--windbg-style", "classic", "--whole-log"],
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(SEED_ROWS), "{text}");
    let reference = mask_nt_frames(&reference_session());
    let got = mask_nt_frames(&text);
    for (i, (got, want)) in got.lines().zip(reference.lines()).enumerate() {
        assert_eq!(got, want, "line {} of the reference session", i + 1);
    }
    assert!(got.starts_with(&reference));
    for line in [
        "myfault!MyfaultDeviceControl+0x358  myfault.sys     10  0x9ce000",
        "Complete: every tracked allocation and log record was read.",
    ] {
        assert!(text.contains(line), "missing {line:?}");
    }
}

#[test]
fn by_default_the_text_is_todays_windbg_layout_and_says_what_was_parsed() {
    let mut attach = kdleak();
    attach.args(["attach", "sim:win7-myfault"]);
    let out = finish(spawn(attach), Duration::from_secs(120));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "0: kd> !verifier 3 myfault.sys\n\nVerify Flags Level 0x00000008\n",
        "    [X] (0x00000008) Pool tracking\n",
        "Driver Verification List\n------------------------\n",
        ": myfault.sys (Loaded)\n",
        "      0xfffffa8005400000  0x000fb000  Leak  0xfffff8800447d634  myfault!MyfaultDeviceControl+0x358\n",
        "Pool block fffffa8005400000, Size 00000000000fa000, Thread fffffa80044ceb60\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // The newest-first read stops early: the progress lines say how far it got.
    let parsed: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Parsing 0x"))
        .map(|l| u64::from_str_radix(&l[..16], 16).unwrap())
        .collect();
    assert_eq!(parsed.len(), 10);
    assert!(parsed.iter().all(|&n| n > 0 && n < 0x10000), "{parsed:x?}");
    let n = parsed[0];
    assert!(text.contains(&format!("Parsed entry {n:016x}/{n:016x}...\n")));
    assert!(!text.contains("0000000000010000"), "{text}");
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
