//! `kdleak info` (the binary) against `kdleak sim` (the binary) for the win7, win10 and win11
//! scenarios over KDNET, a Unix socket, TCP and a pseudo-terminal: build, kernel base and every
//! module with its PDB identity as the fixture manifest says, and the sim's state file shows the
//! target running afterwards. Also: SIGINT while kdleak is broken in mid-read still resumes the
//! target, as the sim's state file proves.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::*;

const KEY: &str = "1.2.3.4";

fn fixture(scenario: &str) -> &'static str {
    match scenario {
        "win7-myfault" => "win7-7601",
        "win10-myfault" => "win10-19041",
        _ => "win11-22000",
    }
}

/// Compares kdleak's JSON with the fixture manifest the scenario was built from.
fn check(json: &Value, scenario: &str) {
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(
            root()
                .join("captures/fixtures")
                .join(fixture(scenario))
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(json["build"], manifest["build"], "{json}");
    let modules = json["modules"]["modules"].as_array().unwrap();
    let names: Vec<&str> = modules
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["ntoskrnl.exe", "myfault.sys", "leaky.sys"],
        "{json}"
    );
    for module in modules {
        let file = &manifest["files"][module["name"].as_str().unwrap()];
        let guid = module["pdb"]["guid"].as_str().unwrap().replace('-', "");
        assert_eq!(guid, file["rsds"]["guid"].as_str().unwrap(), "{module}");
        assert_eq!(module["pdb"]["age"], file["rsds"]["age"], "{module}");
        assert_eq!(
            module["pdb"]["path"].as_str().unwrap().rsplit('\\').next(),
            file["rsds"]["pdb_name"].as_str(),
            "{module}"
        );
        if module["name"] != "ntoskrnl.exe" {
            assert_eq!(module["base"], file["image_base"], "{module}");
        }
    }
    assert_eq!(json["kernel_base"], modules[0]["base"]);
}

/// Runs `kdleak info` against a sim serving `scenario` over `transport`.
fn info_against_sim(scenario: &str, transport: &str) {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    let mut sim = kdleak();
    sim.args(["sim", "--scenario", scenario, "--state-file"])
        .arg(&state_file);
    let mut info = kdleak();
    info.args([
        "info",
        "--format",
        "json",
        "--connect-timeout",
        "20",
        "--offline",
    ]);
    info.arg("--sympath")
        .arg(root().join("captures/fixtures").join(fixture(scenario)));
    let (conn, sim_args): (String, Vec<String>) = match transport {
        "kdnet" => {
            let port = free_port();
            (
                format!("net:port={port},key={KEY}"),
                vec![
                    "--kdnet".into(),
                    format!("127.0.0.1:{port}"),
                    "--key".into(),
                    KEY.into(),
                    "--poke-interval".into(),
                    "0.2".into(),
                ],
            )
        }
        "pipe" => {
            let path = dir.path().join("kd.sock");
            (
                format!("com:pipe,port={},reconnect", path.display()),
                vec!["--pipe".into(), path.display().to_string()],
            )
        }
        "tcp" => {
            let addr = format!("127.0.0.1:{}", free_port());
            (format!("com:tcp,port={addr}"), vec!["--tcp".into(), addr])
        }
        "pty" => {
            let link = dir.path().join("ttyKD0");
            (
                format!("com:port={},baud=115200", link.display()),
                vec!["--pty".into(), link.display().to_string()],
            )
        }
        other => unreachable!("{other}"),
    };
    sim.args(&sim_args);
    info.arg(&conn);
    // KDNET: the debugger binds first and the target pokes it; streams: the target listens first.
    let (info_run, _sim_run) = if transport == "kdnet" {
        let info_run = spawn(info);
        std::thread::sleep(Duration::from_millis(300));
        (info_run, spawn(sim))
    } else {
        let sim_run = spawn(sim);
        wait_for("the sim's state file", Duration::from_secs(20), || {
            state(&state_file) != Value::Null
        });
        (spawn(info), sim_run)
    };
    let out = finish(info_run, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{scenario} over {transport}: {stderr}"
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    check(&json, scenario);
    wait_for(
        "the sim to report the target running",
        Duration::from_secs(10),
        || {
            let s = state(&state_file);
            s["state"] == "running" && s["continues"] == 1 && s["break_ins"] == 1
        },
    );
    assert_eq!(
        state(&state_file)["rejected"],
        0,
        "{scenario} over {transport}"
    );
}

#[test]
fn info_over_kdnet_for_every_scenario() {
    for scenario in ["win7-myfault", "win10-myfault", "win11-myfault"] {
        info_against_sim(scenario, "kdnet");
    }
}

#[test]
fn info_over_a_unix_socket_for_every_scenario() {
    for scenario in ["win7-myfault", "win10-myfault", "win11-myfault"] {
        info_against_sim(scenario, "pipe");
    }
}

#[test]
fn info_over_tcp_for_every_scenario() {
    for scenario in ["win7-myfault", "win10-myfault", "win11-myfault"] {
        info_against_sim(scenario, "tcp");
    }
}

#[test]
fn info_over_a_pty_for_every_scenario() {
    for scenario in ["win7-myfault", "win10-myfault", "win11-myfault"] {
        info_against_sim(scenario, "pty");
    }
}

#[test]
fn sigint_while_broken_in_mid_read_resumes_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    let socket = dir.path().join("kd.sock");
    // 150 ms per write makes every read slow enough to interrupt in the middle.
    let mut sim = kdleak();
    sim.args([
        "sim",
        "--scenario",
        "win10-myfault",
        "--faults",
        "latency=150ms",
        "--pipe",
    ])
    .arg(&socket)
    .arg("--state-file")
    .arg(&state_file);
    let _sim = spawn(sim);
    wait_for("the sim's socket", Duration::from_secs(20), || {
        socket.exists()
    });
    let mut info = kdleak();
    info.arg("info")
        .arg(format!("com:pipe,port={}", socket.display()));
    let info = spawn(info);
    wait_for("the target to stop", Duration::from_secs(30), || {
        state(&state_file)["state"] == "stopped"
    });
    wait_for("kdleak to be reading", Duration::from_secs(30), || {
        state(&state_file)["requests"]["DbgKdReadVirtualMemoryApi"].as_u64() >= Some(1)
    });
    let status = Command::new("kill")
        .args(["-INT", &info.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = finish(info, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    wait_for(
        "the sim to report the target running",
        Duration::from_secs(15),
        || {
            let s = state(&state_file);
            s["state"] == "running" && s["continues"] == 1
        },
    );
}
