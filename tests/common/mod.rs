//! Running the kdleak binaries from tests: processes that never outlive a failed assertion, hard
//! time limits, and the simulator's state file.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The kdleak binary, run from the repository root, with no key inherited and an explicitly
/// empty symbol path: with none at all kdleak would use Microsoft's server (WinDbg's `.symfix`),
/// and tests have no network. A test of that default removes `_NT_SYMBOL_PATH`.
pub fn kdleak() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kdleak"));
    command
        .current_dir(root())
        .env_remove("KDLEAK_KEY")
        .env("_NT_SYMBOL_PATH", "")
        .env_remove("_NT_ALT_SYMBOL_PATH");
    command
}

/// Kills the child on drop, so a failing assertion never leaves a process behind. Its stdout
/// and stderr are drained by threads: a child logging at trace level fills a pipe buffer in
/// milliseconds and would block on its next write.
pub struct Running(pub Child, Drains);

#[derive(Default)]
pub struct Drains(Vec<JoinHandle<Vec<u8>>>);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

pub fn spawn(mut command: Command) -> Running {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    Running(child, Drains(stdout.into_iter().chain(stderr).collect()))
}

/// Waits for the child within `limit` (failing the test otherwise) and collects its output.
pub fn finish(mut running: Running, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "kdleak did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut outputs = std::mem::take(&mut running.1)
        .0
        .into_iter()
        .map(|h| h.join().unwrap_or_default());
    Output {
        status,
        stdout: outputs.next().unwrap_or_default(),
        stderr: outputs.next().unwrap_or_default(),
    }
}

/// The simulator's `--state-file`, or null while it is not written yet.
pub fn state(path: &Path) -> Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null)
}

/// A `watch --out` series: one JSON record per line, the last line complete.
pub fn read_series(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with('\n'), "the last line is complete");
    text.lines()
        .map(|line| serde_json::from_str(line).expect("every line is one JSON record"))
        .collect()
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
