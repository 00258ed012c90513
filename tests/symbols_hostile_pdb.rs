//! Hostile PDBs, as a symbol server could send them (issue 17): every one ends in an error that
//! names the file, in bounded time and memory — never a panic, an abort, a stack overflow or a
//! hang. Built with `kdleak::symbols::msf` (a minimal MSF writer), so each lie is exact.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kdleak::symbols::msf::{build, pdb_with_types, type_record};
use kdleak::symbols::{dt, Pdb, SymbolError};

const GUID: [u8; 16] = [0x11; 16];
const LF_MODIFIER: u16 = 0x1001;
const LF_POINTER: u16 = 0x1002;
const LF_ARGLIST: u16 = 0x1201;
const LF_FIELDLIST: u16 = 0x1203;
const LF_STRUCTURE: u16 = 0x1505;
const LF_MEMBER: u16 = 0x150d;
const LF_INDEX: u16 = 0x1404;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn structure(name: &str, size: u16, fields: u32, forward: bool) -> Vec<u8> {
    let mut b = 1u16.to_le_bytes().to_vec(); // member count
    b.extend(if forward { 0x80u16 } else { 0 }.to_le_bytes());
    b.extend(fields.to_le_bytes());
    b.extend([0u8; 8]); // derived, vshape
    b.extend(size.to_le_bytes());
    b.extend(name.as_bytes());
    b.push(0);
    type_record(LF_STRUCTURE, &b)
}

fn member(name: &str, ty: u32, offset: u16) -> Vec<u8> {
    let mut b = LF_MEMBER.to_le_bytes().to_vec();
    b.extend(3u16.to_le_bytes());
    b.extend(ty.to_le_bytes());
    b.extend(offset.to_le_bytes());
    b.extend(name.as_bytes());
    b.push(0);
    while b.len() % 4 != 0 {
        b.push(0xf0 | (4 - b.len() % 4) as u8);
    }
    b
}

fn continuation(to: u32) -> Vec<u8> {
    let mut b = LF_INDEX.to_le_bytes().to_vec();
    b.extend([0, 0]);
    b.extend(to.to_le_bytes());
    b
}

fn field_list(parts: &[Vec<u8>]) -> Vec<u8> {
    type_record(LF_FIELDLIST, &parts.concat())
}

/// Runs `f` on a thread with a small (256 KiB) stack, so unbounded recursion would fail the
/// test instead of passing on a big main-thread stack; and within a time limit.
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let start = Instant::now();
    let out = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .expect("no panic");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    out
}

fn names_the_file(err: &SymbolError, path: &Path) {
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
}

#[test]
fn a_valid_built_pdb_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let records = [
        field_list(&[member("a", 0x22, 0), member("b", 0x23, 8)]),
        structure("_OK", 16, 0x1000, false),
    ]
    .concat();
    let path = write(
        dir.path(),
        "ok.pdb",
        &pdb_with_types(GUID, 7, &records, None),
    );
    let pdb = Pdb::open(&path).unwrap();
    assert_eq!(pdb.id().age, 7);
    assert_eq!(pdb.offset("_OK", "b").unwrap(), 8);
    assert_eq!(pdb.type_size("_OK").unwrap(), 16);
}

#[test]
fn a_pdb_claiming_two_to_the_31_types() {
    let dir = tempfile::tempdir().unwrap();
    let records = [
        field_list(&[member("a", 0x22, 0)]),
        structure("_FEW", 4, 0x1000, false),
    ]
    .concat();
    let path = write(
        dir.path(),
        "claims.pdb",
        &pdb_with_types(GUID, 1, &records, Some(0x8000_0000)),
    );
    let p = path.clone();
    bounded(move || {
        let pdb = Pdb::open(&p).unwrap();
        // The claim sizes nothing: the two records are read, a missing type is an error.
        assert_eq!(pdb.offset("_FEW", "a").unwrap(), 0);
        let err = pdb.type_size("_MANY").unwrap_err();
        names_the_file(&err, &p);
    });
}

#[test]
fn cyclic_and_self_referencing_type_indices() {
    let dir = tempfile::tempdir().unwrap();
    let records = [
        /* 0x1000 */
        type_record(LF_MODIFIER, &[0x00, 0x10, 0, 0, 2, 0]), // volatile of itself
        /* 0x1001 */
        type_record(LF_POINTER, &[0x01, 0x10, 0, 0, 0x0c, 0x00, 0x01, 0x00]), // to itself
        /* 0x1002 */
        field_list(&[
            member("self", 0x1003, 0),
            member("m", 0x1000, 4),
            member("p", 0x1001, 8),
        ]),
        /* 0x1003 */ structure("_SELF", 16, 0x1002, false),
        /* 0x1004 */ field_list(&[member("x", 0x22, 0), continuation(0x1004)]),
        /* 0x1005 */ structure("_LOOPED", 4, 0x1004, false),
        /* 0x1006 */ field_list(&[member("y", 0x22, 0), continuation(0x1007)]),
        /* 0x1007 */ field_list(&[member("z", 0x22, 4), continuation(0x1006)]),
        /* 0x1008 */ structure("_PING_PONG", 8, 0x1006, false),
    ]
    .concat();
    let path = write(
        dir.path(),
        "cycles.pdb",
        &pdb_with_types(GUID, 1, &records, None),
    );
    let p = path.clone();
    bounded(move || {
        let pdb = Pdb::open(&p).unwrap();
        // Self-embedding and self-referencing members describe in bounded depth.
        assert_eq!(pdb.offset("_SELF", "self.self.self.m").unwrap(), 4);
        let layout = dt::layout(&pdb.types().unwrap(), "_SELF", dt::MAX_RECURSION).unwrap();
        assert_eq!(layout.members.unwrap().len(), 3);
        for ty in ["_LOOPED", "_PING_PONG"] {
            let err = pdb.offset(ty, "nothing").unwrap_err();
            names_the_file(&err, &p);
            assert!(err.to_string().contains("loop"), "{err}");
        }
    });
}

#[test]
fn nesting_ten_thousand_deep() {
    let dir = tempfile::tempdir().unwrap();
    // 10,000 anonymous structures, each the only member of the next; and 10,000 pointers, each
    // to the next.
    let n = 10_000u32;
    let mut records = Vec::new();
    for i in 0..n {
        let first = 0x1000 + 2 * i;
        let inner = if i == 0 { 0x22 } else { first - 1 };
        records.extend(field_list(&[member("", inner, 0)]));
        records.extend(structure(&format!("<unnamed-tag-{i}>"), 4, first, false));
    }
    let pointers = 0x1000 + 2 * n;
    for i in 0..n {
        let to = if i + 1 == n { 0x22 } else { pointers + i + 1 };
        let mut b = to.to_le_bytes().to_vec();
        b.extend(((8u32 << 13) | 0x0c).to_le_bytes());
        records.extend(type_record(LF_POINTER, &b));
    }
    records.extend(field_list(&[
        member("deep", 0x1000 + 2 * n - 1, 0),
        member("chain", pointers, 8),
    ]));
    records.extend(structure("_DEEP", 16, pointers + n, false));
    // One field list nesting 30,000 field-list leaves inside one record.
    let nested: Vec<u8> = std::iter::repeat_n([0x03u8, 0x12], 30_000)
        .flatten()
        .collect();
    records.extend(type_record(LF_FIELDLIST, &nested));
    let nested_index = pointers + n + 2;
    records.extend(structure("_NESTED", 4, nested_index, false));
    let path = write(
        dir.path(),
        "deep.pdb",
        &pdb_with_types(GUID, 1, &records, None),
    );
    let p = path.clone();
    bounded(move || {
        let pdb = Pdb::open(&p).unwrap();
        let err = pdb.offset("_DEEP", "nothing").unwrap_err();
        names_the_file(&err, &p);
        let chain = pdb.field("_DEEP", "chain").unwrap();
        assert!(
            chain.ty.describe().contains("<too deep>"),
            "{}",
            chain.ty.describe()
        );
        dt::layout(&pdb.types().unwrap(), "_DEEP", dt::MAX_RECURSION).unwrap();
        let err = pdb.offset("_NESTED", "x").unwrap_err();
        names_the_file(&err, &p);
        assert!(err.to_string().contains("malformed field list"), "{err}");
    });
}

#[test]
fn an_argument_list_claiming_four_billion_entries_is_never_sized() {
    let dir = tempfile::tempdir().unwrap();
    let mut arglist = u32::MAX.to_le_bytes().to_vec();
    arglist.extend(0x22u32.to_le_bytes());
    let records = [
        type_record(LF_ARGLIST, &arglist),
        field_list(&[member("a", 0x22, 0)]),
        structure("_AFTER", 4, 0x1001, false),
    ]
    .concat();
    let path = write(
        dir.path(),
        "args.pdb",
        &pdb_with_types(GUID, 1, &records, None),
    );
    bounded(move || {
        let pdb = Pdb::open(&path).unwrap();
        assert_eq!(pdb.offset("_AFTER", "a").unwrap(), 0);
    });
}

#[test]
fn a_stream_directory_pointing_past_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = build(&[Some(&[]), Some(&[0u8; 64]), Some(&[0u8; 100])]);
    // The directory is the second-to-last page; its page map the last. Make stream 2's first
    // page number point far past the end.
    let pages = file.len() / 4096;
    let directory = (pages - 2) * 4096;
    let stream2_page = directory + 4 + 3 * 4 + 4;
    file[stream2_page..stream2_page + 4].copy_from_slice(&1_000_000u32.to_le_bytes());
    let path = write(dir.path(), "past.pdb", &file);
    let err = Pdb::open(&path).unwrap_err();
    names_the_file(&err, &path);
    assert!(err.to_string().contains("outside the file"), "{err}");
    // A directory claiming 2^31 bytes.
    let mut file = build(&[Some(&[]), Some(&[0u8; 64])]);
    file[44..48].copy_from_slice(&0x8000_0000u32.to_le_bytes());
    let path = write(dir.path(), "huge-dir.pdb", &file);
    let err = Pdb::open(&path).unwrap_err();
    names_the_file(&err, &path);
    // Not a PDB at all, and a truncated one.
    let path = write(dir.path(), "text.pdb", b"<html>404</html>");
    names_the_file(&Pdb::open(&path).unwrap_err(), &path);
    let good = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/fixtures/win10-19041/leaky.pdb"),
    )
    .unwrap();
    let path = write(dir.path(), "cut.pdb", &good[..good.len() / 2]);
    names_the_file(&Pdb::open(&path).unwrap_err(), &path);
}

#[test]
fn a_panic_in_the_reader_becomes_an_error_naming_the_file() {
    let path = Path::new("/cache/evil.pdb");
    let err = kdleak::symbols::pdbfile::contain::<()>(path, "the type stream", || {
        panic!("index out of bounds")
    })
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("/cache/evil.pdb")
            && text.contains("type stream")
            && text.contains("index out of bounds"),
        "{text}"
    );
}

#[test]
fn dbi_substream_sizes_that_overflow_are_refused() {
    // Found by the pdb_parse fuzz target: pdb2 adds the DBI header's substream sizes as u32s.
    let dir = tempfile::tempdir().unwrap();
    let mut dbi = vec![0u8; 64];
    dbi[0..4].copy_from_slice(&(-1i32).to_le_bytes());
    dbi[4..8].copy_from_slice(&19990903u32.to_le_bytes());
    for at in [24, 28] {
        dbi[at..at + 4].copy_from_slice(&0x7fff_fff0i32.to_le_bytes());
    }
    let file = build(&[Some(&[]), Some(&[0u8; 64]), None, Some(&dbi)]);
    let path = write(dir.path(), "dbi.pdb", &file);
    let err = Pdb::open(&path).unwrap_err();
    names_the_file(&err, &path);
    assert!(err.to_string().contains("DBI header"), "{err}");
}

#[test]
fn pointer_attributes_pdb2_does_not_know_are_an_error_not_a_panic() {
    // Found by the pdb_parse fuzz target: pdb2 0.11 panics (`unreachable!`, release build too)
    // on a pointer mode above 4 or a pointer kind above 0x0c.
    let dir = tempfile::tempdir().unwrap();
    for attr in [(5u32 << 5) | 0x0c, 0x1f, (8 << 13) | (7 << 5) | 0x0c] {
        let mut pointer = 0x22u32.to_le_bytes().to_vec();
        pointer.extend(attr.to_le_bytes());
        let records = [
            type_record(LF_POINTER, &pointer),
            field_list(&[member("p", 0x1000, 0), member("q", 0x22, 8)]),
            structure("_P", 16, 0x1001, false),
        ]
        .concat();
        let path = write(
            dir.path(),
            "pointer.pdb",
            &pdb_with_types(GUID, 1, &records, None),
        );
        let pdb = Pdb::open(&path).unwrap();
        assert_eq!(pdb.offset("_P", "q").unwrap(), 8);
        let p = pdb.field("_P", "p").unwrap();
        assert_eq!(p.size, 0, "{attr:#x}: {p:?}");
    }
}
