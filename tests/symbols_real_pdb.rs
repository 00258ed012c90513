//! Symbols from a real MSVC x64 private PDB (`captures/pdb/dump_syms_regtest64`, ground truth in
//! `captures/pdb/README.md`, taken with llvm-pdbutil).

use std::path::PathBuf;

use kdleak::kernel::PdbInfo;
use kdleak::symbols::{AddressSpace, Pdb, PdbId, Qualifiers, RecordKind, SymbolError, TypeDesc};

fn pdb_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("captures/pdb/dump_syms_regtest64/dump_syms_regtest64.pdb")
}

fn open() -> Pdb {
    Pdb::open(&pdb_path()).unwrap()
}

#[test]
fn identity_uses_guid_and_dbi_age() {
    let pdb = open();
    assert_eq!(pdb.id().guid, "72E103A8-5CB2-4907-8B76-B2E7C06257B1");
    assert_eq!(pdb.id().age, 3);
    // The RSDS record of the EXE (full Windows path, NUL-terminated).
    let mut rec = 0x5344_5352u32.to_le_bytes().to_vec();
    rec.extend_from_slice(&[
        0xA8, 0x03, 0xE1, 0x72, 0xB2, 0x5C, 0x07, 0x49, 0x8B, 0x76, 0xB2, 0xE7, 0xC0, 0x62, 0x57,
        0xB1,
    ]);
    rec.extend_from_slice(&3u32.to_le_bytes());
    rec.extend_from_slice(b"C:\\cygwin64\\wip\\breakpad-depot\\src\\src\\tools\\windows\\dump_syms\\testdata\\dump_syms_regtest64.pdb\0");
    let id = PdbId::from_rsds(&PdbInfo::parse_rsds(&rec).unwrap());
    assert!(id.same_build(pdb.id()));
    assert_eq!(
        id.store_path(),
        "dump_syms_regtest64.pdb/72E103A85CB249078B76B2E7C06257B13/dump_syms_regtest64.pdb"
    );
}

#[test]
fn public_rvas_match_the_ground_truth() {
    let pdb = open();
    for (name, rva) in [
        ("main", 0x1010),
        ("??0C@google_breakpad@@QEAA@XZ", 0x1080),
        ("??1C@google_breakpad@@UEAA@XZ", 0x10B0),
        ("??_GC@google_breakpad@@UEAAPEAXI@Z", 0x10D0),
        ("??_EC@google_breakpad@@UEAAPEAXI@Z", 0x10D0),
        ("?f@C@google_breakpad@@QEAAXXZ", 0x1110),
        ("?g@C@google_breakpad@@UEAAHXZ", 0x1140),
        ("?h@C@google_breakpad@@SAPEADAEBV12@@Z", 0x1150),
        ("?set_member@C@google_breakpad@@QEAAXH@Z", 0x1160),
        ("mainCRTStartup", 0x1368),
        ("__security_cookie", 0x151B0),
    ] {
        assert_eq!(pdb.symbol_rva(name).unwrap(), rva, "{name}");
    }
    let err = pdb.symbol_rva("NoSuchSymbol").unwrap_err();
    assert!(matches!(err, SymbolError::SymbolNotFound { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("dump_syms_regtest64.pdb") && msg.contains("NoSuchSymbol"),
        "{msg}"
    );
    let (publics, procs) = pdb.names().unwrap().counts();
    assert!(
        publics > 900 && procs > 10,
        "{publics} publics, {procs} procedures"
    );
    assert!(pdb.names().unwrap().has_private_procedures());
}

#[test]
fn address_to_name_prefers_private_procedures_and_omits_plus_zero() {
    let pdb = open();
    // Private procedure names (S_GPROC32) are the compiler's qualified names.
    assert_eq!(
        pdb.name_at(0x1100).unwrap().unwrap(),
        "google_breakpad::C::`scalar deleting destructor'+0x30"
    );
    assert_eq!(pdb.name_at(0x1010).unwrap().unwrap(), "main");
    assert_eq!(pdb.name_at(0x1011).unwrap().unwrap(), "main+0x1");
    assert_eq!(
        pdb.name_at(0x1110).unwrap().unwrap(),
        "google_breakpad::C::f"
    );
    let mut space = AddressSpace::new();
    space.add("dump_syms_regtest64", 0x1_4000_0000, 0x1A000, Some(&pdb));
    assert_eq!(
        space.symbolize(0x1_4000_1100),
        "dump_syms_regtest64!google_breakpad::C::`scalar deleting destructor'+0x30"
    );
    assert_eq!(space.symbolize(0x1_4000_1010), "dump_syms_regtest64!main");
    assert_eq!(space.symbolize(0x1_4000_0010), "dump_syms_regtest64+0x10");
    assert_eq!(space.symbolize(0x1_4001_A000), "0x00000001`4001a000");
}

#[test]
fn rtl_critical_section_layout() {
    let pdb = open();
    assert_eq!(pdb.type_size("_RTL_CRITICAL_SECTION").unwrap(), 0x28);
    let expect = [
        ("DebugInfo", 0x00, 8),
        ("LockCount", 0x08, 4),
        ("RecursionCount", 0x0c, 4),
        ("OwningThread", 0x10, 8),
        ("LockSemaphore", 0x18, 8),
        ("SpinCount", 0x20, 8),
    ];
    let members = pdb
        .types()
        .unwrap()
        .members_of("_RTL_CRITICAL_SECTION")
        .unwrap();
    assert_eq!(
        members
            .iter()
            .map(|(n, f)| (n.as_str(), f.offset, f.size))
            .collect::<Vec<_>>(),
        expect.to_vec()
    );
    let debug_info = pdb.field("_RTL_CRITICAL_SECTION", "DebugInfo").unwrap();
    match debug_info.ty {
        TypeDesc::Pointer {
            target, size: 8, ..
        } => assert_eq!(
            *target,
            TypeDesc::Record {
                kind: RecordKind::Struct,
                name: "_RTL_CRITICAL_SECTION_DEBUG".into(),
                size: 0x30,
                qualifiers: Qualifiers::NONE,
            }
        ),
        other => panic!("{other:?}"),
    }
    // Through a pointer's record: nested path into the debug structure's own fields.
    assert_eq!(
        pdb.offset("_RTL_CRITICAL_SECTION_DEBUG", "ProcessLocksList.Blink")
            .unwrap(),
        0x18
    );
    let err = pdb
        .field("_RTL_CRITICAL_SECTION", "Nope")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dump_syms_regtest64.pdb")
            && err.contains("_RTL_CRITICAL_SECTION")
            && err.contains("Nope"),
        "{err}"
    );
    let err = pdb.type_size("_NO_SUCH_TYPE").unwrap_err().to_string();
    assert!(
        err.contains("_NO_SUCH_TYPE") && err.contains("dump_syms_regtest64.pdb"),
        "{err}"
    );
}
