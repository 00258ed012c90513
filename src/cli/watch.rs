//! `kdleak watch`: periodic pulls during a leak repro.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use kdleak::report::text::{TextOptions, WindbgStyle};
use kdleak::report::{self, GroupBy};
use kdleak::verifier::LeakReport;

use super::args::TargetArgs;
use super::{async_runtime, Format};

fn parse_duration_arg(text: &str) -> std::result::Result<Duration, String> {
    kdleak::duration::parse(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{text}` is not a duration (e.g. 500ms, 60s, 5m, 2h)"))
}

#[derive(clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub target: TargetArgs,
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
    let (spec, stop) = args.target.stop_options()?;
    if args.growth_polls == 0 {
        anyhow::bail!("--growth-polls must be at least 1");
    }
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
        out: args.out.clone(),
        report: args.report.clone(),
        fail_on_growth: args.fail_on_growth,
        group_by: args.group_by,
        growth_polls: args.growth_polls,
        live: !args.quiet,
        give_up_after: args.give_up_after,
        ..kdleak::watch::WatchOptions::default()
    };
    let runtime = async_runtime()?;
    let outcome = runtime
        .block_on(kdleak::watch::run(&spec, &options))
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let last = outcome.records.iter().rev().find(|r| r.ok);
    let leaks = last.map(|r| r.suspected_leaks.clone()).unwrap_or_default();
    match args.format {
        Format::Json => {
            let summary = serde_json::json!({
                "polls": outcome.records.len(),
                "failed_polls": outcome.records.iter().filter(|r| !r.ok).count(),
                "end": match &outcome.end {
                    kdleak::watch::WatchEnd::Finished => "finished".to_string(),
                    kdleak::watch::WatchEnd::GrowthExceeded { .. } => "growth_exceeded".to_string(),
                    kdleak::watch::WatchEnd::Interrupted(_) => "interrupted".to_string(),
                    kdleak::watch::WatchEnd::Failed(e) => format!("failed: {e}"),
                },
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
