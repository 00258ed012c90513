//! Dumps written by `kdleak sim --write-dump` satisfy an independent reader: kdmp-parser (PyPI, a
//! C++ crash dump parser with Python bindings, at the version pinned in
//! `scripts/test-requirements.txt`, which `scripts/test` installs) opens each dump
//! type of the win7/win10/win11 scenarios (DumpType 1, 5 with SDMP and FDMP, 6 live, and the RDMP
//! types 8, 9, 10), and through its own page-table walk from the header's
//! CR3 reads, at the kernel base and at a live verifier allocation, the same bytes the simulator's
//! virtual memory holds — at the physical addresses our page tables give. Header fields (type,
//! CR3, build, KDBG, PsLoadedModuleList, CPUs, bugcheck, RIP) must match the machine. The reader
//! runs as `python3 tests/dump_check.py` (the `python3` on PATH: `scripts/test` puts the project's
//! venv first); if kdmp-parser is missing or not the pinned version the test fails: no silent skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kdleak::sim::machine::physical::PhysicalMemory;
use kdleak::sim::world::scenario::{default_root, Scenario};
use kdleak::sim::Machine;
use serde_json::Value;

mod peers;

const SCENARIOS: [&str; 3] = ["win7-myfault", "win10-myfault", "win11-myfault"];
/// (--dump-type, DumpType, signature at 0x2000 for bitmap and RDMP dumps (at 0x2004 for RDMP),
/// bug check code).
const TYPES: [(&str, u64, Option<&[u8; 4]>, u32); 7] = [
    ("full", 1, None, 0xE2),
    ("kernel", 5, Some(b"SDMP"), 0xE2),
    ("bitmap", 5, Some(b"FDMP"), 0xE2),
    // Task Manager's live kernel dump: bug check 0x161 LIVE_SYSTEM_DUMP.
    ("live", 6, Some(b"SDMP"), 0x161),
    ("rdmp-kernel", 8, Some(b"RDMP"), 0xE2),
    ("rdmp-kernel-user", 9, Some(b"RDMP"), 0xE2),
    ("rdmp-complete", 10, Some(b"RDMP"), 0xE2),
];
const READ_LEN: usize = 0x40;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kdmp_parser_check(dump: &Path, reads: &[u64]) -> Value {
    let mut command = Command::new("python3");
    command.arg(root().join("tests/dump_check.py")).arg(dump);
    for va in reads {
        command.arg(format!("{va:x}:{READ_LEN}"));
    }
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{}", peers::unavailable("python3", error)));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{}",
        peers::unavailable(
            "kdmp-parser",
            format!("could not check {}: {stderr}", dump.display())
        )
    );
    // kdmp-parser prints its own diagnostics on stdout; ours is the line starting with '{'.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON from dump_check.py: {stdout}"));
    serde_json::from_str(line).unwrap()
}

/// The first allocation still live after the layout: verifier-tracked pool the leak pull reports.
fn live_allocation(name: &str) -> u64 {
    let scenario = Scenario::resolve(name).unwrap();
    let report = scenario.build_in(default_root().unwrap()).unwrap();
    report
        .allocations
        .iter()
        .find(|a| !a.freed)
        .map(|a| a.address)
        .expect("the scenario has a live allocation")
}

#[test]
fn kdmp_parser_reads_every_dump_type_like_the_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    for name in SCENARIOS {
        let machine = Machine::for_scenario(name).unwrap();
        let physical = PhysicalMemory::build(&machine.memory, machine.self_map_slot);
        let allocation = live_allocation(name);
        let reads = [machine.kern_base, allocation];
        let expected: Vec<(u64, String)> = reads
            .iter()
            .map(|&va| {
                let (bytes, complete) = machine.memory.read(va, READ_LEN);
                assert!(complete, "{name}: {va:#x} is mapped");
                let pa = physical.translate(&machine.memory, va).unwrap();
                (pa, hex::encode(bytes))
            })
            .collect();
        assert!(
            expected[0].1.starts_with("4d5a"),
            "{name}: MZ at the kernel base"
        );
        let cpu = machine.cpu(0).unwrap();

        let mut sizes = Vec::new();
        for (dump_type, type_number, signature, bug_check) in TYPES {
            let path = dir.path().join(format!("{name}-{dump_type}.dmp"));
            let status = Command::new(env!("CARGO_BIN_EXE_kdleak"))
                .args(["sim", "--scenario", name, "--dump-type", dump_type])
                .arg("--write-dump")
                .arg(&path)
                .status()
                .unwrap();
            assert!(
                status.success(),
                "{name} {dump_type}: kdleak sim --write-dump failed"
            );
            let file = std::fs::read(&path).unwrap();
            assert_eq!(&file[..8], b"PAGEDU64");
            match signature {
                // Bitmap dumps: their summary/full bitmap header follows DUMP_HEADER64.
                Some(b"RDMP") => assert_eq!(&file[0x2004..0x2008], b"RDMP"),
                Some(signature) => assert_eq!(&file[0x2000..0x2004], signature),
                // Full dumps: PhysicalMemoryBlock.NumberOfRuns, then RAM from 0x2000.
                None => assert_eq!(file[0x88..0x8C], 2u32.to_le_bytes()),
            }
            sizes.push((dump_type, file.len()));

            let seen = kdmp_parser_check(&path, &reads);
            let context = format!("{name} {dump_type}: {seen}");
            let version = peers::pinned_version("kdmp-parser");
            assert_eq!(
                seen["kdmp_parser_version"],
                version.as_str(),
                "{}",
                peers::unavailable("kdmp-parser", format!("not {version}: {context}"))
            );
            assert_eq!(seen["dump_type"], type_number, "{context}");
            assert_eq!(seen["directory_table_base"], physical.cr3(), "{context}");
            assert_eq!(
                seen["directory_table_base"],
                cpu.special_u64(kdproto::api::kspecial::CR3),
                "{context}"
            );
            assert_eq!(seen["minor_version"], machine.build, "{context}");
            assert_eq!(seen["machine_image_type"], 0x8664, "{context}");
            assert_eq!(
                seen["number_processors"],
                machine.processor_count(),
                "{context}"
            );
            assert_eq!(seen["bugcheck_code"], bug_check, "{context}");
            assert_eq!(seen["kd_debugger_data_block"], machine.kdbg, "{context}");
            assert_eq!(
                seen["ps_loaded_module_list"], machine.ps_loaded_module_list,
                "{context}"
            );
            assert_eq!(seen["rip"], cpu.rip(), "{context}");
            for (read, (pa, bytes)) in seen["reads"].as_array().unwrap().iter().zip(&expected) {
                assert_eq!(read["pa"], *pa, "{context}");
                assert_eq!(read["hex"], bytes.as_str(), "{context}");
            }
        }
        // The kernel dumps keep only frames in use; full, bitmap and complete hold all RAM.
        assert!(sizes[1].1 < sizes[0].1, "{name}: {sizes:?}");
        assert!(sizes[4].1 < sizes[6].1, "{name}: {sizes:?}");
        eprintln!(
            "{name}: kernel base {:#x} -> pa {:#x}, allocation {allocation:#x} -> pa {:#x}, sizes {sizes:?}",
            machine.kern_base, expected[0].0, expected[1].0
        );
    }
    eprintln!("21 dumps written and checked in {:?}", started.elapsed());
}

/// Issue 20: a machine stopped in bug check 0xC4/0x62 writes it into the dump's header as
/// Windows does, and kdmp-parser (an independent reader) finds there the code and parameters
/// that the dumped KiBugCheckData holds — read through kdmp-parser's own page-table walk.
#[test]
fn kdmp_parser_reads_the_bug_check_of_an_unload_time_leak() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["win7-unload-leak", "win10-unload-leak", "win11-unload-leak"] {
        let machine = Machine::for_scenario(name).unwrap();
        let data = machine.kdbg_field(0x88).expect("KDBG.KiBugcheckData");
        let path = dir.path().join(format!("{name}.dmp"));
        let status = Command::new(env!("CARGO_BIN_EXE_kdleak"))
            .args(["sim", "--scenario", name, "--dump-type", "kernel"])
            .arg("--write-dump")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "{name}");
        let seen = kdmp_parser_check(&path, &[data]);
        let context = format!("{name}: {seen}");
        assert_eq!(seen["bugcheck_code"], 0xC4, "{context}");
        let parameters: Vec<u64> = seen["bugcheck_parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap())
            .collect();
        assert_eq!(parameters[0], 0x62, "{context}");
        assert_eq!(parameters[3], 3, "{context}: three blocks outstanding");
        let memory = hex::decode(seen["reads"][0]["hex"].as_str().unwrap()).unwrap();
        let values: Vec<u64> = memory
            .chunks_exact(8)
            .take(5)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(values[0], 0xC4, "{context}: KiBugCheckData");
        assert_eq!(
            values[1..],
            parameters[..],
            "{context}: header vs KiBugCheckData"
        );
    }
}

#[test]
fn write_dump_command_line_rules() {
    let kdleak = || Command::new(env!("CARGO_BIN_EXE_kdleak"));
    // Neither a transport nor a dump: a clear error, not a simulator listening nowhere.
    let output = kdleak().arg("sim").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--write-dump"), "{stderr}");
    // A dump is written and the command exits; it does not also serve a transport.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.dmp");
    let output = kdleak()
        .args(["sim", "--pipe", "/nonexistent/kd.sock", "--write-dump"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(!path.exists());
    // --dump-type only means something with --write-dump (a bad port, should it run anyway).
    let output = kdleak()
        .args(["sim", "--tcp", "127.0.0.1:0", "--dump-type", "kernel"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--write-dump"));
    // An unwritable destination names the file and leaves nothing.
    let missing = dir.path().join("missing").join("x.dmp");
    let output = kdleak()
        .arg("sim")
        .arg("--write-dump")
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("x.dmp"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // Without --scenario: the tiny built-in kernel, default type full.
    let output = kdleak()
        .arg("sim")
        .arg("--write-dump")
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success());
    let file = std::fs::read(&path).unwrap();
    assert_eq!(&file[0xF98..0xF9C], 1u32.to_le_bytes());
}
