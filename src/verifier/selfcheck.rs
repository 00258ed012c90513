//! Self-checks: every pull compares the independent sources of the same truth, so that a
//! layout misread (a PDB of another build, a field whose type the host resolved wrongly) or a
//! target that lies gives a report marked incomplete with both numbers — never an empty table
//! marked complete. README "Guarantees" lists the relations; the Windows facts behind them:
//!
//! * Per driver, `_VF_TARGET_VERIFIED_DRIVER_DATA`'s Current{Paged,NonPaged}PoolAllocations and
//!   {Paged,NonPaged}Bytes count exactly the trackers that are off the free list, and the bytes
//!   are the sum of their NumberOfBytes: ViPostPoolAllocation raises both by the tracker's
//!   (charged) size and ViFreeTrackedPool lowers both (verifier.md §5.2). Special-pool blocks are
//!   tracked and counted too, at their unrounded size; verifier-made blocks (`VMdl`, `Vfwi`) as
//!   well. Microsoft's Windows 8.1 sample (C4/0x62 page: three rows of 0x20 + 0x1008 + 0x30 =
//!   0x1058 = "Current Pool Bytes", 3 = "Current Pool Allocations") and the Windows 7 myfault
//!   sample (verifier.md §1: ten rows × 0xfb000 = 0x9ce000) agree.
//! * `MmVerifierData`'s Current* counters are raised and lowered by the same two functions, for
//!   every verified driver (verifier.md §3), so per pool type the drivers' counters add up to at
//!   most the global ones: the global counters also hold blocks of drivers that are no longer in
//!   the tree (`!verifier 0x2` lists "allocations left by unloaded drivers"). Microsoft's Windows 7
//!   `!verifier 0xf` sample (debugger docs, `-verifier.md`) has the equality over two drivers:
//!   0x13 + 0x7 paged = 0x1a, 0x854 + 0xfc = 0x950 bytes; 0x2 + 0xe1 nonpaged = 0xe3, 0xa0 +
//!   0x46070 = 0x46110 bytes. Untracked allocations (`UnTrackedPool`) are in neither ("the
//!   individual counters do not reflect these allocations", devtest "Monitoring Individual
//!   Counters"), peaks are maxima at different moments and are not compared.
//! * A driver configured for verification and loaded (`Loads > Unloads`, VfSuspectDriversIsLoaded)
//!   has a tree node whose VerifiedData points back at its suspect entry (VfSuspectDriversLoadCallback
//!   → VfTargetDriversAdd, verifier.md §4.3).
//! * Every tracked allocation writes a record at its address in `VfPoolTraces` (verifier.md §6.2),
//!   so while the ring has not wrapped, every outstanding block has one — up to Windows 10; from
//!   Windows 11 on the log may skip allocations ([`facts::LOG_MAY_SKIP_ALLOCATIONS_BUILD`]), and
//!   only a log without a record for any outstanding block is a contradiction.
//!
//! A break-in can freeze allocations and frees half-done ([`facts::IN_FLIGHT_PER_PROCESSOR`]):
//! a difference that that many of them explain is accepted, in the direction they move the
//! numbers and by the sizes of the blocks involved.

use std::collections::BTreeMap;

use crate::kernel::Module;

use super::drivers::Drivers;
use super::facts;
use super::model::{DriverCounters, DriverReport, LogSummary};

/// How many half-done allocations and frees a pull from a target with `processors` processors
/// accepts as the cause of a difference (0 processors: not known, taken as 1).
pub fn in_flight_allowance(processors: u32) -> u64 {
    facts::IN_FLIGHT_PER_PROCESSOR * u64::from(processors.max(1))
}

/// One driver's two sources: its counters, and what its trackers hold.
pub struct DriverFindings<'a> {
    pub name: &'a str,
    pub counters: &'a DriverCounters,
    /// NumberOfBytes of every outstanding tracker.
    pub tracked_sizes: Vec<u64>,
    /// NumberOfBytes of the first trackers on the free list (most recently freed first).
    pub recently_freed: &'a [u64],
}

fn sum(values: impl IntoIterator<Item = u64>) -> u64 {
    values.into_iter().fold(0, u64::saturating_add)
}

/// The sum of the `n` largest of `sizes`.
fn largest(sizes: &[u64], n: u64) -> u128 {
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted
        .iter()
        .take(usize::try_from(n).unwrap_or(usize::MAX))
        .map(|&s| u128::from(s))
        .sum()
}

/// Whether `allowance` half-done operations explain the trackers holding `dn` more blocks and
/// `db` more bytes than the counters say. An allocation in progress holds a tracker the
/// counters do not count yet (the tracker carries its size, or the stale odd size of its last
/// use); a free in progress has put its tracker back on the free list (size | 1) before the
/// counters drop; a free that has only marked its tracker (size | 1) adds one byte.
fn in_flight_explains(dn: i128, db: i128, f: &DriverFindings<'_>, allowance: u64) -> bool {
    let ops = dn.unsigned_abs();
    if ops > u128::from(allowance) {
        return false;
    }
    match dn.signum() {
        0 => db.unsigned_abs() <= u128::from(allowance),
        1 => db > 0 && db.unsigned_abs() <= largest(&f.tracked_sizes, ops as u64),
        _ => {
            let recent = &f.recently_freed[..f
                .recently_freed
                .len()
                .min(usize::try_from(allowance).unwrap_or(usize::MAX))];
            db < 0 && db.unsigned_abs() <= largest(recent, ops as u64)
        }
    }
}

/// Per driver: the counters against the trackers found. `None` when they agree (or half-done
/// operations explain the difference); else the reason, naming both numbers.
pub fn driver_vs_trackers(f: &DriverFindings<'_>, allowance: u64) -> Option<String> {
    let c = f.counters;
    let found = f.tracked_sizes.len() as u64;
    let found_bytes = sum(f.tracked_sizes.iter().copied());
    let counted = c
        .current_paged_allocations
        .saturating_add(c.current_nonpaged_allocations);
    let counted_bytes = c.paged_bytes.saturating_add(c.nonpaged_bytes);
    let dn = i128::from(found) - i128::from(counted);
    let db = i128::from(found_bytes) - i128::from(counted_bytes);
    if (dn == 0 && db == 0) || in_flight_explains(dn, db, f, allowance) {
        return None;
    }
    Some(format!(
        "{}: the counters say {counted} allocations ({} paged, {} nonpaged) of {counted_bytes:#x} \
         bytes but the trackers hold {found} of {found_bytes:#x} bytes — more than {allowance} \
         allocations or frees in progress at the break-in can explain",
        f.name, c.current_paged_allocations, c.current_nonpaged_allocations
    ))
}

/// The global counters against every verified driver's (not only the reported ones): per pool
/// type, the drivers' current allocations and bytes add up to at most `MmVerifierData`'s, up
/// to half-done operations (each of which moves one block, no larger than the bytes its driver
/// holds of that pool type).
pub fn global_vs_drivers(
    statistics: &BTreeMap<String, u64>,
    drivers: &[&DriverCounters],
    allowance: u64,
) -> Vec<String> {
    type Get = fn(&DriverCounters) -> (u64, u64);
    let pools: [(&str, &str, &str, Get); 2] = [
        ("paged", "CurrentPagedPoolAllocations", "PagedBytes", |c| {
            (c.current_paged_allocations, c.paged_bytes)
        }),
        (
            "nonpaged",
            "CurrentNonPagedPoolAllocations",
            "NonPagedBytes",
            |c| (c.current_nonpaged_allocations, c.nonpaged_bytes),
        ),
    ];
    let mut reasons = Vec::new();
    for (pool, count_field, bytes_field, get) in pools {
        let (Some(&global), Some(&global_bytes)) =
            (statistics.get(count_field), statistics.get(bytes_field))
        else {
            continue;
        };
        let counts = drivers.iter().map(|c| get(c));
        let total = sum(counts.clone().map(|(n, _)| n));
        let total_bytes = sum(counts.clone().map(|(_, b)| b));
        let block = counts.map(|(_, b)| b).max().unwrap_or(0);
        let excess = i128::from(total) - i128::from(global);
        let excess_bytes = i128::from(total_bytes) - i128::from(global_bytes);
        let in_flight_bytes = u128::from(allowance) * u128::from(block);
        if excess > i128::from(allowance)
            || (excess_bytes > 0 && excess_bytes.unsigned_abs() > in_flight_bytes)
        {
            reasons.push(format!(
                "MmVerifierData counts {global} current {pool} allocations of {global_bytes:#x} \
                 bytes but the verified drivers' counters add up to {total} of {total_bytes:#x} \
                 bytes — the global counters include every verified driver's"
            ));
        }
    }
    reasons
}

/// Drivers configured for verification and loaded (`Loads > Unloads`) whose verified data the
/// pull did not read: a tree node with VerifiedData 0 for a verified driver is what a layout
/// misread looks like, and its allocations must not silently disappear. `wanted` filters by
/// name like `--driver` (empty: all).
pub fn unread_suspects(
    drivers: &Drivers,
    modules: &[Module],
    wanted: impl Fn(&str) -> bool,
) -> Vec<(String, String)> {
    let mut reasons = Vec::new();
    for suspect in &drivers.suspects {
        if suspect.loads <= suspect.unloads
            || !wanted(&suspect.name)
            || drivers
                .verified
                .iter()
                .any(|v| v.suspect_entry == suspect.entry)
        {
            continue;
        }
        let module = modules
            .iter()
            .find(|m| m.name.eq_ignore_ascii_case(&suspect.name));
        let node = module.and_then(|m| drivers.others.iter().find(|o| o.image_base == m.base));
        let what = match (module, node) {
            (_, Some(node)) if node.verified_data == 0 => format!(
                "its ViTargetDriversAvl node at {:#x} has VerifiedData 0",
                node.node
            ),
            (_, Some(node)) => format!(
                "its ViTargetDriversAvl node at {:#x} points at verified data at {:#x} that \
                 could not be read",
                node.node, node.verified_data
            ),
            (Some(module), None) => format!(
                "ViTargetDriversAvl has no node for its image at {:#x}",
                module.base
            ),
            (None, None) => "neither the module list nor ViTargetDriversAvl has it".to_string(),
        };
        reasons.push((
            suspect.name.clone(),
            format!(
                "{} is configured for verification and loaded (Loads {}, Unloads {}) but {what}: \
                 its counters and allocations were not read",
                suspect.name, suspect.loads, suspect.unloads
            ),
        ));
    }
    reasons
}

/// The log against the trackers: while the ring has not wrapped (some slot never written) and
/// was read whole, every outstanding block has a record at its address — up to `allowance`
/// allocations whose record was not yet written; from Windows 11 on, at least one of them.
pub fn log_vs_trackers(
    reports: &[DriverReport],
    log: &LogSummary,
    build: u32,
    allowance: u64,
) -> Option<String> {
    if !log.whole_ring || log.records >= log.length {
        return None;
    }
    let outstanding: Vec<(&str, u64, bool)> = reports
        .iter()
        .flat_map(|d| {
            d.allocations
                .iter()
                .map(|a| (d.name.as_str(), a.address, a.requested_size.is_some()))
        })
        .collect();
    let total = outstanding.len() as u64;
    let missing: Vec<_> = outstanding
        .iter()
        .filter(|(_, _, logged)| !logged)
        .collect();
    let contradiction = if build >= facts::LOG_MAY_SKIP_ALLOCATIONS_BUILD {
        missing.len() as u64 == total && total > allowance
    } else {
        missing.len() as u64 > allowance
    };
    let (driver, address, _) = missing.first()?;
    contradiction.then(|| {
        format!(
            "the allocation log has not wrapped ({:#x} of {:#x} slots written) but {} of the \
             {total} outstanding allocations have no record at their address (the first: \
             {driver} {address:#x})",
            log.records,
            log.length,
            missing.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(paged: u64, nonpaged: u64, bytes: u64) -> DriverCounters {
        DriverCounters {
            current_paged_allocations: paged,
            current_nonpaged_allocations: nonpaged,
            nonpaged_bytes: bytes,
            ..DriverCounters::default()
        }
    }

    fn check(c: &DriverCounters, sizes: &[u64], freed: &[u64]) -> Option<String> {
        driver_vs_trackers(
            &DriverFindings {
                name: "myfault.sys",
                counters: c,
                tracked_sizes: sizes.to_vec(),
                recently_freed: freed,
            },
            in_flight_allowance(1),
        )
    }

    const TEN: [u64; 10] = [0xfb000; 10];

    #[test]
    fn agreeing_counters_and_trackers_pass() {
        assert_eq!(check(&counters(0, 10, 0x9ce000), &TEN, &[]), None);
    }

    #[test]
    fn a_counter_read_as_zero_names_both_numbers() {
        let reason = check(&counters(0, 0, 0x9ce000), &TEN, &[]).unwrap();
        assert!(
            reason.contains("the counters say 0 allocations"),
            "{reason}"
        );
        assert!(
            reason.contains("the trackers hold 10 of 0x9ce000 bytes"),
            "{reason}"
        );
    }

    #[test]
    fn an_allocation_in_progress_is_accepted_once_per_tracker_size() {
        // The tracker is taken, the counters not yet raised: one more block, its size more.
        let mut sizes = TEN.to_vec();
        sizes.push(0x108);
        assert_eq!(check(&counters(0, 10, 0x9ce000), &sizes, &[]), None);
        // More bytes than the extra trackers can hold is not an allocation in progress.
        assert!(check(&counters(0, 10, 0x9ce000 - 0x200000), &sizes, &[]).is_some());
        // Fewer bytes with more trackers is not either.
        assert!(check(&counters(0, 10, 0x9ce000 + 0x1000), &sizes, &[]).is_some());
    }

    #[test]
    fn a_free_in_progress_is_accepted_by_the_freed_trackers_size() {
        let nine = &TEN[..9];
        assert_eq!(
            check(&counters(0, 10, 0x9ce000), nine, &[0xfb001, 0x31]),
            None
        );
        assert!(check(&counters(0, 10, 0x9ce000), nine, &[0x31]).is_some());
    }

    #[test]
    fn more_differences_than_processors_can_hold_fail() {
        // Three extra trackers on a one-processor target: at most two half-done operations.
        let mut sizes = TEN.to_vec();
        sizes.extend([0x20, 0x20, 0x20]);
        assert!(check(&counters(0, 10, 0x9ce000), &sizes, &[]).is_some());
        assert_eq!(
            driver_vs_trackers(
                &DriverFindings {
                    name: "x",
                    counters: &counters(0, 10, 0x9ce000),
                    tracked_sizes: sizes,
                    recently_freed: &[],
                },
                in_flight_allowance(2),
            ),
            None
        );
    }

    #[test]
    fn equal_counts_with_other_bytes_fail_beyond_a_marked_tracker() {
        assert!(check(&counters(0, 10, 0x9ce000 - 1), &TEN, &[]).is_none());
        assert!(check(&counters(0, 10, 0x9cd000), &TEN, &[]).is_some());
        assert!(check(&counters(0, 10, u64::MAX), &TEN, &[]).is_some());
    }

    fn stats(paged: (u64, u64), nonpaged: (u64, u64)) -> BTreeMap<String, u64> {
        [
            ("CurrentPagedPoolAllocations", paged.0),
            ("PagedBytes", paged.1),
            ("CurrentNonPagedPoolAllocations", nonpaged.0),
            ("NonPagedBytes", nonpaged.1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    #[test]
    fn the_global_counters_hold_at_least_the_drivers() {
        // Microsoft's Windows 7 sample: videoprt.sys and usbport.sys add up exactly.
        let videoprt = DriverCounters {
            current_paged_allocations: 0x13,
            paged_bytes: 0x854,
            current_nonpaged_allocations: 2,
            nonpaged_bytes: 0xa0,
            ..DriverCounters::default()
        };
        let usbport = DriverCounters {
            current_paged_allocations: 7,
            paged_bytes: 0xfc,
            current_nonpaged_allocations: 0xe1,
            nonpaged_bytes: 0x46070,
            ..DriverCounters::default()
        };
        let sample = stats((0x1a, 0x950), (0xe3, 0x46110));
        assert!(global_vs_drivers(&sample, &[&videoprt, &usbport], 2).is_empty());
        // Blocks of drivers no longer listed: the global counters hold more.
        let more = stats((0x30, 0x2000), (0xf0, 0x50000));
        assert!(global_vs_drivers(&more, &[&videoprt, &usbport], 2).is_empty());
        // Global counters read as zero.
        let zero = stats((0, 0), (0, 0));
        let reasons = global_vs_drivers(&zero, &[&videoprt, &usbport], 2);
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[1].contains("counts 0 current nonpaged allocations of 0x0 bytes"));
        assert!(reasons[1].contains("add up to 227 of 0x46110 bytes"));
    }

    #[test]
    fn an_untouched_log_must_hold_every_outstanding_block() {
        use super::super::model::Allocation;
        let allocation = |address, logged: bool| Allocation {
            address,
            size: 0x20,
            tag: "Leak".into(),
            caller: 0,
            caller_symbol: String::new(),
            pool: None,
            stack: vec![],
            requested_size: logged.then_some(0x10),
            thread: None,
            history: vec![],
        };
        let driver = |allocations| DriverReport {
            name: "leaky.sys".into(),
            entry: 0,
            state: "Loaded".into(),
            image_base: None,
            image_size: None,
            target_driver: None,
            loads: None,
            unloads: None,
            counters: DriverCounters::default(),
            allocations,
        };
        let log = LogSummary {
            length: 0x1000,
            index: 0x20,
            frames_per_record: 13,
            records: 0x20,
            whole_ring: true,
            entries_read: None,
        };
        let some: Vec<_> = (0..5).map(|i| allocation(0x1000 * i, i < 2)).collect();
        let none: Vec<_> = (0..5).map(|i| allocation(0x1000 * i, false)).collect();
        let reason = log_vs_trackers(&[driver(some.clone())], &log, 19041, 2).unwrap();
        assert!(reason.contains("(0x20 of 0x1000 slots written) but 3 of the 5"));
        // Windows 11 may skip records: only a log that holds none of the blocks contradicts.
        assert_eq!(log_vs_trackers(&[driver(some)], &log, 22000, 2), None);
        assert!(log_vs_trackers(&[driver(none.clone())], &log, 22000, 2).is_some());
        // A wrapped ring holds no promise.
        let wrapped = LogSummary {
            records: 0x1000,
            ..log
        };
        assert_eq!(log_vs_trackers(&[driver(none)], &wrapped, 19041, 2), None);
    }
}
