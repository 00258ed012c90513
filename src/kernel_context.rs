//! What every command learns first after breaking in: the version block, the debugger data
//! block, the kernel's PDB (found through the symbol path from the RSDS record in target memory)
//! and the loaded modules, walked with the layout that PDB gives.

use std::sync::Arc;

use kdproto::api::Version;
use tracing::warn;

use crate::kernel::{self, Kdbg, ModuleList, PdbInfo};
use crate::session::{self, Error, Session};
use crate::symbols::{self, Pdb, Symbols};

/// The kernel as the host sees it while the target is stopped.
pub struct KernelContext {
    pub version: Version,
    pub kdbg: Kdbg,
    /// `PsLoadedModuleList` (from GetVersion, else KDBG).
    pub module_list_head: u64,
    /// The kernel's PDB: every structure layout the pull reads comes from here.
    pub nt: Arc<Pdb>,
    pub modules: ModuleList,
}

impl KernelContext {
    /// Reads the version block and KDBG, loads the kernel PDB, and walks the module list.
    pub async fn load(s: &mut Session, symbols: &Arc<Symbols>) -> session::Result<Self> {
        let version: Version = s.get_version().await?;
        let kdbg = kernel::find_kdbg(s, &version).await?;
        if kdbg.kern_base != version.kern_base {
            warn!(
                kdbg = format_args!("{:#x}", kdbg.kern_base),
                version = format_args!("{:#x}", version.kern_base),
                "KDBG and GetVersion disagree on the kernel base"
            );
        }
        let module_list_head = if version.ps_loaded_module_list != 0 {
            version.ps_loaded_module_list
        } else {
            kdbg.ps_loaded_module_list
        };
        let rsds = kernel::read_pdb_info(s, version.kern_base, 0)
            .await?
            .ok_or_else(|| {
                Error::TargetData(format!(
                    "the kernel image at {:#x} has no RSDS debug record: cannot find its PDB",
                    version.kern_base
                ))
            })?;
        let nt = load_pdb(symbols, rsds).await?;
        let layout = symbols::module_layout(&nt)
            .map_err(|e| Error::TargetData(format!("kernel symbols: {e}")))?;
        let modules = kernel::walk_modules(s, module_list_head, &layout).await?;
        Ok(Self {
            version,
            kdbg,
            module_list_head,
            nt,
            modules,
        })
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
