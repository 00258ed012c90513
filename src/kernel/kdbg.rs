//! KDDEBUGGER_DATA64 ("KDBG"), found through GetVersion.DebuggerDataList (kd.md §4.1, §4.2).
//! Its header and field offsets are part of the debugger interface (wdbgexts.h), not private
//! kernel layout, so they live here rather than in `version_facts`.

use kdproto::api::{Version, DBGKD_VERS_FLAG_DATA};

use super::{le_u32, le_u64, read_exact, read_u64, KernelError, Memory, Result};

/// `KDBG` as a little-endian u32.
pub const KDBG_TAG: u32 = 0x4742_444B;
/// DBGKD_DEBUG_DATA_HEADER64: List (0x10), OwnerTag @0x10, Size @0x14.
pub const HEADER_LEN: usize = 0x18;
const OWNER_TAG: usize = 0x10;
const SIZE: usize = 0x14;
const KERN_BASE: usize = 0x18;
const BREAKPOINT_WITH_STATUS: usize = 0x20;
const PS_LOADED_MODULE_LIST: usize = 0x48;
/// KiBugcheckData, MmUnloadedDrivers and MmLastUnloadedDriver: addresses of those kernel
/// variables (kd.md §4.2), for a kernel PDB that lacks the symbols.
pub const KI_BUGCHECK_DATA: usize = 0x88;
pub const MM_UNLOADED_DRIVERS: usize = 0x220;
pub const MM_LAST_UNLOADED_DRIVER: usize = 0x228;
/// Largest Size accepted (the RS5 layout is 0x380).
const MAX_SIZE: u32 = 0x1000;
/// Blocks looked at on the debugger data list before giving up.
const MAX_BLOCKS: usize = 16;

/// The parts of KDBG the host uses now; `raw` keeps the whole block for later layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kdbg {
    /// Address of the block (its LIST_ENTRY64).
    pub address: u64,
    pub size: u32,
    pub kern_base: u64,
    pub breakpoint_with_status: u64,
    pub ps_loaded_module_list: u64,
    pub raw: Vec<u8>,
}

impl Kdbg {
    /// A u64 field at `offset`, if the block's Size covers it (kd.md §8 item 14).
    pub fn field_u64(&self, offset: usize) -> Option<u64> {
        (offset + 8 <= self.raw.len()).then(|| le_u64(&self.raw, offset))
    }
}

/// Follows DebuggerDataList to the block tagged `KDBG`. Flags.DATA is only a hint: other stubs
/// set it loosely (Xen's kdd always sets it), so the list address itself decides.
pub async fn find_kdbg<M: Memory>(mem: &mut M, version: &Version) -> Result<Kdbg> {
    let head = version.debugger_data_list;
    if head == 0 {
        return Err(KernelError::Invalid(
            if version.flags & DBGKD_VERS_FLAG_DATA == 0 {
                "GetVersion reports no debugger data list (Flags.DATA clear, DebuggerDataList 0)"
                    .to_string()
            } else {
                "GetVersion's DebuggerDataList is 0 although Flags.DATA is set".to_string()
            },
        ));
    }
    let mut entry = read_u64(mem, head, "KdpDebuggerDataListHead").await?;
    for _ in 0..MAX_BLOCKS {
        if entry == head || entry == 0 {
            break;
        }
        let header = read_exact(mem, entry, HEADER_LEN, "debugger data header").await?;
        if le_u32(&header, OWNER_TAG) == KDBG_TAG {
            return read_block(mem, entry, le_u32(&header, SIZE)).await;
        }
        entry = le_u64(&header, 0);
    }
    Err(KernelError::Invalid(format!(
        "no block tagged KDBG on the debugger data list at {head:#x}"
    )))
}

/// Reads the KDBG block at `address`, as a crash dump's header names it (KdDebuggerDataBlock).
pub async fn read_kdbg<M: Memory>(mem: &mut M, address: u64) -> Result<Kdbg> {
    let header = read_exact(mem, address, HEADER_LEN, "KDBG header").await?;
    let tag = le_u32(&header, OWNER_TAG);
    if tag != KDBG_TAG {
        return Err(KernelError::Invalid(format!(
            "the block at {address:#x} is tagged {tag:#010x}, not KDBG ({KDBG_TAG:#010x})"
        )));
    }
    read_block(mem, address, le_u32(&header, SIZE)).await
}

/// Reads the whole block tagged KDBG at `entry`, of header Size `size`.
async fn read_block<M: Memory>(mem: &mut M, entry: u64, size: u32) -> Result<Kdbg> {
    if !(HEADER_LEN as u32 + 0x38..=MAX_SIZE).contains(&size) {
        return Err(KernelError::Invalid(format!(
            "KDBG at {entry:#x} has an implausible Size {size:#x}"
        )));
    }
    let raw = read_exact(mem, entry, size as usize, "KDBG").await?;
    Ok(Kdbg {
        address: entry,
        size,
        kern_base: le_u64(&raw, KERN_BASE),
        breakpoint_with_status: le_u64(&raw, BREAKPOINT_WITH_STATUS),
        ps_loaded_module_list: le_u64(&raw, PS_LOADED_MODULE_LIST),
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::fake::FakeMemory;

    pub fn kdbg_block(at: u64, head: u64) -> Vec<u8> {
        let mut b = vec![0u8; 0x380];
        b[0..8].copy_from_slice(&head.to_le_bytes());
        b[8..16].copy_from_slice(&head.to_le_bytes());
        b[0x10..0x14].copy_from_slice(&KDBG_TAG.to_le_bytes());
        b[0x14..0x18].copy_from_slice(&0x380u32.to_le_bytes());
        b[0x18..0x20].copy_from_slice(&0xfffff800_00000000u64.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&(at + 0x9999).to_le_bytes());
        b[0x48..0x50].copy_from_slice(&0xfffff800_00123000u64.to_le_bytes());
        b
    }

    fn version(head: u64, flags: u16) -> Version {
        Version {
            flags,
            debugger_data_list: head,
            ..Version::default()
        }
    }

    #[tokio::test]
    async fn finds_the_block() {
        let (head, at) = (0xfffff800_00200000u64, 0xfffff800_00300000u64);
        let mut mem = FakeMemory::default();
        mem.map(head, [at.to_le_bytes(), at.to_le_bytes()].concat());
        mem.map(at, kdbg_block(at, head));
        let kdbg = find_kdbg(&mut mem, &version(head, 7)).await.unwrap();
        assert_eq!(kdbg.address, at);
        assert_eq!(kdbg.size, 0x380);
        assert_eq!(kdbg.kern_base, 0xfffff800_00000000);
        assert_eq!(kdbg.ps_loaded_module_list, 0xfffff800_00123000);
        assert_eq!(kdbg.field_u64(0x360), Some(0));
        assert_eq!(kdbg.field_u64(0x380), None);
    }

    #[tokio::test]
    async fn explains_missing_data() {
        let mut mem = FakeMemory::default();
        let err = find_kdbg(&mut mem, &version(0, 5)).await.unwrap_err();
        assert!(err.to_string().contains("Flags.DATA clear"), "{err}");
        let err = find_kdbg(&mut mem, &version(0, 7)).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("DebuggerDataList is 0 although Flags.DATA is set"),
            "{err}"
        );
        // Flags.DATA clear but a list address given: the address is followed all the same.
        let err = find_kdbg(&mut mem, &version(0x1000, 5)).await.unwrap_err();
        assert!(err.to_string().contains("KdpDebuggerDataListHead"), "{err}");
        let err = find_kdbg(&mut mem, &version(0x1000, 7)).await.unwrap_err();
        assert!(err.to_string().contains("KdpDebuggerDataListHead"), "{err}");
        // An empty list.
        mem.map(
            0x1000,
            [0x1000u64.to_le_bytes(), 0x1000u64.to_le_bytes()].concat(),
        );
        let err = find_kdbg(&mut mem, &version(0x1000, 7)).await.unwrap_err();
        assert!(err.to_string().contains("no block tagged KDBG"), "{err}");
    }

    #[tokio::test]
    async fn reads_the_block_a_dump_header_names() {
        let (head, at) = (0xfffff800_00200000u64, 0xfffff800_00300000u64);
        let mut mem = FakeMemory::default();
        mem.map(at, kdbg_block(at, head));
        let kdbg = read_kdbg(&mut mem, at).await.unwrap();
        assert_eq!(kdbg.kern_base, 0xfffff800_00000000);
        let err = read_kdbg(&mut mem, at + 8).await.unwrap_err();
        assert!(err.to_string().contains("not KDBG"), "{err}");
        let err = read_kdbg(&mut mem, 0x5000).await.unwrap_err();
        assert!(err.to_string().contains("KDBG header"), "{err}");
        let mut small = kdbg_block(at, head);
        small[0x14..0x18].copy_from_slice(&0x10u32.to_le_bytes());
        mem.map(at, small);
        let err = read_kdbg(&mut mem, at).await.unwrap_err();
        assert!(err.to_string().contains("implausible Size 0x10"), "{err}");
    }
}
