//! What every x64 Windows kernel keeps beside Driver Verifier, laid out from the ISF: the state
//! independent memory readers look for before they read anything else.
//!
//! * `KUSER_SHARED_DATA` at its fixed address: Volatility 3 accepts a page-table root only if
//!   this page translates and its `NtMajorVersion` is a Windows one (`framework/automagic/
//!   windows.py`, `Intel64LayerCheck`); `windows.info` prints its time, system root and versions.
//! * `nt!KdVersionBlock`, the `DBGKD_GET_VERSION64` GetVersion copies (kd.md §3.10), which
//!   debuggers find by scanning nt's data; `nt!KeNumberProcessors`; `nt!CmNtCSDVersion` (the
//!   service pack the KDBG points at).
//! * `nt!MmPteBase`, the start of the page tables' self-map window
//!   ([`crate::sim::machine::physical`]), on kernels that have the variable (Windows 10 1607+);
//!   the KDBG's `PteBase` is written beside the other KDBG fields from
//!   [`SystemLayout::pte_base`].
//!
//! Values the running machine decides (processor count, clock) are written for one CPU and no
//! time here, and their addresses handed to the machine ([`RuntimeSites`]).

use std::collections::BTreeSet;

use super::image::RuntimeSites;
use super::layout::B;
use super::{Result, ScenarioError};
use crate::sim::machine::physical::{
    self, pml4_slot, FIXED_SELF_MAP_SLOT, RANDOMIZED_SELF_MAP_SLOTS,
    SELF_MAP_RANDOMIZED_SINCE_BUILD,
};

/// `KUSER_SHARED_DATA`'s kernel address on x64, the same on every Windows version (Volatility 3
/// `Intel64LayerCheck.KUSER_KERNEL_SPACE_ADDR`; Microsoft's 2022 "Randomizing the
/// KUSER_SHARED_DATA structure on Windows" moved only the kernel's *writable* alias, the
/// read-only mapping here stays).
pub const KUSER_SHARED_DATA: u64 = 0xFFFF_F780_0000_0000;
/// The page it occupies.
const KUSER_PAGE: u64 = 0x1000;
/// `NtSystemRoot` of a default installation.
const SYSTEM_ROOT: &str = r"C:\Windows";
/// `IMAGE_FILE_MACHINE_AMD64` (winnt.h): KUSER's `ImageNumberLow`/`High`.
const IMAGE_FILE_MACHINE_AMD64: u64 = 0x8664;
/// `PROCESSOR_ARCHITECTURE_AMD64` (winnt.h): KUSER's `NativeProcessorArchitecture` (10+).
const PROCESSOR_ARCHITECTURE_AMD64: u64 = 9;

/// `NtMajorVersion.NtMinorVersion` of a build (Microsoft, "Operating System Version": Vista
/// 6.0, 7 6.1, 8 6.2, 8.1 6.3, 10 and 11 10.0; first builds 6000, 7600, 9200, 9600, 10240).
pub fn nt_version(build: u32) -> (u32, u32) {
    match build {
        ..7600 => (6, 0),
        7600..9200 => (6, 1),
        9200..9600 => (6, 2),
        9600..10240 => (6, 3),
        _ => (10, 0),
    }
}

/// `CmNtCSDVersion`: the service pack as the registry's `CSDVersion` (major << 8): 0x100 on
/// Windows 7 SP1 (build 7601), none on later releases. Volatility's `get_csdversion` reads it
/// back as `value >> 8`.
pub fn csd_version(build: u32) -> u64 {
    if build == 7601 {
        0x100
    } else {
        0
    }
}

/// What the kernel's identity is, for the version block.
pub(super) struct KernelAnchors {
    pub build: u32,
    pub kern_base: u64,
    pub ps_loaded_module_list: u64,
    pub debugger_data_list: u64,
    /// Addresses of the kernel's globals (`None` where the fixture has no such symbol).
    pub kd_version_block: Option<u64>,
    pub ke_number_processors: Option<u64>,
    pub cm_nt_csd_version: Option<u64>,
    pub mm_pte_base: Option<u64>,
}

/// What [`lay_out`] decided.
pub(super) struct SystemLayout {
    pub self_map_slot: u16,
    /// The first PTE of the self-map window (written to `MmPteBase` where it exists).
    pub pte_base: u64,
    pub runtime: RuntimeSites,
}

/// Maps `KUSER_SHARED_DATA` and fills the version block and the other globals. `taken` are the
/// PML4 slots other memory uses (pool, per-CPU pages) besides `b`'s regions; `requested` is the
/// scenario's `self_map_slot`, `seed` what a default slot is derived from.
pub(super) fn lay_out(
    b: &mut B,
    kernel: &KernelAnchors,
    requested: Option<u64>,
    seed: &[u8],
    mut taken: BTreeSet<u16>,
) -> Result<SystemLayout> {
    let isf = b.isf;
    let mut runtime = RuntimeSites::default();

    // ---- KUSER_SHARED_DATA
    let ku = "_KUSER_SHARED_DATA";
    let at = KUSER_SHARED_DATA;
    b.mem.map(at, vec![0; KUSER_PAGE as usize])?;
    let (major, minor) = nt_version(kernel.build);
    b.set(at, ku, "NtMajorVersion", major.into())?;
    b.set(at, ku, "NtMinorVersion", minor.into())?;
    b.set_opt(at, ku, "NtBuildNumber", kernel.build.into())?;
    let product = isf.enum_value("_NT_PRODUCT_TYPE", "NtProductWinNt")?;
    b.set(at, ku, "NtProductType", product)?;
    b.set(at, ku, "ProductTypeIsValid", 1)?;
    b.set(at, ku, "ImageNumberLow", IMAGE_FILE_MACHINE_AMD64)?;
    b.set(at, ku, "ImageNumberHigh", IMAGE_FILE_MACHINE_AMD64)?;
    b.set_opt(
        at,
        ku,
        "NativeProcessorArchitecture",
        PROCESSOR_ARCHITECTURE_AMD64,
    )?;
    for (i, unit) in SYSTEM_ROOT.encode_utf16().enumerate() {
        b.set(at, ku, &format!("NtSystemRoot[{i}]"), unit.into())?;
    }
    b.set(at, ku, "ActiveProcessorCount", 1)?;
    runtime
        .processor_counts
        .push(at + isf.offset(ku, "ActiveProcessorCount")?);
    let mut time = [0; 3];
    for (slot, part) in time.iter_mut().zip(["LowPart", "High1Time", "High2Time"]) {
        let path = format!("SystemTime.{part}");
        b.set(at, ku, &path, 0)?;
        *slot = at + isf.offset(ku, &path)?;
    }
    runtime.system_time = Some(time);
    // The first boot; a reboot counts on (`Machine::set_boot_id`). Windows 7's page has no BootId.
    if isf.has_field(ku, "BootId") {
        b.set(at, ku, "BootId", 1)?;
        runtime.boot_id = Some(at + isf.offset(ku, "BootId")?);
    }

    // ---- KdVersionBlock: what GetVersion answers, one CPU.
    if let Some(at) = kernel.kd_version_block {
        let v = crate::sim::machine::kernel::kd_version(
            u16::try_from(kernel.build).unwrap_or(u16::MAX),
            1,
            kernel.kern_base,
            kernel.ps_loaded_module_list,
            kernel.debugger_data_list,
        );
        let vt = "_DBGKD_GET_VERSION64";
        for (field, value) in [
            ("MajorVersion", u64::from(v.major_version)),
            ("MinorVersion", v.minor_version.into()),
            ("ProtocolVersion", v.protocol_version.into()),
            ("KdSecondaryVersion", v.kd_secondary_version.into()),
            ("Flags", v.flags.into()),
            ("MachineType", v.machine_type.into()),
            ("MaxPacketType", v.max_packet_type.into()),
            ("MaxStateChange", v.max_state_change.into()),
            ("MaxManipulate", v.max_manipulate.into()),
            ("Simulation", v.simulation.into()),
            ("KernBase", v.kern_base),
            ("PsLoadedModuleList", v.ps_loaded_module_list),
            ("DebuggerDataList", v.debugger_data_list),
        ] {
            b.set(at, vt, field, value)?;
        }
        runtime.version_flags = Some(at + isf.offset(vt, "Flags")?);
    }

    // ---- scalar globals (ULONG, as the generator declares them)
    if let Some(at) = kernel.ke_number_processors {
        b.mem.write(at, &1u32.to_le_bytes())?;
        runtime.processor_counts.push(at);
    }
    if let Some(at) = kernel.cm_nt_csd_version {
        b.mem
            .write(at, &(csd_version(kernel.build) as u32).to_le_bytes())?;
    }

    // ---- the self-map slot, now that every region is placed
    taken.extend(b.mem.regions.iter().flat_map(|(&start, bytes)| {
        let last = start + (bytes.len() as u64).max(1) - 1;
        slots_between(start, last)
    }));
    let self_map_slot = choose_slot(kernel.build, requested, seed, &taken)?;
    let pte_base = physical::pte_base(self_map_slot);
    if let Some(at) = kernel.mm_pte_base {
        b.mem.write(at, &pte_base.to_le_bytes())?;
    }
    Ok(SystemLayout {
        self_map_slot,
        pte_base,
        runtime,
    })
}

/// PML4 slots of the canonical addresses `first..=last`.
pub(super) fn slots_between(first: u64, last: u64) -> impl Iterator<Item = u16> {
    let (a, z) = (pml4_slot(first), pml4_slot(last));
    let wraps = last.wrapping_sub(first) >> 39 >= 0x1FF;
    let range: Vec<u16> = if wraps || a > z {
        (0..=0x1FF).collect()
    } else {
        (a..=z).collect()
    };
    range.into_iter()
}

fn choose_slot(
    build: u32,
    requested: Option<u64>,
    seed: &[u8],
    taken: &BTreeSet<u16>,
) -> Result<u16> {
    let Some(requested) = requested else {
        return physical::default_self_map_slot(build, seed, taken).ok_or_else(|| {
            ScenarioError::Invalid("no PML4 slot is free for the page tables' self-map".into())
        });
    };
    let slot = u16::try_from(requested).unwrap_or(u16::MAX);
    if build < SELF_MAP_RANDOMIZED_SINCE_BUILD && slot != FIXED_SELF_MAP_SLOT {
        return Err(ScenarioError::Invalid(format!(
            "kernel.self_map_slot {requested:#x}: build {build} predates Windows 10 1607, whose \
             kernels always use {FIXED_SELF_MAP_SLOT:#x}"
        )));
    }
    if !RANDOMIZED_SELF_MAP_SLOTS.contains(&slot) {
        return Err(ScenarioError::Invalid(format!(
            "kernel.self_map_slot {requested:#x} is outside {:#x}–{:#x}",
            RANDOMIZED_SELF_MAP_SLOTS.start(),
            RANDOMIZED_SELF_MAP_SLOTS.end()
        )));
    }
    if taken.contains(&slot) {
        return Err(ScenarioError::Invalid(format!(
            "kernel.self_map_slot {requested:#x}: the scenario maps memory in that slot's 512 GiB \
             ({:#x}…)",
            physical::pte_base(slot)
        )));
    }
    Ok(slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_the_fixture_builds() {
        assert_eq!(nt_version(7601), (6, 1));
        assert_eq!(nt_version(9600), (6, 3));
        assert_eq!(nt_version(19041), (10, 0));
        assert_eq!(nt_version(22000), (10, 0));
        assert_eq!(csd_version(7601), 0x100);
        assert_eq!(csd_version(19041), 0);
    }

    #[test]
    fn slot_choice_rules() {
        let taken = BTreeSet::from([0x1F0, 0x180]);
        assert_eq!(choose_slot(7601, None, b"x", &taken).unwrap(), 0x1ED);
        assert_eq!(choose_slot(7601, Some(0x1ED), b"x", &taken).unwrap(), 0x1ED);
        assert!(choose_slot(7601, Some(0x1A3), b"x", &taken).is_err());
        assert_eq!(
            choose_slot(19041, Some(0x1A3), b"x", &taken).unwrap(),
            0x1A3
        );
        assert!(choose_slot(19041, Some(0x1F0), b"x", &taken).is_err());
        assert!(choose_slot(19041, Some(0x1FF), b"x", &taken).is_err());
        assert!(choose_slot(19041, Some(0x0FF), b"x", &taken).is_err());
        let default = choose_slot(19041, None, b"x", &taken).unwrap();
        assert!(!taken.contains(&default) && default != 0x1ED);
    }

    #[test]
    fn slots_of_ranges() {
        let kernel = 0xffff_f803_1240_0000u64;
        assert_eq!(
            slots_between(kernel, kernel + 0xfff).collect::<Vec<_>>(),
            [0x1F0]
        );
        let edge = 0xffff_f880_0000_0000u64;
        assert_eq!(
            slots_between(edge - 0x1000, edge).collect::<Vec<_>>(),
            [0x1F0, 0x1F1]
        );
    }
}
