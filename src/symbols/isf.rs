//! The host's reader of Volatility 3's ISF ("intermediate symbol format") tables: the JSON that
//! Volatility's `pdbconv` writes from a Microsoft PDB (`base_types`, `user_types`, `enums`,
//! `symbols`, and `metadata.windows.pdb` naming the PDB's GUID and age). An air-gapped lab that
//! has Volatility's symbol packs but not the kernel's PDB reads the kernel's layouts and `nt!`
//! addresses from here ([`super::isfpack`] finds the file).
//!
//! The tables become the same [`TypeTable`] and [`NameIndex`] a PDB gives, so the pull, `dt` and
//! symbolization run the same code on both. What an ISF does not carry, and what that changes
//! (README "Air-gapped labs"):
//! * no `const`/`volatile` qualifiers — display only: layouts and values read are the same;
//! * declaration order of members at the same offset (the JSON object is keyed by name) — the
//!   members are listed by offset, then bit position, then name;
//! * no sections, sizes or function flags for symbols — an address takes the name of the nearest
//!   preceding symbol, as with a public-only PDB, but also across a section boundary;
//! * no types the converter did not see (e.g. `_KDDEBUGGER_DATA64`, which kdleak reads without
//!   a PDB type anyway, kd.md §4.2).
//!
//! This reader shares no code with the simulator's ISF reader (`src/sim/`): the simulator lays
//! memory out from the ISF, the host reads it back from the PDB or from here, and the two stay
//! independent checks of each other.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::error::{Result, SymbolError};
use super::identity::PdbId;
use super::names::NameIndex;
use super::types::{BuiltMember, RecordKind, TableBuilder, TypeTable};

/// Nesting of one member's type description (pointer to array of …) a table may have; real
/// kernel tables stay below 10.
const MAX_TYPE_DEPTH: usize = 64;
/// Record and enum definitions, members of one record, and symbols a table may have. The
/// Windows 11 22000 kernel's table has 1,767 types, 42,835 symbols and no record over 300
/// members (symbols.md §5.5); these bounds are far above any real table.
const MAX_DEFINITIONS: usize = 500_000;
const MAX_MEMBERS: usize = 100_000;
const MAX_SYMBOLS: usize = 5_000_000;

#[derive(Deserialize)]
struct Document {
    metadata: Metadata,
    #[serde(default)]
    base_types: HashMap<String, BaseType>,
    #[serde(default)]
    user_types: BTreeMap<String, UserType>,
    #[serde(default)]
    enums: BTreeMap<String, EnumType>,
    #[serde(default)]
    symbols: HashMap<String, Symbol>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    windows: Option<WindowsMetadata>,
}

#[derive(Deserialize)]
struct WindowsMetadata {
    #[serde(default)]
    pdb: Option<PdbMetadata>,
}

#[derive(Deserialize)]
struct PdbMetadata {
    #[serde(rename = "GUID")]
    guid: String,
    age: u32,
    #[serde(default)]
    database: Option<String>,
}

#[derive(Deserialize)]
struct BaseType {
    size: u64,
}

#[derive(Deserialize)]
struct UserType {
    kind: String,
    size: u64,
    #[serde(default)]
    fields: BTreeMap<String, FieldDef>,
}

#[derive(Deserialize)]
struct FieldDef {
    offset: u64,
    #[serde(rename = "type")]
    ty: TypeRef,
}

#[derive(Deserialize)]
struct EnumType {
    base: String,
    size: u64,
}

#[derive(Deserialize)]
struct Symbol {
    address: u64,
}

/// A type as an ISF writes it where it is used: `{"kind": "pointer", "subtype": {...}}`.
#[derive(Deserialize)]
struct TypeRef {
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    subtype: Option<Box<TypeRef>>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    bit_position: Option<u32>,
    #[serde(default)]
    bit_length: Option<u32>,
    #[serde(rename = "type", default)]
    ty: Option<Box<TypeRef>>,
}

/// The name a PDB's type stream gives an ISF base type: `pdbconv` renames CodeView's
/// primitives (`__int64` → `long long`, `wchar_t` → `wchar`, `float` → `f32`), and the
/// tables kdleak prints (`kdleak types`) should read the same from either source.
fn pdb_spelling(isf_name: &str) -> &str {
    match isf_name {
        "long long" => "__int64",
        "unsigned long long" => "unsigned __int64",
        "wchar" => "wchar_t",
        "f32" => "float",
        "f64" => "double",
        // The pointer-sized integer pdbconv adds for its own use.
        "pointer" => "unsigned __int64",
        other => other,
    }
}

/// A module's layouts and symbols from an ISF table.
#[derive(Debug)]
pub struct IsfSymbols {
    location: String,
    id: PdbId,
    format: Option<String>,
    types: Arc<TypeTable>,
    names: Arc<NameIndex>,
}

impl IsfSymbols {
    /// Parses an ISF table (already decompressed); `location` names it in every message (a
    /// file, or `PACK.zip!entry`). `fallback_name` is the PDB name when the table's metadata
    /// has no `database`.
    pub fn parse(location: &str, json: &[u8], fallback_name: &str) -> Result<Self> {
        let bad = |reason: String| SymbolError::Isf {
            location: location.to_string(),
            reason,
        };
        let doc: Document =
            serde_json::from_slice(json).map_err(|e| bad(format!("not ISF JSON: {e}")))?;
        let pdb = doc
            .metadata
            .windows
            .as_ref()
            .and_then(|w| w.pdb.as_ref())
            .ok_or_else(|| {
                bad(
                    "its metadata names no Windows PDB (metadata.windows.pdb): not a table \
                     converted from a PDB"
                        .into(),
                )
            })?;
        let id = PdbId {
            name: pdb
                .database
                .clone()
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| fallback_name.to_string()),
            guid: registry_guid(&pdb.guid)
                .ok_or_else(|| bad(format!("metadata GUID `{}` is not 32 hex digits", pdb.guid)))?,
            age: pdb.age,
        };
        if doc.user_types.len() + doc.enums.len() > MAX_DEFINITIONS {
            return Err(bad(format!(
                "{} types and enums, more than the {MAX_DEFINITIONS} a kernel table can have",
                doc.user_types.len() + doc.enums.len()
            )));
        }
        if doc.symbols.len() > MAX_SYMBOLS {
            return Err(bad(format!(
                "{} symbols, more than the {MAX_SYMBOLS} a kernel table can have",
                doc.symbols.len()
            )));
        }
        let types = Converter::new(&doc, location).table()?;
        // RVAs beyond 4 GiB cannot be in an image; such an entry is skipped, not an error.
        let names = NameIndex::from_symbols(doc.symbols.iter().filter_map(|(name, symbol)| {
            u32::try_from(symbol.address)
                .ok()
                .map(|rva| (name.clone(), rva))
        }));
        Ok(Self {
            location: location.to_string(),
            id,
            format: doc.metadata.format.clone(),
            types: Arc::new(types),
            names: Arc::new(names),
        })
    }

    /// Where the table was read from: a file, or `PACK.zip!entry`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The PDB the table was converted from (its metadata's GUID, age and database name).
    pub fn id(&self) -> &PdbId {
        &self.id
    }

    /// The ISF format version the table declares (`6.1.0`).
    pub fn format(&self) -> Option<&str> {
        self.format.as_deref()
    }

    pub fn types(&self) -> Arc<TypeTable> {
        Arc::clone(&self.types)
    }

    pub fn names(&self) -> Arc<NameIndex> {
        Arc::clone(&self.names)
    }
}

/// `BBED7C2955FBE4522AAA23F4B8677AD9` (Volatility's form, the symbol-store key's digits) as
/// `BBED7C29-55FB-E452-2AAA-23F4B8677AD9` ([`PdbId`]'s); dashes and braces are accepted.
pub fn registry_guid(text: &str) -> Option<String> {
    let hex: String = text
        .chars()
        .filter(|c| !matches!(c, '-' | '{' | '}'))
        .collect::<String>()
        .to_ascii_uppercase();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// Turns the JSON's by-name references into the indices of a [`TableBuilder`].
struct Converter<'d> {
    doc: &'d Document,
    location: &'d str,
    builder: TableBuilder,
    records: HashMap<&'d str, u32>,
    undefined: HashMap<String, u32>,
    bases: HashMap<String, u32>,
    enums: HashMap<&'d str, u32>,
    pointer_size: u64,
}

impl<'d> Converter<'d> {
    fn new(doc: &'d Document, location: &'d str) -> Self {
        Self {
            doc,
            location,
            builder: TableBuilder::new(),
            records: HashMap::new(),
            undefined: HashMap::new(),
            bases: HashMap::new(),
            enums: HashMap::new(),
            // pdbconv describes the target's pointer as the base type `pointer`.
            pointer_size: doc.base_types.get("pointer").map_or(8, |p| p.size),
        }
    }

    fn bad(&self, reason: String) -> SymbolError {
        SymbolError::Isf {
            location: self.location.to_string(),
            reason,
        }
    }

    fn table(mut self) -> Result<TypeTable> {
        let doc = self.doc;
        for name in doc.user_types.keys() {
            let slot = self.builder.reserve();
            self.records.insert(name, slot);
        }
        for (name, definition) in &doc.enums {
            let underlying = self.base(&definition.base, definition.size);
            let index = self.builder.enumeration(name.clone(), underlying);
            self.enums.insert(name, index);
        }
        for (name, definition) in &doc.user_types {
            if definition.fields.len() > MAX_MEMBERS {
                return Err(self.bad(format!(
                    "{name} has {} members, more than {MAX_MEMBERS}",
                    definition.fields.len()
                )));
            }
            let kind = match definition.kind.as_str() {
                "union" => RecordKind::Union,
                "struct" | "class" => RecordKind::Struct,
                other => return Err(self.bad(format!("{name} is of unknown kind `{other}`"))),
            };
            // Declaration order is not in the JSON (an object keyed by name): by offset, then
            // bit position, then name.
            let mut fields: Vec<(&String, &FieldDef)> = definition.fields.iter().collect();
            fields.sort_by_key(|(member, f)| {
                let bit = f.ty.bit_position.filter(|_| f.ty.kind == "bitfield");
                (f.offset, bit.unwrap_or(0), member.as_str())
            });
            let mut members: Vec<BuiltMember> = Vec::with_capacity(fields.len());
            for (member, field) in fields {
                let ty = self
                    .reference(&field.ty, 0)
                    .map_err(|reason| self.bad(format!("{name}.{member}: {reason}")))?;
                members.push((member.clone(), field.offset, ty));
            }
            let list = self.builder.field_list(members);
            self.builder.define_record(
                self.records[name.as_str()],
                kind,
                name.clone(),
                definition.size,
                Some(list),
            );
        }
        Ok(self.builder.finish(PathBuf::from(self.location)))
    }

    /// The leaf for base type `name`, one per name.
    fn base(&mut self, name: &str, fallback_size: u64) -> u32 {
        if let Some(&index) = self.bases.get(name) {
            return index;
        }
        let size = self
            .doc
            .base_types
            .get(name)
            .map_or(fallback_size, |b| b.size);
        let index = self.builder.base(pdb_spelling(name).to_string(), size);
        self.bases.insert(name.to_string(), index);
        index
    }

    /// The index of a type described where it is used.
    fn reference(&mut self, ty: &TypeRef, depth: usize) -> std::result::Result<u32, String> {
        if depth > MAX_TYPE_DEPTH {
            return Err(format!("type nested deeper than {MAX_TYPE_DEPTH} levels"));
        }
        let name = || {
            ty.name
                .as_deref()
                .ok_or_else(|| format!("a `{}` type without a name", ty.kind))
        };
        Ok(match ty.kind.as_str() {
            "base" => self.base(name()?, 0),
            "struct" | "union" | "class" => {
                let name = name()?;
                match self.records.get(name) {
                    Some(&index) => index,
                    None => match self.undefined.get(name) {
                        Some(&index) => index,
                        None => {
                            let kind = if ty.kind == "union" {
                                RecordKind::Union
                            } else {
                                RecordKind::Struct
                            };
                            let index = self.builder.undefined_record(kind, name.to_string());
                            self.undefined.insert(name.to_string(), index);
                            index
                        }
                    },
                }
            }
            "enum" => {
                let name = name()?;
                match self.enums.get(name) {
                    Some(&index) => index,
                    None => return Err(format!("enum `{name}` is not defined")),
                }
            }
            "pointer" => {
                let to = match &ty.subtype {
                    Some(subtype) => self.reference(subtype, depth + 1)?,
                    None => self.base("void", 0),
                };
                self.builder.pointer(to, self.pointer_size)
            }
            "array" => {
                let subtype = ty.subtype.as_deref().ok_or("an array without a subtype")?;
                let count = ty.count.ok_or("an array without a count")?;
                let element_size = self.size_of(subtype, depth + 1)?;
                let bytes = count
                    .checked_mul(element_size)
                    .filter(|&b| b <= u64::from(u32::MAX))
                    .ok_or_else(|| format!("an array of {count} elements is too large"))?;
                let element = self.reference(subtype, depth + 1)?;
                self.builder.array(element, bytes)
            }
            "bitfield" => {
                let base = ty.ty.as_deref().ok_or("a bitfield without a type")?;
                let position = ty.bit_position.ok_or("a bitfield without bit_position")?;
                let width = ty.bit_length.ok_or("a bitfield without bit_length")?;
                let storage = self.size_of(base, depth + 1)?;
                if width == 0 || u64::from(position) + u64::from(width) > storage * 8 {
                    return Err(format!(
                        "bits {position}..{} do not fit its {storage}-byte storage",
                        position + width
                    ));
                }
                let base = self.reference(base, depth + 1)?;
                self.builder.bitfield(base, position as u8, width as u8)
            }
            "function" => self.builder.function(),
            other => return Err(format!("unknown type kind `{other}`")),
        })
    }

    /// `sizeof` a type described where it is used (array elements, bitfield storage).
    fn size_of(&self, ty: &TypeRef, depth: usize) -> std::result::Result<u64, String> {
        if depth > MAX_TYPE_DEPTH {
            return Err(format!("type nested deeper than {MAX_TYPE_DEPTH} levels"));
        }
        let name = ty.name.as_deref().unwrap_or_default();
        Ok(match ty.kind.as_str() {
            "base" => self
                .doc
                .base_types
                .get(name)
                .map(|b| b.size)
                .ok_or_else(|| format!("base type `{name}` is not defined"))?,
            "struct" | "union" | "class" => self
                .doc
                .user_types
                .get(name)
                .map(|u| u.size)
                .ok_or_else(|| format!("`{name}` has no definition, so no size"))?,
            "enum" => self
                .doc
                .enums
                .get(name)
                .map(|e| e.size)
                .ok_or_else(|| format!("enum `{name}` is not defined"))?,
            "pointer" => self.pointer_size,
            "array" => {
                let subtype = ty.subtype.as_deref().ok_or("an array without a subtype")?;
                let count = ty.count.ok_or("an array without a count")?;
                count
                    .checked_mul(self.size_of(subtype, depth + 1)?)
                    .ok_or_else(|| format!("an array of {count} elements is too large"))?
            }
            "bitfield" => {
                let base = ty.ty.as_deref().ok_or("a bitfield without a type")?;
                self.size_of(base, depth + 1)?
            }
            "function" => 0,
            other => return Err(format!("unknown type kind `{other}`")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-written table in pdbconv's shape: an anonymous union kept as a member, a
    /// bitfield, an array of records, a pointer to an undefined record, an enum.
    fn sample() -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "metadata": {"format": "6.1.0", "windows": {"pdb": {
                "GUID": "bbed7c2955fbe4522aaa23f4b8677ad9", "age": 1, "database": "ntkrnlmp.pdb"}}},
            "base_types": {
                "unsigned long": {"kind": "int", "size": 4, "signed": false, "endian": "little"},
                "unsigned long long": {"kind": "int", "size": 8, "signed": false, "endian": "little"},
                "int": {"kind": "int", "size": 4, "signed": true, "endian": "little"},
                "pointer": {"kind": "int", "size": 8, "signed": false, "endian": "little"}
            },
            "user_types": {
                "_INNER": {"kind": "struct", "size": 8, "fields": {
                    "a": {"offset": 0, "type": {"kind": "base", "name": "unsigned long"}},
                    "b": {"offset": 4, "type": {"kind": "bitfield", "bit_position": 3,
                        "bit_length": 5, "type": {"kind": "base", "name": "unsigned long"}}}}},
                "__anonymous_1": {"kind": "union", "size": 8, "fields": {
                    "y": {"offset": 4, "type": {"kind": "base", "name": "unsigned long"}}}},
                "_OUTER": {"kind": "struct", "size": 48, "fields": {
                    "x": {"offset": 0, "type": {"kind": "enum", "name": "_MODE"}},
                    "u": {"offset": 8, "type": {"kind": "union", "name": "__anonymous_1"}},
                    "p": {"offset": 16, "type": {"kind": "pointer",
                        "subtype": {"kind": "struct", "name": "_ELSEWHERE"}}},
                    "arr": {"offset": 24, "type": {"kind": "array", "count": 3,
                        "subtype": {"kind": "struct", "name": "_INNER"}}}}}
            },
            "enums": {"_MODE": {"base": "int", "size": 4, "constants": {"A": 0}}},
            "symbols": {
                "MmVerifierData": {"address": 0x3000},
                "KeBugCheckEx": {"address": 0x1000},
                "?Undecorated@@YAXXZ": {"address": 0x1100},
                "Huge": {"address": 0x1_0000_0000u64}
            }
        }))
        .unwrap()
    }

    #[test]
    fn layouts_resolve_as_from_a_pdb() {
        let isf = IsfSymbols::parse("t.json", &sample(), "x.pdb").unwrap();
        assert_eq!(isf.id().name, "ntkrnlmp.pdb");
        assert_eq!(isf.id().guid, "BBED7C29-55FB-E452-2AAA-23F4B8677AD9");
        assert_eq!(isf.format(), Some("6.1.0"));
        let t = isf.types();
        assert_eq!(t.size_of("_OUTER").unwrap(), 48);
        assert_eq!(t.size_of("_MODE").unwrap(), 4);
        let y = t.field("_OUTER", "y").unwrap();
        assert_eq!(
            (y.offset, y.size),
            (12, 4),
            "through the anonymous union member"
        );
        let arr = t.field("_OUTER", "arr").unwrap();
        assert_eq!((arr.offset, arr.size), (24, 24));
        let b = t.field("_INNER", "b").unwrap();
        assert_eq!(b.offset, 4);
        let bits = b.bitfield.unwrap();
        assert_eq!((bits.position, bits.width), (3, 5));
        let p = t.field("_OUTER", "p").unwrap();
        assert_eq!(p.size, 8);
        assert_eq!(p.ty.describe(), "_ELSEWHERE *");
        assert_eq!(t.field("_OUTER", "arr").unwrap().ty.describe(), "_INNER[3]");
        let err = t.field("_OUTER", "zz").unwrap_err().to_string();
        assert!(err.contains("t.json") && err.contains("zz"), "{err}");
    }

    #[test]
    fn symbols_name_addresses_like_public_symbols() {
        let isf = IsfSymbols::parse("t.json", &sample(), "x.pdb").unwrap();
        let names = isf.names();
        assert_eq!(names.rva_of("MmVerifierData"), Some(0x3000));
        assert_eq!(
            names.rva_of("Huge"),
            None,
            "an RVA past 4 GiB is no image address"
        );
        assert_eq!(names.lookup(0x1010), Some(("KeBugCheckEx", 0x10)));
        assert_eq!(names.lookup(0x1104), Some(("Undecorated", 4)));
        assert_eq!(names.lookup(0xfff), None);
    }

    #[test]
    fn hostile_tables_are_refused_with_the_reason() {
        let no_pdb = br#"{"metadata": {"format": "6.1.0"}, "user_types": {}}"#;
        let err = IsfSymbols::parse("linux.json", no_pdb, "x.pdb").unwrap_err();
        assert!(err.to_string().contains("metadata.windows.pdb"), "{err}");
        let mut doc: serde_json::Value = serde_json::from_slice(&sample()).unwrap();
        doc["user_types"]["_INNER"]["fields"]["b"]["type"]["bit_position"] = 30.into();
        let err = IsfSymbols::parse("t.json", &serde_json::to_vec(&doc).unwrap(), "x.pdb")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("_INNER.b") && err.contains("do not fit"),
            "{err}"
        );
        let mut deep = serde_json::json!({"kind": "base", "name": "int"});
        for _ in 0..100 {
            deep = serde_json::json!({"kind": "pointer", "subtype": deep});
        }
        doc["user_types"]["_INNER"]["fields"]["b"]["type"] = deep;
        assert!(IsfSymbols::parse("t.json", &serde_json::to_vec(&doc).unwrap(), "x.pdb").is_err());
        assert!(IsfSymbols::parse("t.json", b"{not json", "x.pdb").is_err());
    }

    #[test]
    fn guids_in_either_form() {
        assert_eq!(
            registry_guid("{bbed7c29-55fb-e452-2aaa-23f4b8677ad9}").as_deref(),
            Some("BBED7C29-55FB-E452-2AAA-23F4B8677AD9")
        );
        assert_eq!(registry_guid("BBED7C2955FBE4522AAA23F4B8677AD"), None);
    }
}
