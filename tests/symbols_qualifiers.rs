//! Qualified types as another compiler writes them: `captures/pdb/qualifiers/qualifiers.pdb`, built
//! by clang-cl from `qualifiers.c` (`gen.sh`), has every `LF_MODIFIER` / pointer-attribute shape that
//! Microsoft's kernel PDBs use for the Driver Verifier counters. Before qualifiers were resolved
//! first, a `volatile ULONG` had size 0 here and every counter read as 0.

use std::path::PathBuf;

use kdleak::symbols::{Bitfield, Pdb, TypeDesc};
use kdleak::verifier::layout::value;

fn open() -> Pdb {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("captures/pdb/qualifiers/qualifiers.pdb");
    Pdb::open(&path).unwrap()
}

#[test]
fn qualified_members_have_their_real_sizes_offsets_and_counts() {
    let pdb = open();
    assert_eq!(pdb.type_size("_QUALIFIED").unwrap(), 72);
    let expect = [
        ("Counter", 0, 4),
        ("Both", 4, 4),
        ("Flag", 8, 4),
        ("Other", 8, 4),
        ("Bytes", 12, 6),
        ("PointerToVolatile", 24, 8),
        ("VolatilePointer", 32, 8),
        ("Color", 40, 4),
        ("Self", 48, 8),
        ("UnalignedPointer", 56, 8),
        ("Plain", 64, 8),
    ];
    for (name, offset, size) in expect {
        let field = pdb.field("_QUALIFIED", name).unwrap();
        assert_eq!((field.offset, field.size), (offset, size), "{name}");
    }
    let flag = pdb.field("_QUALIFIED", "Other").unwrap();
    assert_eq!(
        flag.bitfield,
        Some(Bitfield {
            position: 3,
            width: 5
        })
    );
    let bytes = pdb.field("_QUALIFIED", "Bytes").unwrap();
    assert!(
        matches!(bytes.ty, TypeDesc::Array { count: 6, .. }),
        "{bytes:?}"
    );
    let plain = pdb.field("_QUALIFIED", "Plain").unwrap();
    assert!(
        matches!(plain.ty, TypeDesc::Array { count: 2, .. }),
        "{plain:?}"
    );
}

#[test]
fn a_volatile_counter_reads_its_value() {
    let pdb = open();
    let mut memory = vec![0u8; 72];
    memory[0..4].copy_from_slice(&0xau32.to_le_bytes());
    memory[4..8].copy_from_slice(&0x009c_e000u32.to_le_bytes());
    memory[8..12].copy_from_slice(&(0b1011_0101u32).to_le_bytes());
    let read = |name: &str| value(&memory, &pdb.field("_QUALIFIED", name).unwrap());
    assert_eq!(read("Counter"), Some(0xa));
    assert_eq!(read("Both"), Some(0x9c_e000));
    assert_eq!(read("Flag"), Some(0b101));
    assert_eq!(read("Other"), Some(0b10110));
}

#[test]
fn qualifiers_are_kept_for_display() {
    let pdb = open();
    let describe = |name: &str| pdb.field("_QUALIFIED", name).unwrap().ty.describe();
    assert_eq!(describe("Counter"), "volatile unsigned long");
    assert_eq!(describe("Both"), "const volatile unsigned long");
    assert_eq!(describe("Flag"), "volatile unsigned long");
    assert_eq!(describe("Bytes"), "const unsigned char[6]");
    assert_eq!(describe("PointerToVolatile"), "volatile unsigned long *");
    assert_eq!(describe("VolatilePointer"), "unsigned long *volatile");
    assert_eq!(describe("Color"), "const volatile _COLOR");
    assert_eq!(describe("Self"), "volatile _QUALIFIED *");
    assert_eq!(describe("Plain"), "volatile unsigned long[2]");
}
