//! Memory images of the simulated machine as a hypervisor writes them — the LiveKD of a VM lab:
//! a QEMU-style ELF core ([`super::elf`], `virsh dump --memory-only`) and a raw physical image
//! ([`super::raw`], `.raw`/`.mem`/`.vmem`). Both hold the same physical memory as the crash dumps
//! ([`crate::sim::machine::physical`]), optionally moved up in a larger machine: with
//! `physical_size`, the image covers that much RAM (a multi-GiB machine), the simulator's frames
//! sit at its top, every page-table entry and CR3 moved with them, and the rest are holes the
//! file system does not store (a sparse file), as a VM's untouched memory.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};

use crate::sim::machine::memory::PAGE_SIZE;
use crate::sim::machine::physical::{FrameUse, PhysicalMemory, PTE_ADDRESS_MASK, PTE_PRESENT};
use crate::sim::machine::Machine;

/// The top of the legacy VGA/ROM hole (PC memory map): RAM of a VM resumes at 1 MiB.
const HIGH_RAM: u64 = 0x10_0000;
const LEGACY_HOLE: u64 = 0xA_0000;

/// Where the simulator's frames go in the image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Placement {
    /// Bytes of RAM the image covers; 0: just the simulator's RAM.
    pub physical_size: u64,
}

/// The machine's frames, moved up by `shift` frames, as the image stores them.
pub struct Frames<'a> {
    machine: &'a Machine,
    physical: PhysicalMemory,
    shift: u64,
    /// RAM as (first byte, length) in the image.
    pub ram: Vec<(u64, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error(
        "--physical-size {size:#x} is smaller than the simulated machine's memory \
         ({needed:#x} bytes) or not a whole number of pages"
    )]
    TooSmall { size: u64, needed: u64 },
}

impl<'a> Frames<'a> {
    pub fn new(machine: &'a Machine, placement: Placement) -> Result<Self, PlacementError> {
        let physical = PhysicalMemory::build(&machine.memory, machine.self_map_slot);
        let end = physical.end_pfn() * PAGE_SIZE;
        if placement.physical_size == 0 {
            let ram = physical
                .ram_runs()
                .into_iter()
                .map(|(base, count)| (base * PAGE_SIZE, count * PAGE_SIZE))
                .collect();
            return Ok(Self {
                machine,
                physical,
                shift: 0,
                ram,
            });
        }
        let size = placement.physical_size;
        if size % PAGE_SIZE != 0 || size < end + HIGH_RAM {
            return Err(PlacementError::TooSmall {
                size,
                needed: end + HIGH_RAM,
            });
        }
        Ok(Self {
            machine,
            physical,
            shift: (size - end) / PAGE_SIZE,
            ram: vec![(0, LEGACY_HOLE), (HIGH_RAM, size - HIGH_RAM)],
        })
    }

    /// CR3 in the image.
    pub fn cr3(&self) -> u64 {
        self.physical.cr3() + self.shift * PAGE_SIZE
    }

    /// One past the last byte of RAM.
    pub fn end(&self) -> u64 {
        self.ram.last().map_or(0, |&(base, len)| base + len)
    }

    /// Image frames that hold something, ascending, with their bytes written into `page`.
    pub fn for_each(
        &self,
        mut each: impl FnMut(u64, &[u8; PAGE_SIZE as usize]) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut page = [0u8; PAGE_SIZE as usize];
        for pfn in self.physical.used_frames() {
            if !self
                .physical
                .copy_frame(&self.machine.memory, pfn, &mut page)
            {
                continue;
            }
            if self.shift != 0 && matches!(self.physical.frame_use(pfn), Some(FrameUse::Table(_))) {
                for entry in page.chunks_exact_mut(8) {
                    let value = u64::from_le_bytes(entry.try_into().expect("8 bytes"));
                    if value & PTE_PRESENT != 0 {
                        let moved = ((value & PTE_ADDRESS_MASK) + self.shift * PAGE_SIZE)
                            | (value & !PTE_ADDRESS_MASK);
                        entry.copy_from_slice(&moved.to_le_bytes());
                    }
                }
            }
            each(pfn + self.shift, &page)?;
        }
        Ok(())
    }
}

/// Writes `page` at `offset` of `file` (seeking over the holes between).
pub(super) fn put_page(file: &mut File, offset: u64, page: &[u8]) -> io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(page)
}
