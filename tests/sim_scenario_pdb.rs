//! Cross-check of the scenario layout against the fixture PDBs: every (type, dotted path) the
//! layout wrote (from the build's ISF, `Scenario::build_with_log`) must have the same offset, size
//! and bit position/length in the fixture's generated `ntkrnlmp.pdb`, read with the independent
//! `pdb` crate (TPI only: full LF_STRUCTURE/LF_UNION records by name, field lists, LF_BITFIELD,
//! LF_ARRAY). Top-level type sizes must agree too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;

use kdleak::sim::world::isf::{FieldUse, Isf};
use kdleak::sim::world::scenario::{self, Scenario};
use pdb::{FallibleIterator, PrimitiveKind, TypeData, TypeFinder, TypeIndex};

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What the PDB says about one dotted path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PdbField {
    offset: u64,
    size: u64,
    /// (bit position, bit length) for LF_BITFIELD members.
    bits: Option<(u32, u32)>,
}

struct PdbTypes<'t> {
    finder: TypeFinder<'t>,
    /// Name → index of the full (non-forward-reference) class/union record.
    full: HashMap<String, TypeIndex>,
    /// Names with more than one distinct full record (ambiguous; reported if used).
    dup: BTreeSet<String>,
}

impl<'t> PdbTypes<'t> {
    fn new<'s>(ti: &'t pdb::TypeInformation<'s>) -> Self {
        let mut finder = ti.finder();
        let mut full = HashMap::new();
        let mut dup = BTreeSet::new();
        let mut it = ti.iter();
        while let Some(item) = it.next().expect("TPI record") {
            finder.update(&it);
            let (name, fwd) = match item.parse() {
                Ok(TypeData::Class(c)) => (
                    c.name.to_string().into_owned(),
                    c.properties.forward_reference(),
                ),
                Ok(TypeData::Union(u)) => (
                    u.name.to_string().into_owned(),
                    u.properties.forward_reference(),
                ),
                _ => continue,
            };
            if fwd {
                continue;
            }
            if full.insert(name.clone(), item.index()).is_some() {
                dup.insert(name);
            }
        }
        PdbTypes { finder, full, dup }
    }

    fn parse(&self, idx: TypeIndex) -> TypeData<'t> {
        self.finder
            .find(idx)
            .unwrap_or_else(|e| panic!("type {idx}: {e}"))
            .parse()
            .unwrap_or_else(|e| panic!("type {idx}: {e}"))
    }

    /// Follows modifiers and forward references (by name) to the defining record.
    fn resolve(&self, idx: TypeIndex) -> (TypeIndex, TypeData<'t>) {
        let mut idx = idx;
        loop {
            let d = self.parse(idx);
            let fwd_name = match &d {
                TypeData::Modifier(m) => {
                    idx = m.underlying_type;
                    continue;
                }
                TypeData::Class(c) if c.properties.forward_reference() => c.name.to_string(),
                TypeData::Union(u) if u.properties.forward_reference() => u.name.to_string(),
                _ => return (idx, d),
            };
            idx = *self
                .full
                .get(fwd_name.as_ref())
                .unwrap_or_else(|| panic!("no full record for forward ref `{fwd_name}`"));
        }
    }

    fn size_of(&self, idx: TypeIndex) -> u64 {
        match self.resolve(idx).1 {
            TypeData::Primitive(p) => {
                if p.indirection.is_some() {
                    return 8;
                }
                use PrimitiveKind::*;
                match p.kind {
                    Char | UChar | RChar | I8 | U8 | Bool8 => 1,
                    WChar | RChar16 | Short | UShort | I16 | U16 | F16 | Bool16 => 2,
                    RChar32 | Long | ULong | I32 | U32 | F32 | F32PP | Bool32 | HRESULT => 4,
                    Quad | UQuad | I64 | U64 | F64 | Bool64 | Complex32 => 8,
                    Octa | UOcta | I128 | U128 | F128 | Complex64 => 16,
                    k => panic!("primitive {k:?} has no size here"),
                }
            }
            TypeData::Pointer(p) => match p.attributes.size() {
                0 => 8,
                n => n as u64,
            },
            TypeData::Class(c) => c.size,
            TypeData::Union(u) => u.size,
            TypeData::Enumeration(e) => self.size_of(e.underlying_type),
            TypeData::Array(a) => *a.dimensions.last().expect("array dimension") as u64,
            TypeData::Bitfield(b) => self.size_of(b.underlying_type),
            TypeData::Procedure(_) => panic!("size of a function type"),
            other => panic!("size of {other:?}"),
        }
    }

    /// All members of a class/union (field list with continuations).
    fn members(&self, idx: TypeIndex) -> Vec<(String, u64, TypeIndex)> {
        let (_, d) = self.resolve(idx);
        let fields = match d {
            TypeData::Class(c) => c.fields,
            TypeData::Union(u) => Some(u.fields),
            other => panic!("member lookup in non-record {other:?}"),
        };
        let mut out = vec![];
        let mut next = fields;
        while let Some(fl) = next {
            match self.parse(fl) {
                TypeData::FieldList(l) => {
                    for f in &l.fields {
                        if let TypeData::Member(m) = f {
                            out.push((m.name.to_string().into_owned(), m.offset, m.field_type));
                        }
                    }
                    next = l.continuation;
                }
                other => panic!("field list expected, got {other:?}"),
            }
        }
        out
    }

    fn type_size(&self, name: &str) -> Option<u64> {
        let idx = *self.full.get(name)?;
        Some(self.size_of(idx))
    }

    /// Resolves `a.b[3].c` in type `ty` (no pointer dereferences: offsets add up).
    fn field(&self, ty: &str, path: &str) -> Result<PdbField, String> {
        if self.dup.contains(ty) {
            return Err(format!("`{ty}` has several full records"));
        }
        let mut cur = *self
            .full
            .get(ty)
            .ok_or_else(|| format!("no full record `{ty}`"))?;
        let mut offset = 0u64;
        let mut bits = None;
        for comp in path.split('.') {
            if bits.is_some() {
                return Err(format!("{ty}.{path}: member of a bitfield"));
            }
            let (name, rest) = comp.split_at(comp.find('[').unwrap_or(comp.len()));
            let members = self.members(cur);
            let mut hits = members.iter().filter(|(n, _, _)| n == name);
            let (_, off, fty) = hits
                .next()
                .ok_or_else(|| format!("{ty}.{path}: no member `{name}`"))?;
            if hits.next().is_some() {
                return Err(format!("{ty}.{path}: member `{name}` is ambiguous"));
            }
            offset += off;
            cur = *fty;
            if let TypeData::Bitfield(b) = self.resolve(cur).1 {
                bits = Some((b.position as u32, b.length as u32));
                cur = b.underlying_type;
            }
            let mut rest = rest;
            while let Some(r) = rest.strip_prefix('[') {
                let (n, tail) = r
                    .split_once(']')
                    .ok_or_else(|| format!("bad index in `{path}`"))?;
                let n: u64 = n.parse().map_err(|_| format!("bad index in `{path}`"))?;
                let TypeData::Array(a) = self.resolve(cur).1 else {
                    return Err(format!("{ty}.{path}: `{name}` is not an array"));
                };
                let esz = self.size_of(a.element_type);
                let total = *a.dimensions.last().unwrap() as u64;
                if (n + 1) * esz > total {
                    return Err(format!("{ty}.{path}: index {n} out of bounds"));
                }
                offset += n * esz;
                cur = a.element_type;
                rest = tail;
            }
        }
        Ok(PdbField {
            offset,
            size: self.size_of(cur),
            bits,
        })
    }
}

/// The comparison used for every field use: `Err` describes the first disagreement.
fn compare(pdb: &PdbTypes, u: &FieldUse) -> Result<(), String> {
    let p = pdb.field(&u.ty, &u.path)?;
    let isf = PdbField {
        offset: u.offset,
        size: u.size,
        bits: u.bits,
    };
    if p != isf {
        return Err(format!("{}.{}: ISF {isf:?} vs PDB {p:?}", u.ty, u.path));
    }
    Ok(())
}

fn fixture_for(sc: &Scenario) -> std::path::PathBuf {
    root().join(&sc.kernel.fixture).join("ntkrnlmp.pdb")
}

struct Checked {
    fields: usize,
    types: usize,
}

fn check(sc: &Scenario) -> Checked {
    let (_img, log) = sc.build_with_log().unwrap();
    let isf_path = sc.build_in(root()).unwrap().isf_path;
    let isf = Isf::load_cached(&isf_path).unwrap();
    let file = File::open(fixture_for(sc)).unwrap();
    let mut pdb = pdb::PDB::open(file).unwrap();
    let ti = pdb.type_information().unwrap();
    let types = PdbTypes::new(&ti);

    let mut unique: BTreeMap<(String, String), &FieldUse> = BTreeMap::new();
    for u in &log {
        unique.entry((u.ty.clone(), u.path.clone())).or_insert(u);
    }
    let mut errors = vec![];
    let mut tops = BTreeSet::new();
    for u in unique.values() {
        tops.insert(u.ty.clone());
        if let Err(e) = compare(&types, u) {
            errors.push(e);
        }
    }
    for t in &tops {
        let want = isf.type_size(t).unwrap();
        match types.type_size(t) {
            Some(got) if got == want => {}
            got => errors.push(format!("sizeof {t}: ISF {want:#x} vs PDB {got:x?}")),
        }
    }
    assert!(
        errors.is_empty(),
        "{}: {} mismatches:\n{}",
        sc.name,
        errors.len(),
        errors.join("\n")
    );
    Checked {
        fields: unique.len(),
        types: tops.len(),
    }
}

#[test]
fn builtin_field_uses_match_fixture_pdb() {
    for name in scenario::BUILTIN {
        let sc = Scenario::builtin(name).unwrap();
        let c = check(&sc);
        eprintln!(
            "{name}: {} unique fields in {} types agree with ntkrnlmp.pdb",
            c.fields, c.types
        );
        assert!(c.fields > 50, "{name}: only {} fields", c.fields);
    }
}

/// The same comparison must fail for wrong offsets, sizes, bit positions and unknown paths, and
/// anonymous ISF types must be real named records in the generated PDB.
#[test]
fn pdb_comparison_detects_mismatches() {
    let sc = Scenario::builtin("win10-myfault").unwrap();
    let (_img, log) = sc.build_with_log().unwrap();
    let mut pdb = pdb::PDB::open(File::open(fixture_for(&sc)).unwrap()).unwrap();
    let ti = pdb.type_information().unwrap();
    let types = PdbTypes::new(&ti);

    let plain = log
        .iter()
        .find(|u| u.bits.is_none() && u.path.contains('.'))
        .expect("nested field");
    compare(&types, plain).unwrap();
    let mut bad = plain.clone();
    bad.offset += 8;
    let e = compare(&types, &bad).unwrap_err();
    assert!(e.contains(&plain.path), "{e}");
    let mut bad = plain.clone();
    bad.size *= 2;
    assert!(compare(&types, &bad).is_err());

    let bit = log
        .iter()
        .find(|u| u.bits.is_some())
        .expect("a bitfield use");
    compare(&types, bit).unwrap();
    let mut bad = bit.clone();
    let (pos, len) = bad.bits.unwrap();
    bad.bits = Some((pos + 1, len));
    assert!(compare(&types, &bad).is_err());
    let mut bad = bit.clone();
    bad.bits = None;
    assert!(compare(&types, &bad).is_err());

    let arr = log
        .iter()
        .find(|u| u.path.ends_with(']'))
        .expect("an array element use");
    compare(&types, arr).unwrap();
    let mut bad = arr.clone();
    bad.path = arr.path.replace("[", "[1").to_string();
    assert!(compare(&types, &bad).is_err(), "{}", bad.path);

    let mut bad = plain.clone();
    bad.path.push_str("Nope");
    assert!(compare(&types, &bad).unwrap_err().contains("no member"));

    // A known layout (independent of the ISF code): _VF_POOL_TRACE on 19041.
    let sa = types.field("_VF_POOL_TRACE", "StackTrace[12]").unwrap();
    assert_eq!((sa.offset, sa.size, sa.bits), (0x18 + 12 * 8, 8, None));
    assert_eq!(types.type_size("_VF_POOL_TRACE"), Some(0x80));
    assert!(types.field("_VF_POOL_TRACE", "StackTrace[13]").is_err());

    // Anonymous ISF types are named records in the PDB (captures/gen/README.md).
    let isf = Isf::load_cached(sc.build_in(root()).unwrap().isf_path).unwrap();
    let anon: Vec<&String> = types
        .full
        .keys()
        // `X::<unnamed-tag>` are clang's names for the generator's own anonymous lanes.
        .filter(|n| {
            (n.starts_with("__anonymous_") || n.starts_with("__unnamed_")) && !n.contains("::")
        })
        .collect();
    assert!(anon.len() > 10, "only {} __anonymous_ records", anon.len());
    for n in &anon {
        assert_eq!(types.type_size(n), Some(isf.type_size(n).unwrap()), "{n}");
    }
}

/// Dotted paths that cross an anonymous ISF type are followed through the PDB's named record.
#[test]
fn dotted_paths_cross_anonymous_records() {
    let sc = Scenario::builtin("win10-myfault").unwrap();
    let mut pdb = pdb::PDB::open(File::open(fixture_for(&sc)).unwrap()).unwrap();
    let ti = pdb.type_information().unwrap();
    let types = PdbTypes::new(&ti);
    let (_, _, u1) = types
        .members(types.full["_VF_AVL_TREE"])
        .into_iter()
        .find(|(n, _, _)| n == "u1")
        .expect("_VF_AVL_TREE.u1");
    let name = match types.resolve(u1).1 {
        TypeData::Class(c) => c.name.to_string().into_owned(),
        TypeData::Union(u) => u.name.to_string().into_owned(),
        other => panic!("u1 is {other:?}"),
    };
    assert!(name.starts_with("__anonymous_"), "{name}");
    let f = types.field("_VF_AVL_TREE", "u1.NodeSize").unwrap();
    assert_eq!(f.offset, 0x20);
}

/// Generated scenarios (several drivers, churn, special pool, paged blocks) on every fixture
/// build write only fields the PDB agrees with.
#[test]
fn generated_field_uses_match_fixture_pdb() {
    for build in [7601, 19041, 22000] {
        let sc = Scenario::from_name(&format!(
            "gen:build={build},drivers=3,allocs=200,log=0.1,ring=0x400,seed=5"
        ))
        .unwrap();
        let c = check(&sc);
        assert!(c.fields > 50, "{build}: {} fields", c.fields);
    }
}
