//! The verifier walkers (MmVerifierData, the suspect list, the ViTargetDriversAvl tree, the
//! tracker pages, the VfPoolTraces log) over hostile memory: the win10 fixture kernel's PDB for
//! layouts, the win10-myfault scenario (256-record log) as the starting memory, and the fuzz
//! input as patches over it (so the walkers get past the first pointer), or as the raw bytes
//! behind every verifier global. Must never panic, hang or allocate without bound.
//!
//! The walkers are async over `kdleak::kernel::Memory`; this target drives them with a
//! current-thread tokio runtime over an in-memory `Memory` (no session, no sockets).
#![no_main]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use kdleak::kernel::Memory;
use kdleak::session::{self, ReadOutcome};
use kdleak::sim::world::scenario::{default_root, MemoryImage, Scenario};
use kdleak::symbols::{ModuleSymbols, Pdb};
use kdleak::verifier::layout::Nt;
use kdleak::verifier::{drivers, log, stats, trackers};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    pdb: ModuleSymbols,
    image: MemoryImage,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let pdb = ModuleSymbols::Pdb(std::sync::Arc::new(
            Pdb::open(&root.join("captures/fixtures/win10-19041/ntkrnlmp.pdb")).unwrap(),
        ));
        let text = std::fs::read_to_string(root.join("captures/scenarios/win10-myfault.toml"))
            .unwrap()
            .replace("length = 0x10000", "length = 0x100");
        let image = Scenario::from_toml(&text)
            .unwrap()
            .build_in(default_root().unwrap())
            .unwrap()
            .image;
        Fixture { pdb, image }
    })
}

/// Sparse memory: mapped regions, everything else unreadable.
struct FuzzMemory {
    regions: BTreeMap<u64, Vec<u8>>,
    reads: u64,
}

impl FuzzMemory {
    fn byte(&self, address: u64) -> Option<u8> {
        let (base, bytes) = self.regions.range(..=address).next_back()?;
        bytes.get(usize::try_from(address - base).ok()?).copied()
    }
}

impl Memory for FuzzMemory {
    async fn read(&mut self, address: u64, len: usize) -> session::Result<ReadOutcome> {
        self.reads += 1;
        // A walk that reads without bound is a bug; a real pull would take days.
        assert!(self.reads < 2_000_000, "unbounded walk");
        let mut out = ReadOutcome {
            address,
            bytes: vec![0; len],
            unreadable: vec![],
        };
        for i in 0..len {
            let a = address.wrapping_add(i as u64);
            match self.byte(a) {
                Some(b) => out.bytes[i] = b,
                None => match out.unreadable.last_mut() {
                    Some(r) if r.end == a => r.end = a.saturating_add(1),
                    _ => out.unreadable.push(a..a.saturating_add(1)),
                },
            }
        }
        Ok(out)
    }
}

fn memory(data: &[u8]) -> FuzzMemory {
    let f = fixture();
    let mut regions = f.image.regions.clone();
    let (mode, data) = data.split_first().unwrap_or((&0, &[]));
    if mode & 1 == 0 {
        // Patches: [region index u16][offset u32][len u8][bytes...] over the scenario.
        let starts: Vec<u64> = regions.keys().copied().collect();
        let mut rest = data;
        while rest.len() >= 7 {
            let index = u16::from_le_bytes([rest[0], rest[1]]) as usize % starts.len();
            let offset = u32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]]) as usize;
            let len = (rest[6] as usize).min(rest.len() - 7);
            let bytes = &rest[7..7 + len];
            rest = &rest[7 + len..];
            let region = regions.get_mut(&starts[index]).unwrap();
            let at = offset % region.len();
            let end = (at + bytes.len()).min(region.len());
            region[at..end].copy_from_slice(&bytes[..end - at]);
        }
    } else {
        // Raw: the input behind every verifier global, and as one extra page anywhere.
        for name in [
            "MmVerifierData",
            "VfSuspectDriversList",
            "ViTargetDriversAvl",
            "VfPoolTraces",
            "VfPoolTracesLength",
            "VfPoolTracesIndex",
        ] {
            if let Some(&at) = f.image.symbols.get(name) {
                let (&start, region) = regions.range_mut(..=at).next_back().unwrap();
                let off = (at - start) as usize;
                let end = (off + data.len()).min(region.len());
                region[off..end].copy_from_slice(&data[..end - off]);
            }
        }
        if data.len() >= 8 {
            let page = u64::from_le_bytes(data[..8].try_into().unwrap()) & !0xfff;
            if regions
                .range(..=page)
                .next_back()
                .is_none_or(|(s, r)| s + r.len() as u64 <= page)
            {
                regions.insert(page, data.iter().copied().cycle().take(0x1000).collect());
            }
        }
    }
    FuzzMemory { regions, reads: 0 }
}

async fn walk(mem: &mut FuzzMemory) {
    let f = fixture();
    let nt = Nt::new(&f.pdb, f.image.kern_base);
    let _ = stats::read_state(mem, &nt).await;
    if let Ok(found) = drivers::read_drivers(mem, &nt).await {
        for driver in &found.verified {
            if let Ok(scan) = trackers::scan(mem, &nt, driver, 19041).await {
                let _ = scan.allocations.iter().map(|a| trackers::tag_text(a.tag));
            }
        }
    }
    if let Ok(Some(log)) = log::read_log(mem, &nt).await {
        let mut addresses: Vec<u64> = log.records.iter().map(|r| r.address).take(64).collect();
        addresses.sort_unstable();
        addresses.dedup();
        let _ = log::index_by_address(&log, &addresses);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut mem = memory(data);
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(walk(&mut mem));
});
