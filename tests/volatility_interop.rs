//! The simulator's memory is laid out as Windows lays it out, proven with an independent reader:
//! Volatility 3 (PyPI, pinned in scripts/test-requirements.txt; `scripts/test` installs it) opens `kdleak sim --write-dump` files of the
//! win7/win10/win11 scenarios — one crash dump type each, so all three layouts are covered, and
//! the QEMU ELF core and raw physical image (`--write-image elf|raw`) of each — and finds
//! everything the way it does on real Windows: the page-table root by its self-map entry and the
//! `KUSER_SHARED_DATA` check, the kernel through the KDBG and its RSDS record, then
//! `KdVersionBlock`, `KeNumberProcessors`, `NtBuildLab` and `PsLoadedModuleList` by symbol.
//! `windows.info` must report kdleak's kernel base, CR3, KDBG and the fixture's version block;
//! `windows.modules` must list ntoskrnl.exe, myfault.sys and leaky.sys at the bases and sizes
//! `kdleak info sim:<scenario>` reports, and `kdleak analyze` of the same dump the same kernel.
//!
//! Volatility reads symbols from ISF files named after the kernel's PDB GUID. The fixture kernels
//! are compact images whose symbols sit at other RVAs than the ISF's (captures/gen/README.md), so
//! the test writes a copy of the build's ISF — its types unchanged, its symbols those of the
//! fixture at the fixture's RVAs (manifest.json), its metadata naming the fixture's GUID and age
//! — as `windows/ntkrnlmp.pdb/<GUID>-<AGE>.json.xz` in a symbol directory it passes with `-s`
//! (`tests/fixture_isf`, the same tables kdleak's own ISF-pack tests read).
//! Volatility runs `--offline` with its cache under the test's target directory (the first run
//! after a fixture change validates each ISF: a few seconds more). If `vol` is missing the test
//! fails: no silent skip.

mod peers;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kdleak::sim::machine::physical::CR3;
use kdleak::sim::world::scenario::{csd_version, nt_version};
use serde_json::Value;

mod fixture_isf;
use fixture_isf::{manifest, write_fixture_isf};

/// (scenario, fixture, --dump-type, or --write-image for `elf`/`raw`).
const CASES: [(&str, &str, &str); 9] = [
    ("win7-myfault", "win7-7601", "full"),
    ("win10-myfault", "win10-19041", "kernel"),
    ("win11-myfault", "win11-22000", "bitmap"),
    // What a hypervisor writes: Volatility stacks its ELF layer on the core, reads the raw
    // image as physical memory, and finds the page-table root and kernel by scanning.
    ("win7-myfault", "win7-7601", "elf"),
    ("win10-myfault", "win10-19041", "elf"),
    ("win11-myfault", "win11-22000", "elf"),
    ("win7-myfault", "win7-7601", "raw"),
    ("win10-myfault", "win10-19041", "raw"),
    ("win11-myfault", "win11-22000", "raw"),
];
const MODULES: [&str; 3] = ["ntoskrnl.exe", "myfault.sys", "leaky.sys"];
/// Volatility prints virtual addresses without the sign-extension bits.
const ADDRESS_MASK: u64 = 0xFFFF_FFFF_FFFF;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn hex_u64(value: &Value) -> u64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"));
    u64::from_str_radix(text.trim_start_matches("0x"), 16).unwrap()
}

fn kdleak(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_kdleak"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kdleak {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Runs `vol -r json PLUGIN` on `dump`; the rows of its table.
fn vol(dump: &Path, symbols: &Path, cache: &Path, plugin: &str) -> Vec<Value> {
    let output = Command::new("vol")
        .arg("-q")
        .arg("--offline")
        .arg("--cache-path")
        .arg(cache)
        .arg("-s")
        .arg(symbols)
        .arg("-f")
        .arg(dump)
        .args(["-r", "json", plugin])
        .output()
        .unwrap_or_else(|e| panic!("{}", peers::unavailable("vol", e)));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "vol {plugin} on {} failed:\n{stdout}\n{stderr}",
        dump.display()
    );
    // The banner line comes first; the table is the JSON array after it.
    let start = stdout
        .find("\n[")
        .map(|i| i + 1)
        .or_else(|| stdout.starts_with('[').then_some(0))
        .unwrap_or_else(|| panic!("no JSON table from vol {plugin}:\n{stdout}\n{stderr}"));
    serde_json::from_str(&stdout[start..])
        .unwrap_or_else(|e| panic!("vol {plugin}: {e}:\n{stdout}"))
}

#[test]
fn volatility_finds_the_kernel_and_modules_kdleak_reports() {
    let version = peers::pinned_version("volatility3");
    peers::require_version("vol", &format!("Volatility 3 Framework {version}"));
    let work = tempfile::tempdir().unwrap();
    // Volatility keeps its identifier and ISF-validation caches here across test runs.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("volatility-cache");
    std::fs::create_dir_all(&cache).unwrap();
    let symbols = work.path().join("symbols");
    let started = Instant::now();
    for (scenario, fixture, dump_type) in CASES {
        let case_started = Instant::now();
        let guid = write_fixture_isf(fixture, &symbols);
        let dump = work.path().join(format!("{scenario}.{dump_type}"));
        let option = if matches!(dump_type, "elf" | "raw") {
            "--write-image"
        } else {
            "--dump-type"
        };
        let status = Command::new(env!("CARGO_BIN_EXE_kdleak"))
            .args(["sim", "--scenario", scenario, option, dump_type])
            .arg("--write-dump")
            .arg(&dump)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "{scenario}: kdleak sim --write-dump failed"
        );

        let live = kdleak(&[
            "info",
            &format!("sim:{scenario}"),
            "--offline",
            "--format",
            "json",
        ]);
        let kern_base = hex_u64(&live["kernel_base"]);
        let fixture_dir = root().join("captures/fixtures").join(fixture);
        let analyzed = kdleak(&[
            "analyze",
            dump.to_str().unwrap(),
            "--offline",
            "--sympath",
            fixture_dir.to_str().unwrap(),
            "--format",
            "json",
        ]);
        assert_eq!(
            hex_u64(&analyzed["target"]["kernel_base"]),
            kern_base,
            "{scenario}: kdleak analyze and kdleak info disagree"
        );

        // ---- windows.info
        let rows = vol(&dump, &symbols, &cache, "windows.info");
        let info = |name: &str| -> String {
            rows.iter()
                .find(|row| row["Variable"] == name)
                .and_then(|row| row["Value"].as_str())
                .unwrap_or_else(|| panic!("{scenario}: windows.info has no {name}: {rows:?}"))
                .to_string()
        };
        let manifest = manifest(fixture);
        let kernel = &manifest["files"]["ntoskrnl.exe"];
        let build = manifest["build"].as_u64().unwrap() as u32;
        let symbol = |name: &str| kern_base + hex_u64(&kernel["symbols"][name]["rva"]);
        let masked = |address: u64| format!("{:#x}", address & ADDRESS_MASK);
        assert_eq!(info("Kernel Base"), masked(kern_base), "{scenario}");
        assert_eq!(info("DTB"), format!("{CR3:#x}"), "{scenario}");
        assert!(
            info("Symbols").contains(&guid),
            "{scenario}: {}",
            info("Symbols")
        );
        assert_eq!(
            info("KdDebuggerDataBlock"),
            masked(hex_u64(&live["kdbg_address"])),
            "{scenario}"
        );
        assert_eq!(info("KdVersionBlock"), masked(symbol("KdVersionBlock")));
        assert_eq!(info("Major/Minor"), format!("15.{build}"), "{scenario}");
        assert_eq!(info("MachineType"), "34404", "{scenario}");
        assert_eq!(info("KeNumberProcessors"), "1", "{scenario}");
        assert!(
            info("NTBuildLab").starts_with(&format!("{build}.1.amd64fre")),
            "{scenario}: {}",
            info("NTBuildLab")
        );
        assert_eq!(
            info("CSDVersion"),
            (csd_version(build) >> 8).to_string(),
            "{scenario}"
        );
        let (major, minor) = nt_version(build);
        assert_eq!(info("NtMajorVersion"), major.to_string(), "{scenario}");
        assert_eq!(info("NtMinorVersion"), minor.to_string(), "{scenario}");
        assert_eq!(info("NtSystemRoot"), r"C:\Windows", "{scenario}");
        assert_eq!(info("NtProductType"), "NtProductWinNt", "{scenario}");
        // The dump's clock: the year the header says, not FILETIME 0 (1601).
        let time = info("SystemTime");
        let year = analyzed["target"]["time"].as_str().unwrap()[..4].to_string();
        assert!(
            time.starts_with(&year),
            "{scenario}: SystemTime {time}, dump {year}"
        );

        // ---- windows.modules
        let rows = vol(&dump, &symbols, &cache, "windows.modules");
        let listed: Vec<(String, u64, u64)> = rows
            .iter()
            .map(|row| {
                (
                    row["Name"].as_str().unwrap().to_string(),
                    row["Base"].as_u64().unwrap(),
                    row["Size"].as_u64().unwrap(),
                )
            })
            .collect();
        let expected: Vec<(String, u64, u64)> = live["modules"]["modules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|module| {
                (
                    module["name"].as_str().unwrap().to_string(),
                    hex_u64(&module["base"]) & ADDRESS_MASK,
                    module["size"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            expected.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(),
            MODULES,
            "{scenario}: kdleak info's module list"
        );
        assert_eq!(
            listed, expected,
            "{scenario}: windows.modules vs kdleak info"
        );
        eprintln!(
            "{scenario} ({dump_type}): Volatility agrees in {:.1} s",
            case_started.elapsed().as_secs_f64()
        );
        for (name, base, size) in &listed {
            eprintln!("    windows.modules: {name:<14} base {base:#x} size {size:#x}");
        }
    }
    eprintln!(
        "{} images read by Volatility 3 in {:.1} s",
        CASES.len(),
        started.elapsed().as_secs_f64()
    );
}
