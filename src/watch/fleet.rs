//! `kdleak watch --targets lab.toml`: a lab's targets watched by one process.
//!
//! Every target is one [`super::run`] — the single-target watch, unchanged — as its own task on
//! the one tokio runtime (a `LocalSet`): its own connection, session timeouts, retries and
//! backoff, so a target that hangs, reboots or disappears delays no other. Failures before a
//! target's first good poll are retried too (a lab machine may be off when the watch starts)
//! until its `give_up_after`; a target that gives up is reported and the others go on.
//!
//! The polls of all targets go to a writer thread (file I/O and page rendering never block the
//! runtime): one JSONL stream whose records carry `"target"`, one HTML page per target
//! ([`super::html::render`]) and a fleet page (which targets leak, which sites, how fast).
//!
//! The fleet file:
//!
//! ```toml
//! [defaults]             # any per-target setting, for every target
//! interval = "60s"
//! sympath = "srv*/var/cache/symbols*https://msdl.microsoft.com/download/symbols"
//!
//! [[target]]
//! name = "lab01"         # [A-Za-z0-9_.-], unique: the files and labels use it
//! connection = "net:port=50001,key=1.2.3.4"
//! drivers = ["leaky.sys"]
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::warn;

use super::html::{self, escape, Meta};
use super::metrics::Metrics;
use super::series::{human_bytes, live_line, PollRecord};
use super::{Observer, Observers, PollEvent, SharedSymbols, WatchEnd, WatchOptions, WatchOutcome};
use crate::connect::{self, ConnectSpec};
use crate::report::GroupBy;
use crate::stop::StopOptions;
use crate::symbols::{SymbolOptions, Symbols};
use crate::verifier::PullOptions;

/// A fleet file that cannot be used; the message says which target and setting.
#[derive(Debug, Error)]
pub enum FleetError {
    #[error("cannot read the fleet file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the fleet file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("the fleet file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The settings a target may have; `[defaults]` holds the same ones for every target.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Only in `[[target]]`: the target's name (files, labels, the stream's `target`).
    pub name: Option<String>,
    /// Only in `[[target]]`: WinDbg `-k` syntax, as `kdleak attach` takes it.
    pub connection: Option<String>,
    /// The KDNET key (or in the connection string's `key=`), or a file holding it.
    pub key: Option<String>,
    pub key_file: Option<PathBuf>,
    /// Local address for the KDNET UDP port.
    pub bind: Option<std::net::IpAddr>,
    /// Time between polls (`60s`, `5m`).
    pub interval: Option<String>,
    /// Only these verified drivers.
    pub drivers: Option<Vec<String>>,
    pub sympath: Option<String>,
    pub offline: Option<bool>,
    pub force_symbols: Option<bool>,
    pub isf: Option<Vec<PathBuf>>,
    /// Seconds.
    pub symbol_timeout: Option<f64>,
    pub connect_timeout: Option<f64>,
    pub request_timeout: Option<f64>,
    /// Seconds the work while stopped may take.
    pub timeout: Option<f64>,
    pub chunk: Option<usize>,
    /// Retry a failing target this long, then mark it failed (`10m`).
    pub give_up_after: Option<String>,
    pub fail_on_growth: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    #[serde(default)]
    defaults: Settings,
    #[serde(default)]
    target: Vec<Settings>,
}

/// A target of the fleet, ready to watch.
#[derive(Debug, Clone)]
pub struct FleetTarget {
    pub name: String,
    pub spec: ConnectSpec,
    /// The connection string without its key, for pages and logs.
    pub connection: String,
    pub stop: StopOptions,
    pub drivers: Vec<String>,
    pub interval: Duration,
    pub give_up_after: Duration,
    pub fail_on_growth: Option<u64>,
}

/// What the command line adds to every target: the symbol settings given there are defaults
/// below the file's `[defaults]`.
#[derive(Debug, Clone, Default)]
pub struct CommandLineDefaults {
    pub sympath: Option<String>,
    pub offline: bool,
    pub isf: Vec<PathBuf>,
    pub interval: Option<Duration>,
    pub give_up_after: Option<Duration>,
}

/// Reads and checks a fleet file: every target's connection, key and symbol path are parsed
/// before anything connects.
pub fn load(path: &Path, cli: &CommandLineDefaults) -> Result<Vec<FleetTarget>, FleetError> {
    let text = std::fs::read_to_string(path).map_err(|source| FleetError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path, cli)
}

/// [`load`] on text already read (`path` for messages and relative paths).
pub fn parse(
    text: &str,
    path: &Path,
    cli: &CommandLineDefaults,
) -> Result<Vec<FleetTarget>, FleetError> {
    let file: FleetFile = toml::from_str(text).map_err(|e| FleetError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let invalid = |message: String| FleetError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    if file.defaults.name.is_some() || file.defaults.connection.is_some() {
        return Err(invalid(
            "[defaults] cannot have a name or connection; those belong in each [[target]]".into(),
        ));
    }
    if file.target.is_empty() {
        return Err(invalid(
            "no [[target]]: add one table per machine, with name and connection".into(),
        ));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut seen = std::collections::HashSet::new();
    let mut targets = Vec::new();
    for (i, t) in file.target.iter().enumerate() {
        let name = t
            .name
            .clone()
            .ok_or_else(|| invalid(format!("target #{} has no name", i + 1)))?;
        let bad = |what: String| invalid(format!("target {name}: {what}"));
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            || name.starts_with('.')
        {
            return Err(bad(
                "the name must be 1-64 characters of letters, digits, `_`, `-` and `.` (it names \
                 files), not starting with `.`"
                    .into(),
            ));
        }
        if name == "index" {
            return Err(bad("`index` is the fleet page's name; pick another".into()));
        }
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(bad("the name is used twice".into()));
        }
        let d = &file.defaults;
        let connection = t
            .connection
            .clone()
            .ok_or_else(|| bad("no connection (e.g. net:port=50001,key=…)".into()))?;
        let relative = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        };
        let key_file = t.key_file.as_ref().or(d.key_file.as_ref()).map(relative);
        let key =
            match (t.key.as_ref().or(d.key.as_ref()), key_file) {
                (Some(k), _) => Some(k.clone()),
                (None, Some(file)) => Some(std::fs::read_to_string(&file).map_err(|e| {
                    bad(format!("cannot read the key file {}: {e}", file.display()))
                })?),
                (None, None) => None,
            };
        let key = key
            .map(|k| k.trim().parse::<kdproto::kdnet::Key>())
            .transpose()
            .map_err(|e| bad(format!("the KDNET key: {e}")))?;
        let spec = connect::parse(&connection, key).map_err(|e| bad(e.to_string()))?;

        let duration = |field: &str, value: Option<&String>, fallback: Duration| {
            value.map_or(Ok(fallback), |text| {
                crate::duration::parse(text)
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| bad(format!("{field} = \"{text}\" is not a duration (60s, 5m)")))
            })
        };
        let interval = duration(
            "interval",
            t.interval.as_ref().or(d.interval.as_ref()),
            cli.interval.unwrap_or(Duration::from_secs(60)),
        )?;
        let give_up_after = duration(
            "give_up_after",
            t.give_up_after.as_ref().or(d.give_up_after.as_ref()),
            cli.give_up_after.unwrap_or(Duration::from_secs(600)),
        )?;
        let seconds = |field: &str, value: Option<f64>, fallback: f64| {
            let v = value.unwrap_or(fallback);
            if v.is_finite() && v > 0.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(bad(format!("{field} must be a positive number of seconds")))
            }
        };

        let sympath = t
            .sympath
            .clone()
            .or(d.sympath.clone())
            .or(cli.sympath.clone());
        let mut symbols = SymbolOptions::new(sympath.as_deref())
            .map_err(|e| bad(format!("the symbol path: {e}")))?;
        symbols.offline = t.offline.or(d.offline).unwrap_or(cli.offline);
        symbols.force = t.force_symbols.or(d.force_symbols).unwrap_or(false);
        symbols.timeout = seconds(
            "symbol_timeout",
            t.symbol_timeout.or(d.symbol_timeout),
            30.0,
        )?;
        // Many targets loading symbols at once: no progress bars over each other.
        symbols.progress = false;
        let packs: Vec<PathBuf> = t
            .isf
            .as_ref()
            .or(d.isf.as_ref())
            .map(|v| v.iter().map(relative).collect())
            .unwrap_or_else(|| cli.isf.clone());
        for pack in &packs {
            if !(pack.is_dir() || pack.is_file()) {
                return Err(bad(format!(
                    "isf {}: no such directory or zip file",
                    pack.display()
                )));
            }
        }
        symbols.isf = packs.into_iter().chain(symbols.isf).collect();

        let mut stop = StopOptions {
            symbols: Some(symbols),
            ..StopOptions::default()
        };
        if let Some(bind) = t.bind.or(d.bind) {
            stop.open.bind = bind;
        }
        let connect_timeout = seconds(
            "connect_timeout",
            t.connect_timeout.or(d.connect_timeout),
            30.0,
        )?;
        stop.open.connect_timeout = connect_timeout;
        stop.session.connect_timeout = connect_timeout;
        stop.session.request_timeout = seconds(
            "request_timeout",
            t.request_timeout.or(d.request_timeout),
            10.0,
        )?;
        stop.session.overall_timeout = match t.timeout.or(d.timeout) {
            Some(v) => Some(seconds("timeout", Some(v), v)?),
            None => None,
        };
        stop.session.read_chunk = t.chunk.or(d.chunk);
        targets.push(FleetTarget {
            connection: without_key(&connection),
            name,
            spec,
            stop,
            drivers: t.drivers.clone().or(d.drivers.clone()).unwrap_or_default(),
            interval,
            give_up_after,
            fail_on_growth: t.fail_on_growth.or(d.fail_on_growth),
        });
    }
    Ok(targets)
}

/// The connection string with any `key=` value hidden.
fn without_key(connection: &str) -> String {
    let (kind, rest) = connection.split_once(':').unwrap_or((connection, ""));
    if rest.is_empty() {
        return connection.to_string();
    }
    let parts: Vec<String> = rest
        .split(',')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.trim().eq_ignore_ascii_case("key") => format!("{k}=…"),
            _ => p.to_string(),
        })
        .collect();
    format!("{kind}:{}", parts.join(","))
}

/// What applies to the whole fleet.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    pub growth_polls: u32,
    pub group_by: GroupBy,
    /// The one JSONL stream (each record with `"target"`).
    pub out: PathBuf,
    /// A directory for the pages: `index.html` (the fleet) and `<target>.html`.
    pub report_dir: Option<PathBuf>,
    /// One line per poll on stderr, prefixed with the target.
    pub live: bool,
    pub metrics: Option<Arc<Metrics>>,
    pub handle_signals: bool,
}

/// How each target's watch ended.
#[derive(Debug)]
pub struct FleetOutcome {
    pub targets: Vec<(String, std::io::Result<WatchOutcome>)>,
}

impl FleetOutcome {
    /// 130 when interrupted, else 1 when a target's growth passed its limit, else the code of
    /// a target that failed (3 connection, 4 target data), else 0.
    pub fn exit_code(&self) -> u8 {
        let ends: Vec<&WatchEnd> = self
            .targets
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok().map(|o| &o.end))
            .collect();
        if ends.iter().any(|e| matches!(e, WatchEnd::Interrupted(_))) {
            return 130;
        }
        if ends
            .iter()
            .any(|e| matches!(e, WatchEnd::GrowthExceeded { .. }))
        {
            return 1;
        }
        if self.targets.iter().any(|(_, r)| r.is_err()) {
            return 4;
        }
        ends.iter().map(|e| e.exit_code()).max().unwrap_or(0)
    }
}

/// What the writer thread is told.
enum Message {
    Poll {
        target: String,
        connection: String,
        record: Box<PollRecord>,
        meta: Box<Meta>,
        retrying: bool,
    },
    Ended {
        target: String,
        how: String,
    },
}

/// Sends every poll to the writer thread.
struct Channel(mpsc::Sender<Message>);

impl Observer for Channel {
    fn poll(&self, event: &PollEvent<'_>) {
        let _ = self.0.send(Message::Poll {
            target: event.target.to_string(),
            connection: event.connection.to_string(),
            record: Box::new(event.record.clone()),
            meta: Box::new(event.meta.clone()),
            retrying: event.retrying,
        });
    }
}

/// Watches every target until each ends; returns how each did. `Err` only when the stream
/// cannot be created.
pub async fn run(
    targets: Vec<FleetTarget>,
    options: &FleetOptions,
) -> std::io::Result<FleetOutcome> {
    if let Some(dir) = &options.report_dir {
        std::fs::create_dir_all(dir)?;
    }
    let stream = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&options.out)?;
    let (send, receive) = mpsc::channel();
    let page_targets: Vec<(String, String)> = targets
        .iter()
        .map(|t| (t.name.clone(), t.connection.clone()))
        .collect();
    let writer = {
        let report_dir = options.report_dir.clone();
        let live = options.live;
        std::thread::Builder::new()
            .name("kdleak-fleet-writer".into())
            .spawn(move || writer(receive, stream, report_dir, live, page_targets))?
    };

    // One loader (one PDB cache) per distinct symbol setting: 32 targets of one build parse the
    // kernel PDB once.
    let mut loaders: BTreeMap<String, SharedSymbols> = BTreeMap::new();
    let mut watches = Vec::new();
    for target in &targets {
        if let Some(metrics) = &options.metrics {
            metrics.declare(&target.name);
        }
        let symbols = match (&target.spec, &target.stop.symbols) {
            // The in-process simulator adds its own fixture directory to the path.
            (ConnectSpec::Sim { .. }, _) | (_, None) => None,
            (_, Some(symbol_options)) => Some(
                loaders
                    .entry(format!("{symbol_options:?}"))
                    .or_insert_with(|| {
                        SharedSymbols(Arc::new(Symbols::new(symbol_options.clone())))
                    })
                    .clone(),
            ),
        };
        let mut observers = vec![Arc::new(Channel(send.clone())) as Arc<dyn Observer>];
        if let Some(metrics) = &options.metrics {
            observers.push(Arc::clone(metrics) as Arc<dyn Observer>);
        }
        let mut stop = target.stop.clone();
        stop.session.handle_signals = options.handle_signals;
        let watch = WatchOptions {
            stop,
            pull: PullOptions {
                drivers: target.drivers.clone(),
                no_log: false,
                history_limit: 1,
                connection: String::new(),
                until_stacks: false,
                progress: false,
                processors: 0,
                bug_check: None,
                images: Vec::new(),
            },
            interval: target.interval,
            count: options.count,
            duration: options.duration,
            out: None,
            report: None,
            fail_on_growth: target.fail_on_growth,
            group_by: options.group_by,
            growth_polls: options.growth_polls,
            live: false,
            give_up_after: target.give_up_after,
            name: target.name.clone(),
            symbols,
            observers: Observers(observers),
            retry_setup: true,
            ..WatchOptions::default()
        };
        watches.push((target.name.clone(), target.spec.clone(), watch));
    }

    let local = tokio::task::LocalSet::new();
    let results = local
        .run_until(async {
            let handles: Vec<_> = watches
                .into_iter()
                .map(|(name, spec, watch)| {
                    let send = send.clone();
                    let handle = tokio::task::spawn_local(async move {
                        let started = Instant::now();
                        let result = super::run(&spec, &watch).await;
                        let how = match &result {
                            Ok(outcome) => match &outcome.end {
                                WatchEnd::Finished => "finished".to_string(),
                                WatchEnd::GrowthExceeded { growth, limit } => {
                                    format!("growth {growth} bytes passed the limit {limit}")
                                }
                                WatchEnd::Interrupted(signal) => format!("interrupted by {signal}"),
                                WatchEnd::Failed(error) => format!(
                                    "given up after {:.0} s: {error}",
                                    started.elapsed().as_secs_f64()
                                ),
                            },
                            Err(error) => format!("stopped: {error}"),
                        };
                        let _ = send.send(Message::Ended {
                            target: watch.name.clone(),
                            how,
                        });
                        result
                    });
                    (name, handle)
                })
                .collect();
            let mut results = Vec::new();
            for (name, handle) in handles {
                let result = match handle.await {
                    Ok(result) => result,
                    Err(error) => {
                        warn!(target = %name, %error, "the target's watch ended abnormally");
                        Err(std::io::Error::other(format!(
                            "the watch task failed: {error}"
                        )))
                    }
                };
                results.push((name, result));
            }
            results
        })
        .await;
    drop(send);
    if writer.join().is_err() {
        warn!("the fleet writer thread panicked");
    }
    Ok(FleetOutcome { targets: results })
}

/// The stream's line: the record with its target.
#[derive(Serialize)]
struct Tagged<'a> {
    target: &'a str,
    #[serde(flatten)]
    record: &'a PollRecord,
}

/// What the fleet page shows of one target.
#[derive(Debug, Default)]
struct TargetPage {
    connection: String,
    records: Vec<PollRecord>,
    meta: Meta,
    /// Failing now (the last attempt's error), while being retried.
    failing: Option<String>,
    ended: Option<String>,
    /// The elapsed time of the first good poll of the current boot.
    boot_start_s: Option<f64>,
}

impl TargetPage {
    fn last_good(&self) -> Option<&PollRecord> {
        self.records.iter().rev().find(|r| r.ok)
    }

    /// Bytes per hour since the first good poll of this boot.
    fn growth_rate(&self) -> Option<f64> {
        let last = self.last_good()?;
        let span = last.elapsed_s - self.boot_start_s?;
        (span > 0.0).then(|| last.growth_bytes as f64 / span * 3600.0)
    }
}

fn writer(
    receive: mpsc::Receiver<Message>,
    mut stream: std::fs::File,
    report_dir: Option<PathBuf>,
    live: bool,
    targets: Vec<(String, String)>,
) {
    let mut pages: BTreeMap<String, TargetPage> = targets
        .into_iter()
        .map(|(name, connection)| {
            (
                name,
                TargetPage {
                    connection,
                    ..TargetPage::default()
                },
            )
        })
        .collect();
    let mut last_index: Option<Instant> = None;
    let write_page = |path: PathBuf, text: String| {
        if let Err(error) = crate::report::write_atomically(&path, text.as_bytes()) {
            warn!(%error, path = %path.display(), "cannot write the page");
        }
    };
    loop {
        let message = match receive.recv_timeout(Duration::from_millis(500)) {
            Ok(message) => Some(message),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut changed_target = None;
        match message {
            Some(Message::Poll {
                target,
                connection,
                record,
                meta,
                retrying,
            }) => {
                let page = pages.entry(target.clone()).or_default();
                if !connection.is_empty() {
                    page.connection = connection;
                }
                if retrying || !record.ok {
                    page.failing = record.error.clone();
                } else {
                    page.failing = None;
                }
                if live {
                    eprintln!(
                        "[{target}] {}{}",
                        if retrying { "(retrying) " } else { "" },
                        live_line(&record)
                    );
                }
                if !retrying {
                    let mut line = serde_json::to_string(&Tagged {
                        target: &target,
                        record: &record,
                    })
                    .unwrap_or_default();
                    line.push('\n');
                    // One write per line, then to disk, as a single watch's series: a crash
                    // never leaves a torn line.
                    if let Err(error) = stream
                        .write_all(line.as_bytes())
                        .and_then(|()| stream.flush())
                        .and_then(|()| stream.sync_data())
                    {
                        warn!(%error, "cannot append to the fleet stream");
                    }
                    if record.ok
                        && (page.boot_start_s.is_none()
                            || record
                                .discontinuity
                                .as_ref()
                                .is_some_and(|d| d.kind == "reboot"))
                    {
                        page.boot_start_s = Some(record.elapsed_s);
                    }
                    page.meta = *meta;
                    page.records.push(*record);
                    changed_target = Some(target);
                }
            }
            Some(Message::Ended { target, how }) => {
                if live {
                    eprintln!("[{target}] {how}");
                }
                pages.entry(target).or_default().ended = Some(how);
            }
            None => {}
        }
        if let Some(dir) = &report_dir {
            if let Some(target) = changed_target {
                let page = &pages[&target];
                let mut meta = page.meta.clone();
                meta.connection = format!("{target} · {}", page.connection);
                write_page(
                    dir.join(format!("{target}.html")),
                    html::render(&page.records, &meta),
                );
            }
            // The fleet page at most twice a second: 32 targets polling every second would
            // otherwise rewrite it 32 times.
            if last_index.is_none_or(|t| t.elapsed() >= Duration::from_millis(500)) {
                write_page(dir.join("index.html"), render_fleet(&pages));
                last_index = Some(Instant::now());
            }
        }
    }
    let _ = stream.sync_data();
    if let Some(dir) = &report_dir {
        write_page(dir.join("index.html"), render_fleet(&pages));
    }
}

/// The fleet page: one row per target, the leaking ones first (fastest growth first), with
/// their suspected sites; then the rest.
fn render_fleet(pages: &BTreeMap<String, TargetPage>) -> String {
    let mut rows: Vec<(&String, &TargetPage)> = pages.iter().collect();
    let leaking = |p: &TargetPage| p.last_good().is_some_and(|r| !r.suspected_leaks.is_empty());
    rows.sort_by(|a, b| {
        leaking(b.1)
            .cmp(&leaking(a.1))
            .then(
                b.1.growth_rate()
                    .unwrap_or(0.0)
                    .total_cmp(&a.1.growth_rate().unwrap_or(0.0)),
            )
            .then(a.0.cmp(b.0))
    });
    let n_leaking = rows.iter().filter(|(_, p)| leaking(p)).count();
    let n_failing = rows
        .iter()
        .filter(|(_, p)| {
            p.failing.is_some()
                || p.ended
                    .as_deref()
                    .is_some_and(|e| e.starts_with("given up"))
        })
        .count();
    let mut h = String::new();
    h.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>kdleak fleet</title>\n<style>\
         body{font-family:sans-serif;margin:24px;color:#222;background:#fff}\
         h1{font-size:22px;margin:0 0 4px} .meta{color:#555;font-size:13px}\
         table{border-collapse:collapse;font-size:13px;margin-top:12px}\
         td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}\
         td.n{text-align:right} tr.leak td{background:#fff5f5} .bad{color:#d62728}\
         .ok{color:#2ca02c} ul{margin:0;padding-left:16px}\
         </style></head><body>\n<h1>kdleak fleet</h1>\n",
    );
    h.push_str(&format!(
        "<div class=\"meta\">{} targets · {} leaking · {} failing</div>\n",
        rows.len(),
        n_leaking,
        n_failing
    ));
    h.push_str(
        "<table><tr><th>target</th><th>state</th><th>polls (failed)</th>\
         <th>outstanding</th><th>growth</th><th>growth rate</th><th>suspected leaks</th></tr>\n",
    );
    for (name, page) in rows {
        let last = page.last_good();
        let failed = page.records.iter().filter(|r| !r.ok).count();
        let state = match (&page.ended, &page.failing) {
            (Some(how), _) if how == "finished" => "<span class=\"ok\">finished</span>".to_string(),
            (Some(how), _) => format!("<span class=\"bad\">{}</span>", escape(how)),
            (None, Some(error)) => format!("<span class=\"bad\">failing: {}</span>", escape(error)),
            (None, None) if last.is_some() => "<span class=\"ok\">polling</span>".to_string(),
            (None, None) => "connecting".to_string(),
        };
        let leaks: String = last
            .map(|r| {
                r.suspected_leaks
                    .iter()
                    .map(|l| {
                        format!(
                            "<li>{} ({}): {} in {} blocks, grew {} polls in a row</li>",
                            escape(&l.site),
                            escape(&l.driver),
                            human_bytes(l.bytes),
                            l.count,
                            l.growth_streak
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        h.push_str(&format!(
            "<tr{}><td><a href=\"{}.html\">{}</a><br><span class=\"meta\">{}</span></td>\
             <td>{}</td><td class=\"n\">{} ({})</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td>{}</td></tr>\n",
            if leaks.is_empty() {
                ""
            } else {
                " class=\"leak\""
            },
            escape(name),
            escape(name),
            escape(&page.connection),
            state,
            page.records.len(),
            failed,
            last.map_or("–".into(), |r| format!(
                "{} in {} blocks",
                human_bytes(r.outstanding_bytes),
                r.outstanding_count
            )),
            last.map_or("–".into(), |r| format!("{:+} B", r.growth_bytes)),
            page.growth_rate()
                .map_or("–".into(), |v| format!("{:+.0} B/h", v)),
            if leaks.is_empty() {
                "none".to_string()
            } else {
                format!("<ul>{leaks}</ul>")
            },
        ));
    }
    h.push_str("</table>\n</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Vec<FleetTarget>, FleetError> {
        parse(
            text,
            Path::new("/nonexistent/lab.toml"),
            &CommandLineDefaults::default(),
        )
    }

    #[test]
    fn defaults_apply_below_each_target() {
        let targets = parse_str(
            r#"
            [defaults]
            interval = "5m"
            drivers = ["leaky.sys"]
            offline = true
            sympath = "/symbols"
            request_timeout = 3

            [[target]]
            name = "lab01"
            connection = "net:port=50001,key=1.2.3.4"

            [[target]]
            name = "lab02"
            connection = "com:tcp,port=127.0.0.1:5555"
            interval = "30s"
            drivers = []
            offline = false
            "#,
        )
        .unwrap();
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].interval, Duration::from_secs(300));
        assert_eq!(targets[0].drivers, ["leaky.sys"]);
        assert!(targets[0].stop.symbols.as_ref().unwrap().offline);
        assert_eq!(
            targets[0].stop.session.request_timeout,
            Duration::from_secs(3)
        );
        assert_eq!(targets[0].connection, "net:port=50001,key=…");
        assert!(matches!(
            targets[0].spec,
            ConnectSpec::Net { port: 50001, .. }
        ));
        assert_eq!(targets[1].interval, Duration::from_secs(30));
        assert!(targets[1].drivers.is_empty());
        assert!(!targets[1].stop.symbols.as_ref().unwrap().offline);
        assert!(matches!(targets[1].spec, ConnectSpec::Tcp { .. }));
    }

    #[test]
    fn mistakes_are_named_with_their_target() {
        for (text, expect) in [
            ("[[target]]\nname = \"a\"\nconnection = \"sim\"\nintervall = \"5s\"", "intervall"),
            ("[[target]]\nname = \"a/b\"\nconnection = \"sim\"", "target a/b: the name"),
            ("[[target]]\nname = \"a\"\nconnection = \"sim\"\n[[target]]\nname = \"A\"\nconnection = \"sim\"", "used twice"),
            ("[[target]]\nname = \"a\"", "target a: no connection"),
            ("[[target]]\nname = \"a\"\nconnection = \"net:port=5\"", "target a:"),
            ("[[target]]\nname = \"a\"\nconnection = \"sim\"\ninterval = \"soon\"", "not a duration"),
            ("[defaults]\nname = \"x\"", "[defaults] cannot"),
            ("", "no [[target]]"),
        ] {
            let error = parse_str(text).unwrap_err().to_string();
            assert!(error.contains(expect), "{text:?}: {error}");
        }
    }

    #[test]
    fn the_fleet_page_puts_leaking_targets_first() {
        let mut pages = BTreeMap::new();
        let mut tracker = super::super::Tracker::new(GroupBy::Caller, 3);
        let mut quiet = tracker.failed(1, 1.0, String::new(), &Default::default());
        quiet.ok = true;
        quiet.error = None;
        let mut leaking = quiet.clone();
        leaking.growth_bytes = 4096;
        leaking.elapsed_s = 3601.0;
        leaking.suspected_leaks.push(super::super::SuspectedLeak {
            site: "leaky!A+0x1<".into(),
            driver: "leaky.sys".into(),
            count: 1,
            bytes: 4096,
            growth_streak: 3,
            streak_growth_bytes: 4096,
            tag: "Leak".into(),
            stack: Vec::new(),
        });
        pages.insert(
            "a-quiet".to_string(),
            TargetPage {
                records: vec![quiet.clone()],
                boot_start_s: Some(1.0),
                ..TargetPage::default()
            },
        );
        pages.insert(
            "z-leaks".to_string(),
            TargetPage {
                records: vec![quiet, leaking],
                boot_start_s: Some(1.0),
                ..TargetPage::default()
            },
        );
        let html = render_fleet(&pages);
        let z = html.find("z-leaks.html").unwrap();
        let a = html.find("a-quiet.html").unwrap();
        assert!(z < a, "the leaking target first");
        assert!(html.contains("1 leaking"));
        assert!(html.contains("+4096 B/h"), "{html}");
        assert!(html.contains("leaky!A+0x1&lt;"));
    }
}
