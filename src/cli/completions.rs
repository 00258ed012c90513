//! `kdleak completions SHELL`: the shell's completion script for the whole command line, from
//! the same clap definitions (clap_complete), on standard output (README "Shell completions and
//! the man page").

use std::process::ExitCode;

use anyhow::Result;
use clap::CommandFactory;

#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash (`source <(kdleak completions bash)`), zsh (a `_kdleak` file on
    /// $fpath), fish (`~/.config/fish/completions/kdleak.fish`), powershell (`kdleak completions
    /// powershell | Out-String | Invoke-Expression`), elvish.
    #[arg(value_name = "SHELL")]
    shell: clap_complete::Shell,
}

pub fn run(args: CompletionsArgs) -> Result<ExitCode> {
    let mut command = super::Cli::command();
    // Into a buffer: clap_complete panics on a write error, and `… | head` closes the pipe.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "kdleak", &mut script);
    super::print_all(&script, "the completion script")
}
