//! Why the target stopped, when it was a bug check, and the drivers that are gone
//! (spec stops-and-unloads.md): `KiBugCheckData` (or the dump header's copy), Driver
//! Verifier's unload-time leak check 0xC4/0x62 decoded, and the kernel's unloaded-driver list
//! (`MmUnloadedDrivers`), read bounded and only when a pull needs it.

use crate::kernel::{self, kdbg, Memory};
use crate::kernel_context::KernelContext;

use super::error::{Result, VerifierError};
use super::facts;
use super::layout::Nt;
use super::model::{BugCheckReport, UnloadedModule};

/// Longest unloaded-driver name accepted, in bytes (a file name has at most 255 characters).
const MAX_NAME_BYTES: usize = 2 * 255;

/// A bug check: the code and parameters 1–4.
pub type BugCheckData = [u64; facts::BUGCHECK_DATA_VALUES];

/// A kernel variable by name from the kernel's symbols, else the address the KDBG gives for it
/// (the fixture kernels' PDBs, like stripped public ones, may lack the symbol).
fn variable(
    nt: &Nt<'_>,
    ctx: &KernelContext,
    name: &str,
    kdbg_offset: usize,
) -> Result<Option<u64>> {
    if let Some(address) = nt.try_symbol(name)? {
        return Ok(Some(address));
    }
    Ok(ctx
        .kdbg
        .as_ref()
        .and_then(|block| block.field_u64(kdbg_offset))
        .filter(|&address| address != 0))
}

/// `KiBugCheckData` of a stopped kernel: `None` when no bug check is recorded (code 0) or the
/// kernel names no such variable.
pub async fn read_live<M: Memory>(
    mem: &mut M,
    nt: &Nt<'_>,
    ctx: &KernelContext,
) -> Result<Option<BugCheckData>> {
    let Some(address) = variable(nt, ctx, "KiBugCheckData", kdbg::KI_BUGCHECK_DATA)? else {
        return Ok(None);
    };
    let bytes = kernel::read_exact(
        mem,
        address,
        8 * facts::BUGCHECK_DATA_VALUES,
        "KiBugCheckData",
    )
    .await?;
    let mut data = [0u64; facts::BUGCHECK_DATA_VALUES];
    for (k, value) in data.iter_mut().enumerate() {
        *value = u64::from_le_bytes(bytes[8 * k..8 * k + 8].try_into().expect("8 bytes"));
    }
    Ok((data[0] != 0).then_some(data))
}

/// Whether `data` is Driver Verifier's unload-time leak check (0xC4, parameter 1 = 0x62).
pub fn is_leak_on_unload(data: &BugCheckData) -> bool {
    data[0] == facts::BUGCHECK_DRIVER_VERIFIER_DETECTED_VIOLATION
        && data[1] == facts::VERIFIER_POOL_LEAK_ON_UNLOAD
}

/// The report's view of a bug check; for 0xC4/0x62, the driver named by parameter 2 (a
/// `UNICODE_STRING`) when it can be read.
pub async fn describe<M: Memory>(
    mem: &mut M,
    nt: &Nt<'_>,
    data: &BugCheckData,
    source: &str,
    problems: &mut Vec<String>,
) -> Result<BugCheckReport> {
    let mut report = BugCheckReport {
        code: data[0],
        name: facts::bugcheck_name(data[0]).map(str::to_string),
        parameters: [data[1], data[2], data[3], data[4]].map(|p| format!("{p:#x}")),
        source: source.to_string(),
        meaning: None,
        driver: None,
        verifier_data: None,
        not_freed: None,
        found: None,
    };
    if is_leak_on_unload(data) {
        report.meaning =
            Some("a driver has forgotten to free its pool allocations prior to unloading".into());
        match super::drivers::read_unicode(mem, nt, data[2]).await {
            Ok(name) => report.driver = Some(name),
            Err(VerifierError::Session(e)) => return Err(VerifierError::Session(e)),
            Err(e) => problems.push(format!(
                "bug check 0xC4/0x62: the driver name at parameter 2 ({:#x}) could not be read: {e}",
                data[2]
            )),
        }
        report.verifier_data = Some(data[3]);
        report.not_freed = Some(data[4]);
    }
    Ok(report)
}

/// The unloaded-driver list, newest first: every used slot of the `MmUnloadedDrivers` array
/// (facts::UNLOADED_DRIVERS_ENTRIES records, read at once). Empty when the kernel has none
/// (the array is allocated at the first unload). A list that cannot be right — an index past
/// the array, a name or range no driver has — is an error that says what, never a long walk.
pub async fn read_unloaded<M: Memory>(
    mem: &mut M,
    nt: &Nt<'_>,
    ctx: &KernelContext,
) -> Result<Vec<UnloadedModule>> {
    let corrupt = |address: u64, why: String| VerifierError::Corrupt {
        what: "MmUnloadedDrivers".into(),
        address,
        why,
    };
    let Some(pointer) = variable(nt, ctx, "MmUnloadedDrivers", kdbg::MM_UNLOADED_DRIVERS)? else {
        return Ok(Vec::new());
    };
    let Some(last_at) = variable(
        nt,
        ctx,
        "MmLastUnloadedDriver",
        kdbg::MM_LAST_UNLOADED_DRIVER,
    )?
    else {
        return Ok(Vec::new());
    };
    let array = kernel::read_u64(mem, pointer, "MmUnloadedDrivers").await?;
    if array == 0 {
        return Ok(Vec::new());
    }
    if !facts::is_kernel_address(array) {
        return Err(corrupt(
            pointer,
            format!("it points at {array:#x}, not kernel memory"),
        ));
    }
    let last = super::layout::read_u32(mem, last_at, "MmLastUnloadedDriver").await?;
    let entries = facts::UNLOADED_DRIVERS_ENTRIES;
    if u64::from(last) > entries {
        return Err(corrupt(
            last_at,
            format!("MmLastUnloadedDriver is {last}, past the array's {entries} records"),
        ));
    }
    let size = facts::UNLOADED_DRIVER_SIZE;
    let bytes =
        kernel::read_exact(mem, array, (entries * size) as usize, "MmUnloadedDrivers").await?;
    let u64_at = |k: u64, field: u64| {
        let at = (k * size + field) as usize;
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
    };
    let mut out = Vec::new();
    // Newest first: the slot before MmLastUnloadedDriver, backwards around the array.
    for back in 1..=entries {
        let k = (u64::from(last) + entries - back) % entries;
        let record = array + k * size;
        let name_word = u64_at(k, facts::UNLOADED_DRIVER_NAME);
        let length = (name_word & 0xFFFF) as usize;
        let buffer = u64_at(k, facts::UNLOADED_DRIVER_NAME + 8);
        if length == 0 && buffer == 0 {
            continue; // an unused slot
        }
        let (start, end) = (
            u64_at(k, facts::UNLOADED_DRIVER_START),
            u64_at(k, facts::UNLOADED_DRIVER_END),
        );
        if !facts::is_kernel_address(start)
            || end <= start
            || end - start > facts::MAX_UNLOADED_RANGE
        {
            return Err(corrupt(
                record,
                format!("record {k} spans {start:#x}..{end:#x}, not a driver's range"),
            ));
        }
        let maximum = ((name_word >> 16) & 0xFFFF) as usize;
        if length > MAX_NAME_BYTES || length > maximum || length % 2 != 0 {
            return Err(corrupt(
                record,
                format!(
                    "record {k}'s name is {length} bytes (maximum {maximum}), not a driver's name"
                ),
            ));
        }
        let name = kernel::read_utf16(mem, buffer, length, MAX_NAME_BYTES, "unloaded driver name")
            .await
            .map_err(|e| match e {
                kernel::KernelError::Session(e) => VerifierError::Session(e),
                e => corrupt(record, format!("record {k}'s name: {e}")),
            })?;
        out.push(UnloadedModule {
            name,
            start,
            end,
            time: u64_at(k, facts::UNLOADED_DRIVER_TIME),
        });
    }
    Ok(out)
}
