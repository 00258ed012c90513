//! Running the kdleak binaries from tests: processes that never outlive a failed assertion, hard
//! time limits, and the simulator's state file.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The kdleak binary, run from the repository root, with no key or symbol path inherited.
pub fn kdleak() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kdleak"));
    command
        .current_dir(root())
        .env_remove("KDLEAK_KEY")
        .env_remove("_NT_SYMBOL_PATH")
        .env_remove("_NT_ALT_SYMBOL_PATH");
    command
}

/// Kills the child on drop, so a failing assertion never leaves a process behind.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn(mut command: Command) -> Running {
    Running(
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Waits for the child within `limit` (failing the test otherwise) and collects its output.
pub fn finish(mut running: Running, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while running.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "kdleak did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let child = std::mem::replace(&mut running.0, Command::new("true").spawn().unwrap());
    child.wait_with_output().unwrap()
}

/// The simulator's `--state-file`, or null while it is not written yet.
pub fn state(path: &Path) -> Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null)
}

pub fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
