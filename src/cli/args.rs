//! Argument groups shared by several subcommands: the KDNET key, the symbol path, how to reach a
//! target, and what to report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::ValueEnum;
use kdleak::report::text::WindbgStyle;
use kdleak::report::{self, GroupBy};
use kdleak::stop::StopOptions;
use kdproto::kdnet::Key;

/// The KDNET key, from the command line, the environment or a file (the last two keep it out of
/// the process list).
#[derive(clap::Args)]
pub struct KeyArgs {
    /// The KDNET key, as `bcdedit /dbgsettings net ... key:K` shows it (four base-36 parts).
    #[arg(
        long,
        env = "KDLEAK_KEY",
        hide_env_values = true,
        conflicts_with = "key_file"
    )]
    pub key: Option<String>,
    /// Read the KDNET key from this file instead.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
}

pub fn read_key(args: KeyArgs) -> Result<Key> {
    let text = match (args.key, args.key_file) {
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

/// Where PDBs come from (WinDbg symbol-path syntax; see README "Symbols").
#[derive(clap::Args, Debug, Clone)]
pub struct SymbolArgs {
    /// Symbol path: `srv*CACHE*URL`, `srv*URL`, `cache*DIR`, directories, `;`-separated.
    /// Default: $_NT_ALT_SYMBOL_PATH;$_NT_SYMBOL_PATH, or with neither set WinDbg's .symfix:
    /// srv*<cache>*https://msdl.microsoft.com/download/symbols (HTTPS_PROXY/NO_PROXY honoured).
    #[arg(long, value_name = "PATH", alias = "symbol-path")]
    pub sympath: Option<String>,
    /// Never contact a symbol server; use local stores and the cache only.
    #[arg(long)]
    pub offline: bool,
    /// Use a PDB even when its GUID/age do not match the module's RSDS record.
    #[arg(long)]
    pub force_symbols: bool,
    /// Seconds to wait for a symbol server to connect and answer.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub symbol_timeout: f64,
    /// An ISF symbol pack (Volatility 3's format: a directory or a zip file with
    /// windows/<pdb>/<GUID>-<AGE>.json.xz): where a module's PDB cannot be had, its layouts and
    /// symbols come from here (repeatable; searched in order, then Volatility 3's symbol
    /// directories).
    #[arg(long, value_name = "DIR|ZIP")]
    pub isf: Vec<PathBuf>,
    /// Largest PDB (or CAB, or the PDB a CAB expands to) taken from a symbol server or store
    /// into the cache, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = kdleak::symbols::resolver::DEFAULT_MAX_DOWNLOAD >> 20)]
    pub symbol_max_download: u64,
}

impl SymbolArgs {
    pub fn options(&self) -> Result<kdleak::symbols::SymbolOptions> {
        let mut opts = kdleak::symbols::SymbolOptions::new(self.sympath.as_deref())?;
        opts.offline = self.offline;
        opts.force = self.force_symbols;
        opts.timeout = Duration::from_secs_f64(self.symbol_timeout.max(0.0));
        opts.max_download = self.symbol_max_download.saturating_mul(1 << 20);
        for pack in &self.isf {
            anyhow::ensure!(
                pack.is_dir() || pack.is_file(),
                "--isf {}: no such directory or zip file",
                pack.display()
            );
        }
        opts.isf = self.isf.iter().cloned().chain(opts.isf).collect();
        Ok(opts)
    }
}

/// How to reach a target: everything `info` and `attach` share.
#[derive(clap::Args)]
pub struct TargetArgs {
    /// Connection, in WinDbg -k syntax: net:port=P,key=K | com:port=/dev/ttyS0,baud=115200 |
    /// com:pipe,port=/path/to/socket[,reconnect] | com:tcp,port=HOST:PORT | sim[:SCENARIO].
    pub conn: String,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Local address to bind the KDNET UDP port on (default: all interfaces).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<std::net::IpAddr>,
    /// Seconds to wait for the target to connect and stop.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub connect_timeout: f64,
    /// Seconds the work while stopped may take; the target is resumed when it runs out.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Seconds to wait for the reply to each request. A memory read that gets none is retried
    /// at a smaller size (down to 512 bytes) before kdleak gives up.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub request_timeout: f64,
    /// Largest memory read per request in bytes (default 3944, the KD maximum; kdleak lowers it when the target clips reads).
    #[arg(long, value_name = "BYTES")]
    pub chunk: Option<usize>,
    /// Leave the target stopped afterwards (the only way kdleak leaves it stopped).
    #[arg(long)]
    pub stay_broken: bool,
    #[command(flatten)]
    pub symbols: SymbolArgs,
}

impl TargetArgs {
    /// The connection and how to use it. A malformed --sympath/_NT_SYMBOL_PATH, key or
    /// connection string is a usage error before anything connects.
    pub fn stop_options(self) -> Result<(kdleak::connect::ConnectSpec, StopOptions)> {
        let symbols = self.symbols.options()?;
        let key = match (&self.key.key, &self.key.key_file) {
            (None, None) => None,
            _ => Some(read_key(self.key)?),
        };
        let spec = kdleak::connect::parse(&self.conn, key)?;
        let seconds = |s: f64| Duration::from_secs_f64(s.max(0.0));
        let mut options = StopOptions {
            symbols: Some(symbols),
            ..StopOptions::default()
        };
        if let Some(bind) = self.bind {
            options.open.bind = bind;
        }
        options.open.connect_timeout = seconds(self.connect_timeout);
        options.session.connect_timeout = seconds(self.connect_timeout);
        anyhow::ensure!(
            self.request_timeout.is_finite() && self.request_timeout > 0.0,
            "--request-timeout must be a positive number of seconds"
        );
        options.session.request_timeout = seconds(self.request_timeout);
        options.session.overall_timeout = self.timeout.map(seconds);
        options.session.read_chunk = self.chunk;
        options.session.stay_broken = self.stay_broken;
        Ok((spec, options))
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Csv,
}

/// What to report and how: everything `attach` and `analyze` share.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// Only this verified driver (repeatable; `.sys` optional). Default: every verified driver.
    #[arg(long = "driver", value_name = "NAME")]
    pub drivers: Vec<String>,
    /// Skip the allocate/free log: no stacks, far less to read over a slow link.
    #[arg(long)]
    pub no_log: bool,
    /// Read the whole allocate/free log. By default the log is read newest-first and only until
    /// every outstanding allocation has its stack (the same stacks, far fewer bytes when the
    /// leaks are recent); the whole log adds older records to each block's history and counts
    /// every record. `--history` implies it.
    #[arg(long, conflicts_with = "no_log")]
    pub whole_log: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Write the report to FILE (atomically) instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Group the leak table by allocation site: the caller, the whole stack, or the pool tag.
    #[arg(long, value_enum, default_value_t = GroupBy::Caller)]
    pub group_by: GroupBy,
    /// Text: print every log record of each block (allocations and frees, newest first, as
    /// `!verifier 80 <address>` lists them), not only the newest allocation.
    #[arg(long)]
    pub history: bool,
    /// Text: the layout of the WinDbg blocks. `current`: as today's WinDbg prints `!verifier 3`
    /// and `!verifier 80` (flag lists of the target's build); `classic`: the Windows 7-era layout
    /// of the reference session (byte for byte with --whole-log).
    #[arg(long, value_enum, default_value_t = WindbgStyle::Current, value_name = "STYLE")]
    pub windbg_style: WindbgStyle,
    /// The file of a driver that was unloaded (repeatable): frames in its range of the
    /// unloaded-driver list read `name!Function+0xoff` instead of `<Unloaded_name.sys>+0xoff`,
    /// with the PDB its RSDS record names, found through the symbol path.
    #[arg(long = "image", value_name = "NAME=PATH", value_parser = parse_image_arg)]
    pub images: Vec<(String, PathBuf)>,
}

/// `--image name.sys=PATH`.
pub fn parse_image_arg(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_string(), PathBuf::from(path)))
        }
        _ => Err(format!(
            "`{text}`: expected NAME=PATH, the unloaded driver's name as the target lists it \
             (leaky.sys) and its file"
        )),
    }
}

impl ReportArgs {
    pub fn pull_options(&self) -> kdleak::verifier::PullOptions {
        kdleak::verifier::PullOptions {
            bug_check: None,
            images: self.images.clone(),
            drivers: self.drivers.clone(),
            no_log: self.no_log,
            // `--history` prints what `!verifier 80` would: every record of the block's range.
            history_limit: if self.history { usize::MAX } else { 8 },
            connection: String::new(),
            until_stacks: !(self.whole_log || self.history),
            progress: true,
            processors: 0,
        }
    }

    /// Groups the sites, renders the report and writes it out; says so when it is incomplete.
    pub fn emit(&self, mut report: kdleak::verifier::LeakReport) -> Result<ExitCode> {
        report.sites = report::sites(&report, self.group_by);
        let text_options = report::text::TextOptions {
            group_by: self.group_by,
            history: self.history,
            style: self.windbg_style,
            ..report::text::TextOptions::default()
        };
        // JSON goes straight out: a 45,000-allocation report is over 100 MB of it.
        let write_report = |out: &mut dyn std::io::Write| match self.format {
            ReportFormat::Text => {
                out.write_all(report::text::render(&report, &text_options).as_bytes())
            }
            ReportFormat::Json => report::json::write(&report, out),
            ReportFormat::Csv => out.write_all(report::csv::render(&report).as_bytes()),
        };
        match &self.out {
            Some(path) => report::write_atomically_with(path, write_report)
                .with_context(|| format!("cannot write {}", path.display()))?,
            None => {
                let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
                write_report(&mut stdout)?;
                std::io::Write::flush(&mut stdout)?;
            }
        }
        if !report.complete {
            eprintln!(
                "kdleak: the report is incomplete: {}",
                report.incomplete_reasons.join("; ")
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}
