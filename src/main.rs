//! The `kdleak` command line: turns arguments into a configuration and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use kdleak::decode::{self, Decoded};
use kdproto::kdnet::Key;

#[derive(Parser)]
#[command(
    name = "kdleak",
    version,
    about = "Windows kernel pool-leak puller over KDNET and serial KD"
)]
struct Cli {
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode a KDNET packet capture (pcap or pcapng, optionally .gz) with the session's key.
    Decode(DecodeArgs),
}

#[derive(clap::Args)]
struct DecodeArgs {
    /// The capture file (Wireshark/tcpdump .pcap, .pcapng, optionally gzip-compressed).
    capture: PathBuf,
    /// The KDNET key, as given to `bcdedit /dbgsettings net ... key:K` (four base-36 parts).
    #[arg(
        long,
        env = "KDLEAK_KEY",
        hide_env_values = true,
        conflicts_with = "key_file"
    )]
    key: Option<String>,
    /// Read the KDNET key from this file instead (keeps it out of the process list).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("kdleak: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Decode(args) => run_decode(args),
    }
}

fn run_decode(args: DecodeArgs) -> Result<ExitCode> {
    let key = read_key(args.key, args.key_file)?;
    let decoded = decode::decode_file(&args.capture, &key)
        .with_context(|| format!("cannot decode {}", args.capture.display()))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match args.format {
        Format::Text => decode::write_text(&decoded, &mut out)?,
        Format::Json => decode::write_json(&decoded, &mut out)?,
    }
    if let Some(hint) = decoded.summary.hint() {
        eprintln!("kdleak: {hint}");
    }
    Ok(exit_code(&decoded))
}

/// 1 when any datagram failed authentication, so scripts notice a wrong key.
fn exit_code(decoded: &Decoded) -> ExitCode {
    if decoded.summary.auth_failures > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn read_key(key: Option<String>, key_file: Option<PathBuf>) -> Result<Key> {
    let text = match (key, key_file) {
        (Some(key), _) => key,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the key file {}", path.display()))?,
        (None, None) => anyhow::bail!(
            "no KDNET key: pass --key K (or set KDLEAK_KEY, or --key-file FILE); it is the key \
             shown by `bcdedit /dbgsettings` on the target"
        ),
    };
    Ok(text.trim().parse::<Key>()?)
}
