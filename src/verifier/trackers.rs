//! A verified driver's tracked allocations (verifier.md §5): the tracker pages on the
//! `PoolPageHeaders` SLIST, one 4 KiB page each (slot 0 the header, the rest
//! `_VI_POOL_ENTRY` trackers), and the free trackers on the `PoolTrackers` SLIST. A slot is
//! outstanding when it is not on the free list — the kernel's own `NumberOfBytes & 1` marker is
//! ambiguous for special-pool blocks with an odd size (verifier.md §5.3).

use std::collections::{HashMap, HashSet};

use crate::kernel::Memory;

use super::drivers::VerifiedDriver;
use super::error::Result;
use super::facts;
use super::layout::{read, read_u64, Nt};

/// One outstanding tracker, as the kernel recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub address: u64,
    pub size: u64,
    pub tag: u64,
    pub caller: u64,
}

/// A driver's outstanding allocations in page order, slots ascending (the order `!verifier 3`
/// lists them), and what could not be read.
#[derive(Debug, Clone, Default)]
pub struct TrackerScan {
    pub allocations: Vec<Tracked>,
    /// `NumberOfBytes` of the first trackers on the free list, most recently freed first: a
    /// free caught half-done by the break-in has put its tracker there (size | 1) but not yet
    /// lowered the counters ([`super::selfcheck`]).
    pub recently_freed: Vec<u64>,
    pub problems: Vec<String>,
}

/// Tracker pages read so far, by page address: the free list's `Next` pointers live in them,
/// so the free list is walked without a round trip per free tracker.
type Pages = HashMap<u64, Vec<u8>>;

/// Which SLIST to walk, how far, and how.
struct SlistWalk<'a> {
    head: (u64, [u64; 2]),
    build: u32,
    limit: usize,
    what: &'a str,
    whole_pages: bool,
}

/// Follows an SLIST from its head: entries' `Next` is their first qword (verifier.md §5.4).
/// With `whole_pages`, each entry is a tracker page that is read whole (one bulk read instead
/// of a pointer read now and the page later) and kept in `pages`; otherwise `Next` is taken
/// from a page already in `pages` when the entry lies in one, and read from the target if not.
async fn walk_slist<M: Memory>(
    mem: &mut M,
    list: SlistWalk<'_>,
    pages: &mut Pages,
    problems: &mut Vec<String>,
) -> Result<Vec<u64>> {
    let SlistWalk {
        head: (address, [first, second]),
        build,
        limit,
        what,
        whole_pages,
    } = list;
    let depth = facts::slist_depth(first) as usize;
    let mut entry = facts::slist_first_entry(address, first, second, build);
    let mut seen = HashSet::new();
    let mut entries = Vec::new();
    while entry != 0 {
        if entries.len() >= limit.min(depth.max(1) * 2 + 16) {
            problems.push(format!(
                "the {what} list is longer than its depth {depth} says; stopped"
            ));
            break;
        }
        if !seen.insert(entry) {
            problems.push(format!("the {what} list loops at {entry:#x}"));
            break;
        }
        entries.push(entry);
        if whole_pages {
            match read(mem, entry, facts::TRACKER_PAGE_SIZE as usize, what).await {
                Ok(page) => {
                    pages.insert(entry, page);
                }
                Err(super::error::VerifierError::Session(e)) => return Err(e.into()),
                // The rest of the list may still be reachable through the first qword.
                Err(e) => problems.push(e.to_string()),
            }
        }
        let base = entry & !(facts::TRACKER_PAGE_SIZE - 1);
        let offset = (entry - base) as usize;
        let in_page = pages
            .get(&base)
            .and_then(|page| page.get(offset..offset + 8))
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        entry = match in_page {
            Some(next) => next,
            None => match read_u64(mem, entry, what).await {
                Ok(next) => next,
                Err(super::error::VerifierError::Session(e)) => return Err(e.into()),
                Err(e) => {
                    problems.push(e.to_string());
                    break;
                }
            },
        };
    }
    Ok(entries)
}

/// Reads every tracker page of `driver`: each page once, in bulk, and nothing else.
pub async fn scan<M: Memory>(
    mem: &mut M,
    nt: &Nt<'_>,
    driver: &VerifiedDriver,
    build: u32,
) -> Result<TrackerScan> {
    let mut out = TrackerScan::default();
    let slot_size = nt.size("_VI_POOL_ENTRY")?;
    let slots_per_page = facts::TRACKER_PAGE_SIZE / slot_size;
    let mut page_bytes = Pages::new();
    let pages = walk_slist(
        mem,
        SlistWalk {
            head: driver.page_headers,
            build,
            limit: facts::MAX_TRACKER_PAGES,
            what: "tracker page",
            whole_pages: true,
        },
        &mut page_bytes,
        &mut out.problems,
    )
    .await?;
    let unreadable_pages = out.problems.len();
    let free_list = walk_slist(
        mem,
        SlistWalk {
            head: driver.free_trackers,
            build,
            limit: pages.len() * slots_per_page as usize + 1,
            what: "free tracker",
            whole_pages: false,
        },
        &mut page_bytes,
        &mut out.problems,
    )
    .await?;
    let free_list_complete = out.problems.len() == unreadable_pages;

    let signature = nt.field("_VI_POOL_PAGE_HEADER", "Signature")?;
    let owner = nt.field("_VI_POOL_PAGE_HEADER", "VerifierEntry")?;
    let in_use = |path| nt.field("_VI_POOL_ENTRY_INUSE", path);
    let (va, bytes, tag, caller) = (
        in_use("VirtualAddress")?,
        in_use("NumberOfBytes")?,
        in_use("Tag")?,
        in_use("CallingAddress")?,
    );
    out.recently_freed = free_list
        .iter()
        .take(facts::RECENTLY_FREED_TRACKERS)
        .filter_map(|&slot| {
            let page = page_bytes.get(&(slot & !(facts::TRACKER_PAGE_SIZE - 1)))?;
            let at = (slot & (facts::TRACKER_PAGE_SIZE - 1)) as usize;
            super::layout::value(page.get(at..)?, &bytes)
        })
        .collect();
    let free: HashSet<u64> = free_list.into_iter().collect();
    for page in pages {
        // Pages that could not be read are already among the problems.
        let Some(bytes_of_page) = page_bytes.get(&page) else {
            continue;
        };
        let header = |f| super::layout::value(bytes_of_page, f).unwrap_or(0);
        if header(&signature) != facts::TRACKER_PAGE_SIGNATURE || header(&owner) != driver.data {
            out.problems.push(format!(
                "tracker page {page:#x} has signature {:#x} and owner {:#x}; skipped",
                header(&signature),
                header(&owner)
            ));
            continue;
        }
        for slot in 1..slots_per_page {
            let at = (slot * slot_size) as usize;
            let slot_bytes = &bytes_of_page[at..at + slot_size as usize];
            let address = page + slot * slot_size;
            let number_of_bytes = super::layout::value(slot_bytes, &bytes).unwrap_or(0);
            let outstanding = if free_list_complete {
                !free.contains(&address)
            } else {
                number_of_bytes & facts::FREE_TRACKER_BIT == 0
            };
            if !outstanding {
                continue;
            }
            out.allocations.push(Tracked {
                address: super::layout::value(slot_bytes, &va).unwrap_or(0)
                    & facts::TRACKER_ADDRESS_FLAG_MASK,
                size: number_of_bytes,
                tag: super::layout::value(slot_bytes, &tag).unwrap_or(0),
                caller: super::layout::value(slot_bytes, &caller).unwrap_or(0),
            });
        }
    }
    Ok(out)
}

/// A pool tag as four characters; bytes outside printable ASCII become `.` (verifier.md §5.3:
/// the low 32 bits).
pub fn tag_text(tag: u64) -> String {
    (tag as u32)
        .to_le_bytes()
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '.'
            }
        })
        .collect()
}
