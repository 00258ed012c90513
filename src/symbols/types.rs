//! Structure layouts by name from a PDB's type stream (TPI): offset, size, bitfield position and
//! width, array element type and count, pointers — through nested and anonymous members.
//!
//! The TPI is read once, on first use, into an owned table ([`TypeTable`]); forward references
//! (size 0, no field list — every named record appears once as one) resolve by name to the
//! definition. Microsoft's PDBs flatten anonymous unions/structures into the parent's field list,
//! so `_SLIST_HEADER.Alignment` is a direct member; a PDB that keeps them as members of an
//! anonymous type (`<anonymous-tag>`, `<unnamed-tag>`, or the ISF-style `__anonymous_*` /
//! `__unnamed_*` names) is searched through them as well when the direct lookup fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pdb2::{FallibleIterator, TypeData};

use super::error::{Result, SymbolError};

/// Structure, class or union.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Struct,
    Union,
}

/// A field's bit range inside its storage unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bitfield {
    pub position: u8,
    pub width: u8,
}

/// CodeView type qualifiers: an `LF_MODIFIER` record's, or a pointer's own attributes.
///
/// They never change a layout — a `volatile ULONG` is laid out and read as a `ULONG` — so type
/// classification looks through them; they are kept only to be displayed (Microsoft's kernel PDBs
/// declare the Driver Verifier counters `volatile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Qualifiers {
    pub constant: bool,
    pub volatile: bool,
    pub unaligned: bool,
}

impl Qualifiers {
    pub const NONE: Qualifiers = Qualifiers {
        constant: false,
        volatile: false,
        unaligned: false,
    };

    pub fn is_empty(self) -> bool {
        self == Self::NONE
    }

    /// Both sets together (a chain of modifiers qualifies with all of them).
    pub fn union(self, other: Qualifiers) -> Qualifiers {
        Qualifiers {
            constant: self.constant || other.constant,
            volatile: self.volatile || other.volatile,
            unaligned: self.unaligned || other.unaligned,
        }
    }

    /// `const volatile __unaligned`, in the order MSVC prints them; empty when none.
    pub fn words(self) -> String {
        let words: Vec<&str> = [
            (self.constant, "const"),
            (self.volatile, "volatile"),
            (self.unaligned, "__unaligned"),
        ]
        .into_iter()
        .filter_map(|(on, word)| on.then_some(word))
        .collect();
        words.join(" ")
    }
}

/// A type as far as layout code needs it. Qualifiers are resolved before a type is classified:
/// a `volatile ULONG` is a `Base` whose `qualifiers` say volatile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeDesc {
    /// A primitive (`unsigned long`, `void`, `wchar_t`, ...), or an enum.
    Base {
        name: String,
        size: u64,
        qualifiers: Qualifiers,
    },
    Record {
        kind: RecordKind,
        name: String,
        size: u64,
        qualifiers: Qualifiers,
    },
    /// `qualifiers` are the pointer's own (`ULONG *volatile`); the pointee's are in `target`.
    Pointer {
        target: Box<TypeDesc>,
        size: u64,
        qualifiers: Qualifiers,
    },
    /// An array's qualifiers are its elements'; they live in `element`.
    Array {
        element: Box<TypeDesc>,
        count: u64,
        size: u64,
    },
    /// A function type (what a function pointer points to); `returns` is its return type.
    Function { returns: Box<TypeDesc> },
}

impl TypeDesc {
    pub fn size(&self) -> u64 {
        match self {
            TypeDesc::Base { size, .. }
            | TypeDesc::Record { size, .. }
            | TypeDesc::Pointer { size, .. }
            | TypeDesc::Array { size, .. } => *size,
            TypeDesc::Function { .. } => 0,
        }
    }

    /// The qualifiers of this type itself (for an array: of its elements).
    pub fn qualifiers(&self) -> Qualifiers {
        match self {
            TypeDesc::Base { qualifiers, .. }
            | TypeDesc::Record { qualifiers, .. }
            | TypeDesc::Pointer { qualifiers, .. } => *qualifiers,
            TypeDesc::Array { element, .. } => element.qualifiers(),
            TypeDesc::Function { .. } => Qualifiers::NONE,
        }
    }

    fn with_qualifiers(self, more: Qualifiers) -> TypeDesc {
        if more.is_empty() {
            return self;
        }
        match self {
            TypeDesc::Base {
                name,
                size,
                qualifiers,
            } => TypeDesc::Base {
                name,
                size,
                qualifiers: qualifiers.union(more),
            },
            TypeDesc::Record {
                kind,
                name,
                size,
                qualifiers,
            } => TypeDesc::Record {
                kind,
                name,
                size,
                qualifiers: qualifiers.union(more),
            },
            TypeDesc::Pointer {
                target,
                size,
                qualifiers,
            } => TypeDesc::Pointer {
                target,
                size,
                qualifiers: qualifiers.union(more),
            },
            // A qualified array type qualifies its elements (C11 6.7.3p9).
            TypeDesc::Array {
                element,
                count,
                size,
            } => TypeDesc::Array {
                element: Box::new(element.with_qualifiers(more)),
                count,
                size,
            },
            function @ TypeDesc::Function { .. } => function,
        }
    }

    /// The type as C writes it, qualifiers kept: `volatile unsigned long`,
    /// `unsigned long *volatile`, `const unsigned char[6]`, `unsigned char[2][3]`,
    /// `unsigned char (*)[6]`, `long (*)()`.
    pub fn describe(&self) -> String {
        self.declare(String::new())
    }

    /// C's inside-out declarator syntax: `inner` is what has been declared around this type so
    /// far (`*`, `[3]`, `(*)`), without a name.
    fn declare(&self, inner: String) -> String {
        let joined = |left: String, inner: &str| match inner {
            "" => left,
            i if i.starts_with('[') => left + i,
            i => format!("{left} {i}"),
        };
        match self {
            TypeDesc::Base {
                name, qualifiers, ..
            }
            | TypeDesc::Record {
                name, qualifiers, ..
            } => {
                let left = match qualifiers.words() {
                    w if w.is_empty() => name.clone(),
                    w => format!("{w} {name}"),
                };
                joined(left, &inner)
            }
            TypeDesc::Pointer {
                target, qualifiers, ..
            } => {
                let mut star = format!("*{}", qualifiers.words());
                if !inner.is_empty() {
                    if !qualifiers.is_empty() {
                        star.push(' ');
                    }
                    star.push_str(&inner);
                }
                match **target {
                    TypeDesc::Array { .. } | TypeDesc::Function { .. } => {
                        target.declare(format!("({star})"))
                    }
                    _ => target.declare(star),
                }
            }
            TypeDesc::Array { element, count, .. } => element.declare(format!("{inner}[{count}]")),
            TypeDesc::Function { returns } => returns.declare(format!("{inner}()")),
        }
    }
}

/// One structure or union record of a type stream ([`TypeTable::records`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordInfo {
    /// The record's type index.
    pub index: u32,
    pub kind: RecordKind,
    pub name: String,
    /// `sizeof`; 0 for a forward reference.
    pub size: u64,
    /// A forward reference (no members); [`TypeTable::definition`] finds what it stands for.
    pub forward: bool,
}

/// A direct member of a record ([`TypeTable::members_at`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub name: String,
    /// Offset from the start of the record that declares it.
    pub field: Field,
    /// The definition of the record this member holds in place (itself or as array elements),
    /// by index: names of anonymous records repeat, so walking into a member goes by index.
    pub embeds: Option<u32>,
}

/// A field resolved by its dotted path from the outermost type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Byte offset from the start of the outermost type.
    pub offset: u64,
    /// Size of the field's type (for a bitfield: of its storage unit).
    pub size: u64,
    pub bitfield: Option<Bitfield>,
    pub ty: TypeDesc,
}

#[derive(Debug, Clone)]
struct Member {
    name: String,
    offset: u64,
    ty: u32,
}

#[derive(Debug, Clone)]
enum Leaf {
    Record {
        kind: RecordKind,
        name: String,
        size: u64,
        fields: Option<u32>,
        forward: bool,
    },
    FieldList {
        members: Vec<Member>,
        continuation: Option<u32>,
    },
    Pointer {
        to: u32,
        size: u64,
        qualifiers: Qualifiers,
    },
    Modifier {
        to: u32,
        qualifiers: Qualifiers,
    },
    Array {
        element: u32,
        bytes: u64,
    },
    Bitfield {
        base: u32,
        position: u8,
        width: u8,
    },
    Enum {
        name: String,
        underlying: u32,
    },
    Procedure {
        returns: Option<u32>,
    },
    /// A named primitive of a table built from another source than a TPI (an ISF's base type),
    /// which has no CodeView index.
    Base {
        name: String,
        size: u64,
    },
    /// A record of a kind layouts use that could not be parsed; the reason is kept for errors.
    Malformed(String),
    Other,
}

/// The owned, indexed type stream of one PDB.
#[derive(Debug)]
pub struct TypeTable {
    pdb: PathBuf,
    first: u32,
    leaves: Vec<Leaf>,
    /// Record/enum name → index of its definition (forward references excluded).
    by_name: HashMap<String, u32>,
}

fn record_kind(kind: pdb2::ClassKind) -> RecordKind {
    match kind {
        pdb2::ClassKind::Class | pdb2::ClassKind::Struct | pdb2::ClassKind::Interface => {
            RecordKind::Struct
        }
    }
}

fn convert(data: TypeData<'_>) -> Leaf {
    match data {
        TypeData::Class(c) => Leaf::Record {
            kind: record_kind(c.kind),
            name: c.name.to_string().into_owned(),
            size: c.size,
            fields: c.fields.map(|f| f.0),
            forward: c.properties.forward_reference(),
        },
        TypeData::Union(u) => Leaf::Record {
            kind: RecordKind::Union,
            name: u.name.to_string().into_owned(),
            size: u.size,
            fields: Some(u.fields.0),
            forward: u.properties.forward_reference(),
        },
        TypeData::Pointer(p) => Leaf::Pointer {
            to: p.underlying_type.0,
            size: u64::from(p.attributes.size()),
            qualifiers: Qualifiers {
                constant: p.attributes.is_const(),
                volatile: p.attributes.is_volatile(),
                unaligned: p.attributes.is_unaligned(),
            },
        },
        TypeData::Modifier(m) => Leaf::Modifier {
            to: m.underlying_type.0,
            qualifiers: Qualifiers {
                constant: m.constant,
                volatile: m.volatile,
                unaligned: m.unaligned,
            },
        },
        TypeData::Array(a) => Leaf::Array {
            element: a.element_type.0,
            bytes: a.dimensions.last().copied().map(u64::from).unwrap_or(0),
        },
        TypeData::Bitfield(b) => Leaf::Bitfield {
            base: b.underlying_type.0,
            position: b.position,
            width: b.length,
        },
        TypeData::Enumeration(e) if !e.properties.forward_reference() => Leaf::Enum {
            name: e.name.to_string().into_owned(),
            underlying: e.underlying_type.0,
        },
        TypeData::Procedure(p) => Leaf::Procedure {
            returns: p.return_type.map(|t| t.0),
        },
        TypeData::MemberFunction(f) => Leaf::Procedure {
            returns: Some(f.return_type.0),
        },
        _ => Leaf::Other,
    }
}

/// Name and size of a CodeView primitive (type index < 0x1000; cvinfo.h `CV_BASICTYPE`).
fn primitive(index: u32) -> TypeDesc {
    let mode = (index >> 8) & 0xF;
    let kind = index & 0xFF;
    let (name, size) = match kind {
        0x03 => ("void", 0),
        0x08 => ("HRESULT", 4),
        // cvinfo.h: T_CHAR (0x10) is "8 bit signed", what MSVC writes for `signed char`; T_RCHAR
        // (0x70) is plain `char` (llvm-pdbutil names them the same way).
        0x10 => ("signed char", 1),
        0x20 => ("unsigned char", 1),
        0x68 => ("signed char", 1),
        0x69 => ("unsigned char", 1),
        0x70 => ("char", 1),
        0x71 => ("wchar_t", 2),
        0x7a => ("char16_t", 2),
        0x7b => ("char32_t", 4),
        0x7c => ("char8_t", 1),
        0x11 | 0x72 => ("short", 2),
        0x21 | 0x73 => ("unsigned short", 2),
        0x12 => ("long", 4),
        0x22 => ("unsigned long", 4),
        0x74 => ("int", 4),
        0x75 => ("unsigned int", 4),
        0x13 | 0x76 => ("__int64", 8),
        0x23 | 0x77 => ("unsigned __int64", 8),
        0x14 | 0x78 => ("__int128", 16),
        0x24 | 0x79 => ("unsigned __int128", 16),
        0x46 => ("half", 2),
        0x40 => ("float", 4),
        0x41 => ("double", 8),
        0x42 => ("long double", 10),
        0x43 => ("__float128", 16),
        0x30 => ("bool", 1),
        0x31 => ("bool16", 2),
        0x32 => ("bool32", 4),
        0x33 => ("bool64", 8),
        _ => ("<primitive>", 0),
    };
    let base = TypeDesc::Base {
        name: name.to_string(),
        size,
        qualifiers: Qualifiers::NONE,
    };
    // Pointer modes (cvinfo.h CV_prmode_e): 4 = 32-bit near, 5 = 32-bit far, 6 = 64-bit.
    let pointer_size = match mode {
        0 => return base,
        4 | 5 => 4,
        _ => 8,
    };
    TypeDesc::Pointer {
        target: Box::new(base),
        size: pointer_size,
        qualifiers: Qualifiers::NONE,
    }
}

/// True for the names compilers and converters give anonymous records.
pub fn is_anonymous_name(name: &str) -> bool {
    name.is_empty()
        || name.starts_with("<unnamed-")
        || name.starts_with("<anonymous-")
        || name.starts_with("__unnamed")
        || name.starts_with("__anonymous")
        || name.contains("::<unnamed-")
        || name.contains("::<anonymous-")
}

/// The type stream's number in the MSF (llvm.org/docs/PDB/TpiStream.html).
const TPI_STREAM: u16 = 2;
/// Type indices stay below this (the top bit marks a type of another PDB under /DEBUG:FASTLINK).
const MAX_TYPE_INDEX: u32 = 0x8000_0000;
const LF_FIELDLIST: u16 = 0x1203;
/// The record kinds [`convert`] reads, each parsed by `pdb2` (cvinfo.h `LEAF_ENUM_e`):
/// LF_MODIFIER, LF_POINTER, LF_ARRAY_ST, LF_CLASS_ST, LF_STRUCTURE_ST, LF_UNION_ST, LF_ENUM_ST,
/// LF_PROCEDURE, LF_MFUNCTION, LF_BITFIELD, LF_ARRAY, LF_CLASS, LF_STRUCTURE, LF_UNION, LF_ENUM,
/// LF_STRIDED_ARRAY, LF_INTERFACE, LF_CLASS2, LF_STRUCTURE2, LF_UNION2, LF_INTERFACE2.
const LAYOUT_KINDS: [u16; 21] = [
    0x1001, 0x1002, 0x1003, 0x1004, 0x1005, 0x1006, 0x1007, 0x1008, 0x1009, 0x1205, 0x1503, 0x1504,
    0x1505, 0x1506, 0x1507, 0x1516, 0x1519, 0x1608, 0x1609, 0x160a, 0x160b,
];

const LF_POINTER: u16 = 0x1002;

/// Whether an `LF_POINTER` record's attributes (`lfPointer.attr`, after the kind and the pointee
/// type) hold a pointer kind (`CV_ptrtype_e`, 0..=0x0c) and mode (`CV_ptrmode_e`, 0..=4) cvinfo.h
/// defines: `pdb2` 0.11 reaches `unreachable!()` on any other, in its release build too (found by
/// the `pdb_parse` fuzz target).
fn pointer_attributes_known(record: &[u8]) -> bool {
    let Some(attr) = record.get(6..10) else {
        return true; // too short: pdb2 returns an error itself
    };
    let attr = u32::from_le_bytes([attr[0], attr[1], attr[2], attr[3]]);
    attr & 0x1f <= 0x0c && (attr >> 5) & 0x7 <= 4
}

/// The records of a type stream as bytes (kind first), in the order pdb2's iterator gives them:
/// a `u16` length, then that many bytes (llvm.org/docs/PDB/TpiStream.html).
struct RawRecords<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> RawRecords<'a> {
    fn new(stream: &'a [u8]) -> Self {
        // pdb2 has checked the header; its second u32 is the header's size.
        let header = stream
            .get(4..8)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        Self {
            bytes: stream,
            at: header,
        }
    }

    fn next(&mut self) -> Option<&'a [u8]> {
        let len = self.bytes.get(self.at..self.at + 2)?;
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        let record = self.bytes.get(self.at + 2..self.at + 2 + len)?;
        self.at += 2 + len;
        Some(record)
    }
}

/// How deep type descriptions and anonymous-member searches go (cycles are impossible in a
/// valid TPI, but a corrupt one must not hang the host).
const MAX_DEPTH: usize = 32;

impl TypeTable {
    /// Reads the whole TPI of `pdb` (a PDB already opened from `path`). Only the record kinds
    /// layouts use are parsed ([`LAYOUT_KINDS`]); field lists are parsed by
    /// [`super::fieldlist`], not by `pdb2` (see there why).
    pub fn read<S: pdb2::Source<'static> + 'static>(
        path: &Path,
        pdb: &mut pdb2::PDB<'static, S>,
    ) -> Result<Self> {
        let err = |what: &'static str| {
            let pdb = path.to_path_buf();
            move |source| SymbolError::Pdb { pdb, what, source }
        };
        let info = pdb.type_information().map_err(err("the type stream"))?;
        // The same records as bytes, walked in step with pdb2's iterator: field lists are
        // parsed from them.
        let raw = pdb
            .raw_stream(pdb2::StreamIndex(TPI_STREAM))
            .map_err(err("the type stream"))?
            .ok_or_else(|| SymbolError::Malformed {
                pdb: path.to_path_buf(),
                reason: "no type stream".into(),
            })?;
        let mut records = RawRecords::new(&raw);
        let mut iter = info.iter();
        let mut first = None;
        let mut leaves = Vec::new();
        let mut by_name = HashMap::new();
        while let Some(ty) = iter.next().map_err(err("a type record"))? {
            let index = ty.index().0;
            let start = *first.get_or_insert(index);
            // pdb2 numbers records from the header's first index on; stop before its counter
            // could wrap (a valid TPI ends far below).
            if index >= MAX_TYPE_INDEX {
                return Err(SymbolError::BadType {
                    pdb: path.to_path_buf(),
                    index,
                    reason: format!(
                        "type indices reach {index:#x} (first {start:#x}); a type stream ends \
                         below {MAX_TYPE_INDEX:#x}"
                    ),
                });
            }
            let bytes = records.next().unwrap_or(&[]);
            let leaf = match ty.raw_kind() {
                LF_FIELDLIST => match super::fieldlist::parse(bytes.get(2..).unwrap_or(&[])) {
                    Ok(list) => Leaf::FieldList {
                        members: list
                            .members
                            .into_iter()
                            .map(|m| Member {
                                name: m.name,
                                offset: m.offset,
                                ty: m.ty,
                            })
                            .collect(),
                        continuation: list.continuation,
                    },
                    Err(reason) => Leaf::Malformed(reason),
                },
                LF_POINTER if !pointer_attributes_known(bytes) => {
                    Leaf::Malformed("pointer attributes of an unknown kind or mode".into())
                }
                kind if LAYOUT_KINDS.contains(&kind) => match ty.parse() {
                    Ok(data) => convert(data),
                    Err(e) => Leaf::Malformed(e.to_string()),
                },
                // Not layout-relevant (and some, like LF_ARGLIST, are sized from a count that
                // pdb2 trusts): never parsed.
                _ => Leaf::Other,
            };
            match &leaf {
                Leaf::Record {
                    name,
                    forward: false,
                    ..
                }
                | Leaf::Enum { name, .. } => {
                    by_name.entry(name.clone()).or_insert(index);
                }
                _ => {}
            }
            // Records are dense and in order (pdb2 counts them), so the table is indexable by
            // (index - first).
            debug_assert_eq!(u64::from(start) + leaves.len() as u64, u64::from(index));
            leaves.push(leaf);
        }
        Ok(Self {
            pdb: path.to_path_buf(),
            first: first.unwrap_or(0x1000),
            leaves,
            by_name,
        })
    }

    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    /// The PDB this table was read from (for error messages).
    pub fn path(&self) -> &Path {
        &self.pdb
    }

    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    fn leaf(&self, index: u32) -> Option<&Leaf> {
        index
            .checked_sub(self.first)
            .and_then(|i| self.leaves.get(i as usize))
    }

    fn bad(&self, index: u32, reason: &str) -> SymbolError {
        SymbolError::BadType {
            pdb: self.pdb.clone(),
            index,
            reason: reason.to_string(),
        }
    }

    /// Follows modifiers (const/volatile/unaligned) and forward references to the defining type,
    /// which may be a primitive (index < 0x1000): `LF_MODIFIER` → `unsigned long` is how every
    /// `volatile ULONG` member of a Microsoft PDB is written.
    fn resolve(&self, index: u32) -> u32 {
        self.peel(index).0
    }

    /// Like [`resolve`](Self::resolve), also collecting the qualifiers met on the way.
    fn peel(&self, mut index: u32) -> (u32, Qualifiers) {
        let mut qualifiers = Qualifiers::NONE;
        for _ in 0..MAX_DEPTH {
            match self.leaf(index) {
                Some(Leaf::Modifier { to, qualifiers: q }) => {
                    qualifiers = qualifiers.union(*q);
                    index = *to;
                }
                Some(Leaf::Record {
                    name,
                    forward: true,
                    ..
                }) => {
                    return match self.by_name.get(name) {
                        Some(def) => (*def, qualifiers),
                        None => (index, qualifiers),
                    }
                }
                _ => return (index, qualifiers),
            }
        }
        (index, qualifiers)
    }

    /// The members of a field list and its continuations. A continuation that leads back to a
    /// list already read is a loop in a corrupt PDB: an error, found after at most as many
    /// steps as there are records.
    fn members(&self, fields: Option<u32>) -> Result<Vec<&Member>> {
        let mut out = Vec::new();
        let mut next = fields;
        let mut seen = std::collections::HashSet::new();
        while let Some(index) = next {
            if !seen.insert(index) {
                return Err(self.bad(index, "field-list continuations loop"));
            }
            match self.leaf(index) {
                Some(Leaf::FieldList {
                    members,
                    continuation,
                }) => {
                    out.extend(members.iter());
                    next = *continuation;
                }
                Some(Leaf::Malformed(reason)) => {
                    return Err(self.bad(index, &format!("malformed field list: {reason}")))
                }
                _ => return Err(self.bad(index, "expected a field list")),
            }
        }
        Ok(out)
    }

    /// The description of type `index`.
    pub fn describe(&self, index: u32) -> TypeDesc {
        self.describe_depth(index, 0)
    }

    fn describe_depth(&self, index: u32, depth: usize) -> TypeDesc {
        // Qualifiers first: whatever they qualify (a primitive, too) is classified after them.
        let (index, qualifiers) = self.peel(index);
        self.describe_unqualified(index, depth)
            .with_qualifiers(qualifiers)
    }

    fn describe_unqualified(&self, index: u32, depth: usize) -> TypeDesc {
        if index < 0x1000 {
            return primitive(index);
        }
        if depth > MAX_DEPTH {
            return TypeDesc::Base {
                name: "<too deep>".into(),
                size: 0,
                qualifiers: Qualifiers::NONE,
            };
        }
        match self.leaf(index) {
            Some(Leaf::Record {
                kind, name, size, ..
            }) => TypeDesc::Record {
                kind: *kind,
                name: name.clone(),
                size: *size,
                qualifiers: Qualifiers::NONE,
            },
            Some(Leaf::Pointer {
                to,
                size,
                qualifiers,
            }) => TypeDesc::Pointer {
                target: Box::new(self.describe_depth(*to, depth + 1)),
                size: *size,
                qualifiers: *qualifiers,
            },
            Some(Leaf::Array { element, bytes }) => {
                let element = self.describe_depth(*element, depth + 1);
                let count = match element.size() {
                    0 => 0,
                    n => bytes / n,
                };
                TypeDesc::Array {
                    element: Box::new(element),
                    count,
                    size: *bytes,
                }
            }
            Some(Leaf::Bitfield { base, .. }) => self.describe_depth(*base, depth + 1),
            Some(Leaf::Enum { name, underlying }) => TypeDesc::Base {
                name: name.clone(),
                size: self.describe_depth(*underlying, depth + 1).size(),
                qualifiers: Qualifiers::NONE,
            },
            Some(Leaf::Procedure { returns }) => TypeDesc::Function {
                // No return type (index 0) is how CodeView writes `void`.
                returns: Box::new(self.describe_depth(returns.unwrap_or(0x03), depth + 1)),
            },
            Some(Leaf::Base { name, size }) => TypeDesc::Base {
                name: name.clone(),
                size: *size,
                qualifiers: Qualifiers::NONE,
            },
            _ => TypeDesc::Base {
                name: format!("<type {index:#x}>"),
                size: 0,
                qualifiers: Qualifiers::NONE,
            },
        }
    }

    /// Index of the definition of the record or enum called `name`.
    pub fn find(&self, name: &str) -> Result<u32> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| SymbolError::TypeNotFound {
                pdb: self.pdb.clone(),
                type_name: name.to_string(),
            })
    }

    /// `sizeof(name)`.
    pub fn size_of(&self, name: &str) -> Result<u64> {
        Ok(self.describe(self.find(name)?).size())
    }

    /// The direct members of record `name` (anonymous members flattened as the PDB has them),
    /// in declaration order: (name, field).
    pub fn members_of(&self, name: &str) -> Result<Vec<(String, Field)>> {
        Ok(self
            .members_at(self.find(name)?)?
            .into_iter()
            .map(|m| (m.name, m.field))
            .collect())
    }

    /// Every structure and union record of the type stream, forward references included, in
    /// index order. Names repeat: a forward reference shares its definition's name, and a PDB
    /// may define one name several times (every `_KPRCB::<unnamed-tag>` of a kernel PDB, a type
    /// defined differently in two translation units); lookups by name use the first definition.
    pub fn records(&self) -> impl Iterator<Item = RecordInfo> + '_ {
        (0..self.leaves.len() as u32).filter_map(|i| self.record(self.first + i))
    }

    /// The structure or union record at `index`, if that is one.
    pub fn record(&self, index: u32) -> Option<RecordInfo> {
        match self.leaf(index)? {
            Leaf::Record {
                kind,
                name,
                size,
                forward,
                ..
            } => Some(RecordInfo {
                index,
                kind: *kind,
                name: name.clone(),
                size: *size,
                forward: *forward,
            }),
            _ => None,
        }
    }

    /// The definition a record stands for: a definition itself, or for a forward reference
    /// the first definition of its name (`None` when the PDB has none, or `index` is no record).
    pub fn definition(&self, index: u32) -> Option<u32> {
        let record = self.record(index)?;
        if !record.forward {
            return Some(index);
        }
        let def = *self.by_name.get(&record.name)?;
        self.record(def).map(|_| def)
    }

    /// The direct members of the record at `index` (a forward reference: of its definition),
    /// in declaration order, each with the record it embeds (for walking into it).
    pub fn members_at(&self, index: u32) -> Result<Vec<MemberInfo>> {
        let def = self.definition(index).unwrap_or(index);
        let fields = match self.leaf(def) {
            Some(Leaf::Record { fields, .. }) => *fields,
            _ => return Err(self.bad(index, "not a structure or union")),
        };
        Ok(self
            .members(fields)?
            .into_iter()
            .map(|m| MemberInfo {
                name: m.name.clone(),
                field: self.field_of(m, 0),
                embeds: self.embedded_record(m.ty),
            })
            .collect())
    }

    /// The definition of the record a member of type `index` holds in place: itself, or as
    /// the elements of (nested) arrays. Pointers and bitfields embed nothing.
    fn embedded_record(&self, mut index: u32) -> Option<u32> {
        for _ in 0..MAX_DEPTH {
            index = self.resolve(index);
            match self.leaf(index)? {
                Leaf::Array { element, .. } => index = *element,
                Leaf::Record { forward: false, .. } => return Some(index),
                _ => return None,
            }
        }
        None
    }

    fn field_of(&self, m: &Member, base: u64) -> Field {
        let bitfield = match self.leaf(self.resolve(m.ty)) {
            Some(Leaf::Bitfield {
                position, width, ..
            }) => Some(Bitfield {
                position: *position,
                width: *width,
            }),
            _ => None,
        };
        let ty = self.describe(m.ty);
        Field {
            offset: base.saturating_add(m.offset),
            size: ty.size(),
            bitfield,
            ty,
        }
    }

    /// Searches record `index` for member `name`: directly, then through anonymous members.
    /// Returns the member and its offset from the start of record `index`. Each record is
    /// searched once per lookup, so a corrupt PDB whose anonymous members lead in circles or
    /// fan out costs no more than the records it has.
    fn lookup<'a>(&'a self, index: u32, name: &str) -> Result<Option<(&'a Member, u64)>> {
        let mut searched = std::collections::HashSet::new();
        self.lookup_in(index, name, 0, &mut searched)
    }

    fn lookup_in<'a>(
        &'a self,
        index: u32,
        name: &str,
        depth: usize,
        searched: &mut std::collections::HashSet<u32>,
    ) -> Result<Option<(&'a Member, u64)>> {
        if !searched.insert(index) {
            return Ok(None);
        }
        let fields = match self.leaf(index) {
            Some(Leaf::Record { fields, .. }) => *fields,
            _ => return Err(self.bad(index, "not a structure or union")),
        };
        let members = self.members(fields)?;
        if let Some(m) = members.iter().find(|m| m.name == name) {
            return Ok(Some((m, 0)));
        }
        if depth >= MAX_DEPTH {
            return Ok(None);
        }
        for m in members {
            let inner = self.resolve(m.ty);
            let anonymous = match self.leaf(inner) {
                Some(Leaf::Record { name: ty_name, .. }) => {
                    is_anonymous_name(&m.name) || is_anonymous_name(ty_name)
                }
                _ => false,
            };
            if anonymous {
                if let Some((found, at)) = self.lookup_in(inner, name, depth + 1, searched)? {
                    return Ok(Some((found, m.offset.saturating_add(at))));
                }
            }
        }
        Ok(None)
    }

    /// Resolves `path` (`TreeNode.Base.p`, `HeaderX64.Depth`) inside record `type_name`.
    pub fn field(&self, type_name: &str, path: &str) -> Result<Field> {
        let mut index = self.find(type_name)?;
        let mut offset = 0u64;
        let mut walked = String::new();
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            if !matches!(self.leaf(index), Some(Leaf::Record { .. })) {
                return Err(SymbolError::NotARecord {
                    pdb: self.pdb.clone(),
                    type_name: type_name.to_string(),
                    field: walked,
                    found: self.describe(index).describe(),
                    next: part.to_string(),
                });
            }
            let (member, at) =
                self.lookup(index, part)?
                    .ok_or_else(|| SymbolError::FieldNotFound {
                        pdb: self.pdb.clone(),
                        type_name: type_name.to_string(),
                        field: parts[..=i].join("."),
                    })?;
            offset = offset.saturating_add(at);
            if i + 1 == parts.len() {
                return Ok(self.field_of(member, offset));
            }
            offset = offset.saturating_add(member.offset);
            index = self.resolve(member.ty);
            if !walked.is_empty() {
                walked.push('.');
            }
            walked.push_str(part);
        }
        Err(SymbolError::FieldNotFound {
            pdb: self.pdb.clone(),
            type_name: type_name.to_string(),
            field: path.to_string(),
        })
    }
}

/// Builds a [`TypeTable`] from another source than a PDB's type stream (an ISF symbol pack,
/// [`super::isf`]) out of the same leaves, so that every lookup, size and `dt` line is computed
/// by the same code whichever source the layouts came from. Indices start at 0x1000, as in a
/// TPI; below that are CodeView primitives, which a built table does not use.
#[derive(Debug)]
pub(super) struct TableBuilder {
    leaves: Vec<Leaf>,
}

/// One member for [`TableBuilder::field_list`]: name, offset, type index.
pub(super) type BuiltMember = (String, u64, u32);

impl TableBuilder {
    const FIRST: u32 = 0x1000;

    pub(super) fn new() -> Self {
        Self { leaves: Vec::new() }
    }

    fn push(&mut self, leaf: Leaf) -> u32 {
        self.leaves.push(leaf);
        Self::FIRST + (self.leaves.len() - 1) as u32
    }

    /// A slot for a record whose members are built later ([`TableBuilder::define_record`]),
    /// so that members can refer to records not built yet.
    pub(super) fn reserve(&mut self) -> u32 {
        self.push(Leaf::Other)
    }

    pub(super) fn define_record(
        &mut self,
        index: u32,
        kind: RecordKind,
        name: String,
        size: u64,
        fields: Option<u32>,
    ) {
        if let Some(slot) = index
            .checked_sub(Self::FIRST)
            .and_then(|i| self.leaves.get_mut(i as usize))
        {
            *slot = Leaf::Record {
                kind,
                name,
                size,
                fields,
                forward: fields.is_none(),
            };
        }
    }

    /// A record the source names but does not define: a forward reference (size 0, no members).
    pub(super) fn undefined_record(&mut self, kind: RecordKind, name: String) -> u32 {
        self.push(Leaf::Record {
            kind,
            name,
            size: 0,
            fields: None,
            forward: true,
        })
    }

    pub(super) fn field_list(&mut self, members: Vec<BuiltMember>) -> u32 {
        self.push(Leaf::FieldList {
            members: members
                .into_iter()
                .map(|(name, offset, ty)| Member { name, offset, ty })
                .collect(),
            continuation: None,
        })
    }

    pub(super) fn base(&mut self, name: String, size: u64) -> u32 {
        self.push(Leaf::Base { name, size })
    }

    pub(super) fn pointer(&mut self, to: u32, size: u64) -> u32 {
        self.push(Leaf::Pointer {
            to,
            size,
            qualifiers: Qualifiers::NONE,
        })
    }

    /// `bytes` is the whole array's size, as CodeView records it.
    pub(super) fn array(&mut self, element: u32, bytes: u64) -> u32 {
        self.push(Leaf::Array { element, bytes })
    }

    pub(super) fn bitfield(&mut self, base: u32, position: u8, width: u8) -> u32 {
        self.push(Leaf::Bitfield {
            base,
            position,
            width,
        })
    }

    pub(super) fn enumeration(&mut self, name: String, underlying: u32) -> u32 {
        self.push(Leaf::Enum { name, underlying })
    }

    /// A function type without a known signature (its return type shows as `void`).
    pub(super) fn function(&mut self) -> u32 {
        self.push(Leaf::Procedure { returns: None })
    }

    /// The table; names resolve to their first definition, as in a PDB.
    pub(super) fn finish(self, origin: PathBuf) -> TypeTable {
        let mut by_name = HashMap::new();
        for (i, leaf) in self.leaves.iter().enumerate() {
            match leaf {
                Leaf::Record {
                    name,
                    forward: false,
                    ..
                }
                | Leaf::Enum { name, .. } => {
                    by_name
                        .entry(name.clone())
                        .or_insert(Self::FIRST + i as u32);
                }
                _ => {}
            }
        }
        TypeTable {
            pdb: origin,
            first: Self::FIRST,
            leaves: self.leaves,
            by_name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, offset: u64, ty: u32) -> Member {
        Member {
            name: name.into(),
            offset,
            ty,
        }
    }

    fn record(kind: RecordKind, name: &str, size: u64, fields: Option<u32>, forward: bool) -> Leaf {
        Leaf::Record {
            kind,
            name: name.into(),
            size,
            fields,
            forward,
        }
    }

    /// `_OUTER { int x; <anonymous member of type __anonymous_1 @8> { unsigned y @4; };
    /// _INNER *p @0x10 (through a forward reference); _INNER arr[3] @0x18 }`.
    fn table() -> TypeTable {
        let first = 0x1000;
        let leaves = vec![
            /* 0x1000 */ record(RecordKind::Struct, "_INNER", 0, None, true),
            /* 0x1001 */
            Leaf::FieldList {
                members: vec![member("a", 0, 0x22), member("b", 4, 0x1002)],
                continuation: None,
            },
            /* 0x1002 */
            Leaf::Bitfield {
                base: 0x22,
                position: 3,
                width: 5,
            },
            /* 0x1003 */ record(RecordKind::Struct, "_INNER", 8, Some(0x1001), false),
            /* 0x1004 */
            Leaf::FieldList {
                members: vec![member("y", 4, 0x75)],
                continuation: None,
            },
            /* 0x1005 */ record(RecordKind::Union, "__anonymous_1", 8, Some(0x1004), false),
            /* 0x1006 */
            Leaf::Pointer {
                to: 0x1000,
                size: 8,
                qualifiers: Qualifiers::NONE,
            },
            /* 0x1007 */
            Leaf::Array {
                element: 0x1000,
                bytes: 24,
            },
            /* 0x1008 */
            Leaf::FieldList {
                members: vec![member("p", 0x10, 0x1006), member("arr", 0x18, 0x1007)],
                continuation: None,
            },
            /* 0x1009 */
            Leaf::FieldList {
                members: vec![member("x", 0, 0x74), member("", 8, 0x1005)],
                continuation: Some(0x1008),
            },
            /* 0x100a */ record(RecordKind::Struct, "_OUTER", 0x30, Some(0x1009), false),
        ];
        let mut by_name = HashMap::new();
        by_name.insert("_INNER".to_string(), 0x1003);
        by_name.insert("_OUTER".to_string(), 0x100a);
        by_name.insert("__anonymous_1".to_string(), 0x1005);
        TypeTable {
            pdb: PathBuf::from("t.pdb"),
            first,
            leaves,
            by_name,
        }
    }

    #[test]
    fn anonymous_members_forward_refs_continuations_bitfields_arrays() {
        let t = table();
        assert_eq!(t.size_of("_OUTER").unwrap(), 0x30);
        // through an unflattened anonymous member
        let y = t.field("_OUTER", "y").unwrap();
        assert_eq!((y.offset, y.size), (0xc, 4));
        // continuation field list; pointer to a forward reference resolves to the definition
        let p = t.field("_OUTER", "p").unwrap();
        assert_eq!(p.offset, 0x10);
        assert!(matches!(&p.ty, TypeDesc::Pointer { target, size: 8, .. }
        if **target == TypeDesc::Record {
            kind: RecordKind::Struct,
            name: "_INNER".into(),
            size: 8,
            qualifiers: Qualifiers::NONE,
        }));
        let arr = t.field("_OUTER", "arr").unwrap();
        assert!(
            matches!(
                arr.ty,
                TypeDesc::Array {
                    count: 3,
                    size: 24,
                    ..
                }
            ),
            "{arr:?}"
        );
        let b = t.field("_INNER", "b").unwrap();
        assert_eq!(
            b.bitfield,
            Some(Bitfield {
                position: 3,
                width: 5
            })
        );
        assert_eq!((b.offset, b.size), (4, 4));
        let err = t.field("_OUTER", "p.a").unwrap_err().to_string();
        assert!(
            err.contains("t.pdb") && err.contains("p") && err.contains("not a structure"),
            "{err}"
        );
        let err = t.field("_OUTER", "zz").unwrap_err().to_string();
        assert!(
            err.contains("t.pdb") && err.contains("_OUTER") && err.contains("zz"),
            "{err}"
        );
    }

    #[test]
    fn records_are_listed_by_index_and_forward_references_lead_to_definitions() {
        let t = table();
        let listed: Vec<(u32, &str, bool)> = t
            .records()
            .map(|r| {
                (
                    r.index,
                    if r.forward { "fwd" } else { "def" },
                    r.kind == RecordKind::Union,
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                (0x1000, "fwd", false),
                (0x1003, "def", false),
                (0x1005, "def", true),
                (0x100a, "def", false)
            ]
        );
        assert_eq!(t.definition(0x1000), Some(0x1003));
        assert_eq!(t.definition(0x1003), Some(0x1003));
        assert_eq!(t.definition(0x1006), None, "a pointer is no record");
        let members = t.members_at(0x100a).unwrap();
        let embeds: Vec<(&str, Option<u32>)> = members
            .iter()
            .map(|m| (m.name.as_str(), m.embeds))
            .collect();
        // the anonymous union and the array of _INNER are walked into by index; a pointer is not
        assert_eq!(
            embeds,
            [
                ("x", None),
                ("", Some(0x1005)),
                ("p", None),
                ("arr", Some(0x1003))
            ]
        );
        // a forward reference lists its definition's members
        assert_eq!(t.members_at(0x1000).unwrap().len(), 2);
        assert!(t.members_at(0x1006).is_err());
    }

    #[test]
    fn descriptions_use_c_declarator_syntax() {
        let uchar = || TypeDesc::Base {
            name: "unsigned char".into(),
            size: 1,
            qualifiers: Qualifiers::NONE,
        };
        let array = |element: TypeDesc, count: u64| TypeDesc::Array {
            size: element.size() * count,
            element: Box::new(element),
            count,
        };
        let pointer = |target: TypeDesc, qualifiers: Qualifiers| TypeDesc::Pointer {
            target: Box::new(target),
            size: 8,
            qualifiers,
        };
        assert_eq!(
            array(array(uchar(), 3), 2).describe(),
            "unsigned char[2][3]"
        );
        assert_eq!(
            pointer(array(uchar(), 6), Qualifiers::NONE).describe(),
            "unsigned char (*)[6]"
        );
        assert_eq!(
            pointer(pointer(uchar(), VOLATILE), Qualifiers::NONE).describe(),
            "unsigned char *volatile *"
        );
        let function = TypeDesc::Function {
            returns: Box::new(TypeDesc::Base {
                name: "long".into(),
                size: 4,
                qualifiers: Qualifiers::NONE,
            }),
        };
        assert_eq!(pointer(function, Qualifiers::NONE).describe(), "long (*)()");
    }

    /// `_LOOP` embeds itself (no valid PDB does; a corrupt one may); `_WIDE` has 500 members of
    /// `_ALSO_WIDE`, which has 500 of `_LOOP`.
    fn hostile_table() -> TypeTable {
        let many = |ty: u32| (0..500).map(|i| member(&format!("m{i}"), 0, ty)).collect();
        let leaves = vec![
            /* 0x1000 */
            Leaf::FieldList {
                members: vec![member("again", 0, 0x1001), member("x", 0, 0x74)],
                continuation: None,
            },
            /* 0x1001 */ record(RecordKind::Struct, "_LOOP", 4, Some(0x1000), false),
            /* 0x1002 */
            Leaf::FieldList {
                members: many(0x1001),
                continuation: None,
            },
            /* 0x1003 */ record(RecordKind::Struct, "_ALSO_WIDE", 4, Some(0x1002), false),
            /* 0x1004 */
            Leaf::FieldList {
                members: many(0x1003),
                continuation: None,
            },
            /* 0x1005 */ record(RecordKind::Struct, "_WIDE", 4, Some(0x1004), false),
        ];
        let mut by_name = HashMap::new();
        by_name.insert("_LOOP".to_string(), 0x1001);
        by_name.insert("_ALSO_WIDE".to_string(), 0x1003);
        by_name.insert("_WIDE".to_string(), 0x1005);
        TypeTable {
            pdb: PathBuf::from("hostile.pdb"),
            first: 0x1000,
            leaves,
            by_name,
        }
    }

    #[test]
    fn walking_into_records_ends_on_cycles_and_huge_expansions() {
        use crate::symbols::dt;
        let t = hostile_table();
        let looped = dt::layout(&t, "_LOOP", dt::MAX_RECURSION).unwrap();
        let members = looped.members.unwrap();
        assert_eq!(members[0].name, "again");
        assert!(
            members[0].members.is_none(),
            "a record is not walked into from inside itself"
        );
        assert!(dt::layout(&t, "_WIDE", 0).is_ok());
        let err = dt::layout(&t, "_WIDE", 1).unwrap_err().to_string();
        assert!(
            err.contains("hostile.pdb") && err.contains("smaller -r"),
            "{err}"
        );
    }

    #[test]
    fn primitive_names_follow_cvinfo() {
        let name = |index| primitive(index).describe();
        assert_eq!(name(0x10), "signed char"); // T_CHAR
        assert_eq!(name(0x70), "char"); // T_RCHAR
        assert_eq!(name(0x20), "unsigned char"); // T_UCHAR
        assert_eq!(name(0x0622), "unsigned long *"); // T_64PULONG
        assert_eq!(primitive(0x0622).size(), 8);
        assert_eq!(primitive(0x0422).size(), 4); // T_32PULONG
    }

    const VOLATILE: Qualifiers = Qualifiers {
        constant: false,
        volatile: true,
        unaligned: false,
    };
    const CONST: Qualifiers = Qualifiers {
        constant: true,
        volatile: false,
        unaligned: false,
    };

    fn modifier(to: u32, qualifiers: Qualifiers) -> Leaf {
        Leaf::Modifier { to, qualifiers }
    }

    /// `_Q` with one member per qualifier shape, as clang-cl and MSVC write them: modifiers over
    /// primitives, bitfields over a modifier, arrays of qualified elements, qualified pointees and
    /// pointers, a qualified enum and record, and a chain of two modifiers.
    fn qualified_table() -> TypeTable {
        let leaves = vec![
            /* 0x1000 */ modifier(0x22, VOLATILE), // volatile unsigned long
            /* 0x1001 */
            Leaf::Bitfield {
                base: 0x1000,
                position: 3,
                width: 5,
            },
            /* 0x1002 */ modifier(0x20, CONST), // const unsigned char
            /* 0x1003 */
            Leaf::Array {
                element: 0x1002,
                bytes: 6,
            },
            /* 0x1004 */
            Leaf::Pointer {
                to: 0x1000,
                size: 8,
                qualifiers: Qualifiers::NONE,
            },
            /* 0x1005 */
            Leaf::Pointer {
                to: 0x22,
                size: 8,
                qualifiers: VOLATILE,
            },
            /* 0x1006 */
            Leaf::Enum {
                name: "_COLOR".into(),
                underlying: 0x74,
            },
            /* 0x1007 */ modifier(0x1006, CONST),
            /* 0x1008 */ record(RecordKind::Struct, "_Q", 0, None, true),
            /* 0x1009 */ modifier(0x1008, VOLATILE),
            /* 0x100a */
            modifier(0x1000, CONST), // const (volatile unsigned long): a chain
            /* 0x100b */ modifier(0x100a, Qualifiers::NONE),
            /* 0x100c */
            Leaf::Array {
                element: 0x1000,
                bytes: 8,
            },
            /* 0x100d */
            Leaf::FieldList {
                members: vec![
                    member("Counter", 0, 0x1000),
                    member("Flag", 4, 0x1001),
                    member("Bytes", 8, 0x1003),
                    member("PointerToVolatile", 0x10, 0x1004),
                    member("VolatilePointer", 0x18, 0x1005),
                    member("Color", 0x20, 0x1007),
                    member("Self", 0x24, 0x1009),
                    member("Chain", 0x28, 0x100b),
                    member("Plain", 0x2c, 0x100c),
                ],
                continuation: None,
            },
            /* 0x100e */ record(RecordKind::Struct, "_Q", 0x38, Some(0x100d), false),
        ];
        let mut by_name = HashMap::new();
        by_name.insert("_Q".to_string(), 0x100e);
        by_name.insert("_COLOR".to_string(), 0x1006);
        TypeTable {
            pdb: PathBuf::from("q.pdb"),
            first: 0x1000,
            leaves,
            by_name,
        }
    }

    fn base(name: &str, size: u64, qualifiers: Qualifiers) -> TypeDesc {
        TypeDesc::Base {
            name: name.into(),
            size,
            qualifiers,
        }
    }

    #[test]
    fn a_modifier_over_a_primitive_is_that_primitive_with_its_qualifier() {
        let t = qualified_table();
        let f = t.field("_Q", "Counter").unwrap();
        assert_eq!((f.offset, f.size), (0, 4));
        assert_eq!(f.ty, base("unsigned long", 4, VOLATILE));
        assert_eq!(f.ty.describe(), "volatile unsigned long");
    }

    #[test]
    fn a_bitfield_over_a_modifier_keeps_its_storage_size_and_bits() {
        let t = qualified_table();
        let f = t.field("_Q", "Flag").unwrap();
        assert_eq!((f.offset, f.size), (4, 4));
        assert_eq!(
            f.bitfield,
            Some(Bitfield {
                position: 3,
                width: 5
            })
        );
        assert_eq!(f.ty.qualifiers(), VOLATILE);
    }

    #[test]
    fn arrays_of_qualified_elements_have_their_count() {
        let t = qualified_table();
        let f = t.field("_Q", "Bytes").unwrap();
        assert!(
            matches!(&f.ty, TypeDesc::Array { count: 6, size: 6, element }
            if **element == base("unsigned char", 1, CONST))
        );
        assert_eq!(f.ty.describe(), "const unsigned char[6]");
        let plain = t.field("_Q", "Plain").unwrap();
        assert!(matches!(
            plain.ty,
            TypeDesc::Array {
                count: 2,
                size: 8,
                ..
            }
        ));
        assert_eq!(plain.ty.qualifiers(), VOLATILE);
    }

    #[test]
    fn pointee_and_pointer_qualifiers_stay_where_they_belong() {
        let t = qualified_table();
        let to_volatile = t.field("_Q", "PointerToVolatile").unwrap();
        assert_eq!(to_volatile.size, 8);
        assert_eq!(to_volatile.ty.qualifiers(), Qualifiers::NONE);
        assert_eq!(to_volatile.ty.describe(), "volatile unsigned long *");
        let volatile_pointer = t.field("_Q", "VolatilePointer").unwrap();
        assert_eq!(volatile_pointer.size, 8);
        assert_eq!(volatile_pointer.ty.qualifiers(), VOLATILE);
        assert_eq!(volatile_pointer.ty.describe(), "unsigned long *volatile");
    }

    #[test]
    fn qualified_enums_and_records_keep_name_and_size() {
        let t = qualified_table();
        let color = t.field("_Q", "Color").unwrap();
        assert_eq!(color.ty, base("_COLOR", 4, CONST));
        let this = t.field("_Q", "Self").unwrap();
        assert_eq!(
            this.ty,
            TypeDesc::Record {
                kind: RecordKind::Struct,
                name: "_Q".into(),
                size: 0x38,
                qualifiers: VOLATILE,
            }
        );
        // A qualified record can still be walked into.
        assert_eq!(t.field("_Q", "Self.Counter").unwrap().offset, 0x24);
    }

    #[test]
    fn chains_of_modifiers_collect_every_qualifier() {
        let t = qualified_table();
        let f = t.field("_Q", "Chain").unwrap();
        assert_eq!(f.size, 4);
        assert_eq!(f.ty.qualifiers(), CONST.union(VOLATILE));
        assert_eq!(f.ty.describe(), "const volatile unsigned long");
    }

    /// MSVC's `__unaligned` (an `LF_MODIFIER` bit, and a pointer attribute): clang-cl drops the
    /// keyword, so no committed PDB carries it and this table stands in for one that does.
    #[test]
    fn unaligned_is_kept_on_a_pointee_and_on_a_pointer_and_printed_last() {
        const UNALIGNED: Qualifiers = Qualifiers {
            constant: false,
            volatile: false,
            unaligned: true,
        };
        let mut t = qualified_table();
        t.leaves[0] = modifier(0x22, UNALIGNED.union(CONST)); // const __unaligned unsigned long
        t.leaves[5] = Leaf::Pointer {
            to: 0x22,
            size: 8,
            qualifiers: UNALIGNED,
        };
        let counter = t.field("_Q", "Counter").unwrap();
        assert_eq!((counter.offset, counter.size), (0, 4));
        assert_eq!(counter.ty.describe(), "const __unaligned unsigned long");
        let to_unaligned = t.field("_Q", "PointerToVolatile").unwrap();
        assert_eq!(to_unaligned.ty.qualifiers(), Qualifiers::NONE);
        assert_eq!(
            to_unaligned.ty.describe(),
            "const __unaligned unsigned long *"
        );
        let unaligned_pointer = t.field("_Q", "VolatilePointer").unwrap();
        assert_eq!(unaligned_pointer.size, 8);
        assert_eq!(unaligned_pointer.ty.qualifiers(), UNALIGNED);
        assert_eq!(
            unaligned_pointer.ty.describe(),
            "unsigned long *__unaligned"
        );
    }

    #[test]
    fn a_modifier_loop_ends_instead_of_hanging() {
        let mut t = qualified_table();
        t.leaves[0] = modifier(0x1000, VOLATILE); // volatile of itself
        let f = t.field("_Q", "Counter").unwrap();
        assert_eq!(f.size, 0);
    }
}
