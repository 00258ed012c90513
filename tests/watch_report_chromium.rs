//! The watch report in headless Chromium: `scripts/watch_report_chromium.sh` runs a watch
//! against `sim:watch-leak`, screenshots report.html and checks that the chart's leaking-site
//! line rises. Chromium is required (Debian's `chromium`, which `scripts/test` installs or names):
//! a missing browser fails the test rather than skipping it.

use std::process::Command;

mod peers;

#[test]
fn the_html_report_renders_in_chromium_with_the_leak_rising() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/watch_report_chromium.sh"))
        .arg(dir.path())
        .env("KDLEAK", env!("CARGO_BIN_EXE_kdleak"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(77),
        "{}",
        peers::unavailable("chromium", format!("not installed: {stderr}"))
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("the chart shows the leaking site rising"),
        "{stdout}"
    );
    assert!(dir.path().join("report.png").exists());
}
