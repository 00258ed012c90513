//! Targets that are not Windows' own KD stub (issue 14): `kdleak sim --quirks` makes the simulator
//! behave as Xen's kdd and other stubs do, and the binaries are run against it over a Unix socket.
//!
//! * No debugger data list (DebuggerDataList 0 with Flags.DATA set), KDBG found through the
//!   kernel PDB; and with the block kept encoded as well, `info` says KDBG was not found (text and
//!   JSON) — the pull is the normal pull either way.
//! * MachineType x64 with Flags.PTR64 clear: attached as 64-bit, with a warning; junk Dr7 in the
//!   stop's control report is not echoed back by Continue2.
//! * Target data this host cannot use exits 4 naming the problem: another MachineType, a KernBase
//!   that is not an image, a KernBase of 0 with no KDBG.
//! * A target that never answers reads over 1024 bytes: the pull retries smaller and completes,
//!   and `--stats` counts the unanswered reads.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::*;

const SCENARIO: &str = "win10-myfault";
const FIXTURE: &str = "captures/fixtures/win10-19041";

/// `kdleak sim --quirks QUIRKS` serving the win10 scenario on a Unix socket.
struct QuirkySim {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    state_file: PathBuf,
    _sim: Running,
}

impl QuirkySim {
    fn start(quirks: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kd.sock");
        let state_file = dir.path().join("state.json");
        let mut sim = kdleak();
        sim.args(["sim", "--scenario", SCENARIO, "--quirks", quirks, "--pipe"])
            .arg(&socket)
            .arg("--state-file")
            .arg(&state_file);
        let sim = spawn(sim);
        wait_for("the sim's socket", Duration::from_secs(30), || {
            socket.exists()
        });
        Self {
            _dir: dir,
            socket,
            state_file,
            _sim: sim,
        }
    }

    /// Runs `kdleak COMMAND com:pipe,… --offline --sympath FIXTURE ARGS`.
    fn run(&self, command: &str, args: &[&str]) -> Output {
        let mut host = kdleak();
        host.arg(command)
            .arg(format!("com:pipe,port={}", self.socket.display()))
            .args(["--offline", "--sympath"])
            // The fixture as the in-process target of `normal_pull` finds it (the binary's
            // built-in copy), so both reports name the same PDB files.
            .arg(
                kdleak::sim::world::scenario::default_root()
                    .unwrap()
                    .join(FIXTURE),
            )
            .args(args);
        finish(spawn(host), Duration::from_secs(60))
    }

    /// Waits until the target runs after `continues` resumes; returns the sim's state.
    fn running_after(&self, continues: u64) -> Value {
        wait_for("the target running again", Duration::from_secs(30), || {
            let s = state(&self.state_file);
            s["state"] == "running" && s["continues"] == continues
        });
        state(&self.state_file)
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn succeeded(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {:?}\n{}",
        out.status,
        stderr(out)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The report without the fields that say how the target was reached, when, and how long it
/// was stopped.
fn without_transport(report: &str) -> Value {
    let mut report: Value = serde_json::from_str(report).expect("a JSON report");
    let target = report["target"].as_object_mut().expect("a target object");
    for key in ["connection", "time", "stops", "outside_s"] {
        target.remove(key);
    }
    report
}

/// The pull from the well-behaved in-process simulated target.
fn normal_pull() -> Value {
    let mut attach = kdleak();
    attach.args([
        "attach",
        &format!("sim:{SCENARIO}"),
        "--offline",
        "--format",
        "json",
    ]);
    let out = finish(spawn(attach), Duration::from_secs(60));
    let report = without_transport(&succeeded("attach sim:", &out));
    assert_eq!(report["complete"], true, "the normal pull is incomplete");
    report
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("JSON")
}

#[test]
fn no_or_an_unreadable_debugger_data_list_finds_kdbg_through_the_kernel_pdb() {
    for (quirks, problem) in [
        (
            "data_list=0",
            "GetVersion's DebuggerDataList is 0 although Flags.DATA is set",
        ),
        (
            "data_list=0xfffff80000001000",
            "cannot read KdpDebuggerDataListHead at 0xfffff80000001000: the memory is not readable",
        ),
    ] {
        let sim = QuirkySim::start(quirks);
        let info = json(&succeeded("info", &sim.run("info", &["--format", "json"])));
        assert_eq!(info["kdbg_source"], "kernel_pdb", "{quirks}: {info}");
        assert_ne!(info["kdbg_address"], Value::Null, "{quirks}: {info}");
        assert_eq!(info["kdbg_size"], 0x380, "{quirks}: {info}");
        assert_eq!(info["kdbg_problems"][0], problem, "{quirks}: {info}");
        let modules = info["modules"]["modules"].as_array().unwrap();
        assert_eq!(modules.len(), 3, "{quirks}: {info}");
        sim.running_after(1);
    }
}

#[test]
fn no_list_and_an_encoded_kdbg_attach_info_and_pull_as_normal() {
    let sim = QuirkySim::start("data_list=0,kdbg=encoded");
    let text = succeeded("info", &sim.run("info", &[]));
    assert!(
        text.contains(
            "KDBG:                not found (GetVersion's DebuggerDataList is 0 although \
             Flags.DATA is set; nt!KdDebuggerDataBlock ("
        ),
        "{text}"
    );
    assert!(text.contains("not KDBG (0x4742444b)"), "{text}");
    assert!(text.contains("ntoskrnl.exe"), "{text}");
    let info = json(&succeeded(
        "info --format json",
        &sim.run("info", &["--format", "json"]),
    ));
    assert_eq!(info["kdbg_address"], Value::Null, "{info}");
    assert_eq!(info["kdbg_size"], Value::Null, "{info}");
    assert_eq!(info["kdbg_source"], Value::Null, "{info}");
    assert_eq!(info["kdbg_problems"].as_array().unwrap().len(), 2, "{info}");
    let pulled = sim.run("attach", &["--format", "json"]);
    let pulled = without_transport(&succeeded("attach", &pulled));
    assert_eq!(
        pulled,
        normal_pull(),
        "the pull differs from the normal pull"
    );
    sim.running_after(3);
}

#[test]
fn ptr64_clear_attaches_as_64_bit_with_a_warning_and_junk_dr7_is_not_echoed() {
    let sim = QuirkySim::start("flags=0x3,dr7=0xdeadbeef00000401");
    let out = sim.run("info", &[]);
    let text = succeeded("info", &out);
    let warning = "GetVersion says MachineType 0x8664 (x64) but Flags 0x0003 has PTR64 clear; \
                   reading the target as 64-bit";
    assert!(stderr(&out).contains(warning), "{}", stderr(&out));
    assert!(
        text.contains(&format!("Warning:             {warning}")),
        "{text}"
    );
    assert!(
        text.contains("Build:               19041 (free), x64"),
        "{text}"
    );
    assert!(
        stderr(&out).contains("Dr7 bits no x64 processor defines"),
        "{}",
        stderr(&out)
    );
    let state = sim.running_after(1);
    assert_eq!(
        state["last_continue_dr7"], 0x401,
        "Continue2 echoed undefined Dr7 bits: {state}"
    );
}

/// Runs `info` against a sim with `quirks` and checks it exits 4 saying `problem`, and resumes.
fn target_data_error(quirks: &str, problem: &str) {
    let sim = QuirkySim::start(quirks);
    let out = sim.run("info", &[]);
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{quirks}: {stderr}");
    assert!(
        stderr.contains(problem),
        "{quirks}: no {problem:?} in {stderr}"
    );
    assert!(!stderr.contains("Flags.DATA clear"), "{quirks}: {stderr}");
    assert!(out.stdout.is_empty(), "{quirks}: printed a report");
    sim.running_after(1);
}

#[test]
fn another_machine_type_exits_4_naming_it() {
    target_data_error(
        "machine=0x14c",
        "the target's MachineType is 0x014c (x86); only x64 (0x8664) targets are supported",
    );
}

#[test]
fn a_kernel_base_that_is_no_image_exits_4_naming_it() {
    target_data_error(
        "kern_base=0xfffff80000000000,data_list=0",
        "the kernel image at 0xfffff80000000000 (GetVersion's KernBase): cannot read DOS header",
    );
}

#[test]
fn a_kernel_base_of_0_without_kdbg_exits_4_saying_so() {
    target_data_error(
        "kern_base=0,data_list=0",
        "GetVersion's KernBase is 0 and no KDBG gives the kernel base (GetVersion's \
         DebuggerDataList is 0 although Flags.DATA is set)",
    );
}

#[test]
fn reads_the_target_never_answers_are_retried_smaller() {
    let sim = QuirkySim::start("unanswered_reads_over=1024");
    let dir = tempfile::tempdir().unwrap();
    let stats_file = dir.path().join("stats.json");
    let out = sim.run(
        "attach",
        &[
            "--format",
            "json",
            "--request-timeout",
            "0.3",
            "--stats",
            stats_file.to_str().unwrap(),
        ],
    );
    let pulled = without_transport(&succeeded("attach", &out));
    assert!(
        stderr(&out).contains("a 3944-byte read at")
            && stderr(&out).contains("retrying in 2048-byte reads")
            && stderr(&out).contains("retrying in 1024-byte reads"),
        "{}",
        stderr(&out)
    );
    let stats = json(&std::fs::read_to_string(&stats_file).unwrap());
    assert_eq!(stats["unanswered_reads"], 2, "{stats}");
    assert_eq!(stats["read_size"], 1024, "{stats}");
    let state = sim.running_after(1);
    assert_eq!(state["unanswered_reads"], 2, "{state}");
    assert_eq!(
        pulled,
        normal_pull(),
        "the pull differs from the normal pull"
    );
}
