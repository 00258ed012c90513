//! `kdleak info`: attach, describe the target, resume.

use std::process::ExitCode;

use anyhow::Result;

use super::args::TargetArgs;
use super::{async_runtime, Format};

#[derive(clap::Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn run(args: InfoArgs) -> Result<ExitCode> {
    let (spec, options) = args.target.stop_options()?;
    let runtime = async_runtime()?;
    match runtime.block_on(kdleak::info::run(&spec, &options)) {
        Ok(info) => {
            match args.format {
                Format::Text => print!("{}", info.render_text()),
                Format::Json => println!("{}", info.render_json()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("kdleak: error: {error}");
            Ok(ExitCode::from(error.exit_code()))
        }
    }
}
