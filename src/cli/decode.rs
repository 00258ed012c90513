//! `kdleak decode`: explain a KDNET capture.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use kdleak::decode::{self, Decoded};

use super::args::{read_key, KeyArgs};
use super::Format;

#[derive(clap::Args)]
pub struct DecodeArgs {
    /// The capture file (Wireshark/tcpdump .pcap, .pcapng, optionally gzip-compressed).
    pub capture: PathBuf,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn run(args: DecodeArgs) -> Result<ExitCode> {
    let key = read_key(args.key)?;
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
