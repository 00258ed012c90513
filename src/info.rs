//! `kdleak info CONN`: attach, read the target's identity and module list, resume.

use std::fmt::Write as _;

use kdproto::api::{IMAGE_FILE_MACHINE_AMD64, IMAGE_FILE_MACHINE_ARM64, IMAGE_FILE_MACHINE_I386};
use serde::Serialize;
use tracing::warn;

use crate::connect::ConnectSpec;
use std::path::Path;
use std::sync::Arc;

use crate::kernel::{serde_hex, ModuleList};
use crate::kernel_context::KernelContext;
use crate::session::{self, shutdown_signal, Error, Session, SessionOptions, StopInfo};
use crate::symbols::{Element, SymbolOptions, Symbols};
use crate::transport::{self, OpenOptions, Transport};

/// How long an interrupted attach waits for a break-in already sent to stop the target.
const SETTLE_AFTER_INTERRUPT: std::time::Duration = std::time::Duration::from_secs(2);

/// Options of `kdleak info`.
#[derive(Debug, Clone, Default)]
pub struct InfoOptions {
    pub open: OpenOptions,
    pub session: SessionOptions,
    /// How to find PDBs; `None`: `_NT_ALT_SYMBOL_PATH`/`_NT_SYMBOL_PATH` and the default cache.
    pub symbols: Option<SymbolOptions>,
}

impl InfoOptions {
    /// The symbol loader, with `extra_dir` (e.g. the simulated target's fixtures) searched first.
    pub fn symbol_loader(&self, extra_dir: Option<&Path>) -> session::Result<Arc<Symbols>> {
        let mut options = match &self.symbols {
            Some(options) => options.clone(),
            None => SymbolOptions::new(None)
                .map_err(|e| Error::TargetData(format!("symbol path: {e}")))?,
        };
        if let Some(dir) = extra_dir {
            options
                .path
                .elements
                .insert(0, Element::Dir(dir.to_path_buf()));
        }
        Ok(Arc::new(Symbols::new(options)))
    }
}

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
    #[serde(serialize_with = "serde_hex::u64")]
    pub kdbg_address: u64,
    pub kdbg_size: u32,
    pub processors: u32,
    pub stop: StopInfo,
    pub modules: ModuleList,
    pub debug_output: Vec<String>,
    /// False only with `--stay-broken`.
    pub resumed: bool,
}

fn machine_name(machine: u16) -> String {
    match machine {
        IMAGE_FILE_MACHINE_AMD64 => "x64".into(),
        IMAGE_FILE_MACHINE_ARM64 => "arm64".into(),
        IMAGE_FILE_MACHINE_I386 => "x86".into(),
        other => format!("{other:#06x}"),
    }
}

/// Opens `spec`, then [`run_on`]. SIGINT/SIGTERM while connecting abort with
/// [`Error::Interrupted`].
pub async fn run(spec: &ConnectSpec, options: &InfoOptions) -> session::Result<TargetInfo> {
    if let ConnectSpec::Sim { scenario } = spec {
        let (transport, sim) =
            transport::embedded_sim::start(scenario.as_deref(), options.open.connect_timeout)
                .await?;
        let symbols = options.symbol_loader(Some(sim.symbol_dir()))?;
        let result = run_with(transport, options, symbols).await;
        if let Err(error) = sim.shutdown().await {
            warn!(%error, "simulated target did not stop cleanly");
        }
        return result;
    }
    let transport = tokio::select! {
        transport = transport::open(spec, &options.open) => transport?,
        name = signal(options.session.handle_signals) => return Err(Error::Interrupted(name)),
    };
    run_on(transport, options).await
}

/// Attaches over an open transport, collects [`TargetInfo`] while stopped, and resumes (unless
/// `stay_broken`) on every exit path.
pub async fn run_on(transport: Transport, options: &InfoOptions) -> session::Result<TargetInfo> {
    let symbols = options.symbol_loader(None)?;
    run_with(transport, options, symbols).await
}

async fn signal(enabled: bool) -> &'static str {
    if enabled {
        shutdown_signal().await
    } else {
        std::future::pending().await
    }
}

async fn run_with(
    transport: Transport,
    options: &InfoOptions,
    symbols: Arc<Symbols>,
) -> session::Result<TargetInfo> {
    let connection = transport.describe();
    let mut session = Session::new(transport, options.session.clone());
    let interrupted = tokio::select! {
        attached = session.break_in() => {
            attached?;
            None
        }
        name = signal(options.session.handle_signals) => Some(name),
    };
    if let Some(name) = interrupted {
        // A break-in may already be on its way: resume the stop it causes before leaving.
        if let Err(error) = session
            .settle_abandoned_attach(SETTLE_AFTER_INTERRUPT)
            .await
        {
            warn!(%error, "could not settle the abandoned attach");
        }
        return Err(Error::Interrupted(name));
    }
    let resumed = !options.session.stay_broken;
    session
        .run_stopped(async move |s: &mut Session| collect(s, connection, resumed, &symbols).await)
        .await
}

async fn collect(
    s: &mut Session,
    connection: String,
    resumed: bool,
    symbols: &Arc<Symbols>,
) -> session::Result<TargetInfo> {
    let KernelContext {
        version,
        kdbg,
        module_list_head: head,
        modules,
        ..
    } = KernelContext::load(s, symbols).await?;
    let stop = s.stop().cloned().ok_or(Error::NotStopped)?;
    Ok(TargetInfo {
        connection,
        build: version.build(),
        checked_build: version.is_checked_build(),
        machine: machine_name(version.machine_type),
        protocol_version: version.protocol_version,
        kernel_base: version.kern_base,
        ps_loaded_module_list: head,
        kdbg_address: kdbg.address,
        kdbg_size: kdbg.size,
        processors: stop.number_processors,
        stop,
        modules,
        debug_output: s.debug_output().to_vec(),
        resumed,
    })
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
        let _ = writeln!(
            out,
            "KDBG:                {:#x} (size {:#x})",
            self.kdbg_address, self.kdbg_size
        );
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
            "Target:              {}",
            if self.resumed {
                "resumed"
            } else {
                "left stopped (--stay-broken)"
            }
        );
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
        for line in &self.debug_output {
            let _ = writeln!(out, "DbgPrint: {}", line.trim_end());
        }
        out
    }

    /// The JSON document (addresses as `0x…` strings).
    pub fn render_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("TargetInfo serialises")
    }
}
