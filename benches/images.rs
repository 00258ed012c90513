//! `kdleak analyze` on large VM images: a sparse 8 GiB raw image and a sparse 8 GiB ELF core of
//! the win10 scenario (the simulator's frames at the top of the machine's memory, the rest holes
//! not stored on disk: `kdleak sim --write-image … --physical-size 8G`), and a dense 1 GiB raw
//! image (every byte stored, so the scan reads it all) for the scan's throughput. Each case is
//! analyzed twice (the second from the page cache) and prints one JSON line: wall time, bytes
//! read from the file (kdleak's own count), bytes the scan read, the pull's share, and the
//! analyze process's peak RSS (wait4). Run: `cargo bench --bench images`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const KDLEAK: &str = env!("CARGO_BIN_EXE_kdleak");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn write_image(format: &str, size: &str, path: &Path) {
    let status = Command::new(KDLEAK)
        .args([
            "sim",
            "--scenario",
            "win10-myfault",
            "--write-image",
            format,
        ])
        .args(["--physical-size", size, "--write-dump"])
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .expect("kdleak sim");
    assert!(status.success(), "kdleak sim --write-image {format}");
}

/// Runs `kdleak -v analyze` on `path`: (wall seconds, peak RSS in KiB, stderr).
// The child is reaped by wait4 (for its rusage), not by std's wait.
#[allow(clippy::zombie_processes)]
fn analyze(path: &Path, log: &Path) -> (f64, i64, String) {
    let stderr = std::fs::File::create(log).unwrap();
    let started = Instant::now();
    let child = Command::new(KDLEAK)
        .args(["-v", "analyze"])
        .arg(path)
        .args(["--offline", "--format", "json", "--sympath"])
        .arg(root().join("captures/fixtures/win10-19041"))
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("kdleak analyze");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for the child spawned above, which std has not reaped.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(waited, pid, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "analyze {} failed: {}",
        path.display(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
    (wall, usage.ru_maxrss, std::fs::read_to_string(log).unwrap())
}

/// The number before `suffix` in the log line containing `marker`.
fn number_before(log: &str, marker: &str, suffix: &str) -> u64 {
    log.lines()
        .find(|line| line.contains(marker))
        .and_then(|line| {
            let end = line.find(suffix)?;
            let start = line[..end].rfind(|c: char| !c.is_ascii_digit())? + 1;
            line[start..end].parse().ok()
        })
        .unwrap_or_else(|| panic!("no {marker:?} in the log:\n{log}"))
}

/// The scan's own seconds: "… MiB scanned in X s".
fn scan_seconds(log: &str) -> f64 {
    log.lines()
        .find_map(|line| {
            let rest = &line[line.find("scanned in ")? + "scanned in ".len()..];
            rest[..rest.find(" s")?].parse().ok()
        })
        .unwrap_or_else(|| panic!("no scan time in the log:\n{log}"))
}

fn stored_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

fn main() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut cases = Vec::new();
    for format in ["raw", "elf"] {
        let path = dir.path().join(format!("win10-8g.{format}"));
        write_image(format, "8G", &path);
        cases.push((format!("{format} sparse 8 GiB"), path));
    }
    // A dense 1 GiB raw image: the sparse one copied with every hole written as zeros.
    let sparse = dir.path().join("win10-1g-sparse.raw");
    write_image("raw", "1G", &sparse);
    let dense = dir.path().join("win10-1g-dense.raw");
    let status = Command::new("cp")
        .args(["--sparse=never"])
        .arg(&sparse)
        .arg(&dense)
        .status()
        .expect("cp");
    assert!(status.success());
    cases.push(("raw dense 1 GiB".into(), dense));
    for (name, path) in cases {
        for run in ["cold", "warm"] {
            let log = dir.path().join("analyze.log");
            let (wall, rss_kib, log) = analyze(&path, &log);
            let read = number_before(&log, "bytes read from", " bytes read");
            let scanned_mib = number_before(&log, "MiB scanned", " MiB scanned");
            let scanned = scanned_mib << 20;
            let size = std::fs::metadata(&path).unwrap().len();
            println!(
                "{}",
                serde_json::json!({
                    "bench": "analyze_image",
                    "case": name,
                    "run": run,
                    "file_bytes": size,
                    "stored_bytes": stored_bytes(&path),
                    "wall_s": (wall * 1000.0).round() / 1000.0,
                    "bytes_read": read,
                    "scan_bytes": scanned,
                    "pull_bytes": read.saturating_sub(scanned),
                    "scan_s": scan_seconds(&log),
                    "scan_s_per_4gib_stored": if scanned > 0 {
                        (scan_seconds(&log) * (4u64 << 30) as f64 / scanned as f64 * 100.0)
                            .round()
                            / 100.0
                    } else {
                        0.0
                    },
                    "peak_rss_kib": rss_kib,
                })
            );
        }
    }
}
