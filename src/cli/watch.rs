//! `kdleak watch`: periodic pulls during a leak repro.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use kdleak::report::text::{TextOptions, WindbgStyle};
use kdleak::report::{self, GroupBy};
use kdleak::verifier::LeakReport;
use kdleak::watch::metrics::Metrics;
use kdleak::watch::Observers;

use super::args::TargetArgs;
use super::{async_runtime, Format};

fn parse_duration_arg(text: &str) -> std::result::Result<Duration, String> {
    kdleak::duration::parse(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{text}` is not a duration (e.g. 500ms, 60s, 5m, 2h)"))
}

#[derive(clap::Args)]
// The connection is not needed with --targets (the fleet file has one per target).
#[command(mut_arg("conn", |a| a.required(false).default_value("")))]
pub struct WatchArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Watch a lab: the targets of this TOML file (README "A fleet in one process"), all at
    /// once. `--out` gets one stream with every record tagged by target, `--report` names a
    /// directory (index.html for the fleet, TARGET.html per target); --count, --duration,
    /// --growth-polls and --group-by apply to every target; --sympath, --offline, --isf,
    /// --interval and --give-up-after are defaults below the file's.
    #[arg(long, value_name = "FILE")]
    pub targets: Option<PathBuf>,
    /// Serve Prometheus metrics (OpenMetrics text) at http://ADDR/metrics while watching
    /// (e.g. 127.0.0.1:9464; port 0 picks a free one, printed on stderr).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Sites per driver with their own `site` label in the metrics; the rest are summed as
    /// site="other".
    #[arg(long, value_name = "N", default_value_t = kdleak::watch::metrics::DEFAULT_TOP_SITES)]
    pub metrics_top_sites: usize,
    /// The `target` label of a single watch's metrics.
    #[arg(long, value_name = "NAME", default_value = "target")]
    pub name: String,
    /// Time between polls (e.g. 60s, 5m, 500ms).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration_arg)]
    pub interval: Duration,
    /// Stop after N polls.
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    pub count: Option<u64>,
    /// Stop when the next poll would start later than this after the first (e.g. 2h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub duration: Option<Duration>,
    /// Only this verified driver (repeatable; `.sys` optional). Default: every verified driver.
    #[arg(long = "driver", value_name = "NAME")]
    pub drivers: Vec<String>,
    /// The series: one JSON record per poll, appended and flushed line by line.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Write a self-contained HTML report (chart + suspected leaks), refreshed after each poll.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Exit 1 (and stop) once outstanding bytes grew by more than BYTES since the first poll.
    #[arg(long, value_name = "BYTES")]
    pub fail_on_growth: Option<u64>,
    /// Consecutive growing polls that flag a site as a suspected leak.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub growth_polls: u32,
    /// Group allocations into sites by caller, whole stack or pool tag.
    #[arg(long, value_enum, default_value_t = GroupBy::Caller)]
    pub group_by: GroupBy,
    /// The final summary on standard output.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// No live view on standard error.
    #[arg(long)]
    pub quiet: bool,
    /// Text: the layout of the WinDbg blocks printed for the leaking drivers at the end (as
    /// `attach --windbg-style`).
    #[arg(long, value_enum, default_value_t = WindbgStyle::Current, value_name = "STYLE")]
    pub windbg_style: WindbgStyle,
    /// The file of a driver that was unloaded (repeatable, NAME=PATH): its frames symbolize
    /// with its PDB instead of as `<Unloaded_name.sys>+0xoff`.
    #[arg(long = "image", value_name = "NAME=PATH", value_parser = super::args::parse_image_arg)]
    pub images: Vec<(String, std::path::PathBuf)>,
    /// Give up (exit 3) after polls have failed for this long.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration_arg)]
    pub give_up_after: Duration,
}

pub fn run(args: WatchArgs) -> Result<ExitCode> {
    if args.growth_polls == 0 {
        anyhow::bail!("--growth-polls must be at least 1");
    }
    if args.targets.is_some() {
        return run_fleet(args);
    }
    if args.target.conn.is_empty() {
        anyhow::bail!("watch needs a connection (e.g. net:port=50000,key=K) or --targets FILE");
    }
    let name = args.name.clone();
    let metrics = args
        .metrics
        .map(|addr| (addr, Arc::new(Metrics::new(args.metrics_top_sites))));
    let (spec, stop) = args.target.stop_options()?;
    let options = kdleak::watch::WatchOptions {
        stop,
        pull: kdleak::verifier::PullOptions {
            bug_check: None,
            images: args.images,
            drivers: args.drivers,
            no_log: false,
            history_limit: 1,
            connection: String::new(),
            until_stacks: false,
            progress: !args.quiet,
            processors: 0,
        },
        interval: args.interval,
        count: args.count,
        duration: args.duration,
        out: Some(args.out.clone()),
        report: args.report.clone(),
        fail_on_growth: args.fail_on_growth,
        group_by: args.group_by,
        growth_polls: args.growth_polls,
        live: !args.quiet,
        give_up_after: args.give_up_after,
        name,
        observers: Observers(
            metrics
                .iter()
                .map(|(_, m)| Arc::clone(m) as Arc<dyn kdleak::watch::Observer>)
                .collect(),
        ),
        ..kdleak::watch::WatchOptions::default()
    };
    let runtime = async_runtime()?;
    let outcome = runtime.block_on(async {
        let _server = match &metrics {
            Some((addr, metrics)) => Some(serve_metrics(*addr, metrics).await?),
            None => None,
        };
        kdleak::watch::run(&spec, &options)
            .await
            .with_context(|| format!("cannot write {}", args.out.display()))
    })?;
    let last = outcome.records.iter().rev().find(|r| r.ok);
    let leaks = last.map(|r| r.suspected_leaks.clone()).unwrap_or_default();
    match args.format {
        Format::Json => {
            let summary = serde_json::json!({
                "polls": outcome.records.len(),
                "failed_polls": outcome.records.iter().filter(|r| !r.ok).count(),
                "end": end_name(&outcome.end),
                "exit_code": outcome.end.exit_code(),
                "growth_bytes": last.map_or(0, |r| r.growth_bytes),
                "outstanding_bytes": last.map_or(0, |r| r.outstanding_bytes),
                "suspected_leaks": leaks,
            });
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        Format::Text => {
            println!(
                "kdleak watch: {} polls, outstanding {} bytes, growth {:+} bytes",
                outcome.records.len(),
                last.map_or(0, |r| r.outstanding_bytes),
                last.map_or(0, |r| r.growth_bytes)
            );
            if leaks.is_empty() {
                println!("no suspected leaks");
            }
            for leak in &leaks {
                println!(
                    "suspected leak: {} ({}) {} bytes in {} blocks, grew {} polls in a row",
                    leak.site, leak.driver, leak.bytes, leak.count, leak.growth_streak
                );
                for frame in &leak.stack {
                    println!("    {:#018x} {}", frame.address, frame.symbol);
                }
            }
            if let Some(report) = outcome.last_report {
                let leaking: Vec<&str> = leaks.iter().map(|l| l.driver.as_str()).collect();
                print!(
                    "{}",
                    leaking_drivers_text(report, &leaking, args.group_by, args.windbg_style)
                );
            }
        }
    }
    match &outcome.end {
        kdleak::watch::WatchEnd::Finished => {}
        kdleak::watch::WatchEnd::GrowthExceeded { growth, limit } => eprintln!(
            "kdleak: outstanding bytes grew by {growth}, more than --fail-on-growth {limit}"
        ),
        kdleak::watch::WatchEnd::Interrupted(name) => {
            eprintln!("kdleak: interrupted by {name}; the target was resumed")
        }
        kdleak::watch::WatchEnd::Failed(error) => eprintln!("kdleak: error: {error}"),
    }
    Ok(ExitCode::from(outcome.end.exit_code()))
}

/// Starts the metrics server; says where on stderr. The server stops when the handle drops.
async fn serve_metrics(addr: SocketAddr, metrics: &Arc<Metrics>) -> Result<AbortOnDrop> {
    let (bound, task) = kdleak::watch::metrics::serve(addr, Arc::clone(metrics))
        .await
        .with_context(|| format!("cannot serve metrics on {addr} (--metrics)"))?;
    eprintln!("kdleak: metrics at http://{bound}/metrics");
    Ok(AbortOnDrop(task))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `watch --targets FILE`: every target of the file at once.
fn run_fleet(args: WatchArgs) -> Result<ExitCode> {
    let path = args.targets.clone().expect("checked by the caller");
    if !args.target.conn.is_empty() {
        anyhow::bail!(
            "give either a connection or --targets, not both (the fleet file has a connection \
             per target)"
        );
    }
    let cli = kdleak::watch::fleet::CommandLineDefaults {
        sympath: args.target.symbols.sympath.clone(),
        offline: args.target.symbols.offline,
        isf: args.target.symbols.isf.clone(),
        interval: Some(args.interval),
        give_up_after: Some(args.give_up_after),
    };
    let targets = kdleak::watch::fleet::load(&path, &cli)?;
    let metrics = args
        .metrics
        .map(|addr| (addr, Arc::new(Metrics::new(args.metrics_top_sites))));
    let options = kdleak::watch::fleet::FleetOptions {
        count: args.count,
        duration: args.duration,
        growth_polls: args.growth_polls,
        group_by: args.group_by,
        out: args.out.clone(),
        report_dir: args.report.clone(),
        live: !args.quiet,
        metrics: metrics.as_ref().map(|(_, m)| Arc::clone(m)),
        handle_signals: true,
    };
    let runtime = async_runtime()?;
    let outcome = runtime.block_on(async {
        let _server = match &metrics {
            Some((addr, metrics)) => Some(serve_metrics(*addr, metrics).await?),
            None => None,
        };
        kdleak::watch::fleet::run(targets, &options)
            .await
            .with_context(|| format!("cannot write {}", args.out.display()))
    })?;
    let summary: Vec<serde_json::Value> = outcome
        .targets
        .iter()
        .map(|(name, result)| match result {
            Ok(o) => {
                let last = o.records.iter().rev().find(|r| r.ok);
                serde_json::json!({
                    "target": name,
                    "polls": o.records.len(),
                    "failed_polls": o.records.iter().filter(|r| !r.ok).count(),
                    "end": end_name(&o.end),
                    "exit_code": o.end.exit_code(),
                    "outstanding_bytes": last.map_or(0, |r| r.outstanding_bytes),
                    "growth_bytes": last.map_or(0, |r| r.growth_bytes),
                    "suspected_leaks": last.map(|r| r.suspected_leaks.clone()).unwrap_or_default(),
                })
            }
            Err(error) => serde_json::json!({
                "target": name,
                "end": format!("failed: {error}"),
                "exit_code": 4,
            }),
        })
        .collect();
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "targets": summary,
                "exit_code": outcome.exit_code(),
            }))?
        ),
        Format::Text => {
            for t in &summary {
                let leaks = t["suspected_leaks"].as_array().map_or(0, Vec::len);
                println!(
                    "{}: {} polls ({} failed), outstanding {} bytes, growth {:+} bytes, {} suspected \
                     leaks; {}",
                    t["target"].as_str().unwrap_or("?"),
                    t["polls"].as_u64().unwrap_or(0),
                    t["failed_polls"].as_u64().unwrap_or(0),
                    t["outstanding_bytes"].as_u64().unwrap_or(0),
                    t["growth_bytes"].as_i64().unwrap_or(0),
                    leaks,
                    t["end"].as_str().unwrap_or("?"),
                );
                for leak in t["suspected_leaks"].as_array().into_iter().flatten() {
                    println!(
                        "    suspected leak: {} ({}) {} bytes in {} blocks",
                        leak["site"].as_str().unwrap_or("?"),
                        leak["driver"].as_str().unwrap_or("?"),
                        leak["bytes"],
                        leak["count"]
                    );
                }
            }
        }
    }
    Ok(ExitCode::from(outcome.exit_code()))
}

fn end_name(end: &kdleak::watch::WatchEnd) -> String {
    match end {
        kdleak::watch::WatchEnd::Finished => "finished".to_string(),
        kdleak::watch::WatchEnd::GrowthExceeded { .. } => "growth_exceeded".to_string(),
        kdleak::watch::WatchEnd::Interrupted(_) => "interrupted".to_string(),
        kdleak::watch::WatchEnd::Failed(e) => format!("failed: {e}"),
    }
}

/// What a WinDbg user types next for the leaking drivers: the last poll's `!verifier 3` block of
/// each and the `!verifier 80` block of each outstanding allocation, in the chosen layout.
/// Nothing when no site is suspected.
fn leaking_drivers_text(
    mut report: LeakReport,
    leaking: &[&str],
    group_by: GroupBy,
    style: WindbgStyle,
) -> String {
    report
        .drivers
        .retain(|d| leaking.iter().any(|name| d.name.eq_ignore_ascii_case(name)));
    if report.drivers.is_empty() {
        return String::new();
    }
    report.sites = report::sites(&report, group_by);
    let options = TextOptions {
        group_by,
        style,
        ..TextOptions::default()
    };
    format!(
        "\nThe leaking drivers at the last poll:\n\n{}",
        report::text::render(&report, &options)
    )
}
