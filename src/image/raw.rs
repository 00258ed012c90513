//! Raw physical memory images: the bytes of guest-physical memory from address 0, page after
//! page, with nothing else — `.raw` and `.mem` files from hypervisors and acquisition tools, and
//! VMware's `.vmem` of a VM that was suspended or snapshotted (its `.vmss`/`.vmsn` metadata left
//! aside). Page frame n is at file offset n × 4096; a sparse file's holes are zero pages, skipped
//! by the scan ([`super::Source::data_regions`]). The file names neither the page-table root nor
//! the kernel: both are found by [`super::scan`].

use super::error::{DumpError, Result};
use super::format::{Layout, MachineFacts};
use super::physmap::{PhysMap, Run, MAX_PFN, PAGE_SIZE};
use super::Source;

/// The smallest file taken for a raw image when the format is not given: a Windows x64 machine
/// has at least hundreds of MiB; smaller unrecognised files are more likely something else.
pub const MIN_GUESSED_LEN: u64 = 1 << 20;

/// Reads `src` as a raw physical image.
pub fn read<S: Source + ?Sized>(src: &S) -> Result<Layout> {
    let len = src.len();
    let pages = (len / PAGE_SIZE).min(MAX_PFN);
    if pages == 0 {
        return Err(DumpError::NotADump(format!(
            "a raw physical image holds whole 4 KiB pages; this file has {len} bytes"
        )));
    }
    let map = PhysMap::finish(
        vec![Run {
            first_pfn: 0,
            pages,
            file_offset: 0,
        }],
        pages,
        0,
    )?;
    let tail = len % PAGE_SIZE;
    Ok(Layout {
        facts: MachineFacts::unknown(),
        map,
        format: format!(
            "raw physical image ({} MiB of physical memory{})",
            (pages * PAGE_SIZE) >> 20,
            if tail > 0 {
                format!("; the last {tail} bytes are not a whole page and are ignored")
            } else {
                String::new()
            }
        ),
        cr3_candidates: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_n_is_at_n_pages() {
        let file = vec![0u8; 3 * 4096 + 10];
        let layout = read(&file).unwrap();
        assert_eq!(layout.map.pages(), 3);
        assert_eq!(layout.map.file_offset(2), Some(0x2000));
        assert_eq!(layout.map.file_offset(3), None);
        assert!(layout.format.contains("10 bytes"), "{}", layout.format);
        assert!(read(&vec![0u8; 100]).is_err());
    }
}
