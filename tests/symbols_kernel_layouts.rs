//! For each fixture kernel PDB (`captures/fixtures/*/ntkrnlmp.pdb`), every field the verifier
//! pull uses (verifier.md §8: the types the public PDB gives) resolves to the offset, size and
//! bit range of the ISF file that kernel was generated from. The ISF JSON is read here directly,
//! as independent truth (the PDB side goes through `kdleak::symbols`).

use std::io::BufReader;
use std::path::{Path, PathBuf};

use kdleak::symbols::{module_layout, Pdb, TypeDesc};
use serde_json::Value;

/// verifier.md §8 plus the module-walk and list types the pull reads through.
const TYPES: &[&str] = &[
    "_MM_DRIVER_VERIFIER_DATA",
    "_VF_SUSPECT_DRIVER_ENTRY",
    "_VF_TARGET_DRIVER",
    "_VF_TARGET_VERIFIED_DRIVER_DATA",
    "_VF_TARGET_ALL_SHARED_EXPORT_THUNKS",
    "_VF_AVL_TREE",
    "_VF_AVL_TABLE",
    "_VF_AVL_TREE_NODE",
    "_VF_AVL_TREE_NODE_EX",
    "_RTL_AVL_TABLE",
    "_RTL_BALANCED_LINKS",
    "_VI_POOL_ENTRY",
    "_VI_POOL_ENTRY_INUSE",
    "_VI_POOL_PAGE_HEADER",
    "_MI_VERIFIER_POOL_HEADER",
    "_VI_VERIFIER_POOL_HEADER",
    "_VF_POOL_TRACE",
    "_MI_VERIFIER_DRIVER_ENTRY",
    "_KLDR_DATA_TABLE_ENTRY",
    "_LDR_DATA_TABLE_ENTRY",
    "_SLIST_HEADER",
    "_SLIST_ENTRY",
    "_LIST_ENTRY",
    "_UNICODE_STRING",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_isf(name: &str) -> Value {
    let path = root().join("captures/isf").join(name);
    let mut input = BufReader::new(std::fs::File::open(&path).unwrap());
    let mut json = Vec::new();
    lzma_rs::xz_decompress(&mut input, &mut json).unwrap();
    serde_json::from_slice(&json).unwrap()
}

fn isf_size(isf: &Value, ty: &Value) -> Option<u64> {
    match ty["kind"].as_str()? {
        "base" => isf["base_types"][ty["name"].as_str()?]["size"].as_u64(),
        "pointer" => Some(8),
        "struct" | "union" | "class" => isf["user_types"][ty["name"].as_str()?]["size"].as_u64(),
        "enum" => isf["enums"][ty["name"].as_str()?]["size"].as_u64(),
        "array" => Some(ty["count"].as_u64()? * isf_size(isf, &ty["subtype"])?),
        "bitfield" => isf_size(isf, &ty["type"]),
        _ => None,
    }
}

struct Checked {
    fields: usize,
    types: Vec<String>,
}

/// The type being checked: its PDB, its ISF, its name.
struct Outer<'a> {
    pdb: &'a Pdb,
    isf: &'a Value,
    name: &'a str,
}

/// Compares every field of ISF type `name` (and of its nested records, as dotted paths, to
/// `depth` levels) with the PDB.
fn check_type(o: &Outer<'_>, prefix: &str, name: &str, base: u64, depth: usize, out: &mut Checked) {
    let (pdb, isf, outer) = (o.pdb, o.isf, o.name);
    let fields = isf["user_types"][name]["fields"].as_object().unwrap();
    for (field, def) in fields {
        let path = if prefix.is_empty() {
            field.clone()
        } else {
            format!("{prefix}.{field}")
        };
        let got = pdb
            .field(outer, &path)
            .unwrap_or_else(|e| panic!("{}: {e}", pdb.path().display()));
        let want = base + def["offset"].as_u64().unwrap();
        assert_eq!(got.offset, want, "{outer}.{path} offset");
        let ty = &def["type"];
        if ty["kind"] == "bitfield" {
            let bf = got
                .bitfield
                .unwrap_or_else(|| panic!("{outer}.{path}: no bitfield"));
            assert_eq!(
                u64::from(bf.position),
                ty["bit_position"].as_u64().unwrap(),
                "{outer}.{path} bit position"
            );
            assert_eq!(
                u64::from(bf.width),
                ty["bit_length"].as_u64().unwrap(),
                "{outer}.{path} bit width"
            );
        } else {
            assert!(got.bitfield.is_none(), "{outer}.{path} is not a bitfield");
        }
        if let Some(size) = isf_size(isf, ty) {
            // ISF pointers are 8 bytes; function pointers and void are sized alike in both.
            if !matches!(ty["kind"].as_str(), Some("function")) {
                assert_eq!(got.size, size, "{outer}.{path} size");
            }
        }
        match ty["kind"].as_str().unwrap() {
            "array" => match &got.ty {
                TypeDesc::Array { count, .. } => {
                    assert_eq!(
                        *count,
                        ty["count"].as_u64().unwrap(),
                        "{outer}.{path} count"
                    )
                }
                other => panic!("{outer}.{path}: expected an array, got {other:?}"),
            },
            "pointer" => {
                // captures/gen emits a pointer to a type the ISF lacks as `unsigned char *X[1]`
                // (generator quirk: same offset and size, array-of-one-pointer kind).
                let opaque = ty["subtype"]["name"]
                    .as_str()
                    .is_some_and(|n| isf["user_types"].get(n).is_none());
                let quirk = opaque
                    && matches!(&got.ty, TypeDesc::Array { element, count: 1, .. }
                        if matches!(**element, TypeDesc::Pointer { size: 8, .. }));
                assert!(
                    quirk || matches!(got.ty, TypeDesc::Pointer { size: 8, .. }),
                    "{outer}.{path}: expected a pointer, got {:?}",
                    got.ty
                )
            }
            "struct" | "union" if depth > 0 => {
                let inner = ty["name"].as_str().unwrap();
                check_type(o, &path, inner, want, depth - 1, out);
            }
            _ => {}
        }
        out.fields += 1;
    }
}

fn fixture_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("captures/fixtures"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("ntkrnlmp.pdb").is_file())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 3, "three fixture kernels");
    dirs
}

fn check_fixture(dir: &Path) -> Checked {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let isf = read_isf(manifest["isf"].as_str().unwrap());
    let pdb = Pdb::open(&dir.join("ntkrnlmp.pdb")).unwrap();
    let nt = &manifest["files"]["ntoskrnl.exe"];
    assert_eq!(
        pdb.id().guid.replace('-', ""),
        nt["rsds"]["guid"].as_str().unwrap()
    );
    assert_eq!(u64::from(pdb.id().age), nt["rsds"]["age"].as_u64().unwrap());
    let mut out = Checked {
        fields: 0,
        types: vec![],
    };
    for &name in TYPES {
        let in_isf = isf["user_types"].get(name).is_some();
        assert_eq!(
            pdb.has_type(name).unwrap(),
            in_isf,
            "{}: {name}",
            dir.display()
        );
        if !in_isf {
            let err = pdb.type_size(name).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains("ntkrnlmp.pdb"), "{err}");
            continue;
        }
        assert_eq!(
            pdb.type_size(name).unwrap(),
            isf["user_types"][name]["size"].as_u64().unwrap(),
            "sizeof {name}"
        );
        let outer = Outer {
            pdb: &pdb,
            isf: &isf,
            name,
        };
        check_type(&outer, "", name, 0, 2, &mut out);
        out.types.push(name.to_string());
    }
    // Global symbols: the fixture kernel's own RVAs (manifest, from S_PUB32).
    for (name, sym) in nt["symbols"].as_object().unwrap() {
        let want =
            u64::from_str_radix(sym["rva"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
        assert_eq!(u64::from(pdb.symbol_rva(name).unwrap()), want, "{name}");
    }
    // The module walk's layout from the PDB equals the ISF's loader entry.
    let layout = module_layout(&pdb.types().unwrap()).unwrap();
    let ldr = if isf["user_types"]["_KLDR_DATA_TABLE_ENTRY"].is_object() {
        "_KLDR_DATA_TABLE_ENTRY"
    } else {
        "_LDR_DATA_TABLE_ENTRY"
    };
    let isf_offset = |ty: &str, field: &str| {
        isf["user_types"][ty]["fields"][field]["offset"]
            .as_u64()
            .unwrap() as usize
    };
    assert_eq!(layout.flink, isf_offset(ldr, "InLoadOrderLinks"));
    assert_eq!(layout.dll_base, isf_offset(ldr, "DllBase"));
    assert_eq!(layout.size_of_image, isf_offset(ldr, "SizeOfImage"));
    assert_eq!(layout.full_dll_name, isf_offset(ldr, "FullDllName"));
    assert_eq!(layout.base_dll_name, isf_offset(ldr, "BaseDllName"));
    assert_eq!(
        layout.unicode_string_buffer,
        isf_offset("_UNICODE_STRING", "Buffer")
    );
    out
}

#[test]
fn verifier_fields_match_the_isf_in_every_fixture_kernel() {
    for dir in fixture_dirs() {
        let checked = check_fixture(&dir);
        eprintln!(
            "{}: {} fields of {} types match the ISF",
            dir.display(),
            checked.fields,
            checked.types.len()
        );
        assert!(checked.fields > 100, "{}", checked.fields);
    }
}

#[test]
fn named_paths_the_pull_uses() {
    for dir in fixture_dirs() {
        let pdb = Pdb::open(&dir.join("ntkrnlmp.pdb")).unwrap();
        let label = dir.file_name().unwrap().to_string_lossy().into_owned();
        // Win10 1607+ nest the AVL node (TreeNode.Base.p); Win7 has TreeNode.p.
        let p = if pdb.has_type("_VF_AVL_TREE_NODE_EX").unwrap() {
            "TreeNode.Base.p"
        } else {
            "TreeNode.p"
        };
        assert_eq!(pdb.offset("_VF_TARGET_DRIVER", p).unwrap(), 0, "{label}");
        // _SLIST_HEADER: flattened anonymous members and a named member of an `__unnamed` type.
        assert_eq!(pdb.offset("_SLIST_HEADER", "Alignment").unwrap(), 0);
        assert_eq!(pdb.offset("_SLIST_HEADER", "Region").unwrap(), 8);
        let depth = pdb.field("_SLIST_HEADER", "HeaderX64.Depth").unwrap();
        assert_eq!(
            (depth.offset, depth.bitfield.map(|b| (b.position, b.width))),
            (0, Some((0, 16)))
        );
        let trace = pdb.field("_VF_POOL_TRACE", "StackTrace").unwrap();
        assert!(
            matches!(trace.ty, TypeDesc::Array { count, .. } if count > 0),
            "{label}: {trace:?}"
        );
        let wrong = pdb
            .field("_VF_TARGET_DRIVER", "TreeNode.Nope")
            .unwrap_err()
            .to_string();
        assert!(
            wrong.contains("TreeNode.Nope") && wrong.contains("ntkrnlmp.pdb"),
            "{wrong}"
        );
    }
}
