//! Volatility3 ISF ("Intermediate Symbol Format") reader for the simulator.
//!
//! The simulated target lays out its kernel structures **from the ISF tables only**, never from
//! the host's PDB code, so that the host (reading the generated PDBs) and the simulator check each
//! other. Format: `shared/data/isf/README.md` (`user_types`, `base_types`, `enums`, `symbols`).
//!
//! * [`Isf::load`] reads `.json` or `.json.xz`; [`Isf::load_cached`] shares one parsed copy per path.
//! * [`Isf::field`] resolves dotted paths (`"u1.Flags"`, `"TreeNode.Base.p"`, `"StackTrace[3]"`)
//!   to an absolute offset, a size and, for bitfields, bit position/width.
//! * [`StructWriter`] writes fields of one structure into a byte buffer with the width the ISF
//!   gives, optionally recording every `(type, field, offset)` it used ([`FieldUse`]).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

/// Errors name the type / field that was missing.
#[derive(Debug, thiserror::Error)]
pub enum IsfError {
    #[error("ISF {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ISF {path}: xz: {msg}")]
    Xz { path: PathBuf, msg: String },
    #[error("ISF {path}: json: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("ISF: malformed: {0}")]
    Malformed(String),
    #[error("ISF: no type `{0}`")]
    MissingType(String),
    #[error("ISF: type `{ty}` has no field `{field}` (path `{path}`)")]
    MissingField {
        ty: String,
        field: String,
        path: String,
    },
    #[error("ISF: `{ty}.{path}`: {msg}")]
    BadPath {
        ty: String,
        path: String,
        msg: String,
    },
    #[error("ISF: no symbol `{0}`")]
    MissingSymbol(String),
    #[error("ISF: `{ty}.{path}`: value {value:#x} does not fit in {bits} bits")]
    Overflow {
        ty: String,
        path: String,
        value: u64,
        bits: u32,
    },
    #[error("ISF: `{ty}.{path}`: write at {offset:#x}+{size:#x} outside buffer of {len:#x} bytes")]
    OutOfBounds {
        ty: String,
        path: String,
        offset: u64,
        size: u64,
        len: usize,
    },
}

pub type Result<T> = std::result::Result<T, IsfError>;

/// A type reference as the ISF writes it (`{"kind": …}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeRef {
    /// A base type (`unsigned long`, `pointer`, `wchar`, …).
    Base(String),
    Pointer(Box<TypeRef>),
    Array {
        count: u64,
        subtype: Box<TypeRef>,
    },
    Struct(String),
    Union(String),
    Enum(String),
    Bitfield {
        position: u32,
        length: u32,
        storage: Box<TypeRef>,
    },
    Function,
    /// Anything else, by kind name.
    Other(String),
}

impl TypeRef {
    fn parse(v: &Value) -> Result<TypeRef> {
        let kind = v
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| IsfError::Malformed(format!("type ref without kind: {v}")))?;
        let name = || {
            v.get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let sub = |key: &str| -> Result<Box<TypeRef>> {
            v.get(key)
                .map(TypeRef::parse)
                .transpose()?
                .map(Box::new)
                .ok_or_else(|| IsfError::Malformed(format!("{kind} without {key}: {v}")))
        };
        Ok(match kind {
            "base" => TypeRef::Base(name()),
            "pointer" => TypeRef::Pointer(sub("subtype")?),
            "array" => TypeRef::Array {
                count: v.get("count").and_then(Value::as_u64).unwrap_or(0),
                subtype: sub("subtype")?,
            },
            "struct" | "class" => TypeRef::Struct(name()),
            "union" => TypeRef::Union(name()),
            "enum" => TypeRef::Enum(name()),
            "bitfield" => TypeRef::Bitfield {
                position: v.get("bit_position").and_then(Value::as_u64).unwrap_or(0) as u32,
                length: v.get("bit_length").and_then(Value::as_u64).unwrap_or(0) as u32,
                storage: sub("type")?,
            },
            "function" => TypeRef::Function,
            other => TypeRef::Other(other.to_string()),
        })
    }

    /// Name of the user type this reference denotes (struct/union), if any.
    pub fn user_type_name(&self) -> Option<&str> {
        match self {
            TypeRef::Struct(n) | TypeRef::Union(n) => Some(n),
            _ => None,
        }
    }
}

/// One member of a user type.
#[derive(Debug, Clone)]
pub struct Member {
    pub offset: u64,
    pub ty: TypeRef,
}

/// A struct or union.
#[derive(Debug, Clone)]
pub struct UserType {
    pub name: String,
    pub is_union: bool,
    pub size: u64,
    pub fields: BTreeMap<String, Member>,
}

#[derive(Debug, Clone)]
struct BaseType {
    size: u64,
}

/// A resolved field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldInfo {
    /// Offset from the start of the outer type.
    pub offset: u64,
    /// Size in bytes (storage unit size for bitfields).
    pub size: u64,
    /// The leaf type (for bitfields: the `Bitfield` reference).
    pub ty: TypeRef,
    /// `(bit_position, bit_length)` for bitfields.
    pub bits: Option<(u32, u32)>,
}

/// A field write recorded by [`StructWriter`] (for cross-checking against a fresh lookup or a PDB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldUse {
    pub ty: String,
    pub path: String,
    pub offset: u64,
    pub size: u64,
    pub bits: Option<(u32, u32)>,
}

/// A parsed ISF file.
#[derive(Debug, Clone)]
pub struct Isf {
    pub path: PathBuf,
    /// PDB GUID (32 hex digits) from `metadata.windows.pdb`.
    pub guid: String,
    pub age: u32,
    user_types: HashMap<String, UserType>,
    base_types: HashMap<String, BaseType>,
    enums: HashMap<String, u64>,
    /// Enum name → constant name → value.
    enum_constants: HashMap<String, HashMap<String, i64>>,
    symbols: HashMap<String, u64>,
}

fn cache() -> &'static Mutex<HashMap<PathBuf, Arc<Isf>>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Isf>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

impl Isf {
    /// Reads an ISF file (`.json` or `.json.xz`).
    pub fn load(path: impl AsRef<Path>) -> Result<Isf> {
        let path = path.as_ref().to_path_buf();
        let raw = std::fs::read(&path).map_err(|source| IsfError::Io {
            path: path.clone(),
            source,
        })?;
        let json = if raw.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0]) {
            let mut out = Vec::with_capacity(raw.len() * 12);
            lzma_rs::xz_decompress(&mut std::io::BufReader::new(&raw[..]), &mut out).map_err(
                |e| IsfError::Xz {
                    path: path.clone(),
                    msg: e.to_string(),
                },
            )?;
            out
        } else {
            let mut out = Vec::new();
            (&raw[..]).read_to_end(&mut out).ok();
            out
        };
        let v: Value = serde_json::from_slice(&json).map_err(|source| IsfError::Json {
            path: path.clone(),
            source,
        })?;
        Self::from_value(path, &v)
    }

    /// Like [`Isf::load`], but parses each path once per process.
    pub fn load_cached(path: impl AsRef<Path>) -> Result<Arc<Isf>> {
        let key = path
            .as_ref()
            .canonicalize()
            .unwrap_or_else(|_| path.as_ref().to_path_buf());
        if let Some(hit) = cache().lock().unwrap().get(&key) {
            return Ok(hit.clone());
        }
        let isf = Arc::new(Isf::load(&key)?);
        cache().lock().unwrap().insert(key, isf.clone());
        Ok(isf)
    }

    fn from_value(path: PathBuf, v: &Value) -> Result<Isf> {
        let obj = |key: &str| {
            v.get(key)
                .and_then(Value::as_object)
                .ok_or_else(|| IsfError::Malformed(format!("missing top-level `{key}`")))
        };
        let mut user_types = HashMap::new();
        for (name, t) in obj("user_types")? {
            let mut fields = BTreeMap::new();
            if let Some(fs) = t.get("fields").and_then(Value::as_object) {
                for (fname, f) in fs {
                    let offset = f.get("offset").and_then(Value::as_u64).unwrap_or(0);
                    let ty =
                        TypeRef::parse(f.get("type").ok_or_else(|| {
                            IsfError::Malformed(format!("{name}.{fname}: no type"))
                        })?)?;
                    fields.insert(fname.clone(), Member { offset, ty });
                }
            }
            user_types.insert(
                name.clone(),
                UserType {
                    name: name.clone(),
                    is_union: t.get("kind").and_then(Value::as_str) == Some("union"),
                    size: t.get("size").and_then(Value::as_u64).unwrap_or(0),
                    fields,
                },
            );
        }
        let mut base_types = HashMap::new();
        for (name, t) in obj("base_types")? {
            base_types.insert(
                name.clone(),
                BaseType {
                    size: t.get("size").and_then(Value::as_u64).unwrap_or(0),
                },
            );
        }
        let mut enums = HashMap::new();
        let mut enum_constants = HashMap::new();
        if let Some(es) = v.get("enums").and_then(Value::as_object) {
            for (name, t) in es {
                enums.insert(
                    name.clone(),
                    t.get("size").and_then(Value::as_u64).unwrap_or(4),
                );
                let constants = t
                    .get("constants")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_i64()?)))
                    .collect();
                enum_constants.insert(name.clone(), constants);
            }
        }
        let mut symbols = HashMap::new();
        if let Some(ss) = v.get("symbols").and_then(Value::as_object) {
            for (name, s) in ss {
                if let Some(a) = s.get("address").and_then(Value::as_u64) {
                    symbols.insert(name.clone(), a);
                }
            }
        }
        let pdb = v.pointer("/metadata/windows/pdb");
        Ok(Isf {
            path,
            guid: pdb
                .and_then(|p| p.get("GUID"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            age: pdb
                .and_then(|p| p.get("age"))
                .and_then(Value::as_u64)
                .unwrap_or(0) as u32,
            user_types,
            base_types,
            enums,
            enum_constants,
            symbols,
        })
    }

    /// The value of the constant `constant` of enum `name`, as the unsigned bits a field of the
    /// enum's size holds.
    pub fn enum_value(&self, name: &str, constant: &str) -> Result<u64> {
        let value = self
            .enum_constants
            .get(name)
            .ok_or_else(|| IsfError::MissingType(name.to_string()))?
            .get(constant)
            .ok_or_else(|| IsfError::BadPath {
                ty: name.to_string(),
                path: constant.to_string(),
                msg: "no such enum constant".into(),
            })?;
        let bits = 8 * self.enums.get(name).copied().unwrap_or(4).clamp(1, 8);
        Ok((*value as u64) & (u64::MAX >> (64 - bits)))
    }

    /// The user type `name`.
    pub fn user_type(&self, name: &str) -> Result<&UserType> {
        self.user_types
            .get(name)
            .ok_or_else(|| IsfError::MissingType(name.to_string()))
    }

    pub fn has_type(&self, name: &str) -> bool {
        self.user_types.contains_key(name)
    }

    /// `sizeof(name)`.
    pub fn type_size(&self, name: &str) -> Result<u64> {
        Ok(self.user_type(name)?.size)
    }

    /// Size in bytes of a type reference.
    pub fn ref_size(&self, t: &TypeRef) -> Result<u64> {
        Ok(match t {
            TypeRef::Base(n) => self
                .base_types
                .get(n)
                .map(|b| b.size)
                .ok_or_else(|| IsfError::MissingType(n.clone()))?,
            TypeRef::Pointer(_) => self.base_types.get("pointer").map(|b| b.size).unwrap_or(8),
            TypeRef::Array { count, subtype } => count * self.ref_size(subtype)?,
            TypeRef::Struct(n) | TypeRef::Union(n) => self.type_size(n)?,
            TypeRef::Enum(n) => *self
                .enums
                .get(n)
                .ok_or_else(|| IsfError::MissingType(n.clone()))?,
            TypeRef::Bitfield { storage, .. } => self.ref_size(storage)?,
            TypeRef::Function => 0,
            TypeRef::Other(k) => return Err(IsfError::Malformed(format!("size of kind `{k}`"))),
        })
    }

    /// RVA of a public symbol.
    pub fn symbol(&self, name: &str) -> Result<u64> {
        self.symbols
            .get(name)
            .copied()
            .ok_or_else(|| IsfError::MissingSymbol(name.to_string()))
    }

    pub fn has_symbol(&self, name: &str) -> bool {
        self.symbols.contains_key(name)
    }

    /// Offset of a (possibly dotted / indexed) field path.
    pub fn offset(&self, ty: &str, path: &str) -> Result<u64> {
        Ok(self.field(ty, path)?.offset)
    }

    /// Does `ty` have the field path `path`?
    pub fn has_field(&self, ty: &str, path: &str) -> bool {
        self.field(ty, path).is_ok()
    }

    /// Resolves `path` (`"A"`, `"A.B"`, `"A[3]"`, `"A[3].B"`) inside `ty`.
    pub fn field(&self, ty: &str, path: &str) -> Result<FieldInfo> {
        let mut cur: TypeRef = TypeRef::Struct(ty.to_string());
        let mut offset = 0u64;
        let mut bits = None;
        let bad = |msg: String| IsfError::BadPath {
            ty: ty.to_string(),
            path: path.to_string(),
            msg,
        };
        for comp in path.split('.') {
            if bits.is_some() {
                return Err(bad("path continues after a bitfield".into()));
            }
            let (name, indices) = split_indices(comp).map_err(bad)?;
            let tname = cur
                .user_type_name()
                .ok_or_else(|| bad(format!("`{name}`: parent is not a struct/union ({cur:?})")))?
                .to_string();
            let ut = self.user_type(&tname)?;
            let m = ut.fields.get(name).ok_or_else(|| IsfError::MissingField {
                ty: tname.clone(),
                field: name.to_string(),
                path: format!("{ty}.{path}"),
            })?;
            offset += m.offset;
            cur = m.ty.clone();
            for idx in indices {
                match cur {
                    TypeRef::Array { count, subtype } => {
                        if idx >= count {
                            return Err(bad(format!("index {idx} >= count {count}")));
                        }
                        offset += idx * self.ref_size(&subtype)?;
                        cur = *subtype;
                    }
                    _ => return Err(bad(format!("`{name}` is not an array"))),
                }
            }
            if let TypeRef::Bitfield {
                position, length, ..
            } = &cur
            {
                bits = Some((*position, *length));
            }
        }
        let size = self.ref_size(&cur)?;
        Ok(FieldInfo {
            offset,
            size,
            ty: cur,
            bits,
        })
    }

    /// Element count of an array field (e.g. `_VF_POOL_TRACE.StackTrace` → 13 or 50).
    pub fn array_count(&self, ty: &str, path: &str) -> Result<u64> {
        match self.field(ty, path)?.ty {
            TypeRef::Array { count, .. } => Ok(count),
            other => Err(IsfError::BadPath {
                ty: ty.into(),
                path: path.into(),
                msg: format!("not an array: {other:?}"),
            }),
        }
    }

    /// Number of user types (for reports).
    pub fn user_type_count(&self) -> usize {
        self.user_types.len()
    }
}

fn split_indices(comp: &str) -> std::result::Result<(&str, Vec<u64>), String> {
    let Some(br) = comp.find('[') else {
        return Ok((comp, vec![]));
    };
    let name = &comp[..br];
    let mut idx = vec![];
    for part in comp[br..].split('[').skip(1) {
        let num = part
            .strip_suffix(']')
            .ok_or_else(|| format!("bad index in `{comp}`"))?;
        let n = if let Some(h) = num.strip_prefix("0x") {
            u64::from_str_radix(h, 16)
        } else {
            num.parse()
        }
        .map_err(|_| format!("bad index `{num}`"))?;
        idx.push(n);
    }
    Ok((name, idx))
}

/// Reads the integer value of a resolved field from `buf` (which starts at the structure).
pub fn read_field(buf: &[u8], f: &FieldInfo) -> Option<u64> {
    let off = f.offset as usize;
    let size = f.size as usize;
    if size == 0 || size > 8 || off + size > buf.len() {
        return None;
    }
    let mut b = [0u8; 8];
    b[..size].copy_from_slice(&buf[off..off + size]);
    let raw = u64::from_le_bytes(b);
    Some(match f.bits {
        Some((pos, len)) => (raw >> pos) & mask(len),
        None => raw,
    })
}

fn mask(len: u32) -> u64 {
    if len >= 64 {
        u64::MAX
    } else {
        (1u64 << len) - 1
    }
}

/// Writes integer fields of one structure into a byte buffer (the buffer starts at the structure),
/// with widths and bit positions from the ISF.
pub struct StructWriter<'a> {
    isf: &'a Isf,
    buf: &'a mut [u8],
    log: Option<&'a mut Vec<FieldUse>>,
}

impl<'a> StructWriter<'a> {
    pub fn new(isf: &'a Isf, buf: &'a mut [u8]) -> Self {
        Self {
            isf,
            buf,
            log: None,
        }
    }

    /// Records every field used into `log`.
    pub fn with_log(isf: &'a Isf, buf: &'a mut [u8], log: &'a mut Vec<FieldUse>) -> Self {
        Self {
            isf,
            buf,
            log: Some(log),
        }
    }

    /// Resolves `ty.path`, records it, returns the info.
    pub fn resolve(&mut self, ty: &str, path: &str) -> Result<FieldInfo> {
        let f = self.isf.field(ty, path)?;
        if let Some(log) = self.log.as_deref_mut() {
            log.push(FieldUse {
                ty: ty.to_string(),
                path: path.to_string(),
                offset: f.offset,
                size: f.size,
                bits: f.bits,
            });
        }
        Ok(f)
    }

    /// Sets an integer / pointer / bitfield member. Values that do not fit are an error.
    pub fn set(&mut self, ty: &str, path: &str, value: u64) -> Result<()> {
        let f = self.resolve(ty, path)?;
        write_value(self.buf, ty, path, &f, value)
    }

    /// Reads back a member.
    pub fn get(&self, ty: &str, path: &str) -> Result<u64> {
        let f = self.isf.field(ty, path)?;
        read_field(self.buf, &f).ok_or_else(|| IsfError::OutOfBounds {
            ty: ty.into(),
            path: path.into(),
            offset: f.offset,
            size: f.size,
            len: self.buf.len(),
        })
    }

    /// Sets the `UNICODE_STRING` member `path` to describe `text` stored at `buffer_va`
    /// (Length = 2·chars, MaximumLength = Length + 2 for the terminating NUL).
    /// The caller stores the UTF-16 text itself (see [`utf16z`]).
    pub fn set_unicode_string(
        &mut self,
        ty: &str,
        path: &str,
        text: &str,
        buffer_va: u64,
    ) -> Result<()> {
        let len = (text.encode_utf16().count() * 2) as u64;
        self.set(ty, &format!("{path}.Length"), len)?;
        self.set(ty, &format!("{path}.MaximumLength"), len + 2)?;
        self.set(ty, &format!("{path}.Buffer"), buffer_va)
    }

    /// Sets a `LIST_ENTRY` member's Flink and Blink.
    pub fn set_list_entry(&mut self, ty: &str, path: &str, flink: u64, blink: u64) -> Result<()> {
        self.set(ty, &format!("{path}.Flink"), flink)?;
        self.set(ty, &format!("{path}.Blink"), blink)
    }
}

fn write_value(buf: &mut [u8], ty: &str, path: &str, f: &FieldInfo, value: u64) -> Result<()> {
    let off = f.offset as usize;
    let size = f.size as usize;
    if !(1..=8).contains(&size) || off + size > buf.len() {
        return Err(IsfError::OutOfBounds {
            ty: ty.into(),
            path: path.into(),
            offset: f.offset,
            size: f.size,
            len: buf.len(),
        });
    }
    let mut b = [0u8; 8];
    b[..size].copy_from_slice(&buf[off..off + size]);
    let mut raw = u64::from_le_bytes(b);
    let (bits, new) = match f.bits {
        Some((pos, len)) => {
            let m = mask(len);
            if value & !m != 0 {
                return Err(IsfError::Overflow {
                    ty: ty.into(),
                    path: path.into(),
                    value,
                    bits: len,
                });
            }
            raw = (raw & !(m << pos)) | (value << pos);
            (len, raw)
        }
        None => {
            let bits = (size * 8) as u32;
            if bits < 64 && value >> bits != 0 {
                return Err(IsfError::Overflow {
                    ty: ty.into(),
                    path: path.into(),
                    value,
                    bits,
                });
            }
            (bits, value)
        }
    };
    let _ = bits;
    buf[off..off + size].copy_from_slice(&new.to_le_bytes()[..size]);
    Ok(())
}

/// UTF-16LE bytes of `s` followed by a NUL character.
pub fn utf16z(s: &str) -> Vec<u8> {
    let mut v: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
    v.extend_from_slice(&[0, 0]);
    v
}

/// Writes `LIST_ENTRY` links so that `head` → `entries[0]` → … → `head` (Flink) and back (Blink).
/// `write(addr, flink, blink)` stores one LIST_ENTRY; addresses are those of the LIST_ENTRY members.
pub fn link_list(
    head: u64,
    entries: &[u64],
    mut write: impl FnMut(u64, u64, u64) -> Result<()>,
) -> Result<()> {
    let n = entries.len();
    let at = |i: isize| -> u64 {
        if i < 0 || i as usize >= n {
            head
        } else {
            entries[i as usize]
        }
    };
    write(head, at(0), at(n as isize - 1))?;
    for i in 0..n as isize {
        write(at(i), at(i + 1), at(i - 1))?;
    }
    Ok(())
}
