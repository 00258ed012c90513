//! Raw image scanning on hostile memory: the page-table root and kernel search (self-map
//! entries, KUSER_SHARED_DATA, RSDS records, the page-table walk back to an image header) never
//! panics and stays bounded. The input patches a 16-page image that already holds a self-mapped
//! root mapping KUSER_SHARED_DATA and a kernel-looking RSDS record, so the fuzzer starts deep.
#![no_main]

use kdleak::image::{Dump, FormatHint};
use libfuzzer_sys::fuzz_target;

#[path = "../shared/patches.rs"]
mod patches;

const PAGE: usize = 0x1000;
const KUSER: u64 = 0xFFFF_F780_0000_0000;
const KERNEL: u64 = 0xFFFF_F800_0040_0000;

fn put(f: &mut [u8], at: usize, bytes: &[u8]) {
    f[at..at + bytes.len()].copy_from_slice(bytes);
}

fn image() -> Vec<u8> {
    let mut m = vec![0u8; 16 * PAGE];
    let idx = |va: u64, s: u32| ((va >> s) & 0x1ff) as usize * 8;
    put(&mut m, PAGE + 0x1A3 * 8, &0x1063u64.to_le_bytes());
    for (va, tables, leaf) in [(KUSER, [2usize, 3, 4], 5u64), (KERNEL, [6, 7, 8], 9)] {
        put(
            &mut m,
            PAGE + idx(va, 39),
            &((tables[0] * PAGE) as u64 | 3).to_le_bytes(),
        );
        put(
            &mut m,
            tables[0] * PAGE + idx(va, 30),
            &((tables[1] * PAGE) as u64 | 3).to_le_bytes(),
        );
        put(
            &mut m,
            tables[1] * PAGE + idx(va, 21),
            &((tables[2] * PAGE) as u64 | 3).to_le_bytes(),
        );
        put(
            &mut m,
            tables[2] * PAGE + idx(va, 12),
            &(leaf * PAGE as u64 | 3).to_le_bytes(),
        );
        put(
            &mut m,
            tables[2] * PAGE + idx(va, 12) + 8,
            &((leaf + 1) * PAGE as u64 | 3).to_le_bytes(),
        );
    }
    // A PE header at KERNEL (frame 9) whose debug directory points at an RSDS record (frame 10).
    put(&mut m, 9 * PAGE, b"MZ");
    put(&mut m, 9 * PAGE + 0x3C, &0x80u32.to_le_bytes());
    put(&mut m, 9 * PAGE + 0x80, b"PE\0\0");
    put(&mut m, 9 * PAGE + 0x98, &0x20Bu16.to_le_bytes());
    put(&mut m, 9 * PAGE + 0x98 + 0x6C, &16u32.to_le_bytes());
    put(
        &mut m,
        9 * PAGE + 0x98 + 0x70 + 6 * 8,
        &0x200u32.to_le_bytes(),
    );
    put(
        &mut m,
        9 * PAGE + 0x98 + 0x70 + 6 * 8 + 4,
        &28u32.to_le_bytes(),
    );
    put(&mut m, 9 * PAGE + 0x200 + 0xC, &2u32.to_le_bytes());
    put(&mut m, 9 * PAGE + 0x200 + 0x10, &40u32.to_le_bytes());
    put(&mut m, 9 * PAGE + 0x200 + 0x14, &0x1000u32.to_le_bytes());
    put(&mut m, 10 * PAGE, b"RSDS");
    put(&mut m, 10 * PAGE + 24, b"ntkrnlmp.pdb\0");
    m
}

fuzz_target!(|data: &[u8]| {
    let mut file = image();
    let len = file.len();
    patches::apply(&mut file, data, |_| len);
    if data.len() % 10 == 7 {
        file.truncate(usize::from(data[0]) * file.len() / 256);
    }
    let Ok(mut dump) = Dump::with_hint(file, FormatHint::Raw) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    if runtime.block_on(dump.locate()).is_ok() {
        assert!(dump.facts.directory_table_base != 0);
        let _ = dump.read_virtual(dump.facts.kern_base, 0x40);
    }
});
