//! The neutral result of laying out a scenario: byte regions at virtual addresses plus the few
//! addresses the KD side of the simulator needs. Nothing here knows about the KD protocol; the
//! simulator's `SimMemory` maps [`MemoryImage::regions`] as they are.

use std::collections::BTreeMap;

/// Memory contents of a simulated Windows target, built from a scenario and the build's ISF.
#[derive(Debug, Clone, Default)]
pub struct MemoryImage {
    /// Mapped bytes by start virtual address. Regions never overlap; they need not be
    /// page-aligned (several small regions may share a page). Everything else is unmapped.
    pub regions: BTreeMap<u64, Vec<u8>>,
    /// Base of the kernel image (`ntoskrnl.exe`), i.e. `KDDEBUGGER_DATA64.KernBase`.
    pub kern_base: u64,
    /// Address of the `PsLoadedModuleList` head (GetVersion's `PsLoadedModuleList`).
    pub ps_loaded_module_list: u64,
    /// Address of `KdpDebuggerDataListHead` (GetVersion's `DebuggerDataList`); its Flink is the
    /// KDBG block.
    pub debugger_data_list: u64,
    /// Address of `nt!RtlpBreakWithStatusInstruction` (the PC reported at a break-in).
    pub break_pc: u64,
    /// Windows build number (7601, 19041, 22000).
    pub build: u32,
    /// Addresses of interesting symbols: every manifest symbol of the kernel as `Name` and
    /// `nt!Name`, every driver symbol as `module!Name` (module = file name without extension),
    /// and a few layout anchors under `sim!…` (e.g. `sim!VfPoolTracesArray`).
    pub symbols: BTreeMap<String, u64>,
    /// The PML4 entry that maps the page tables (`nt!MmPteBase` and the KDBG's `PteBase` agree
    /// with it); no region lies in its 512 GiB window.
    pub self_map_slot: u16,
    /// Where the kernel keeps what the machine rather than the scenario decides.
    pub runtime: RuntimeSites,
    /// The stop is a bug check: `KiBugCheckData` (code, parameters 1–4), which a crash dump's
    /// header repeats. `None`: an ordinary break-in.
    pub bugcheck: Option<[u64; 5]>,
}

/// Addresses of the kernel variables that depend on the running machine: the processor count (a
/// scenario describes one CPU; the machine may have more) and the clock. The layout writes the
/// one-CPU values; the machine rewrites them as Windows' boot code and clock interrupt do.
#[derive(Debug, Clone, Default)]
pub struct RuntimeSites {
    /// ULONG variables holding the processor count (`nt!KeNumberProcessors`,
    /// `KUSER_SHARED_DATA.ActiveProcessorCount`).
    pub processor_counts: Vec<u64>,
    /// `KdVersionBlock.Flags` (USHORT; `DBGKD_VERS_FLAG_MP` is set with more than one CPU).
    pub version_flags: Option<u64>,
    /// `KUSER_SHARED_DATA.SystemTime` (a `_KSYSTEM_TIME`): LowPart, High1Time, High2Time.
    pub system_time: Option<[u64; 3]>,
    /// `KUSER_SHARED_DATA.BootId` (ULONG, Windows 8+): which boot of the machine this is.
    pub boot_id: Option<u64>,
}

impl MemoryImage {
    /// The region containing `addr`, with the offset of `addr` in it.
    pub fn region_at(&self, addr: u64) -> Option<(u64, &Vec<u8>)> {
        let (&start, bytes) = self.regions.range(..=addr).next_back()?;
        (addr - start < bytes.len() as u64).then_some((start, bytes))
    }

    /// Reads `len` bytes at `addr`; `None` if any byte is unmapped. Reads may span adjacent
    /// regions.
    pub fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        let mut cur = addr;
        while out.len() < len {
            let (start, bytes) = self.region_at(cur)?;
            let off = (cur - start) as usize;
            let take = (len - out.len()).min(bytes.len() - off);
            out.extend_from_slice(&bytes[off..off + take]);
            cur += take as u64;
        }
        Some(out)
    }

    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        self.read(addr, 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    }

    pub fn read_u32(&self, addr: u64) -> Option<u32> {
        self.read(addr, 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    }

    pub fn read_u16(&self, addr: u64) -> Option<u16> {
        self.read(addr, 2)
            .map(|b| u16::from_le_bytes(b.try_into().unwrap()))
    }

    /// Total mapped bytes.
    pub fn mapped_bytes(&self) -> u64 {
        self.regions.values().map(|v| v.len() as u64).sum()
    }
}
