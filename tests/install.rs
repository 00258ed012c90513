//! Issue 16: the installed binary needs no checkout. `cargo install --path .` into a temporary
//! root (reusing this build's target directory, so it copies what `cargo test` built), then
//! the installed binary runs from an empty directory with a fresh HOME and no variables from this
//! environment: `attach sim`, `info sim`, `watch sim:watch-leak`, `sim --write-dump` work, their
//! PDBs and ISF tables coming from the data built into the binary (unpacked under the new HOME).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

mod common;
use common::{finish, spawn};

/// The target directory this test binary was built in (`…/target/debug/kdleak` → `…/target`).
fn target_dir() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_kdleak"));
    bin.ancestors()
        .nth(2)
        .expect("target/PROFILE/kdleak")
        .to_path_buf()
}

fn install(root: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["install", "--path"])
        .arg(env!("CARGO_MANIFEST_DIR"))
        .arg("--root")
        .arg(root)
        .args(["--offline", "--locked", "--debug", "--bin", "kdleak"])
        .env("CARGO_TARGET_DIR", target_dir());
    // Generous: on a loaded machine cargo may have to relink.
    let out = finish(spawn(command), Duration::from_secs(1200));
    assert!(
        out.status.success(),
        "cargo install failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = root.join("bin").join("kdleak");
    assert!(bin.is_file(), "{} not installed", bin.display());
    bin
}

/// The installed binary, from `cwd`, with only PATH and the fresh HOME in its environment.
fn installed(bin: &Path, cwd: &Path, home: &Path) -> Command {
    let mut command = Command::new(bin);
    command
        .current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home);
    command
}

fn run(command: Command, what: &str) -> (String, String) {
    let out: Output = finish(spawn(command), Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

#[test]
fn the_installed_binary_works_from_an_empty_directory_with_a_fresh_home() {
    let root = tempfile::tempdir().unwrap();
    let bin = install(root.path());
    let size = std::fs::metadata(&bin).unwrap().len();
    eprintln!(
        "installed debug binary: {} bytes ({:.1} MiB)",
        size,
        size as f64 / (1 << 20) as f64
    );
    let cwd = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();

    // attach sim: the leak table, symbolized from the built-in PDBs.
    let mut attach = installed(&bin, cwd.path(), home.path());
    attach.args(["attach", "sim"]);
    let (stdout, _) = run(attach, "attach sim");
    assert!(stdout.contains("Leak table (by caller)"), "{stdout}");
    assert!(
        stdout.contains("myfault!MyfaultDeviceControl+0x358  myfault.sys     10  0x9ce000"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Symbols: nt from ntkrnlmp.pdb; myfault from myfault.pdb"),
        "{stdout}"
    );
    // … and the PDBs were the unpacked copies under the fresh HOME, not the checkout's.
    let mut json = installed(&bin, cwd.path(), home.path());
    json.args(["attach", "sim:win10-myfault", "--format", "json"]);
    let (stdout, _) = run(json, "attach sim:win10-myfault --format json");
    let unpacked = home.path().join(".cache/kdleak/sim-data");
    let unpacked = unpacked.to_str().unwrap();
    assert!(
        stdout.contains(&format!("{unpacked}/")) && stdout.contains("ntkrnlmp.pdb"),
        "the PDB paths are not under {unpacked}: {}",
        &stdout[..stdout.len().min(2000)]
    );
    assert!(!stdout.contains(env!("CARGO_MANIFEST_DIR")), "{stdout}");

    // info sim: the build and the module list.
    let mut info = installed(&bin, cwd.path(), home.path());
    info.args(["info", "sim:win11-myfault"]);
    let (stdout, _) = run(info, "info sim");
    assert!(stdout.contains("22000"), "{stdout}");
    assert!(stdout.contains("myfault.sys"), "{stdout}");

    // watch: a few polls of the watch scenario, its leaking site in the series.
    let series = cwd.path().join("series.jsonl");
    let mut watch = installed(&bin, cwd.path(), home.path());
    watch
        .env("KDLEAK_SIM_TIME_SCALE", "600")
        .args([
            "watch",
            "sim:watch-leak",
            "--interval",
            "50ms",
            "--count",
            "3",
            "--quiet",
            "--out",
        ])
        .arg(&series);
    run(watch, "watch sim:watch-leak");
    let text = std::fs::read_to_string(&series).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains("leaky!"), "{}", &text[..text.len().min(2000)]);

    // sim --scenario … --write-dump: a crash dump of the scenario.
    let dump = cwd.path().join("memory.dmp");
    let mut sim = installed(&bin, cwd.path(), home.path());
    sim.args(["sim", "--scenario", "win10-myfault", "--write-dump"])
        .arg(&dump);
    run(sim, "sim --write-dump");
    let bytes = std::fs::read(&dump).unwrap();
    assert_eq!(&bytes[..8], b"PAGEDU64", "a 64-bit crash dump header");

    // Nothing was written to the empty working directory but what was asked for.
    let mut left: Vec<String> = std::fs::read_dir(cwd.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["memory.dmp", "series.jsonl"]);
}
