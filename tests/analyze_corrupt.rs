//! `kdleak analyze` on files that are not usable dumps: truncated headers, wrong signatures,
//! minidumps, triage dumps, absurd run, page and bitmap sizes, CR3 outside the dump, a dump
//! without its debugger data block. Each ends quickly with a clear message and the documented
//! exit code (2: the file is not a usable dump; 4: a dump this host cannot use), never a panic.

use std::path::Path;
use std::time::Duration;

mod common;
use common::*;

const HEADER: usize = 0x2000;
const PAGE: usize = 0x1000;
/// DUMP_HEADER64 offsets (mindumpdef.h).
const DIRECTORY_TABLE_BASE: usize = 0x10;
const KD_DEBUGGER_DATA_BLOCK: usize = 0x80;
const RUNS: usize = 0x88;
const DUMP_TYPE: usize = 0xf98;

fn put(file: &mut [u8], at: usize, bytes: &[u8]) {
    file[at..at + bytes.len()].copy_from_slice(bytes);
}

/// A DUMP_HEADER64 of `dump_type` for an x64 build 19041 machine.
fn header(dump_type: u32) -> Vec<u8> {
    let mut h = vec![0u8; HEADER];
    put(&mut h, 0, b"PAGEDU64");
    put(&mut h, 0x08, &0xfu32.to_le_bytes());
    put(&mut h, 0x0c, &19041u32.to_le_bytes());
    put(&mut h, 0x30, &0x8664u32.to_le_bytes());
    put(&mut h, DUMP_TYPE, &dump_type.to_le_bytes());
    h
}

/// A full dump of page frames 0..pages, with CR3 at frame 1.
fn full(pages: u64) -> Vec<u8> {
    let mut f = header(1);
    put(&mut f, RUNS, &1u32.to_le_bytes());
    put(&mut f, RUNS + 8, &pages.to_le_bytes());
    put(&mut f, RUNS + 0x18, &pages.to_le_bytes());
    put(&mut f, DIRECTORY_TABLE_BASE, &0x1000u64.to_le_bytes());
    f.resize(HEADER + pages as usize * PAGE, 0);
    f
}

/// A bitmap dump with frames 0 and 1 present out of `bits`.
fn bitmap(bits: u64) -> Vec<u8> {
    let mut f = header(5);
    let mut bh = vec![0u8; 0x38];
    put(&mut bh, 0, b"SDMPDUMP");
    put(&mut bh, 0x20, &0x3000u64.to_le_bytes());
    put(&mut bh, 0x28, &2u64.to_le_bytes());
    put(&mut bh, 0x30, &bits.to_le_bytes());
    f.extend_from_slice(&bh);
    f.push(0b11);
    f.resize(0x3000 + 2 * PAGE, 0);
    put(&mut f, DIRECTORY_TABLE_BASE, &0x1000u64.to_le_bytes());
    f
}

/// Runs `kdleak analyze` on `bytes` and checks the exit code and message.
fn refused(name: &str, bytes: &[u8], code: i32, text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.dmp"));
    std::fs::write(&path, bytes).unwrap();
    refused_path(name, &path, code, text);
}

fn refused_path(name: &str, path: &Path, code: i32, text: &str) {
    let mut analyze = kdleak();
    analyze
        .arg("analyze")
        .arg(path)
        .args(["--offline", "--sympath"])
        .arg(root().join("captures/fixtures/win10-19041"))
        .args(["--format", "json"]);
    let out = finish(spawn(analyze), Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{name}: {stderr}");
    assert!(stderr.contains(text), "{name}: no {text:?} in {stderr}");
    assert!(
        stderr.contains(&path.display().to_string()),
        "{name}: {stderr}"
    );
    assert!(out.stdout.is_empty(), "{name}: printed a report");
    eprintln!("{name}: exit {code}: {}", stderr.trim());
}

#[test]
fn files_that_are_not_dumps_exit_2() {
    refused("empty", b"", 2, "shorter than any dump header");
    refused(
        "elf",
        b"\x7fELF\x02\x01\x01\0",
        2,
        "inside the 64-byte ELF header",
    );
    refused(
        "text",
        b"hello, world\n",
        2,
        "not PAGE (a kernel dump) or MDMP",
    );
    refused("pagedu32", b"PAGEDU32", 2, "not DU64");
    refused_path("directory", &root(), 2, "not a regular file");
    refused_path(
        "missing",
        &root().join("no-such.dmp"),
        2,
        "cannot read the file",
    );
}

/// Hostile VM images: an ELF core whose segment runs past the file, one of another machine, and
/// files read as raw memory that hold no Windows (zeros; a page-table root without a kernel).
#[test]
fn hostile_vm_images_exit_with_a_reason() {
    let mut elf = vec![0u8; 0x40 + 56];
    put(&mut elf, 0, b"\x7fELF\x02\x01\x01");
    put(&mut elf, 0x10, &4u16.to_le_bytes());
    put(&mut elf, 0x12, &62u16.to_le_bytes());
    put(&mut elf, 0x20, &0x40u64.to_le_bytes());
    put(&mut elf, 0x36, &56u16.to_le_bytes());
    put(&mut elf, 0x38, &1u16.to_le_bytes());
    put(&mut elf, 0x40, &1u32.to_le_bytes());
    put(&mut elf, 0x40 + 0x20, &(1u64 << 40).to_le_bytes());
    refused(
        "elf segment past the end",
        &elf,
        2,
        "past the end of the file",
    );
    put(&mut elf, 0x12, &183u16.to_le_bytes());
    refused("elf of arm64", &elf, 4, "not x86-64");
    refused(
        "zeros as raw",
        &vec![0u8; 2 << 20],
        2,
        "no page-table root of x64 Windows",
    );
    // A page that maps itself and KUSER_SHARED_DATA, but no kernel anywhere.
    let mut raw = vec![0u8; 2 << 20];
    let kuser: u64 = 0xFFFF_F780_0000_0000;
    let index = |shift: u32| ((kuser >> shift) & 0x1ff) as usize * 8;
    put(&mut raw, 0x1000 + 0x1ED * 8, &0x1063u64.to_le_bytes());
    put(&mut raw, 0x1000 + index(39), &0x2063u64.to_le_bytes());
    put(&mut raw, 0x2000 + index(30), &0x3063u64.to_le_bytes());
    put(&mut raw, 0x3000 + index(21), &0x4063u64.to_le_bytes());
    put(&mut raw, 0x4000 + index(12), &0x5063u64.to_le_bytes());
    refused(
        "raw without a kernel",
        &raw,
        2,
        "no RSDS record naming ntkrnlmp.pdb",
    );
}

#[test]
fn truncated_headers_exit_2_saying_where_the_file_ends() {
    refused(
        "cut-header",
        &header(1)[..0x1000],
        2,
        "ends after 0x1000 bytes",
    );
    let mut cut = full(4);
    cut.truncate(HEADER + 3 * PAGE + 10);
    refused("cut-pages", &cut, 2, "cut short");
}

#[test]
fn minidumps_triage_and_32_bit_dumps_exit_4_saying_what_to_configure() {
    let mut mini = b"MDMP\x93\xa7\0\0".to_vec();
    mini.resize(0x400, 0);
    refused("minidump", &mini, 4, "minidump (signature MDMP)");
    refused("minidump", &mini, 4, "Kernel memory dump");
    refused("triage", &header(4), 4, "triage dump, DumpType 4");
    refused("triage", &header(4), 4, "CrashDumpEnabled");
    refused("pagedump", b"PAGEDUMP", 4, "32-bit");
    // An RDMP dump (DumpType 8) cut after its DUMP_HEADER64 is read, and damaged.
    refused("rdmp", &header(8), 2, "inside the RDMP header");
}

#[test]
fn absurd_run_and_page_counts_exit_2_without_allocating() {
    let mut f = full(2);
    put(&mut f, RUNS, &u32::MAX.to_le_bytes());
    refused("runs", &f, 2, "NumberOfRuns is 4294967295");
    let mut f = full(2);
    put(&mut f, RUNS + 0x18, &(1u64 << 39).to_le_bytes());
    refused("pages", &f, 2, "549755813888 pages");
    let mut f = full(2);
    put(&mut f, RUNS + 0x18, &u64::MAX.to_le_bytes());
    refused("pages-overflow", &f, 2, "beyond 2^52 bytes");
}

#[test]
fn bitmaps_larger_than_the_file_exit_2() {
    refused(
        "bitmap-bits",
        &bitmap(1 << 36),
        2,
        "the bitmap has 68719476736 bits",
    );
    let mut f = bitmap(16);
    f.truncate(f.len() - PAGE);
    refused("bitmap-pages", &f, 2, "cut short");
    let mut f = bitmap(16);
    put(&mut f, HEADER, b"SDMPXXXX");
    refused("bitmap-signature", &f, 2, "SDMP or FDMP then DUMP");
}

#[test]
fn cr3_outside_the_dump_exits_2() {
    let mut f = full(2);
    put(&mut f, DIRECTORY_TABLE_BASE, &0x1234_5000u64.to_le_bytes());
    refused("cr3", &f, 2, "DirectoryTableBase (CR3) 0x12345000");
}

#[test]
fn a_dump_whose_debugger_data_block_is_unreadable_exits_4() {
    // Empty page tables: nothing is mapped, so KdDebuggerDataBlock cannot be read.
    let mut f = full(2);
    put(
        &mut f,
        KD_DEBUGGER_DATA_BLOCK,
        &0xfffff800_01234560u64.to_le_bytes(),
    );
    refused("kdbg", &f, 4, "KdDebuggerDataBlock (0xfffff80001234560)");
    refused(
        "kdbg",
        &f,
        4,
        "PsLoadedModuleList is 0: nothing gives the kernel base",
    );
}
