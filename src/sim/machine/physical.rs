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
//!
//! Like every x64 Windows, the PML4 maps itself: one entry (the *self-map slot*) holds the PML4's
//! own frame, so the 512 GiB that slot covers show every paging structure as memory — the PTE
//! of `va` is at `PTE_BASE + ((va >> 9) & 0x7F_FFFF_FFF8)`, with `PTE_BASE = 0xFFFF_0000_0000_0000
//! | slot << 39`. Windows up to 10 1511 used the fixed slot 0x1ED (PTE base 0xFFFFF680_00000000);
//! Windows 10 1607 (build 14393) and later pick a random slot at boot and keep the PTE base in
//! `nt!MmPteBase` (Geoff Chappell, "MMPTE_HARDWARE": the fixed PTE_BASE/PXE_SELFMAP addresses are
//! "x64 (Before 1607)"; Volatility 3's `framework/automagic/windows.py`: "In very recent Windows
//! versions, the self-referential pointer index has been randomized", and its DTB scanner accepts
//! a self-reference in slots 0x100–0x1FE only). Crash dump readers find CR3 by that entry:
//! a page of physical memory with exactly one entry pointing at itself. Pages mapped inside the
//! window would be hidden by it, so they get no physical view (the layout never puts any there).

use std::collections::{BTreeMap, BTreeSet};

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

/// The self-map slot of Windows before 10 1607 (PTE base 0xFFFFF680_00000000).
pub const FIXED_SELF_MAP_SLOT: u16 = 0x1ED;
/// Windows 10 1607: the first build whose self-map slot is chosen at boot.
pub const SELF_MAP_RANDOMIZED_SINCE_BUILD: u32 = 14393;
/// Slots a randomized self-map may take: the kernel half of the address space except the top
/// slot, where the HAL keeps its fixed mappings (and which Volatility's scanner does not accept).
pub const RANDOMIZED_SELF_MAP_SLOTS: std::ops::RangeInclusive<u16> = 0x100..=0x1FE;

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

/// PML4 slot of the address `va` (bits 47..39).
pub fn pml4_slot(va: u64) -> u16 {
    ((va >> 39) & 0x1FF) as u16
}

/// First PTE of the self-map window of `slot`: what `nt!MmPteBase` holds on Windows 10 1607+.
pub fn pte_base(slot: u16) -> u64 {
    0xFFFF_0000_0000_0000 | (u64::from(slot & 0x1FF) << 39)
}

/// The self-map slot a kernel of `build` uses when nothing chooses one: 0x1ED before Windows 10
/// 1607; after, a slot in [`RANDOMIZED_SELF_MAP_SLOTS`] derived from `seed` (e.g. the kernel's
/// PDB GUID, so a scenario always gets the same one), skipping 0x1ED and every slot in `taken`
/// (those holding mapped memory). `None` if every candidate is taken.
pub fn default_self_map_slot(build: u32, seed: &[u8], taken: &BTreeSet<u16>) -> Option<u16> {
    if build < SELF_MAP_RANDOMIZED_SINCE_BUILD {
        return (!taken.contains(&FIXED_SELF_MAP_SLOT)).then_some(FIXED_SELF_MAP_SLOT);
    }
    // FNV-1a: a stable hash (std's is randomized per process).
    let hash = seed.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    });
    let (first, last) = (
        *RANDOMIZED_SELF_MAP_SLOTS.start(),
        *RANDOMIZED_SELF_MAP_SLOTS.end(),
    );
    let count = u64::from(last - first + 1);
    (0..count)
        .map(|i| first + ((hash + i) % count) as u16)
        .find(|slot| *slot != FIXED_SELF_MAP_SLOT && !taken.contains(slot))
}

/// The physical view of one memory layout (valid until pages are mapped or unmapped; see
/// [`SimMemory::generation`]).
#[derive(Debug, Clone)]
pub struct PhysicalMemory {
    /// The PML4 entry that points at the PML4 itself.
    self_map_slot: u16,
    tables: Vec<Box<[u64; ENTRIES]>>,
    /// Frames holding data or tables, by frame number.
    used: BTreeMap<u64, FrameUse>,
    /// One past the last RAM frame.
    end_pfn: u64,
    generation: u64,
}

impl PhysicalMemory {
    /// Lays out frames and page tables for the pages mapped in `memory`, with the PML4's
    /// self-map entry at `self_map_slot` (0–0x1FF).
    pub fn build(memory: &SimMemory, self_map_slot: u16) -> Self {
        let self_map_slot = self_map_slot & 0x1FF;
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
        let reachable = |va: u64| is_canonical(va) && pml4_slot(va) != self_map_slot;
        for (va, pfn) in memory.frames().filter(|&(va, _)| reachable(va)) {
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
        // Like the other kernel-only PML4 entries (the self-map is not reachable from user mode).
        tables[0][usize::from(self_map_slot)] = CR3 | KERNEL_ENTRY;
        for (i, &pfn) in table_pfns.iter().enumerate() {
            used.insert(pfn, FrameUse::Table(i));
        }
        let end_pfn = used
            .keys()
            .next_back()
            .map_or(HIGH_RAM_START, |&pfn| pfn + 1);
        Self {
            self_map_slot,
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

    /// The PML4 slot that maps the paging structures.
    pub fn self_map_slot(&self) -> u16 {
        self.self_map_slot
    }

    /// Whether `va` lies in the self-map window (where the paging structures show).
    pub fn in_self_map(&self, va: u64) -> bool {
        is_canonical(va) && pml4_slot(va) == self.self_map_slot
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

    /// Reads up to `len` virtual bytes the way the processor does, every page through the page
    /// tables (so the self-map window shows the paging structures). Stops at the first byte that
    /// does not translate, like [`SimMemory::read`].
    pub fn read_virtual(&self, memory: &SimMemory, va: u64, len: usize) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(len.min(1 << 16));
        let mut cursor = va;
        while out.len() < len {
            let Some(pa) = self.translate(memory, cursor) else {
                return (out, false);
            };
            let take = (PAGE_SIZE - (cursor % PAGE_SIZE)).min((len - out.len()) as u64) as usize;
            let (bytes, complete) = self.read(memory, pa, take);
            out.extend_from_slice(&bytes);
            if !complete {
                return (out, false);
            }
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
        let physical = PhysicalMemory::build(&memory, FIXED_SELF_MAP_SLOT);
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
        let physical = PhysicalMemory::build(&memory, FIXED_SELF_MAP_SLOT);
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
        let physical = PhysicalMemory::build(&memory, FIXED_SELF_MAP_SLOT);
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
    fn the_pml4_maps_itself_at_the_self_map_slot() {
        let mut memory = SimMemory::new();
        memory.map(KERNEL + 0x1234, b"hello");
        for slot in [FIXED_SELF_MAP_SLOT, 0x1A3] {
            let physical = PhysicalMemory::build(&memory, slot);
            assert_eq!(physical.self_map_slot(), slot);
            let pml4e = entry(&memory, &physical, CR3, u64::from(slot));
            assert_eq!(pml4e, CR3 | 0x63);
            // Exactly one entry of the PML4 points back at it: what crash dump readers scan for.
            let (pml4, _) = physical.read(&memory, CR3, PAGE_SIZE as usize);
            let self_refs = pml4
                .chunks_exact(8)
                .map(|e| u64::from_le_bytes(e.try_into().unwrap()))
                .filter(|e| e & PTE_PRESENT != 0 && e & PTE_ADDRESS_MASK == CR3)
                .count();
            assert_eq!(self_refs, 1);
            // Through the window: the PML4 itself at PXE_BASE, the PTE of KERNEL+0x1000 at
            // PTE_BASE + (va >> 9 & 0x7F_FFFF_FFF8).
            let base = pte_base(slot);
            let pxe_base =
                base | (u64::from(slot) << 30) | (u64::from(slot) << 21) | (u64::from(slot) << 12);
            assert!(physical.in_self_map(pxe_base));
            assert_eq!(
                physical
                    .read_virtual(&memory, pxe_base, PAGE_SIZE as usize)
                    .0,
                pml4
            );
            let pte_va = base + (((KERNEL + 0x1000) >> 9) & 0x7F_FFFF_FFF8);
            let (pte, complete) = physical.read_virtual(&memory, pte_va, 8);
            assert!(complete);
            let pte = u64::from_le_bytes(pte.try_into().unwrap());
            assert_eq!(
                pte & PTE_ADDRESS_MASK,
                memory.frame_of(KERNEL + 0x1000).unwrap() * PAGE_SIZE
            );
            // Ordinary addresses read the mapped bytes through the same walk.
            assert_eq!(
                physical.read_virtual(&memory, KERNEL + 0x1234, 5),
                (b"hello".to_vec(), true)
            );
            assert_eq!(
                physical.read_virtual(&memory, KERNEL - 2, 4),
                (Vec::new(), false)
            );
        }
        assert_eq!(pte_base(FIXED_SELF_MAP_SLOT), 0xFFFF_F680_0000_0000);
    }

    #[test]
    fn the_default_slot_is_fixed_before_1607_and_seeded_after() {
        let none = BTreeSet::new();
        assert_eq!(default_self_map_slot(7601, b"a", &none), Some(0x1ED));
        let slot = default_self_map_slot(19041, b"guid", &none).unwrap();
        assert!(RANDOMIZED_SELF_MAP_SLOTS.contains(&slot) && slot != FIXED_SELF_MAP_SLOT);
        assert_eq!(default_self_map_slot(19041, b"guid", &none), Some(slot));
        let taken = BTreeSet::from([slot]);
        let other = default_self_map_slot(19041, b"guid", &taken).unwrap();
        assert_ne!(other, slot);
        let all: BTreeSet<u16> = RANDOMIZED_SELF_MAP_SLOTS.collect();
        assert_eq!(default_self_map_slot(22000, b"guid", &all), None);
        assert_eq!(default_self_map_slot(7601, b"guid", &all), None);
    }

    #[test]
    fn pages_inside_the_self_map_window_get_no_physical_view() {
        let mut memory = SimMemory::new();
        memory.map_zeroed(pte_base(0x1A3), 0x1000);
        let physical = PhysicalMemory::build(&memory, 0x1A3);
        assert_eq!(physical.used_count(), 1);
    }

    #[test]
    fn non_canonical_pages_have_no_physical_view() {
        let mut memory = SimMemory::new();
        memory.map_zeroed(0x0000_8000_0000_0000, 0x1000);
        let physical = PhysicalMemory::build(&memory, FIXED_SELF_MAP_SLOT);
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
