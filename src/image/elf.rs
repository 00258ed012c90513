//! ELF cores of a virtual machine's memory, as QEMU writes them for `virsh dump --memory-only`
//! and the monitor's `dump-guest-memory`: an ELF64 `ET_CORE` for x86-64 whose `PT_LOAD` segments
//! hold guest-physical memory (`p_paddr` → `p_offset`, `p_filesz` bytes), and whose `PT_NOTE`
//! segment holds per CPU an `NT_PRSTATUS` note ("CORE") and a "QEMU" note with the CPU's state,
//! control registers included.
//!
//! Layouts: the ELF64 header and program header (the System V gABI, `elf.h`: e_phoff @0x20,
//! e_shoff @0x28, e_phentsize @0x36, e_phnum @0x38 with `PN_XNUM` 0xFFFF moving the count to
//! section 0's sh_info; program header p_type @0, p_offset @8, p_paddr @0x18, p_filesz @0x20);
//! the QEMU note's `QEMUCPUState` as QEMU's own reader has it (`contrib/elf2dmp/qemu_elf.h`:
//! version, size, 16 general registers, rip, rflags, ten 24-byte segments, then cr[5], so CR3 is
//! at 0x1A0). The image names no kernel: the kernel is found by [`super::scan`].

use super::error::{DumpError, Result};
use super::format::{Layout, MachineFacts};
use super::physmap::{PhysMap, Run, MAX_PFN, PAGE_SIZE};
use super::Source;
use crate::kernel::{le_u16, le_u32, le_u64};

pub const MAGIC: &[u8; 4] = b"\x7fELF";
const ELF_HEADER_LEN: usize = 0x40;
const PHDR_LEN: u64 = 56;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_CORE: u16 = 4;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
/// e_phnum's escape: the count is in section header 0's sh_info (gABI "Extended numbering").
const PN_XNUM: u16 = 0xFFFF;
const NT_PRSTATUS: u32 = 1;
/// The type of the "QEMU" note (QEMU `target/i386/arch_dump.c` writes it as 0).
const NT_QEMU_CPU_STATE: u32 = 0;
/// `QEMUCPUState.cr[3]`: 8 (version, size) + 18 registers × 8 + 10 segments × 24 + cr[0..3].
const QEMU_CR3: usize = 8 + 18 * 8 + 10 * 24 + 3 * 8;
/// Program headers and note bytes read at most: far beyond a machine's CPUs and memory ranges.
const MAX_SEGMENTS: u64 = 1 << 20;
const MAX_NOTES_LEN: u64 = 64 << 20;

fn io(offset: u64, e: std::io::Error) -> DumpError {
    DumpError::corrupt(offset, format!("reading the file failed: {e}"))
}

/// Reads an ELF core whose first bytes are `head`.
pub fn read<S: Source + ?Sized>(head: &[u8], src: &S) -> Result<Layout> {
    let file_len = src.len();
    if head.len() < ELF_HEADER_LEN {
        return Err(DumpError::corrupt(
            head.len() as u64,
            format!(
                "the file ends after {} bytes, inside the 64-byte ELF header",
                head.len()
            ),
        ));
    }
    // Reached without detection when the user names the format (`--image-format elf`).
    if !head.starts_with(MAGIC) {
        return Err(DumpError::NotADump(
            "it does not start with an ELF header (\\x7fELF): it is not a VM core; check \
             --image-format (without it the format is found from the file's first bytes)"
                .into(),
        ));
    }
    if head[4] != ELFCLASS64 || head[5] != ELFDATA2LSB {
        return Err(DumpError::Unsupported(format!(
            "this ELF file is {}-bit {}-endian: only the little-endian ELF64 cores of x64 \
             machines are memory images kdleak reads",
            if head[4] == ELFCLASS64 { 64 } else { 32 },
            if head[5] == ELFDATA2LSB {
                "little"
            } else {
                "big"
            }
        )));
    }
    let (e_type, machine) = (le_u16(head, 0x10), le_u16(head, 0x12));
    if e_type != ET_CORE {
        return Err(DumpError::NotADump(format!(
            "it is an ELF file of type {e_type} (an executable or library), not a core file \
             (type 4): write the VM's memory with `virsh dump --memory-only` or QEMU's \
             `dump-guest-memory`"
        )));
    }
    if machine != EM_X86_64 {
        return Err(DumpError::Unsupported(format!(
            "the ELF core is of a machine of type {machine}, not x86-64 (62): only x64 Windows \
             is supported"
        )));
    }
    let phoff = le_u64(head, 0x20);
    let phentsize = u64::from(le_u16(head, 0x36));
    let mut phnum = u64::from(le_u16(head, 0x38));
    if phnum == u64::from(PN_XNUM) {
        phnum = extended_count(head, src)?;
    }
    if phentsize != PHDR_LEN && phnum > 0 {
        return Err(DumpError::corrupt(
            0x36,
            format!("e_phentsize is {phentsize}, not the 56 bytes of an ELF64 program header"),
        ));
    }
    let table_end = phnum
        .checked_mul(PHDR_LEN)
        .and_then(|n| n.checked_add(phoff))
        .filter(|&end| end <= file_len && phnum <= MAX_SEGMENTS);
    let Some(table_end) = table_end else {
        return Err(DumpError::corrupt(
            0x20,
            format!(
                "{phnum} program headers at {phoff:#x} do not fit in the file of {file_len} bytes"
            ),
        ));
    };
    let mut table = vec![0u8; (table_end - phoff) as usize];
    src.read_at(phoff, &mut table).map_err(|e| io(phoff, e))?;
    let mut runs = Vec::new();
    let mut pages = 0u64;
    let mut cpus = Cpus::default();
    let mut loads = 0usize;
    for (i, ph) in table.chunks_exact(PHDR_LEN as usize).enumerate() {
        let at = phoff + i as u64 * PHDR_LEN;
        let (p_type, offset, paddr, filesz) = (
            le_u32(ph, 0),
            le_u64(ph, 8),
            le_u64(ph, 0x18),
            le_u64(ph, 0x20),
        );
        let end = offset.checked_add(filesz).filter(|&end| end <= file_len);
        if matches!(p_type, PT_LOAD | PT_NOTE) && end.is_none() {
            return Err(DumpError::corrupt(
                at,
                format!(
                    "segment {i} claims {filesz:#x} bytes at file offset {offset:#x}, past the \
                     end of the file ({file_len} bytes; cut short?)"
                ),
            ));
        }
        match p_type {
            PT_LOAD => {
                loads += 1;
                let count = filesz / PAGE_SIZE;
                if paddr % PAGE_SIZE != 0 {
                    return Err(DumpError::corrupt(
                        at,
                        format!("segment {i} starts at physical address {paddr:#x}, not on a page"),
                    ));
                }
                let first_pfn = paddr / PAGE_SIZE;
                if first_pfn.checked_add(count).is_none_or(|e| e > MAX_PFN) {
                    return Err(DumpError::corrupt(
                        at,
                        format!("segment {i} ({filesz:#x} bytes at {paddr:#x}) ends beyond 2^52"),
                    ));
                }
                if count > 0 {
                    runs.push(Run {
                        first_pfn,
                        pages: count,
                        file_offset: offset,
                    });
                    pages += count;
                }
            }
            PT_NOTE => cpus.read_notes(src, offset, filesz, at)?,
            _ => {}
        }
    }
    if pages == 0 {
        return Err(DumpError::NotADump(format!(
            "the ELF core holds no memory ({loads} PT_LOAD segment(s) with whole pages): write \
             it with `virsh dump --memory-only` or `dump-guest-memory`, not a process core"
        )));
    }
    let map = PhysMap::finish(runs, pages, phoff)?;
    let mut facts = MachineFacts::unknown();
    facts.number_processors = cpus.count;
    let cr3_note = if cpus.cr3.is_empty() {
        "no QEMU CPU note with CR3".to_string()
    } else {
        format!("CR3 of {} CPU(s) in QEMU notes", cpus.cr3.len())
    };
    Ok(Layout {
        facts,
        map,
        format: format!(
            "QEMU ELF core ({} CPU(s), {loads} memory segment(s), {cr3_note})",
            cpus.count
        ),
        cr3_candidates: cpus.cr3,
    })
}

/// The program header count of a core with `PN_XNUM`: section header 0's sh_info.
fn extended_count<S: Source + ?Sized>(head: &[u8], src: &S) -> Result<u64> {
    let shoff = le_u64(head, 0x28);
    let mut section = [0u8; 0x40];
    if shoff.checked_add(0x40).is_none_or(|end| end > src.len()) {
        return Err(DumpError::corrupt(
            0x28,
            format!("e_phnum is PN_XNUM but section header 0 at {shoff:#x} is not in the file"),
        ));
    }
    src.read_at(shoff, &mut section).map_err(|e| io(shoff, e))?;
    Ok(u64::from(le_u32(&section, 0x2C)))
}

/// What the notes say about the CPUs.
#[derive(Default)]
struct Cpus {
    /// NT_PRSTATUS notes: one per CPU.
    count: u32,
    /// CR3 of each CPU with a QEMU note, in note order.
    cr3: Vec<u64>,
}

impl Cpus {
    /// Reads the notes of a `PT_NOTE` segment (namesz, descsz, type, name and desc each padded
    /// to 4 bytes: gABI "Note Section").
    fn read_notes<S: Source + ?Sized>(
        &mut self,
        src: &S,
        offset: u64,
        len: u64,
        at: u64,
    ) -> Result<()> {
        if len > MAX_NOTES_LEN {
            return Err(DumpError::corrupt(
                at,
                format!("a note segment of {len} bytes; a machine's notes take far less"),
            ));
        }
        let mut notes = vec![0u8; len as usize];
        src.read_at(offset, &mut notes).map_err(|e| io(offset, e))?;
        let mut cursor = 0usize;
        while cursor + 12 <= notes.len() {
            let namesz = le_u32(&notes, cursor) as usize;
            let descsz = le_u32(&notes, cursor + 4) as usize;
            let kind = le_u32(&notes, cursor + 8);
            let name_at = cursor + 12;
            let desc_at = name_at.saturating_add(namesz.next_multiple_of(4));
            let next = desc_at.saturating_add(descsz.next_multiple_of(4));
            if next > notes.len() {
                return Err(DumpError::corrupt(
                    offset + cursor as u64,
                    format!("a note of {namesz}+{descsz} bytes runs past its segment"),
                ));
            }
            let name = &notes[name_at..name_at + namesz];
            let name = name.strip_suffix(b"\0").unwrap_or(name);
            let desc = &notes[desc_at..desc_at + descsz];
            match (name, kind) {
                (b"CORE", NT_PRSTATUS) => self.count += 1,
                (b"QEMU", NT_QEMU_CPU_STATE) if desc.len() >= QEMU_CR3 + 8 => {
                    self.cr3.push(le_u64(desc, QEMU_CR3));
                }
                _ => {}
            }
            cursor = next;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A QEMU-style core: notes for `cr3s`, one PT_LOAD per (paddr, pages), pages zero.
    pub fn core(cr3s: &[u64], segments: &[(u64, u64)]) -> Vec<u8> {
        let mut notes = Vec::new();
        let mut note = |name: &[u8], kind: u32, desc: &[u8]| {
            notes.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
            notes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            notes.extend_from_slice(&kind.to_le_bytes());
            notes.extend_from_slice(name);
            notes.push(0);
            while notes.len() % 4 != 0 {
                notes.push(0);
            }
            notes.extend_from_slice(desc);
            while notes.len() % 4 != 0 {
                notes.push(0);
            }
        };
        for &cr3 in cr3s {
            note(b"CORE", NT_PRSTATUS, &[0u8; 336]);
            let mut state = vec![0u8; 0x1B8];
            state[QEMU_CR3..QEMU_CR3 + 8].copy_from_slice(&cr3.to_le_bytes());
            note(b"QEMU", NT_QEMU_CPU_STATE, &state);
        }
        let phnum = 1 + segments.len();
        let mut f = vec![0u8; 0x40 + phnum * 56];
        f[0..4].copy_from_slice(MAGIC);
        f[4] = ELFCLASS64;
        f[5] = ELFDATA2LSB;
        f[6] = 1;
        f[0x10..0x12].copy_from_slice(&ET_CORE.to_le_bytes());
        f[0x12..0x14].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        f[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        f[0x38..0x3A].copy_from_slice(&(phnum as u16).to_le_bytes());
        let notes_at = f.len() as u64;
        let mut data_at = notes_at + notes.len() as u64;
        let ph = |f: &mut Vec<u8>, i: usize, kind: u32, offset: u64, paddr: u64, size: u64| {
            let at = 0x40 + i * 56;
            f[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            f[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
            f[at + 0x18..at + 0x20].copy_from_slice(&paddr.to_le_bytes());
            f[at + 0x20..at + 0x28].copy_from_slice(&size.to_le_bytes());
            f[at + 0x28..at + 0x30].copy_from_slice(&size.to_le_bytes());
        };
        ph(&mut f, 0, PT_NOTE, notes_at, 0, notes.len() as u64);
        for (i, &(paddr, pages)) in segments.iter().enumerate() {
            ph(&mut f, i + 1, PT_LOAD, data_at, paddr, pages * PAGE_SIZE);
            data_at += pages * PAGE_SIZE;
        }
        f.extend_from_slice(&notes);
        f.resize(data_at as usize, 0);
        f
    }

    #[test]
    fn segments_map_physical_pages_and_notes_give_cpus_and_cr3() {
        let f = core(&[0x1ad000, 0x2000], &[(0x1000, 2), (0x100000, 3)]);
        let layout = read(&f[..0x40], &f).unwrap();
        assert_eq!(layout.facts.number_processors, 2);
        assert_eq!(layout.cr3_candidates, vec![0x1ad000, 0x2000]);
        assert_eq!(layout.map.pages(), 5);
        let first = layout.map.file_offset(1).unwrap();
        assert_eq!(layout.map.file_offset(2), Some(first + 0x1000));
        assert_eq!(layout.map.file_offset(0x100), Some(first + 0x2000));
        assert_eq!(layout.map.file_offset(3), None);
        assert!(layout.format.contains("2 CPU(s)"), "{}", layout.format);
    }

    #[test]
    fn hostile_cores_are_refused_without_panic() {
        let f = core(&[0x1000], &[(0x1000, 1)]);
        // A segment past the end of the file.
        let mut bad = f.clone();
        bad[0x40 + 56 + 0x20..0x40 + 56 + 0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(read(&bad[..0x40], &bad)
            .unwrap_err()
            .to_string()
            .contains("past the end"));
        // Too many program headers.
        let mut bad = f.clone();
        bad[0x38..0x3A].copy_from_slice(&0xFFFEu16.to_le_bytes());
        assert!(read(&bad[..0x40], &bad).is_err());
        // PN_XNUM with no section header.
        bad[0x38..0x3A].copy_from_slice(&PN_XNUM.to_le_bytes());
        assert!(read(&bad[..0x40], &bad).is_err());
        // A physical address off a page boundary.
        let mut bad = f.clone();
        bad[0x40 + 56 + 0x18..0x40 + 56 + 0x20].copy_from_slice(&0x1234u64.to_le_bytes());
        assert!(read(&bad[..0x40], &bad)
            .unwrap_err()
            .to_string()
            .contains("not on a page"));
        // A note longer than its segment.
        let mut bad = f.clone();
        let notes_at = le_u64(&f, 0x40 + 8) as usize;
        bad[notes_at + 4..notes_at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read(&bad[..0x40], &bad)
            .unwrap_err()
            .to_string()
            .contains("runs past"));
        // Not a core, not x86-64, 32-bit.
        let mut bad = f.clone();
        bad[0x10] = 2;
        assert_eq!(read(&bad[..0x40], &bad).unwrap_err().exit_code(), 2);
        let mut bad = f.clone();
        bad[0x12] = 183;
        assert_eq!(read(&bad[..0x40], &bad).unwrap_err().exit_code(), 4);
        let mut bad = f.clone();
        bad[4] = 1;
        assert!(read(&bad[..0x40], &bad)
            .unwrap_err()
            .to_string()
            .contains("32-bit"));
        assert!(read(&f[..0x20], &f[..0x20]).is_err());
    }
}
