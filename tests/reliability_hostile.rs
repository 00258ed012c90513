//! Hostile target memory (issue 9): the win10-myfault scenario laid out, then corrupted at
//! addresses found through the ISF layout tables — cyclic lists and trees, counts of 2^32,
//! overlapping and cyclic tracker page lists, bad signatures, huge or unterminated
//! UNICODE_STRINGs, absurd sizes and log lengths — and pulled over a Unix socket. Every case
//! must end in bounded time and memory without a panic, as a report marked incomplete with the
//! reason, or a clear exit-4 error. The caps are in `src/verifier/facts.rs` (README
//! "Guarantees").

use std::time::{Duration, Instant};

use kdleak::sim::wire::faults::FaultSpec;
use kdleak::sim::world::isf::Isf;
use kdleak::sim::world::scenario::{LayoutReport, MemoryImage};

mod reliability_support;
use reliability_support::*;

fn poke_u64(image: &mut MemoryImage, address: u64, value: u64) {
    poke(image, address, &value.to_le_bytes());
}

fn poke_u32(image: &mut MemoryImage, address: u64, value: u32) {
    poke(image, address, &value.to_le_bytes());
}

fn poke_u16(image: &mut MemoryImage, address: u64, value: u16) {
    poke(image, address, &value.to_le_bytes());
}

/// Where the layout put myfault.sys's structures.
struct Placed {
    suspect_entry: Option<u64>,
    verified_data: Option<u64>,
    avl_node: Option<u64>,
    tracker_pages: Vec<u64>,
}

struct Target {
    layout: LayoutReport,
    isf: Isf,
}

impl Target {
    fn new() -> Self {
        let layout = layout();
        let isf = Isf::load(&layout.isf_path).unwrap();
        Self { layout, isf }
    }

    fn off(&self, ty: &str, path: &str) -> u64 {
        self.isf.offset(ty, path).unwrap()
    }

    fn sym(&self, name: &str) -> u64 {
        self.layout.image.symbols[name]
    }

    fn myfault(&self) -> Placed {
        let d = self
            .layout
            .drivers
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case("myfault.sys"))
            .unwrap();
        Placed {
            suspect_entry: d.suspect_entry,
            verified_data: d.verified_data,
            avl_node: d.avl_node,
            tracker_pages: d.tracker_pages.clone(),
        }
    }

    fn read_u64(&self, address: u64) -> u64 {
        self.layout.image.read_u64(address).unwrap()
    }

    /// The first `_VF_AVL_TABLE` of `ViTargetDriversAvl`.
    fn avl_table(&self) -> u64 {
        self.read_u64(self.sym("ViTargetDriversAvl") + self.off("_VF_AVL_TREE", "Tables"))
    }

    fn outstanding_slots(&self) -> Vec<u64> {
        self.layout
            .allocations
            .iter()
            .filter(|a| !a.freed && a.driver.eq_ignore_ascii_case("myfault.sys"))
            .map(|a| a.slot)
            .collect()
    }
}

/// What a hostile case must end in.
enum Expect {
    /// A report marked incomplete, one reason containing this text.
    Partial(&'static str),
    /// `kdleak attach` exits 4 with a message containing this text.
    Exit4(&'static str),
}

async fn case(name: &str, expect: Expect, corrupt: impl FnOnce(&Target, &mut MemoryImage)) {
    let target = Target::new();
    let mut image = target.layout.image.clone();
    corrupt(&target, &mut image);
    let started = Instant::now();
    let (result, sim) = tokio::time::timeout(
        Duration::from_secs(60),
        pull_over_stream(machine(image), FaultSpec::default(), None),
    )
    .await
    .unwrap_or_else(|_| panic!("{name}: the pull did not end within 60 s"));
    let elapsed = started.elapsed();
    sim.shutdown().await;
    match (expect, result) {
        (Expect::Partial(reason), Ok(report)) => {
            assert!(!report.complete, "{name}: reported complete");
            assert!(
                report.incomplete_reasons.iter().any(|r| r.contains(reason)),
                "{name}: no reason containing {reason:?}: {:?}",
                report.incomplete_reasons
            );
            eprintln!(
                "{name}: partial in {elapsed:.1?}: {:?}",
                report.incomplete_reasons
            );
        }
        (Expect::Exit4(text), Err(error)) => {
            assert_eq!(error.exit_code(), 4, "{name}: {error}");
            assert!(error.to_string().contains(text), "{name}: {error}");
            eprintln!("{name}: exit 4 in {elapsed:.1?}: {error}");
        }
        (Expect::Partial(_), Err(error)) => panic!("{name}: expected a partial report: {error}"),
        (Expect::Exit4(_), Ok(report)) => panic!(
            "{name}: expected exit 4, got a report (complete {}, {:?})",
            report.complete, report.incomplete_reasons
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cyclic_suspect_list() {
    case(
        "suspect list pointing at itself",
        Expect::Partial("suspect-driver list loops"),
        |t, image| {
            let first = t.read_u64(t.sym("VfSuspectDriversList"));
            poke_u64(image, first, first);
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avl_trees_that_loop_or_claim_2_pow_32_nodes() {
    case(
        "AVL element count 2^32 - 1",
        Expect::Partial("says 4294967295"),
        |t, image| {
            let at = t.avl_table() + t.off("_VF_AVL_TABLE", "RtlTable.NumberGenericTableElements");
            poke_u32(image, at, u32::MAX);
        },
    )
    .await;
    case(
        "AVL node whose left child is itself",
        Expect::Partial("verified-driver tree loops"),
        |t, image| {
            let node = t.myfault().avl_node.unwrap();
            poke_u64(
                image,
                node + t.off("_RTL_BALANCED_LINKS", "LeftChild"),
                node,
            );
        },
    )
    .await;
    case(
        "2^32 - 1 AVL tables",
        Expect::Exit4("ViTargetDriversAvl"),
        |t, image| {
            let at = t.sym("ViTargetDriversAvl") + t.off("_VF_AVL_TREE", "TablesNo");
            poke_u32(image, at, u32::MAX);
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cyclic_and_overlapping_tracker_pages() {
    case(
        "tracker page list pointing at itself",
        Expect::Partial("tracker page list loops"),
        |t, image| {
            let page = t.myfault().tracker_pages[0];
            poke_u64(image, page, page);
        },
    )
    .await;
    case(
        "tracker page list with a page inside another",
        Expect::Partial("skipped"),
        |t, image| {
            let page = t.myfault().tracker_pages[0];
            poke_u64(image, page, page + 0x800);
            poke_u64(image, page + 0x800, 0);
        },
    )
    .await;
    case(
        "SLIST depth 0xffff with a huge free list",
        Expect::Partial("loops"),
        |t, image| {
            // Every free-list entry points at the first: a cycle the depth would allow.
            let data = t.myfault().verified_data.unwrap();
            let head = data + t.off("_VF_TARGET_VERIFIED_DRIVER_DATA", "PoolTrackers");
            let first = t.read_u64(head + 8) & !0xF;
            if first != 0 {
                poke_u64(image, first, first);
            } else {
                let page = t.myfault().tracker_pages[0];
                poke_u64(image, page, page);
            }
            let depth = t.read_u64(head);
            poke_u64(image, head, (depth & !0xFFFF) | 0xFFFF);
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures() {
    case(
        "verified driver data with a bad signature",
        Expect::Partial("signature 0xbadbad"),
        |t, image| {
            let data = t.myfault().verified_data.unwrap();
            let at = data + t.off("_VF_TARGET_VERIFIED_DRIVER_DATA", "Signature");
            poke_u32(image, at, 0xbadbad);
        },
    )
    .await;
    case(
        "tracker page with a bad signature",
        Expect::Partial("has signature 0xbadbad"),
        |t, image| {
            let page = t.myfault().tracker_pages[0];
            let at = page + t.off("_VI_POOL_PAGE_HEADER", "Signature");
            poke_u64(image, at, 0xbadbad);
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_unterminated_strings() {
    case(
        "driver name of 0xfffe bytes in unmapped memory",
        Expect::Exit4("driver name"),
        |t, image| {
            let entry = t.myfault().suspect_entry.unwrap();
            let name = entry + t.off("_VF_SUSPECT_DRIVER_ENTRY", "BaseName");
            poke_u16(image, name + t.off("_UNICODE_STRING", "Length"), 0xfffe);
            poke_u16(
                image,
                name + t.off("_UNICODE_STRING", "MaximumLength"),
                0xfffe,
            );
            // The buffer is not mapped at all.
            let buffer = name + t.off("_UNICODE_STRING", "Buffer");
            poke_u64(image, buffer, 0xffff_8000_dead_0000);
        },
    )
    .await;
    case(
        "driver name of 0xfffe readable bytes, no terminator",
        Expect::Partial("the trackers hold"),
        |t, image| {
            let entry = t.myfault().suspect_entry.unwrap();
            let name = entry + t.off("_VF_SUSPECT_DRIVER_ENTRY", "BaseName");
            poke_u16(image, name + t.off("_UNICODE_STRING", "Length"), 0xfffe);
            // Buffer: the kernel image, which is large and readable; the name is capped.
            poke_u64(
                image,
                name + t.off("_UNICODE_STRING", "Buffer"),
                t.layout.image.kern_base,
            );
            // Make the report partial too, to see it end normally.
            let data = t.myfault().verified_data.unwrap();
            poke_u64(
                image,
                data + t.off("_VF_TARGET_VERIFIED_DRIVER_DATA", "NonPagedBytes"),
                1 << 40,
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_of_a_tebibyte_and_more() {
    case(
        "VfPoolTracesLength 2^31",
        Expect::Partial("VfPoolTracesLength"),
        |t, image| poke_u32(image, t.sym("VfPoolTracesLength"), 1 << 31),
    )
    .await;
    case(
        "VfPoolTracesLength at the cap, ring not mapped",
        Expect::Partial("allocation log could not be read"),
        |t, image| poke_u32(image, t.sym("VfPoolTracesLength"), 0x80_0000),
    )
    .await;
    // Before the fix, either of these overflowed u64 and panicked (debug builds).
    case(
        "two trackers of 2^63 bytes",
        Expect::Partial("the trackers hold 10 of 0xffffffffffffffff bytes"),
        |t, image| {
            let size = t.off("_VI_POOL_ENTRY_INUSE", "NumberOfBytes");
            for slot in t.outstanding_slots().into_iter().take(2) {
                poke_u64(image, slot + size, 1 << 63);
            }
        },
    )
    .await;
    case(
        "paged and nonpaged byte counters at u64::MAX",
        Expect::Partial("of 0xffffffffffffffff bytes but the trackers hold 10"),
        |t, image| {
            let data = t.myfault().verified_data.unwrap();
            let f = |p| data + t.off("_VF_TARGET_VERIFIED_DRIVER_DATA", p);
            poke_u64(image, f("NonPagedBytes"), u64::MAX);
            poke_u64(image, f("PagedBytes"), u64::MAX);
        },
    )
    .await;
    case(
        "a tracker of 1 TiB",
        Expect::Partial("the trackers hold"),
        |t, image| {
            let size = t.off("_VI_POOL_ENTRY_INUSE", "NumberOfBytes");
            let slot = t.outstanding_slots()[0];
            poke_u64(image, slot + size, 1 << 40);
        },
    )
    .await;
    case(
        "log records of 1 TiB covering every block",
        Expect::Partial("the trackers hold"),
        |t, image| {
            let l = &t.layout;
            let size = t.off("_VF_POOL_TRACE", "Size");
            for slot in 0..l.trace_length {
                let record = l.trace_array + slot * l.trace_entry_size;
                poke_u64(image, record + size, 1 << 40);
            }
            let slot = t.outstanding_slots()[0];
            poke_u64(
                image,
                slot + t.off("_VI_POOL_ENTRY_INUSE", "NumberOfBytes"),
                3,
            );
        },
    )
    .await;
    // Memory stayed bounded: the whole test process never held a GiB.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(kib) = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    {
        assert!(kib < 1 << 20, "peak RSS {kib} KiB");
    }
}

/// Issue 14: a counter the host reads as 0 — what real PDBs' `volatile` counters gave before the
/// type fix — and a tree node whose VerifiedData reads 0 must make the report incomplete,
/// naming both numbers, never an empty or short table marked complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_read_as_zero_and_a_node_without_verified_data() {
    case(
        "a driver's current allocation counter read as 0",
        Expect::Partial(
            "myfault.sys: the counters say 0 allocations (0 paged, 0 nonpaged) of 0x9ce000 bytes \
             but the trackers hold 10 of 0x9ce000 bytes",
        ),
        |t, image| {
            let data = t.myfault().verified_data.unwrap();
            let at = data
                + t.off(
                    "_VF_TARGET_VERIFIED_DRIVER_DATA",
                    "CurrentNonPagedPoolAllocations",
                );
            poke_u32(image, at, 0);
        },
    )
    .await;
    case(
        "MmVerifierData's current nonpaged counters read as 0",
        Expect::Partial(
            "MmVerifierData counts 0 current nonpaged allocations of 0x0 bytes but the verified \
             drivers' counters add up to 10 of 0x9ce000 bytes",
        ),
        |t, image| {
            let mv = t.sym("MmVerifierData");
            let f = |p| mv + t.off("_MM_DRIVER_VERIFIER_DATA", p);
            poke_u32(image, f("CurrentNonPagedPoolAllocations"), 0);
            poke_u64(image, f("NonPagedBytes"), 0);
        },
    )
    .await;
    case(
        "myfault.sys's tree node with VerifiedData 0",
        Expect::Partial(
            "myfault.sys is configured for verification and loaded (Loads 1, Unloads 0) but its \
             ViTargetDriversAvl node at",
        ),
        |t, image| {
            let node = t.myfault().avl_node.unwrap();
            let target = node + t.isf.type_size("_RTL_BALANCED_LINKS").unwrap();
            poke_u64(
                image,
                target + t.off("_VF_TARGET_DRIVER", "VerifiedData"),
                0,
            );
        },
    )
    .await;
}
