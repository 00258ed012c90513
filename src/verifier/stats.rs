//! The global statistics: `MmVerifierData` (`_MM_DRIVER_VERIFIER_DATA`, verifier.md §3), every
//! field by name, so a build that inserts a field (Windows 11's AllocationFreed) shifts nothing.

use std::collections::BTreeMap;

use crate::kernel::Memory;

use super::error::Result;
use super::facts;
use super::layout::{read_u64, Nt};
use super::model::VerifierState;

/// The counters `!verifier` prints and JSON carries, when the build has them.
pub const STATISTICS: &[&str] = &[
    "RaiseIrqls",
    "AcquireSpinLocks",
    "SynchronizeExecutions",
    "AllocationsAttempted",
    "AllocationsSucceeded",
    "AllocationsSucceededSpecialPool",
    "AllocationsWithNoTag",
    "TrimRequests",
    "Trims",
    "AllocationsFailed",
    "AllocationsFailedDeliberately",
    "AllocationFreed",
    "Loads",
    "Unloads",
    "UnTrackedPool",
    "UserTrims",
    "CurrentPagedPoolAllocations",
    "CurrentNonPagedPoolAllocations",
    "PeakPagedPoolAllocations",
    "PeakNonPagedPoolAllocations",
    "PagedBytes",
    "NonPagedBytes",
    "PeakPagedBytes",
    "PeakNonPagedBytes",
    "BurstAllocationsFailedDeliberately",
    "SessionTrims",
    "OptionChanges",
    "VerifyMode",
];

/// Reads `MmVerifierData` and `VfOptionFlags`.
pub async fn read_state<M: Memory>(mem: &mut M, nt: &Nt<'_>) -> Result<VerifierState> {
    let data = nt
        .read(
            mem,
            "_MM_DRIVER_VERIFIER_DATA",
            nt.symbol("MmVerifierData")?,
        )
        .await?;
    let level = data.get("Level")?;
    let statistics: BTreeMap<String, u64> = STATISTICS
        .iter()
        .filter_map(|name| Some((name.to_string(), data.get_opt(name)?)))
        .collect();
    let option_flags = match nt.try_symbol("VfOptionFlags")? {
        Some(address) => Some(u64::from(
            super::layout::read_u32(mem, address, "VfOptionFlags").await?,
        )),
        None => None,
    };
    // Windows 11 tests VfRuleClasses bit 3 on the pool paths as well (verifier.md §7).
    let rule_classes = match nt.try_symbol("VfRuleClasses")? {
        Some(address) => read_u64(mem, address, "VfRuleClasses").await.ok(),
        None => None,
    };
    let pool_tracking = level & facts::LEVEL_POOL_TRACKING != 0
        || rule_classes.is_some_and(|r| r & facts::LEVEL_POOL_TRACKING != 0);
    Ok(VerifierState {
        level,
        flags: facts::level_flag_names(level),
        option_flags,
        pool_tracking,
        statistics,
        log: None,
    })
}
