//! A stop with the kernel's symbols at hand, without keeping the target frozen while they are
//! downloaded.
//!
//! Every layout a pull reads comes from the kernel's PDB, and which PDB that is only the stopped
//! target can say (its RSDS record). With the PDB on this host (a warm cache, `sim:`,
//! `--offline`) one stop does everything, as before. Without it, a first, short stop reads the
//! kernel's identity (GetVersion, the RSDS record, the boot it is in: [`BootIdentity`]); the
//! target runs again while the PDB is found or downloaded; a second stop checks that the boot is
//! the same and does the reads. A stop that finds another boot starts over from itself: with
//! that boot's PDB at hand it reads, else it is the first stop of another round — at most
//! [`MAX_STOPS`] stops in all. Drivers' PDBs are never needed while stopped: stacks are
//! symbolized after the resume (`verifier::symbolize_report`).

use std::sync::Arc;

use kdproto::api::Version;
use tracing::{info, warn};

use crate::kernel::{BootIdentity, PdbInfo, SharedDataLayout};
use crate::kernel_context::{load_symbols, KernelContext, LiveKernel};
use crate::session::{self, Error, Session};
use crate::stop::Target;
use crate::symbols::{ModuleSymbols, Symbols};
use crate::verifier::StopPurpose;

/// Most stops one pull makes before giving up on a target whose kernel changes at every stop
/// (a reboot loop): the first, then up to three more rounds.
pub const MAX_STOPS: usize = 4;

/// What one stop ended with.
enum Step<T> {
    /// The work ran.
    Done(T, Option<String>),
    /// The kernel's PDB is not on this host: fetch it while the target runs, stop again.
    Fetch {
        rsds: PdbInfo,
        boot: BootIdentity,
        new_boot: Option<String>,
    },
}

/// Stops `target` until one stop has the kernel's PDB at hand, and runs `work` there with the
/// GetVersion reply and the kernel context of that stop. With `--stay-broken` (the target stays
/// stopped anyway) there is one stop, which fetches the PDB itself.
pub async fn stop_with_kernel<T>(
    target: &mut Target<'_>,
    work: impl AsyncFnOnce(&mut Session, Version, KernelContext) -> session::Result<T>,
) -> session::Result<T> {
    let symbols = Arc::clone(target.symbols());
    let fetch_while_running = target.resumes();
    let mut work = Some(work);
    let mut previous: Option<BootIdentity> = None;
    let mut new_boots = Vec::new();
    for _ in 0..MAX_STOPS {
        let step = target
            .stop(async |s: &mut Session| {
                let live = KernelContext::identify_live(s).await?;
                let nt = if fetch_while_running {
                    load_local_symbols(&symbols, &live.rsds).await?
                } else {
                    Some(load_symbols(&symbols, live.rsds.clone()).await?)
                };
                // Only a stop with another stop before or after it needs to know its boot.
                let boot = match (&previous, &nt) {
                    (None, Some(_)) => None,
                    _ => Some(boot_identity(s, &live).await?),
                };
                let new_boot = match (&previous, &boot) {
                    (Some(before), Some(now)) => {
                        let layout = nt.as_ref().map(shared_data_layout).unwrap_or_default();
                        before.new_boot_in(now, &layout)
                    }
                    _ => None,
                };
                let Some(nt) = nt else {
                    return Ok(Step::Fetch {
                        rsds: live.rsds,
                        boot: boot.expect("read when the PDB is not at hand"),
                        new_boot,
                    });
                };
                if let Some(why) = &new_boot {
                    warn!("the target booted again since the last stop ({why}); starting over");
                }
                let (version, kernel) = KernelContext::from_live(s, live, nt).await?;
                let work = work.take().expect("the work runs in one stop only");
                Ok(Step::Done(work(s, version, kernel).await?, new_boot))
            })
            .await?;
        match step {
            Step::Done(out, new_boot) => {
                target.note_last_stop(StopPurpose::Read, new_boot.is_some());
                return Ok(out);
            }
            Step::Fetch {
                rsds,
                boot,
                new_boot,
            } => {
                target.note_last_stop(StopPurpose::Identify, new_boot.is_some());
                if let Some(why) = new_boot {
                    warn!("the target booted again since the last stop ({why}); starting over");
                    new_boots.push(why);
                }
                info!(
                    pdb = rsds.file_name(),
                    "the kernel's PDB is not on this host: the target runs while it is fetched"
                );
                target.run_outside(fetch_and_index(&symbols, rsds)).await?;
                previous = Some(boot);
            }
        }
    }
    Err(Error::BootChanged(format!(
        "the target's kernel changed between each of {MAX_STOPS} stops ({}), so its symbols \
         were never at hand in the stop that needed them: is it rebooting in a loop? Try again \
         once it is up, or put its kernel's PDB on the symbol path first",
        new_boots.join("; ")
    )))
}

/// The kernel's symbols (PDB, else ISF table) if this host has them without asking a symbol
/// server (a file check, no request leaves the host: cheap enough while the target is stopped).
async fn load_local_symbols(
    symbols: &Arc<Symbols>,
    rsds: &PdbInfo,
) -> session::Result<Option<ModuleSymbols>> {
    let symbols = Arc::clone(symbols);
    let name = rsds.file_name().to_string();
    let rsds = rsds.clone();
    tokio::task::spawn_blocking(move || symbols.load_module_without_network(&rsds))
        .await
        .map_err(|e| Error::TargetData(format!("looking for {name} failed: {e}")))?
        .map_err(|e| Error::TargetData(format!("symbols for {name}: {e}")))
}

/// Finds (or downloads) the kernel's PDB and builds its type table and name index, which the
/// next stop would otherwise build while the target waits. A table that cannot be built is
/// reported by the stop that uses it, as without this.
async fn fetch_and_index(symbols: &Arc<Symbols>, rsds: PdbInfo) -> session::Result<()> {
    let nt = load_symbols(symbols, rsds).await?;
    let _ = tokio::task::spawn_blocking(move || {
        let _ = nt.types();
        let _ = nt.names();
    })
    .await;
    Ok(())
}

async fn boot_identity(s: &mut Session, live: &LiveKernel) -> session::Result<BootIdentity> {
    BootIdentity::read(
        s,
        live.kern_base(),
        live.version.ps_loaded_module_list,
        live.rsds.clone(),
    )
    .await
}

/// Where `_KUSER_SHARED_DATA` keeps what tells boots apart, by name from the kernel PDB.
fn shared_data_layout(nt: &ModuleSymbols) -> SharedDataLayout {
    let at = |path: &str| {
        nt.offset("_KUSER_SHARED_DATA", path)
            .ok()
            .and_then(|offset| usize::try_from(offset).ok())
    };
    let interrupt_time = || {
        Some([
            at("InterruptTime.LowPart")?,
            at("InterruptTime.High1Time")?,
            at("InterruptTime.High2Time")?,
        ])
    };
    SharedDataLayout {
        boot_id: at("BootId"),
        interrupt_time: interrupt_time(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_pdb(build: &str) -> ModuleSymbols {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("captures/fixtures")
            .join(build)
            .join("ntkrnlmp.pdb");
        ModuleSymbols::Pdb(Arc::new(crate::symbols::Pdb::open(&path).unwrap()))
    }

    #[test]
    fn the_shared_data_layout_comes_from_the_pdb() {
        // Windows 10: BootId and InterruptTime (`dt nt!_KUSER_SHARED_DATA`: +0x2c4, +0x008).
        let win10 = shared_data_layout(&fixture_pdb("win10-19041"));
        assert_eq!(win10.boot_id, Some(0x2c4));
        assert_eq!(win10.interrupt_time, Some([0x8, 0xc, 0x10]));
        // Windows 7's structure has no BootId.
        let win7 = shared_data_layout(&fixture_pdb("win7-7601"));
        assert_eq!(win7.boot_id, None);
        assert_eq!(win7.interrupt_time, Some([0x8, 0xc, 0x10]));
    }
}
