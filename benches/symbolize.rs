//! Symbolizes 100,000 addresses across three PDBs (the Win11 fixture kernel, the real MSVC
//! `dump_syms_regtest64.pdb`, the `myfault` driver) and prints the time. Target: under 1 s after
//! load on a 2-core machine. `cargo bench --bench symbolize`.

use std::path::PathBuf;
use std::time::Instant;

use kdleak::symbols::{AddressSpace, Pdb};

const ADDRESSES: usize = 100_000;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let modules = [
        (
            "nt",
            0xfffff803_12400000u64,
            0xa000u64,
            "captures/fixtures/win11-22000/ntkrnlmp.pdb",
        ),
        (
            "dump_syms_regtest64",
            0x1_4000_0000,
            0x1a000,
            "captures/pdb/dump_syms_regtest64/dump_syms_regtest64.pdb",
        ),
        (
            "myfault",
            0xfffff880_0447c000,
            0x5000,
            "captures/fixtures/win11-22000/myfault.pdb",
        ),
    ];
    let load = Instant::now();
    let pdbs: Vec<Pdb> = modules
        .iter()
        .map(|m| Pdb::open(&root.join(m.3)).expect("fixture PDB"))
        .collect();
    let mut space = AddressSpace::new();
    for (m, pdb) in modules.iter().zip(&pdbs) {
        space.add(m.0, m.1, m.2, Some(pdb));
    }
    let load = load.elapsed();

    // Deterministic addresses: mostly inside the three images, some outside every module.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let addresses: Vec<u64> = (0..ADDRESSES)
        .map(|i| {
            let r = next();
            match i % 10 {
                9 => r | 0xffff_0000_0000_0000,
                k => {
                    let m = &modules[k % 3];
                    m.1 + r % m.2
                }
            }
        })
        .collect();

    let start = Instant::now();
    let mut bytes = 0usize;
    let mut named = 0usize;
    for &a in &addresses {
        let s = space.symbolize(a);
        named += usize::from(s.contains('!'));
        bytes += s.len();
    }
    let took = start.elapsed();
    println!(
        "symbolize: {ADDRESSES} addresses across 3 PDBs in {:.1} ms ({:.0} ns/address; {named} named, {bytes} bytes); load + index {:.1} ms",
        took.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e9 / ADDRESSES as f64,
        load.as_secs_f64() * 1e3,
    );
    assert!(
        named > ADDRESSES / 3,
        "a good share of addresses resolve to a symbol"
    );
    if took.as_secs_f64() >= 1.0 {
        eprintln!("symbolize: slower than the 1 s target");
        std::process::exit(1);
    }
}
