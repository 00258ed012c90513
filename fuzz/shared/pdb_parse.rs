//! PDB files from a symbol server (issue 17): the container check, the identity, the type table,
//! every type the pull reads by name (size, members, each member by path, `dt -r9`), and the
//! name index with symbolization — never a panic, an abort, unbounded memory or time. Inputs:
//! mode 0 a whole file; mode 1 type records wrapped in a valid container (so the records are
//! what is fuzzed); mode 2 patches over a real fixture PDB (leaky.pdb).
//!
//! Shared by the fuzz target and `tests/fuzz_regressions.rs`, which replays saved inputs.
#![allow(dead_code)]

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kdleak::symbols::msf::pdb_with_types;
use kdleak::symbols::names::NameIndex;
use kdleak::symbols::{dt, pdbfile, TypeTable};

/// Every type the pull and the module walk read by name (src/verifier, src/symbols/kldr.rs).
const PULL_TYPES: [&str; 14] = [
    "_KLDR_DATA_TABLE_ENTRY",
    "_LDR_DATA_TABLE_ENTRY",
    "_MM_DRIVER_VERIFIER_DATA",
    "_RTL_BALANCED_LINKS",
    "_UNICODE_STRING",
    "_VF_AVL_TABLE",
    "_VF_AVL_TREE",
    "_VF_POOL_TRACE",
    "_VF_SUSPECT_DRIVER_ENTRY",
    "_VF_TARGET_DRIVER",
    "_VF_TARGET_VERIFIED_DRIVER_DATA",
    "_VI_POOL_ENTRY",
    "_VI_POOL_ENTRY_INUSE",
    "_VI_POOL_PAGE_HEADER",
];
/// Dotted paths the pull resolves (a sample through nested and anonymous members).
const PATHS: [(&str, &str); 6] = [
    ("_VF_TARGET_DRIVER", "TreeNode.Base.p"),
    ("_VF_TARGET_DRIVER", "VerifiedData"),
    ("_KLDR_DATA_TABLE_ENTRY", "BaseDllName.Buffer"),
    ("_VF_AVL_TABLE", "RtlTable.BalancedRoot"),
    ("_VI_POOL_ENTRY", "InUse.VirtualAddress"),
    (
        "_VF_TARGET_VERIFIED_DRIVER_DATA",
        "PoolTrackers.HeaderX64.Depth",
    ),
];
const NAMES: [&str; 4] = [
    "MmVerifierData",
    "VfSuspectDriversList",
    "ViTargetDriversAvl",
    "LeakyAllocate",
];

fn fixture() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let root = repo_root();
        std::fs::read(root.join("captures/fixtures/win10-19041/leaky.pdb")).unwrap()
    })
}

fn exercise(file: Vec<u8>) {
    let path = Path::new("fuzz.pdb");
    let open = || pdbfile::open_source(path, Cursor::new(file.clone()));
    if kdleak::symbols::identity::read_id_from(path, Cursor::new(file.clone())).is_err() {
        return;
    }
    if let Ok(mut pdb) = open() {
        if let Ok(table) = TypeTable::read(path, &mut pdb) {
            for ty in PULL_TYPES.iter().copied().chain(
                table
                    .records()
                    .take(8)
                    .map(|r| r.name)
                    .collect::<Vec<_>>()
                    .iter()
                    .map(|s| s.as_str()),
            ) {
                let _ = table.size_of(ty);
                if let Ok(members) = table.members_of(ty) {
                    for (name, _) in members.iter().take(64) {
                        let _ = table.field(ty, name);
                    }
                }
                let _ = dt::layout(&table, ty, dt::MAX_RECURSION).map(|l| dt::render_text(&l));
            }
            for (ty, field) in PATHS {
                let _ = table.field(ty, field);
            }
            let _ = dt::matching(&table, "*");
        }
    }
    if let Ok(mut pdb) = open() {
        if let Ok(names) = NameIndex::read(path, &mut pdb) {
            for name in NAMES {
                let _ = names.rva_of(name);
            }
            for rva in [0u32, 0x1000, 0x1062, 0x3000, 0x7fff_ffff, u32::MAX] {
                let _ = names.lookup(rva);
            }
        }
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => exercise(rest.to_vec()),
        1 => {
            // The first 4 bytes: what the header claims as the end of the type indices.
            let claim = rest
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .filter(|&c| c & 1 == 1);
            let records = rest.get(4..).unwrap_or(&[]);
            exercise(pdb_with_types([7; 16], 1, records, claim));
        }
        _ => {
            let mut file = fixture().to_vec();
            // Patches of (u32 offset scaled over the file, u32 value).
            for patch in rest.chunks_exact(8) {
                let raw = u32::from_le_bytes([patch[0], patch[1], patch[2], patch[3]]) as u64;
                let at = ((raw * file.len() as u64) >> 32) as usize;
                let end = (at + 4).min(file.len());
                file[at..end].copy_from_slice(&patch[4..4 + end - at]);
            }
            exercise(file);
        }
    }
}

/// The repository root, from the fuzz crate or the main crate.
fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if here.join("captures").is_dir() {
        here
    } else {
        here.join("..")
    }
}
