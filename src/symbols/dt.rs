//! WinDbg's `dt` for a PDB type: a structure's or union's members with offsets, WinDbg's type
//! names (`Uint4B`, `Ptr64 _LIST_ENTRY`, `[6] UChar`, `Pos 3, 5 Bits`) and qualifiers, optionally
//! walking into embedded records (`dt -r`); the same as JSON. `kdleak types` prints these.
//!
//! ```text
//! struct _VF_SUSPECT_DRIVER_ENTRY, 4 elements, 0x28 bytes
//!    +0x000 Links            : _LIST_ENTRY
//!    +0x010 Loads            : Uint4B
//!    +0x014 Unloads          : Uint4B
//!    +0x018 BaseName         : _UNICODE_STRING
//! ```
//!
//! The first line is `dt -v`'s; member lines are `dt`'s (name padded to 16, `+0x%03x` offsets,
//! nested records indented by three more spaces). WinDbg's type names carry no qualifiers; kdleak
//! writes `const`, `volatile` and `__unaligned` before the part they qualify: `volatile Uint4B`
//! (a `volatile ULONG`), `Ptr64 volatile Uint4B` (a pointer to one), `volatile Ptr64 Uint4B` (a
//! pointer that is itself volatile), `[2] volatile Uint4B`, `volatile Pos 0, 3 Bits`.

use super::error::{Result, SymbolError};
use super::types::{
    is_anonymous_name, Bitfield, MemberInfo, RecordInfo, RecordKind, TypeDesc, TypeTable,
};

/// The deepest `-r` walks into embedded records (WinDbg's `-r` takes one digit, 1–9).
pub const MAX_RECURSION: usize = 9;

/// WinDbg's name for a primitive (how `dt` prints CodeView's basic types); `None` for an enum,
/// which `dt` prints by its name.
fn windbg_primitive(name: &str) -> Option<&'static str> {
    Some(match name {
        "void" => "Void",
        "char" | "signed char" => "Char",
        "unsigned char" | "char8_t" => "UChar",
        "wchar_t" | "char16_t" => "Wchar",
        "short" => "Int2B",
        "unsigned short" => "Uint2B",
        "long" | "int" | "HRESULT" => "Int4B",
        "unsigned long" | "unsigned int" | "char32_t" => "Uint4B",
        "__int64" => "Int8B",
        "unsigned __int64" => "Uint8B",
        "__int128" => "Int16B",
        "unsigned __int128" => "Uint16B",
        "half" | "float" | "double" | "long double" | "__float128" => "Float",
        "bool" | "bool16" | "bool32" | "bool64" => "Bool",
        _ => return None,
    })
}

fn qualified(words: String, rest: String) -> String {
    if words.is_empty() {
        rest
    } else {
        format!("{words} {rest}")
    }
}

/// The type column of a `dt` line for a member of type `ty` (a bitfield's: its storage unit's).
pub fn windbg_type(ty: &TypeDesc, bitfield: Option<Bitfield>) -> String {
    if let Some(b) = bitfield {
        let bits = if b.width == 1 { "Bit" } else { "Bits" };
        let position = format!("Pos {}, {} {bits}", b.position, b.width);
        return qualified(ty.qualifiers().words(), position);
    }
    match ty {
        TypeDesc::Base {
            name, qualifiers, ..
        } => qualified(
            qualifiers.words(),
            windbg_primitive(name).map_or_else(|| name.clone(), str::to_string),
        ),
        TypeDesc::Record {
            name, qualifiers, ..
        } => qualified(qualifiers.words(), name.clone()),
        TypeDesc::Pointer {
            target,
            size,
            qualifiers,
        } => {
            let pointee = match &**target {
                // WinDbg: `Ptr64     long` for a pointer to a function returning long.
                TypeDesc::Function { returns } => format!("    {}", returns.describe()),
                other => windbg_type(other, None),
            };
            qualified(qualifiers.words(), format!("Ptr{} {pointee}", size * 8))
        }
        TypeDesc::Array { element, count, .. } => {
            format!("[{count}] {}", windbg_type(element, None))
        }
        TypeDesc::Function { .. } => ty.describe(),
    }
}

/// `struct` or `union`, as `dt -v` and the JSON say it.
pub fn kind_word(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Struct => "struct",
        RecordKind::Union => "union",
    }
}

/// What a name is in the PDB: a structure/union definition or an enum.
enum Found {
    Record(RecordInfo),
    Enum { name: String, size: u64 },
}

/// Looks `name` up: exactly, else ignoring case (WinDbg matches type names without case) when
/// that finds exactly one definition.
fn find(table: &TypeTable, name: &str) -> Result<Found> {
    let index = match table.find(name) {
        Ok(index) => index,
        Err(not_found) => {
            let mut same: Vec<_> = table
                .records()
                .filter(|r| !r.forward && r.name.eq_ignore_ascii_case(name))
                .collect();
            same.dedup_by(|a, b| a.name == b.name);
            match same.as_slice() {
                [one] => one.index,
                _ => return Err(not_found),
            }
        }
    };
    Ok(match table.record(index) {
        Some(record) => Found::Record(record),
        None => Found::Enum {
            name: name.to_string(),
            size: table.describe(index).size(),
        },
    })
}

/// Up to `limit` names of defined records that contain `name`, ignoring case (for "no type
/// `X`" messages).
pub fn similar_names(table: &TypeTable, name: &str, limit: usize) -> Vec<String> {
    let needle = name.to_ascii_lowercase();
    let mut names: Vec<String> = table
        .records()
        .filter(|r| !r.forward && r.name.to_ascii_lowercase().contains(&needle))
        .map(|r| r.name)
        .collect();
    names.sort();
    names.dedup();
    names.truncate(limit);
    names
}

/// `*` any run of characters, `?` one; without case (WinDbg's `dt nt!_MM_*`).
pub fn is_pattern(name: &str) -> bool {
    name.contains(['*', '?'])
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative wildcard match with one backtrack point: linear in practice, never recursive.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c.eq_ignore_ascii_case(&text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The named structures and unions whose names match `pattern`, each name once (its first
/// definition), sorted by name: (name, kind, size). Anonymous records (`_X::<unnamed-tag>`, many
/// of one name) are left out: they are seen through their parents.
pub fn matching(table: &TypeTable, pattern: &str) -> Vec<(String, RecordKind, u64)> {
    let mut found: Vec<(String, RecordKind, u64)> = table
        .records()
        .filter(|r| {
            !r.forward && !is_anonymous_name(&r.name) && glob(pattern.as_bytes(), r.name.as_bytes())
        })
        .map(|r| (r.name, r.kind, r.size))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found.dedup_by(|a, b| a.0 == b.0);
    found
}

/// One member in `kdleak types --format json` (README "`kdleak types`").
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberLayout {
    pub name: String,
    /// Bytes from the start of the record that declares it.
    pub offset: u64,
    /// Bytes (a bitfield: its storage unit's).
    pub size: u64,
    /// The type as C writes it: `volatile unsigned long`, `struct`/`union` names bare.
    #[serde(rename = "type")]
    pub c_type: String,
    /// The type column of WinDbg's `dt`, with qualifiers: `volatile Uint4B`.
    pub dt: String,
    /// `const`, `volatile`, `unaligned` of the member's own type (an array's: its elements').
    pub qualifiers: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitfield: Option<BitRange>,
    /// The embedded record's members, when walked into (`-r`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<MemberLayout>>,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct BitRange {
    pub position: u8,
    pub width: u8,
}

/// A structure, union or enum in `kdleak types --format json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TypeLayout {
    pub name: String,
    /// `struct`, `union` or `enum`.
    pub kind: &'static str,
    pub size: u64,
    /// Absent for an enum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<MemberLayout>>,
}

/// Walks records into layouts: never into a record it is already inside (a valid PDB has no
/// such cycle, a corrupt one must not recurse forever) and never past [`MAX_MEMBERS`].
struct Walk<'a> {
    table: &'a TypeTable,
    inside: Vec<u32>,
    members: usize,
}

/// The most members one layout lists: far above any real nesting (a kernel's `_KPRCB` walked
/// nine levels deep is a few thousand); only a hostile PDB gets near it.
pub const MAX_MEMBERS: usize = 200_000;

impl Walk<'_> {
    fn members(&mut self, index: u32, depth: usize) -> Result<Vec<MemberLayout>> {
        let members = self.table.members_at(index)?;
        self.members += members.len();
        if self.members > MAX_MEMBERS {
            return Err(SymbolError::BadType {
                pdb: self.table.path().to_path_buf(),
                index,
                reason: format!(
                    "walking into embedded records lists more than {MAX_MEMBERS} members; use a \
                     smaller -r"
                ),
            });
        }
        self.inside.push(index);
        let laid_out = members
            .iter()
            .map(|m| self.member(m, depth))
            .collect::<Result<Vec<_>>>();
        self.inside.pop();
        laid_out
    }

    fn member(&mut self, m: &MemberInfo, depth: usize) -> Result<MemberLayout> {
        let q = m.field.ty.qualifiers();
        let qualifiers = [
            (q.constant, "const"),
            (q.volatile, "volatile"),
            (q.unaligned, "unaligned"),
        ]
        .into_iter()
        .filter_map(|(on, word)| on.then_some(word))
        .collect();
        let members = match m.embeds {
            Some(inner) if depth > 0 && !self.inside.contains(&inner) => {
                Some(self.members(inner, depth - 1)?)
            }
            _ => None,
        };
        Ok(MemberLayout {
            name: m.name.clone(),
            offset: m.field.offset,
            size: m.field.size,
            c_type: m.field.ty.describe(),
            dt: windbg_type(&m.field.ty, m.field.bitfield),
            qualifiers,
            bitfield: m.field.bitfield.map(|b| BitRange {
                position: b.position,
                width: b.width,
            }),
            members,
        })
    }
}

/// The type called `name`, walking `depth` levels (at most [`MAX_RECURSION`]) into embedded
/// records.
pub fn layout(table: &TypeTable, name: &str, depth: usize) -> Result<TypeLayout> {
    let record = match find(table, name)? {
        Found::Enum { name, size } => {
            return Ok(TypeLayout {
                name,
                kind: "enum",
                size,
                members: None,
            })
        }
        Found::Record(record) => record,
    };
    let mut walk = Walk {
        table,
        inside: Vec::new(),
        members: 0,
    };
    Ok(TypeLayout {
        members: Some(walk.members(record.index, depth.min(MAX_RECURSION))?),
        name: record.name,
        kind: kind_word(record.kind),
        size: record.size,
    })
}

/// `dt` text for a layout: `dt -v`'s first line, `dt`'s member lines.
pub fn render_text(layout: &TypeLayout) -> String {
    let Some(members) = &layout.members else {
        return format!(
            "{} {}, {:#x} bytes\n",
            layout.kind, layout.name, layout.size
        );
    };
    let mut out = format!(
        "{} {}, {} elements, {:#x} bytes\n",
        layout.kind,
        layout.name,
        members.len(),
        layout.size
    );
    write_members(members, 1, &mut out);
    out
}

fn write_members(members: &[MemberLayout], level: usize, out: &mut String) {
    let indent = "   ".repeat(level);
    for m in members {
        out.push_str(&format!(
            "{indent}+{:#05x} {:<16} : {}\n",
            m.offset, m.name, m.dt
        ));
        if let Some(inner) = &m.members {
            write_members(inner, level + 1, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbols::Qualifiers;

    const VOLATILE: Qualifiers = Qualifiers {
        constant: false,
        volatile: true,
        unaligned: false,
    };

    fn base(name: &str, size: u64, qualifiers: Qualifiers) -> TypeDesc {
        TypeDesc::Base {
            name: name.into(),
            size,
            qualifiers,
        }
    }

    #[test]
    fn windbg_names_for_primitives_pointers_arrays_and_bitfields() {
        let ulong = base("unsigned long", 4, Qualifiers::NONE);
        assert_eq!(windbg_type(&ulong, None), "Uint4B");
        assert_eq!(
            windbg_type(&base("unsigned long", 4, VOLATILE), None),
            "volatile Uint4B"
        );
        assert_eq!(
            windbg_type(&base("_POOL_TYPE", 4, Qualifiers::NONE), None),
            "_POOL_TYPE"
        );
        let pointer = |target: TypeDesc, qualifiers| TypeDesc::Pointer {
            target: Box::new(target),
            size: 8,
            qualifiers,
        };
        assert_eq!(
            windbg_type(
                &pointer(base("void", 0, Qualifiers::NONE), Qualifiers::NONE),
                None
            ),
            "Ptr64 Void"
        );
        assert_eq!(
            windbg_type(
                &pointer(base("unsigned long", 4, VOLATILE), Qualifiers::NONE),
                None
            ),
            "Ptr64 volatile Uint4B"
        );
        assert_eq!(
            windbg_type(&pointer(ulong.clone(), VOLATILE), None),
            "volatile Ptr64 Uint4B"
        );
        let function = TypeDesc::Function {
            returns: Box::new(base("long", 4, Qualifiers::NONE)),
        };
        assert_eq!(
            windbg_type(&pointer(function, Qualifiers::NONE), None),
            "Ptr64     long"
        );
        let bytes = TypeDesc::Array {
            element: Box::new(TypeDesc::Array {
                element: Box::new(base("unsigned char", 1, Qualifiers::NONE)),
                count: 3,
                size: 3,
            }),
            count: 2,
            size: 6,
        };
        assert_eq!(windbg_type(&bytes, None), "[2] [3] UChar");
        let bits = |width| Bitfield { position: 3, width };
        assert_eq!(windbg_type(&ulong, Some(bits(5))), "Pos 3, 5 Bits");
        assert_eq!(windbg_type(&ulong, Some(bits(1))), "Pos 3, 1 Bit");
        assert_eq!(
            windbg_type(&base("unsigned long", 4, VOLATILE), Some(bits(1))),
            "volatile Pos 3, 1 Bit"
        );
    }

    #[test]
    fn wildcards_match_without_case() {
        let yes = |p: &str, t: &str| glob(p.as_bytes(), t.as_bytes());
        assert!(yes("_MM_*", "_MM_DRIVER_VERIFIER_DATA"));
        assert!(yes("_mm_*data", "_MM_DRIVER_VERIFIER_DATA"));
        assert!(yes("*VERIFIER*", "_MM_DRIVER_VERIFIER_DATA"));
        assert!(yes("_VF_?VL_TREE", "_VF_AVL_TREE"));
        assert!(!yes("_VF_?VL_TREE", "_VF_AVL_TREE_NODE"));
        assert!(!yes("_MM_*", "_VF_AVL_TREE"));
        assert!(yes("*", ""));
    }
}
