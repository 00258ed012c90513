//! An ISF table for a fixture kernel, as a symbol pack would hold one for a real kernel.
//!
//! The fixture kernels are compact images whose symbols sit at other RVAs than the real
//! kernel's (captures/gen/README.md), so the build's ISF (`captures/isf/`) cannot serve them
//! as it is: this writes a copy with its types unchanged, its symbols those of the fixture at
//! the fixture's RVAs (`manifest.json`), and its metadata naming the fixture kernel PDB's GUID
//! and age — `windows/ntkrnlmp.pdb/<GUID>-<AGE>.json.xz`, Volatility 3's layout. Used by the
//! Volatility 3 interop test and by kdleak's own ISF-pack tests, so both read the same file.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn hex_u64(value: &Value) -> u64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"));
    u64::from_str_radix(text.trim_start_matches("0x"), 16).unwrap()
}

/// `captures/fixtures/<fixture>/manifest.json`.
pub fn manifest(fixture: &str) -> Value {
    let path = root()
        .join("captures/fixtures")
        .join(fixture)
        .join("manifest.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The fixture kernel's ISF table, as JSON.
pub fn fixture_isf(fixture: &str) -> Value {
    let manifest = manifest(fixture);
    let kernel = &manifest["files"]["ntoskrnl.exe"];
    let guid = kernel["pdb_guid"].as_str().unwrap().to_string();
    let age = kernel["pdb_age"].as_u64().unwrap();
    let isf_path = root()
        .join("captures/isf")
        .join(manifest["isf"].as_str().unwrap());
    let compressed = std::fs::read(&isf_path).unwrap();
    let mut raw = Vec::new();
    lzma_rs::xz_decompress(&mut &compressed[..], &mut raw).unwrap();
    let mut isf: Value = serde_json::from_slice(&raw).unwrap();
    let fixture_symbols: serde_json::Map<String, Value> = kernel["symbols"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, entry)| !entry.is_null())
        .map(|(name, entry)| (name.clone(), json!({ "address": hex_u64(&entry["rva"]) })))
        .collect();
    assert!(
        fixture_symbols.contains_key("KdVersionBlock"),
        "{fixture}: the fixture kernel has no KdVersionBlock (regenerate with captures/gen/regen_all.sh)"
    );
    isf["symbols"] = Value::Object(fixture_symbols);
    isf["metadata"]["windows"]["pdb"]["GUID"] = json!(guid);
    isf["metadata"]["windows"]["pdb"]["age"] = json!(age);
    isf
}

/// The fixture kernel's table file name, `<GUID>-<AGE>.json.xz`.
pub fn table_name(fixture: &str) -> String {
    let manifest = manifest(fixture);
    let kernel = &manifest["files"]["ntoskrnl.exe"];
    format!(
        "{}-{}.json.xz",
        kernel["pdb_guid"].as_str().unwrap(),
        kernel["pdb_age"].as_u64().unwrap()
    )
}

/// The fixture kernel's table, xz-compressed.
pub fn fixture_isf_xz(fixture: &str) -> Vec<u8> {
    let mut xz = Vec::new();
    lzma_rs::xz_compress(
        &mut &serde_json::to_vec(&fixture_isf(fixture)).unwrap()[..],
        &mut xz,
    )
    .unwrap();
    xz
}

/// Writes the fixture kernel's table into `symbols/windows/ntkrnlmp.pdb/<GUID>-<AGE>.json.xz`;
/// returns the GUID.
pub fn write_fixture_isf(fixture: &str, symbols: &Path) -> String {
    let dir = symbols.join("windows/ntkrnlmp.pdb");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(table_name(fixture)), fixture_isf_xz(fixture)).unwrap();
    manifest(fixture)["files"]["ntoskrnl.exe"]["pdb_guid"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A zipped pack like Volatility's `windows.zip`: every fixture's table under
/// `windows/ntkrnlmp.pdb/`, deflated.
pub fn write_zipped_pack(fixtures: &[&str], zip_path: &Path) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(zip_path).unwrap());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for fixture in fixtures {
        zip.start_file(
            format!("windows/ntkrnlmp.pdb/{}", table_name(fixture)),
            options,
        )
        .unwrap();
        zip.write_all(&fixture_isf_xz(fixture)).unwrap();
    }
    zip.finish().unwrap();
}
