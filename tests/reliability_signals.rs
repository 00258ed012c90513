//! SIGINT and SIGTERM at random points of a pull (issue 9): `kdleak attach` (the binary) against
//! `kdleak sim` (the binary, over a Unix socket, `--faults latency=2ms` so a pull lasts seconds)
//! is signalled between 0.1 s and 2.5 s after it starts; afterwards the simulator's state file
//! must say the target runs. `KDLEAK_SIGNAL_RUNS` runs (default 6, alternating SIGINT/SIGTERM;
//! scripts/fault_matrix.sh runs 50).

use std::time::Duration;

use serde_json::Value;

mod common;
use common::*;

fn runs() -> u64 {
    std::env::var("KDLEAK_SIGNAL_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

#[test]
fn the_target_runs_after_every_sigint_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kd.sock");
    let state_file = dir.path().join("state.json");
    let mut sim = kdleak();
    sim.args([
        "sim",
        "--scenario",
        "win10-myfault",
        "--faults",
        "latency=2ms,seed=3",
    ])
    .arg("--pipe")
    .arg(&socket)
    .arg("--state-file")
    .arg(&state_file);
    let _sim = spawn(sim);
    wait_for("the sim's socket", Duration::from_secs(30), || {
        socket.exists()
    });
    let mut rng = 0x5eed_u64;
    let (mut interrupted, mut finished) = (0, 0);
    for run in 0..runs() {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(100 + (rng >> 33) % 2400);
        let signal = if run % 2 == 0 { "-INT" } else { "-TERM" };
        let before = state(&state_file)["continues"].as_u64().unwrap_or(0);
        let mut attach = kdleak();
        attach
            .arg("attach")
            .arg(format!("com:pipe,port={}", socket.display()))
            .args(["--offline", "--format", "json", "--sympath"])
            .arg(root().join("captures/fixtures/win10-19041"));
        let attach = spawn(attach);
        std::thread::sleep(delay);
        let _ = std::process::Command::new("kill")
            .args([signal, &attach.0.id().to_string()])
            .status();
        let out = finish(attach, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(130) => interrupted += 1,
            Some(0) => finished += 1,
            other => panic!("run {run} ({signal} after {delay:?}): exit {other:?}: {stderr}"),
        }
        wait_for(
            &format!("the target running after run {run} ({signal} after {delay:?})"),
            Duration::from_secs(20),
            || {
                let s: Value = state(&state_file);
                // Running, and every break-in of this run was followed by a continue.
                s["state"] == "running"
                    && s["continues"].as_u64().unwrap_or(0) >= before
                    && s["break_ins"].as_u64().unwrap_or(0) <= s["continues"].as_u64().unwrap_or(0)
            },
        );
    }
    println!("SIGNALS: runs {} interrupted {interrupted} finished-before-the-signal {finished}; target running after all", runs());
    assert!(interrupted > 0, "no run was interrupted mid-pull");
}
