//! `kdleak man`: the manual page (roff, clap_mangen) from the same clap definitions — `kdleak.1`
//! on standard output, or one page per subcommand (`kdleak-attach.1`, …) with --dir.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::CommandFactory;

#[derive(clap::Args)]
pub struct ManArgs {
    /// Write kdleak.1 and a page per subcommand (kdleak-attach.1, kdleak-symbols-fetch.1, …)
    /// into DIR instead of printing kdleak.1 (e.g. `kdleak man --dir ~/.local/share/man/man1`).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn run(args: ManArgs) -> Result<ExitCode> {
    let command = super::Cli::command();
    match args.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command).render(&mut page)?;
            return super::print_all(&page, "the man page");
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
            eprintln!("kdleak: man pages written to {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
