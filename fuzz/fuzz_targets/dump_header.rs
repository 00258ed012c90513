//! Crash dump opening (DumpType 1, 5, 10: full, bitmap, RDMP) on hostile files: no panic, no allocation beyond what the file's size
//! allows, and virtual reads that stay in bounds. Short inputs are whole files (signature and
//! header checks); longer ones patch fields of a small valid full or bitmap dump (run and page
//! counts, bitmap sizes, CR3, page-table entries), so the deep checks are reached in few steps.
#![no_main]

use kdleak::image::Dump;
use libfuzzer_sys::fuzz_target;

#[path = "../shared/patches.rs"]
mod patches;

const HEADER: usize = 0x2000;
const PAGE: usize = 0x1000;
const FRAMES: usize = 8;
const VA: u64 = 0xfffff800_00400000;

fn put(f: &mut [u8], at: usize, bytes: &[u8]) {
    f[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Frames 0..8 (frame 1: PML4, 2..4: lower tables, 5: the page at VA), in file order.
fn frames() -> Vec<u8> {
    let mut m = vec![0u8; FRAMES * PAGE];
    let idx = |s: u32| ((VA >> s) & 0x1ff) as usize * 8;
    put(&mut m, PAGE + idx(39), &0x2003u64.to_le_bytes());
    put(&mut m, 2 * PAGE + idx(30), &0x3003u64.to_le_bytes());
    put(&mut m, 3 * PAGE + idx(21), &0x4003u64.to_le_bytes());
    put(&mut m, 4 * PAGE + idx(12), &0x5003u64.to_le_bytes());
    m
}

fn header(dump_type: u32) -> Vec<u8> {
    let mut h = vec![0u8; HEADER];
    put(&mut h, 0, b"PAGEDU64");
    put(&mut h, 0x0c, &19041u32.to_le_bytes());
    put(&mut h, 0x10, &0x1000u64.to_le_bytes());
    put(&mut h, 0x30, &0x8664u32.to_le_bytes());
    put(&mut h, 0x80, &VA.to_le_bytes());
    put(&mut h, 0xf98, &dump_type.to_le_bytes());
    h
}

fn full() -> Vec<u8> {
    let mut f = header(1);
    put(&mut f, 0x88, &1u32.to_le_bytes());
    put(&mut f, 0x90, &(FRAMES as u64).to_le_bytes());
    put(&mut f, 0xa0, &(FRAMES as u64).to_le_bytes());
    f.extend_from_slice(&frames());
    f
}

fn bitmap() -> Vec<u8> {
    let mut f = header(5);
    let mut bh = vec![0u8; 0x38];
    put(&mut bh, 0, b"FDMPDUMP");
    put(&mut bh, 0x20, &0x3000u64.to_le_bytes());
    put(&mut bh, 0x28, &(FRAMES as u64).to_le_bytes());
    put(&mut bh, 0x30, &16u64.to_le_bytes());
    f.extend_from_slice(&bh);
    f.extend_from_slice(&[0xff, 0]);
    f.resize(0x3000, 0);
    f.extend_from_slice(&frames());
    f
}

/// An RDMP dump (DumpType 10) of the same frames: RDMP header, one range, pages at 0x3000.
fn rdmp() -> Vec<u8> {
    let mut f = header(10);
    let mut rh = vec![0u8; 0x1000];
    put(&mut rh, 0, &0x40u32.to_le_bytes());
    put(&mut rh, 4, b"RDMPDUMP");
    put(&mut rh, 0x10, &0xFE0u64.to_le_bytes());
    put(&mut rh, 0x18, &0x3000u64.to_le_bytes());
    put(&mut rh, 0x20, &1u32.to_le_bytes());
    put(&mut rh, 0x28, &(FRAMES as u64).to_le_bytes());
    put(&mut rh, 0x38, &(FRAMES as u64).to_le_bytes());
    f.extend_from_slice(&rh);
    f.extend_from_slice(&frames());
    f
}

fn exercise(file: Vec<u8>, probe: u64) {
    let len = file.len() as u64;
    let Ok(mut dump) = Dump::new(file) else {
        return;
    };
    // Every page the map names is inside the file.
    for run in dump.phys_map().runs() {
        assert!(run.file_offset + run.pages * PAGE as u64 <= len);
    }
    for (address, n) in [
        (VA, 0x40),
        (VA + 0xff8, 0x10),
        (probe, 0x20),
        (u64::MAX - 7, 16),
    ] {
        let out = dump.read_virtual(address, n).unwrap_or_default();
        assert!(out.bytes.is_empty() || out.bytes.len() == n);
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        exercise(data.to_vec(), 0);
        return;
    }
    let (mode, rest) = data.split_first().expect("16 bytes");
    let mut file = match mode % 4 {
        0 => full(),
        1 => bitmap(),
        2 => rdmp(),
        _ => {
            exercise(data.to_vec(), 0);
            return;
        }
    };
    // Patches of (u16 offset scaled over the file, u64 value).
    let len = file.len();
    let probe = VA.wrapping_add(patches::apply(&mut file, rest, |_| len));
    // Sometimes cut the file short.
    if rest.len() % 10 == 3 {
        let keep = usize::from(rest[0]) * file.len() / 256;
        file.truncate(keep);
    }
    exercise(file, probe);
});
