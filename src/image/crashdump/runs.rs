//! Where a crash dump keeps each physical page: the runs of the header's memory descriptor (full
//! dumps) or the page bitmap after the header (bitmap dumps), every count checked against the
//! file's size before it is used.
//!
//! Layouts: PHYSICAL_MEMORY_DESCRIPTOR64 / PHYSICAL_MEMORY_RUN64 (`mindumpdef.h`); the bitmap
//! dump header as kdmp-parser's `BmpHeader64` (which reads real Windows dumps in its tests):
//! Signature `SDMP` (kernel) or `FDMP` (complete) @0, ValidDump `DUMP` @4, FirstPage @0x20 (file
//! offset of the first page), TotalPresentPages @0x28, Pages @0x30 (bits in the bitmap), the
//! bitmap @0x38, one bit per page frame; the set pages follow FirstPage in frame order.
//!
//! The RDMP layout (DumpType 8, 9, 10) as kdmp-parser 0.7 reads it (`kdmp-parser-structs.h`:
//! `RDMP_HEADER64`, `KERNEL_RDMP_HEADER64`, `FULL_RDMP_HEADER64`; `kdmp-parser.h`:
//! `BuildPhysicalMemoryFromDump`): at 0x2000 Marker 0x40, Signature `RDMP`, ValidDump `DUMP`,
//! MetadataSize @0x10, FirstPageOffset @0x18, with FirstPageOffset = 0x2020 + MetadataSize (the
//! metadata runs from 0x2020 to the first page). Then 16 bytes that differ by kind (complete
//! dumps: NumberOfRanges u32 @0x20, TotalNumberOfPages u64 @0x28), and from 0x2030 the PFN
//! ranges (PageFileNumber u64, NumberOfPages u64), whose pages follow FirstPageOffset in order.
//! A kernel dump's list ends at a range of PFN 0; a complete dump's (DumpType 10), whose memory
//! may include frame 0, when TotalNumberOfPages pages are listed.

use tracing::warn;

use crate::image::error::{DumpError, Result};
use crate::image::physmap::{PhysMap, Run, MAX_PFN, PAGE_SIZE};
use crate::image::Source;
use crate::kernel::{le_u32, le_u64};

use super::header::{DumpKind, HEADER_LEN, PHYSICAL_MEMORY_BLOCK, PHYSICAL_MEMORY_BLOCK_LEN};

/// PHYSICAL_MEMORY_RUN64 entries that fit in the header's 700-byte descriptor buffer.
const MAX_RUNS: u64 = ((PHYSICAL_MEMORY_BLOCK_LEN - 16) / 16) as u64;
const BITMAP_HEADER_LEN: u64 = 0x38;
/// Bitmap bytes read per file read.
const BITMAP_CHUNK: usize = 64 << 10;

/// Reads the map of a dump of `kind` whose header is `head`.
pub fn read<S: Source + ?Sized>(kind: DumpKind, head: &[u8], src: &S) -> Result<PhysMap> {
    match kind {
        DumpKind::Full => full(head, src.len()),
        DumpKind::Bitmap => bitmap(src),
        DumpKind::Rdmp => rdmp(le_u32(head, RDMP_DUMP_TYPE), src),
    }
}

/// DUMP_HEADER64.DumpType: 10 is the complete RDMP dump, whose list ends by page count.
const RDMP_DUMP_TYPE: usize = 0xf98;
const RDMP_COMPLETE: u32 = 10;
const RDMP_MARKER: u32 = 0x40;
/// RDMP_HEADER64 (0x20 bytes) and the 16 bytes after it.
const RDMP_HEADER_LEN: u64 = 0x30;
/// Where the metadata (the 16 kind-specific bytes, then the ranges) starts.
const RDMP_METADATA_AT: u64 = HEADER_LEN as u64 + 0x20;
const RDMP_RANGES_AT: u64 = HEADER_LEN as u64 + RDMP_HEADER_LEN;
/// Ranges read per file read.
const RANGE_CHUNK: usize = 4096;

/// DumpType 8, 9, 10: the RDMP header after DUMP_HEADER64, then the PFN ranges.
fn rdmp<S: Source + ?Sized>(dump_type: u32, src: &S) -> Result<PhysMap> {
    let file_len = src.len();
    let at = HEADER_LEN as u64;
    if file_len < at + RDMP_HEADER_LEN {
        return Err(DumpError::corrupt(
            file_len,
            "the file ends inside the RDMP header (DumpType 8, 9, 10)",
        ));
    }
    let mut head = [0u8; RDMP_HEADER_LEN as usize];
    src.read_at(at, &mut head).map_err(|e| io(at, e))?;
    let marker = le_u32(&head, 0);
    if marker != RDMP_MARKER || &head[4..8] != b"RDMP" || &head[8..12] != b"DUMP" {
        return Err(DumpError::corrupt(
            at,
            format!(
                "an RDMP dump (DumpType {dump_type}) needs marker 0x40, RDMP, DUMP at {at:#x}, \
                 found 0x{}",
                hex::encode(&head[0..12])
            ),
        ));
    }
    let metadata_size = le_u64(&head, 0x10);
    let first_page = le_u64(&head, 0x18);
    if metadata_size.checked_add(RDMP_METADATA_AT) != Some(first_page)
        || metadata_size < 0x10
        || metadata_size % 16 != 0
        || first_page > file_len
    {
        return Err(DumpError::corrupt(
            at + 0x10,
            format!(
                "MetadataSize {metadata_size:#x} and FirstPageOffset {first_page:#x} disagree \
                 (the first page must follow the metadata at {RDMP_METADATA_AT:#x}, in a file of \
                 {file_len} bytes)"
            ),
        ));
    }
    let complete = dump_type == RDMP_COMPLETE;
    let total = complete.then(|| le_u64(&head, 0x28));
    let mut runs: Vec<Run> = Vec::new();
    let mut pages = 0u64;
    let ranges = (first_page - RDMP_RANGES_AT) / 16;
    let mut chunk = vec![0u8; RANGE_CHUNK * 16];
    let mut index = 0u64;
    'ranges: while index < ranges {
        let n = (ranges - index).min(RANGE_CHUNK as u64) as usize;
        let offset = RDMP_RANGES_AT + index * 16;
        src.read_at(offset, &mut chunk[..n * 16])
            .map_err(|e| io(offset, e))?;
        for (i, entry) in chunk[..n * 16].chunks_exact(16).enumerate() {
            let entry_at = offset + i as u64 * 16;
            let (pfn, count) = (le_u64(entry, 0), le_u64(entry, 8));
            let done = match total {
                Some(total) => pages >= total || (pfn == 0 && count == 0),
                None => pfn == 0,
            };
            if done {
                break 'ranges;
            }
            if pfn.checked_add(count).is_none_or(|end| end > MAX_PFN) {
                return Err(DumpError::corrupt(
                    entry_at,
                    format!(
                        "the range of {count:#x} pages at frame {pfn:#x} ends beyond 2^52 bytes"
                    ),
                ));
            }
            let file_offset = needed(first_page, pages)
                .filter(|&o| o <= file_len)
                .ok_or_else(|| truncated(pages, first_page, file_len))?;
            pages = pages
                .checked_add(count)
                .filter(|&p| needed(first_page, p).is_some_and(|n| n <= file_len))
                .ok_or_else(|| truncated(pages.saturating_add(count), first_page, file_len))?;
            match runs.last_mut() {
                Some(r) if r.first_pfn + r.pages == pfn && count > 0 => r.pages += count,
                _ if count > 0 => runs.push(Run {
                    first_pfn: pfn,
                    pages: count,
                    file_offset,
                }),
                _ => {}
            }
        }
        index += n as u64;
    }
    if let Some(total) = total.filter(|&t| t != pages) {
        warn!(
            total,
            listed = pages,
            "TotalNumberOfPages differs from the pages the ranges list"
        );
    }
    PhysMap::finish(runs, pages, at)
}

/// Bytes the file must have to hold `pages` pages from `first_offset` on.
fn needed(first_offset: u64, pages: u64) -> Option<u64> {
    pages.checked_mul(PAGE_SIZE)?.checked_add(first_offset)
}

fn truncated(pages: u64, first_offset: u64, file_len: u64) -> DumpError {
    DumpError::corrupt(
        file_len,
        format!(
            "the header lists at least {pages} pages from file offset {first_offset:#x}, {} \
             bytes, but the file has {file_len} bytes (cut short?)",
            needed(first_offset, pages).map_or_else(|| "more than 2^64".into(), |n| n.to_string())
        ),
    )
}

/// DUMP_TYPE_FULL: NumberOfRuns @0, NumberOfPages @8, Run[] @0x10 of the descriptor; the pages
/// follow the header, run after run.
fn full(head: &[u8], file_len: u64) -> Result<PhysMap> {
    let desc = &head[PHYSICAL_MEMORY_BLOCK..PHYSICAL_MEMORY_BLOCK + PHYSICAL_MEMORY_BLOCK_LEN];
    let at = PHYSICAL_MEMORY_BLOCK as u64;
    let count = u64::from(u32::from_le_bytes([desc[0], desc[1], desc[2], desc[3]]));
    if count > MAX_RUNS {
        return Err(DumpError::corrupt(
            at,
            format!("NumberOfRuns is {count}; the header has room for {MAX_RUNS}"),
        ));
    }
    let mut runs = Vec::with_capacity(count as usize);
    let mut pages = 0u64;
    for i in 0..count as usize {
        let (first_pfn, run_pages) = (le_u64(desc, 0x10 + i * 16), le_u64(desc, 0x18 + i * 16));
        let end = first_pfn.checked_add(run_pages).filter(|&e| e <= MAX_PFN);
        if end.is_none() {
            return Err(DumpError::corrupt(
                at + 0x10 + i as u64 * 16,
                format!(
                    "run {i} ({run_pages:#x} pages at frame {first_pfn:#x}) ends beyond 2^52 bytes"
                ),
            ));
        }
        let file_offset = needed(HEADER_LEN as u64, pages)
            .filter(|&o| o <= file_len)
            .ok_or_else(|| truncated(pages, HEADER_LEN as u64, file_len))?;
        pages = pages
            .checked_add(run_pages)
            .ok_or_else(|| truncated(u64::MAX, HEADER_LEN as u64, file_len))?;
        if run_pages > 0 {
            runs.push(Run {
                first_pfn,
                pages: run_pages,
                file_offset,
            });
        }
    }
    if needed(HEADER_LEN as u64, pages).is_none_or(|n| n > file_len) {
        return Err(truncated(pages, HEADER_LEN as u64, file_len));
    }
    let declared = le_u64(desc, 8);
    if declared != pages {
        warn!(
            declared,
            runs = pages,
            "NumberOfPages differs from the sum of the runs"
        );
    }
    PhysMap::finish(runs, pages, at)
}

/// DUMP_TYPE_BITMAP_*: the bitmap header after DUMP_HEADER64, then the bitmap, read in chunks.
fn bitmap<S: Source + ?Sized>(src: &S) -> Result<PhysMap> {
    let file_len = src.len();
    let at = HEADER_LEN as u64;
    let mut head = [0u8; BITMAP_HEADER_LEN as usize];
    if file_len < at + BITMAP_HEADER_LEN {
        return Err(DumpError::corrupt(
            file_len,
            "the file ends inside the bitmap dump header",
        ));
    }
    src.read_at(at, &mut head).map_err(|e| io(at, e))?;
    let (signature, valid) = (&head[0..4], &head[4..8]);
    if !(signature == b"SDMP" || signature == b"FDMP") || valid != b"DUMP" {
        return Err(DumpError::corrupt(
            at,
            format!(
                "a bitmap dump (DumpType 5/6) needs SDMP or FDMP then DUMP at {at:#x}, found \
                 0x{}",
                hex::encode(&head[0..8])
            ),
        ));
    }
    let first_page = le_u64(&head, 0x20);
    let present = le_u64(&head, 0x28);
    let bits = le_u64(&head, 0x30);
    let bitmap_at = at + BITMAP_HEADER_LEN;
    let bitmap_bytes = bits.div_ceil(8);
    if bits > MAX_PFN || bitmap_at + bitmap_bytes > file_len {
        return Err(DumpError::corrupt(
            at + 0x30,
            format!(
                "the bitmap has {bits} bits ({bitmap_bytes} bytes from {bitmap_at:#x}) but the \
                 file has {file_len} bytes"
            ),
        ));
    }
    if first_page < bitmap_at + bitmap_bytes {
        return Err(DumpError::corrupt(
            at + 0x20,
            format!(
                "FirstPage {first_page:#x} lies inside the header or bitmap (which ends at {:#x})",
                bitmap_at + bitmap_bytes
            ),
        ));
    }
    // One pass over the bitmap, merging set bits into runs. Runs and pages stay bounded by the
    // file: a page is only counted once its bytes are known to be in the file.
    let mut runs: Vec<Run> = Vec::new();
    let mut pages = 0u64;
    let mut chunk = vec![0u8; BITMAP_CHUNK];
    let mut pfn = 0u64;
    while pfn < bits {
        let byte_index = pfn / 8;
        let n = (bitmap_bytes - byte_index).min(BITMAP_CHUNK as u64) as usize;
        let buf = &mut chunk[..n];
        src.read_at(bitmap_at + byte_index, buf)
            .map_err(|e| io(bitmap_at + byte_index, e))?;
        for &byte in buf.iter() {
            if byte == 0 {
                // Most of a kernel dump's bitmap is clear: skip whole bytes.
                pfn = (pfn + 8).min(bits);
                continue;
            }
            for bit in 0..8 {
                if pfn >= bits {
                    break;
                }
                if byte & (1 << bit) != 0 {
                    let file_offset = needed(first_page, pages)
                        .filter(|&o| o + PAGE_SIZE <= file_len)
                        .ok_or_else(|| truncated(pages + 1, first_page, file_len))?;
                    match runs.last_mut() {
                        Some(r) if r.first_pfn + r.pages == pfn => r.pages += 1,
                        _ => runs.push(Run {
                            first_pfn: pfn,
                            pages: 1,
                            file_offset,
                        }),
                    }
                    pages += 1;
                }
                pfn += 1;
            }
        }
    }
    if present != pages {
        warn!(
            present,
            counted = pages,
            "TotalPresentPages differs from the bits set in the bitmap"
        );
    }
    PhysMap::finish(runs, pages, at)
}

fn io(offset: u64, e: std::io::Error) -> DumpError {
    DumpError::corrupt(offset, format!("reading the file failed: {e}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::header::tests::header;
    use super::*;

    /// A full dump header with `runs` ((first frame, pages)), and room for their pages.
    pub fn full_dump(runs: &[(u64, u64)]) -> Vec<u8> {
        let mut h = header(1);
        let d = PHYSICAL_MEMORY_BLOCK;
        h[d..d + 4].copy_from_slice(&(runs.len() as u32).to_le_bytes());
        let total: u64 = runs.iter().map(|r| r.1).sum();
        h[d + 8..d + 16].copy_from_slice(&total.to_le_bytes());
        for (i, (pfn, n)) in runs.iter().enumerate() {
            h[d + 0x10 + i * 16..d + 0x18 + i * 16].copy_from_slice(&pfn.to_le_bytes());
            h[d + 0x18 + i * 16..d + 0x20 + i * 16].copy_from_slice(&n.to_le_bytes());
        }
        h.resize(HEADER_LEN + total as usize * PAGE_SIZE as usize, 0);
        h
    }

    /// A bitmap dump with the given page frames present.
    pub fn bitmap_dump(frames: &[u64], bits: u64) -> Vec<u8> {
        let mut f = header(5);
        let bitmap_bytes = bits.div_ceil(8) as usize;
        let first_page = (HEADER_LEN + 0x38 + bitmap_bytes).next_multiple_of(0x1000) as u64;
        let mut bh = vec![0u8; 0x38];
        bh[0..8].copy_from_slice(b"SDMPDUMP");
        bh[0x20..0x28].copy_from_slice(&first_page.to_le_bytes());
        bh[0x28..0x30].copy_from_slice(&(frames.len() as u64).to_le_bytes());
        bh[0x30..0x38].copy_from_slice(&bits.to_le_bytes());
        f.extend_from_slice(&bh);
        let mut bitmap = vec![0u8; bitmap_bytes];
        for &pfn in frames {
            bitmap[(pfn / 8) as usize] |= 1 << (pfn % 8);
        }
        f.extend_from_slice(&bitmap);
        f.resize(first_page as usize + frames.len() * PAGE_SIZE as usize, 0);
        f
    }

    /// An RDMP dump of `dump_type` with `ranges` ((first frame, pages)), pages page-aligned.
    pub fn rdmp_dump(dump_type: u32, ranges: &[(u64, u64)]) -> Vec<u8> {
        let mut f = header(dump_type);
        let metadata = (0x10 + (ranges.len() + 1) * 16).next_multiple_of(0x1000) - 0x20;
        let first_page = 0x2020 + metadata as u64;
        let total: u64 = ranges.iter().map(|r| r.1).sum();
        let mut h = vec![0u8; 0x30];
        h[0..4].copy_from_slice(&0x40u32.to_le_bytes());
        h[4..12].copy_from_slice(b"RDMPDUMP");
        h[0x10..0x18].copy_from_slice(&(metadata as u64).to_le_bytes());
        h[0x18..0x20].copy_from_slice(&first_page.to_le_bytes());
        h[0x20..0x24].copy_from_slice(&(ranges.len() as u32).to_le_bytes());
        h[0x28..0x30].copy_from_slice(&total.to_le_bytes());
        f.extend_from_slice(&h);
        for (pfn, n) in ranges {
            f.extend_from_slice(&pfn.to_le_bytes());
            f.extend_from_slice(&n.to_le_bytes());
        }
        f.resize(first_page as usize + total as usize * PAGE_SIZE as usize, 0);
        f
    }

    #[test]
    fn rdmp_pages_follow_the_metadata_range_after_range() {
        for dump_type in [8, 9, 10] {
            let f = rdmp_dump(dump_type, &[(0x10, 2), (0x12, 1), (0x1, 1)]);
            let m = map(&f, DumpKind::Rdmp).unwrap();
            assert_eq!(m.pages(), 4, "{dump_type}");
            assert_eq!(m.runs().len(), 2, "adjacent ranges merge");
            assert_eq!(m.file_offset(0x10), Some(0x3000));
            assert_eq!(m.file_offset(0x12), Some(0x5000));
            assert_eq!(m.file_offset(0x1), Some(0x6000));
            assert_eq!(m.file_offset(0x13), None);
        }
        // A complete dump may hold frame 0: its list ends by TotalNumberOfPages.
        let f = rdmp_dump(10, &[(0, 2), (5, 1)]);
        let m = map(&f, DumpKind::Rdmp).unwrap();
        assert_eq!((m.pages(), m.file_offset(0)), (3, Some(0x3000)));
        // A kernel dump's list ends at PFN 0.
        let f = rdmp_dump(8, &[(3, 1), (0, 2), (5, 1)]);
        assert_eq!(map(&f, DumpKind::Rdmp).unwrap().pages(), 1);
    }

    #[test]
    fn hostile_rdmp_headers_are_refused() {
        let f = rdmp_dump(8, &[(1, 1)]);
        let mut bad = f.clone();
        bad[0x2004..0x2008].copy_from_slice(b"XDMP");
        assert!(map(&bad, DumpKind::Rdmp)
            .unwrap_err()
            .to_string()
            .contains("RDMP"));
        let mut bad = f.clone();
        bad[0x2018..0x2020].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(map(&bad, DumpKind::Rdmp)
            .unwrap_err()
            .to_string()
            .contains("MetadataSize"));
        let mut bad = f.clone();
        bad[0x2038..0x2040].copy_from_slice(&(1u64 << 30).to_le_bytes());
        assert!(map(&bad, DumpKind::Rdmp)
            .unwrap_err()
            .to_string()
            .contains("cut short"));
        let mut bad = f.clone();
        bad[0x2030..0x2038].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(map(&bad, DumpKind::Rdmp)
            .unwrap_err()
            .to_string()
            .contains("2^52"));
        assert!(map(&f[..0x2010], DumpKind::Rdmp).is_err());
    }

    fn map(file: &[u8], kind: DumpKind) -> Result<PhysMap> {
        read(kind, &file[..HEADER_LEN], file)
    }

    #[test]
    fn full_dump_pages_follow_the_header_run_after_run() {
        let f = full_dump(&[(0x10, 2), (0x1, 1)]);
        let m = map(&f, DumpKind::Full).unwrap();
        assert_eq!(m.pages(), 3);
        assert_eq!(m.file_offset(0x10), Some(0x2000));
        assert_eq!(m.file_offset(0x11), Some(0x3000));
        assert_eq!(m.file_offset(0x1), Some(0x4000));
        assert_eq!(m.file_offset(0x12), None);
        assert_eq!(m.file_offset(0x0), None);
    }

    #[test]
    fn bitmap_pages_follow_first_page_in_frame_order() {
        let f = bitmap_dump(&[1, 2, 3, 9, 0x40], 0x48);
        let m = map(&f, DumpKind::Bitmap).unwrap();
        assert_eq!(m.runs().len(), 3);
        assert_eq!(m.pages(), 5);
        let first = m.file_offset(1).unwrap();
        assert_eq!(first % 0x1000, 0);
        assert_eq!(m.file_offset(3), Some(first + 0x2000));
        assert_eq!(m.file_offset(9), Some(first + 0x3000));
        assert_eq!(m.file_offset(0x40), Some(first + 0x4000));
        assert_eq!(m.file_offset(0x41), None);
    }

    #[test]
    fn a_run_longer_than_the_file_is_refused_before_anything_is_allocated() {
        let mut f = full_dump(&[(0, 1)]);
        let d = PHYSICAL_MEMORY_BLOCK;
        f[d + 0x18..d + 0x20].copy_from_slice(&(1u64 << 39).to_le_bytes());
        let err = map(&f, DumpKind::Full).unwrap_err();
        assert!(err.to_string().contains("cut short"), "{err}");
        f[d + 0x18..d + 0x20].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(map(&f, DumpKind::Full)
            .unwrap_err()
            .to_string()
            .contains("2^52"));
        f[d..d + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(map(&f, DumpKind::Full)
            .unwrap_err()
            .to_string()
            .contains("NumberOfRuns"));
    }

    #[test]
    fn overlapping_runs_are_refused() {
        let f = full_dump(&[(0x10, 4), (0x12, 1)]);
        let err = map(&f, DumpKind::Full).unwrap_err();
        assert!(err.to_string().contains("overlap"), "{err}");
    }

    #[test]
    fn a_bitmap_larger_than_the_file_is_refused() {
        let mut f = bitmap_dump(&[1], 16);
        f[HEADER_LEN + 0x30..HEADER_LEN + 0x38].copy_from_slice(&(1u64 << 36).to_le_bytes());
        let err = map(&f, DumpKind::Bitmap).unwrap_err();
        assert!(err.to_string().contains("bits"), "{err}");
        // Set bits whose pages the file does not hold.
        let mut f = bitmap_dump(&[1, 2], 16);
        f.truncate(f.len() - 1);
        let err = map(&f, DumpKind::Bitmap).unwrap_err();
        assert!(err.to_string().contains("cut short"), "{err}");
        let mut f = bitmap_dump(&[1], 16);
        f[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(b"XDMP");
        assert!(map(&f, DumpKind::Bitmap)
            .unwrap_err()
            .to_string()
            .contains("SDMP or FDMP"));
    }
}
