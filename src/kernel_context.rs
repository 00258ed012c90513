//! What every command learns first about the kernel: its build, the debugger data block, the
//! kernel's PDB (found through the symbol path from the RSDS record in target memory) and the
//! loaded modules, walked with the layout that PDB gives.
//!
//! Two sources give the starting facts: a live target's GetVersion reply, or a crash dump's
//! header (MinorVersion, PsLoadedModuleList, KdDebuggerDataBlock). Everything after them — KDBG's
//! kernel base, RSDS, the PDB, the module walk — is one path over the [`Memory`] trait.

use std::sync::Arc;

use kdproto::api::Version;
use tracing::warn;

use crate::dump::DumpHeader;
use crate::kernel::{self, Kdbg, KernelError, Memory, ModuleList, PdbInfo};
use crate::session::{self, Error, Session};
use crate::symbols::{self, Pdb, Symbols};

/// The kernel as the host sees it while the target is stopped (or as a dump froze it).
pub struct KernelContext {
    /// The build number (GetVersion's or the dump header's MinorVersion).
    pub build: u16,
    /// Where `nt` is loaded (GetVersion's KernBase; KDBG's KernBase for a dump).
    pub kern_base: u64,
    pub kdbg: Kdbg,
    /// `PsLoadedModuleList` (from GetVersion or the dump header, else KDBG).
    pub module_list_head: u64,
    /// The kernel's PDB: every structure layout the pull reads comes from here.
    pub nt: Arc<Pdb>,
    pub modules: ModuleList,
}

impl KernelContext {
    /// Reads the version block and KDBG of a stopped target, loads the kernel PDB, and walks
    /// the module list.
    pub async fn load(s: &mut Session, symbols: &Arc<Symbols>) -> session::Result<Self> {
        Ok(Self::load_live(s, symbols).await?.1)
    }

    /// [`KernelContext::load`], also giving the GetVersion reply it started from.
    pub async fn load_live(
        s: &mut Session,
        symbols: &Arc<Symbols>,
    ) -> session::Result<(Version, Self)> {
        let version: Version = s.get_version().await?;
        let kdbg = kernel::find_kdbg(s, &version).await?;
        if kdbg.kern_base != version.kern_base {
            warn!(
                kdbg = format_args!("{:#x}", kdbg.kern_base),
                version = format_args!("{:#x}", version.kern_base),
                "KDBG and GetVersion disagree on the kernel base"
            );
        }
        let facts = Facts {
            build: version.build(),
            kern_base: version.kern_base,
            module_list_head: version.ps_loaded_module_list,
        };
        let context = Self::from_kdbg(s, symbols, facts, kdbg).await?;
        Ok((version, context))
    }

    /// The same facts from a crash dump's `header`: its KDBG (KdDebuggerDataBlock, which the
    /// dump holds decoded) gives the kernel base that GetVersion gives a live host.
    pub async fn load_from_dump<M: Memory>(
        mem: &mut M,
        header: &DumpHeader,
        symbols: &Arc<Symbols>,
    ) -> session::Result<Self> {
        let address = header.kd_debugger_data_block;
        let kdbg = kernel::read_kdbg(mem, address).await.map_err(|e| {
            Error::TargetData(format!(
                "the dump header's KdDebuggerDataBlock ({address:#x}) does not lead to the \
                 debugger data block: {e}"
            ))
        })?;
        if header.ps_loaded_module_list != 0
            && kdbg.ps_loaded_module_list != 0
            && header.ps_loaded_module_list != kdbg.ps_loaded_module_list
        {
            warn!(
                header = format_args!("{:#x}", header.ps_loaded_module_list),
                kdbg = format_args!("{:#x}", kdbg.ps_loaded_module_list),
                "the dump header and KDBG disagree on PsLoadedModuleList"
            );
        }
        let facts = Facts {
            build: header.build,
            kern_base: kdbg.kern_base,
            module_list_head: header.ps_loaded_module_list,
        };
        Self::from_kdbg(mem, symbols, facts, kdbg).await
    }

    /// The shared rest: the kernel's RSDS record → its PDB → the module list.
    async fn from_kdbg<M: Memory>(
        mem: &mut M,
        symbols: &Arc<Symbols>,
        facts: Facts,
        kdbg: Kdbg,
    ) -> session::Result<Self> {
        let module_list_head = if facts.module_list_head != 0 {
            facts.module_list_head
        } else {
            kdbg.ps_loaded_module_list
        };
        let rsds = kernel::read_pdb_info(mem, facts.kern_base, 0)
            .await
            .map_err(|e| target_data("the kernel image", e))?
            .ok_or_else(|| {
                Error::TargetData(format!(
                    "the kernel image at {:#x} has no RSDS debug record: cannot find its PDB",
                    facts.kern_base
                ))
            })?;
        let nt = load_pdb(symbols, rsds).await?;
        let layout = symbols::module_layout(&nt)
            .map_err(|e| Error::TargetData(format!("kernel symbols: {e}")))?;
        let modules = kernel::walk_modules(mem, module_list_head, &layout)
            .await
            .map_err(|e| target_data("the loaded module list", e))?;
        Ok(Self {
            build: facts.build,
            kern_base: facts.kern_base,
            kdbg,
            module_list_head,
            nt,
            modules,
        })
    }
}

/// What the source (GetVersion or a dump header) says before any memory is read.
struct Facts {
    build: u16,
    kern_base: u64,
    /// 0 when the source does not say; KDBG's is used then.
    module_list_head: u64,
}

/// Memory that cannot be used is target data (exit 4); a failing session stays what it is.
fn target_data(what: &str, error: KernelError) -> Error {
    match error {
        KernelError::Session(e) => e,
        other => Error::TargetData(format!("{what}: {other}")),
    }
}

/// Loads a PDB off the async runtime: it may read large files or download from a symbol server.
pub async fn load_pdb(symbols: &Arc<Symbols>, rsds: PdbInfo) -> session::Result<Arc<Pdb>> {
    let symbols = Arc::clone(symbols);
    let name = rsds.file_name().to_string();
    tokio::task::spawn_blocking(move || symbols.load(&rsds))
        .await
        .map_err(|e| Error::TargetData(format!("loading {name} failed: {e}")))?
        .map_err(|e| Error::TargetData(format!("symbols for {name}: {e}")))
}
