//! Fixture manifest (`captures/fixtures/*/manifest.json`) and PE32+ image mapping.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{parse_num, Result, ScenarioError};

/// One image of a fixture manifest.
#[derive(Debug, Clone)]
pub struct ManifestImage {
    /// File name (`ntoskrnl.exe`, `myfault.sys`).
    pub file: String,
    pub image_base: u64,
    pub size_of_image: u64,
    /// Symbol name → RVA (from the fixture PDB's publics).
    pub symbols: BTreeMap<String, u64>,
    /// Function symbols only (for `module!Symbol+off` → address).
    pub functions: BTreeMap<String, u64>,
}

/// A fixture directory's `manifest.json`.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub dir: PathBuf,
    pub build: u32,
    pub label: String,
    /// ISF file name (`<GUID>-<AGE>.json.xz`).
    pub isf: String,
    pub images: BTreeMap<String, ManifestImage>,
}

fn num(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::String(s) => parse_num(s),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

impl Manifest {
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join("manifest.json");
        let text = std::fs::read(&path).map_err(|source| ScenarioError::Io {
            path: path.clone(),
            source,
        })?;
        let v: Value = serde_json::from_slice(&text)
            .map_err(|e| ScenarioError::Manifest(format!("{}: {e}", path.display())))?;
        let bad = |m: &str| ScenarioError::Manifest(format!("{}: {m}", path.display()));
        let mut images = BTreeMap::new();
        for (file, img) in v
            .get("files")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("no files"))?
        {
            let mut symbols = BTreeMap::new();
            let mut functions = BTreeMap::new();
            if let Some(syms) = img.get("symbols").and_then(Value::as_object) {
                for (name, s) in syms {
                    let rva =
                        num(s.get("rva")).ok_or_else(|| bad(&format!("{file}!{name}: no rva")))?;
                    symbols.insert(name.clone(), rva);
                    if s.get("function").and_then(Value::as_bool) == Some(true) {
                        functions.insert(name.clone(), rva);
                    }
                }
            }
            images.insert(
                file.clone(),
                ManifestImage {
                    file: file.clone(),
                    image_base: num(img.get("image_base"))
                        .ok_or_else(|| bad(&format!("{file}: image_base")))?,
                    size_of_image: num(img.get("size_of_image"))
                        .ok_or_else(|| bad(&format!("{file}: size_of_image")))?,
                    symbols,
                    functions,
                },
            );
        }
        Ok(Manifest {
            dir: dir.to_path_buf(),
            build: v
                .get("build")
                .and_then(Value::as_u64)
                .ok_or_else(|| bad("no build"))? as u32,
            label: v
                .get("label")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            isf: v
                .get("isf")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            images,
        })
    }

    pub fn kernel(&self) -> Result<&ManifestImage> {
        self.images
            .get("ntoskrnl.exe")
            .ok_or_else(|| ScenarioError::Manifest("no ntoskrnl.exe".into()))
    }

    /// Module name as used in `module!Symbol` for a file: `nt` for the kernel, else the file stem.
    pub fn module_name(file: &str) -> String {
        if file.eq_ignore_ascii_case("ntoskrnl.exe") {
            "nt".into()
        } else {
            file.rsplit_once('.')
                .map(|(s, _)| s)
                .unwrap_or(file)
                .to_ascii_lowercase()
        }
    }

    /// Resolves `module!Symbol+0xoff`, `module!Symbol`, or a raw hex address.
    pub fn resolve(&self, text: &str) -> Result<u64> {
        let t = text.trim();
        let Some((module, rest)) = t.split_once('!') else {
            return parse_num(t)
                .ok_or_else(|| ScenarioError::Invalid(format!("bad address or frame `{text}`")));
        };
        let (sym, off) = match rest.split_once('+') {
            Some((s, o)) => (
                s,
                parse_num(o)
                    .ok_or_else(|| ScenarioError::Invalid(format!("bad offset in `{text}`")))?,
            ),
            None => (rest, 0),
        };
        let img = self
            .images
            .values()
            .find(|i| Self::module_name(&i.file).eq_ignore_ascii_case(module))
            .ok_or_else(|| {
                ScenarioError::Invalid(format!(
                    "`{text}`: no module `{module}` in {}",
                    self.dir.display()
                ))
            })?;
        let rva = img.symbols.get(sym).ok_or_else(|| {
            ScenarioError::Invalid(format!("`{text}`: no symbol `{sym}` in {}", img.file))
        })?;
        Ok(img.image_base + rva + off)
    }
}

/// A PE32+ image mapped as the loader would: headers and sections at their RVAs, SizeOfImage long.
#[derive(Debug, Clone)]
pub struct MappedPe {
    pub bytes: Vec<u8>,
    pub image_base: u64,
    pub entry_rva: u32,
    pub checksum: u32,
    pub timestamp: u32,
    /// Exception directory (.pdata) RVA and size.
    pub exception_dir: (u32, u32),
}

fn rd16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn rd32(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn rd64(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// Maps a PE32+ file.
pub fn map_pe(path: &Path) -> Result<MappedPe> {
    let file = std::fs::read(path).map_err(|source| ScenarioError::Io {
        path: path.into(),
        source,
    })?;
    let bad = |m: &str| ScenarioError::Invalid(format!("{}: {m}", path.display()));
    if file.get(0..2) != Some(b"MZ") {
        return Err(bad("no MZ"));
    }
    let pe = rd32(&file, 0x3c).ok_or_else(|| bad("short"))? as usize;
    if file.get(pe..pe + 4) != Some(b"PE\0\0") {
        return Err(bad("no PE signature"));
    }
    let coff = pe + 4;
    let nsec = rd16(&file, coff + 2).ok_or_else(|| bad("short"))? as usize;
    let timestamp = rd32(&file, coff + 4).ok_or_else(|| bad("short"))?;
    let opt_size = rd16(&file, coff + 16).ok_or_else(|| bad("short"))? as usize;
    let opt = coff + 20;
    if rd16(&file, opt) != Some(0x20b) {
        return Err(bad("not PE32+"));
    }
    let entry_rva = rd32(&file, opt + 16).ok_or_else(|| bad("short"))?;
    let image_base = rd64(&file, opt + 24).ok_or_else(|| bad("short"))?;
    let size_of_image = rd32(&file, opt + 56).ok_or_else(|| bad("short"))? as usize;
    let size_of_headers = rd32(&file, opt + 60).ok_or_else(|| bad("short"))? as usize;
    let checksum = rd32(&file, opt + 64).ok_or_else(|| bad("short"))?;
    // Data directory 3 = exception.
    let exception_dir = (
        rd32(&file, opt + 112 + 3 * 8).unwrap_or(0),
        rd32(&file, opt + 112 + 3 * 8 + 4).unwrap_or(0),
    );
    let mut bytes = vec![0u8; size_of_image];
    let hdr = size_of_headers.min(file.len()).min(size_of_image);
    bytes[..hdr].copy_from_slice(&file[..hdr]);
    let sec0 = opt + opt_size;
    for i in 0..nsec {
        let s = sec0 + i * 40;
        let vsize = rd32(&file, s + 8).ok_or_else(|| bad("short section table"))? as usize;
        let va = rd32(&file, s + 12).ok_or_else(|| bad("short section table"))? as usize;
        let raw_size = rd32(&file, s + 16).ok_or_else(|| bad("short section table"))? as usize;
        let raw_ptr = rd32(&file, s + 20).ok_or_else(|| bad("short section table"))? as usize;
        let n = raw_size
            .min(vsize.max(raw_size))
            .min(file.len().saturating_sub(raw_ptr));
        let n = n.min(size_of_image.saturating_sub(va));
        bytes[va..va + n].copy_from_slice(&file[raw_ptr..raw_ptr + n]);
    }
    Ok(MappedPe {
        bytes,
        image_base,
        entry_rva,
        checksum,
        timestamp,
        exception_dir,
    })
}

/// Rewrites the CodeView (RSDS) record of a mapped image to name `pdb_path` (GUID and age kept):
/// the record is written anew at RVA 0x800, in the header page past the headers, and the debug
/// directory's CodeView entry pointed at it. A scenario's hostile target names its PDB this way.
pub fn set_pdb_path(pe: &mut MappedPe, pdb_path: &str) -> std::result::Result<(), String> {
    const AT: usize = 0x800;
    let b = &mut pe.bytes;
    let nt = rd32(b, 0x3c).ok_or("no e_lfanew")? as usize;
    let opt = nt + 24;
    let size_of_headers = rd32(b, opt + 60).ok_or("short headers")? as usize;
    let record_len = 24 + pdb_path.len() + 1;
    if size_of_headers > AT || AT + record_len > 0x1000 || b.len() < 0x1000 {
        return Err(format!(
            "no room for a {record_len}-byte CodeView record in the header page"
        ));
    }
    let (dir_rva, dir_size) = (
        rd32(b, opt + 112 + 6 * 8).ok_or("no debug directory")? as usize,
        rd32(b, opt + 112 + 6 * 8 + 4).ok_or("no debug directory")? as usize,
    );
    for entry in (dir_rva..dir_rva + dir_size).step_by(28) {
        if rd32(b, entry + 12) != Some(2) {
            continue;
        }
        let old = rd32(b, entry + 20).ok_or("short debug entry")? as usize;
        let header = b
            .get(old..old + 24)
            .ok_or("CodeView record outside the image")?
            .to_vec();
        if header[..4] != *b"RSDS" {
            return Err("the CodeView record is not RSDS".into());
        }
        b[AT..AT + 24].copy_from_slice(&header);
        b[AT + 24..AT + 24 + pdb_path.len()].copy_from_slice(pdb_path.as_bytes());
        b[AT + 24 + pdb_path.len()] = 0;
        b[entry + 16..entry + 20].copy_from_slice(&(record_len as u32).to_le_bytes());
        b[entry + 20..entry + 24].copy_from_slice(&(AT as u32).to_le_bytes());
        return Ok(());
    }
    Err("no CodeView debug entry".into())
}
