//! The independent tools the interop tests compare kdleak with. `scripts/test` provides them: the
//! Python peers pinned in `scripts/test-requirements.txt`, in the project's `.venv-test/` put first
//! on PATH, and the Debian packages of `scripts/test-system-packages.txt`. A test run without them
//! (a bare `cargo test` on a machine that lacks them, or has other versions) fails here, and the
//! message says to run `scripts/test`: never a silent skip.
#![allow(dead_code)]

use std::fmt::Display;
use std::path::PathBuf;
use std::process::Command;

const REQUIREMENTS: &str = "scripts/test-requirements.txt";

/// `NAME==VERSION` as pinned in `scripts/test-requirements.txt`, the one place a peer's version
/// is written.
pub fn pin(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(REQUIREMENTS);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    text.lines()
        .filter_map(|line| line.split_whitespace().next())
        .find(|requirement| {
            requirement
                .split_once("==")
                .is_some_and(|(pinned, _)| pinned.eq_ignore_ascii_case(name))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("{name} is not pinned in {REQUIREMENTS}"))
}

/// The version part of [`pin`].
pub fn pinned_version(name: &str) -> String {
    let pin = pin(name);
    pin.split_once("==").unwrap().1.to_owned()
}

/// The failure message of a test whose peer is missing or not the pinned one.
pub fn unavailable(peer: &str, problem: impl Display) -> String {
    format!(
        "{peer}: {problem}\n\
         The interop tests need their peers at the pinned versions: run the tests with \
         `scripts/test` (README \"The two commands\"). It installs the Python peers of \
         {REQUIREMENTS} into .venv-test/ and puts it first on PATH, and names the Debian \
         packages of scripts/test-system-packages.txt that are missing."
    )
}

/// Fails unless `command --version` prints `expected` (e.g. `ntoseye 0.52.0`), the pinned version:
/// another version behaves differently, and a mismatch should say why, not fail obscurely later.
pub fn require_version(command: &str, expected: &str) {
    let output = Command::new(command)
        .arg("--version")
        .output()
        .unwrap_or_else(|error| panic!("{}", unavailable(command, format!("not found ({error})"))));
    let found = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        found.trim(),
        expected,
        "{}",
        unavailable(
            command,
            format!("`{command} --version` is not {expected:?}")
        )
    );
}
