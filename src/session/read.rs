//! Virtual memory reads with as few requests as the transport allows (kd.md §3.10; peers.md §6):
//! each gap is fetched in requests of the largest size the target answers, partial replies are
//! followed up, unreadable memory is reported by range, and a cache lives for one stop.
//!
//! * Request size: `PACKET_MAX_SIZE` (4000) − the 56-byte manipulate header = 3944 bytes, the
//!   most any KD transport carries (peers.md §6). A target whose transport carries less clips
//!   the read and still answers STATUS_SUCCESS with fewer bytes (Windows' KdpReadVirtualMemory
//!   clips to the transport's packet size; ntoseye adapts "after the first short reply",
//!   kdnet.md §4.6); the session then asks for that much from there on.
//! * A failed or empty reply means the byte where it stopped is unreadable; Windows maps memory
//!   in pages, so the rest of that page is skipped (facts: kd.md §3.10).
//! * Requests may cross pages: the target copies page by page and stops at the first hole.
//! * A read that gets no answer at all (some stubs drop a request whose reply would not fit their
//!   buffer instead of clipping it) is retried at the next power of two below, down to 512 bytes,
//!   and that size is kept; `unanswered_reads` counts them.
//! * A bulk read (at least one full request) that continues the previous read reads ahead to a
//!   whole request at its end, so a caller reading a big table in blocks pays no short request
//!   per block; reads elsewhere (a tracker page, a structure) fetch only what they ask for.
//! * A bulk read that ends where the previous one started (a table read backwards in blocks:
//!   the log, newest first) reads behind instead: its requests are whole ones counted down from
//!   its end, and the lowest one reaches below its start into the next block, which is cached.
//!   If that part cannot be read, the read is retried from its own start (one request more).

use std::collections::BTreeMap;
use std::ops::Range;

use kdproto::api::{Manipulate, STATUS_SUCCESS};

use super::{Result, Session};

pub const PAGE_SIZE: u64 = 0x1000;
/// `PACKET_MAX_SIZE` − `sizeof(DBGKD_MANIPULATE_STATE64)` (peers.md §6, kd.md §2.1).
pub const MAX_READ: usize = 4000 - 56;
/// Smallest request size the session adapts down to, whatever the target clips to.
pub(super) const MIN_READ: usize = 0x40;
/// Cache budget per stop; the cache starts over when it is full.
const CACHE_BYTES: usize = 16 << 20;
/// Reads up to this size are cached: small structures are read again (list heads, strings);
/// bulk tables and the log are read once.
const CACHEABLE_READ: usize = 0x1000;

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

/// Which part of a requested range the cache can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Cached(Range<u64>),
    Unreadable(Range<u64>),
    Missing(Range<u64>),
}

/// Target memory fetched during this stop: readable extents and known holes.
#[derive(Debug, Default)]
pub(super) struct ReadCache {
    /// Start → bytes; extents never overlap.
    readable: BTreeMap<u64, Vec<u8>>,
    /// Start → end of memory the target could not read.
    unreadable: BTreeMap<u64, u64>,
    bytes: usize,
}

impl ReadCache {
    pub(super) fn clear(&mut self) {
        self.readable.clear();
        self.unreadable.clear();
        self.bytes = 0;
    }

    /// Splits `range` into cached, known-unreadable and missing pieces, in address order.
    fn plan(&self, range: Range<u64>) -> Vec<Piece> {
        let mut pieces = Vec::new();
        let mut pos = range.start;
        while pos < range.end {
            if let Some((&start, data)) = self.readable.range(..=pos).next_back() {
                let end = start.saturating_add(data.len() as u64);
                if end > pos {
                    let end = end.min(range.end);
                    pieces.push(Piece::Cached(pos..end));
                    pos = end;
                    continue;
                }
            }
            if let Some((_, &end)) = self.unreadable.range(..=pos).next_back() {
                if end > pos {
                    let end = end.min(range.end);
                    pieces.push(Piece::Unreadable(pos..end));
                    pos = end;
                    continue;
                }
            }
            let end = self
                .next_known_after(pos)
                .unwrap_or(u64::MAX)
                .min(range.end);
            pieces.push(Piece::Missing(pos..end));
            pos = end;
        }
        pieces
    }

    /// The end of the last cached extent or hole that starts before `pos` (0 if none).
    fn known_up_to(&self, pos: u64) -> u64 {
        let readable = self
            .readable
            .range(..pos)
            .next_back()
            .map_or(0, |(&s, d)| s.saturating_add(d.len() as u64));
        let unreadable = self
            .unreadable
            .range(..pos)
            .next_back()
            .map_or(0, |(_, &e)| e);
        readable.max(unreadable)
    }

    /// The start of the first cached extent or hole after `pos`.
    fn next_known_after(&self, pos: u64) -> Option<u64> {
        let after = pos.checked_add(1)?;
        let readable = self.readable.range(after..).next().map(|(&s, _)| s);
        let unreadable = self.unreadable.range(after..).next().map(|(&s, _)| s);
        readable.into_iter().chain(unreadable).min()
    }

    /// Copies cached `range` into `out`; false if it is no longer cached.
    fn copy(&self, range: &Range<u64>, out: &mut [u8]) -> bool {
        let Some((&start, data)) = self.readable.range(..=range.start).next_back() else {
            return false;
        };
        let from = (range.start - start) as usize;
        let to = from + (range.end - range.start) as usize;
        match data.get(from..to) {
            Some(bytes) => {
                out.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    /// Caches bytes just fetched at `at` (which must not overlap a cached extent).
    fn insert_readable(&mut self, at: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.bytes + data.len() > CACHE_BYTES {
            self.clear();
        }
        self.bytes += data.len();
        self.readable.insert(at, data.to_vec());
    }

    fn insert_unreadable(&mut self, range: Range<u64>) {
        if !range.is_empty() {
            self.unreadable.insert(range.start, range.end);
        }
    }
}

/// The union of the ranges a stop's callers asked for: what a perfect reader would fetch.
#[derive(Debug, Default)]
pub(super) struct Coverage {
    /// Start → end; disjoint, not touching.
    ranges: BTreeMap<u64, u64>,
}

impl Coverage {
    pub(super) fn clear(&mut self) {
        self.ranges.clear();
    }

    /// The fewest requests of `size` bytes that read every extent and nothing else.
    pub(super) fn request_floor(&self, size: u64) -> u64 {
        self.ranges
            .iter()
            .map(|(&s, &e)| (e - s).div_ceil(size.max(1)))
            .sum()
    }

    /// Adds `range`; returns how many bytes it added to the union.
    fn insert(&mut self, range: Range<u64>) -> u64 {
        if range.is_empty() {
            return 0;
        }
        let (mut start, mut end) = (range.start, range.end);
        let mut removed = 0;
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                removed += e - s;
                self.ranges.remove(&s);
            }
        }
        let overlapping: Vec<(u64, u64)> = self
            .ranges
            .range(start..=end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in overlapping {
            end = end.max(e);
            removed += e - s;
            self.ranges.remove(&s);
        }
        self.ranges.insert(start, end);
        (end - start) - removed
    }
}

/// Reads of this size or less that get no answer are not retried smaller: the target has
/// stopped answering, it is not the size (ntoseye reads 512-byte lines, kd.md §6). From the
/// 3944-byte default, a dead target costs three more timeouts (2048, 1024, 512).
const MIN_RETRIED_READ: usize = 0x200;

/// A read that got no reply at all (as opposed to a refused or short one).
fn is_unanswered(error: &super::Error) -> bool {
    matches!(
        error,
        super::Error::RequestTimeout { .. } | super::Error::NotAcknowledged { .. }
    )
}

/// The size to retry an unanswered read of `want` bytes at: the largest power of two below it,
/// never under [`MIN_RETRIED_READ`].
fn smaller_read(want: usize) -> usize {
    let below = if want.is_power_of_two() {
        want / 2
    } else {
        1 << (usize::BITS - 1 - want.leading_zeros())
    };
    below.max(MIN_RETRIED_READ)
}

/// The first page boundary after `address` (saturating at the top of the address space).
fn next_page(address: u64) -> u64 {
    (address & !(PAGE_SIZE - 1)).saturating_add(PAGE_SIZE)
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
        let end = address.saturating_add(len as u64);
        self.stats.bytes_needed += self.needed.insert(address..end);
        let bulk = len >= self.read_size;
        let sequential = bulk && address == self.last_read_end;
        let backwards = bulk && address < end && end == self.last_read_start;
        self.last_read_end = end;
        self.last_read_start = address;
        for piece in self.cache.plan(address..end) {
            match piece {
                Piece::Cached(range) => {
                    let at = (range.start - address) as usize;
                    let into = &mut out.bytes[at..at + (range.end - range.start) as usize];
                    if self.cache.copy(&range, into) {
                        self.stats.cache_hits += 1;
                    } else {
                        // Evicted by a fetch earlier in this read.
                        self.fetch(range, None, None, &mut out).await?;
                    }
                }
                Piece::Unreadable(range) => out.mark_unreadable(range),
                Piece::Missing(range) => {
                    let read_ahead = (sequential && range.end == end).then(|| {
                        let limit = self.cache.next_known_after(end).unwrap_or(u64::MAX);
                        end.saturating_add(self.read_size as u64).min(limit)
                    });
                    let read_behind = (backwards && range.start == address)
                        .then(|| self.read_behind(&range))
                        .flatten();
                    self.fetch(range, read_ahead, read_behind, &mut out).await?;
                }
            }
        }
        if end - address < len as u64 {
            // The request runs past the top of the address space.
            out.mark_unreadable(end..u64::MAX);
        }
        Ok(out)
    }

    /// Where to start fetching the missing `range` of a backwards read so that its requests
    /// are whole ones counted down from its end: the surplus below `range` is the next
    /// block's top. `None` when nothing would be saved (the range is a whole number of
    /// requests) or something already known lies in the way.
    fn read_behind(&self, range: &Range<u64>) -> Option<u64> {
        let size = self.read_size as u64;
        let len = range.end - range.start;
        let whole = len.div_ceil(size).checked_mul(size)?;
        let start = range.end.checked_sub(whole)?;
        (start < range.start && self.cache.known_up_to(range.start) <= start).then_some(start)
    }

    /// Fetches `range` into `out` in requests of the read size; with `read_ahead`, the last
    /// request reads on up to that address and caches the surplus; with `read_behind` (below
    /// `range.start`), the first request starts there and caches what lies below `range`.
    async fn fetch(
        &mut self,
        range: Range<u64>,
        read_ahead: Option<u64>,
        read_behind: Option<u64>,
        out: &mut ReadOutcome,
    ) -> Result<()> {
        let cache_it = range.end - range.start <= CACHEABLE_READ as u64;
        let mut pos = read_behind.unwrap_or(range.start).min(range.start);
        while pos < range.end {
            let stop = read_ahead.unwrap_or(range.end).max(range.end);
            let want = (stop - pos).min(self.read_size as u64) as usize;
            let reply = match self
                .request(Manipulate::read_virtual_memory(pos, want as u32))
                .await
            {
                Ok(reply) => reply,
                Err(error) if is_unanswered(&error) && want > MIN_RETRIED_READ => {
                    self.shrink_unanswered_read(pos, want, &error);
                    continue;
                }
                Err(error) => return Err(error),
            };
            let actual = reply.memory().map_or(0, |m| m.actual_bytes as usize);
            // ntoseye's checks: never trust more than asked, than claimed, or than present.
            let got = actual.min(reply.data.len()).min(want);
            let mut data = &reply.data[..got];
            self.stats.bytes_read += got as u64;
            let succeeded = reply.return_status == STATUS_SUCCESS && got > 0;
            if pos < range.start {
                // Read behind `range`: keep what came for the next read, then go on inside.
                let below = data.len().min((range.start - pos) as usize);
                self.cache.insert_readable(pos, &data[..below]);
                data = &data[below..];
                if !succeeded || data.is_empty() {
                    if succeeded && got < want && want == self.read_size {
                        self.clip_read_size(got);
                    }
                    // Unreadable below, or clipped short of it: fetch `range` itself.
                    pos = if succeeded {
                        pos + got as u64
                    } else {
                        range.start
                    };
                    continue;
                }
                pos = range.start;
            }
            let got_inside = data.len();
            let inside = got_inside.min((range.end - pos) as usize);
            let at = (pos - out.address) as usize;
            out.bytes[at..at + inside].copy_from_slice(&data[..inside]);
            if cache_it {
                self.cache.insert_readable(pos, &data[..inside]);
            }
            self.cache.insert_readable(range.end, &data[inside..]);
            if succeeded && got < want && want == self.read_size {
                self.clip_read_size(got);
            }
            pos += got_inside as u64;
            if !succeeded && pos < range.end {
                let hole = pos..next_page(pos);
                out.mark_unreadable(pos..hole.end.min(range.end));
                self.cache.insert_unreadable(hole.clone());
                pos = hole.end.min(range.end);
            } else if !succeeded {
                break;
            }
        }
        Ok(())
    }

    /// A read of `want` bytes got no answer at all — not a short one — after the link's
    /// retransmits and the request timeout: some targets drop a request whose reply would not
    /// fit their buffer instead of clipping it. Ask for less from now on (the next power of two
    /// below `want`), so one oversize read does not end the pull.
    fn shrink_unanswered_read(&mut self, at: u64, want: usize, error: &super::Error) {
        let smaller = smaller_read(want);
        tracing::warn!(
            "a {want}-byte read at {at:#x} got no answer ({error}); retrying in {smaller}-byte reads"
        );
        self.stats.unanswered_reads += 1;
        self.read_size = self.read_size.min(smaller);
    }

    /// A full-size read came back short but successful: the target's transport carries no
    /// more, so ask for that much from now on (fewer, never failing, requests).
    fn clip_read_size(&mut self, got: usize) {
        if got >= MIN_READ {
            tracing::debug!(from = self.read_size, to = got, "the target clips reads");
            self.read_size = got;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn plans_split_cached_holes_and_missing() {
        let mut cache = ReadCache::default();
        cache.insert_readable(0x1010, &[7; 0x10]);
        cache.insert_unreadable(0x2000..0x3000);
        assert_eq!(
            cache.plan(0x1000..0x2800),
            vec![
                Piece::Missing(0x1000..0x1010),
                Piece::Cached(0x1010..0x1020),
                Piece::Missing(0x1020..0x2000),
                Piece::Unreadable(0x2000..0x2800),
            ]
        );
        let mut out = [0u8; 4];
        assert!(cache.copy(&(0x101c..0x1020), &mut out));
        assert_eq!(out, [7; 4]);
        assert!(!cache.copy(&(0x101c..0x1024), &mut [0u8; 8]));
        assert_eq!(cache.next_known_after(0x1020), Some(0x2000));
        cache.clear();
        assert_eq!(
            cache.plan(0x1000..0x1001),
            vec![Piece::Missing(0x1000..0x1001)]
        );
    }

    #[test]
    fn coverage_counts_each_byte_once() {
        let mut c = Coverage::default();
        assert_eq!(c.insert(0x100..0x200), 0x100);
        assert_eq!(c.insert(0x180..0x280), 0x80);
        assert_eq!(c.insert(0x000..0x080), 0x80);
        assert_eq!(
            c.insert(0x080..0x100),
            0x80,
            "fills the gap and joins both sides"
        );
        assert_eq!(c.insert(0x000..0x280), 0);
        assert_eq!(c.ranges.len(), 1);
        assert_eq!(c.insert(0x300..0x300), 0);
        assert_eq!(c.request_floor(0x100), 3, "0x280 bytes in one extent");
        assert_eq!(c.insert(0x1000..0x2000), 0x1000);
        assert_eq!(
            c.request_floor(0x550),
            1 + 4,
            "4 KiB apart takes 4, not 3.01"
        );
        c.clear();
        assert_eq!(c.insert(0x000..0x10), 0x10);
    }

    #[test]
    fn unanswered_reads_are_retried_at_the_next_power_of_two_below() {
        assert_eq!(smaller_read(MAX_READ), 0x800);
        assert_eq!(smaller_read(0x800), 0x400);
        assert_eq!(smaller_read(0x401), 0x400);
        assert_eq!(smaller_read(0x400), 0x200);
        assert_eq!(smaller_read(0x201), 0x200);
    }

    #[test]
    fn pages_end_where_they_should() {
        assert_eq!(next_page(0x1000), 0x2000);
        assert_eq!(next_page(0x1fff), 0x2000);
        assert_eq!(next_page(u64::MAX - 5), u64::MAX);
    }
}
