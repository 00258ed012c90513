//! `kdleak attach`: the leak pull from a live target.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use kdleak::report;

use super::args::{ReportArgs, TargetArgs};
use super::async_runtime;

#[derive(clap::Args)]
pub struct AttachArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub report: ReportArgs,
    /// Write what the pull cost to FILE as JSON: requests, wire bytes, memory bytes read and
    /// needed, seconds the target was stopped.
    #[arg(long, value_name = "FILE")]
    pub stats: Option<PathBuf>,
}

pub fn run(args: AttachArgs) -> Result<ExitCode> {
    let (spec, stop) = args.target.stop_options()?;
    let options = kdleak::attach::AttachOptions {
        stop,
        pull: args.report.pull_options(),
    };
    let runtime = async_runtime()?;
    match runtime.block_on(kdleak::attach::run(&spec, &options)) {
        Ok(attached) => {
            if let Some(path) = &args.stats {
                report::write_atomically(path, &serde_json::to_vec_pretty(&attached.cost)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            args.report.emit(attached.report)
        }
        Err(error) => {
            eprintln!("kdleak: error: {error}");
            Ok(ExitCode::from(error.exit_code()))
        }
    }
}
