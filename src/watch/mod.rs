//! `kdleak watch CONN`: periodic pulls while a leak repro runs. Each poll breaks in, pulls,
//! and resumes (the target runs between polls); the connection, the kernel context (module
//! list, kernel PDB) and the allocation log stay between polls, so a poll re-reads the verifier
//! state and tracker pages but only the log records written since the previous one.
//!
//! * [`series`] — one JSONL record per poll, deltas per allocation site, suspected leaks.
//! * [`html`] — the self-contained report page (inline SVG chart, suspected leaks' stacks).
//!
//! Robustness: a failing poll is retried with backoff over a new connection until
//! `give_up_after`; the next good poll carries a [`series::Discontinuity`] (`gap`,
//! `reconnect`, or `reboot` when the target's counters and log restarted). SIGINT/SIGTERM
//! (with `handle_signals`) finish the current stop — the target is resumed — write the
//! report, and end the watch.

pub mod fleet;
pub mod html;
pub mod metrics;
pub mod series;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::connect::ConnectSpec;
use crate::kernel_context::KernelContext;
use crate::kernel_stop::stop_with_kernel;
use crate::report::{self, GroupBy};
use crate::session::{self, Error, Interrupt, Session};
use crate::stop::{StopOptions, Target};
use crate::symbols::Symbols;
use crate::transport::{self, embedded_sim::EmbeddedSim};
use crate::verifier::{self, LeakReport, PullCache, PullOptions};

pub use series::{Discontinuity, PollCost, PollRecord, SiteRecord, SuspectedLeak, Tracker};

/// What to watch and how.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub stop: StopOptions,
    pub pull: PullOptions,
    /// Time between the starts of two polls.
    pub interval: Duration,
    /// Stop after this many polls.
    pub count: Option<u64>,
    /// Stop when the next poll would start later than this after the first.
    pub duration: Option<Duration>,
    /// The JSONL series (truncated at the start, then one line appended per poll). `None` in a
    /// fleet, where the records go to the observers (one tagged stream).
    pub out: Option<PathBuf>,
    /// The HTML report, rewritten atomically after every poll.
    pub report: Option<PathBuf>,
    /// End the watch with [`WatchEnd::GrowthExceeded`] once outstanding bytes grew more than
    /// this since the first poll of the boot.
    pub fail_on_growth: Option<u64>,
    pub group_by: GroupBy,
    /// Consecutive growing polls that flag a site as a suspected leak.
    pub growth_polls: u32,
    /// Print one line per poll on stderr.
    pub live: bool,
    /// First retry delay after a failed poll (doubles up to `max_backoff`).
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Give up (connection error, exit 3) after failing this long without a good poll.
    pub give_up_after: Duration,
    /// The target's name in what the observers are told (a fleet's target name; `target` for a
    /// single watch).
    pub name: String,
    /// A symbol loader shared with other watches of the same process (a fleet): one PDB cache.
    /// `None`: the watch makes its own from `stop.symbols`.
    pub symbols: Option<SharedSymbols>,
    /// Told about every poll (the fleet's stream and pages, the Prometheus metrics).
    pub observers: Observers,
    /// Retry failures before the first good poll too (a fleet: a lab machine that is off when the
    /// watch starts is waited for). A single watch fails fast: its setup is wrong.
    pub retry_setup: bool,
}

/// Something told about each poll of a watch, from the watch's task; must not block.
pub trait Observer: Send + Sync {
    /// A poll ended (`record.ok` says how), after `poll_s` seconds of its last attempt.
    fn poll(&self, event: &PollEvent<'_>);
}

/// One poll, as observers see it.
pub struct PollEvent<'a> {
    pub target: &'a str,
    /// How the target is reached (no key material).
    pub connection: &'a str,
    pub record: &'a PollRecord,
    /// Seconds the poll's last attempt took (connect, stops, reads, symbolization).
    pub poll_s: f64,
    pub meta: &'a html::Meta,
    /// A failed attempt that will be retried: not a record of the series (the poll's record
    /// comes when an attempt succeeds or the watch gives up), but the target is unreachable now.
    pub retrying: bool,
}

/// A symbol loader several watches share.
#[derive(Clone)]
pub struct SharedSymbols(pub Arc<Symbols>);

impl std::fmt::Debug for SharedSymbols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSymbols")
    }
}

/// The observers of a watch.
#[derive(Clone, Default)]
pub struct Observers(pub Vec<Arc<dyn Observer>>);

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Observers({})", self.0.len())
    }
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            stop: StopOptions::default(),
            pull: PullOptions::default(),
            interval: Duration::from_secs(60),
            count: None,
            duration: None,
            out: Some(PathBuf::from("series.jsonl")),
            report: None,
            fail_on_growth: None,
            group_by: GroupBy::Caller,
            growth_polls: 3,
            live: true,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            give_up_after: Duration::from_secs(600),
            name: "target".into(),
            symbols: None,
            observers: Observers::default(),
            retry_setup: false,
        }
    }
}

/// How a watch ended.
#[derive(Debug)]
pub enum WatchEnd {
    /// The count or duration was reached.
    Finished,
    /// `fail_on_growth` was exceeded (exit 1).
    GrowthExceeded { growth: i64, limit: u64 },
    /// SIGINT/SIGTERM (exit 130); the target was resumed and the report written.
    Interrupted(&'static str),
    /// Polls kept failing (connection: exit 3), or target data/symbols unusable (exit 4).
    Failed(Error),
}

impl WatchEnd {
    /// The README's exit-code scheme.
    pub fn exit_code(&self) -> u8 {
        match self {
            WatchEnd::Finished => 0,
            WatchEnd::GrowthExceeded { .. } => 1,
            WatchEnd::Interrupted(_) => 130,
            WatchEnd::Failed(error) => error.exit_code(),
        }
    }
}

/// The result of a watch: every poll record, the last successful poll's report (what
/// `!verifier 3` would show at the end), and how it ended.
#[derive(Debug)]
pub struct WatchOutcome {
    pub records: Vec<PollRecord>,
    pub last_report: Option<LeakReport>,
    pub end: WatchEnd,
}

/// An open connection: the session and, for `sim`, the in-process target behind it.
struct Conn {
    session: Session,
    _sim: Option<EmbeddedSim>,
}

/// What is valid for one boot of the target on one connection.
#[derive(Default)]
struct BootState {
    kernel: Option<KernelContext>,
    cache: PullCache,
}

async fn connect(
    spec: &ConnectSpec,
    options: &StopOptions,
    symbols: &mut Option<Arc<Symbols>>,
    interrupt: &Interrupt,
) -> session::Result<Conn> {
    if let ConnectSpec::Sim { scenario } = spec {
        let (transport, sim) =
            transport::embedded_sim::start(scenario.as_deref(), options.open.connect_timeout)
                .await?;
        if symbols.is_none() {
            *symbols = Some(options.symbol_loader(Some(sim.symbol_dir()))?);
        }
        return Ok(Conn {
            session: Session::new(transport, options.session.clone()),
            _sim: Some(sim),
        });
    }
    let transport = tokio::select! {
        transport = transport::open(spec, &options.open) => transport?,
        name = interrupt.wait() => return Err(Error::Interrupted(name)),
    };
    if symbols.is_none() {
        *symbols = Some(options.symbol_loader(None)?);
    }
    Ok(Conn {
        session: Session::new(transport, options.session.clone()),
        _sim: None,
    })
}

/// One poll over an open connection: break in, pull (incrementally), resume, symbolize. The
/// first poll of a boot identifies the kernel, and when this host lacks its PDB, fetches it while
/// the target runs between two stops ([`stop_with_kernel`]); later polls of the boot stop once.
async fn poll_once(
    session: &mut Session,
    boot: &mut BootState,
    symbols: &Arc<Symbols>,
    pull: &PullOptions,
    interrupt: &Interrupt,
) -> (session::Result<LeakReport>, PollCost) {
    let before = session.stats().clone();
    let mut target = Target::new(session, Arc::clone(symbols), interrupt);
    let BootState { kernel, cache } = boot;
    let result = async {
        let connection = target.connection().to_string();
        let mut read = async |s: &mut Session, kernel: &KernelContext| {
            let options = PullOptions {
                connection: connection.clone(),
                processors: s.stop().map_or(0, |stop| stop.number_processors),
                ..pull.clone()
            };
            session::Result::Ok(verifier::read_with(s, kernel, &options, cache).await?)
        };
        let mut report = match kernel.as_ref() {
            Some(known) => {
                target
                    .stop(async |s: &mut Session| read(s, known).await)
                    .await?
            }
            None => {
                let (report, loaded) = stop_with_kernel(
                    &mut target,
                    async |s: &mut Session, _version, loaded: KernelContext| {
                        Ok((read(s, &loaded).await?, loaded))
                    },
                )
                .await?;
                *kernel = Some(loaded);
                report
            }
        };
        let loaded = kernel.as_ref().expect("loaded above");
        target
            .run_outside(async {
                verifier::symbolize_report_with(&mut report, loaded, symbols, &pull.images).await;
                Ok(())
            })
            .await?;
        report.target.stops = target.stops().to_vec();
        report.target.outside_s = Some(target.outside_s());
        Ok(report)
    }
    .await;
    let stops = target.stops().to_vec();
    let after = target.session().stats();
    let cost = PollCost {
        bytes_in: after.bytes_in - before.bytes_in,
        bytes_out: after.bytes_out - before.bytes_out,
        requests: after.requests - before.requests,
        log_read: boot.cache.last_log_read,
        stops: stops.len() as u32,
        frozen_s: stops.iter().map(|stop| stop.frozen_s).sum(),
    };
    (result, cost)
}

/// Whether a failed poll is worth retrying over a new connection.
/// Which step of a poll attempt failed.
#[derive(Clone, Copy)]
enum Step {
    Connect,
    Poll,
}

fn retryable(error: &Error, had_good_poll: bool) -> bool {
    if !had_good_poll {
        // The first poll fails fast, as attach does: the setup is wrong.
        return false;
    }
    match error {
        Error::Interrupted(_) => false,
        Error::ResumeFailed { error, .. } => retryable(error, had_good_poll),
        // Target data that was readable before may be a reboot caught mid-read.
        _ => true,
    }
}

/// Appends one line with a single write, then flushes it to disk.
fn append_line(file: &mut File, record: &PollRecord) -> std::io::Result<()> {
    let mut line = serde_json::to_string(record).map_err(std::io::Error::other)?;
    line.push('\n');
    file.write_all(line.as_bytes())?;
    file.flush()?;
    file.sync_data()
}

/// Runs the watch. I/O errors on the output files are returned as `Err`; everything about
/// the target ends up in [`WatchOutcome::end`].
pub async fn run(spec: &ConnectSpec, options: &WatchOptions) -> std::io::Result<WatchOutcome> {
    let mut out = match &options.out {
        Some(path) => Some(
            OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(path)?,
        ),
        None => None,
    };
    let interrupt = Interrupt::new(options.stop.session.handle_signals);
    let started = Instant::now();
    let mut symbols: Option<Arc<Symbols>> = options.symbols.as_ref().map(|s| Arc::clone(&s.0));
    let mut conn: Option<Conn> = None;
    let mut boot = BootState::default();
    let mut tracker = Tracker::new(options.group_by, options.growth_polls);
    let mut records: Vec<PollRecord> = Vec::new();
    let mut last_report: Option<LeakReport> = None;
    let mut poll = 0u64;
    let mut had_good_poll = false;
    let mut last_start: Option<Instant> = None;
    let mut meta = html::Meta {
        connection: String::new(),
        interval_s: options.interval.as_secs_f64(),
        growth_polls: options.growth_polls,
        group_by: options.group_by.as_str().to_string(),
        fail_on_growth: options.fail_on_growth,
    };
    let end = 'watch: loop {
        if let Some(name) = interrupt.fired() {
            break WatchEnd::Interrupted(name);
        }
        if options.count.is_some_and(|n| poll >= n) {
            break WatchEnd::Finished;
        }
        if let Some(last) = last_start {
            let scheduled = (last + options.interval).max(Instant::now());
            if options
                .duration
                .is_some_and(|d| scheduled.duration_since(started) > d)
            {
                break WatchEnd::Finished;
            }
            tokio::select! {
                () = tokio::time::sleep_until(scheduled) => {}
                name = interrupt.wait() => break WatchEnd::Interrupted(name),
            }
        }
        last_start = Some(Instant::now());
        poll += 1;

        // One poll: attempts until one succeeds or the failures last too long.
        let mut failures = 0u32;
        let mut backoff = options.backoff;
        let mut last_error = String::new();
        let first_attempt = Instant::now();
        let mut reconnected = false;
        let mut attempt;
        let (report, cost) = 'poll: loop {
            attempt = Instant::now();
            // An attempt connects if it must, then polls; either step's failure ends up below.
            let (error, cost, step) = 'attempt: {
                if conn.is_none() {
                    match connect(spec, &options.stop, &mut symbols, &interrupt).await {
                        Ok(c) => {
                            if poll > 1 || failures > 0 {
                                reconnected = true;
                            }
                            meta.connection = c.session.transport().describe();
                            conn = Some(c);
                            boot = BootState::default();
                        }
                        Err(Error::Interrupted(name)) => break 'watch WatchEnd::Interrupted(name),
                        Err(error) => break 'attempt (error, PollCost::default(), Step::Connect),
                    }
                }
                let symbols = symbols.as_ref().expect("set by connect");
                let c = conn.as_mut().expect("connected above");
                let (result, cost) = poll_once(
                    &mut c.session,
                    &mut boot,
                    symbols,
                    &options.pull,
                    &interrupt,
                )
                .await;
                match result {
                    Ok(report) => break 'poll (report, cost),
                    Err(Error::Interrupted(name)) => break 'watch WatchEnd::Interrupted(name),
                    Err(error) => (error, cost, Step::Poll),
                }
            };
            failures += 1;
            last_error = error.to_string();
            let fatal = match step {
                // Before any good poll, a connection that fails is a setup problem.
                Step::Connect if !had_good_poll && !options.retry_setup => {
                    break 'watch WatchEnd::Failed(error);
                }
                Step::Connect => false,
                Step::Poll => !retryable(&error, had_good_poll || options.retry_setup),
            } || first_attempt.elapsed() >= options.give_up_after;
            let record = tracker.failed(
                poll,
                started.elapsed().as_secs_f64(),
                last_error.clone(),
                &cost,
            );
            let poll_s = attempt.elapsed().as_secs_f64();
            if fatal {
                emit(&mut out, &mut records, record, options, &meta, poll_s)?;
                break 'watch WatchEnd::Failed(error);
            }
            // Start over on a new connection: the link state is unknown.
            conn = None;
            boot = BootState::default();
            // Observers see each failed attempt: a target that went away shows at once, not
            // after `give_up_after`.
            notify(options, &meta, &record, poll_s, true);
            match step {
                Step::Connect => {
                    warn!(target = %options.name, %error, failures, "cannot connect; retrying")
                }
                Step::Poll => {
                    warn!(target = %options.name, %error, failures, "poll failed; reconnecting")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                name = interrupt.wait() => break 'watch WatchEnd::Interrupted(name),
            }
            backoff = (backoff * 2).min(options.max_backoff);
        };
        had_good_poll = true;
        let gap_s = if failures > 0 {
            first_attempt.elapsed().as_secs_f64()
        } else {
            0.0
        };
        let discontinuity = if tracker.looks_rebooted(&report) {
            tracker.reset();
            // The module list may be from before the reboot: load it again next time. The log
            // cache is from this boot (the index went back, so it was read in full).
            boot.kernel = None;
            Some(Discontinuity {
                kind: "reboot".into(),
                detail: format!(
                    "the target booted again (verifier counters and log index restarted){}",
                    if failures > 0 {
                        format!("; {failures} failed attempts: {last_error}")
                    } else {
                        String::new()
                    }
                ),
                gap_s,
                failed_attempts: failures,
            })
        } else if reconnected || failures > 0 {
            Some(Discontinuity {
                kind: if reconnected { "reconnect" } else { "gap" }.into(),
                detail: if failures > 0 {
                    format!("{failures} failed attempts: {last_error}")
                } else {
                    "the connection was opened again".into()
                },
                gap_s,
                failed_attempts: failures,
            })
        } else {
            None
        };
        let record = tracker.record(
            poll,
            started.elapsed().as_secs_f64(),
            &report,
            &cost,
            discontinuity,
        );
        let growth = record.growth_bytes;
        let poll_s = attempt.elapsed().as_secs_f64();
        emit(&mut out, &mut records, record, options, &meta, poll_s)?;
        last_report = Some(report);
        if let Some(limit) = options.fail_on_growth {
            if growth > 0 && growth as u64 > limit {
                info!(growth, limit, "growth threshold exceeded");
                break WatchEnd::GrowthExceeded { growth, limit };
            }
        }
    };
    drop(conn);
    if let Some(path) = &options.report {
        report::write_atomically(path, html::render(&records, &meta).as_bytes())?;
    }
    Ok(WatchOutcome {
        records,
        last_report,
        end,
    })
}

/// Tells the observers about a poll.
fn notify(
    options: &WatchOptions,
    meta: &html::Meta,
    record: &PollRecord,
    poll_s: f64,
    retrying: bool,
) {
    let event = PollEvent {
        target: &options.name,
        connection: &meta.connection,
        record,
        poll_s,
        meta,
        retrying,
    };
    for observer in &options.observers.0 {
        observer.poll(&event);
    }
}

/// Appends the record to the series, shows it, tells the observers, and refreshes the HTML
/// report.
fn emit(
    out: &mut Option<File>,
    records: &mut Vec<PollRecord>,
    record: PollRecord,
    options: &WatchOptions,
    meta: &html::Meta,
    poll_s: f64,
) -> std::io::Result<()> {
    if let Some(out) = out {
        append_line(out, &record)?;
    }
    if options.live {
        eprintln!("{}", series::live_line(&record));
    }
    notify(options, meta, &record, poll_s, false);
    records.push(record);
    if let Some(path) = &options.report {
        report::write_atomically(path, html::render(records, meta).as_bytes())?;
    }
    Ok(())
}
