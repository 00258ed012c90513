//! kdleak's symbols layer against an independent PDB reader, LLVM's `llvm-pdbutil-14`, on every
//! PDB under `captures/` (found at run time: a PDB dropped there is checked too). Or, with
//! `KDLEAK_PDB_DIFF` set to PDB paths (one a line; `scripts/pdb_diff.sh` does that), on those.
//!
//! Compared, per PDB:
//! * every structure/class/union **definition** (named or anonymous, by type index): name, kind
//!   (union or not), sizeof, and its data members in order — name, offset, bitfield position and
//!   width, and the member's type: kind, name, size, pointer and array shape, const/volatile/
//!   unaligned qualifiers where they stand (pointee or pointer, elements of arrays);
//! * every **named** record's lookup by name (what `kdleak types` and the pull use): kdleak picks the
//!   first definition in the type stream. A name defined more than once (every
//!   `_KPRCB::<unnamed-tag>`, or one type in two translation units) is counted; its other
//!   definitions are still compared by index, and anonymous names are not looked up;
//! * every **forward reference**: it resolves to a definition of the same name and kind, with the
//!   layout of the one llvm-pdbutil finds through the TPI hash;
//! * every **public** (`S_PUB32`): kdleak's RVA for the name equals the section's virtual address
//!   plus the offset llvm-pdbutil prints (decimal).
//!
//! Not compared: records LLVM 14 cannot decode (the `LF_STRUCTURE2` family of recent MSVC, printed
//! `UNKNOWN RECORD`; counted and reported), base classes, vtable pointers, static members and methods (kdleak lays out C
//! kernel structures, which have none; records that have them are counted), member pointers.

mod pdbutil;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kdleak::symbols::{Pdb, Qualifiers, RecordKind, TypeDesc, TypeTable};
use pdbutil::{ForwardTarget, Kind, Record, Shape, Types};

/// Mismatches printed per PDB before the rest are only counted.
const SHOWN: usize = 25;

#[derive(Default)]
struct Report {
    definitions: usize,
    members: usize,
    named_lookups: usize,
    names_defined_more_than_once: usize,
    forward_references: usize,
    publics: usize,
    with_bases: usize,
    /// Members whose type llvm-pdbutil cannot decode (an `LF_STRUCTURE2`…): name, offset and
    /// bits compared, the type not.
    types_unchecked: usize,
    notes: Vec<String>,
    mismatches: Vec<String>,
}

impl Report {
    fn mismatch(&mut self, what: String) {
        self.mismatches.push(what);
    }
}

fn qualifier_words(q: Qualifiers) -> Vec<&'static str> {
    let mut words = Vec::new();
    if q.constant {
        words.push("const");
    }
    if q.unaligned {
        words.push("unaligned");
    }
    if q.volatile {
        words.push("volatile");
    }
    words
}

/// kdleak's type description in the comparison's terms.
fn shape(ty: &TypeDesc) -> Shape {
    match ty {
        TypeDesc::Base {
            name,
            size,
            qualifiers,
        } => Shape::Base {
            name: name.clone(),
            size: *size,
            qualifiers: qualifier_words(*qualifiers),
        },
        TypeDesc::Record {
            kind,
            name,
            size,
            qualifiers,
        } => Shape::Record {
            union: *kind == RecordKind::Union,
            name: name.clone(),
            size: *size,
            qualifiers: qualifier_words(*qualifiers),
        },
        TypeDesc::Pointer {
            target,
            size,
            qualifiers,
        } => Shape::Pointer {
            target: Box::new(shape(target)),
            size: *size,
            qualifiers: qualifier_words(*qualifiers),
        },
        TypeDesc::Array {
            element,
            count,
            size,
        } => Shape::Array {
            element: Box::new(shape(element)),
            count: *count,
            size: *size,
        },
        TypeDesc::Function { returns } => Shape::Function {
            returns: Box::new(shape(returns)),
        },
    }
}

/// Compares the definition at `index` (llvm's record `expected`) with kdleak's.
fn compare_definition(
    llvm: &Types,
    table: &TypeTable,
    index: u32,
    expected: &Record,
    report: &mut Report,
) {
    let Record::Udt {
        kind,
        name,
        size,
        field_list,
        ..
    } = expected
    else {
        return;
    };
    report.definitions += 1;
    let Some(ours) = table.record(index) else {
        report.mismatch(format!("{index:#x} `{name}`: kdleak has no record there"));
        return;
    };
    let union = *kind == Kind::Union;
    if ours.name != *name
        || (ours.kind == RecordKind::Union) != union
        || ours.size != *size
        || ours.forward
    {
        report.mismatch(format!(
            "{index:#x} `{name}`: llvm-pdbutil: {} of {size} bytes; kdleak: `{}` {:?} of {} bytes{}",
            if union { "union" } else { "struct" },
            ours.name,
            ours.kind,
            ours.size,
            if ours.forward {
                ", a forward reference"
            } else {
                ""
            }
        ));
    }
    let (members, bases) = llvm.members(*field_list);
    if bases > 0 {
        report.with_bases += 1;
    }
    let theirs = match table.members_at(index) {
        Ok(m) => m,
        Err(e) => {
            report.mismatch(format!(
                "{index:#x} `{name}`: kdleak cannot list members: {e}"
            ));
            return;
        }
    };
    if theirs.len() != members.len() {
        report.mismatch(format!(
            "{index:#x} `{name}`: llvm-pdbutil has {} members ({}), kdleak {} ({})",
            members.len(),
            members
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            theirs.len(),
            theirs
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return;
    }
    for (member, ours) in members.iter().zip(&theirs) {
        report.members += 1;
        let (expected_shape, bits) = llvm.member_shape(member.ty);
        let ours_bits = ours.field.bitfield.map(|b| (b.position, b.width));
        let ours_shape = shape(&ours.field.ty);
        let at = format!("{index:#x} `{name}`.{}", member.name);
        if ours.name != member.name {
            report.mismatch(format!("{at}: kdleak names this member `{}`", ours.name));
        }
        if ours.field.offset != member.offset {
            report.mismatch(format!(
                "{at}: offset {:#x} (llvm-pdbutil), {:#x} (kdleak)",
                member.offset, ours.field.offset
            ));
        }
        if ours_bits != bits {
            report.mismatch(format!(
                "{at}: bits {bits:?} (llvm-pdbutil, position/width), {ours_bits:?} (kdleak)"
            ));
        }
        if expected_shape.undecodable() {
            report.types_unchecked += 1;
        } else if ours_shape != expected_shape {
            report.mismatch(format!(
                "{at}: type {expected_shape} (llvm-pdbutil), {ours_shape} (kdleak: `{}`)",
                ours.field.ty.describe()
            ));
        } else if ours.field.size != expected_shape.size() {
            report.mismatch(format!(
                "{at}: size {} (llvm-pdbutil), {} (kdleak)",
                expected_shape.size(),
                ours.field.size
            ));
        }
    }
}

/// Same size and the same member names, offsets and bits: two definitions one layout.
fn same_layout(table: &TypeTable, a: u32, b: u32) -> bool {
    let key = |i: u32| {
        let size = table.record(i).map(|r| r.size);
        let members: Option<Vec<_>> = table.members_at(i).ok().map(|m| {
            m.into_iter()
                .map(|m| (m.name, m.field.offset, m.field.bitfield, m.field.size))
                .collect()
        });
        (size, members)
    };
    key(a) == key(b)
}

fn compare_forward(llvm: &Types, table: &TypeTable, index: u32, report: &mut Report) {
    let Some(Record::Udt {
        kind,
        name,
        forward,
        ..
    }) = llvm.records.get(&index)
    else {
        return;
    };
    report.forward_references += 1;
    let at = format!("forward reference {index:#x} `{name}`");
    match table.record(index) {
        Some(r) if r.forward && r.name == *name => {}
        other => {
            report.mismatch(format!("{at}: kdleak reads {other:?}"));
            return;
        }
    }
    let expected = llvm.definition_of(index);
    let ours = table.definition(index);
    match (expected, ours) {
        (None, None) => {}
        (None, Some(d)) => report.mismatch(format!(
            "{at}: llvm-pdbutil finds no definition ({forward:?}); kdleak resolves it to {d:#x}"
        )),
        (Some(e), None) => report.mismatch(format!(
            "{at}: llvm-pdbutil resolves it to {e:#x}; kdleak finds no definition"
        )),
        (Some(e), Some(d)) => {
            let def = table.record(d);
            let kind_ok = def
                .as_ref()
                .is_some_and(|r| (r.kind == RecordKind::Union) == (*kind == Kind::Union));
            if def.as_ref().map(|r| r.name.as_str()) != Some(name.as_str()) || !kind_ok {
                report.mismatch(format!("{at}: kdleak resolves it to {def:?}"));
            } else if e != d && !same_layout(table, e, d) {
                report.mismatch(format!(
                    "{at}: llvm-pdbutil resolves it to {e:#x}, kdleak to {d:#x}, a different \
                     definition of the same name with another layout"
                ));
            }
        }
    }
}

fn compare_publics(pdb: &Path, tool: &str, kd: &Pdb, report: &mut Report) -> Result<(), String> {
    let publics = pdbutil::parse_publics(&pdbutil::dump(tool, &["-publics"], pdb)?);
    let Some(sections) = pdbutil::parse_sections(&pdbutil::dump(tool, &["-section-headers"], pdb)?)
    else {
        report.notes.push(format!(
            "{} publics not compared: the PDB has original (OMAP) section headers",
            publics.len()
        ));
        return Ok(());
    };
    let names = kd.names().map_err(|e| e.to_string())?;
    // A name listed twice keeps every address it was listed with.
    let mut expected: HashMap<&str, Vec<Option<u32>>> = HashMap::new();
    for public in &publics {
        let rva = (public.section as usize)
            .checked_sub(1)
            .and_then(|i| sections.get(i))
            .map(|va| va + public.offset);
        expected.entry(&public.name).or_default().push(rva);
    }
    for public in &publics {
        report.publics += 1;
        let ours = names.rva_of(&public.name);
        let wanted = &expected[public.name.as_str()];
        if !wanted.contains(&ours) {
            report.mismatch(format!(
                "public `{}` ({:04}:{}): RVA {} (llvm-pdbutil + section headers), {} (kdleak)",
                public.name,
                public.section,
                public.offset,
                wanted
                    .iter()
                    .map(|r| r.map_or("none".into(), |r| format!("{r:#x}")))
                    .collect::<Vec<_>>()
                    .join(" or "),
                ours.map_or("none".into(), |r| format!("{r:#x}"))
            ));
        }
    }
    Ok(())
}

fn compare(pdb: &Path, tool: &str) -> Result<Report, String> {
    let llvm = pdbutil::parse_types(&pdbutil::dump(tool, &["-types"], pdb)?);
    let kd = Pdb::open(pdb).map_err(|e| format!("kdleak cannot open it: {e}"))?;
    let table = kd
        .types()
        .map_err(|e| format!("kdleak cannot read its types: {e}"))?;
    let mut report = Report::default();
    let mut definitions_by_name: HashMap<&str, Vec<u32>> = HashMap::new();
    for (index, record) in llvm.udts() {
        let Record::Udt { name, forward, .. } = record else {
            continue;
        };
        if *forward == ForwardTarget::None {
            compare_definition(&llvm, &table, index, record, &mut report);
            definitions_by_name.entry(name).or_default().push(index);
        } else {
            compare_forward(&llvm, &table, index, &mut report);
        }
    }
    // Records llvm-pdbutil 14 cannot decode (recent MSVC's LF_STRUCTURE2…) are kdleak's alone.
    let undecodable = table
        .records()
        .filter(|r| llvm.is_undecodable(r.index))
        .count();
    if undecodable > 0 {
        report.notes.push(format!(
            "{undecodable} structure/union records llvm-pdbutil cannot decode (LF_CLASS2, \
             LF_STRUCTURE2, LF_UNION2, LF_INTERFACE2?): not compared"
        ));
    }
    let ours_count = table.records().count() - undecodable;
    let llvm_count = llvm.udts().count();
    if ours_count != llvm_count {
        report.mismatch(format!(
            "kdleak lists {ours_count} structure/union records, llvm-pdbutil {llvm_count}"
        ));
    }
    let mut names: Vec<(&str, &Vec<u32>)> = definitions_by_name
        .iter()
        .map(|(name, defs)| (*name, defs))
        .filter(|(name, _)| !kdleak::symbols::types::is_anonymous_name(name))
        .collect();
    names.sort_unstable();
    for (name, defs) in names {
        report.named_lookups += 1;
        if defs.len() > 1 {
            report.names_defined_more_than_once += 1;
        }
        match table.find(name) {
            Ok(found) if found == defs[0] => {}
            // kdleak's first definition is one llvm-pdbutil cannot see
            Ok(found) if llvm.is_undecodable(found) && found < defs[0] => {}
            Ok(found) if table.record(found).is_none() => {} // an enum of the same name wins
            other => report.mismatch(format!(
                "lookup of `{name}`: first definition {:#x} (llvm-pdbutil), kdleak {other:?}",
                defs[0]
            )),
        }
    }
    compare_publics(pdb, tool, &kd, &mut report)?;
    Ok(report)
}

fn pdbs() -> Vec<PathBuf> {
    if let Ok(list) = std::env::var("KDLEAK_PDB_DIFF") {
        return list
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(PathBuf::from)
            .collect();
    }
    let mut found = Vec::new();
    let mut dirs = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("captures")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(path);
            } else if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("pdb"))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn every_pdb_reads_the_same_in_kdleak_and_llvm_pdbutil() {
    let tool = pdbutil::tool();
    let pdbs = pdbs();
    assert!(!pdbs.is_empty(), "no PDB to compare");
    let mut failed = Vec::new();
    let mut totals = [0usize; 5];
    for pdb in &pdbs {
        let shown = pdb
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(pdb)
            .display()
            .to_string();
        match compare(pdb, &tool) {
            Ok(r) => {
                println!(
                    "{shown}: {} definitions ({} records with base classes or vtables), {} members, \
                     {} named lookups ({} names defined more than once), {} forward references, \
                     {} publics compared: {} mismatches",
                    r.definitions,
                    r.with_bases,
                    r.members,
                    r.named_lookups,
                    r.names_defined_more_than_once,
                    r.forward_references,
                    r.publics,
                    r.mismatches.len()
                );
                if r.types_unchecked > 0 {
                    println!(
                        "  note: {} member types not compared: llvm-pdbutil cannot decode them",
                        r.types_unchecked
                    );
                }
                for note in &r.notes {
                    println!("  note: {note}");
                }
                for m in r.mismatches.iter().take(SHOWN) {
                    println!("  MISMATCH {m}");
                }
                if r.mismatches.len() > SHOWN {
                    println!("  … and {} more", r.mismatches.len() - SHOWN);
                }
                for (total, n) in totals.iter_mut().zip([
                    r.definitions,
                    r.members,
                    r.forward_references,
                    r.publics,
                    r.mismatches.len(),
                ]) {
                    *total += n;
                }
                if !r.mismatches.is_empty() {
                    failed.push(shown);
                }
            }
            Err(e) => {
                println!("{shown}: cannot compare: {e}");
                failed.push(shown);
            }
        }
    }
    println!(
        "total over {} PDBs: {} definitions, {} members, {} forward references, {} publics \
         compared; {} mismatches",
        pdbs.len(),
        totals[0],
        totals[1],
        totals[2],
        totals[3],
        totals[4]
    );
    assert!(
        failed.is_empty(),
        "kdleak and llvm-pdbutil disagree on {} (details above)",
        failed.join(", ")
    );
}
