//! Where each physical page's content is in the file: a sorted list of runs (first page frame,
//! page count, file offset). Each format's reader builds one (the crash dump's from its memory
//! descriptor or page bitmap, [`super::crashdump::runs`]), every count checked against the
//! file's size before it is used.

use super::error::{DumpError, Result};

pub const PAGE_SIZE: u64 = 0x1000;
/// x64 physical addresses have at most 52 bits: no page frame number reaches 2^40.
pub const MAX_PFN: u64 = 1 << 40;

/// Consecutive page frames stored consecutively in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub first_pfn: u64,
    pub pages: u64,
    pub file_offset: u64,
}

/// Physical page frame → file offset, for the pages the dump holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhysMap {
    /// Sorted by `first_pfn`, never overlapping.
    runs: Vec<Run>,
    pages: u64,
}

impl PhysMap {
    /// The file offset of page frame `pfn`, if the dump holds it.
    pub fn file_offset(&self, pfn: u64) -> Option<u64> {
        let i = self.runs.partition_point(|r| r.first_pfn <= pfn);
        let run = self.runs.get(i.checked_sub(1)?)?;
        let index = pfn - run.first_pfn;
        (index < run.pages).then(|| run.file_offset + index * PAGE_SIZE)
    }

    /// Pages the dump holds.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// Sorts the runs and refuses overlaps (one frame in two places).
    pub(crate) fn finish(mut runs: Vec<Run>, pages: u64, at: u64) -> Result<Self> {
        runs.sort_by_key(|r| r.first_pfn);
        for pair in runs.windows(2) {
            if pair[0].first_pfn + pair[0].pages > pair[1].first_pfn {
                return Err(DumpError::corrupt(
                    at,
                    format!(
                        "the physical memory runs at page frames {:#x} and {:#x} overlap",
                        pair[0].first_pfn, pair[1].first_pfn
                    ),
                ));
            }
        }
        Ok(Self { runs, pages })
    }
}
