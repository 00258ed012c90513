//! Output formats for the leak pull's [`LeakReport`]: WinDbg-compatible text ([`text`]), JSON
//! ([`json`], documented in the README) and CSV ([`csv`]); the leak table of allocation sites
//! ([`sites`]); and [`write_atomically`] for `--out`.

pub mod csv;
pub mod json;
pub mod text;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

pub use crate::atomic_file::{write_atomically, write_atomically_with};
use crate::verifier::model::{Allocation, LeakReport, LeakSite};

/// What makes two outstanding allocations the same "site" in the leak table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum GroupBy {
    /// The caller's symbol (`myfault!MyfaultDeviceControl+0x358`).
    #[default]
    Caller,
    /// The whole allocation stack's symbols joined by `" <- "` (newest frame first); the caller's
    /// symbol when the log no longer holds the allocation's stack.
    Stack,
    /// The pool tag.
    Tag,
}

impl GroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Caller => "caller",
            GroupBy::Stack => "stack",
            GroupBy::Tag => "tag",
        }
    }

    /// The site name of one allocation under this grouping.
    pub fn site_of(self, allocation: &Allocation) -> String {
        match self {
            GroupBy::Caller => allocation.caller_symbol.clone(),
            GroupBy::Stack if allocation.stack.is_empty() => allocation.caller_symbol.clone(),
            GroupBy::Stack => stack_symbols(allocation),
            GroupBy::Tag => allocation.tag.clone(),
        }
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GroupBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "caller" => Ok(GroupBy::Caller),
            "stack" => Ok(GroupBy::Stack),
            "tag" => Ok(GroupBy::Tag),
            other => Err(format!(
                "unknown grouping `{other}` (expected caller, stack or tag)"
            )),
        }
    }
}

/// An allocation's stack as its frames' symbols joined by `" <- "`, newest frame first.
pub fn stack_symbols(allocation: &Allocation) -> String {
    allocation
        .stack
        .iter()
        .map(|frame| frame.symbol.as_str())
        .collect::<Vec<_>>()
        .join(" <- ")
}

/// Groups the outstanding allocations of every driver in `report` by site (one [`LeakSite`] per
/// site and driver), with the number of blocks and the sum of their charged sizes; biggest first
/// (bytes descending, then site name, then driver name).
pub fn sites(report: &LeakReport, group_by: GroupBy) -> Vec<LeakSite> {
    let mut index: HashMap<(String, &str), usize> = HashMap::new();
    let mut out: Vec<LeakSite> = Vec::new();
    for driver in &report.drivers {
        for allocation in &driver.allocations {
            let site = group_by.site_of(allocation);
            let slot = *index
                .entry((site.clone(), driver.name.as_str()))
                .or_insert_with(|| {
                    out.push(LeakSite {
                        site,
                        driver: driver.name.clone(),
                        count: 0,
                        bytes: 0,
                    });
                    out.len() - 1
                });
            out[slot].count += 1;
            out[slot].bytes = out[slot].bytes.saturating_add(allocation.size);
        }
    }
    out.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then_with(|| a.site.cmp(&b.site))
            .then_with(|| a.driver.cmp(&b.driver))
    });
    out
}
