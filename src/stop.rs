//! Stopping a target, shared by every command that breaks in: open the connection (or start the
//! embedded simulator), then stop the target as often as the work needs — each stop a break-in,
//! the work with the symbol loader at hand, and a resume on every exit path
//! (`Session::run_stopped`) — with the host's other work done while the target runs.
//!
//! A stopped Windows kernel is a frozen machine (network, storage and watchdogs too), so a
//! [`Target`] records how long each stop froze it ([`TargetStop`]) and how long the host worked
//! outside the stops; [`crate::kernel_stop`] uses that to fetch symbols between two short stops
//! instead of inside one long one.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::connect::ConnectSpec;
use crate::session::{self, Error, Interrupt, Session, SessionOptions};
use crate::symbols::{Element, SymbolOptions, Symbols};
use crate::transport::{self, OpenOptions, Transport};
use crate::verifier::{StopPurpose, TargetStop};

/// How long an interrupted attach waits for a break-in already sent to stop the target.
const SETTLE_AFTER_INTERRUPT: Duration = Duration::from_secs(2);

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

/// An open connection on which the work stops the target as often as it needs
/// ([`Target::stop`]) and does host work while it runs ([`Target::run_outside`]), with the time
/// of each recorded.
pub struct Target<'a> {
    session: &'a mut Session,
    symbols: Arc<Symbols>,
    interrupt: &'a Interrupt,
    connection: String,
    stops: Vec<TargetStop>,
    outside: Duration,
    /// CPU time (user + system) this process spent inside the stops.
    stopped_cpu: Duration,
}

/// CPU time (user + system) this process has used so far; zero if the OS will not say. What a
/// stop costs the host, as opposed to how long it took (which other load stretches).
pub fn process_cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) else {
        return Duration::ZERO;
    };
    let micros = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0) as u64)
            + Duration::from_micros(t.tv_usec().max(0) as u64)
    };
    micros(usage.user_time()) + micros(usage.system_time())
}

impl<'a> Target<'a> {
    /// A target reached through `session` (not stopped yet). `interrupt` (SIGINT/SIGTERM) ends
    /// a break-in that has not stopped the target yet and the work outside the stops; inside a
    /// stop, `Session::run_stopped` resumes the target first.
    pub fn new(session: &'a mut Session, symbols: Arc<Symbols>, interrupt: &'a Interrupt) -> Self {
        let connection = session.transport().describe();
        Self {
            session,
            symbols,
            interrupt,
            connection,
            stops: Vec::new(),
            outside: Duration::ZERO,
            stopped_cpu: Duration::ZERO,
        }
    }

    pub fn symbols(&self) -> &Arc<Symbols> {
        &self.symbols
    }

    /// How the target was reached, for reports (no key material).
    pub fn connection(&self) -> &str {
        &self.connection
    }

    /// False with `--stay-broken`: the last stop is left in place.
    pub fn resumes(&self) -> bool {
        !self.session.options().stay_broken
    }

    pub fn session(&self) -> &Session {
        self.session
    }

    /// The stops so far, in order.
    pub fn stops(&self) -> &[TargetStop] {
        &self.stops
    }

    /// CPU seconds (user + system) this process spent inside the stops so far.
    pub fn stopped_cpu_s(&self) -> f64 {
        self.stopped_cpu.as_secs_f64()
    }

    /// Seconds of [`Target::run_outside`] work so far.
    pub fn outside_s(&self) -> f64 {
        self.outside.as_secs_f64()
    }

    /// Says what the last stop turned out to be for (a stop is a `read` until told otherwise),
    /// and whether it found another boot than the stop before it.
    pub fn note_last_stop(&mut self, purpose: StopPurpose, new_boot: bool) {
        if let Some(stop) = self.stops.last_mut() {
            stop.purpose = purpose;
            stop.new_boot = new_boot;
        }
    }

    /// Breaks in, runs `work`, and resumes (unless `stay_broken`) on every exit path; records
    /// how long the target was frozen, from its stop report to the acknowledged Continue.
    pub async fn stop<T>(
        &mut self,
        work: impl AsyncFnOnce(&mut Session) -> session::Result<T>,
    ) -> session::Result<T> {
        if let Some(name) = self.interrupt.fired() {
            return Err(Error::Interrupted(name));
        }
        let interrupted = tokio::select! {
            attached = self.session.break_in() => {
                attached?;
                None
            }
            name = self.interrupt.wait() => Some(name),
        };
        if let Some(name) = interrupted {
            // A break-in may already be on its way: resume the stop it causes before leaving.
            if let Err(error) = self
                .session
                .settle_abandoned_attach(SETTLE_AFTER_INTERRUPT)
                .await
            {
                warn!(%error, "could not settle the abandoned attach");
            }
            return Err(Error::Interrupted(name));
        }
        let stopped = Instant::now();
        let cpu = process_cpu_time();
        let result = self.session.run_stopped(work).await;
        self.stopped_cpu += process_cpu_time().saturating_sub(cpu);
        self.stops.push(TargetStop {
            purpose: StopPurpose::Read,
            frozen_s: stopped.elapsed().as_secs_f64(),
            new_boot: false,
        });
        result
    }

    /// Host work done while the target runs (between stops, or after the last): fetching
    /// symbols, symbolizing. SIGINT/SIGTERM end it with [`Error::Interrupted`]; the target is
    /// running, so nothing needs resuming.
    pub async fn run_outside<T>(
        &mut self,
        work: impl Future<Output = session::Result<T>>,
    ) -> session::Result<T> {
        if let Some(name) = self.interrupt.fired() {
            return Err(Error::Interrupted(name));
        }
        let started = Instant::now();
        let result = tokio::select! {
            result = work => result,
            name = self.interrupt.wait() => Err(Error::Interrupted(name)),
        };
        self.outside += started.elapsed();
        result
    }
}

/// Opens `spec` (starting the embedded simulator for `sim`) and runs `work` with the
/// [`Target`]. SIGINT/SIGTERM while connecting abort with [`Error::Interrupted`].
pub async fn with_target<T>(
    spec: &ConnectSpec,
    options: &StopOptions,
    work: impl AsyncFnOnce(&mut Target<'_>) -> session::Result<T>,
) -> session::Result<T> {
    let interrupt = Interrupt::new(options.session.handle_signals);
    if let ConnectSpec::Sim { scenario } = spec {
        let (transport, sim) =
            transport::embedded_sim::start(scenario.as_deref(), options.open.connect_timeout)
                .await?;
        let symbols = options.symbol_loader(Some(sim.symbol_dir()))?;
        let mut session = Session::new(transport, options.session.clone());
        let result = work(&mut Target::new(&mut session, symbols, &interrupt)).await;
        drop(session);
        if let Err(error) = sim.shutdown().await {
            warn!(%error, "simulated target did not stop cleanly");
        }
        return result;
    }
    let transport = tokio::select! {
        transport = transport::open(spec, &options.open) => transport?,
        name = interrupt.wait() => return Err(Error::Interrupted(name)),
    };
    let symbols = options.symbol_loader(None)?;
    let mut session = Session::new(transport, options.session.clone());
    work(&mut Target::new(&mut session, symbols, &interrupt)).await
}

/// [`with_target`] over a transport that is already open.
pub async fn with_target_on<T>(
    transport: Transport,
    options: &StopOptions,
    symbols: Arc<Symbols>,
    work: impl AsyncFnOnce(&mut Target<'_>) -> session::Result<T>,
) -> session::Result<T> {
    let interrupt = Interrupt::new(options.session.handle_signals);
    let mut session = Session::new(transport, options.session.clone());
    work(&mut Target::new(&mut session, symbols, &interrupt)).await
}

/// Opens `spec` (starting the embedded simulator for `sim`), breaks in, runs `work`, resumes:
/// one stop. SIGINT/SIGTERM while connecting abort with [`Error::Interrupted`].
pub async fn with_stopped_target<T>(
    spec: &ConnectSpec,
    options: &StopOptions,
    work: impl AsyncFnOnce(&mut Session, StopContext) -> session::Result<T>,
) -> session::Result<T> {
    with_target(spec, options, async move |target: &mut Target<'_>| {
        one_stop(target, work).await
    })
    .await
}

/// Breaks in over an open transport, runs `work`, and resumes (unless `stay_broken`) on every
/// exit path.
pub async fn with_stopped_transport<T>(
    transport: Transport,
    options: &StopOptions,
    symbols: Arc<Symbols>,
    work: impl AsyncFnOnce(&mut Session, StopContext) -> session::Result<T>,
) -> session::Result<T> {
    with_target_on(
        transport,
        options,
        symbols,
        async move |target: &mut Target<'_>| one_stop(target, work).await,
    )
    .await
}

async fn one_stop<T>(
    target: &mut Target<'_>,
    work: impl AsyncFnOnce(&mut Session, StopContext) -> session::Result<T>,
) -> session::Result<T> {
    let context = StopContext {
        symbols: Arc::clone(target.symbols()),
        connection: target.connection().to_string(),
        resumes: target.resumes(),
    };
    target
        .stop(async move |s: &mut Session| work(s, context).await)
        .await
}
