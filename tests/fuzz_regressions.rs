//! Inputs the symbol fuzz targets (issue 17) found or start from, replayed through the same
//! harnesses (`fuzz/shared/`): each must run to the end without a panic. A crash found by
//! `scripts/fuzz.sh` is kept by copying it to `tests/data/fuzz/<target>/`.

#[path = "../fuzz/shared/cab_expand.rs"]
mod cab_expand;
#[path = "../fuzz/shared/pdb_parse.rs"]
mod pdb_parse;
#[path = "../fuzz/shared/pe_rsds.rs"]
mod pe_rsds;

use std::path::PathBuf;

fn saved(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn replay(target: &str, run: fn(&[u8]), extra: &[Vec<u8>]) {
    let inputs = saved(target);
    for (name, input) in &inputs {
        eprintln!("{target}: {name}");
        run(input);
    }
    for input in extra {
        run(input);
    }
}

#[test]
fn pdb_parse_inputs() {
    let fixture = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("captures/fixtures/win10-19041/myfault.pdb"),
    )
    .unwrap();
    let mut whole = vec![0u8];
    whole.extend(&fixture);
    assert!(!saved("pdb_parse").is_empty());
    replay(
        "pdb_parse",
        pdb_parse::run,
        &[whole, vec![2], vec![1, 1, 0, 0, 0x80]],
    );
}

#[test]
fn pe_rsds_inputs() {
    replay(
        "pe_rsds",
        pe_rsds::run,
        &[b"\x01\x00\x04\x00\x00..\\..\\x.pdb".to_vec(), vec![0; 64]],
    );
}

#[test]
fn cab_expand_inputs() {
    let cab = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
        "captures/pdb/symstore/ShowSSEConfig.pdb/A62592418D7807494C4C44205044422E1/ShowSSEConfig.pd_",
    ))
    .unwrap();
    let mut whole = vec![0u8];
    whole.extend(&cab);
    replay(
        "cab_expand",
        cab_expand::run,
        &[whole, b"\x01\x00kdleak".to_vec()],
    );
}
