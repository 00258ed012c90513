//! `kdleak info CONN`: attach, read the target's identity and module list, resume.

use std::fmt::Write as _;

use kdproto::api::Version;
use serde::Serialize;

use crate::connect::ConnectSpec;
use crate::kernel::arch::machine_name;
use crate::kernel::{serde_hex, ModuleList};
use crate::kernel_context::{KdbgSource, KernelContext};
use crate::kernel_stop::stop_with_kernel;
use crate::session::{self, Error, Session, StopInfo};
use crate::stop::{with_target, with_target_on, StopOptions, Target};
use crate::transport::Transport;
use crate::verifier::bugcheck;
use crate::verifier::layout::Nt;
use crate::verifier::{BugCheckReport, TargetStop, UnloadedModule, VerifierError};

/// Options of `kdleak info`: how to reach the target and find its symbols.
pub type InfoOptions = StopOptions;

/// What `kdleak info` reports.
#[derive(Debug, Clone, Serialize)]
pub struct TargetInfo {
    pub connection: String,
    pub build: u16,
    pub checked_build: bool,
    pub machine: String,
    pub protocol_version: u8,
    #[serde(serialize_with = "serde_hex::u64")]
    pub kernel_base: u64,
    #[serde(serialize_with = "serde_hex::u64")]
    pub ps_loaded_module_list: u64,
    /// The debugger data block: `null` when none was found (`kdbg_problems` says why).
    #[serde(serialize_with = "serde_hex::opt_u64")]
    pub kdbg_address: Option<u64>,
    pub kdbg_size: Option<u32>,
    /// Where KDBG was found: `debugger_data_list` or `kernel_pdb`.
    pub kdbg_source: Option<KdbgSource>,
    /// Why the sources tried first gave no KDBG (empty when the first one did).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kdbg_problems: Vec<String>,
    /// What the target reported that kdleak worked around (e.g. Flags.PTR64 clear on x64).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub processors: u32,
    pub stop: StopInfo,
    pub modules: ModuleList,
    /// The bug check the target is stopped in (absent: a break-in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bugcheck: Option<BugCheckReport>,
    /// The kernel's unloaded-driver list, newest first (`lm`'s "Unloaded modules").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unloaded_modules: Vec<UnloadedModule>,
    /// Why the unloaded-driver list could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unloaded_problem: Option<String>,
    pub debug_output: Vec<String>,
    /// False only with `--stay-broken`.
    pub resumed: bool,
    /// The stops made, in order, each with how long it froze the target (two when the
    /// kernel's PDB was fetched while the target ran).
    pub stops: Vec<TargetStop>,
}

/// Attaches to `spec`, collects [`TargetInfo`] while stopped, and resumes (unless
/// `stay_broken`) on every exit path. The kernel's PDB, when this host lacks it, is fetched while
/// the target runs between two stops.
pub async fn run(spec: &ConnectSpec, options: &InfoOptions) -> session::Result<TargetInfo> {
    with_target(spec, options, async |target: &mut Target<'_>| {
        collect(target).await
    })
    .await
}

/// Like [`run`], over a transport that is already open.
pub async fn run_on(transport: Transport, options: &InfoOptions) -> session::Result<TargetInfo> {
    let symbols = options.symbol_loader(None)?;
    with_target_on(
        transport,
        options,
        symbols,
        async |target: &mut Target<'_>| collect(target).await,
    )
    .await
}

async fn collect(target: &mut Target<'_>) -> session::Result<TargetInfo> {
    let connection = target.connection().to_string();
    let resumed = target.resumes();
    let mut info = stop_with_kernel(
        target,
        async |s: &mut Session, version: Version, kernel: KernelContext| {
            let nt = Nt::new(&kernel.nt, kernel.kern_base);
            let mut problems = Vec::new();
            let stopped_in = match bugcheck::read_live(s, &nt, &kernel).await {
                Ok(Some(data)) => {
                    Some(bugcheck::describe(s, &nt, &data, "KiBugCheckData", &mut problems).await)
                }
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            };
            let bugcheck = match stopped_in {
                Some(Ok(report)) => Some(report),
                Some(Err(VerifierError::Session(e))) => return Err(e),
                Some(Err(e)) => {
                    problems.push(format!("KiBugCheckData could not be read: {e}"));
                    None
                }
                None => None,
            };
            let (unloaded_modules, unloaded_problem) =
                match bugcheck::read_unloaded(s, &nt, &kernel).await {
                    Ok(list) => (list, None),
                    Err(VerifierError::Session(e)) => return Err(e),
                    Err(e) => (Vec::new(), Some(e.to_string())),
                };
            let KernelContext {
                kdbg,
                kdbg_source,
                kdbg_problems,
                module_list_head: head,
                modules,
                mut warnings,
                ..
            } = kernel;
            warnings.extend(problems);
            let stop = s.stop().cloned().ok_or(Error::NotStopped)?;
            Ok(TargetInfo {
                connection,
                build: version.build(),
                checked_build: version.is_checked_build(),
                machine: machine_name(version.machine_type),
                protocol_version: version.protocol_version,
                kernel_base: version.kern_base,
                ps_loaded_module_list: head,
                kdbg_address: kdbg.as_ref().map(|k| k.address),
                kdbg_size: kdbg.as_ref().map(|k| k.size),
                kdbg_source,
                kdbg_problems,
                warnings,
                processors: stop.number_processors,
                stop,
                modules,
                bugcheck,
                unloaded_modules,
                unloaded_problem,
                debug_output: s.debug_output().to_vec(),
                resumed,
                stops: Vec::new(),
            })
        },
    )
    .await?;
    info.stops = target.stops().to_vec();
    Ok(info)
}

/// WinDbg's backquoted 64-bit address: `fffff803`12400000`.
fn tick(address: u64) -> String {
    format!("{:08x}`{:08x}", address >> 32, address & 0xffff_ffff)
}

impl TargetInfo {
    /// The text report: a header, then the module list like `lm`.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Connection:          {}", self.connection);
        let _ = writeln!(
            out,
            "Build:               {} ({}), {}, KD protocol {}",
            self.build,
            if self.checked_build {
                "checked"
            } else {
                "free"
            },
            self.machine,
            self.protocol_version
        );
        let _ = writeln!(out, "Kernel base:         {:#x}", self.kernel_base);
        let _ = writeln!(
            out,
            "PsLoadedModuleList:  {:#x}",
            self.ps_loaded_module_list
        );
        let _ = writeln!(out, "KDBG:                {}", self.kdbg_line());
        let _ = writeln!(out, "Processors:          {}", self.processors);
        let _ = writeln!(
            out,
            "Stopped at:          {:#x} on processor {}{}",
            self.stop.program_counter,
            self.stop.processor,
            self.stop
                .exception_code
                .map(|c| format!(" (exception {c:#010x})"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "Target:              {}, {}",
            if self.resumed {
                "resumed"
            } else {
                "left stopped (--stay-broken)"
            },
            crate::report::text::frozen_summary(&self.stops)
        );
        if let Some(stop) = &self.bugcheck {
            let _ = writeln!(
                out,
                "Bug check:           {} ({}, {}, {}, {}){}",
                stop.title(),
                stop.parameters[0],
                stop.parameters[1],
                stop.parameters[2],
                stop.parameters[3],
                stop.meaning
                    .as_ref()
                    .map(|m| format!(": {m}: {}", stop.driver.as_deref().unwrap_or("?")))
                    .unwrap_or_default()
            );
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "Warning:             {warning}");
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "start             end                 module name           pdb                          guid                                   age"
        );
        for m in &self.modules.modules {
            let (pdb, guid, age) = match &m.pdb {
                Some(p) => (p.file_name().to_string(), p.guid.clone(), p.age.to_string()),
                None => (
                    m.pdb_error
                        .as_deref()
                        .map(|_| "(headers unreadable)".to_string())
                        .unwrap_or_else(|| "(no pdb)".into()),
                    String::new(),
                    String::new(),
                ),
            };
            let _ = writeln!(
                out,
                "{} {}   {:<20}  {:<28} {:<38} {}",
                tick(m.base),
                tick(m.end()),
                m.name,
                pdb,
                guid,
                age
            );
        }
        if let Some(problem) = &self.modules.problem {
            let _ = writeln!(out, "(module list incomplete: {problem})");
        }
        if !self.unloaded_modules.is_empty() || self.unloaded_problem.is_some() {
            let _ = writeln!(out);
            let _ = writeln!(out, "Unloaded modules:");
        }
        for gone in &self.unloaded_modules {
            let _ = writeln!(
                out,
                "{} {}   {}",
                tick(gone.start),
                tick(gone.end),
                gone.name
            );
        }
        if let Some(problem) = &self.unloaded_problem {
            let _ = writeln!(out, "(unloaded-driver list unreadable: {problem})");
        }
        for line in &self.debug_output {
            let _ = writeln!(out, "DbgPrint: {}", line.trim_end());
        }
        out
    }

    /// Where KDBG is, and where it was found when that was not the debugger data list; or that
    /// it was not found, and why.
    fn kdbg_line(&self) -> String {
        let problems = self.kdbg_problems.join("; ");
        match (self.kdbg_address, self.kdbg_source) {
            (Some(address), Some(source)) if !problems.is_empty() => format!(
                "{address:#x} (size {:#x}, found through {}; {problems})",
                self.kdbg_size.unwrap_or(0),
                source.describe()
            ),
            (Some(address), _) => {
                format!("{address:#x} (size {:#x})", self.kdbg_size.unwrap_or(0))
            }
            (None, _) => format!("not found ({problems})"),
        }
    }

    /// The JSON document (addresses as `0x…` strings).
    pub fn render_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("TargetInfo serialises")
    }
}
