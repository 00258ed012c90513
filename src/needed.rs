//! `kdleak symbols manifest`: which PDBs a pull of this target needs, for a lab without a
//! symbol server — break in (or open the dump), do what the pull does, note every module whose
//! symbols it asked for and each verified driver, resume. The list is written in `symchk /om`'s
//! manifest format ([`crate::symbols::manifest`]); `kdleak symbols fetch` (or `symchk /im`) on
//! a connected machine fills a symbol store from it.
//!
//! The drivers are found with the kernel's layouts: without the kernel's symbols (no PDB, no
//! ISF pack) only the kernel is listed, and a second round, with the kernel's PDB fetched, lists
//! the rest ([`Needed::notes`] says so).

use std::path::Path;
use std::sync::Arc;

use crate::analyze::AnalyzeError;
use crate::connect::ConnectSpec;
use crate::kernel::Memory;
use crate::kernel_context::KernelContext;
use crate::session::{self, Error, Session};
use crate::stop::{symbol_loader, with_stopped_target, StopContext, StopOptions};
use crate::symbols::{module_display_name, PdbId, Requested, SymbolOptions, Symbols};
use crate::verifier::{self, PullOptions, VerifierError};

/// The PDBs a pull needs.
#[derive(Debug, Clone, Default)]
pub struct Needed {
    /// The kernel first, then every module a caller or frame falls in, then every verified
    /// driver; each with what had its symbols here (`None`: nothing).
    pub pdbs: Vec<Requested>,
    /// Why the list may be short (no kernel symbols, a pull that failed).
    pub notes: Vec<String>,
}

impl Needed {
    pub fn ids(&self) -> Vec<PdbId> {
        self.pdbs.iter().map(|r| r.id.clone()).collect()
    }
}

/// Breaks into `spec`, lists what a pull needs, resumes.
pub async fn live(
    spec: &ConnectSpec,
    options: &StopOptions,
    pull: &PullOptions,
) -> session::Result<Needed> {
    with_stopped_target(spec, options, async |s: &mut Session, c: StopContext| {
        let processors = s.stop().map_or(0, |stop| stop.number_processors);
        let kernel = KernelContext::load(s, &c.symbols).await;
        let pull = PullOptions {
            connection: c.connection.clone(),
            processors,
            ..pull.clone()
        };
        collect(s, kernel, &c.symbols, &pull).await
    })
    .await
}

/// Lists what a pull of the dump at `path` needs.
pub async fn dump(
    path: &Path,
    symbols: Option<&SymbolOptions>,
    pull: &PullOptions,
) -> Result<Needed, AnalyzeError> {
    let mut dump = crate::image::open(path, crate::image::FormatHint::Detect)?;
    let symbols = symbol_loader(symbols, None)?;
    let header = dump.facts.clone();
    let kernel = KernelContext::load_from_dump(&mut dump, &header, &symbols).await;
    let pull = PullOptions {
        connection: crate::analyze::connection(path),
        processors: header.number_processors,
        ..pull.clone()
    };
    Ok(collect(&mut dump, kernel, &symbols, &pull).await?)
}

async fn collect<M: Memory>(
    mem: &mut M,
    kernel: session::Result<KernelContext>,
    symbols: &Arc<Symbols>,
    pull: &PullOptions,
) -> session::Result<Needed> {
    let mut notes = Vec::new();
    match kernel {
        Ok(kernel) => match verifier::pull(mem, &kernel, symbols, pull).await {
            Ok(report) => {
                // Verified drivers without an outstanding allocation have no frame, but
                // `!verifier 3` lists them: their PDBs belong on the list too.
                for driver in &report.drivers {
                    let module = kernel
                        .modules
                        .modules
                        .iter()
                        .find(|m| Some(m.base) == driver.image_base);
                    match module.and_then(|m| m.pdb.as_ref()) {
                        Some(rsds) => {
                            let rsds = rsds.clone();
                            let loader = Arc::clone(symbols);
                            let _ = tokio::task::spawn_blocking(move || loader.load_module(&rsds))
                                .await;
                        }
                        None => notes.push(format!(
                            "{}: its image headers name no PDB, so it is not listed",
                            module.map_or(driver.name.clone(), |m| module_display_name(&m.name))
                        )),
                    }
                }
                if !report.complete {
                    notes.push(format!(
                        "the pull was incomplete ({}): modules it could not reach may be missing",
                        report.incomplete_reasons.join("; ")
                    ));
                }
            }
            Err(VerifierError::Session(e)) => return Err(e),
            Err(e) => notes.push(format!(
                "the pull stopped ({e}): the kernel and the modules found so far are listed"
            )),
        },
        // Without the kernel's symbols, nothing past the kernel's own RSDS record can be read.
        Err(Error::TargetData(why)) if !symbols.requested().is_empty() => {
            let kernel_found = symbols.requested()[0].found.is_some();
            notes.push(if kernel_found {
                format!("{why}. Only the kernel is listed: its module list could not be read")
            } else {
                format!(
                    "{why}. Only the kernel is listed: the drivers are found with the kernel's \
                     layouts. Fetch this list, then run `kdleak symbols manifest` again with the \
                     kernel's PDB in --sympath (or an ISF pack with --isf) to list the drivers' \
                     PDBs too"
                )
            });
        }
        Err(e) => return Err(e),
    }
    Ok(Needed {
        pdbs: symbols.requested(),
        notes,
    })
}
