//! A QEMU-style ELF core of the simulated machine (`kdleak sim --write-image elf`), as
//! `virsh dump --memory-only` and QEMU's `dump-guest-memory` write one: an ELF64 `ET_CORE` for
//! x86-64; one `PT_NOTE` segment with, per CPU, an `NT_PRSTATUS` note ("CORE") and a "QEMU" note
//! holding `QEMUCPUState` (registers, segments, CR0–CR4); then one `PT_LOAD` per RAM range, its
//! `p_paddr` the guest-physical address. Frames that hold nothing are holes in the file.
//!
//! Layouts read for the facts (nothing copied): the gABI's ELF64 header, program header and note
//! format; Linux's `struct elf_prstatus` for x86-64 (336 bytes, `pr_pid` at 0x20, `pr_reg` —
//! `struct user_regs_struct`, 27 registers, rip the 17th — at 0x70); `QEMUCPUState` as QEMU's
//! `contrib/elf2dmp/qemu_elf.h` declares it (version 1, size, rax…r15, rip, rflags, ten 24-byte
//! segments, cr[5], kernel_gs_base: 0x1B8 bytes).

use std::io;
use std::path::Path;

use super::vm::{put_page, Frames, Placement};
use super::ImageSummary;
use crate::sim::machine::memory::PAGE_SIZE;
use crate::sim::machine::Machine;

const ELF_HEADER_LEN: usize = 0x40;
const PHDR_LEN: usize = 56;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const ET_CORE: u16 = 4;
const EM_X86_64: u16 = 62;
const NT_PRSTATUS: u32 = 1;
const PRSTATUS_LEN: usize = 336;
const PRSTATUS_PID: usize = 0x20;
const PRSTATUS_RIP: usize = 0x70 + 16 * 8;
const QEMU_STATE_LEN: usize = 0x1B8;
const QEMU_RIP: usize = 8 + 16 * 8;
const QEMU_CR: usize = 8 + 18 * 8 + 10 * 24;
/// CR0 with PE, PG (and WP, NE, ET) set; CR4 with PAE and PGE: a 64-bit kernel's.
const CR0: u64 = 0x8005_0033;
const CR4: u64 = 0x0000_06F8;

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// One note: namesz, descsz, type, the name with its NUL, the desc, each padded to 4 bytes.
fn note(out: &mut Vec<u8>, name: &[u8], kind: u32, desc: &[u8]) {
    out.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(name);
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(desc);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Writes the ELF core of `machine` to `path` (atomically).
pub fn write_elf(
    machine: &Machine,
    path: &Path,
    placement: Placement,
) -> Result<ImageSummary, super::ImageError> {
    let frames = Frames::new(machine, placement)?;
    let mut notes = Vec::new();
    for index in 0..machine.processor_count() {
        let Some(cpu) = machine.cpu(index) else {
            continue;
        };
        let mut status = vec![0u8; PRSTATUS_LEN];
        put(
            &mut status,
            PRSTATUS_PID,
            &(u32::from(index) + 1).to_le_bytes(),
        );
        put(&mut status, PRSTATUS_RIP, &cpu.rip().to_le_bytes());
        note(&mut notes, b"CORE", NT_PRSTATUS, &status);
        let mut state = vec![0u8; QEMU_STATE_LEN];
        put(&mut state, 0, &1u32.to_le_bytes());
        put(&mut state, 4, &(QEMU_STATE_LEN as u32).to_le_bytes());
        put(&mut state, QEMU_RIP, &cpu.rip().to_le_bytes());
        put(&mut state, QEMU_CR, &CR0.to_le_bytes());
        put(&mut state, QEMU_CR + 3 * 8, &frames.cr3().to_le_bytes());
        put(&mut state, QEMU_CR + 4 * 8, &CR4.to_le_bytes());
        note(&mut notes, b"QEMU", 0, &state);
    }
    let phnum = 1 + frames.ram.len();
    let notes_at = (ELF_HEADER_LEN + phnum * PHDR_LEN) as u64;
    let mut header = vec![0u8; notes_at as usize];
    put(&mut header, 0, b"\x7fELF\x02\x01\x01");
    put(&mut header, 0x10, &ET_CORE.to_le_bytes());
    put(&mut header, 0x12, &EM_X86_64.to_le_bytes());
    put(&mut header, 0x14, &1u32.to_le_bytes());
    put(&mut header, 0x20, &(ELF_HEADER_LEN as u64).to_le_bytes());
    put(&mut header, 0x34, &(ELF_HEADER_LEN as u16).to_le_bytes());
    put(&mut header, 0x36, &(PHDR_LEN as u16).to_le_bytes());
    put(&mut header, 0x38, &(phnum as u16).to_le_bytes());
    let phdr = |header: &mut Vec<u8>, i: usize, kind: u32, offset: u64, paddr: u64, len: u64| {
        let at = ELF_HEADER_LEN + i * PHDR_LEN;
        put(header, at, &kind.to_le_bytes());
        if kind == PT_LOAD {
            put(header, at + 4, &7u32.to_le_bytes()); // PF_R | PF_W | PF_X
        }
        put(header, at + 8, &offset.to_le_bytes());
        put(header, at + 0x18, &paddr.to_le_bytes());
        put(header, at + 0x20, &len.to_le_bytes());
        put(header, at + 0x28, &len.to_le_bytes());
    };
    phdr(&mut header, 0, PT_NOTE, notes_at, 0, notes.len() as u64);
    // Segment data from the first page after the notes, each segment page-aligned in the file
    // so holes stay whole blocks.
    let mut offset = (notes_at + notes.len() as u64).next_multiple_of(PAGE_SIZE);
    let mut segments = Vec::new();
    for (i, &(base, len)) in frames.ram.iter().enumerate() {
        phdr(&mut header, i + 1, PT_LOAD, offset, base, len);
        segments.push((base, len, offset));
        offset += len;
    }
    let size = offset;
    super::write_image(path, "elf", &frames, size, |file| {
        use std::io::Write;
        file.write_all(&header)?;
        file.write_all(&notes)?;
        let mut pages = 0u64;
        frames.for_each(|pfn, page| {
            let pa = pfn * PAGE_SIZE;
            let Some(&(base, _, at)) = segments
                .iter()
                .find(|&&(base, len, _)| pa >= base && pa < base + len)
            else {
                return Err(io::Error::other(format!(
                    "frame {pfn:#x} lies outside the image's RAM"
                )));
            };
            pages += 1;
            put_page(file, at + (pa - base), page)
        })?;
        Ok(pages)
    })
}
