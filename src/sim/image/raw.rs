//! A raw physical image of the simulated machine (`kdleak sim --write-image raw`): physical
//! address n at file offset n, the frames that hold nothing left as holes, as a VM's `.raw` or
//! `.vmem`. The reader (`crate::image::raw`) finds CR3 and the kernel by scanning, like Volatility.

use std::path::Path;

use super::vm::{put_page, Frames, Placement};
use super::ImageSummary;
use crate::sim::machine::memory::PAGE_SIZE;
use crate::sim::machine::Machine;

/// Writes the raw image of `machine` to `path` (atomically).
pub fn write_raw(
    machine: &Machine,
    path: &Path,
    placement: Placement,
) -> Result<ImageSummary, super::ImageError> {
    let frames = Frames::new(machine, placement)?;
    let size = frames.end();
    super::write_image(path, "raw", &frames, size, |file| {
        let mut pages = 0u64;
        frames.for_each(|pfn, page| {
            pages += 1;
            put_page(file, pfn * PAGE_SIZE, page)
        })?;
        Ok(pages)
    })
}
