//! `kdleak analyze`: the leak pull from a crash dump.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::args::{ReportArgs, SymbolArgs};
use super::async_runtime;

#[derive(clap::Args)]
pub struct AnalyzeArgs {
    /// The memory image of x64 Windows: a complete, kernel or live kernel memory dump
    /// (MEMORY.DMP, `.dump /f`, `/k`, `/ka`; DumpType 1, 5, 6, 8, 9, 10), a QEMU/libvirt ELF
    /// core (`virsh dump --memory-only`), or a raw physical image (`.raw`, `.mem`, `.vmem`).
    /// Minidumps and small (triage) dumps lack the pool and are refused.
    pub dump: PathBuf,
    /// The image's format; by default found from its first bytes (a file that is neither a
    /// crash dump nor an ELF core, of at least 1 MiB, is read as raw physical memory).
    #[arg(long, value_enum, default_value_t = ImageFormat::Auto)]
    pub image_format: ImageFormat,
    #[command(flatten)]
    pub symbols: SymbolArgs,
    #[command(flatten)]
    pub report: ReportArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ImageFormat {
    Auto,
    /// A Windows crash dump (PAGEDU64).
    Dump,
    /// A QEMU/libvirt ELF core.
    Elf,
    /// Raw physical memory.
    Raw,
}

impl From<ImageFormat> for kdleak::image::FormatHint {
    fn from(format: ImageFormat) -> Self {
        match format {
            ImageFormat::Auto => Self::Detect,
            ImageFormat::Dump => Self::CrashDump,
            ImageFormat::Elf => Self::Elf,
            ImageFormat::Raw => Self::Raw,
        }
    }
}

pub fn run(args: AnalyzeArgs) -> Result<ExitCode> {
    let options = kdleak::analyze::AnalyzeOptions {
        format: args.image_format.into(),
        announce: true,
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
