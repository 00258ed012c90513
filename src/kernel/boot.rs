//! Which boot of the target a stop sees. A pull that fetches the kernel's symbols while the
//! target runs stops it twice; the second stop must know whether the machine booted again in
//! between. The first stop has no PDB yet, so it keeps what it can read without one: GetVersion's
//! kernel base and module list head, the kernel's RSDS record, and the raw bytes of
//! `KUSER_SHARED_DATA`, whose layout the PDB gives later ([`SharedDataLayout`]).
//!
//! What tells two boots apart, strongest first: `KUSER_SHARED_DATA.BootId` (Windows 8+; the
//! boot count, new on every boot), `InterruptTime` (time since boot, which only grows within a
//! boot), the kernel base (randomised per boot by KASLR since Windows 8) and the kernel's RSDS
//! record (an update installed by the reboot).

use super::{Memory, PdbInfo};
use crate::verifier::facts::KUSER_SHARED_DATA;

/// Bytes of `KUSER_SHARED_DATA` kept raw, one read request on every transport. The structure is
/// a user-mode ABI whose fields never move (ntddk.h; `BootId` at 0x2c4 since Windows 8,
/// `InterruptTime` at 0x8 since NT): what tells boots apart lies in this prefix, and a field a
/// PDB places beyond it is left out of the comparison. The offsets themselves come from the PDB.
const SHARED_DATA_BYTES: usize = 0x400;

/// Where the fields that tell boots apart are inside `_KUSER_SHARED_DATA`, from the kernel PDB;
/// `None` where the build's structure lacks one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedDataLayout {
    /// `BootId` (ULONG).
    pub boot_id: Option<usize>,
    /// `InterruptTime.LowPart`, `.High1Time`, `.High2Time` (a `_KSYSTEM_TIME`).
    pub interrupt_time: Option<[usize; 3]>,
}

/// What one stop saw of the running boot, before any symbol was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootIdentity {
    pub kern_base: u64,
    /// GetVersion's `PsLoadedModuleList` (0 when it does not say).
    pub module_list_head: u64,
    pub kernel_pdb: PdbInfo,
    /// The start of `KUSER_SHARED_DATA`, when it could be read.
    shared_data: Option<Vec<u8>>,
}

impl BootIdentity {
    /// Reads the start of the shared data page (one request) beside the facts the stop already
    /// has.
    pub async fn read<M: Memory>(
        mem: &mut M,
        kern_base: u64,
        module_list_head: u64,
        kernel_pdb: PdbInfo,
    ) -> crate::session::Result<Self> {
        let read = mem.read(KUSER_SHARED_DATA, SHARED_DATA_BYTES).await?;
        // Unmapped (not a Windows kernel's page, or a partial dump of one): the other facts
        // still tell most reboots apart.
        let shared_data = read.unreadable.is_empty().then_some(read.bytes);
        if shared_data.is_none() {
            tracing::debug!("KUSER_SHARED_DATA unreadable; telling boots apart without it");
        }
        Ok(Self {
            kern_base,
            module_list_head,
            kernel_pdb,
            shared_data,
        })
    }

    /// Why `later` cannot be the boot `self` saw (`None`: nothing says it is another).
    pub fn new_boot_in(&self, later: &Self, layout: &SharedDataLayout) -> Option<String> {
        if later.kernel_pdb != self.kernel_pdb {
            return Some(format!(
                "the kernel is another build: its PDB was {} {} age {}, now {} {} age {}",
                self.kernel_pdb.file_name(),
                self.kernel_pdb.guid,
                self.kernel_pdb.age,
                later.kernel_pdb.file_name(),
                later.kernel_pdb.guid,
                later.kernel_pdb.age
            ));
        }
        if later.kern_base != self.kern_base {
            return Some(format!(
                "the kernel moved from {:#x} to {:#x}",
                self.kern_base, later.kern_base
            ));
        }
        if later.module_list_head != self.module_list_head {
            return Some(format!(
                "PsLoadedModuleList moved from {:#x} to {:#x}",
                self.module_list_head, later.module_list_head
            ));
        }
        let (Some(before), Some(after)) = (&self.shared_data, &later.shared_data) else {
            return None;
        };
        if let Some(at) = layout.boot_id {
            let (was, is) = (u32_at(before, at), u32_at(after, at));
            if was.is_some() && was != is {
                return Some(format!(
                    "KUSER_SHARED_DATA.BootId went from {} to {}",
                    was.unwrap_or(0),
                    is.map_or("?".into(), |b| b.to_string())
                ));
            }
        }
        if let Some(parts) = layout.interrupt_time {
            if let (Some(was), Some(is)) = (system_time(before, parts), system_time(after, parts)) {
                if is < was {
                    return Some(format!(
                        "the time since boot went back from {:.1} s to {:.1} s",
                        was as f64 / 1e7,
                        is as f64 / 1e7
                    ));
                }
            }
        }
        None
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    Some(u32::from_le_bytes(bytes.get(at..end)?.try_into().ok()?))
}

/// A `_KSYSTEM_TIME` in 100 ns units, when its two high parts agree (Windows writes High2Time,
/// LowPart, then High1Time; a stop can catch it in between: then it says nothing).
fn system_time(bytes: &[u8], [low, high1, high2]: [usize; 3]) -> Option<u64> {
    let high = u32_at(bytes, high1)?;
    if u32_at(bytes, high2)? != high {
        return None;
    }
    Some(u64::from(high) << 32 | u64::from(u32_at(bytes, low)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::fake::FakeMemory;

    const LAYOUT: SharedDataLayout = SharedDataLayout {
        boot_id: Some(0x2c4),
        interrupt_time: Some([0x8, 0xc, 0x10]),
    };

    fn pdb() -> PdbInfo {
        PdbInfo {
            guid: "11111111-2222-3333-4444-555555555555".into(),
            age: 1,
            path: "ntkrnlmp.pdb".into(),
        }
    }

    fn page(boot_id: u32, interrupt: u64) -> Vec<u8> {
        let mut page = vec![0u8; SHARED_DATA_BYTES];
        page[0x2c4..0x2c8].copy_from_slice(&boot_id.to_le_bytes());
        page[0x8..0xc].copy_from_slice(&(interrupt as u32).to_le_bytes());
        let high = ((interrupt >> 32) as u32).to_le_bytes();
        page[0xc..0x10].copy_from_slice(&high);
        page[0x10..0x14].copy_from_slice(&high);
        page
    }

    async fn identity(page: Option<Vec<u8>>, kern_base: u64) -> BootIdentity {
        let mut mem = FakeMemory::default();
        if let Some(page) = page {
            mem.map(KUSER_SHARED_DATA, page);
        }
        BootIdentity::read(&mut mem, kern_base, 0xfffff800_02000000, pdb())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_same_boot_later_is_the_same_boot() {
        let first = identity(Some(page(7, 5 << 32)), 0xfffff800_01000000).await;
        let later = identity(Some(page(7, 6 << 32)), 0xfffff800_01000000).await;
        assert_eq!(first.new_boot_in(&later, &LAYOUT), None);
    }

    #[tokio::test]
    async fn a_new_boot_id_is_a_new_boot_even_at_the_same_base() {
        let first = identity(Some(page(7, 5 << 32)), 0xfffff800_01000000).await;
        let later = identity(Some(page(8, 9 << 32)), 0xfffff800_01000000).await;
        let why = first.new_boot_in(&later, &LAYOUT).unwrap();
        assert!(why.contains("BootId went from 7 to 8"), "{why}");
    }

    #[tokio::test]
    async fn time_since_boot_going_back_is_a_new_boot_without_a_boot_id() {
        let layout = SharedDataLayout {
            boot_id: None,
            ..LAYOUT
        };
        let first = identity(Some(page(0, 5 << 32)), 0xfffff800_01000000).await;
        let later = identity(Some(page(0, 1 << 32)), 0xfffff800_01000000).await;
        let why = first.new_boot_in(&later, &layout).unwrap();
        assert!(why.contains("time since boot went back"), "{why}");
        // A time caught mid-update (High1Time ≠ High2Time) says nothing.
        let mut torn = page(0, 1 << 32);
        torn[0x10] ^= 0xff;
        let later = identity(Some(torn), 0xfffff800_01000000).await;
        assert_eq!(first.new_boot_in(&later, &layout), None);
    }

    #[tokio::test]
    async fn a_moved_kernel_or_another_build_is_a_new_boot_without_shared_data() {
        let first = identity(None, 0xfffff800_01000000).await;
        let moved = identity(None, 0xfffff800_05000000).await;
        assert!(first
            .new_boot_in(&moved, &LAYOUT)
            .unwrap()
            .contains("moved from 0xfffff80001000000 to 0xfffff80005000000"));
        let mut updated = identity(None, 0xfffff800_01000000).await;
        updated.kernel_pdb.age = 2;
        assert!(first
            .new_boot_in(&updated, &LAYOUT)
            .unwrap()
            .contains("another build"));
        assert_eq!(first.new_boot_in(&first.clone(), &LAYOUT), None);
    }
}
