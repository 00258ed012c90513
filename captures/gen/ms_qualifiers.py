"""Which members Microsoft's kernel PDBs declare `volatile`, per build, for every structure kdleak
reads through the PDB (the pull, the module walk, the allocation log).

The ISF tables the fixtures are generated from do not record qualifiers, so this table is the only
place they come from. Every entry names the public structure dumps (generated from Microsoft's
PDBs) it was read from; `exact` says whether a dump of that very build was found, otherwise `note`
says which neighbouring build's dump was used and why its layout is the same. Members not listed
are unqualified in the cited dumps. A type/build without any dump is in `UNSOURCED` and gets no
qualifiers (README "What still differs from Microsoft's PDBs").

No structure kdleak reads has a `const` member, and none has a volatile pointer on these builds
(Windows 11 24H2 adds `_KTHREAD* volatile ExclusiveOwnerThread` to _VF_AVL_TABLE; 22000 has no
such member), so only `volatile` on a member's own type is modelled.
"""

V7 = "https://vergiliusproject.com/kernels/x64/windows-7"
V10 = "https://vergiliusproject.com/kernels/x64/windows-10"
V10W = "https://www.vergiliusproject.com/kernels/x64/windows-10"
V11 = "https://vergiliusproject.com/kernels/x64/windows-11"
# ntdiff/headers: headers generated from Microsoft's PDBs (repository:path@commit where known)
NTDIFF = "github.com/ntdiff/headers:"

MDVD_ALL_7 = """Level RaiseIrqls AcquireSpinLocks SynchronizeExecutions AllocationsAttempted
AllocationsSucceeded AllocationsSucceededSpecialPool AllocationsWithNoTag TrimRequests Trims
AllocationsFailed AllocationsFailedDeliberately Loads Unloads UnTrackedPool UserTrims
CurrentPagedPoolAllocations CurrentNonPagedPoolAllocations PeakPagedPoolAllocations
PeakNonPagedPoolAllocations PagedBytes NonPagedBytes PeakPagedBytes PeakNonPagedBytes
BurstAllocationsFailedDeliberately SessionTrims OptionChanges VerifyMode ActivityCounter
PreviousActivityCounter WorkerTrimRequests""".split()

MDVD_10 = """RaiseIrqls AcquireSpinLocks SynchronizeExecutions AllocationsAttempted AllocationsSucceeded
AllocationsSucceededSpecialPool AllocationsFailedDeliberately Loads Unloads
CurrentPagedPoolAllocations CurrentNonPagedPoolAllocations PagedBytes NonPagedBytes
BurstAllocationsFailedDeliberately OptionChanges VerifyMode ExecutePoolTypes ExecutePageProtections
ExecutePageMappings ExecuteWriteSections SectionAlignmentFailures IATInExecutableSection""".split()

VTVDD_7 = """CurrentPagedPoolAllocations CurrentNonPagedPoolAllocations PeakPagedPoolAllocations
PeakNonPagedPoolAllocations PagedBytes NonPagedBytes PeakPagedBytes PeakNonPagedBytes""".split()

VTVDD_10 = """CurrentPagedPoolAllocations CurrentNonPagedPoolAllocations PagedBytes NonPagedBytes
ExecutePoolTypes ExecutePageProtections ExecutePageMappings ExecuteWriteSections
SectionAlignmentFailures IATInExecutableSection""".split()

# (builds, type, volatile members, exact, sources, note)
ENTRIES = [
    ((7601,), "_MM_DRIVER_VERIFIER_DATA", MDVD_ALL_7, False,
     [V7 + "/rtm/_MM_DRIVER_VERIFIER_DATA",
      "https://vergiliusproject.com/kernels/x86/windows-7/sp1/_MM_DRIVER_VERIFIER_DATA",
      NTDIFF + "Win7/x64/System32/ntoskrnl.exe/Standalone/_MM_DRIVER_VERIFIER_DATA.h"
      "@34fa37e4f70f3257745246f20fe9472f76439864"],
     "x64 RTM dumps (0xa0, member-for-member the 7601 ISF) and the x86 SP1 dump agree: every "
     "counter volatile, PreviousBucketName not"),
    ((19041,), "_MM_DRIVER_VERIFIER_DATA", MDVD_10, False,
     [V10 + "/1909/_MM_DRIVER_VERIFIER_DATA",
      NTDIFF + "Win10_2011_20H2/x86/System32/ntdll.dll/Standalone/_MM_DRIVER_VERIFIER_DATA.h"],
     "no 2004 x64 dump found; 1909 x64 is 0xa8 and member-for-member the 19041 ISF, 20H2 (19042, "
     "the 19041 kernel) x86 marks the same members"),
    ((22000,), "_MM_DRIVER_VERIFIER_DATA", MDVD_10 + ["AllocationFreed"], False,
     [V10 + "/1909/_MM_DRIVER_VERIFIER_DATA"],
     "no 21H2 page found; a Vergilius-format dump of exactly the 22000 layout (0xb0, "
     "AllocationFreed @0x30) turned up in the search index without a repository name and marks "
     "the 1909 set plus AllocationFreed, as does a later 0xb0 Windows 11 dump (UnsupportedRelocs "
     "instead of AllocationFreed)"),
    ((7601,), "_VF_TARGET_VERIFIED_DRIVER_DATA", VTVDD_7, False,
     [V7 + "/rtm/_VF_TARGET_VERIFIED_DRIVER_DATA"],
     "no SP1 x64 dump found; the RTM dump is 0x100 and member-for-member the 7601 ISF"),
    ((19041,), "_VF_TARGET_VERIFIED_DRIVER_DATA", VTVDD_10, True,
     [NTDIFF + "Win10_2004_20H1/x86/System32/ntoskrnl.exe/Standalone/"
      "_VF_TARGET_VERIFIED_DRIVER_DATA.h@4f641bf19726c73fdf6a0ddee9be8bc93afea4d5",
      V10 + "/20h2/_VF_TARGET_VERIFIED_DRIVER_DATA"],
     "2004 x86 (build 19041, read in full) and 20H2 x64 (0x130, the 19041 ISF layout)"),
    ((22000,), "_VF_TARGET_VERIFIED_DRIVER_DATA", VTVDD_10, False,
     [V11 + "/24h2/_VF_TARGET_VERIFIED_DRIVER_DATA",
      NTDIFF + "Win10_21H1_20150/x86/System32/ntoskrnl.exe/Standalone/"
      "_VF_TARGET_VERIFIED_DRIVER_DATA.h"],
     "no 21H2 dump found; 24H2 x64 has the 22000 layout up to PeakContiguousMemoryBytes and the "
     "same counters volatile; the Execute*/IAT counters are taken from 2004 (every build from "
     "1903 on marks them)"),
    ((7601,), "_VF_AVL_TREE", ["Lock"], False, [V7 + "/rtm/_VF_AVL_TREE"],
     "RTM x64 dump, 0x40 and member-for-member the 7601 ISF"),
    ((19041,), "_VF_AVL_TREE", ["NodeCount"], True, [V10W + "/2004/_VF_AVL_TREE"], ""),
    ((22000,), "_VF_AVL_TREE", ["NodeCount"], False, [V10 + "/21h1/_VF_AVL_TREE"],
     "no 21H2 dump found; 2004 and 21H1 (0x28, the 22000 layout) agree"),
    ((7601,), "_VF_AVL_TABLE", [], True, [V7 + "/sp1/_VF_AVL_TABLE"], ""),
    ((19041,), "_VF_AVL_TABLE", ["Lock"], True, [V10W + "/2004/_VF_AVL_TABLE"], ""),
    ((22000,), "_VF_AVL_TABLE", ["Lock"], False,
     [V10W + "/2004/_VF_AVL_TABLE", V11 + "/24h2/_VF_AVL_TABLE"],
     "no 21H2 dump found; 2004 and 24H2 both mark Lock"),
    ((22000,), "_VF_TARGET_DRIVER", [], True, [V11 + "/21h2/_VF_TARGET_DRIVER"], ""),
    ((7601, 19041), "_VF_TARGET_DRIVER", [], False,
     ["https://vergiliusproject.com/kernels/x64/windows-8/rtm/_VF_TARGET_DRIVER",
      V11 + "/21h2/_VF_TARGET_DRIVER"],
     "no 7601/19041 dump found; Windows 8 and 21H2 have no qualified member"),
    ((7601, 19041, 22000), "_VF_SUSPECT_DRIVER_ENTRY", [], False,
     [V11 + "/24h2/_VF_SUSPECT_DRIVER_ENTRY"],
     "only a 24H2 dump found (Loads/Unloads plain ULONG there)"),
    ((7601, 19041, 22000), "_VI_POOL_ENTRY", [], False, [V10W + "/1703/_VI_POOL_ENTRY"],
     "only a 1703 x64 dump found (0x20, same members)"),
    ((7601, 19041, 22000), "_VI_POOL_ENTRY_INUSE", [], False,
     [V10W + "/1703/_VI_POOL_ENTRY_INUSE"], "only a 1703 x64 dump found (0x20, same members)"),
    ((7601, 19041, 22000), "_VI_POOL_PAGE_HEADER", [], False,
     ["https://www.vergiliusproject.com/kernels/x86/windows-10/1803/_VI_POOL_PAGE_HEADER"],
     "only a 1803 x86 dump found (same members)"),
    ((19041, 22000), "_KLDR_DATA_TABLE_ENTRY", [], False,
     [V11 + "/23h2/_KLDR_DATA_TABLE_ENTRY"],
     "only a 23H2 dump found (0xa0, the 19041/22000 layout)"),
    ((7601,), "_LDR_DATA_TABLE_ENTRY", [], False, [],
     "a Vergilius-format 0xe0 dump of exactly the 7601 layout turned up in the search index "
     "without a page address; no qualified member"),
    ((7601, 19041, 22000), "_UNICODE_STRING", [], False,
     [NTDIFF + "Win7/x64/System32/ntoskrnl.exe/Standalone/_MM_DRIVER_VERIFIER_DATA.h"
      "@34fa37e4f70f3257745246f20fe9472f76439864"],
     "embedded in the Win7 x64 dump; unchanged since"),
    ((7601, 19041, 22000), "_LIST_ENTRY", [], False,
     [NTDIFF + "Win10_2004_20H1/x86/System32/ntoskrnl.exe/Standalone/"
      "_VF_TARGET_VERIFIED_DRIVER_DATA.h@4f641bf19726c73fdf6a0ddee9be8bc93afea4d5"],
     "embedded in the 2004 dump"),
    ((7601, 19041, 22000), "_SLIST_HEADER", [], False,
     [NTDIFF + "Win10_2004_20H1/x86/System32/ntoskrnl.exe/Standalone/"
      "_VF_TARGET_VERIFIED_DRIVER_DATA.h@4f641bf19726c73fdf6a0ddee9be8bc93afea4d5"],
     "embedded in the 2004 x86 dump (the x64 union differs in shape, not in qualifiers)"),
]

# Read by kdleak through the PDB, but no public dump of any build was found: emitted unqualified.
UNSOURCED = ["_VF_POOL_TRACE", "_VF_AVL_TREE_NODE", "_VF_AVL_TREE_NODE_EX", "_RTL_AVL_TABLE",
             "_RTL_BALANCED_LINKS"]


def table(build):
    """{type: [volatile members]} for one build, covering every type with an entry."""
    out = {}
    for builds, ty, members, _exact, _sources, _note in ENTRIES:
        if build in builds:
            if ty in out:
                raise ValueError("two entries for %s on %d" % (ty, build))
            out[ty] = list(members)
    return out


def volatile_members(build):
    """{type: set(members)} with only the types that have volatile members on `build`."""
    return {ty: set(m) for ty, m in table(build).items() if m}
