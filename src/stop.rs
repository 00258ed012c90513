//! One stop of a target, shared by every command that breaks in: open the connection (or start
//! the embedded simulator), break in, do the work with the symbol loader at hand, and resume on
//! every exit path (`Session::run_stopped`).

use std::path::Path;
use std::sync::Arc;

use tracing::warn;

use crate::connect::ConnectSpec;
use crate::session::{self, shutdown_signal, Error, Session, SessionOptions};
use crate::symbols::{Element, SymbolOptions, Symbols};
use crate::transport::{self, OpenOptions, Transport};

/// How long an interrupted attach waits for a break-in already sent to stop the target.
const SETTLE_AFTER_INTERRUPT: std::time::Duration = std::time::Duration::from_secs(2);

/// How to reach the target, how to talk to it, and where its symbols are.
#[derive(Debug, Clone, Default)]
pub struct StopOptions {
    pub open: OpenOptions,
    pub session: SessionOptions,
    /// How to find PDBs; `None`: `_NT_ALT_SYMBOL_PATH`/`_NT_SYMBOL_PATH` and the default cache.
    pub symbols: Option<SymbolOptions>,
}

impl StopOptions {
    /// The symbol loader, with `extra_dir` (e.g. the simulated target's fixtures) searched first.
    pub fn symbol_loader(&self, extra_dir: Option<&Path>) -> session::Result<Arc<Symbols>> {
        symbol_loader(self.symbols.as_ref(), extra_dir)
    }
}

/// A symbol loader for `options` (`None`: `_NT_ALT_SYMBOL_PATH`/`_NT_SYMBOL_PATH` and the
/// default cache), with `extra_dir` searched first. Shared with `analyze`, which has no stop.
pub fn symbol_loader(
    options: Option<&SymbolOptions>,
    extra_dir: Option<&Path>,
) -> session::Result<Arc<Symbols>> {
    let mut options = match options {
        Some(options) => options.clone(),
        None => {
            SymbolOptions::new(None).map_err(|e| Error::TargetData(format!("symbol path: {e}")))?
        }
    };
    if let Some(dir) = extra_dir {
        options
            .path
            .elements
            .insert(0, Element::Dir(dir.to_path_buf()));
    }
    Ok(Arc::new(Symbols::new(options)))
}

/// What the work gets while the target is stopped, besides the session.
pub struct StopContext {
    pub symbols: Arc<Symbols>,
    /// How the target was reached, for reports (no key material).
    pub connection: String,
    /// False with `--stay-broken`.
    pub resumes: bool,
}

/// Opens `spec` (starting the embedded simulator for `sim`), breaks in, runs `work`, resumes.
/// SIGINT/SIGTERM while connecting abort with [`Error::Interrupted`].
pub async fn with_stopped_target<T>(
    spec: &ConnectSpec,
    options: &StopOptions,
    work: impl AsyncFnOnce(&mut Session, StopContext) -> session::Result<T>,
) -> session::Result<T> {
    if let ConnectSpec::Sim { scenario } = spec {
        let (transport, sim) =
            transport::embedded_sim::start(scenario.as_deref(), options.open.connect_timeout)
                .await?;
        let symbols = options.symbol_loader(Some(sim.symbol_dir()))?;
        let result = with_stopped_transport(transport, options, symbols, work).await;
        if let Err(error) = sim.shutdown().await {
            warn!(%error, "simulated target did not stop cleanly");
        }
        return result;
    }
    let transport = tokio::select! {
        transport = transport::open(spec, &options.open) => transport?,
        name = signal(options.session.handle_signals) => return Err(Error::Interrupted(name)),
    };
    let symbols = options.symbol_loader(None)?;
    with_stopped_transport(transport, options, symbols, work).await
}

/// Breaks in over an open transport, runs `work`, and resumes (unless `stay_broken`) on every
/// exit path.
pub async fn with_stopped_transport<T>(
    transport: Transport,
    options: &StopOptions,
    symbols: Arc<Symbols>,
    work: impl AsyncFnOnce(&mut Session, StopContext) -> session::Result<T>,
) -> session::Result<T> {
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
    let context = StopContext {
        symbols,
        connection,
        resumes: !options.session.stay_broken,
    };
    session
        .run_stopped(async move |s: &mut Session| work(s, context).await)
        .await
}

async fn signal(enabled: bool) -> &'static str {
    if enabled {
        shutdown_signal().await
    } else {
        std::future::pending().await
    }
}
