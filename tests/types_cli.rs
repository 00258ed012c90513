//! `kdleak types`: WinDbg's `dt` on a PDB, from the command line — text, JSON, `-r`, wildcards,
//! a PDB found through a symbol path by GUID/age, and the errors (exit codes from the README).
//! Fixture expectations are Windows facts (symbols.md §5.5), not fixture bytes: the fixtures are
//! regenerated from the ISF tables and may gain `volatile` where Microsoft's PDBs have it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{kdleak, root};
use kdleak::symbols::Pdb;
use serde_json::Value;

fn qualifiers_pdb() -> PathBuf {
    root().join("captures/pdb/qualifiers/qualifiers.pdb")
}

fn kernel(build: &str) -> PathBuf {
    root().join(format!("captures/fixtures/{build}/ntkrnlmp.pdb"))
}

fn types(args: &[&str]) -> Output {
    kdleak().arg("types").args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn every_qualifier_shape_reads_like_dt_with_the_c_keywords() {
    let out = types(&[path(&qualifiers_pdb()), "_QUALIFIED"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        text(&out),
        "struct _QUALIFIED, 11 elements, 0x48 bytes
   +0x000 Counter          : volatile Uint4B
   +0x004 Both             : const volatile Uint4B
   +0x008 Flag             : volatile Pos 0, 3 Bits
   +0x008 Other            : volatile Pos 3, 5 Bits
   +0x00c Bytes            : [6] const UChar
   +0x018 PointerToVolatile : Ptr64 volatile Uint4B
   +0x020 VolatilePointer  : volatile Ptr64 Uint4B
   +0x028 Color            : const volatile _COLOR
   +0x030 Self             : Ptr64 volatile _QUALIFIED
   +0x038 UnalignedPointer : Ptr64 Uint4B
   +0x040 Plain            : [2] volatile Uint4B
"
    );
}

#[test]
fn json_has_offsets_sizes_types_qualifiers_and_bits() {
    let out = types(&[path(&qualifiers_pdb()), "_QUALIFIED", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = Pdb::open(&qualifiers_pdb()).unwrap().id().clone();
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["guid"], id.guid.as_str());
    assert_eq!(doc["age"], id.age);
    assert_eq!(
        (&doc["name"], &doc["kind"], &doc["size"]),
        (&"_QUALIFIED".into(), &"struct".into(), &72.into())
    );
    let members = doc["members"].as_array().unwrap();
    assert_eq!(members.len(), 11);
    let counter = &members[0];
    assert_eq!(counter["name"], "Counter");
    assert_eq!(counter["offset"], 0);
    assert_eq!(counter["size"], 4);
    assert_eq!(counter["type"], "volatile unsigned long");
    assert_eq!(counter["dt"], "volatile Uint4B");
    assert_eq!(counter["qualifiers"], serde_json::json!(["volatile"]));
    assert!(counter.get("bitfield").is_none());
    let other = &members[3];
    assert_eq!(other["name"], "Other");
    assert_eq!(other["offset"], 8);
    assert_eq!(
        other["bitfield"],
        serde_json::json!({"position": 3, "width": 5})
    );
    let pointer = &members[6];
    assert_eq!(pointer["type"], "unsigned long *volatile");
    assert_eq!(pointer["qualifiers"], serde_json::json!(["volatile"]));
    assert_eq!(members[5]["qualifiers"], serde_json::json!([]));
    assert_eq!(members[4]["type"], "const unsigned char[6]");
    assert!(members.iter().all(|m| m.get("members").is_none()));
}

/// The verifier's global block on each fixture kernel: its size per build, the first counter a
/// ULONG at 0 (volatile or not, as the PDB says), 22000's AllocationFreed at 0x30.
#[test]
fn the_verifier_block_of_each_build() {
    for (build, size) in [
        ("win7-7601", "0xa0"),
        ("win10-19041", "0xa8"),
        ("win11-22000", "0xb0"),
    ] {
        let out = types(&[path(&kernel(build)), "_MM_DRIVER_VERIFIER_DATA"]);
        assert!(out.status.success(), "{build}: {}", stderr(&out));
        let text = text(&out);
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        assert!(
            header.starts_with("struct _MM_DRIVER_VERIFIER_DATA, ")
                && header.ends_with(&format!(" elements, {size} bytes")),
            "{build}: {header}"
        );
        let level = lines.next().unwrap();
        assert!(
            level == "   +0x000 Level            : Uint4B"
                || level == "   +0x000 Level            : volatile Uint4B",
            "{build}: {level}"
        );
        let members = text.lines().count() - 1;
        assert!(
            header.contains(&format!(", {members} elements, ")),
            "{build}"
        );
        if build == "win11-22000" {
            assert!(
                text.lines()
                    .any(|l| l.starts_with("   +0x030 AllocationFreed  : ")),
                "{text}"
            );
        }
    }
}

#[test]
fn recursion_walks_into_embedded_records_as_deep_as_asked() {
    let pdb = kernel("win11-22000");
    // 22000 nests the tree node: TreeNode.Base.p (symbols.md §0.1; ntoseye trips on it).
    let nested = "   +0x000 TreeNode         : _VF_AVL_TREE_NODE_EX
      +0x000 Base             : _VF_AVL_TREE_NODE
         +0x000 p                : Ptr64 Void
";
    let two = text(&types(&[path(&pdb), "_VF_TARGET_DRIVER", "-r2"]));
    assert!(two.contains(nested), "{two}");
    assert!(two.contains("   +0x038 VerifiedData     : Ptr64 _VF_TARGET_VERIFIED_DRIVER_DATA\n"));
    let one = text(&types(&[path(&pdb), "_VF_TARGET_DRIVER", "-r1"]));
    assert!(one.contains("      +0x000 Base             : _VF_AVL_TREE_NODE\n"));
    assert!(
        !one.contains("         +"),
        "-r1 stops after one level:\n{one}"
    );
    let none = text(&types(&[path(&pdb), "_VF_TARGET_DRIVER"]));
    assert!(!none.contains("      +"), "{none}");
    // `-r` alone is WinDbg's deepest; pointers are never followed
    let all = text(&types(&[path(&pdb), "_VF_TARGET_DRIVER", "-r"]));
    assert!(all.contains(nested));
    assert!(
        !all.contains("PagedBytes"),
        "the pointed-to driver data is not expanded"
    );

    let out = types(&[path(&pdb), "_VF_TARGET_DRIVER", "-r2", "--format", "json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tree = &doc["members"][0];
    assert_eq!(tree["name"], "TreeNode");
    assert_eq!(tree["members"][0]["name"], "Base");
    assert_eq!(tree["members"][0]["members"][0]["name"], "p");
    assert_eq!(tree["members"][0]["members"][0]["dt"], "Ptr64 Void");
}

#[test]
fn wildcards_list_matching_names() {
    let pdb = kernel("win10-19041");
    let out = types(&[path(&pdb), "_vf_avl_*"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = text(&out).lines().map(|l| l.trim().to_string()).collect();
    assert!(names.contains(&"_VF_AVL_TREE".to_string()), "{names:?}");
    assert!(names.contains(&"_VF_AVL_TABLE".to_string()));
    assert!(names.iter().all(|n| n.starts_with("_VF_AVL_")), "{names:?}");
    let out = types(&[path(&pdb), "_VF_AVL_*", "--format", "json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = doc["types"].as_array().unwrap();
    assert_eq!(listed.len(), names.len());
    assert!(listed
        .iter()
        .any(|t| t["name"] == "_VF_AVL_TREE" && t["kind"] == "struct"));
}

#[test]
fn a_module_type_is_found_through_the_symbol_path_by_guid_and_age() {
    let id = Pdb::open(&qualifiers_pdb()).unwrap().id().clone();
    let store = tempfile::tempdir().unwrap();
    let dir = store.path().join("qualifiers.pdb").join(id.store_key());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(qualifiers_pdb(), dir.join("qualifiers.pdb")).unwrap();
    let sympath = format!("srv*{}", store.path().display());
    let braced = format!("{{{}}}", id.guid.to_ascii_lowercase());
    let age = id.age.to_string();
    let by_module = types(&[
        "qualifiers!_QUALIFIED",
        "--guid",
        &braced,
        "--age",
        &age,
        "--sympath",
        &sympath,
        "--offline",
    ]);
    assert!(by_module.status.success(), "{}", stderr(&by_module));
    let by_file = types(&[path(&qualifiers_pdb()), "_QUALIFIED"]);
    assert_eq!(text(&by_module), text(&by_file));

    // another age is another build: not in the store, and --offline skips the server
    let wrong_age = (id.age + 1).to_string();
    let out = types(&[
        "qualifiers!_QUALIFIED",
        "--guid",
        &id.guid,
        "--age",
        &wrong_age,
        "--sympath",
        &format!("{sympath};srv*https://symbols.invalid"),
        "--offline",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("skipped: offline"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn errors_say_what_to_check_with_the_readme_exit_codes() {
    let pdb = kernel("win11-22000");
    // a PDB without the type: symbols this host cannot use (4), with names that come close
    let out = types(&[path(&pdb), "_VF_TARGET"]);
    assert_eq!(out.status.code(), Some(4));
    let err = stderr(&out);
    assert!(
        err.contains("no type `_VF_TARGET`") && err.contains("ntkrnlmp.pdb"),
        "{err}"
    );
    assert!(err.contains("_VF_TARGET_DRIVER"), "{err}");

    // a corrupt PDB: 4, naming the file
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.pdb");
    let mut bytes = std::fs::read(qualifiers_pdb()).unwrap();
    bytes.truncate(3000);
    std::fs::write(&corrupt, &bytes).unwrap();
    let out = types(&[path(&corrupt), "_QUALIFIED"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("corrupt.pdb"), "{}", stderr(&out));

    // usage and input errors: 2
    for (args, says) in [
        (vec!["/no/such/file.pdb", "_X"], "no such PDB file"),
        (vec!["nt!_LIST_ENTRY"], "--guid and --age"),
        (vec!["_LIST_ENTRY"], "give the PDB file and the type"),
        (
            vec!["nt!_LIST_ENTRY", "--guid", "not-a-guid", "--age", "1"],
            "not a GUID",
        ),
        (
            vec![
                "nt!_LIST_ENTRY",
                "--guid",
                "E5209E8F-297E-8237-4C4C-44205044422E",
                "--age",
                "x",
            ],
            "not a number",
        ),
        (vec![path(&pdb), "_LIST_ENTRY", "-r10"], "0..=9"),
    ] {
        let out = types(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}
