//! Virtual memory reads: page-safe chunks, partial replies, unreadable ranges, and a cache that
//! lives for one stop (kd.md §3.10, §6).
//!
//! Memory is fetched in aligned lines of the chunk size (a power of two ≤ 0x800), so a request
//! never crosses a 4 KiB page and a failure always means "the rest of this page is missing".
//! Each cached line keeps the readable prefix the target returned (a target stops copying at the
//! first inaccessible byte).

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use kdproto::api::{Manipulate, STATUS_SUCCESS};

use super::{Result, Session};

pub const PAGE_SIZE: u64 = 0x1000;
/// Largest line: the open hosts' 0x800 (kd.md §6), well under KDCOM's 3944-byte ceiling.
pub const MAX_LINE: usize = 0x800;
const MIN_LINE: usize = 0x10;
/// Cache budget per stop; the cache starts over when it is full.
const CACHE_BYTES: usize = 16 << 20;

/// The result of a read: `bytes` has the requested length, zero where unreadable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadOutcome {
    pub address: u64,
    pub bytes: Vec<u8>,
    /// Sorted, merged address ranges the target could not read.
    pub unreadable: Vec<Range<u64>>,
}

impl ReadOutcome {
    pub fn is_complete(&self) -> bool {
        self.unreadable.is_empty()
    }

    /// The bytes before the first unreadable one.
    pub fn readable_prefix(&self) -> &[u8] {
        let n = self
            .unreadable
            .first()
            .map(|r| (r.start - self.address) as usize)
            .unwrap_or(self.bytes.len());
        &self.bytes[..n]
    }

    /// All bytes, or `None` if any is unreadable.
    pub fn complete(&self) -> Option<&[u8]> {
        self.is_complete().then_some(&self.bytes[..])
    }

    fn mark_unreadable(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        match self.unreadable.last_mut() {
            Some(last) if last.end == range.start => last.end = range.end,
            _ => self.unreadable.push(range),
        }
    }
}

/// The line size for a requested chunk: a power of two in 0x10..=0x800.
pub fn line_len_for(chunk: usize) -> usize {
    let chunk = chunk.clamp(MIN_LINE, MAX_LINE);
    1 << (usize::BITS - 1 - chunk.leading_zeros())
}

/// The (address, length) requests that cover `[address, address + len)` with lines of
/// `line_len_for(chunk)` bytes: aligned, none crossing a page. For tests and planning.
pub fn plan_lines(address: u64, len: usize, chunk: usize) -> Vec<(u64, usize)> {
    let line = line_len_for(chunk) as u64;
    let end = address.saturating_add(len as u64);
    let mut out = Vec::new();
    let mut base = address & !(line - 1);
    while base < end {
        out.push((base, line as usize));
        match base.checked_add(line) {
            Some(next) => base = next,
            None => break,
        }
    }
    out
}

/// Per-stop cache of lines.
#[derive(Debug)]
pub(super) struct LineCache {
    line: usize,
    /// Line address → the readable prefix of the line.
    lines: HashMap<u64, Vec<u8>>,
    /// Pages whose first line failed at offset 0: the whole page is unmapped.
    dead_pages: HashSet<u64>,
    bytes: usize,
}

impl LineCache {
    pub(super) fn new(chunk: usize) -> Self {
        Self {
            line: line_len_for(chunk),
            lines: HashMap::new(),
            dead_pages: HashSet::new(),
            bytes: 0,
        }
    }

    pub(super) fn line_len(&self) -> usize {
        self.line
    }

    pub(super) fn clear(&mut self) {
        self.lines.clear();
        self.dead_pages.clear();
        self.bytes = 0;
    }

    fn insert(&mut self, base: u64, data: Vec<u8>) {
        if self.bytes + self.line > CACHE_BYTES {
            self.clear();
        }
        if data.is_empty() && base % PAGE_SIZE == 0 {
            self.dead_pages.insert(base);
        }
        self.bytes += self.line;
        self.lines.insert(base, data);
    }

    fn get(&self, base: u64) -> Option<&[u8]> {
        if self.dead_pages.contains(&(base & !(PAGE_SIZE - 1))) {
            return Some(&[]);
        }
        self.lines.get(&base).map(Vec::as_slice)
    }
}

impl Session {
    /// Reads `len` bytes of virtual memory at `address`. Unreadable parts are zero in `bytes` and
    /// listed in `unreadable`; only link/transport failures are errors.
    pub async fn read_virtual(&mut self, address: u64, len: usize) -> Result<ReadOutcome> {
        let mut out = ReadOutcome {
            address,
            bytes: vec![0; len],
            unreadable: Vec::new(),
        };
        let line = self.cache.line_len() as u64;
        let end = address as u128 + len as u128;
        let mut pos = address as u128;
        while pos < end {
            let p = pos as u64;
            let base = p & !(line - 1);
            let offset = (p - base) as usize;
            let take = (line as u128 - offset as u128).min(end - pos) as usize;
            if self.cache.get(base).is_none() {
                let data = self.fetch_line(base).await?;
                self.cache.insert(base, data);
            } else {
                self.stats.cache_hits += 1;
            }
            let data = self.cache.get(base).unwrap_or_default();
            let at = (pos - address as u128) as usize;
            let readable = if offset >= data.len() && !data.is_empty() {
                // The line stopped before this part without reaching a page boundary: a target
                // whose holes are not page-sized. Ask for this part directly (not cached).
                let direct = self.fetch(p, take).await?;
                out.bytes[at..at + direct.len()].copy_from_slice(&direct);
                direct.len()
            } else {
                let data = self.cache.get(base).unwrap_or_default();
                let readable = data.len().saturating_sub(offset).min(take);
                if readable > 0 {
                    out.bytes[at..at + readable].copy_from_slice(&data[offset..offset + readable]);
                }
                readable
            };
            if readable < take {
                out.mark_unreadable(p + readable as u64..p.saturating_add(take as u64));
            }
            pos += take as u128;
        }
        Ok(out)
    }

    /// Reads one line: requests until it is full, a failure status, or an empty reply.
    async fn fetch_line(&mut self, base: u64) -> Result<Vec<u8>> {
        self.fetch(base, self.cache.line_len()).await
    }

    /// Reads up to `len` bytes (within one line) at `address`; returns the readable prefix.
    async fn fetch(&mut self, address: u64, len: usize) -> Result<Vec<u8>> {
        let mut data = Vec::with_capacity(len);
        while data.len() < len {
            let addr = address + data.len() as u64;
            let want = len - data.len();
            let reply = self
                .request(Manipulate::read_virtual_memory(addr, want as u32))
                .await?;
            let actual = reply.memory().map_or(0, |m| m.actual_bytes as usize);
            // ntoseye's checks: never trust more than asked, than claimed, or than present.
            let got = actual.min(reply.data.len()).min(want);
            data.extend_from_slice(&reply.data[..got]);
            self.stats.bytes_read += got as u64;
            if reply.return_status != STATUS_SUCCESS || got == 0 {
                break;
            }
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_sizes_are_powers_of_two_within_bounds() {
        assert_eq!(line_len_for(0x800), 0x800);
        assert_eq!(line_len_for(3944), 0x800);
        assert_eq!(line_len_for(1000), 0x200);
        assert_eq!(line_len_for(0x400), 0x400);
        assert_eq!(line_len_for(1), MIN_LINE);
        assert_eq!(line_len_for(usize::MAX), MAX_LINE);
    }

    #[test]
    fn plans_never_cross_a_page() {
        for chunk in [0x10, 0x100, 0x300, 0x400, 0x800, 4000] {
            for (addr, len) in [(0xfff8u64, 0x20usize), (0x1234, 0x3000), (0, 1), (0x7ff, 2)] {
                let plan = plan_lines(addr, len, chunk);
                let covered_start = plan.first().unwrap().0;
                let (last, last_len) = *plan.last().unwrap();
                assert!(covered_start <= addr);
                assert!(last + last_len as u64 >= addr + len as u64);
                for (a, l) in plan {
                    assert!(l <= MAX_LINE && l <= chunk.max(MIN_LINE));
                    assert_eq!(
                        a / PAGE_SIZE,
                        (a + l as u64 - 1) / PAGE_SIZE,
                        "{a:#x}+{l:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn plan_at_the_top_of_the_address_space_stops() {
        let plan = plan_lines(u64::MAX - 0x10, 0x100, 0x400);
        assert_eq!(plan, vec![(u64::MAX - 0x3ff, 0x400)]);
    }

    #[test]
    fn unreadable_ranges_merge() {
        let mut out = ReadOutcome {
            address: 0x1000,
            bytes: vec![1; 0x30],
            unreadable: vec![],
        };
        out.mark_unreadable(0x1010..0x1020);
        out.mark_unreadable(0x1020..0x1030);
        assert_eq!(out.unreadable, vec![0x1010..0x1030]);
        assert_eq!(out.readable_prefix().len(), 0x10);
        assert!(out.complete().is_none());
    }

    #[test]
    fn dead_pages_answer_for_every_line() {
        let mut cache = LineCache::new(0x400);
        cache.insert(0x5000, vec![]);
        assert_eq!(cache.get(0x5c00), Some(&[][..]));
        assert_eq!(cache.get(0x6000), None);
        cache.clear();
        assert_eq!(cache.get(0x5000), None);
    }
}
