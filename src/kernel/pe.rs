//! A module's PDB identity from its PE headers in target memory: the CodeView RSDS record of the
//! debug directory (GUID, age, PDB path). PE/COFF layout is a public file format.

use std::fmt;

use super::{le_u16, le_u32, read_exact, KernelError, Memory, Result};

const DOS_LEN: usize = 0x40;
const E_LFANEW: usize = 0x3C;
/// Signature + FileHeader + the PE32+ optional header up to the end of its 16 data directories.
const NT_LEN: usize = 0x18 + 0xF0;
const OPTIONAL: usize = 0x18;
const PE32_MAGIC: u16 = 0x10B;
const PE32_PLUS_MAGIC: u16 = 0x20B;
const DEBUG_DIRECTORY_INDEX: usize = 6;
const DEBUG_ENTRY_LEN: usize = 28;
const MAX_DEBUG_ENTRIES: usize = 16;
const IMAGE_DEBUG_TYPE_CODEVIEW: u32 = 2;
const RSDS: u32 = 0x5344_5352;
/// Longest CodeView record read (24-byte header + a long path).
const MAX_CODEVIEW: usize = 0x400;

/// PDB identity: what a symbol server is asked for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PdbInfo {
    /// The GUID as `{8-4-4-4-12}` in upper case.
    pub guid: String,
    pub age: u32,
    /// The path exactly as recorded (often a full Windows build path), without trailing NULs.
    pub path: String,
}

impl PdbInfo {
    /// Parses an RSDS record: 'RSDS', GUID (u32, u16, u16, 8 bytes), age u32, NUL-ended name.
    pub fn parse_rsds(record: &[u8]) -> Option<Self> {
        if record.len() < 24 || le_u32(record, 0) != RSDS {
            return None;
        }
        let g = &record[4..20];
        let guid = format!(
            "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{}",
            le_u32(g, 0),
            le_u16(g, 4),
            le_u16(g, 6),
            g[8],
            g[9],
            g[10..16]
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<String>()
        );
        let name = &record[24..];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        Some(Self {
            guid,
            age: le_u32(record, 20),
            path: String::from_utf8_lossy(name).into_owned(),
        })
    }

    /// The file name: the part after the last `\` or `/`, without a drive (`C:name.pdb` is
    /// `name.pdb` relative to drive C's current directory, as Windows reads it).
    pub fn file_name(&self) -> &str {
        let name = self.path.rsplit(['\\', '/']).next().unwrap_or(&self.path);
        match name.as_bytes() {
            [drive, b':', ..] if drive.is_ascii_alphabetic() => &name[2..],
            _ => name,
        }
    }

    /// The symbol-store directory name: GUID hex without dashes, then the age in hex.
    pub fn symstore_id(&self) -> String {
        format!("{}{:X}", self.guid.replace('-', ""), self.age)
    }
}

impl fmt::Display for PdbInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {{{}}} {}", self.file_name(), self.guid, self.age)
    }
}

fn invalid(base: u64, what: &str) -> KernelError {
    KernelError::Invalid(format!("image at {base:#x}: {what}"))
}

/// Reads the RSDS record of the image mapped at `base`. `Ok(None)`: the image has no CodeView
/// debug entry.
pub async fn read_pdb_info<M: Memory>(
    mem: &mut M,
    base: u64,
    size_of_image: u32,
) -> Result<Option<PdbInfo>> {
    let dos = read_exact(mem, base, DOS_LEN, "DOS header").await?;
    if dos[..2] != *b"MZ" {
        return Err(invalid(base, "no MZ signature"));
    }
    let e_lfanew = le_u32(&dos, E_LFANEW);
    let within = |rva: u64, len: u64| size_of_image == 0 || rva + len <= u64::from(size_of_image);
    if e_lfanew > 0x1000 || !within(u64::from(e_lfanew), NT_LEN as u64) {
        return Err(invalid(base, "e_lfanew out of range"));
    }
    let nt = read_exact(mem, base + u64::from(e_lfanew), NT_LEN, "NT headers").await?;
    if nt[..4] != *b"PE\0\0" {
        return Err(invalid(base, "no PE signature"));
    }
    let (directories, count_at) = match le_u16(&nt, OPTIONAL) {
        PE32_PLUS_MAGIC => (OPTIONAL + 0x70, OPTIONAL + 0x6C),
        PE32_MAGIC => (OPTIONAL + 0x60, OPTIONAL + 0x5C),
        other => return Err(invalid(base, &format!("optional header magic {other:#x}"))),
    };
    if (le_u32(&nt, count_at) as usize) <= DEBUG_DIRECTORY_INDEX {
        return Ok(None);
    }
    let at = directories + DEBUG_DIRECTORY_INDEX * 8;
    let (rva, size) = (le_u32(&nt, at), le_u32(&nt, at + 4));
    if rva == 0 || size == 0 {
        return Ok(None);
    }
    let entries = (size as usize / DEBUG_ENTRY_LEN).min(MAX_DEBUG_ENTRIES);
    if !within(u64::from(rva), (entries * DEBUG_ENTRY_LEN) as u64) {
        return Err(invalid(base, "debug directory outside the image"));
    }
    let dir = read_exact(
        mem,
        base + u64::from(rva),
        entries * DEBUG_ENTRY_LEN,
        "debug directory",
    )
    .await?;
    for entry in dir.chunks_exact(DEBUG_ENTRY_LEN) {
        if le_u32(entry, 0xC) != IMAGE_DEBUG_TYPE_CODEVIEW {
            continue;
        }
        let (len, data_rva) = (le_u32(entry, 0x10) as usize, le_u32(entry, 0x14));
        if data_rva == 0 || len < 24 {
            continue;
        }
        let len = len.min(MAX_CODEVIEW);
        if !within(u64::from(data_rva), len as u64) {
            return Err(invalid(base, "CodeView record outside the image"));
        }
        let record = read_exact(mem, base + u64::from(data_rva), len, "CodeView record").await?;
        if let Some(info) = PdbInfo::parse_rsds(&record) {
            return Ok(Some(info));
        }
    }
    Ok(None)
}

/// Builds a minimal PE32+ image with an RSDS record (for tests and fixtures).
pub fn synthetic_image(guid: [u8; 16], age: u32, pdb_path: &str) -> Vec<u8> {
    let mut img = vec![0u8; 0x400];
    img[0..2].copy_from_slice(b"MZ");
    img[E_LFANEW..E_LFANEW + 4].copy_from_slice(&0x80u32.to_le_bytes());
    let nt = 0x80;
    img[nt..nt + 4].copy_from_slice(b"PE\0\0");
    img[nt + 4..nt + 6].copy_from_slice(&0x8664u16.to_le_bytes());
    img[nt + OPTIONAL..nt + OPTIONAL + 2].copy_from_slice(&PE32_PLUS_MAGIC.to_le_bytes());
    img[nt + OPTIONAL + 0x6C..nt + OPTIONAL + 0x70].copy_from_slice(&16u32.to_le_bytes());
    let dd = nt + OPTIONAL + 0x70 + DEBUG_DIRECTORY_INDEX * 8;
    let (dir_rva, cv_rva) = (0x200usize, 0x240usize);
    img[dd..dd + 4].copy_from_slice(&(dir_rva as u32).to_le_bytes());
    img[dd + 4..dd + 8].copy_from_slice(&(DEBUG_ENTRY_LEN as u32).to_le_bytes());
    let mut cv = Vec::new();
    cv.extend_from_slice(&RSDS.to_le_bytes());
    cv.extend_from_slice(&guid);
    cv.extend_from_slice(&age.to_le_bytes());
    cv.extend_from_slice(pdb_path.as_bytes());
    cv.push(0);
    img[dir_rva + 0xC..dir_rva + 0x10].copy_from_slice(&IMAGE_DEBUG_TYPE_CODEVIEW.to_le_bytes());
    img[dir_rva + 0x10..dir_rva + 0x14].copy_from_slice(&(cv.len() as u32).to_le_bytes());
    img[dir_rva + 0x14..dir_rva + 0x18].copy_from_slice(&(cv_rva as u32).to_le_bytes());
    // A long name makes a longer image.
    img.resize(img.len().max(cv_rva + cv.len()), 0);
    img[cv_rva..cv_rva + cv.len()].copy_from_slice(&cv);
    img
}

/// Largest SizeOfImage a driver file given with `--image` may declare.
const MAX_FILE_IMAGE: u64 = 256 << 20;

/// The RSDS record of a PE file on disk (`--image name.sys=PATH`): the file is laid out at its
/// sections' RVAs, as the loader maps it, and read by [`read_pdb_info`] with the same bounds as
/// target memory. `Ok(None)`: no CodeView record.
pub async fn pdb_info_from_file(file: &[u8]) -> Result<Option<PdbInfo>> {
    let bad = |why: &str| KernelError::Invalid(format!("not a PE image file: {why}"));
    let u16_at = |at: usize| {
        file.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        file.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if file.get(..2) != Some(b"MZ") {
        return Err(bad("no MZ signature"));
    }
    let pe = u32_at(E_LFANEW).ok_or_else(|| bad("truncated DOS header"))? as usize;
    if pe > 0x1000 || file.get(pe..pe + 4) != Some(b"PE\0\0") {
        return Err(bad("no PE signature"));
    }
    let sections = u16_at(pe + 6).ok_or_else(|| bad("truncated"))? as usize;
    let optional_len = u16_at(pe + 0x14).ok_or_else(|| bad("truncated"))? as usize;
    let size_of_image = u32_at(pe + OPTIONAL + 0x38).ok_or_else(|| bad("truncated"))?;
    let size_of_headers = u32_at(pe + OPTIONAL + 0x3C).ok_or_else(|| bad("truncated"))? as usize;
    if u64::from(size_of_image) > MAX_FILE_IMAGE || sections > 96 {
        return Err(bad("SizeOfImage or section count out of range"));
    }
    let mut mapped = vec![0u8; size_of_image as usize];
    let headers = size_of_headers.min(file.len()).min(mapped.len());
    mapped[..headers].copy_from_slice(&file[..headers]);
    let table = pe + OPTIONAL + optional_len;
    for k in 0..sections {
        let at = table + 40 * k;
        let (Some(virtual_size), Some(rva), Some(raw_size), Some(raw)) = (
            u32_at(at + 8),
            u32_at(at + 12),
            u32_at(at + 16),
            u32_at(at + 20),
        ) else {
            return Err(bad("truncated section table"));
        };
        let len = virtual_size.min(raw_size) as usize;
        let (rva, raw) = (rva as usize, raw as usize);
        if let (Some(from), Some(to)) = (file.get(raw..raw + len), mapped.get_mut(rva..rva + len)) {
            to.copy_from_slice(from);
        }
    }
    read_pdb_info(&mut Mapped(mapped), 0, size_of_image).await
}

/// An image laid out at RVA 0, as [`Memory`].
struct Mapped(Vec<u8>);

impl Memory for Mapped {
    async fn read(
        &mut self,
        address: u64,
        len: usize,
    ) -> crate::session::Result<crate::session::ReadOutcome> {
        let start = (address as usize).min(self.0.len());
        let end = (address as usize).saturating_add(len).min(self.0.len());
        let mut bytes = self.0[start..end].to_vec();
        let unreadable = if bytes.len() < len {
            let missing = address + bytes.len() as u64..address + len as u64;
            vec![missing]
        } else {
            vec![]
        };
        bytes.resize(len, 0);
        Ok(crate::session::ReadOutcome {
            address,
            bytes,
            unreadable,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::fake::FakeMemory;

    const GUID: [u8; 16] = [
        0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde, 1, 2, 3, 4, 5, 6, 7, 8,
    ];

    #[test]
    fn rsds_with_a_windows_path_and_nuls() {
        let mut rec = RSDS.to_le_bytes().to_vec();
        rec.extend_from_slice(&GUID);
        rec.extend_from_slice(&0x1fu32.to_le_bytes());
        rec.extend_from_slice(b"d:\\os\\obj\\amd64fre\\ntkrnlmp.pdb\0\0\0");
        let info = PdbInfo::parse_rsds(&rec).unwrap();
        assert_eq!(info.guid, "12345678-9ABC-DEF0-0102-030405060708");
        assert_eq!(info.age, 0x1f);
        assert_eq!(info.path, "d:\\os\\obj\\amd64fre\\ntkrnlmp.pdb");
        assert_eq!(info.file_name(), "ntkrnlmp.pdb");
        let drive_relative = PdbInfo {
            path: "C:ntkrnlmp.pdb".into(),
            ..info.clone()
        };
        assert_eq!(drive_relative.file_name(), "ntkrnlmp.pdb");
        assert_eq!(info.symstore_id(), "123456789ABCDEF001020304050607081F");
        assert!(PdbInfo::parse_rsds(b"NB10xxxxxxxxxxxxxxxxxxxxxxxx").is_none());
    }

    #[tokio::test]
    async fn reads_the_record_from_memory() {
        let mut mem = FakeMemory::default();
        mem.map(0x10000, synthetic_image(GUID, 3, "hal.pdb"));
        let info = read_pdb_info(&mut mem, 0x10000, 0x400)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(info.file_name(), "hal.pdb");
        assert_eq!(info.age, 3);
    }

    #[tokio::test]
    async fn paged_out_headers_are_an_error_not_a_panic() {
        let mut mem = FakeMemory::default();
        let mut img = synthetic_image(GUID, 3, "x.pdb");
        img.truncate(0x1f0);
        mem.map(0x10000, img);
        let err = read_pdb_info(&mut mem, 0x10000, 0x400).await.unwrap_err();
        assert!(err.to_string().contains("debug directory"), "{err}");
        let mut mem = FakeMemory::default();
        mem.map(0x10000, vec![0u8; 0x100]);
        let err = read_pdb_info(&mut mem, 0x10000, 0).await.unwrap_err();
        assert!(err.to_string().contains("MZ"), "{err}");
    }
}
