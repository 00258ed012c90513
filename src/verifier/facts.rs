//! The Windows facts no PDB holds, in one place, each with its source (`verifier.md` sections).
//! Everything else — every structure offset and size — comes from the kernel PDB by name.

/// `_VF_TARGET_VERIFIED_DRIVER_DATA.Signature` (verifier.md §4.3: ViTargetDriversAllocateVerifiedData).
pub const VERIFIED_DRIVER_SIGNATURE: u64 = 0x9876_1940;

/// `_VI_POOL_PAGE_HEADER.Signature`, VI_POOL_PAGE_HEADER_SIGNATURE (verifier.md §5.1, [WRK] mi.h).
pub const TRACKER_PAGE_SIGNATURE: u64 = 0x2132_1345;

/// Tracker pages are one 4 KiB page: slot 0 the header, the rest trackers (verifier.md §5.2:
/// ViGrowPoolAllocation).
pub const TRACKER_PAGE_SIZE: u64 = 0x1000;

/// A free tracker has bit 0 of NumberOfBytes set (verifier.md §5.2: ViFreeTrackedPool).
pub const FREE_TRACKER_BIT: u64 = 1;

/// VirtualAddress bit 0 is a transient special-pool flag during allocation (verifier.md §5.2).
pub const TRACKER_ADDRESS_FLAG_MASK: u64 = !1;

/// `MmVerifierData.Level` bit for pool tracking (verifier.md §7: DRIVER_VERIFIER_TRACK_POOL_ALLOCATIONS).
pub const LEVEL_POOL_TRACKING: u64 = 0x8;

/// `MmVerifierData.Level` bit for special pool (verifier.md §7).
pub const LEVEL_SPECIAL_POOL: u64 = 0x1;

/// Bounds on walks over target memory, so a corrupt or hostile target cannot make a pull run
/// forever: far above anything a real machine has.
pub const MAX_SUSPECT_DRIVERS: usize = 4096;
pub const MAX_AVL_NODES: usize = 65_536;
pub const MAX_AVL_TABLES: u64 = 256;
pub const MAX_TRACKER_PAGES: usize = 1 << 20;
/// The ring is a power of two ≤ 0x800000 entries on every known build (verifier.md §6.3).
pub const MAX_LOG_LENGTH: u64 = 0x80_0000;

/// How many of the most recently freed trackers (the head of `PoolTrackers`) a pull keeps the
/// sizes of, to explain a free caught half-done by the break-in (verifier.md §5.2).
pub const RECENTLY_FREED_TRACKERS: usize = 64;

/// Half-done pool operations the break-in may have frozen, per processor. The allocation path
/// takes a tracker off the driver's free list before it calls the pool allocator and raises the
/// counters only afterwards (ViPostPoolAllocation); the free path puts the tracker back before
/// it lowers them (ViFreeTrackedPool) — verifier.md §5.2. So while an allocation or a free is
/// in progress, the trackers and the counters legitimately disagree by that one block. KD
/// freezes every processor wherever it is: one operation at thread level and one more in a DPC
/// that interrupted it (pool can be allocated at DISPATCH_LEVEL) can be half-done on each.
/// Threads preempted or blocked inside the allocator could add more; a pull that meets more is
/// reported incomplete, and the next pull, a moment later, is not.
pub const IN_FLIGHT_PER_PROCESSOR: u64 = 2;

/// From this build on (Windows 11), the pool log may legitimately miss allocations: only the
/// `DifpPoolTags` tags are logged when that list is set, session-space addresses are skipped,
/// and a record without frames is overwritten by the next one (verifier.md §6.2: functions
/// ViPtLogStackTrace, ViPtLogStackCallout, VfHandlePoolAlloc). Earlier builds log every tracked
/// allocation (ViPoolLogStackTrace).
pub const LOG_MAY_SKIP_ALLOCATIONS_BUILD: u32 = 22_000;

/// Kernel-mode addresses of x64 Windows are in the upper half of the canonical address space.
pub fn is_kernel_address(address: u64) -> bool {
    address >= 0xFFFF_8000_0000_0000
}

/// First entry of an x64 `SLIST_HEADER` (verifier.md §5.4, as ReactOS `RtlFirstEntrySList`):
/// 16-byte format (Win8+, or HeaderType = 1 on Vista/7): the second qword with its low 4 bits
/// cleared; 8-byte format (Vista/7 with HeaderType 0): the header's own address with bits 4..42
/// replaced by NextEntry (bits 25..63 of the first qword).
pub fn slist_first_entry(header_address: u64, first: u64, second: u64, build: u32) -> u64 {
    let sixteen_byte = build >= 9200 || second & 1 == 1;
    if sixteen_byte {
        second & !0xF
    } else {
        let next_entry = first >> 25;
        (header_address & !(((1u64 << 39) - 1) << 4)) | (next_entry << 4)
    }
}

/// Depth of an x64 `SLIST_HEADER`: the low 16 bits of the first qword (verifier.md §5.4).
pub fn slist_depth(first: u64) -> u64 {
    first & 0xFFFF
}

/// Slot of the newest log record: `VfPoolTracesIndex & (Length − 1)`; older records precede it
/// round-robin (verifier.md §6.2, §6.4).
pub fn newest_log_slot(index: u64, length: u64) -> u64 {
    index & (length - 1)
}

/// The verify-level texts `!verifier` prints, one per set bit (verifier.md §7; Win7+ names as
/// `verifier /querysettings` shows them). Unknown bits print as `bit N`.
pub fn level_flag_names(level: u64) -> Vec<String> {
    const NAMES: &[(u64, &str)] = &[
        (0x1, "Special pool"),
        (0x2, "Force IRQL checking"),
        (0x4, "Randomized low resources simulation"),
        (0x8, "Pool tracking"),
        (0x10, "I/O verification"),
        (0x20, "Deadlock detection"),
        (0x40, "Enhanced I/O verification"),
        (0x80, "DMA checking"),
        (0x100, "Security checks"),
        (0x200, "Force pending I/O requests"),
        (0x400, "IRP logging"),
        (0x800, "Miscellaneous checks"),
        (0x2000, "Invariant MDL checking for stack"),
        (0x4000, "Invariant MDL checking for driver"),
        (0x8000, "Power framework delay fuzzing"),
        (0x10000, "Port/miniport interface checking"),
        (0x20000, "DDI compliance checking"),
        (0x40000, "Systematic low resources simulation"),
        (0x80000, "DDI compliance checking (additional)"),
        (0x100000, "Extended Verifier flags"),
        (0x200000, "NDIS/WIFI verification"),
        (0x800000, "Kernel synchronization delay fuzzing"),
        (0x1000000, "VM switch verification"),
        (0x2000000, "Code integrity checks"),
    ];
    (0..64)
        .map(|bit| 1u64 << bit)
        .filter(|mask| level & mask != 0)
        .map(|mask| {
            NAMES.iter().find(|(m, _)| *m == mask).map_or_else(
                || format!("bit {}", mask.trailing_zeros()),
                |(_, n)| n.to_string(),
            )
        })
        .collect()
}

/// The text WinDbg's Win7-era `!verifier` prints for bit 0x8 (the reference output, verifier.md §1).
pub const WIN7_POOL_TRACKING_TEXT: &str = "All pool allocations checked on unload";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_byte_slist_heads_clear_the_low_bits_of_the_second_qword() {
        assert_eq!(
            slist_first_entry(0xffff_c000_0000_1040, 0x3, 0xffff_c000_1234_5671, 19041),
            0xffff_c000_1234_5670
        );
    }

    #[test]
    fn eight_byte_slist_heads_splice_next_entry_into_the_header_address() {
        let entry: u64 = 0xffff_fa80_0520_1020;
        let header: u64 = 0xffff_fa80_0310_0040;
        let next_entry = (entry >> 4) & ((1 << 39) - 1);
        let first = (next_entry << 25) | 5;
        assert_eq!(slist_first_entry(header, first, 0, 7601), entry);
        assert_eq!(slist_depth(first), 5);
    }

    #[test]
    fn the_newest_log_slot_wraps_with_the_mask() {
        assert_eq!(newest_log_slot(0x1_0005, 0x10000), 5);
    }

    #[test]
    fn level_texts_name_every_set_bit() {
        assert_eq!(level_flag_names(0x8), vec!["Pool tracking"]);
        assert_eq!(
            level_flag_names(0x209bb).len(),
            9,
            "the standard flag set has nine bits"
        );
        assert_eq!(level_flag_names(1 << 40), vec!["bit 40"]);
    }
}
