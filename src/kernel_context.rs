//! What every command learns first about the kernel: its build, its base, the kernel's symbols
//! (its PDB, found through the symbol path from the RSDS record in target memory, or else its
//! ISF table from a symbol pack), the loaded modules walked with the layout they give, and —
//! when one can be found — the debugger data block (KDBG).
//!
//! Two sources give the starting facts: a live target's GetVersion reply (build, KernBase,
//! PsLoadedModuleList), or a crash dump's header (build, PsLoadedModuleList, KdDebuggerDataBlock,
//! whose KernBase is the kernel base). Neither path *needs* KDBG: targets that are not Windows'
//! own stub may report no debugger data list, and a machine booted without a debugger keeps the
//! block encoded (kd.md §4.1, stops-and-unloads.md §4). Without it the live path goes on from
//! GetVersion, the dump path takes the kernel base from the first entry of PsLoadedModuleList,
//! and both look for the block at the kernel PDB's `KdDebuggerDataBlock` for `info`.

use std::sync::Arc;

use kdproto::api::Version;
use serde::Serialize;
use tracing::{info, warn};

use crate::image::MachineFacts;
use crate::kernel::{self, Kdbg, KernelError, Memory, ModuleList, PdbInfo};
use crate::session::{self, Error, Session};
use crate::symbols::{self, ModuleSymbols, Symbols};

/// Where the KDBG block was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KdbgSource {
    /// GetVersion's DebuggerDataList (kd.md §4.1).
    DebuggerDataList,
    /// The crash dump header's KdDebuggerDataBlock.
    DumpHeader,
    /// The kernel PDB's `KdDebuggerDataBlock` symbol.
    KernelPdb,
}

impl KdbgSource {
    pub fn describe(self) -> &'static str {
        match self {
            Self::DebuggerDataList => "GetVersion's DebuggerDataList",
            Self::DumpHeader => "the dump header's KdDebuggerDataBlock",
            Self::KernelPdb => "nt!KdDebuggerDataBlock",
        }
    }
}

/// The kernel as the host sees it while the target is stopped (or as a dump froze it).
pub struct KernelContext {
    /// The build number (GetVersion's or the dump header's MinorVersion).
    pub build: u16,
    /// Where `nt` is loaded (GetVersion's KernBase; for a dump KDBG's KernBase, else the first
    /// module's DllBase).
    pub kern_base: u64,
    /// The debugger data block, when one was found; nothing the pull reads depends on it.
    pub kdbg: Option<Kdbg>,
    pub kdbg_source: Option<KdbgSource>,
    /// Why the sources tried before (or instead of) `kdbg_source` gave no block, in order.
    pub kdbg_problems: Vec<String>,
    /// `PsLoadedModuleList` (from GetVersion or the dump header, else KDBG, else the kernel PDB).
    pub module_list_head: u64,
    /// The kernel's symbols (its PDB, or an ISF table): every structure layout the pull reads
    /// comes from here.
    pub nt: ModuleSymbols,
    pub modules: ModuleList,
    /// Things the target reported that this host worked around (also logged as warnings).
    pub warnings: Vec<String>,
}

/// A live kernel identified in a stop, before its PDB is loaded
/// ([`KernelContext::identify_live`]); [`KernelContext::from_live`] goes on in the same stop.
pub struct LiveKernel {
    /// The GetVersion reply.
    pub version: Version,
    /// The kernel image's RSDS record: which PDB to find.
    pub rsds: PdbInfo,
    facts: Facts,
    search: KdbgSearch,
}

impl LiveKernel {
    /// Where `nt` is loaded (GetVersion's KernBase, else KDBG's).
    pub fn kern_base(&self) -> u64 {
        self.facts.kern_base
    }
}

/// What the KDBG search has found so far.
struct KdbgSearch {
    found: Option<(Kdbg, KdbgSource)>,
    problems: Vec<String>,
    /// Addresses already read as a KDBG block (not read again through the PDB symbol).
    tried: Vec<u64>,
    /// Whether GetVersion's debugger data list was looked at (live targets only).
    listed_searched: bool,
}

impl KdbgSearch {
    fn new() -> Self {
        Self {
            found: None,
            problems: Vec::new(),
            tried: Vec::new(),
            listed_searched: false,
        }
    }

    /// Records the outcome of one source; a failing link is an error, anything else a problem.
    fn record(
        &mut self,
        result: kernel::Result<Kdbg>,
        source: KdbgSource,
        problem: impl FnOnce(KernelError) -> String,
    ) -> session::Result<()> {
        match result {
            Ok(kdbg) => self.found = Some((kdbg, source)),
            Err(KernelError::Session(e)) => return Err(e),
            Err(e) => self.problems.push(problem(e)),
        }
        Ok(())
    }

    fn kdbg(&self) -> Option<&Kdbg> {
        self.found.as_ref().map(|(kdbg, _)| kdbg)
    }
}

impl KernelContext {
    /// Reads the version block of a stopped target, loads the kernel PDB, walks the module list
    /// and looks for KDBG.
    pub async fn load(s: &mut Session, symbols: &Arc<Symbols>) -> session::Result<Self> {
        Ok(Self::load_live(s, symbols).await?.1)
    }

    /// [`KernelContext::load`], also giving the GetVersion reply it started from.
    pub async fn load_live(
        s: &mut Session,
        symbols: &Arc<Symbols>,
    ) -> session::Result<(Version, Self)> {
        let live = Self::identify_live(s).await?;
        let nt = load_symbols(symbols, live.rsds.clone()).await?;
        Self::from_live(s, live, nt).await
    }

    /// What a stopped target tells about its kernel before any symbol is needed: GetVersion,
    /// the kernel base (GetVersion's, else KDBG's) and the kernel's RSDS record, which names
    /// the PDB to find.
    pub async fn identify_live(s: &mut Session) -> session::Result<LiveKernel> {
        let version: Version = s.get_version().await?;
        let mut warnings = Vec::new();
        if let Some(warning) = kernel::arch::check_x64(&version)? {
            warn!("{warning}");
            warnings.push(warning);
        }
        let mut search = KdbgSearch::new();
        // Only a GetVersion without a kernel base needs KDBG now; otherwise the search waits for
        // the stop that reads (`from_live`), so a stop that only identifies the kernel is short.
        let (kern_base, kern_base_from) = if version.kern_base != 0 {
            (version.kern_base, "GetVersion's KernBase")
        } else {
            search_debugger_data_list(s, &version, &mut search).await?;
            match search.kdbg() {
                Some(kdbg) if kdbg.kern_base != 0 => (kdbg.kern_base, "KDBG's KernBase"),
                _ => {
                    return Err(Error::TargetData(format!(
                        "GetVersion's KernBase is 0 and no KDBG gives the kernel base ({})",
                        search.problems.join("; ")
                    )))
                }
            }
        };
        let facts = Facts {
            build: version.build(),
            kern_base,
            kern_base_from,
            module_list_head: version.ps_loaded_module_list,
            warnings,
        };
        let rsds = read_kernel_rsds(s, &facts).await?;
        Ok(LiveKernel {
            version,
            rsds,
            facts,
            search,
        })
    }

    /// The rest of [`KernelContext::load_live`] in the same stop as `live`, with the kernel's
    /// PDB at hand: KDBG (through GetVersion's debugger data list, then the PDB) and the module
    /// list.
    pub async fn from_live(
        s: &mut Session,
        live: LiveKernel,
        nt: ModuleSymbols,
    ) -> session::Result<(Version, Self)> {
        let LiveKernel {
            version,
            mut facts,
            mut search,
            ..
        } = live;
        if !search.listed_searched {
            search_debugger_data_list(s, &version, &mut search).await?;
            if let Some(kdbg) = search.kdbg() {
                if kdbg.kern_base != facts.kern_base {
                    let warning = format!(
                        "KDBG ({:#x}) and GetVersion ({:#x}) disagree on the kernel base; \
                         using GetVersion's",
                        kdbg.kern_base, facts.kern_base
                    );
                    warn!("{warning}");
                    facts.warnings.push(warning);
                }
            }
        }
        let context = Self::with_pdb(s, nt, facts, search).await?;
        Ok((version, context))
    }

    /// The same facts from a crash dump's `header`: its KDBG (KdDebuggerDataBlock) gives the
    /// kernel base that GetVersion gives a live host; when the block is unusable (kept encoded,
    /// unreadable), the first entry of PsLoadedModuleList does.
    pub async fn load_from_dump<M: Memory>(
        mem: &mut M,
        header: &MachineFacts,
        symbols: &Arc<Symbols>,
    ) -> session::Result<Self> {
        let address = header.kd_debugger_data_block;
        let mut search = KdbgSearch::new();
        let mut warnings = Vec::new();
        if address == 0 && header.kern_base != 0 {
            search
                .problems
                .push("the image names no KdDebuggerDataBlock".into());
        } else if address == 0 {
            search
                .problems
                .push("the dump header's KdDebuggerDataBlock is 0".into());
        } else {
            search.tried.push(address);
            let read = kernel::read_kdbg(mem, address).await;
            search.record(read, KdbgSource::DumpHeader, |e| {
                format!(
                    "the dump header's KdDebuggerDataBlock ({address:#x}) does not lead to the \
                     debugger data block: {e}"
                )
            })?;
        }
        if let Some(kdbg) = search.kdbg() {
            if header.ps_loaded_module_list != 0
                && kdbg.ps_loaded_module_list != 0
                && header.ps_loaded_module_list != kdbg.ps_loaded_module_list
            {
                let warning = format!(
                    "the dump header ({:#x}) and KDBG ({:#x}) disagree on PsLoadedModuleList; \
                     using the header's",
                    header.ps_loaded_module_list, kdbg.ps_loaded_module_list
                );
                warn!("{warning}");
                warnings.push(warning);
            }
        }
        let mut first = None;
        let (kern_base, kern_base_from) = match search.kdbg() {
            Some(kdbg) if kdbg.kern_base != 0 => (kdbg.kern_base, "KDBG's KernBase"),
            _ if header.kern_base != 0 => (header.kern_base, "the image scan"),
            _ => {
                let image = first_image_of_dump(mem, header, &search.problems).await?;
                let note = format!(
                    "{}; the kernel base {:#x} comes from the first entry of PsLoadedModuleList",
                    search.problems.join("; "),
                    image.base
                );
                info!("{note}");
                let base = image.base;
                first = Some(image);
                (base, "the first module entry")
            }
        };
        let facts = Facts {
            build: header.build,
            kern_base,
            kern_base_from,
            module_list_head: header.ps_loaded_module_list,
            warnings,
        };
        let rsds = read_kernel_rsds(mem, &facts).await?;
        let nt = load_symbols(symbols, rsds).await?;
        let mut context = Self::with_pdb(mem, nt, facts, search).await?;
        if header.build == 0 {
            context.build = build_from_pdb(mem, &context).await?;
        }
        if let Some(image) = first {
            // The field found by its contents must be the one the PDB calls DllBase.
            let walked = context.modules.modules.first();
            if walked.is_none_or(|m| m.entry != image.entry || m.base != image.base) {
                return Err(Error::TargetData(format!(
                    "the kernel image found at {:#x} through offset {:#x} of the first module \
                     entry is not that entry's DllBase per the kernel PDB ({}): the module list \
                     cannot be trusted",
                    image.base,
                    image.field,
                    walked.map_or("no entry walked".into(), |m| format!("{:#x}", m.base))
                )));
            }
        }
        Ok(context)
    }

    /// The shared rest, with the kernel's PDB: KDBG (through the PDB if not yet found) → the
    /// module list.
    async fn with_pdb<M: Memory>(
        mem: &mut M,
        nt: ModuleSymbols,
        facts: Facts,
        mut search: KdbgSearch,
    ) -> session::Result<Self> {
        if search.found.is_none() {
            kdbg_from_pdb(mem, &nt, facts.kern_base, &mut search).await?;
        }
        let symbol = |name: &str| {
            nt.try_symbol_rva(name)
                .ok()
                .flatten()
                .map(|rva| facts.kern_base + u64::from(rva))
        };
        let module_list_head = [
            facts.module_list_head,
            search.kdbg().map_or(0, |k| k.ps_loaded_module_list),
            symbol("PsLoadedModuleList").unwrap_or(0),
        ]
        .into_iter()
        .find(|&head| head != 0)
        .ok_or_else(|| Error::TargetData("nothing gives PsLoadedModuleList".into()))?;
        let layout = nt
            .types()
            .and_then(|types| symbols::module_layout(&types))
            .map_err(|e| Error::TargetData(format!("kernel symbols: {e}")))?;
        let modules = kernel::walk_modules(mem, module_list_head, &layout)
            .await
            .map_err(|e| target_data("the loaded module list", e))?;
        let (kdbg, kdbg_source) = search
            .found
            .map_or((None, None), |(kdbg, source)| (Some(kdbg), Some(source)));
        match kdbg_source {
            None => info!(
                "no KDBG ({}); nothing kdleak reads needs it",
                search.problems.join("; ")
            ),
            Some(source) if !search.problems.is_empty() => info!(
                "KDBG found through {} ({})",
                source.describe(),
                search.problems.join("; ")
            ),
            Some(_) => {}
        }
        Ok(Self {
            build: facts.build,
            kern_base: facts.kern_base,
            kdbg,
            kdbg_source,
            kdbg_problems: search.problems,
            module_list_head,
            nt,
            modules,
            warnings: facts.warnings,
        })
    }
}

/// The kernel's RSDS record, read from its image: which PDB holds every layout.
async fn read_kernel_rsds<M: Memory>(mem: &mut M, facts: &Facts) -> session::Result<PdbInfo> {
    let image = format!(
        "the kernel image at {:#x} ({})",
        facts.kern_base, facts.kern_base_from
    );
    kernel::read_pdb_info(mem, facts.kern_base, 0)
        .await
        .map_err(|e| target_data(&image, e))?
        .ok_or_else(|| {
            Error::TargetData(format!(
                "{image} has no RSDS debug record: cannot find its PDB"
            ))
        })
}

/// Looks for KDBG through GetVersion's DebuggerDataList (kd.md §4.1).
async fn search_debugger_data_list(
    s: &mut Session,
    version: &Version,
    search: &mut KdbgSearch,
) -> session::Result<()> {
    search.listed_searched = true;
    if version.debugger_data_list != 0 {
        search.tried.push(version.debugger_data_list);
    }
    let listed = kernel::find_kdbg(s, version).await;
    search.record(listed, KdbgSource::DebuggerDataList, |e| e.to_string())
}

/// Looks for KDBG at the kernel PDB's `KdDebuggerDataBlock` (unless that address was read
/// already).
async fn kdbg_from_pdb<M: Memory>(
    mem: &mut M,
    nt: &ModuleSymbols,
    kern_base: u64,
    search: &mut KdbgSearch,
) -> session::Result<()> {
    let rva = match nt.try_symbol_rva("KdDebuggerDataBlock") {
        Ok(Some(rva)) => rva,
        _ => {
            search.problems.push(format!(
                "the kernel's {} has no KdDebuggerDataBlock symbol",
                nt.kind().as_str()
            ));
            return Ok(());
        }
    };
    let address = kern_base + u64::from(rva);
    if search.tried.contains(&address) {
        return Ok(());
    }
    search.tried.push(address);
    let read = kernel::read_kdbg(mem, address).await;
    search.record(read, KdbgSource::KernelPdb, |e| {
        format!("nt!KdDebuggerDataBlock ({address:#x}): {e}")
    })
}

/// The build number of an image whose format does not say: `nt!NtBuildNumber` (its low 16 bits;
/// the top nibble is 0xF on a free build, 0xC on a checked one, as GetVersion's MajorVersion).
async fn build_from_pdb<M: Memory>(mem: &mut M, context: &KernelContext) -> session::Result<u16> {
    let value = read_nt_u32(mem, context, "NtBuildNumber").await?;
    Ok((value & 0xFFFF) as u16)
}

/// A ULONG variable of the kernel, by its PDB symbol.
pub async fn read_nt_u32<M: Memory>(
    mem: &mut M,
    context: &KernelContext,
    name: &str,
) -> session::Result<u32> {
    let rva = context
        .nt
        .try_symbol_rva(name)
        .ok()
        .flatten()
        .ok_or_else(|| Error::TargetData(format!("the kernel PDB has no {name}")))?;
    let address = context.kern_base + u64::from(rva);
    let bytes = kernel::read_exact(mem, address, 4, name)
        .await
        .map_err(|e| target_data(name, e))?;
    Ok(u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")))
}

/// The kernel image through the first entry of the dump's module list, or an error that says
/// why neither the header's KDBG (`problems`) nor the list gives the kernel base.
async fn first_image_of_dump<M: Memory>(
    mem: &mut M,
    header: &MachineFacts,
    problems: &[String],
) -> session::Result<kernel::FirstImage> {
    let why = problems.join("; ");
    let head = header.ps_loaded_module_list;
    if head == 0 {
        return Err(Error::TargetData(format!(
            "{why}; and the dump header's PsLoadedModuleList is 0: nothing gives the kernel base"
        )));
    }
    kernel::first_image(mem, head).await.map_err(|e| match e {
        KernelError::Session(e) => e,
        other => Error::TargetData(format!(
            "{why}; and the first entry of PsLoadedModuleList ({head:#x}) gives no kernel base: \
             {other}"
        )),
    })
}

/// What the source (GetVersion or a dump header) says before any memory is read.
struct Facts {
    build: u16,
    kern_base: u64,
    /// Where `kern_base` came from, for messages.
    kern_base_from: &'static str,
    /// 0 when the source does not say; KDBG's or the PDB's is used then.
    module_list_head: u64,
    warnings: Vec<String>,
}

/// Memory that cannot be used is target data (exit 4); a failing session stays what it is.
fn target_data(what: &str, error: KernelError) -> Error {
    match error {
        KernelError::Session(e) => e,
        other => Error::TargetData(format!("{what}: {other}")),
    }
}

/// Loads a module's symbols (its PDB, else its ISF table) off the async runtime: it may read
/// large files or download from a symbol server.
pub async fn load_symbols(symbols: &Arc<Symbols>, rsds: PdbInfo) -> session::Result<ModuleSymbols> {
    let symbols = Arc::clone(symbols);
    let name = crate::symbols::safe_name::printable(rsds.file_name(), 64);
    tokio::task::spawn_blocking(move || symbols.load_module(&rsds))
        .await
        .map_err(|e| Error::TargetData(format!("loading {name} failed: {e}")))?
        .map_err(|e| Error::TargetData(format!("symbols for {name}: {e}")))
}
