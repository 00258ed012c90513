//! A module's PE headers and RSDS record read from (hostile) target memory, and the PDB name it
//! gives (issue 17): the reader never panics or reads without bound, and a name the symbol layer
//! accepts always makes a cache path of exactly `CACHE/name/KEY/name` and URL segments without a
//! separator. Input: a size of image, then the bytes mapped at the image base (mode 0), or
//! patches over a valid synthetic image whose RSDS name is the rest of the input (mode 1).
//!
//! Shared by the fuzz target and `tests/fuzz_regressions.rs`, which replays saved inputs.
#![allow(dead_code)]

use std::path::{Component, Path};

use kdleak::kernel::pe::synthetic_image;
use kdleak::kernel::{read_pdb_info, Memory};
use kdleak::session::{self, ReadOutcome};
use kdleak::symbols::{safe_name, store, PdbId};

const BASE: u64 = 0xfffff880_04500000;

struct Image(Vec<u8>, u64);

impl Memory for Image {
    async fn read(&mut self, address: u64, len: usize) -> session::Result<ReadOutcome> {
        self.1 += 1;
        assert!(self.1 < 64, "unbounded reads");
        assert!(len <= 0x10000, "a read of {len} bytes");
        let mut out = ReadOutcome {
            address,
            bytes: vec![0; len],
            unreadable: vec![],
        };
        for i in 0..len {
            let a = address.wrapping_add(i as u64);
            match a.checked_sub(BASE).and_then(|o| self.0.get(o as usize)) {
                Some(&b) => out.bytes[i] = b,
                None => match out.unreadable.last_mut() {
                    Some(r) if r.end == a => r.end = a.saturating_add(1),
                    _ => out.unreadable.push(a..a.saturating_add(1)),
                },
            }
        }
        Ok(out)
    }
}

fn check_name(id: &PdbId) {
    if safe_name::problem(&id.name).is_some() {
        return;
    }
    let cache = Path::new("/cache");
    let path = store::cache_path(cache, id);
    let rest: Vec<Component> = path.strip_prefix(cache).unwrap().components().collect();
    assert_eq!(rest.len(), 3, "{path:?}");
    assert!(
        rest.iter().all(|c| matches!(c, Component::Normal(_))),
        "{path:?}"
    );
    for segment in [id.name.as_str(), &id.store_key()] {
        let encoded = safe_name::url_segment(segment);
        assert!(!encoded.contains(['/', '\\', '?', '#']) && encoded != ".." && encoded != ".");
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (size, bytes) = match rest.get(..4) {
        Some(s) => (u32::from_le_bytes([s[0], s[1], s[2], s[3]]), &rest[4..]),
        None => (0, rest),
    };
    let image = if mode & 1 == 0 {
        bytes.to_vec()
    } else {
        // Patches [u16 offset][u8 value] in the first 16 bytes; the rest names the PDB.
        let (patches, name) = bytes.split_at(bytes.len().min(15));
        let name = String::from_utf8_lossy(&name[..name.len().min(0x180)]);
        let mut img = synthetic_image([0x5a; 16], 1, &name);
        for p in patches.chunks_exact(3) {
            let at = usize::from(u16::from_le_bytes([p[0], p[1]])) % img.len();
            img[at] = p[2];
        }
        img
    };
    let mut mem = Image(image, 0);
    let found = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(read_pdb_info(&mut mem, BASE, size));
    if let Ok(Some(info)) = found {
        check_name(&PdbId::from_rsds(&info));
    }
}
