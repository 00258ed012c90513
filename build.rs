//! Packs the data the simulator and its default symbol setup read — the fixture kernels, drivers
//! and their PDBs (`captures/fixtures/`), the ISF tables the simulator lays memory out from
//! (`captures/isf/`) and the scenario files (`captures/scenarios/*.toml`) — into one deflated zip
//! in `OUT_DIR`, which `src/embedded.rs` includes in the binary and unpacks into a cache directory
//! on first use. An installed binary then needs no checkout (README "Installation").

use std::io::Write;
use std::path::{Path, PathBuf};

/// Which files of a directory are packed.
type Keep = fn(&Path) -> bool;

/// The directories packed, relative to the crate root, and which files of each.
const PACKED: &[(&str, Keep)] = &[
    ("captures/fixtures", |_| true),
    ("captures/isf", |_| true),
    ("captures/scenarios", |p| {
        p.extension().is_some_and(|e| e == "toml")
    }),
];

fn files(dir: &Path, keep: Keep, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files(&path, keep, out)?;
        } else if keep(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// FNV-1a over the archive: the name of the directory it is unpacked into, so a binary with
/// other fixtures never reads a stale copy.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let mut all = Vec::new();
    for (dir, keep) in PACKED {
        let dir = root.join(dir);
        println!("cargo:rerun-if-changed={}", dir.display());
        files(&dir, *keep, &mut all)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    }
    // Sorted, with fixed timestamps: the same inputs give the same archive byte for byte.
    all.sort();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(9))
        .last_modified_time(zip::DateTime::default());
    for path in &all {
        let name = path
            .strip_prefix(&root)
            .expect("listed under the root")
            .to_str()
            .expect("fixture paths are UTF-8")
            .replace('\\', "/");
        let bytes =
            std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        zip.start_file(name, options).expect("zip entry");
        zip.write_all(&bytes).expect("zip write");
    }
    let archive = zip.finish().expect("zip finish").into_inner();
    std::fs::write(out.join("embedded.zip"), &archive).expect("write embedded.zip");
    println!(
        "cargo:rustc-env=KDLEAK_EMBEDDED_KEY={}-{:016x}",
        std::env::var("CARGO_PKG_VERSION").expect("set by cargo"),
        fnv1a(&archive)
    );
}
