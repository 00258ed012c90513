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

/// `KUSER_SHARED_DATA`'s kernel address on x64, the same on every Windows version (wdm.h
/// `KI_USER_SHARED_DATA`; Volatility 3 `Intel64LayerCheck.KUSER_KERNEL_SPACE_ADDR`). No PDB has
/// a symbol for it; its layout (`_KUSER_SHARED_DATA`) comes from the kernel PDB. A memory image's
/// page-table root is only taken as Windows' when it translates this page (Volatility 3 checks
/// the same, `framework/automagic/windows.py`, `DtbSelfRef64bit`).
pub const KUSER_SHARED_DATA: u64 = 0xFFFF_F780_0000_0000;

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

// ---- The flag lists today's WinDbg prints (`!verifier`'s "Verify Flags Level" block) ---------

/// One Driver Verifier flag as today's `!verifier` names it in its flag lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamedFlag {
    pub bit: u64,
    pub name: &'static str,
}

const fn flag(bit: u64, name: &'static str) -> NamedFlag {
    NamedFlag { bit, name }
}

/// The flags one target build "knows": today's WinDbg lists each of them under STANDARD FLAGS
/// or ADDITIONAL FLAGS, checked or not, and puts every other set bit under RESERVED FLAGS.
/// The lists follow the target's build, not the debugger: a 2021 WinDbg on a Windows 7 target
/// lists twelve flags, on Windows 10 twenty-three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindbgFlagList {
    /// The build the public sample was taken from (the list serves the builds of [`FLAG_LISTS`]'s
    /// range; builds without a sample use the nearest documented one, said in `source`).
    pub sampled_build: &'static str,
    pub standard: &'static [NamedFlag],
    pub additional: &'static [NamedFlag],
    /// Where the list comes from (tests/data/windbg_samples/README.md has the excerpts).
    pub source: &'static str,
}

/// `(0x00000000) Automatic Checks`: always listed first under STANDARD FLAGS, always checked
/// (every sample; the checks that run whatever the flags are).
pub const AUTOMATIC_CHECKS: &str = "Automatic Checks";

/// The name today's WinDbg gives every set bit its target build does not list
/// (ebpf-for-windows #1091, openzfs #124, MIDI #366: 0x00100000 on Windows 10 and 11).
pub const RESERVED_FLAG_NAME: &str = "Unused or reserved flag";

const STANDARD_7: &[NamedFlag] = &[
    flag(0x1, "Special pool"),
    flag(0x2, "Force IRQL checking"),
    flag(0x8, "Pool tracking"),
    flag(0x10, "I/O verification"),
    flag(0x20, "Deadlock detection"),
    flag(0x80, "DMA checking"),
    flag(0x100, "Security checks"),
    flag(0x800, "Miscellaneous checks"),
];

const ADDITIONAL_7: &[NamedFlag] = &[
    flag(0x4, "Randomized low resources simulation"),
    flag(0x200, "Force pending I/O requests"),
    flag(0x400, "IRP logging"),
];

const STANDARD_81: &[NamedFlag] = &[
    flag(0x1, "Special pool"),
    flag(0x2, "Force IRQL checking"),
    flag(0x8, "Pool tracking"),
    flag(0x10, "I/O verification"),
    flag(0x20, "Deadlock detection"),
    flag(0x80, "DMA checking"),
    flag(0x100, "Security checks"),
    flag(0x800, "Miscellaneous checks"),
    flag(0x20000, "DDI compliance checking"),
];

const ADDITIONAL_81: &[NamedFlag] = &[
    flag(0x4, "Randomized low resources simulation"),
    flag(0x200, "Force pending I/O requests"),
    flag(0x400, "IRP logging"),
    flag(0x2000, "Invariant MDL checking for stack"),
    flag(0x4000, "Invariant MDL checking for driver"),
    flag(0x8000, "Power framework delay fuzzing"),
    flag(0x40000, "Systematic low resources simulation"),
    flag(0x80000, "DDI compliance checking (additional)"),
    flag(0x200000, "NDIS/WIFI verification"),
    flag(0x800000, "Kernel synchronization delay fuzzing"),
    flag(0x1000000, "VM switch verification"),
];

const ADDITIONAL_10: &[NamedFlag] = &[
    flag(0x4, "Randomized low resources simulation"),
    flag(0x200, "Force pending I/O requests"),
    flag(0x400, "IRP logging"),
    flag(0x2000, "Invariant MDL checking for stack"),
    flag(0x4000, "Invariant MDL checking for driver"),
    flag(0x8000, "Power framework delay fuzzing"),
    flag(0x10000, "Port/miniport interface checking"),
    flag(0x40000, "Systematic low resources simulation"),
    flag(0x80000, "DDI compliance checking (additional)"),
    flag(0x200000, "NDIS/WIFI verification"),
    flag(0x800000, "Kernel synchronization delay fuzzing"),
    flag(0x1000000, "VM switch verification"),
    flag(0x2000000, "Code integrity checks"),
];

/// The lists by first build, newest last. Sources (excerpts and URLs in
/// tests/data/windbg_samples/README.md):
/// * 6.1 (7600–9199): manurautela.github.io "memory tracking through nt!PoolHitTag" (2021-10-13):
///   a 2021 WinDbg on a Windows 7 SP1 7601 x86 target, level 0x8. Vista (6.0) has no public
///   sample: it gets this list, the nearest documented build.
/// * 6.3 (9200–10239): MicrosoftDocs windows-driver-docs "Debugging memory leaks … (C4): 0x62"
///   ("Connected to Windows 8 9600 x86 compatible target", level 0x209bb) and
///   openvswitch/ovs-issues #50 (a Windows 8.1 x64 kernel: ntkrnlmp timestamp 0x5215D156,
///   August 2013, every flag set). Windows 8 (9200) has no public sample: it gets the 8.1 list.
/// * 10.0 (10240+), also Windows 11: microsoft/ebpf-for-windows #1091, #2092, #2197 and
///   openzfsonwindows/openzfs #124 (Windows 10/Server x64 targets, 2022–2023), and
///   microsoft/MIDI #366 (2025, a Windows 11 test machine): the same twenty-three flags. Which
///   Windows 10 build first listed 0x10000 and 0x2000000 is not public; 10240 is assumed.
pub const FLAG_LISTS: &[(u32, WindbgFlagList)] = &[
    (
        0,
        WindbgFlagList {
            sampled_build: "6.1.7601 (x86)",
            standard: STANDARD_7,
            additional: ADDITIONAL_7,
            source:
                "manurautela.github.io, memory tracking through nt!PoolHitTag (2021): a Windows \
                     7 SP1 target; Vista and older: nearest documented build",
        },
    ),
    (
        9200,
        WindbgFlagList {
            sampled_build: "6.3.9600 (x86, x64)",
            standard: STANDARD_81,
            additional: ADDITIONAL_81,
            source: "MicrosoftDocs windows-driver-docs, Debugging memory leaks (C4: 0x62), a \
                     Windows 8.1 9600 target; openvswitch/ovs-issues #50; Windows 8 (9200): \
                     nearest documented build",
        },
    ),
    (
        10240,
        WindbgFlagList {
            sampled_build: "10.0 (x64), 11 (x64)",
            standard: STANDARD_81,
            additional: ADDITIONAL_10,
            source: "microsoft/ebpf-for-windows #1091, #2092; openzfsonwindows/openzfs #124 \
                     (Windows 10); microsoft/MIDI #366 (Windows 11)",
        },
    ),
];

/// The flag lists today's WinDbg prints for a target of `build`.
pub fn windbg_flag_list(build: u32) -> &'static WindbgFlagList {
    FLAG_LISTS
        .iter()
        .rev()
        .find(|(first, _)| build >= *first)
        .map(|(_, list)| list)
        .unwrap_or(&FLAG_LISTS[0].1)
}

/// PML4 slots that may map the paging structures themselves: the fixed 0x1ED before Windows 10
/// 1607, a slot chosen at boot in the kernel half since (Volatility 3 `DtbSelfRef64bit` accepts
/// a self-reference in 0x100–0x1FF; Geoff Chappell, "MMPTE_HARDWARE": PXE_SELFMAP).
pub const SELF_MAP_SLOTS: std::ops::RangeInclusive<usize> = 0x100..=0x1FF;

/// The PDB names the x64 kernel's RSDS record carries: the multiprocessor kernel every x64
/// Windows since Vista runs, and the uniprocessor one older builds could (Volatility 3
/// `PdbSignatureScanner`'s kernel names; the symbol server's `ntkrnlmp.pdb`).
pub const KERNEL_PDB_NAMES: [&str; 2] = ["ntkrnlmp.pdb", "ntoskrnl.pdb"];

/// Bug check 0xC4, DRIVER_VERIFIER_DETECTED_VIOLATION (Microsoft's bug check reference).
pub const BUGCHECK_DRIVER_VERIFIER_DETECTED_VIOLATION: u64 = 0xC4;
/// 0xC4's parameter 1 when a verified driver is unloaded with pool outstanding: parameter 2 the
/// driver's name, 3 the verifier's structure for it, 4 the allocations not freed (Microsoft's
/// bug check 0xC4 reference; `!analyze -v` in public issues, e.g. microsoft/ebpf-for-windows#2197).
pub const VERIFIER_POOL_LEAK_ON_UNLOAD: u64 = 0x62;

/// `KiBugCheckData`: the code, then parameters 1–4, each pointer-sized (what `!analyze` and
/// the crash dump writer read: the dump header's BugCheckCode/BugCheckParameter1–4, kdmp-parser's
/// `HEADER64`).
pub const BUGCHECK_DATA_VALUES: usize = 5;

/// `MmUnloadedDrivers` points at an array of MI_UNLOADED_DRIVERS = 50 `_UNLOADED_DRIVERS`
/// records, which no PDB or ISF describes: x64 `{UNICODE_STRING Name @0; PVOID StartAddress
/// @0x10; PVOID EndAddress @0x18; LARGE_INTEGER CurrentTime @0x20}`, 0x28 bytes (Volatility 3's
/// hand-written `symbols/windows/unloadedmodules-x64.json`; the 50 is the `cmp eax, 32h` that
/// follows each load of `MmLastUnloadedDriver` in x64 kernels, as public signature scanners
/// match it). `MmLastUnloadedDriver` is a ULONG: the next slot (= records written, until the
/// array wraps).
pub const UNLOADED_DRIVERS_ENTRIES: u64 = 50;
pub const UNLOADED_DRIVER_SIZE: u64 = 0x28;
pub const UNLOADED_DRIVER_NAME: u64 = 0;
pub const UNLOADED_DRIVER_START: u64 = 0x10;
pub const UNLOADED_DRIVER_END: u64 = 0x18;
pub const UNLOADED_DRIVER_TIME: u64 = 0x20;
/// Largest range an unloaded record may span before it is taken for garbage (no driver image is
/// near 1 GiB).
pub const MAX_UNLOADED_RANGE: u64 = 1 << 30;

/// The name of a bug check code, for the codes kdleak meets (Microsoft's bug check reference).
pub fn bugcheck_name(code: u64) -> Option<&'static str> {
    Some(match code {
        0x0A => "IRQL_NOT_LESS_OR_EQUAL",
        0x19 => "BAD_POOL_HEADER",
        0x3B => "SYSTEM_SERVICE_EXCEPTION",
        0x50 => "PAGE_FAULT_IN_NONPAGED_AREA",
        0x7E => "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED",
        0xC1 => "SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION",
        0xC4 => "DRIVER_VERIFIER_DETECTED_VIOLATION",
        0xC5 => "DRIVER_CORRUPTED_EXPOOL",
        0xCB => "DRIVER_LEFT_LOCKED_PAGES_IN_PROCESS",
        0xD1 => "DRIVER_IRQL_NOT_LESS_OR_EQUAL",
        0xE2 => "MANUALLY_INITIATED_CRASH",
        0x133 => "DPC_WATCHDOG_VIOLATION",
        0x161 => "LIVE_SYSTEM_DUMP",
        _ => return None,
    })
}

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

    #[test]
    fn each_build_gets_the_flag_list_of_its_sample() {
        assert_eq!(windbg_flag_list(7601).standard.len(), 8);
        assert_eq!(windbg_flag_list(7601).additional.len(), 3);
        assert_eq!(windbg_flag_list(6002).additional.len(), 3);
        assert_eq!(windbg_flag_list(9600).standard.len(), 9);
        assert_eq!(windbg_flag_list(9600).additional.len(), 11);
        assert_eq!(windbg_flag_list(9200), windbg_flag_list(9600));
        assert_eq!(windbg_flag_list(19041).additional.len(), 13);
        assert_eq!(windbg_flag_list(22000), windbg_flag_list(10240));
    }

    #[test]
    fn no_flag_is_listed_twice_and_the_lists_only_grow() {
        let mut previous: Vec<u64> = Vec::new();
        for (_, list) in FLAG_LISTS {
            let bits: Vec<u64> = list
                .standard
                .iter()
                .chain(list.additional)
                .map(|f| f.bit)
                .collect();
            let mut unique = bits.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), bits.len(), "{}", list.source);
            assert!(bits.iter().all(|b| b.is_power_of_two()));
            assert!(previous.iter().all(|b| bits.contains(b)), "{}", list.source);
            previous = bits;
        }
    }
}
