//! The pull: everything `!verifier 3` and `!verifier 80` show, for every verified driver, from
//! one stop — global statistics, drivers, tracked allocations, and the log read once.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::{info, warn};

use crate::kernel::Memory;
use crate::kernel_context::{load_symbols, KernelContext};
use crate::symbols::{module_display_name, AddressSpace, ModuleSymbols, SourceKind, Symbols};

use super::bugcheck::{self, BugCheckData};
use super::drivers::{self, suspects_by_entry};
use super::error::{Result, VerifierError};
use super::layout::Nt;
use super::log::{self, index_by_address, Log};
use super::model::{
    Allocation, DriverCounters, DriverReport, Frame, LeakReport, LogRecord, LogSummary,
    SkippedSymbols, SymbolSource, TargetSummary, SCHEMA_VERSION,
};
use super::{selfcheck, stats, trackers};

/// What to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Only these drivers (case-insensitive, `.sys` optional); empty: every verified driver.
    pub drivers: Vec<String>,
    /// Skip the allocate/free log (no stacks; much less to read on a slow link).
    pub no_log: bool,
    /// Most log records kept per allocation in `history`.
    pub history_limit: usize,
    /// Describes the connection in the report (no key material).
    pub connection: String,
    /// Read the log newest-first and stop once every outstanding allocation has its stack
    /// (instead of the whole ring): the same stacks, far fewer bytes when the leaks are recent;
    /// history covers only the records read. The CLI's default (`--whole-log` turns it off).
    pub until_stacks: bool,
    /// Show a progress bar with an ETA on stderr while the log is read (drawn only when stderr
    /// is a terminal).
    pub progress: bool,
    /// The target's processor count (from the stop or the dump header; 0: not known, taken as
    /// 1): how many allocations and frees the break-in can have caught half-done, which the
    /// self-checks accept as the cause of a difference ([`selfcheck::in_flight_allowance`]).
    pub processors: u32,
    /// The bug check a dump's header records (code, parameters 1–4): checked against
    /// `KiBugCheckData`, and the report's when the kernel names no such variable.
    pub bug_check: Option<BugCheckData>,
    /// Driver files for code that was unloaded (`--image name.sys=PATH`): frames in a range of
    /// the unloaded-driver list under that name symbolize with the PDB the file's RSDS record
    /// names, found through the symbol path.
    pub images: Vec<(String, std::path::PathBuf)>,
}

fn same_driver(wanted: &str, name: &str) -> bool {
    let strip = |s: &str| {
        let s = s.to_ascii_lowercase();
        s.strip_suffix(".sys").map(str::to_string).unwrap_or(s)
    };
    strip(wanted) == strip(name)
}

/// What one pull leaves for the next pull of the same boot (watch mode): the allocation log,
/// so the next pull reads only the records written since ([`log::read_log_since`]).
#[derive(Debug, Default)]
pub struct PullCache {
    pub log: Option<Log>,
    /// How the last pull read the log (`None`: not read).
    pub last_log_read: Option<log::LogRead>,
    /// Each driver's tracker scan by its `_VF_TARGET_VERIFIED_DRIVER_DATA` address, with what
    /// proves it still current.
    trackers: HashMap<u64, CachedScan>,
    /// How many drivers the last pull took from `trackers` instead of reading their pages.
    pub last_reused_scans: usize,
}

/// A tracker scan and the state it was read in. Every tracked allocation and free pushes or
/// pops a tracker (changing the SLIST heads' depth and sequence), moves the driver's counters
/// and writes a log record (moving `VfPoolTracesIndex`); when none of them moved, the pages
/// hold what they held.
#[derive(Debug, Clone)]
struct CachedScan {
    counters: DriverCounters,
    heads: [(u64, [u64; 2]); 2],
    ring: (u64, u64, u64),
    scan: trackers::TrackerScan,
}

/// Pulls the report from a stopped target. Sites are left empty for the caller to group.
pub async fn pull<M: Memory>(
    mem: &mut M,
    ctx: &KernelContext,
    symbols: &Arc<Symbols>,
    options: &PullOptions,
) -> Result<LeakReport> {
    pull_with(mem, ctx, symbols, options, &mut PullCache::default()).await
}

/// [`pull`], reading the log incrementally from `cache` (and leaving it there for the next).
/// The cache must come from a pull of the same boot of the same target.
pub async fn pull_with<M: Memory>(
    mem: &mut M,
    ctx: &KernelContext,
    symbols: &Arc<Symbols>,
    options: &PullOptions,
    cache: &mut PullCache,
) -> Result<LeakReport> {
    let mut report = read_with(mem, ctx, options, cache).await?;
    symbolize_report_with(&mut report, ctx, symbols, &options.images).await;
    Ok(report)
}

/// The reads of [`pull_with`], without symbolizing: everything that needs the target stopped.
/// Callers and frames keep empty symbols until [`symbolize_report`], which needs the module
/// list only and so can run after the target is resumed (it may download drivers' PDBs).
pub async fn read_with<M: Memory>(
    mem: &mut M,
    ctx: &KernelContext,
    options: &PullOptions,
    cache: &mut PullCache,
) -> Result<LeakReport> {
    cache.last_log_read = None;
    let nt = Nt::new(&ctx.nt, ctx.kern_base);
    let build = u32::from(ctx.build);
    let mut problems = Vec::new();

    let mut verifier = stats::read_state(mem, &nt).await?;
    if verifier.level == 0 {
        return Err(VerifierError::NotEnabled(
            "Driver Verifier is not enabled on the target: run `verifier /flags 8 /driver x.sys` \
             there and reboot"
                .into(),
        ));
    }
    if !verifier.pool_tracking {
        return Err(VerifierError::NotEnabled(format!(
            "Driver Verifier runs with level {:#x}, without pool tracking (0x8): run `verifier \
             /flags 8 /driver x.sys` (or add 8 to the current flags) and reboot",
            verifier.level
        )));
    }

    let allowance = selfcheck::in_flight_allowance(options.processors);
    let mut found = drivers::read_drivers(mem, &nt).await?;
    problems.extend(found.problems.iter().cloned());

    // Why the target stopped; for Driver Verifier's own leak check (0xC4/0x62) the driver it
    // names, which has left the verified-driver tree by then: its verified data is parameter 3.
    let live = bugcheck::read_live(mem, &nt, ctx).await?;
    let header = options.bug_check.filter(|data| data[0] != 0);
    if let (Some(live), Some(header)) = (live, header) {
        if live != header {
            problems.push(format!(
                "the dump header's bug check {:#x} ({:#x}, {:#x}, {:#x}, {:#x}) differs from \
                 KiBugCheckData's {:#x} ({:#x}, {:#x}, {:#x}, {:#x})",
                header[0],
                header[1],
                header[2],
                header[3],
                header[4],
                live[0],
                live[1],
                live[2],
                live[3],
                live[4]
            ));
        }
    }
    let (data, source) = match (live, header) {
        (Some(live), _) => (Some(live), "KiBugCheckData"),
        (None, Some(header)) => (Some(header), "dump header"),
        (None, None) => (None, ""),
    };
    let mut unloaded: Option<Vec<super::model::UnloadedModule>> = None;
    let mut stop = None;
    if let Some(data) = data {
        let mut described = bugcheck::describe(mem, &nt, &data, source, &mut problems).await?;
        if bugcheck::is_leak_on_unload(&data) {
            let leaked = leaked_driver(mem, &nt, ctx, &data, &found, &mut unloaded, &mut problems);
            match leaked.await {
                Ok(Some(driver)) => {
                    // Parameter 2 unreadable: the verified data's suspect entry names it.
                    if described.driver.is_none() {
                        described.driver = found
                            .suspects
                            .iter()
                            .find(|s| s.entry == driver.suspect_entry)
                            .map(|s| s.name.clone());
                    }
                    found.verified.push(driver);
                }
                Ok(None) => {}
                Err(VerifierError::Session(e)) => return Err(e.into()),
                Err(e) => problems.push(format!(
                    "bug check 0xC4/0x62: the verifier's structure at parameter 3 ({:#x}) could \
                     not be read: {e}",
                    data[3]
                )),
            }
        }
        stop = Some(described);
    }
    let names = suspects_by_entry(&found);
    let unread = selfcheck::unread_suspects(&found, &ctx.modules.modules, |name| {
        options.drivers.is_empty() || options.drivers.iter().any(|w| same_driver(w, name))
    });
    for wanted in &options.drivers {
        let verified = found.verified.iter().any(|v| {
            names
                .get(&v.suspect_entry)
                .is_some_and(|s| same_driver(wanted, &s.name))
        });
        if verified {
            continue;
        }
        // Configured and loaded, but its verified data was not read: say that, not "not verified".
        if let Some((_, reason)) = unread.iter().find(|(name, _)| same_driver(wanted, name)) {
            return Err(VerifierError::DriverNotVerified(reason.clone()));
        }
        return Err(VerifierError::DriverNotVerified(format!(
            "{wanted} is not a verified, loaded driver (verified: {}): run `verifier /flags 8 \
             /driver {wanted}` on the target and reboot",
            found
                .suspects
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }

    // Read before the trackers: if it has not moved since the last pull, nothing was allocated
    // or freed, and unchanged drivers' tracker pages need not be read again.
    cache.last_reused_scans = 0;
    let ring = if options.no_log {
        Ok(None)
    } else {
        log::read_ring(mem, &nt).await
    };
    // A ring that cannot be read is reported with the log below.
    let ring = match ring {
        Err(VerifierError::Session(e)) => return Err(e.into()),
        other => other,
    };
    let ring_now = ring
        .as_ref()
        .ok()
        .and_then(Option::as_ref)
        .map(log::Ring::position);

    let mut reports = Vec::new();
    for driver in &found.verified {
        let suspect = names.get(&driver.suspect_entry);
        let name = suspect.map_or_else(
            || format!("<image at {:#x}>", driver.image_base),
            |s| s.name.clone(),
        );
        if !options.drivers.is_empty() && !options.drivers.iter().any(|w| same_driver(w, &name)) {
            continue;
        }
        let heads = [driver.page_headers, driver.free_trackers];
        let reusable = cache.trackers.get(&driver.data).filter(|cached| {
            ring_now.is_some_and(|ring| ring == cached.ring)
                && cached.counters == driver.counters
                && cached.heads == heads
        });
        let scan = match reusable {
            Some(cached) => {
                cache.last_reused_scans += 1;
                cached.scan.clone()
            }
            None => trackers::scan(mem, &nt, driver, build).await?,
        };
        match ring_now {
            Some(ring) if !options.no_log => {
                cache.trackers.insert(
                    driver.data,
                    CachedScan {
                        counters: driver.counters.clone(),
                        heads,
                        ring,
                        scan: scan.clone(),
                    },
                );
            }
            _ => {
                cache.trackers.remove(&driver.data);
            }
        }
        problems.extend(scan.problems.iter().map(|p| format!("{name}: {p}")));
        // Pages or free trackers that could not be read are reported already; counting what
        // was read against the counters would only repeat it.
        if scan.problems.is_empty() {
            let findings = selfcheck::DriverFindings {
                name: &name,
                counters: &driver.counters,
                tracked_sizes: scan.allocations.iter().map(|a| a.size).collect(),
                recently_freed: &scan.recently_freed,
            };
            problems.extend(selfcheck::driver_vs_trackers(&findings, allowance));
        }
        reports.push(DriverReport {
            name,
            entry: driver.suspect_entry,
            state: suspect.map_or("Loaded", |s| s.state()).to_string(),
            // None for a driver found through a 0x62's parameter 3: it left the tree.
            target_driver: (driver.target != 0).then_some(driver.target),
            loads: suspect.map(|s| s.loads),
            unloads: suspect.map(|s| s.unloads),
            image_base: Some(driver.image_base),
            image_size: Some(driver.image_size),
            counters: driver.counters.clone(),
            allocations: scan
                .allocations
                .into_iter()
                .map(|t| Allocation {
                    address: t.address,
                    size: t.size,
                    tag: trackers::tag_text(t.tag),
                    caller: t.caller,
                    caller_symbol: String::new(),
                    pool: None,
                    stack: Vec::new(),
                    requested_size: None,
                    thread: None,
                    history: Vec::new(),
                })
                .collect(),
        });
    }

    problems.extend(unread.into_iter().map(|(_, reason)| reason));
    let all_counters: Vec<&DriverCounters> = found.verified.iter().map(|v| &v.counters).collect();
    problems.extend(selfcheck::global_vs_drivers(
        &verifier.statistics,
        &all_counters,
        allowance,
    ));

    // A partial (newest-first) log cannot seed the next pull's incremental read.
    let read = match ring {
        Err(e) => Err(e),
        Ok(None) => Ok(None),
        Ok(Some(ring)) if options.until_stacks => {
            let mut wanted: Vec<u64> = reports
                .iter()
                .flat_map(|d| d.allocations.iter().map(|a| a.address))
                .collect();
            wanted.sort_unstable();
            wanted.dedup();
            log::read_log_until_found(mem, &ring, &wanted, options.progress)
                .await
                .map(|(log, whole)| Some((log, whole, None)))
        }
        Ok(Some(ring)) => log::read_log_since(mem, &ring, cache.log.take(), options.progress)
            .await
            .map(|(log, read)| Some((log, true, Some(read)))),
    };
    let mut whole_ring = true;
    let log = match read {
        Ok(Some((log, whole, read))) => {
            whole_ring = whole;
            cache.last_log_read = read;
            Some(log)
        }
        Ok(None) => None,
        Err(VerifierError::Session(e)) => return Err(e.into()),
        Err(e) => {
            problems.push(format!("the allocation log could not be read: {e}"));
            None
        }
    };
    if let Some(log) = &log {
        info!(
            records = log.records.len(),
            length = log.length,
            "read the allocation log"
        );
        verifier.log = Some(LogSummary {
            length: log.length,
            index: log.index,
            frames_per_record: log.frames_per_record,
            records: log.records.len() as u64,
            whole_ring,
            entries_read: Some(log.entries_read),
        });
        attach_log(&mut reports, log, options.history_limit.max(1));
    }
    if let Some(summary) = &verifier.log {
        problems.extend(selfcheck::log_vs_trackers(
            &reports, summary, build, allowance,
        ));
    }

    if whole_ring {
        cache.log = log;
    }

    // The unloaded-driver list, only when an address needs it: a caller or frame outside every
    // loaded module (an ordinary pull does not read it).
    if unloaded.is_none() && reports.iter().any(|d| outside_modules(d, ctx)) {
        unloaded = Some(read_unloaded_or_say(mem, &nt, ctx, &mut problems).await?);
    }
    if let Some(stop) = &mut stop {
        if let (Some(name), Some(counted)) = (stop.driver.clone(), stop.not_freed) {
            let found_count = reports
                .iter()
                .filter(|d| same_driver(&name, &d.name))
                .map(|d| d.allocations.len() as u64)
                .sum::<u64>();
            stop.found = Some(found_count);
            if found_count != counted {
                problems.push(format!(
                    "bug check 0xC4/0x62 counts {counted} allocations of {name} not freed \
                     (parameter 4), the pull found {found_count}"
                ));
            }
        }
    }

    Ok(LeakReport {
        schema_version: SCHEMA_VERSION,
        target: TargetSummary {
            build,
            kernel_base: ctx.kern_base,
            time: now_rfc3339(),
            connection: options.connection.clone(),
            symbol_sources: Vec::new(),
            stops: Vec::new(),
            outside_s: None,
        },
        verifier,
        drivers: reports,
        sites: Vec::new(),
        complete: problems.is_empty() && ctx.modules.complete,
        incomplete_reasons: problems
            .into_iter()
            .chain(ctx.modules.problem.clone())
            .collect(),
        symbols_skipped: Vec::new(),
        bugcheck: stop,
        unloaded_modules: unloaded.unwrap_or_default(),
    })
}

/// Whether any caller or frame of `driver`'s allocations lies outside every loaded module.
fn outside_modules(driver: &DriverReport, ctx: &KernelContext) -> bool {
    let modules = &ctx.modules.modules;
    let inside = |a: u64| modules.iter().any(|m| (m.base..m.end()).contains(&a));
    driver.allocations.iter().any(|a| {
        !inside(a.caller)
            || a.stack.iter().any(|f| !inside(f.address))
            || a.history
                .iter()
                .any(|h| h.stack.iter().any(|f| !inside(f.address)))
    })
}

/// [`bugcheck::read_unloaded`], a list that cannot be read becoming an incomplete-report reason.
async fn read_unloaded_or_say<M: Memory>(
    mem: &mut M,
    nt: &Nt<'_>,
    ctx: &KernelContext,
    problems: &mut Vec<String>,
) -> Result<Vec<super::model::UnloadedModule>> {
    match bugcheck::read_unloaded(mem, nt, ctx).await {
        Ok(list) => Ok(list),
        Err(VerifierError::Session(e)) => Err(e.into()),
        Err(e) => {
            problems.push(format!("the unloaded-driver list could not be read: {e}"));
            Ok(Vec::new())
        }
    }
}

/// The driver a 0xC4/0x62 names, from its verified data at parameter 3 (a
/// `_VF_TARGET_VERIFIED_DRIVER_DATA`, or a `_VF_TARGET_DRIVER` pointing at one), unless the
/// verified-driver tree listed it already. Its range comes from the module list, else from the
/// unloaded-driver list (read then).
async fn leaked_driver<M: Memory>(
    mem: &mut M,
    nt: &Nt<'_>,
    ctx: &KernelContext,
    data: &BugCheckData,
    found: &drivers::Drivers,
    unloaded: &mut Option<Vec<super::model::UnloadedModule>>,
    problems: &mut Vec<String>,
) -> Result<Option<drivers::VerifiedDriver>> {
    let at = data[3];
    let mut driver = match drivers::read_verified_data(mem, nt, at).await {
        Ok(driver) => driver,
        Err(VerifierError::Session(e)) => return Err(VerifierError::Session(e)),
        Err(first) => {
            let target = nt.read(mem, "_VF_TARGET_DRIVER", at).await?;
            let verified = target.get("VerifiedData")?;
            if verified == 0 {
                return Err(first);
            }
            drivers::read_verified_data(mem, nt, verified).await?
        }
    };
    if found.verified.iter().any(|v| v.data == driver.data) {
        return Ok(None);
    }
    let name = found
        .suspects
        .iter()
        .find(|s| s.entry == driver.suspect_entry)
        .map(|s| s.name.clone())
        .unwrap_or_default();
    if let Some(module) = ctx
        .modules
        .modules
        .iter()
        .find(|m| !name.is_empty() && m.name.eq_ignore_ascii_case(&name))
    {
        driver.image_base = module.base;
        driver.image_size = u64::from(module.size);
    } else {
        if unloaded.is_none() {
            *unloaded = Some(read_unloaded_or_say(mem, nt, ctx, problems).await?);
        }
        if let Some(record) = unloaded
            .iter()
            .flatten()
            .find(|u| !name.is_empty() && u.name.eq_ignore_ascii_case(&name))
        {
            driver.image_base = record.start;
            driver.image_size = record.end - record.start;
        }
    }
    Ok(Some(driver))
}

/// Gives every allocation its newest allocation record (the newest record at exactly its
/// address) and its history, from one pass over the log.
fn attach_log(reports: &mut [DriverReport], log: &Log, history_limit: usize) {
    let mut addresses: Vec<u64> = reports
        .iter()
        .flat_map(|d| d.allocations.iter().map(|a| a.address))
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    let hits = index_by_address(log, &addresses);
    let by_address: HashMap<u64, &Vec<usize>> =
        addresses.iter().copied().zip(hits.iter()).collect();
    for allocation in reports.iter_mut().flat_map(|d| d.allocations.iter_mut()) {
        let Some(records) = by_address.get(&allocation.address) else {
            continue;
        };
        let newest = records
            .iter()
            .map(|&i| &log.records[i])
            .find(|r| r.address == allocation.address);
        if let Some(record) = newest {
            allocation.stack = record.frames.iter().map(|&a| frame(a)).collect();
            allocation.requested_size = Some(record.size);
            allocation.thread = Some(record.thread);
        }
        allocation.history = records
            .iter()
            .take(history_limit)
            .map(|&i| {
                let r = &log.records[i];
                LogRecord {
                    slot: r.slot,
                    address: r.address,
                    size: r.size,
                    thread: r.thread,
                    stack: r.frames.iter().map(|&a| frame(a)).collect(),
                }
            })
            .collect();
    }
}

fn frame(address: u64) -> Frame {
    Frame {
        address,
        symbol: String::new(),
    }
}

/// Gives every caller and frame of `report` its symbol (`module!Function+0xoff`), loading the
/// symbols of each module one falls in, and says where each module's came from (the kernel's
/// first): the modules' PDBs are found (or downloaded) here, not while the target is stopped.
pub async fn symbolize_report(
    report: &mut LeakReport,
    ctx: &KernelContext,
    symbols: &Arc<Symbols>,
) {
    symbolize_report_with(report, ctx, symbols, &[]).await;
}

/// [`symbolize_report`], with driver files for ranges of the unloaded-driver list
/// ([`PullOptions::images`]): their frames read `name!Function+0xoff` instead of
/// `<Unloaded_name.sys>+0xoff`.
pub async fn symbolize_report_with(
    report: &mut LeakReport,
    ctx: &KernelContext,
    symbols: &Arc<Symbols>,
    images: &[(String, std::path::PathBuf)],
) {
    let (mut space, mut sources, skipped) = address_space(ctx, &report.drivers, symbols).await;
    // Code that was unloaded: WinDbg's `<Unloaded_name.sys>+0xoff`, where no loaded module
    // took the range since.
    let modules = &ctx.modules.modules;
    for gone in &report.unloaded_modules {
        let reused = modules
            .iter()
            .any(|m| m.base < gone.end && gone.start < m.end());
        if reused {
            continue;
        }
        let given = images
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&gone.name));
        let loaded = match given {
            Some((_, path)) => match unloaded_symbols(path, symbols).await {
                Ok(loaded) => Some(loaded),
                Err(error) => {
                    warn!(module = %gone.name.escape_debug(), %error, "--image: no symbols");
                    report.incomplete_reasons.push(format!(
                        "--image {}={}: {error}",
                        gone.name,
                        path.display()
                    ));
                    report.complete = false;
                    None
                }
            },
            None => None,
        };
        match &loaded {
            Some(loaded) => {
                let display = module_display_name(&gone.name);
                sources.push(source_of(loaded, &display));
                space.add(&display, gone.start, gone.end - gone.start, Some(loaded));
            }
            None => space.add::<ModuleSymbols>(
                &format!("<Unloaded_{}>", gone.name),
                gone.start,
                gone.end - gone.start,
                None,
            ),
        }
    }
    symbolize(&mut report.drivers, &space);
    report.target.symbol_sources = sources;
    report.symbols_skipped = skipped;
}

/// Loads the symbols of every module that a caller or frame falls in (the others are not
/// needed); the kernel's are the context's. Says where each module's came from, the kernel's
/// first, and which could not be loaded and why (with the PDB path as the target recorded it).
async fn address_space(
    ctx: &KernelContext,
    reports: &[DriverReport],
    symbols: &Arc<Symbols>,
) -> (AddressSpace, Vec<SymbolSource>, Vec<SkippedSymbols>) {
    let modules = &ctx.modules.modules;
    let mut wanted = vec![false; modules.len()];
    let addresses = reports.iter().flat_map(|d| {
        d.allocations.iter().flat_map(|a| {
            std::iter::once(a.caller)
                .chain(a.stack.iter().map(|f| f.address))
                .chain(
                    a.history
                        .iter()
                        .flat_map(|h| h.stack.iter().map(|f| f.address)),
                )
        })
    });
    for address in addresses {
        if let Some(i) = modules
            .iter()
            .position(|m| (m.base..m.end()).contains(&address))
        {
            wanted[i] = true;
        }
    }
    let mut space = AddressSpace::new();
    let mut sources = vec![source_of(&ctx.nt, "nt")];
    let mut skipped = Vec::new();
    for (module, wanted) in modules.iter().zip(wanted) {
        let display = module_display_name(&module.name);
        let is_kernel = module.base == ctx.kern_base;
        let loaded = match (&module.pdb, wanted) {
            _ if is_kernel => Some(ctx.nt.clone()),
            (Some(rsds), true) => match load_symbols(symbols, rsds.clone()).await {
                Ok(loaded) => Some(loaded),
                Err(error) => {
                    warn!(module = %module.name.escape_debug(), %error, "no symbols; frames show module+offset");
                    skipped.push(SkippedSymbols {
                        module: module.name.clone(),
                        pdb: rsds.path.clone(),
                        reason: error.to_string(),
                    });
                    sources.push(SymbolSource {
                        module: display.clone(),
                        pdb: Some(rsds.file_name().to_string()),
                        guid: Some(rsds.guid.clone()),
                        age: Some(rsds.age),
                        source: SourceKind::None,
                        location: None,
                        problem: Some(error.to_string()),
                    });
                    None
                }
            },
            (None, true) => {
                sources.push(SymbolSource {
                    module: display.clone(),
                    pdb: None,
                    guid: None,
                    age: None,
                    source: SourceKind::None,
                    location: None,
                    problem: Some(module.pdb_error.clone().unwrap_or_else(|| {
                        "the image has no RSDS debug record naming its PDB".into()
                    })),
                });
                None
            }
            _ => None,
        };
        if let (Some(loaded), false) = (&loaded, is_kernel) {
            sources.push(source_of(loaded, &display));
        }
        space.add(
            &display,
            module.base,
            u64::from(module.size),
            loaded.as_ref(),
        );
    }
    (space, sources, skipped)
}

/// The symbols of a driver file given with `--image`: the PDB its RSDS record names, through
/// the symbol path.
async fn unloaded_symbols(
    path: &std::path::Path,
    symbols: &Arc<Symbols>,
) -> std::result::Result<ModuleSymbols, String> {
    let file = tokio::fs::read(path).await.map_err(|e| e.to_string())?;
    let rsds = crate::kernel::pdb_info_from_file(&file)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the image has no RSDS debug record naming its PDB")?;
    load_symbols(symbols, rsds).await.map_err(|e| e.to_string())
}

fn source_of(symbols: &ModuleSymbols, module: &str) -> SymbolSource {
    let id = symbols.id();
    SymbolSource {
        module: module.to_string(),
        pdb: Some(id.name.clone()),
        guid: Some(id.guid.clone()),
        age: Some(id.age),
        source: symbols.kind(),
        location: Some(symbols.location()),
        problem: None,
    }
}

fn symbolize(reports: &mut [DriverReport], space: &AddressSpace) {
    for allocation in reports.iter_mut().flat_map(|d| d.allocations.iter_mut()) {
        allocation.caller_symbol = space.symbolize(allocation.caller);
        for frame in allocation.stack.iter_mut().chain(
            allocation
                .history
                .iter_mut()
                .flat_map(|h| h.stack.iter_mut()),
        ) {
            frame.symbol = space.symbolize(frame.address);
        }
    }
}

/// The host's clock, RFC 3339 UTC, without a date crate: seconds since the epoch converted by
/// the civil-from-days algorithm.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    rfc3339(secs)
}

/// `secs` after 1970-01-01 as RFC 3339 UTC (civil-from-days, proleptic Gregorian).
pub fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
