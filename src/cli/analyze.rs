//! `kdleak analyze`: the leak pull from a crash dump.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::args::{ReportArgs, SymbolArgs};
use super::async_runtime;

#[derive(clap::Args)]
pub struct AnalyzeArgs {
    /// The crash dump: a complete or kernel memory dump of x64 Windows (MEMORY.DMP; full or
    /// bitmap layout). Minidumps and small (triage) dumps lack the pool and are refused.
    pub dump: PathBuf,
    #[command(flatten)]
    pub symbols: SymbolArgs,
    #[command(flatten)]
    pub report: ReportArgs,
}

pub fn run(args: AnalyzeArgs) -> Result<ExitCode> {
    let options = kdleak::analyze::AnalyzeOptions {
        symbols: Some(args.symbols.options()?),
        pull: args.report.pull_options(),
    };
    let runtime = async_runtime()?;
    match runtime.block_on(kdleak::analyze::run(&args.dump, &options)) {
        Ok(report) => args.report.emit(report),
        Err(error) => {
            eprintln!("kdleak: error: {}: {error}", args.dump.display());
            Ok(ExitCode::from(error.exit_code()))
        }
    }
}
