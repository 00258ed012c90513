//! Sparse virtual memory of the simulated target: 4 KiB pages, mapped on demand.
//!
//! Reads and writes stop at the first unmapped byte, as Windows' `KdpCopyMemoryChunks` does
//! (kd.md §3.10): the caller gets the part before the hole and reports STATUS_UNSUCCESSFUL.
//!
//! Every mapped page also owns a physical frame, assigned when the page is first mapped and kept
//! until it is unmapped, so the physical view ([`super::physical`]) stays put while a scenario
//! timeline maps and frees memory around it.

use std::collections::{BTreeMap, BTreeSet};

/// Page size of the simulated address space.
pub const PAGE_SIZE: u64 = 0x1000;

/// First page frame handed to mapped pages. The frames below are left to what a real machine has
/// there (firmware and legacy areas, the PML4 at [`super::physical::PML4_PFN`]).
pub const FIRST_DATA_PFN: u64 = 0x200;

type Bytes = Box<[u8; PAGE_SIZE as usize]>;

#[derive(Debug, Clone)]
struct Page {
    pfn: u64,
    bytes: Bytes,
}

/// Page-granular sparse memory. Unmapped pages read as "inaccessible", not as zeros.
#[derive(Debug, Clone)]
pub struct SimMemory {
    pages: BTreeMap<u64, Page>,
    /// Next never-used frame number.
    next_pfn: u64,
    /// Frames of unmapped pages, reused lowest first so physical memory stays compact.
    free_pfns: BTreeSet<u64>,
    /// Bumped whenever a page is mapped or unmapped (not on writes): the physical layout derived
    /// from the mapping is valid as long as this is unchanged.
    generation: u64,
}

impl Default for SimMemory {
    fn default() -> Self {
        Self {
            pages: BTreeMap::new(),
            next_pfn: FIRST_DATA_PFN,
            free_pfns: BTreeSet::new(),
            generation: 0,
        }
    }
}

impl SimMemory {
    pub fn new() -> Self {
        Self::default()
    }

    /// The physical frame behind the page containing `addr`, if mapped.
    pub fn frame_of(&self, addr: u64) -> Option<u64> {
        self.pages.get(&page_of(addr)).map(|page| page.pfn)
    }

    /// Every mapped page as (virtual page address, frame number), by address.
    pub fn frames(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.pages.iter().map(|(&va, page)| (va, page.pfn))
    }

    /// The 4 KiB of the mapped page at `page_va` (page aligned).
    pub fn page_bytes(&self, page_va: u64) -> Option<&[u8; PAGE_SIZE as usize]> {
        self.pages.get(&page_va).map(|page| &*page.bytes)
    }

    /// Changes whenever the set of mapped pages changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn allocate_pfn(&mut self) -> u64 {
        if let Some(pfn) = self.free_pfns.pop_first() {
            return pfn;
        }
        let pfn = self.next_pfn;
        self.next_pfn += 1;
        pfn
    }

    /// Maps the pages covering `addr..addr + bytes.len()` (zero-filled where new) and copies
    /// `bytes` there. Bytes past the top of the address space are dropped.
    pub fn map(&mut self, addr: u64, bytes: &[u8]) {
        self.map_zeroed(addr, bytes.len() as u64);
        self.write(addr, bytes);
    }

    /// Maps the pages covering `addr..addr + len` without changing mapped contents.
    pub fn map_zeroed(&mut self, addr: u64, len: u64) {
        if len == 0 {
            return;
        }
        let last = addr.saturating_add(len - 1);
        let mut page = page_of(addr);
        loop {
            if !self.pages.contains_key(&page) {
                let pfn = self.allocate_pfn();
                let bytes = Box::new([0; PAGE_SIZE as usize]);
                self.pages.insert(page, Page { pfn, bytes });
                self.generation += 1;
            }
            match page.checked_add(PAGE_SIZE) {
                Some(next) if next <= last => page = next,
                _ => break,
            }
        }
    }

    /// Removes the pages covering `addr..addr + len`.
    pub fn unmap(&mut self, addr: u64, len: u64) {
        if len == 0 {
            return;
        }
        let last = addr.saturating_add(len - 1);
        let pages: Vec<u64> = self
            .pages
            .range(page_of(addr)..=page_of(last))
            .map(|(&page, _)| page)
            .collect();
        for page in pages {
            if let Some(removed) = self.pages.remove(&page) {
                self.free_pfns.insert(removed.pfn);
                self.generation += 1;
            }
        }
    }

    pub fn is_mapped(&self, addr: u64) -> bool {
        self.pages.contains_key(&page_of(addr))
    }

    /// Number of mapped pages.
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// Reads up to `len` bytes. Returns the bytes before the first unmapped one and whether the
    /// whole range was read (kd.md §3.10). An unmapped first byte gives no bytes.
    pub fn read(&self, addr: u64, len: usize) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(len.min(1 << 16));
        let mut cursor = addr;
        while out.len() < len {
            let Some(page) = self.pages.get(&page_of(cursor)) else {
                return (out, false);
            };
            let offset = (cursor - page_of(cursor)) as usize;
            let take = (PAGE_SIZE as usize - offset).min(len - out.len());
            out.extend_from_slice(&page.bytes[offset..offset + take]);
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

    /// Writes as much of `bytes` as is mapped from `addr` on; returns the count written.
    pub fn write(&mut self, addr: u64, bytes: &[u8]) -> usize {
        let mut written = 0;
        let mut cursor = addr;
        while written < bytes.len() {
            let base = page_of(cursor);
            let Some(page) = self.pages.get_mut(&base) else {
                break;
            };
            let offset = (cursor - base) as usize;
            let take = (PAGE_SIZE as usize - offset).min(bytes.len() - written);
            page.bytes[offset..offset + take].copy_from_slice(&bytes[written..written + take]);
            written += take;
            match cursor.checked_add(take as u64) {
                Some(next) => cursor = next,
                None => break,
            }
        }
        written
    }

    /// A little-endian u64, if all 8 bytes are mapped.
    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        match self.read(addr, 8) {
            (bytes, true) => Some(u64::from_le_bytes(bytes.try_into().expect("8 bytes"))),
            _ => None,
        }
    }
}

fn page_of(addr: u64) -> u64 {
    addr & !(PAGE_SIZE - 1)
}

pub(crate) fn put_u64(bytes: &mut [u8], offset: usize, value: u64) {
    bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u32(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u16(bytes: &mut [u8], offset: usize, value: u16) {
    bytes[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0xffff_f803_1240_0000;

    #[test]
    fn full_read_of_mapped_bytes() {
        let mut memory = SimMemory::new();
        memory.map(BASE + 0x10, b"MZ\x90\x00");
        assert_eq!(memory.read(BASE + 0x10, 4), (b"MZ\x90\x00".to_vec(), true));
        // The rest of the page is mapped and zero.
        assert_eq!(memory.read(BASE, 2), (vec![0, 0], true));
        assert_eq!(memory.page_count(), 1);
    }

    #[test]
    fn read_stops_at_the_first_unmapped_byte() {
        let mut memory = SimMemory::new();
        memory.map(BASE, &[0xAB; 0x1000]);
        let (bytes, complete) = memory.read(BASE + 0xFF0, 0x20);
        assert!(!complete);
        assert_eq!(bytes, vec![0xAB; 0x10]);
        assert_eq!(memory.read(BASE + 0x1000, 8), (Vec::new(), false));
        assert_eq!(memory.read(BASE + 0x2000, 0), (Vec::new(), true));
    }

    #[test]
    fn reads_and_writes_span_pages() {
        let mut memory = SimMemory::new();
        memory.map_zeroed(BASE, 0x2000);
        assert_eq!(memory.write(BASE + 0xFFE, &[1, 2, 3, 4]), 4);
        assert_eq!(memory.read(BASE + 0xFFE, 4), (vec![1, 2, 3, 4], true));
        assert_eq!(memory.write(BASE + 0x1FFE, &[5, 6, 7, 8]), 2);
        assert_eq!(memory.read_u64(BASE + 0xFFE), Some(0x0403_0201));
        assert_eq!(memory.read_u64(BASE + 0x1FFC), None);
    }

    #[test]
    fn top_of_the_address_space() {
        let mut memory = SimMemory::new();
        memory.map(u64::MAX - 3, &[9; 8]);
        assert_eq!(memory.read(u64::MAX - 3, 4), (vec![9; 4], true));
        assert_eq!(memory.read(u64::MAX - 3, 8), (vec![9; 4], false));
    }

    #[test]
    fn unmap_removes_pages() {
        let mut memory = SimMemory::new();
        memory.map_zeroed(BASE, 0x3000);
        memory.unmap(BASE + 0x1000, 1);
        assert!(memory.is_mapped(BASE) && !memory.is_mapped(BASE + 0x1000));
        assert_eq!(memory.read(BASE + 0xFFF, 2), (vec![0], false));
    }

    #[test]
    fn frames_are_stable_and_reused_after_unmap() {
        let mut memory = SimMemory::new();
        memory.map_zeroed(BASE, 0x3000);
        let frames: Vec<u64> = memory.frames().map(|(_, pfn)| pfn).collect();
        assert_eq!(
            frames,
            vec![FIRST_DATA_PFN, FIRST_DATA_PFN + 1, FIRST_DATA_PFN + 2]
        );
        let generation = memory.generation();
        memory.write(BASE, b"data");
        memory.map_zeroed(BASE, 0x1000);
        assert_eq!(
            memory.generation(),
            generation,
            "writes and remaps keep the layout"
        );
        memory.unmap(BASE + 0x1000, 1);
        assert_ne!(memory.generation(), generation);
        memory.map_zeroed(BASE + 0x10_0000, 1);
        assert_eq!(memory.frame_of(BASE + 0x10_0000), Some(FIRST_DATA_PFN + 1));
        assert_eq!(memory.frame_of(BASE + 0x2FFF), Some(FIRST_DATA_PFN + 2));
        assert_eq!(&memory.page_bytes(BASE).unwrap()[..4], b"data");
    }
}
