//! Two sources, one answer, type by type: for every fixture build, every structure and union of
//! the build's ISF table read through kdleak's ISF reader has the same size and the same members
//! (name, offset, size, bitfield, type) as the fixture kernel PDB read through kdleak's PDB
//! reader, and every fixture symbol the same RVA. What the ISF lacks is said here and shown not
//! to matter: `volatile` (the PDB has it on the counters Microsoft declares volatile, the ISF
//! nowhere — compared with it removed, and the counters still decode the same), the declaration
//! order of members sharing an offset (compared as sets), and the types the fixture PDB adds
//! beside the ISF's (`supplemental_types`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use kdleak::symbols::{IsfSymbols, ModuleSymbols, Pdb, RecordKind, TypeDesc};

mod fixture_isf;

const FIXTURES: [&str; 3] = ["win7-7601", "win10-19041", "win11-22000"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sources(fixture: &str) -> (ModuleSymbols, ModuleSymbols) {
    let pdb = Pdb::open(
        &root()
            .join("captures/fixtures")
            .join(fixture)
            .join("ntkrnlmp.pdb"),
    )
    .unwrap();
    let json = serde_json::to_vec(&fixture_isf::fixture_isf(fixture)).unwrap();
    let isf = IsfSymbols::parse(&fixture_isf::table_name(fixture), &json, "ntkrnlmp.pdb").unwrap();
    (
        ModuleSymbols::Pdb(Arc::new(pdb)),
        ModuleSymbols::Isf(Arc::new(isf)),
    )
}

/// A member as the layout code sees it, qualifiers left out of the type's text.
fn member_line(name: &str, field: &kdleak::symbols::Field) -> String {
    let ty = field.ty.describe().replace("volatile ", "");
    format!(
        "{name} @{:#x} size {:#x} bits {:?} : {ty}",
        field.offset, field.size, field.bitfield
    )
}

/// A member line of the ISF with the generator's documented substitutions applied
/// (captures/gen/README.md "Types"): a record the ISF names but does not define becomes bytes
/// (`unsigned char[1]`, so a pointer to one reads `unsigned char *[1]`), `HRESULT` is `long`,
/// and the one non-identifier enum name `<unnamed-enum-X>` is `_isf__unnamed_enum_X_`. Sizes,
/// offsets and bitfields are never substituted.
fn as_generated(isf: &kdleak::symbols::TypeTable, line: &str) -> String {
    let (head, ty) = line.split_once(" : ").unwrap();
    let (first, rest) = ty.split_once(' ').unwrap_or((ty, ""));
    let record = first.starts_with('_') && !first.starts_with("__int");
    let ty = if record && isf.find(first).is_err() && rest.starts_with('*') {
        format!("unsigned char *[1]{}", &rest[1..])
    } else if ty == "HRESULT" {
        "long".to_string()
    } else if first.starts_with('<') {
        let name: String = first
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("_isf_{name}")
    } else {
        ty.to_string()
    };
    format!("{head} : {ty}")
}

fn has_volatile(ty: &TypeDesc) -> bool {
    ty.describe().contains("volatile")
}

#[test]
fn every_isf_type_reads_the_same_as_the_fixture_pdbs() {
    for fixture in FIXTURES {
        let (pdb, isf) = sources(fixture);
        let (pdb_types, isf_types) = (pdb.types().unwrap(), isf.types().unwrap());
        assert_eq!(isf.id(), pdb.id(), "{fixture}: the table names the PDB");
        let manifest = fixture_isf::manifest(fixture);
        let mut compared = 0;
        let mut qualified_in_pdb = 0;
        let mut substituted = 0;
        for record in isf_types.records().filter(|r| !r.forward) {
            let name = &record.name;
            assert_eq!(
                pdb_types.size_of(name).unwrap(),
                record.size,
                "{fixture}: sizeof {name}"
            );
            let pdb_index = pdb_types.find(name).unwrap();
            assert_eq!(
                pdb_types.record(pdb_index).unwrap().kind,
                record.kind,
                "{fixture}: {name} struct or union"
            );
            let members = |table: &kdleak::symbols::TypeTable, index: u32| {
                table
                    .members_at(index)
                    .unwrap()
                    .iter()
                    .map(|m| member_line(&m.name, &m.field))
                    .collect::<BTreeSet<String>>()
            };
            let isf_members: BTreeSet<String> = members(&isf_types, record.index)
                .into_iter()
                .map(|line| {
                    let generated = as_generated(&isf_types, &line);
                    substituted += usize::from(generated != line);
                    generated
                })
                .collect();
            assert_eq!(
                members(&pdb_types, pdb_index),
                isf_members,
                "{fixture}: members of {name}"
            );
            for member in pdb_types.members_at(pdb_index).unwrap() {
                if has_volatile(&member.field.ty) {
                    qualified_in_pdb += 1;
                    let isf_field = isf.field(name, &member.name).unwrap();
                    assert!(!has_volatile(&isf_field.ty), "the ISF has no qualifiers");
                }
            }
            compared += 1;
        }
        let in_isf = manifest["user_types_from_isf"].as_u64().unwrap() as usize;
        assert_eq!(compared, in_isf, "{fixture}: every ISF user type compared");
        assert!(
            qualified_in_pdb >= 30,
            "{fixture}: the fixture PDB's volatile counters ({qualified_in_pdb}) are the difference"
        );
        for extra in manifest["supplemental_types"].as_array().unwrap() {
            let extra = extra.as_str().unwrap();
            assert!(pdb_types.find(extra).is_ok() && isf_types.find(extra).is_err());
        }
        // Every fixture symbol, at the fixture's RVA through both.
        for (name, symbol) in manifest["files"]["ntoskrnl.exe"]["symbols"]
            .as_object()
            .unwrap()
        {
            assert_eq!(
                isf.symbol_rva(name).unwrap(),
                pdb.symbol_rva(name).unwrap(),
                "{fixture}: {name} ({symbol})"
            );
        }
        eprintln!(
            "{fixture}: {compared} types, {qualified_in_pdb} volatile members only in the PDB, \
             {substituted} member types as the generator substitutes them"
        );
    }
}

#[test]
fn a_volatile_counter_and_its_unqualified_isf_twin_decode_the_same_bytes() {
    let (pdb, isf) = sources("win7-7601");
    let bytes: Vec<u8> = (0..0x100u32).map(|i| (i * 7) as u8).collect();
    for member in [
        "CurrentNonPagedPoolAllocations",
        "NonPagedBytes",
        "Level",
        "PeakPagedPoolAllocations",
    ] {
        let from_pdb = pdb.field("_MM_DRIVER_VERIFIER_DATA", member).unwrap();
        let from_isf = isf.field("_MM_DRIVER_VERIFIER_DATA", member).unwrap();
        assert_eq!(
            kdleak::verifier::layout::value(&bytes, &from_pdb),
            kdleak::verifier::layout::value(&bytes, &from_isf),
            "{member}"
        );
    }
    let counter = pdb
        .field("_MM_DRIVER_VERIFIER_DATA", "CurrentNonPagedPoolAllocations")
        .unwrap();
    assert!(
        has_volatile(&counter.ty),
        "the PDB has the qualifier: {counter:?}"
    );
}

#[test]
fn stack_addresses_take_the_same_names_from_both() {
    for fixture in FIXTURES {
        let (pdb, isf) = sources(fixture);
        let manifest = fixture_isf::manifest(fixture);
        let kernel = &manifest["files"]["ntoskrnl.exe"];
        let text = &kernel["sections"][".text"];
        let hex = |v: &serde_json::Value| {
            u32::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
        };
        let (start, size) = (hex(&text["rva"]), hex(&text["vsize"]));
        // Every code address of the kernel, as a stack frame would point into it.
        for rva in start..start + size {
            assert_eq!(
                isf.name_at(rva).unwrap(),
                pdb.name_at(rva).unwrap(),
                "{fixture}: RVA {rva:#x}"
            );
        }
    }
}

#[test]
fn an_isf_union_is_a_union_and_its_members_resolve_by_name() {
    let (_, isf) = sources("win10-19041");
    let types = isf.types().unwrap();
    let slist = types.record(types.find("_SLIST_HEADER").unwrap()).unwrap();
    assert_eq!(slist.kind, RecordKind::Union);
    assert_eq!(isf.offset("_SLIST_HEADER", "HeaderX64.Depth").unwrap(), 0);
}

fn kernel_id(fixture: &str) -> kdleak::symbols::PdbId {
    let manifest = fixture_isf::manifest(fixture);
    let kernel = &manifest["files"]["ntoskrnl.exe"];
    kdleak::symbols::PdbId {
        name: "ntkrnlmp.pdb".into(),
        guid: kdleak::symbols::isf::registry_guid(kernel["pdb_guid"].as_str().unwrap()).unwrap(),
        age: kernel["pdb_age"].as_u64().unwrap() as u32,
    }
}

fn loader(packs: Vec<PathBuf>, force: bool) -> kdleak::symbols::Symbols {
    let mut options = kdleak::symbols::SymbolOptions::new(Some("")).unwrap();
    options.offline = true;
    options.force = force;
    options.isf = packs;
    kdleak::symbols::Symbols::new(options)
}

#[test]
fn a_table_is_checked_against_the_module_like_a_pdb() {
    let pack = tempfile::tempdir().unwrap();
    // The Windows 10 table filed under the Windows 7 kernel's name.
    let dir = pack.path().join("windows/ntkrnlmp.pdb");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(fixture_isf::table_name("win7-7601")),
        fixture_isf::fixture_isf_xz("win10-19041"),
    )
    .unwrap();
    let win7 = kernel_id("win7-7601");
    let err = loader(vec![pack.path().to_path_buf()], false)
        .load_module_id(&win7)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("wrong PDB") && err.contains(&win7.guid) && err.contains("--force-symbols"),
        "{err}"
    );
    let forced = loader(vec![pack.path().to_path_buf()], true)
        .load_module_id(&win7)
        .unwrap();
    assert_eq!(forced.kind(), kdleak::symbols::SourceKind::Isf);
    assert_eq!(forced.id(), &kernel_id("win10-19041"), "what the table is");
}

#[test]
fn the_loader_remembers_what_it_was_asked_for_and_what_answered() {
    let pack = tempfile::tempdir().unwrap();
    fixture_isf::write_fixture_isf("win11-22000", pack.path());
    let symbols = loader(vec![pack.path().to_path_buf()], false);
    let nt = symbols.load_module_id(&kernel_id("win11-22000")).unwrap();
    assert_eq!(nt.kind(), kdleak::symbols::SourceKind::Isf);
    let again = symbols.load_module_id(&kernel_id("win11-22000")).unwrap();
    assert!(
        matches!(
            (&nt, &again),
            (ModuleSymbols::Isf(a), ModuleSymbols::Isf(b)) if Arc::ptr_eq(a, b)
        ),
        "a table is read once per process"
    );
    let other = kernel_id("win7-7601");
    assert!(symbols.load_module_id(&other).is_err());
    let asked: Vec<_> = symbols
        .requested()
        .into_iter()
        .map(|r| (r.id, r.found))
        .collect();
    assert_eq!(
        asked,
        [
            (
                kernel_id("win11-22000"),
                Some(kdleak::symbols::SourceKind::Isf)
            ),
            (other, None)
        ]
    );
}
