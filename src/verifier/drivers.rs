//! The verified drivers (verifier.md §4.3): the configured names on `VfSuspectDriversList`, and
//! the loaded images in the `ViTargetDriversAvl` tree whose `VerifiedData` holds the per-driver
//! counters and tracker lists. Both walks are bounded and cycle-checked.

use std::collections::{HashMap, HashSet};

use crate::kernel::{self, Memory};

use super::error::{Result, VerifierError};
use super::facts;
use super::layout::{read_u64, Nt};
use super::model::DriverCounters;

/// One `_VF_SUSPECT_DRIVER_ENTRY`: a configured driver name.
#[derive(Debug, Clone)]
pub struct SuspectDriver {
    pub entry: u64,
    pub name: String,
    pub loads: u64,
    pub unloads: u64,
}

impl SuspectDriver {
    /// verifier.md §4.3: VfSuspectDriversIsLoaded is `Loads > Unloads`.
    pub fn state(&self) -> &'static str {
        if self.loads > self.unloads {
            "Loaded"
        } else if self.loads > 0 {
            "Unloaded"
        } else {
            "NotLoaded"
        }
    }
}

/// A loaded, verified image: its `_VF_TARGET_DRIVER` node and `_VF_TARGET_VERIFIED_DRIVER_DATA`.
#[derive(Debug, Clone)]
pub struct VerifiedDriver {
    /// Address of the `_VF_TARGET_DRIVER` (the AVL node's user data).
    pub target: u64,
    pub image_base: u64,
    pub image_size: u64,
    /// Address of `_VF_TARGET_VERIFIED_DRIVER_DATA`.
    pub data: u64,
    pub suspect_entry: u64,
    pub counters: DriverCounters,
    /// Addresses of the `PoolPageHeaders` and `PoolTrackers` SLIST heads, with their 16 bytes.
    pub page_headers: (u64, [u64; 2]),
    pub free_trackers: (u64, [u64; 2]),
}

/// A `_VF_TARGET_DRIVER` node without usable verified data: `VerifiedData` is NULL (a loaded
/// image that is not verified — or a layout misread), or points at data that failed its checks.
#[derive(Debug, Clone)]
pub struct OtherNode {
    /// Address of the `_VF_TARGET_DRIVER`.
    pub node: u64,
    pub image_base: u64,
    pub verified_data: u64,
}

/// What the walks found, and what they could not finish.
#[derive(Debug, Default)]
pub struct Drivers {
    pub suspects: Vec<SuspectDriver>,
    pub verified: Vec<VerifiedDriver>,
    /// Every other node of the tree, so that a configured, loaded driver without verified data
    /// can be named with what was read for it ([`super::selfcheck::unread_suspects`]).
    pub others: Vec<OtherNode>,
    pub problems: Vec<String>,
}

/// Walks both roots.
pub async fn read_drivers<M: Memory>(mem: &mut M, nt: &Nt<'_>) -> Result<Drivers> {
    let mut drivers = Drivers::default();
    read_suspects(mem, nt, &mut drivers).await?;
    read_verified(mem, nt, &mut drivers).await?;
    Ok(drivers)
}

pub(super) async fn read_unicode<M: Memory>(
    mem: &mut M,
    nt: &Nt<'_>,
    address: u64,
) -> Result<String> {
    let s = nt.read(mem, "_UNICODE_STRING", address).await?;
    Ok(kernel::read_utf16(
        mem,
        s.get("Buffer")?,
        s.get("Length")? as usize,
        1024,
        "driver name",
    )
    .await?)
}

async fn read_suspects<M: Memory>(mem: &mut M, nt: &Nt<'_>, out: &mut Drivers) -> Result<()> {
    const TY: &str = "_VF_SUSPECT_DRIVER_ENTRY";
    let head = nt.symbol("VfSuspectDriversList")?;
    let links = nt.offset(TY, "Links")?;
    let mut seen = HashSet::new();
    let mut link = read_u64(mem, head, "VfSuspectDriversList").await?;
    while link != head {
        if out.suspects.len() >= facts::MAX_SUSPECT_DRIVERS {
            out.problems
                .push("the suspect-driver list is longer than any real one; stopped".into());
            break;
        }
        if link == 0 || !seen.insert(link) {
            out.problems.push(format!(
                "the suspect-driver list loops or breaks at {link:#x}"
            ));
            break;
        }
        let entry = nt.read(mem, TY, link - links).await?;
        let name = read_unicode(mem, nt, entry.address_of("BaseName")?).await?;
        out.suspects.push(SuspectDriver {
            entry: entry.address,
            name,
            loads: entry.get("Loads")?,
            unloads: entry.get("Unloads")?,
        });
        link = entry.get("Links.Flink")?;
    }
    Ok(())
}

async fn read_verified<M: Memory>(mem: &mut M, nt: &Nt<'_>, out: &mut Drivers) -> Result<()> {
    let tree = nt
        .read(mem, "_VF_AVL_TREE", nt.symbol("ViTargetDriversAvl")?)
        .await?;
    let tables = tree.get("Tables")?;
    let count = tree.get("TablesNo")?;
    if count > facts::MAX_AVL_TABLES {
        return Err(VerifierError::Corrupt {
            what: "ViTargetDriversAvl".into(),
            address: tree.address,
            why: format!("{count} tables"),
        });
    }
    if count > 0 && !facts::is_kernel_address(tables) {
        return Err(VerifierError::Corrupt {
            what: "ViTargetDriversAvl".into(),
            address: tree.address,
            why: format!(
                "its {count} tables are at {tables:#x}, not a kernel address: is the kernel PDB \
                 the one of the target's kernel build?"
            ),
        });
    }
    let table_size = nt.size("_VF_AVL_TABLE")?;
    let root_at = nt.offset("_VF_AVL_TABLE", "RtlTable.BalancedRoot.RightChild")?;
    let elements_at = nt.offset("_VF_AVL_TABLE", "RtlTable.NumberGenericTableElements")?;
    let links_size = nt.size("_RTL_BALANCED_LINKS")?;
    let mut nodes = Vec::new();
    for i in 0..count {
        let table = tables + i * table_size;
        let root = read_u64(mem, table + root_at, "AVL table root").await?;
        let elements = super::layout::read_u32(mem, table + elements_at, "AVL table count").await?;
        walk_avl(
            mem,
            nt,
            root,
            elements as usize,
            &mut nodes,
            &mut out.problems,
        )
        .await?;
    }
    // TreeNode is `_VF_AVL_TREE_NODE` on Windows 7–1511 and `_VF_AVL_TREE_NODE_EX` (with Base)
    // from 1607 (verifier.md §4.3).
    let (base_path, size_path) = if nt.has_field("_VF_TARGET_DRIVER", "TreeNode.Base.p") {
        ("TreeNode.Base.p", "TreeNode.Base.RangeSize")
    } else {
        ("TreeNode.p", "TreeNode.RangeSize")
    };
    for node in nodes {
        let target = nt.read(mem, "_VF_TARGET_DRIVER", node + links_size).await?;
        let data = target.get("VerifiedData")?;
        let image_base = target.get(base_path)?;
        let other = OtherNode {
            node: target.address,
            image_base,
            verified_data: data,
        };
        if data == 0 {
            out.others.push(other); // loaded, not verified
            continue;
        }
        match read_verified_data(mem, nt, data).await {
            Ok(mut driver) => {
                driver.target = target.address;
                driver.image_base = image_base;
                driver.image_size = target.get(size_path)?;
                out.verified.push(driver);
            }
            Err(VerifierError::Session(e)) => return Err(VerifierError::Session(e)),
            Err(e) => {
                out.problems.push(e.to_string());
                out.others.push(other);
            }
        }
    }
    Ok(())
}

/// In-order walk of one `_RTL_AVL_TABLE`, bounded by its element count and a visited set.
async fn walk_avl<M: Memory>(
    mem: &mut M,
    nt: &Nt<'_>,
    root: u64,
    elements: usize,
    out: &mut Vec<u64>,
    problems: &mut Vec<String>,
) -> Result<()> {
    let left_at = nt.offset("_RTL_BALANCED_LINKS", "LeftChild")?;
    let right_at = nt.offset("_RTL_BALANCED_LINKS", "RightChild")?;
    let limit = elements.min(facts::MAX_AVL_NODES);
    let mut visited = HashSet::new();
    let mut stack = Vec::new();
    let mut node = root;
    let mut found = 0;
    while node != 0 || !stack.is_empty() {
        while node != 0 {
            if !visited.insert(node) || visited.len() > limit + 1 {
                problems.push(format!(
                    "the verified-driver tree loops or overflows at {node:#x}"
                ));
                return Ok(());
            }
            stack.push(node);
            node = read_u64(mem, node + left_at, "AVL node").await?;
        }
        let Some(top) = stack.pop() else { break };
        out.push(top);
        found += 1;
        node = read_u64(mem, top + right_at, "AVL node").await?;
    }
    if found != elements {
        problems.push(format!(
            "the verified-driver tree holds {found} nodes but says {elements}"
        ));
    }
    Ok(())
}

pub(super) async fn read_verified_data<M: Memory>(
    mem: &mut M,
    nt: &Nt<'_>,
    address: u64,
) -> Result<VerifiedDriver> {
    let data = nt
        .read(mem, "_VF_TARGET_VERIFIED_DRIVER_DATA", address)
        .await?;
    let signature = data.get("Signature")?;
    if signature != facts::VERIFIED_DRIVER_SIGNATURE {
        return Err(VerifierError::Corrupt {
            what: "verified driver data".into(),
            address,
            why: format!(
                "signature {signature:#x}, expected {:#x}",
                facts::VERIFIED_DRIVER_SIGNATURE
            ),
        });
    }
    let head = |path: &str| -> Result<(u64, [u64; 2])> {
        let at = data.address_of(path)?;
        let offset = (at - address) as usize;
        let q = |i: usize| {
            data.bytes
                .get(offset + 8 * i..offset + 8 * i + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        };
        match (q(0), q(1)) {
            (Some(a), Some(b)) => Ok((at, [a, b])),
            _ => Err(VerifierError::Corrupt {
                what: format!("{path} head"),
                address: at,
                why: "outside the structure".into(),
            }),
        }
    };
    Ok(VerifiedDriver {
        target: 0,
        image_base: 0,
        image_size: 0,
        data: address,
        suspect_entry: data.get("SuspectDriverEntry")?,
        counters: DriverCounters {
            current_nonpaged_allocations: data.get("CurrentNonPagedPoolAllocations")?,
            current_paged_allocations: data.get("CurrentPagedPoolAllocations")?,
            nonpaged_bytes: data.get("NonPagedBytes")?,
            paged_bytes: data.get("PagedBytes")?,
            peak_nonpaged_allocations: data.get("PeakNonPagedPoolAllocations")?,
            peak_paged_allocations: data.get("PeakPagedPoolAllocations")?,
            peak_nonpaged_bytes: data.get("PeakNonPagedBytes")?,
            peak_paged_bytes: data.get("PeakPagedBytes")?,
            contiguous_memory_bytes: data.get_opt("ContiguousMemoryBytes"),
            peak_contiguous_memory_bytes: data.get_opt("PeakContiguousMemoryBytes"),
        },
        page_headers: head("PoolPageHeaders")?,
        free_trackers: head("PoolTrackers")?,
    })
}

/// Suspect entries by address, to join verified data to its name.
pub fn suspects_by_entry(drivers: &Drivers) -> HashMap<u64, &SuspectDriver> {
    drivers.suspects.iter().map(|s| (s.entry, s)).collect()
}
