//! What LLVM's PDB reader says a PDB holds: `llvm-pdbutil-14 dump -types`, `-publics` and
//! `-section-headers`, parsed from their text. This is the independent side of
//! `tests/pdb_differential.rs`; nothing here uses kdleak's symbols code.
//!
//! Quirks of llvm-pdbutil 14's text this parser handles (its `MinimalTypeDumper.cpp`):
//! * sizes, member offsets, bit positions and public-symbol section offsets are **decimal**
//!   (`addr = 0003:4528` is section 3, offset 0x11b0); type indexes and section addresses hex;
//! * a simple (primitive) type index is printed with its name, `0x0022 (unsigned long)`, any other
//!   index bare, `0x1003`; `<no type>` is index 0;
//! * a forward reference names its definition when llvm-pdbutil could look it up through the TPI
//!   hash: `forward ref (-> 0x101B)` (or `<-`); `forward ref (= 0x…)`, naming itself, when the
//!   hash has no definition for it, and `forward ref (???)` when the lookup failed;
//! * class options are typeset four to a line, so an `options:` list may wrap: the detail lines
//!   of a record are read as one text;
//! * a long field list continues in another `LF_FIELDLIST`: `- LF_INDEX continuation = 0x…`;
//! * anonymous unions and structures are flattened into the parent's field list by the compiler
//!   (their members appear as the parent's, at their offsets); nested anonymous types that are
//!   kept are ordinary records named `Parent::<unnamed-tag>` (many with one name);
//! * names are between backticks, and C++ names may contain backticks themselves
//!   (`` `anonymous namespace'::X ``): a name runs to the last backtick of its line;
//! * a leaf kind LLVM 14 does not know is `UNKNOWN RECORD (1609)`: the `LF_CLASS2`,
//!   `LF_STRUCTURE2`, `LF_UNION2`, `LF_INTERFACE2` records (0x1608–0x160b) of recent MSVC kernel
//!   PDBs (symbols.md §0.2) are such; the comparison cannot check what it cannot read.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;

/// The tool, as `.ci/run` installs it (Debian `llvm-14`); `LLVM_PDBUTIL` overrides.
pub fn tool() -> String {
    let tool = std::env::var("LLVM_PDBUTIL").unwrap_or_else(|_| "llvm-pdbutil-14".into());
    match Command::new(&tool).arg("--version").output() {
        Ok(out) if out.status.success() => tool,
        _ => panic!(
            "`{tool}` is not installed: the PDB differential check needs LLVM's PDB reader \
             (`apt-get install -y llvm-14`, which scripts/test does; or set LLVM_PDBUTIL to another \
             llvm-pdbutil)"
        ),
    }
}

/// Runs `tool dump ARGS pdb` and returns its standard output.
pub fn dump(tool: &str, args: &[&str], pdb: &Path) -> Result<String, String> {
    let out = Command::new(tool)
        .arg("dump")
        .args(args)
        .arg(pdb)
        .output()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{tool} dump {} {} failed: {}",
            args.join(" "),
            pdb.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Struct,
    Class,
    Interface,
    Union,
}

/// Where llvm-pdbutil says a forward reference leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardTarget {
    /// Not a forward reference.
    None,
    /// `forward ref (-> 0x…)`.
    To(u32),
    /// `forward ref (???)`, or `(= itself)`: the TPI hash has no definition for it.
    Unresolved,
    /// `forward ref` without a target: the PDB has no TPI hash to look it up.
    NotLookedUp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub ty: u32,
    /// Decimal in the dump.
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Udt {
        kind: Kind,
        name: String,
        size: u64,
        field_list: Option<u32>,
        forward: ForwardTarget,
    },
    Enum {
        name: String,
        underlying: u32,
        forward: ForwardTarget,
    },
    FieldList {
        /// `LF_MEMBER`s only: the data members with an offset.
        members: Vec<Member>,
        continuation: Option<u32>,
        /// `LF_BCLASS`/`LF_VBCLASS`/`LF_IVBCLASS`/`LF_VFUNCTAB`: layout parts that are not
        /// named data members.
        bases: usize,
    },
    Pointer {
        referent: u32,
        mode: String,
        opts: Vec<String>,
        kind: String,
    },
    Modifier {
        referent: u32,
        modifiers: Vec<String>,
    },
    Array {
        element: u32,
        size: u64,
    },
    Bitfield {
        ty: u32,
        position: u8,
        width: u8,
    },
    Procedure {
        returns: u32,
    },
    Other(String),
}

/// The type stream as llvm-pdbutil printed it.
#[derive(Debug, Default)]
pub struct Types {
    pub records: BTreeMap<u32, Record>,
    /// Names llvm-pdbutil gave the simple (primitive) type indexes it printed.
    pub simple_names: HashMap<u32, String>,
}

/// A public symbol (`S_PUB32`): name, section (1-based) and offset in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    pub name: String,
    pub section: u16,
    pub offset: u32,
}

/// The text between the first and the last backtick of `line`.
fn backticked(line: &str) -> Option<&str> {
    let start = line.find('`')?;
    let end = line.rfind('`')?;
    (end > start).then(|| &line[start + 1..end])
}

fn hex(text: &str) -> Option<u32> {
    u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

/// A type index as printed: `0x1003`, `0x0022 (unsigned long)` or `<no type>` (0). Returns the
/// index and the rest of `text` after it; remembers the name of a simple index.
fn type_index<'a>(text: &'a str, types: &mut Types) -> Option<(u32, &'a str)> {
    let text = text.trim_start();
    if let Some(rest) = text.strip_prefix("<no type>") {
        return Some((0, rest));
    }
    let digits = text.strip_prefix("0x")?;
    let end = digits
        .find(|c: char| !c.is_ascii_hexdigit())
        .unwrap_or(digits.len());
    let index = u32::from_str_radix(&digits[..end], 16).ok()?;
    let mut rest = &digits[end..];
    if let Some(named) = rest.strip_prefix(" (") {
        // Simple type names hold no parentheses (`unsigned long*`, `std::nullptr_t`).
        let close = named.find(')')?;
        types.simple_names.insert(index, named[..close].to_string());
        rest = &named[close + 1..];
    }
    Some((index, rest))
}

/// The type index after `key` in `text`.
fn field_index(text: &str, key: &str, types: &mut Types) -> Option<u32> {
    let at = text.find(key)? + key.len();
    type_index(&text[at..], types).map(|(index, _)| index)
}

/// The decimal number after `key` in `text`.
fn field_number(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits: String = text[at..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// The `|`-separated words after `key`, up to the next `,`.
fn field_words(text: &str, key: &str) -> Vec<String> {
    let Some(at) = text.find(key) else {
        return Vec::new();
    };
    let rest = &text[at + key.len()..];
    let rest = &rest[..rest.find(',').unwrap_or(rest.len())];
    rest.split('|')
        .map(|w| w.trim().to_string())
        .filter(|w| !w.is_empty() && w != "None")
        .collect()
}

fn forward_target(index: u32, details: &str) -> ForwardTarget {
    let Some(at) = details.find("forward ref") else {
        return ForwardTarget::None;
    };
    let rest = details[at + "forward ref".len()..].trim_start();
    if rest.starts_with("(???)") {
        return ForwardTarget::Unresolved;
    }
    for arrow in ["(-> ", "(<- ", "(= "] {
        if let Some(target) = rest.strip_prefix(arrow) {
            let end = target.find(')').unwrap_or(target.len());
            // llvm's lookup answers the forward reference itself when it finds no definition.
            return match hex(&target[..end]) {
                Some(to) if to != index => ForwardTarget::To(to),
                _ => ForwardTarget::Unresolved,
            };
        }
    }
    ForwardTarget::NotLookedUp
}

/// One record of the dump: its header line and the lines under it.
struct Raw<'a> {
    index: u32,
    leaf: &'a str,
    header: &'a str,
    lines: Vec<&'a str>,
}

fn parse_record(raw: &Raw<'_>, types: &mut Types) -> Record {
    // Member lines (`- LF_…`) and their own detail lines are kept apart from the record's.
    let own: Vec<&str> = raw
        .lines
        .iter()
        .copied()
        .take_while(|l| !l.trim_start().starts_with("- "))
        .filter(|l| !l.trim_start().starts_with("unique name:"))
        .collect();
    let details = own.join(" ");
    let name = || backticked(raw.header).unwrap_or("").to_string();
    match raw.leaf {
        "LF_STRUCTURE" | "LF_CLASS" | "LF_INTERFACE" | "LF_UNION" => Record::Udt {
            kind: match raw.leaf {
                "LF_CLASS" => Kind::Class,
                "LF_INTERFACE" => Kind::Interface,
                "LF_UNION" => Kind::Union,
                _ => Kind::Struct,
            },
            name: name(),
            size: field_number(&details, "sizeof ").unwrap_or(0),
            field_list: field_index(&details, "field list: ", types).filter(|&i| i != 0),
            forward: forward_target(raw.index, &details),
        },
        "LF_ENUM" => Record::Enum {
            name: name(),
            underlying: field_index(&details, "underlying type: ", types).unwrap_or(0),
            forward: forward_target(raw.index, &details),
        },
        "LF_FIELDLIST" => {
            let mut members = Vec::new();
            let mut continuation = None;
            let mut bases = 0;
            for line in &raw.lines {
                let line = line.trim_start();
                if let Some(member) = line.strip_prefix("- LF_MEMBER [") {
                    if let Some(m) = parse_member(member, types) {
                        members.push(m);
                    }
                } else if let Some(rest) = line.strip_prefix("- LF_INDEX") {
                    continuation = field_index(rest, "continuation = ", types);
                } else if [
                    "- LF_BCLASS",
                    "- LF_VBCLASS",
                    "- LF_IVBCLASS",
                    "- LF_VFUNCTAB",
                ]
                .iter()
                .any(|p| line.starts_with(p))
                {
                    bases += 1;
                }
            }
            Record::FieldList {
                members,
                continuation,
                bases,
            }
        }
        "LF_POINTER" => Record::Pointer {
            referent: field_index(&details, "referent = ", types).unwrap_or(0),
            mode: field_words(&details, "mode = ").join(" "),
            opts: field_words(&details, "opts = "),
            kind: field_words(&details, "kind = ").join(" "),
        },
        "LF_MODIFIER" => Record::Modifier {
            referent: field_index(&details, "referent = ", types).unwrap_or(0),
            modifiers: field_words(&details, "modifiers = "),
        },
        "LF_ARRAY" => Record::Array {
            element: field_index(&details, "element type: ", types).unwrap_or(0),
            size: field_number(&details, "size: ").unwrap_or(0),
        },
        "LF_BITFIELD" => Record::Bitfield {
            ty: field_index(&details, "type = ", types).unwrap_or(0),
            position: field_number(&details, "bit offset = ").unwrap_or(0) as u8,
            width: field_number(&details, "# bits = ").unwrap_or(0) as u8,
        },
        "LF_PROCEDURE" | "LF_MFUNCTION" => Record::Procedure {
            returns: field_index(&details, "return type = ", types).unwrap_or(0),
        },
        other => Record::Other(other.to_string()),
    }
}

/// `name = `X`, Type = 0x1003, offset = 0, attrs = public]`.
fn parse_member(text: &str, types: &mut Types) -> Option<Member> {
    let name_start = text.find("name = `")? + "name = `".len();
    let name_end = text.rfind("`, Type = ")?;
    let name = text.get(name_start..name_end)?.to_string();
    let after = &text[name_end + "`, Type = ".len()..];
    let (ty, rest) = type_index(after, types)?;
    let offset = field_number(rest, "offset = ")?;
    Some(Member { name, ty, offset })
}

/// Parses `llvm-pdbutil dump -types` output.
pub fn parse_types(text: &str) -> Types {
    let mut types = Types::default();
    let mut raws: Vec<Raw<'_>> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let header = trimmed.strip_prefix("0x").and_then(|rest| {
            let (index, tail) = rest.split_once(" | ")?;
            let index = u32::from_str_radix(index, 16).ok()?;
            if tail.starts_with("UNKNOWN RECORD (") {
                let end = tail.find(')')? + 1;
                return Some((index, &tail[..end]));
            }
            let leaf = tail.split_whitespace().next()?;
            leaf.starts_with("LF_").then_some((index, leaf))
        });
        match header {
            Some((index, leaf)) => raws.push(Raw {
                index,
                leaf,
                header: trimmed,
                lines: Vec::new(),
            }),
            None => {
                if let Some(raw) = raws.last_mut() {
                    raw.lines.push(line);
                }
            }
        }
    }
    for raw in &raws {
        let record = parse_record(raw, &mut types);
        types.records.insert(raw.index, record);
    }
    types
}

/// Parses `llvm-pdbutil dump -publics` output.
pub fn parse_publics(text: &str) -> Vec<Public> {
    let mut publics = Vec::new();
    let mut name: Option<String> = None;
    for line in text.lines() {
        if line.contains("| S_PUB32 [") {
            name = backticked(line).map(str::to_string);
        } else if let (Some(n), Some(at)) = (&name, line.find("addr = ")) {
            let addr = &line[at + "addr = ".len()..];
            let addr = addr.split([',', ' ']).next().unwrap_or("");
            if let Some((section, offset)) = addr.split_once(':') {
                if let (Ok(section), Ok(offset)) = (section.parse(), offset.parse()) {
                    publics.push(Public {
                        name: n.clone(),
                        section,
                        offset,
                    });
                }
            }
            name = None;
        }
    }
    publics
}

/// The section headers of `llvm-pdbutil dump -section-headers`: each section's virtual address,
/// in order (section 1 first). `None` when the PDB has original (pre-OMAP) section headers too:
/// its public addresses then need the OMAP, which this parser does not read.
pub fn parse_sections(text: &str) -> Option<Vec<u32>> {
    let (current, original) = text
        .split_once("Original Section Headers")
        .unwrap_or((text, ""));
    if original.contains("SECTION HEADER #") {
        return None;
    }
    Some(
        current
            .lines()
            .filter_map(|l| l.trim().strip_suffix(" virtual address"))
            .filter_map(hex)
            .collect(),
    )
}

/// A type as both sides can describe it, for comparison: qualifiers as a sorted word list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    Base {
        name: String,
        size: u64,
        qualifiers: Vec<&'static str>,
    },
    Record {
        union: bool,
        name: String,
        size: u64,
        qualifiers: Vec<&'static str>,
    },
    Pointer {
        target: Box<Shape>,
        size: u64,
        qualifiers: Vec<&'static str>,
    },
    Array {
        element: Box<Shape>,
        count: u64,
        size: u64,
    },
    Function {
        returns: Box<Shape>,
    },
    /// What llvm-pdbutil printed that the comparison does not model.
    Unknown(String),
}

/// How [`Types::shape`] describes a record llvm-pdbutil printed as `UNKNOWN RECORD (…)`.
pub const UNDECODABLE: &str = "UNKNOWN RECORD";

impl Shape {
    /// Whether llvm-pdbutil could not decode some record this type is made of.
    pub fn undecodable(&self) -> bool {
        match self {
            Shape::Unknown(what) => what.starts_with(UNDECODABLE),
            Shape::Pointer { target, .. } => target.undecodable(),
            Shape::Array { element, .. } => element.undecodable(),
            Shape::Function { returns } => returns.undecodable(),
            Shape::Base { .. } | Shape::Record { .. } => false,
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            Shape::Base { size, .. }
            | Shape::Record { size, .. }
            | Shape::Pointer { size, .. }
            | Shape::Array { size, .. } => *size,
            Shape::Function { .. } | Shape::Unknown(_) => 0,
        }
    }

    fn qualified(self, more: &[&'static str]) -> Shape {
        let merge = |mut q: Vec<&'static str>| {
            q.extend_from_slice(more);
            q.sort_unstable();
            q.dedup();
            q
        };
        match self {
            Shape::Base {
                name,
                size,
                qualifiers,
            } => Shape::Base {
                name,
                size,
                qualifiers: merge(qualifiers),
            },
            Shape::Record {
                union,
                name,
                size,
                qualifiers,
            } => Shape::Record {
                union,
                name,
                size,
                qualifiers: merge(qualifiers),
            },
            Shape::Pointer {
                target,
                size,
                qualifiers,
            } => Shape::Pointer {
                target,
                size,
                qualifiers: merge(qualifiers),
            },
            Shape::Array {
                element,
                count,
                size,
            } => Shape::Array {
                element: Box::new(element.qualified(more)),
                count,
                size,
            },
            other => other,
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = |q: &Vec<&str>| {
            q.iter()
                .map(|w| format!("{w} "))
                .collect::<Vec<_>>()
                .concat()
        };
        match self {
            Shape::Base {
                name,
                size,
                qualifiers,
            } => write!(f, "{}{name} ({size} bytes)", q(qualifiers)),
            Shape::Record {
                union,
                name,
                size,
                qualifiers,
            } => {
                let kind = if *union { "union" } else { "struct" };
                write!(f, "{}{kind} {name} ({size} bytes)", q(qualifiers))
            }
            Shape::Pointer {
                target,
                size,
                qualifiers,
            } => write!(f, "{}pointer({size}) to {target}", q(qualifiers)),
            Shape::Array {
                element,
                count,
                size,
            } => write!(f, "[{count}] ({size} bytes) of {element}"),
            Shape::Function { returns } => write!(f, "function returning {returns}"),
            Shape::Unknown(what) => write!(f, "<{what}>"),
        }
    }
}

/// kdleak's names for llvm-pdbutil's spellings of the same CodeView primitive (cvinfo.h):
/// `unsigned` is `T_UINT4`, `__int16` `T_INT2`, … .
fn primitive_name(llvm: &str) -> &str {
    match llvm {
        "unsigned" => "unsigned int",
        "__int8" => "signed char",
        "unsigned __int8" => "unsigned char",
        "__int16" => "short",
        "unsigned __int16" => "unsigned short",
        "__half" => "half",
        "__bool16" => "bool16",
        "__bool32" => "bool32",
        "__bool64" => "bool64",
        other => other,
    }
}

/// Sizes of the primitive kinds (cvinfo.h `CV_BASICTYPE`), by llvm-pdbutil's names.
fn primitive_size(llvm: &str) -> u64 {
    match llvm {
        "void" => 0,
        "signed char" | "unsigned char" | "char" | "char8_t" | "__int8" | "unsigned __int8"
        | "bool" => 1,
        "wchar_t" | "char16_t" | "short" | "unsigned short" | "__int16" | "unsigned __int16"
        | "__half" | "__bool16" => 2,
        "HRESULT" | "char32_t" | "long" | "unsigned long" | "int" | "unsigned" | "float"
        | "__bool32" => 4,
        "__int64" | "unsigned __int64" | "double" | "__bool64" => 8,
        "long double" => 10,
        "__int128" | "unsigned __int128" | "__float128" => 16,
        _ => 0,
    }
}

fn pointer_size(kind: &str) -> u64 {
    match kind {
        "ptr64" => 8,
        "ptr32" | "far ptr32" => 4,
        _ => 2,
    }
}

fn qualifier_words(words: &[String]) -> Vec<&'static str> {
    let mut q: Vec<&'static str> = words
        .iter()
        .filter_map(|w| match w.as_str() {
            "const" => Some("const"),
            "volatile" => Some("volatile"),
            "unaligned" => Some("unaligned"),
            _ => None,
        })
        .collect();
    q.sort_unstable();
    q
}

const MAX_DEPTH: usize = 32;

impl Types {
    /// Whether llvm-pdbutil printed the record at `index` as a leaf kind it does not know.
    pub fn is_undecodable(&self, index: u32) -> bool {
        matches!(self.records.get(&index), Some(Record::Other(leaf)) if leaf.starts_with(UNDECODABLE))
    }

    /// Every structure, class, interface and union record, in index order.
    pub fn udts(&self) -> impl Iterator<Item = (u32, &Record)> {
        self.records
            .iter()
            .filter(|(_, r)| matches!(r, Record::Udt { .. }))
            .map(|(i, r)| (*i, r))
    }

    /// The first definition (not a forward reference) of a record or enum called `name`.
    pub fn first_definition(&self, name: &str, enumeration: bool) -> Option<u32> {
        self.records
            .iter()
            .find_map(|(index, record)| match record {
                Record::Udt {
                    name: n,
                    forward: ForwardTarget::None,
                    ..
                } if !enumeration && n == name => Some(*index),
                Record::Enum {
                    name: n,
                    forward: ForwardTarget::None,
                    ..
                } if enumeration && n == name => Some(*index),
                _ => None,
            })
    }

    /// Where a forward reference leads by llvm-pdbutil's word, else by the first definition
    /// of its name.
    pub fn definition_of(&self, index: u32) -> Option<u32> {
        match self.records.get(&index)? {
            Record::Udt { name, forward, .. } => match forward {
                ForwardTarget::None => Some(index),
                ForwardTarget::To(to) => Some(*to),
                ForwardTarget::Unresolved => None,
                ForwardTarget::NotLookedUp => self.first_definition(name, false),
            },
            Record::Enum { name, forward, .. } => match forward {
                ForwardTarget::None => Some(index),
                ForwardTarget::To(to) => Some(*to),
                ForwardTarget::Unresolved => None,
                ForwardTarget::NotLookedUp => self.first_definition(name, true),
            },
            _ => None,
        }
    }

    /// The data members of the field list `index`, following continuations; and the number of
    /// base-class/vtable entries met.
    pub fn members(&self, index: Option<u32>) -> (Vec<Member>, usize) {
        let mut out = Vec::new();
        let mut bases = 0;
        let mut next = index;
        let mut hops = 0;
        while let Some(i) = next {
            let Some(Record::FieldList {
                members,
                continuation,
                bases: b,
            }) = self.records.get(&i)
            else {
                break;
            };
            out.extend(members.iter().cloned());
            bases += b;
            next = *continuation;
            hops += 1;
            if hops > 4096 {
                break;
            }
        }
        (out, bases)
    }

    /// The type at `index`, and its bit range when it is a bitfield.
    pub fn member_shape(&self, index: u32) -> (Shape, Option<(u8, u8)>) {
        match self.records.get(&index) {
            Some(Record::Bitfield {
                ty,
                position,
                width,
            }) => (self.shape(*ty), Some((*position, *width))),
            _ => (self.shape(index), None),
        }
    }

    pub fn shape(&self, index: u32) -> Shape {
        self.shape_depth(index, 0)
    }

    fn shape_depth(&self, index: u32, depth: usize) -> Shape {
        if depth > MAX_DEPTH {
            return Shape::Unknown("too deep".into());
        }
        if index < 0x1000 {
            return self.simple(index);
        }
        let next = |i: u32| self.shape_depth(i, depth + 1);
        match self.records.get(&index) {
            Some(Record::Modifier {
                referent,
                modifiers,
            }) => next(*referent).qualified(&qualifier_words(modifiers)),
            Some(Record::Udt {
                kind, name, size, ..
            }) => {
                let size = match self.definition_of(index).and_then(|d| self.records.get(&d)) {
                    Some(Record::Udt { size, .. }) => *size,
                    _ => *size,
                };
                Shape::Record {
                    union: *kind == Kind::Union,
                    name: name.clone(),
                    size,
                    qualifiers: Vec::new(),
                }
            }
            Some(Record::Enum { name, .. }) => {
                let underlying = match self.definition_of(index).and_then(|d| self.records.get(&d))
                {
                    Some(Record::Enum { underlying, .. }) => next(*underlying).size(),
                    _ => 0,
                };
                Shape::Base {
                    name: name.clone(),
                    size: underlying,
                    qualifiers: Vec::new(),
                }
            }
            Some(Record::Pointer {
                referent,
                mode,
                opts,
                kind,
            }) => match mode.as_str() {
                "pointer" | "ref" | "rvalue ref" => Shape::Pointer {
                    target: Box::new(next(*referent)),
                    size: pointer_size(kind),
                    qualifiers: qualifier_words(opts),
                },
                other => Shape::Unknown(format!("{other} pointer")),
            },
            Some(Record::Array { element, size }) => {
                let element = next(*element);
                let count = match element.size() {
                    0 => 0,
                    n => size / n,
                };
                Shape::Array {
                    element: Box::new(element),
                    count,
                    size: *size,
                }
            }
            Some(Record::Bitfield { ty, .. }) => next(*ty),
            Some(Record::Procedure { returns }) => Shape::Function {
                returns: Box::new(next(if *returns == 0 { 0x03 } else { *returns })),
            },
            Some(Record::Other(leaf)) if leaf.starts_with(UNDECODABLE) => {
                Shape::Unknown(leaf.clone())
            }
            Some(other) => Shape::Unknown(format!("{other:?}")),
            None => Shape::Unknown(format!("no record {index:#x}")),
        }
    }

    fn simple(&self, index: u32) -> Shape {
        let printed = self
            .simple_names
            .get(&index)
            .cloned()
            .unwrap_or_else(|| format!("<simple {index:#x}>"));
        let mode = (index >> 8) & 0xf;
        let base_name = printed.strip_suffix('*').unwrap_or(&printed).to_string();
        let base = Shape::Base {
            name: primitive_name(&base_name).to_string(),
            size: primitive_size(&base_name),
            qualifiers: Vec::new(),
        };
        // cvinfo.h CV_prmode_e: 0 direct, 4/5 32-bit pointers, 6 64-bit.
        match mode {
            0 => base,
            4 | 5 => Shape::Pointer {
                target: Box::new(base),
                size: 4,
                qualifiers: Vec::new(),
            },
            _ => Shape::Pointer {
                target: Box::new(base),
                size: 8,
                qualifiers: Vec::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = r#"
                     Types (TPI Stream)
============================================================
  Showing 6 records
  0x1002 | LF_STRUCTURE [size = 36] `_Q`
           vtable: <no type>, base list: <no type>, field list: <no type>
           options: forward ref (-> 0x1006), sizeof 0
  0x1003 | LF_MODIFIER [size = 12]
           referent = 0x0022 (unsigned long), modifiers = const | volatile
  0x1004 | LF_FIELDLIST [size = 28]
           - LF_MEMBER [name = `A`, Type = 0x1003, offset = 0, attrs = public]
           - LF_INDEX continuation = 0x1005
  0x1005 | LF_FIELDLIST [size = 28]
           - LF_MEMBER [name = `B`, Type = 0x0622 (unsigned long*), offset = 16, attrs = public]
  0x1006 | LF_STRUCTURE [size = 36] `_Q`
           vtable: <no type>, base list: <no type>, field list: 0x1004
           options: has ctor / dtor | contains nested class | has unique name | overloaded operator
                    | sealed, sizeof 24
  0x1007 | LF_UNION [size = 36] `ns::`anonymous namespace'::U`
           field list: <no type>
           options: forward ref (???), sizeof 0
  0x1008 | UNKNOWN RECORD (1609) [size = 48]
  0x1009 | LF_POINTER [size = 12]
           referent = 0x1008, mode = pointer, opts = None, kind = ptr64
"#;

    #[test]
    fn records_members_continuations_and_wrapped_options() {
        let t = parse_types(DUMP);
        assert_eq!(
            t.records[&0x1002],
            Record::Udt {
                kind: Kind::Struct,
                name: "_Q".into(),
                size: 0,
                field_list: None,
                forward: ForwardTarget::To(0x1006)
            }
        );
        assert!(matches!(
            &t.records[&0x1006],
            Record::Udt {
                size: 24,
                field_list: Some(0x1004),
                ..
            }
        ));
        let (members, _) = t.members(Some(0x1004));
        let names: Vec<_> = members
            .iter()
            .map(|m| (m.name.as_str(), m.offset))
            .collect();
        assert_eq!(names, [("A", 0), ("B", 16)]);
        assert_eq!(
            t.shape(0x1003),
            Shape::Base {
                name: "unsigned long".into(),
                size: 4,
                qualifiers: vec!["const", "volatile"]
            }
        );
        assert_eq!(t.shape(0x0622).size(), 8);
        assert!(
            matches!(&t.records[&0x1007], Record::Udt { kind: Kind::Union, name, forward: ForwardTarget::Unresolved, .. }
            if name == "ns::`anonymous namespace'::U")
        );
    }

    #[test]
    fn publics_have_decimal_offsets() {
        let text = "      24 | S_PUB32 [size = 20] `main`\n           flags = function, addr = 0003:4528\n";
        assert_eq!(
            parse_publics(text),
            [Public {
                name: "main".into(),
                section: 3,
                offset: 0x11b0
            }]
        );
    }
}
