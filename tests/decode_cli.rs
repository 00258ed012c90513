//! `kdleak decode` as a user runs it: counts, the GetVersion reply, wrong keys, bad input.

use assert_cmd::Command;
use serde_json::Value;

fn kdleak() -> Command {
    let mut command = Command::cargo_bin("kdleak").unwrap();
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("KDLEAK_KEY");
    command
}

#[test]
fn json_reports_955_authenticated_datagrams_and_the_get_version_reply() {
    let output = kdleak()
        .args([
            "decode",
            "captures/kdnet/windbg-uncut.pcapng.gz",
            "--key",
            "8.8.8.8",
        ])
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["datagrams"], 955);
    assert_eq!(json["authenticated"], 955);
    assert_eq!(json["auth_failures"], 0);
    let packets = json["packets"].as_array().unwrap();
    assert_eq!(packets.len(), 955);
    let reply = packets
        .iter()
        .map(|p| &p["content"])
        .find(|c| c["api"] == "DbgKdGetVersionApi" && c["fields"]["direction"] == "reply")
        .expect("a GetVersion reply");
    assert_eq!(reply["fields"]["build"], 10586);
    assert_eq!(reply["fields"]["machine_type"], "0x8664");
}

#[test]
fn text_output_ends_with_a_summary() {
    let output = kdleak()
        .args([
            "decode",
            "captures/kdnet/windbg-uncut.pcapng.gz",
            "--key",
            "8.8.8.8",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(text.lines().count(), 956);
    assert!(text
        .lines()
        .last()
        .unwrap()
        .starts_with("955 datagrams: 955 authenticated"));
    assert!(text.contains("DbgKdGetVersionApi reply cpu=65535 build 10586 machine 0x8664"));
}

#[test]
fn the_key_can_come_from_the_environment() {
    kdleak()
        .env("KDLEAK_KEY", "8.8.8.8")
        .args(["decode", "captures/kdnet/windbg-uncut.pcapng.gz"])
        .assert()
        .success();
}

#[test]
fn a_wrong_key_fails_every_datagram_exits_1_and_says_why() {
    let output = kdleak()
        .args([
            "decode",
            "captures/kdnet/kek.pcap",
            "--key",
            "8.8.8.8",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["datagrams"], 704);
    assert_eq!(json["authenticated"], 0);
    assert_eq!(json["auth_failures"], 704);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("the key is probably wrong"), "{stderr}");
}

#[test]
fn a_malformed_key_names_the_bad_part() {
    let output = kdleak()
        .args(["decode", "captures/kdnet/kek.pcap", "--key", "1.2.x!.4"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("part 3"), "{stderr}");
}

#[test]
fn a_file_that_is_not_a_capture_is_a_clear_error_not_a_panic() {
    let output = kdleak()
        .args(["decode", "Cargo.toml", "--key", "8.8.8.8"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("not a pcap"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}
