//! `kdleak info` end to end: the binary against the in-test fake target.

mod session_support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use session_support::*;

/// kdleak with the fake target's symbols: the Windows 10 fixture kernel PDB, accepted despite
/// the fake's made-up identity (see `session_support::fixture_symbols`).
fn kdleak() -> Command {
    let mut command = Command::new(assert_cmd::cargo::cargo_bin("kdleak"));
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/captures/fixtures/win10-19041");
    command
        .env("_NT_SYMBOL_PATH", fixture)
        .env_remove("_NT_ALT_SYMBOL_PATH");
    command
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// Runs the command with a hard limit so no test can hang.
fn run_limited(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
    rx.recv_timeout(limit).unwrap_or_else(|_| {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        panic!("kdleak did not finish within {limit:?}")
    })
}

#[test]
fn info_over_a_pipe_prints_modules_and_resumes() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kd.sock");
    let target = rt.block_on(async { serial_target(&path, Behaviour::default()) });
    let mut cmd = kdleak();
    cmd.args([
        "info",
        &format!("com:pipe,port={}", path.display()),
        "--format",
        "json",
        "--force-symbols",
        "--offline",
    ]);
    let out = run_limited(cmd, Duration::from_secs(20));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["build"], BUILD);
    assert_eq!(json["kernel_base"], "0xfffff80312400000");
    assert_eq!(json["modules"]["modules"][0]["name"], "ntoskrnl.exe");
    assert_eq!(
        json["modules"]["modules"][0]["pdb"]["path"],
        "d:\\os\\obj\\amd64fre\\ntkrnlmp.pdb"
    );
    let o = target.observed();
    assert!(!o.stopped && o.continues == 1, "{o:?}");
}

#[test]
fn sigint_mid_read_resumes_then_exits_130() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kd.sock");
    let behaviour = Behaviour {
        reply_delay: Some(Duration::from_millis(100)),
        ..Behaviour::default()
    };
    let target = rt.block_on(async { serial_target(&path, behaviour) });
    let child = kdleak()
        .args(["info", &format!("com:pipe,port={}", path.display())])
        .args(["--force-symbols", "--offline"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    // Wait until the target is stopped and the host is reading.
    while !(target.observed().stopped && target.observed().requests.len() >= 3) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "host never read"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
    let out = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("kdleak hung after SIGINT");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted by SIGINT"), "{stderr}");
    let o = target.observed();
    assert!(!o.stopped && o.continues == 1, "{o:?}");
}

#[test]
fn wrong_key_exits_3_within_the_timeout() {
    let rt = runtime();
    let port = rt.block_on(async {
        let s = kdleak::transport::kdnet::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        s.local_addr().unwrap().port()
    });
    let host = format!("127.0.0.1:{port}").parse().unwrap();
    let _target = rt.block_on(async {
        kdnet_target(
            host,
            "9.9.9.9",
            Behaviour::default(),
            Duration::from_millis(100),
        )
    });
    let mut cmd = kdleak();
    cmd.args([
        "info",
        &format!("net:port={port}"),
        "--bind",
        "127.0.0.1",
        "--connect-timeout",
        "1.5",
    ])
    .env("KDLEAK_KEY", "1.2.3.4");
    let started = Instant::now();
    let out = run_limited(cmd, Duration::from_secs(10));
    assert!(started.elapsed() < Duration::from_secs(6));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("check the key"), "{stderr}");
    assert!(
        !stderr.contains("1.2.3.4") && !stderr.contains("9.9.9.9"),
        "{stderr}"
    );
}
