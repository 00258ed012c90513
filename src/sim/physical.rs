//! The simulated machine's physical memory: the frames behind [`SimMemory`]'s pages plus real x64
//! 4-level paging structures (PML4 → PDPT → PD → PT, 512 eight-byte entries each), so a reader
//! that only has physical memory and CR3 — a crash dump reader, or a debugger using
//! ReadPhysicalMemory — translates addresses exactly as the processor does (Intel SDM vol. 3A
//! §4.5, "4-level paging").
//!
//! The view is derived from the virtual pages on demand: data frames come from
//! [`SimMemory::frame_of`] (stable while a page stays mapped), the PML4 always sits at
//! [`PML4_PFN`], and the other tables take the frames just above the highest data frame, in address
//! order. Nothing is stored twice: data frames read the live page, so writes show through.
//!
//! Physical RAM is laid out like a small PC: frames 1–0x9F (conventional memory), a hole for the
//! legacy VGA/ROM window 0xA0–0xFF, then 0x100 up to the last used frame. Frame 0 is never RAM
//! here; Windows keeps PFN 0 out of its own use too, and the RDMP-style dump readers treat PFN 0
//! as an end marker. Unused RAM frames read as zeros.
//!
//! Non-canonical virtual pages (bits 63..48 not a copy of bit 47) cannot be reached through page
//! tables; they stay readable virtually but have no physical view.

use std::collections::BTreeMap;

use super::memory::{SimMemory, FIRST_DATA_PFN, PAGE_SIZE};

/// Frame of the PML4. CR3 = 0x1AD000 is the value the simulator always reported (non-zero, as
/// ntoseye requires, kd.md §3.5), so hosts see the same CR3 as before, now backed by tables.
pub const PML4_PFN: u64 = 0x1AD;
/// CR3 (DirectoryTableBase) of every CPU: the PML4's physical address, no PCID bits.
pub const CR3: u64 = PML4_PFN * PAGE_SIZE;

/// Paging-structure entry bits (Intel SDM vol. 3A table 4-14 ff.).
pub const PTE_PRESENT: u64 = 1 << 0;
pub const PTE_WRITE: u64 = 1 << 1;
pub const PTE_ACCESSED: u64 = 1 << 5;
pub const PTE_DIRTY: u64 = 1 << 6;
/// PS: a PDPTE/PDE mapping a 1 GiB/2 MiB page. Never set here (all pages are 4 KiB).
pub const PTE_LARGE: u64 = 1 << 7;
/// Frame address bits 12..51 of an entry.
pub const PTE_ADDRESS_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// Supervisor read/write, accessed and dirty: a kernel data page as Windows maps it (0x63).
const KERNEL_ENTRY: u64 = PTE_PRESENT | PTE_WRITE | PTE_ACCESSED | PTE_DIRTY;

const ENTRIES: usize = 512;
/// Conventional memory below the legacy VGA/ROM hole.
const LOW_RAM: std::ops::Range<u64> = 1..0xA0;
/// First frame above the hole.
const HIGH_RAM_START: u64 = 0x100;

/// What a RAM frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameUse {
    /// Nothing (reads as zeros).
    Free,
    /// The mapped virtual page at this address.
    Data(u64),
    /// A paging structure (index into the table list; 0 is the PML4).
    Table(usize),
}

/// The physical view of one memory layout (valid until pages are mapped or unmapped; see
/// [`SimMemory::generation`]).
#[derive(Debug, Clone)]
pub struct PhysicalMemory {
    tables: Vec<Box<[u64; ENTRIES]>>,
    /// Frames holding data or tables, by frame number.
    used: BTreeMap<u64, FrameUse>,
    /// One past the last RAM frame.
    end_pfn: u64,
    generation: u64,
}

impl PhysicalMemory {
    /// Lays out frames and page tables for the pages mapped in `memory`.
    pub fn build(memory: &SimMemory) -> Self {
        let first_table_pfn = memory
            .frames()
            .map(|(_, pfn)| pfn + 1)
            .max()
            .unwrap_or(FIRST_DATA_PFN)
            .max(FIRST_DATA_PFN);
        let mut tables: Vec<Box<[u64; ENTRIES]>> = vec![Box::new([0; ENTRIES])];
        let mut table_pfns = vec![PML4_PFN];
        // (level, va >> level shift) → table: one table per distinct address prefix.
        let mut index: BTreeMap<(u32, u64), usize> = BTreeMap::new();
        let mut used = BTreeMap::new();
        for (va, pfn) in memory.frames().filter(|&(va, _)| is_canonical(va)) {
            let mut table = 0;
            // PML4 entries point at PDPTs (shift 39), PDPT entries at PDs (30), PD entries at
            // PTs (21).
            for shift in [39u32, 30, 21] {
                let slot = ((va >> shift) & 0x1FF) as usize;
                let child = match index.get(&(shift, va >> shift)) {
                    Some(&child) => child,
                    None => {
                        let child = tables.len();
                        let child_pfn = first_table_pfn + (child as u64 - 1);
                        tables.push(Box::new([0; ENTRIES]));
                        table_pfns.push(child_pfn);
                        tables[table][slot] = (child_pfn * PAGE_SIZE) | KERNEL_ENTRY;
                        index.insert((shift, va >> shift), child);
                        child
                    }
                };
                table = child;
            }
            tables[table][((va >> 12) & 0x1FF) as usize] = (pfn * PAGE_SIZE) | KERNEL_ENTRY;
            used.insert(pfn, FrameUse::Data(va));
        }
        for (i, &pfn) in table_pfns.iter().enumerate() {
            used.insert(pfn, FrameUse::Table(i));
        }
        let end_pfn = used
            .keys()
            .next_back()
            .map_or(HIGH_RAM_START, |&pfn| pfn + 1);
        Self {
            tables,
            used,
            end_pfn,
            generation: memory.generation(),
        }
    }

    /// The [`SimMemory::generation`] this view was built from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn cr3(&self) -> u64 {
        CR3
    }

    /// RAM as (first frame, frame count) runs, ascending — what Windows keeps in
    /// MmPhysicalMemoryBlock and a full dump's PhysicalMemoryBlock describes.
    pub fn ram_runs(&self) -> Vec<(u64, u64)> {
        vec![
            (LOW_RAM.start, LOW_RAM.end - LOW_RAM.start),
            (HIGH_RAM_START, self.end_pfn - HIGH_RAM_START),
        ]
    }

    /// One past the highest RAM frame.
    pub fn end_pfn(&self) -> u64 {
        self.end_pfn
    }

    pub fn ram_pages(&self) -> u64 {
        self.ram_runs().iter().map(|&(_, count)| count).sum()
    }

    /// Frames holding mapped data or paging structures, ascending: what a kernel memory dump
    /// keeps (every page here is kernel memory).
    pub fn used_frames(&self) -> impl Iterator<Item = u64> + '_ {
        self.used.keys().copied()
    }

    pub fn used_count(&self) -> u64 {
        self.used.len() as u64
    }

    /// What frame `pfn` holds; `None` outside RAM.
    pub fn frame_use(&self, pfn: u64) -> Option<FrameUse> {
        if !(LOW_RAM.contains(&pfn) || (HIGH_RAM_START..self.end_pfn).contains(&pfn)) {
            return None;
        }
        Some(self.used.get(&pfn).copied().unwrap_or(FrameUse::Free))
    }

    /// Copies frame `pfn` into `out`; false (and `out` untouched) outside RAM.
    pub fn copy_frame(
        &self,
        memory: &SimMemory,
        pfn: u64,
        out: &mut [u8; PAGE_SIZE as usize],
    ) -> bool {
        match self.frame_use(pfn) {
            None => false,
            Some(FrameUse::Free) => {
                out.fill(0);
                true
            }
            Some(FrameUse::Data(va)) => {
                match memory.page_bytes(va) {
                    Some(bytes) => out.copy_from_slice(bytes),
                    // Only if `memory` changed since the build; a stale view reads zeros rather
                    // than another page's bytes.
                    None => out.fill(0),
                }
                true
            }
            Some(FrameUse::Table(i)) => {
                for (chunk, entry) in out.chunks_exact_mut(8).zip(self.tables[i].iter()) {
                    chunk.copy_from_slice(&entry.to_le_bytes());
                }
                true
            }
        }
    }

    /// Reads up to `len` bytes of physical memory. Like virtual reads (kd.md §3.10) the copy
    /// stops at the first byte outside RAM; the flag says whether all `len` bytes were read.
    pub fn read(&self, memory: &SimMemory, address: u64, len: usize) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(len.min(1 << 16));
        let mut frame = [0u8; PAGE_SIZE as usize];
        let mut cursor = address;
        while out.len() < len {
            let pfn = cursor / PAGE_SIZE;
            if !self.copy_frame(memory, pfn, &mut frame) {
                return (out, false);
            }
            let offset = (cursor % PAGE_SIZE) as usize;
            let take = (PAGE_SIZE as usize - offset).min(len - out.len());
            out.extend_from_slice(&frame[offset..offset + take]);
            match cursor.checked_add(take as u64) {
                Some(next) => cursor = next,
                None => {
                    let complete = out.len() == len;
                    return (out, complete);
                }
            }
        }
        (out, true)
    }

    /// Translates `va` the way the processor does: four entry reads from physical memory,
    /// starting at CR3. `None` where an entry is not present (or the address is non-canonical).
    pub fn translate(&self, memory: &SimMemory, va: u64) -> Option<u64> {
        if !is_canonical(va) {
            return None;
        }
        let mut table = self.cr3() & PTE_ADDRESS_MASK;
        for shift in [39u32, 30, 21, 12] {
            let entry_address = table + ((va >> shift) & 0x1FF) * 8;
            let (bytes, complete) = self.read(memory, entry_address, 8);
            if !complete {
                return None;
            }
            let entry = u64::from_le_bytes(bytes.try_into().ok()?);
            if entry & PTE_PRESENT == 0 {
                return None;
            }
            table = entry & PTE_ADDRESS_MASK;
        }
        Some(table | (va & (PAGE_SIZE - 1)))
    }
}

/// x64 addresses are canonical when bits 63..47 are all equal.
pub fn is_canonical(va: u64) -> bool {
    matches!(va >> 47, 0 | 0x1_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL: u64 = 0xffff_f803_1240_0000;

    fn entry(memory: &SimMemory, physical: &PhysicalMemory, table: u64, index: u64) -> u64 {
        let (bytes, ok) = physical.read(memory, table + index * 8, 8);
        assert!(ok);
        u64::from_le_bytes(bytes.try_into().unwrap())
    }

    #[test]
    fn a_hand_walk_from_cr3_reaches_the_mapped_bytes() {
        let mut memory = SimMemory::new();
        memory.map(KERNEL + 0x1234, b"hello");
        let physical = PhysicalMemory::build(&memory);
        // KERNEL = 0xffff_f803_1240_0000: PML4 index 0x1F0, PDPT 0x00C, PD 0x092, PT 0x000.
        let pml4e = entry(&memory, &physical, CR3, 0x1F0);
        assert_eq!(pml4e & 0xFFF, 0x63);
        let pdpte = entry(&memory, &physical, pml4e & PTE_ADDRESS_MASK, 0x00C);
        let pde = entry(&memory, &physical, pdpte & PTE_ADDRESS_MASK, 0x092);
        let pte = entry(&memory, &physical, pde & PTE_ADDRESS_MASK, 0x001);
        assert_eq!(pte & PTE_LARGE, 0);
        let frame = pte & PTE_ADDRESS_MASK;
        assert_eq!(frame / PAGE_SIZE, memory.frame_of(KERNEL + 0x1000).unwrap());
        assert_eq!(
            physical.read(&memory, frame + 0x234, 5),
            (b"hello".to_vec(), true)
        );
        assert_eq!(
            physical.translate(&memory, KERNEL + 0x1236),
            Some(frame + 0x236)
        );
        // Everything else in those tables is not present.
        assert_eq!(entry(&memory, &physical, CR3, 0x1EF), 0);
        assert_eq!(entry(&memory, &physical, pde & PTE_ADDRESS_MASK, 0x000), 0);
        assert_eq!(physical.translate(&memory, KERNEL), None);
    }

    #[test]
    fn tables_are_shared_per_prefix_and_frames_do_not_collide() {
        let mut memory = SimMemory::new();
        memory.map_zeroed(KERNEL, 0x3000);
        memory.map_zeroed(KERNEL + 0x20_0000, 0x1000); // next PD entry: one more PT
        memory.map_zeroed(0xffff_fa80_0000_0000, 0x1000); // another PML4 slot: PDPT, PD, PT
        let physical = PhysicalMemory::build(&memory);
        // PML4 + (PDPT, PD, PT, PT) + (PDPT, PD, PT).
        assert_eq!(physical.used_count(), 5 + 8);
        let frames: Vec<u64> = physical.used_frames().collect();
        let mut unique = frames.clone();
        unique.dedup();
        assert_eq!(frames, unique);
        assert!(frames.contains(&PML4_PFN));
        for (va, _) in memory.frames() {
            let pa = physical.translate(&memory, va + 8).unwrap();
            assert_eq!(pa / PAGE_SIZE, memory.frame_of(va).unwrap());
        }
    }

    #[test]
    fn writes_show_through_and_physical_reads_stop_outside_ram() {
        let mut memory = SimMemory::new();
        memory.map_zeroed(KERNEL, 0x1000);
        let physical = PhysicalMemory::build(&memory);
        memory.write(KERNEL + 8, &[0xAB; 4]);
        let pa = physical.translate(&memory, KERNEL).unwrap();
        assert_eq!(physical.read(&memory, pa + 8, 4), (vec![0xAB; 4], true));
        // Free RAM reads as zeros; the legacy hole and frame 0 are not RAM.
        assert_eq!(physical.read(&memory, 0x10_0000, 4), (vec![0; 4], true));
        assert_eq!(physical.read(&memory, 0x9_FFFE, 4), (vec![0, 0], false));
        assert_eq!(physical.read(&memory, 0, 1), (Vec::new(), false));
        let end = physical.end_pfn() * PAGE_SIZE;
        assert!(!physical.read(&memory, end - 2, 4).1);
        assert_eq!(physical.read(&memory, u64::MAX - 1, 4), (Vec::new(), false));
        assert_eq!(
            physical.ram_runs(),
            vec![(1, 0x9F), (0x100, physical.end_pfn() - 0x100)]
        );
    }

    #[test]
    fn non_canonical_pages_have_no_physical_view() {
        let mut memory = SimMemory::new();
        memory.map_zeroed(0x0000_8000_0000_0000, 0x1000);
        let physical = PhysicalMemory::build(&memory);
        assert_eq!(physical.used_count(), 1); // the empty PML4
        assert_eq!(physical.translate(&memory, 0x0000_8000_0000_0000), None);
    }

    #[test]
    fn the_view_follows_a_running_timeline() {
        let mut machine = crate::sim::Machine::for_scenario("watch-leak").unwrap();
        let before = machine.physical();
        let kernel_frame = machine.memory.frame_of(machine.kern_base).unwrap();
        machine.set_time_scale(60.0);
        // Ten target minutes: leaky.sys leaks 4 KiB pages, myfault.sys allocates and frees.
        machine.run_for(std::time::Duration::from_secs(10));
        let after = machine.physical();
        assert_ne!(before.generation(), after.generation(), "pages were mapped");
        assert!(
            std::sync::Arc::ptr_eq(&after, &machine.physical()),
            "cached"
        );
        // Frames of pages that stayed mapped did not move.
        assert_eq!(
            after.translate(&machine.memory, machine.kern_base),
            Some(kernel_frame * PAGE_SIZE)
        );
        for (va, pfn) in machine.memory.frames() {
            let pa = after.translate(&machine.memory, va + 0x10).unwrap();
            assert_eq!(pa, pfn * PAGE_SIZE + 0x10, "{va:#x}");
            assert_eq!(
                after.read(&machine.memory, pa, 0x30).0,
                machine.memory.read(va + 0x10, 0x30).0
            );
        }
    }
}
