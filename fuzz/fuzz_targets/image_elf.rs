//! ELF core opening on hostile files: no panic, no allocation beyond what the file's size
//! allows, and the scan and virtual reads stay in bounds. Short inputs are whole files; longer
//! ones patch fields of a small valid QEMU-style core (program header counts and offsets, note
//! sizes, segment addresses, CR3, page-table entries), so the deep checks are reached quickly.
#![no_main]

use kdleak::image::{Dump, FormatHint};
use libfuzzer_sys::fuzz_target;

#[path = "../shared/patches.rs"]
mod patches;

const PAGE: usize = 0x1000;
const VA: u64 = 0xfffff800_00400000;

fn put(f: &mut [u8], at: usize, bytes: &[u8]) {
    f[at..at + bytes.len()].copy_from_slice(bytes);
}

/// A core with one CPU (CR3 0x1000) and one PT_LOAD of 8 frames: 1 the PML4 (self-mapped at
/// 0x1ED), 2..4 lower tables, 5 the page at VA.
fn core() -> Vec<u8> {
    let mut notes = Vec::new();
    for (name, kind, len) in [(&b"CORE"[..], 1u32, 336usize), (&b"QEMU"[..], 0, 0x1B8)] {
        notes.extend_from_slice(&5u32.to_le_bytes());
        notes.extend_from_slice(&(len as u32).to_le_bytes());
        notes.extend_from_slice(&kind.to_le_bytes());
        notes.extend_from_slice(name);
        notes.extend_from_slice(&[0; 4]);
        let mut desc = vec![0u8; len];
        if kind == 0 {
            put(&mut desc, 0x1A0, &0x1000u64.to_le_bytes());
        }
        notes.extend_from_slice(&desc);
    }
    let mut f = vec![0u8; 0x40 + 2 * 56];
    put(&mut f, 0, b"\x7fELF\x02\x01\x01");
    put(&mut f, 0x10, &4u16.to_le_bytes());
    put(&mut f, 0x12, &62u16.to_le_bytes());
    put(&mut f, 0x20, &0x40u64.to_le_bytes());
    put(&mut f, 0x36, &56u16.to_le_bytes());
    put(&mut f, 0x38, &2u16.to_le_bytes());
    let notes_at = f.len();
    put(&mut f, 0x40, &4u32.to_le_bytes());
    put(&mut f, 0x48, &(notes_at as u64).to_le_bytes());
    put(&mut f, 0x60, &(notes.len() as u64).to_le_bytes());
    let data_at = (notes_at + notes.len()).next_multiple_of(PAGE);
    put(&mut f, 0x78, &1u32.to_le_bytes());
    put(&mut f, 0x80, &(data_at as u64).to_le_bytes());
    put(&mut f, 0x98, &(8 * PAGE as u64).to_le_bytes());
    f.extend_from_slice(&notes);
    f.resize(data_at + 8 * PAGE, 0);
    let m = &mut f[data_at..];
    let idx = |s: u32| ((VA >> s) & 0x1ff) as usize * 8;
    put(m, PAGE + 0x1ED * 8, &0x1063u64.to_le_bytes());
    put(m, PAGE + idx(39), &0x2003u64.to_le_bytes());
    put(m, 2 * PAGE + idx(30), &0x3003u64.to_le_bytes());
    put(m, 3 * PAGE + idx(21), &0x4003u64.to_le_bytes());
    put(m, 4 * PAGE + idx(12), &0x5003u64.to_le_bytes());
    put(m, 5 * PAGE, b"MZ");
    f
}

fn exercise(file: Vec<u8>, probe: u64) {
    let len = file.len() as u64;
    let Ok(mut dump) = Dump::with_hint(file, FormatHint::Detect) else {
        return;
    };
    for run in dump.phys_map().runs() {
        assert!(run.file_offset + run.pages * PAGE as u64 <= len);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _ = runtime.block_on(dump.locate());
    for (address, n) in [(VA, 0x40), (probe, 0x20), (u64::MAX - 7, 16)] {
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
    if mode % 4 == 0 {
        exercise(data.to_vec(), 0);
        return;
    }
    let mut file = core();
    // Patches of (u16 offset scaled over the first 0x800 bytes or the whole file, u64 value).
    let len = file.len();
    let span = |patch: &[u8]| if patch[0] & 1 == 0 { 0x800 } else { len };
    let probe = VA.wrapping_add(patches::apply(&mut file, rest, span));
    if rest.len() % 10 == 3 {
        let keep = usize::from(rest[0]) * file.len() / 256;
        file.truncate(keep);
    }
    exercise(file, probe);
});
