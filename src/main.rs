//! The `kdleak` command line: turns arguments into a configuration and calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use kdleak::decode::{self, Decoded};
use kdleak::report::text::WindbgStyle;
use kdleak::report::{self, GroupBy};
use kdleak::sim::{
    self, faults::FaultSpec, kdcom::KdcomConfig, kdnet::KdnetConfig, quirks::Quirks, Machine,
    Transport,
};
use kdleak::stop::StopOptions;
use kdproto::kdnet::Key;

mod types_cmd;

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
    /// Break in, pull Driver Verifier's leak table and allocation stacks, resume the target.
    Attach(Box<AttachArgs>),
    /// Poll a running target: break in, pull, resume every INTERVAL; a JSONL series, growth per
    /// allocation site, suspected leaks, an HTML report.
    Watch(Box<WatchArgs>),
    /// Pull the same leak report from a Windows kernel crash dump (complete or kernel memory
    /// dump) instead of a live target.
    Analyze(Box<AnalyzeArgs>),
    /// Attach to a target, print its build, kernel base, KDBG and module list, then resume it.
    Info(Box<InfoArgs>),
    /// Run a simulated Windows target until Ctrl-C, for testing hosts, or write a crash dump of it.
    Sim(Box<SimArgs>),
    /// Show a structure's layout from a PDB, like WinDbg's `dt`: offsets, names, types with
    /// qualifiers, bitfields (`kdleak types ntkrnlmp.pdb _MM_DRIVER_VERIFIER_DATA`).
    Types(Box<types_cmd::TypesArgs>),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("transport").multiple(true).args(["kdnet", "pipe", "tcp", "pty"])))]
struct SimArgs {
    /// KDNET: poke the debugger host at HOST:PORT (the target's `hostip:port`).
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["pipe", "tcp", "pty"])]
    kdnet: Option<SocketAddr>,
    #[command(flatten)]
    key: KeyArgs,
    /// KDNET: seconds between pokes.
    #[arg(long, default_value_t = 3.0, value_name = "SECONDS")]
    poke_interval: f64,
    /// KDNET: local address to send from (default: any, a free port).
    #[arg(long, value_name = "ADDR:PORT")]
    bind: Option<SocketAddr>,
    /// KDCOM: listen on this Unix stream socket (a debugger connects as the client).
    #[arg(long, value_name = "PATH")]
    pipe: Option<PathBuf>,
    /// KDCOM: listen on this TCP address.
    #[arg(long, value_name = "ADDR:PORT")]
    tcp: Option<SocketAddr>,
    /// KDCOM: serve a pseudo-terminal, with a symbolic link to it at PATH (open PATH as a
    /// serial port: `com:port=PATH,baud=115200`).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["kdnet", "pipe", "tcp"])]
    pty: Option<PathBuf>,
    /// Keep this JSON file current with the state ("running"/"stopped") and counters.
    #[arg(long, value_name = "FILE")]
    state_file: Option<PathBuf>,
    /// KDNET: the link MTU; no datagram is larger, so bigger reads come back short.
    #[arg(long, default_value_t = sim::kdnet::DEFAULT_MTU, value_name = "BYTES")]
    mtu: usize,
    /// KDCOM: largest KD packet payload (default and maximum 4000).
    #[arg(long, value_name = "BYTES")]
    max_packet: Option<usize>,
    /// Serve this scenario: a built-in name (win7-myfault, win10-myfault, win11-myfault,
    /// watch-leak), a
    /// generated one (gen:build=19041,drivers=20,allocs=5000,log=1.0,seed=1) or a scenario TOML
    /// file. Default: a tiny built-in kernel without verifier data.
    #[arg(long, value_name = "NAME|FILE")]
    scenario: Option<String>,
    /// Inject faults, seeded: e.g. loss=0.3,dup=0.05,reorder=0.1,corrupt=0.01,latency=5ms,
    /// jitter=1ms,baud=115200,reboot_after=20s,stall_after=1m,seed=7.
    #[arg(long, value_name = "SPEC", default_value = "")]
    faults: FaultSpec,
    /// Behave like a KD target that is not Windows' own stub, or a Windows that booted without a
    /// debugger: e.g. flags=0x3,data_list=0,kern_base=HEX,machine=0x14c,
    /// unanswered_reads_over=1024,dr7=HEX,kdbg=encoded (README "kdleak sim").
    #[arg(long, value_name = "SPEC", default_value = "")]
    quirks: Quirks,
    /// Compress the scenario timeline's target time: 60 = one target minute per wall second.
    #[arg(long, value_name = "FACTOR", default_value_t = 1.0)]
    time_scale: f64,
    /// Write a Windows x64 crash dump of the scenario's memory to FILE and exit (no transport).
    #[arg(long, value_name = "FILE", conflicts_with = "transport")]
    write_dump: Option<PathBuf>,
    /// With --write-dump: full (default; DumpType 1, physical memory runs), kernel (bitmap dump
    /// with an SDMP header: kernel pages only) or bitmap (bitmap dump with an FDMP header: all RAM).
    // Checked in run_sim: clap drops `requires = "write_dump"` when a transport (which conflicts
    // with --write-dump) is present, and ignores it for an argument with a default.
    #[arg(long, value_enum)]
    dump_type: Option<DumpTypeArg>,
}

#[derive(Clone, Copy, ValueEnum)]
enum DumpTypeArg {
    Full,
    Kernel,
    Bitmap,
}

impl From<DumpTypeArg> for sim::dump::DumpKind {
    fn from(arg: DumpTypeArg) -> Self {
        match arg {
            DumpTypeArg::Full => Self::Full,
            DumpTypeArg::Kernel => Self::Kernel,
            DumpTypeArg::Bitmap => Self::Bitmap,
        }
    }
}

/// The KDNET key, from the command line, the environment or a file (the last two keep it out of
/// the process list).
#[derive(clap::Args)]
struct KeyArgs {
    /// The KDNET key, as `bcdedit /dbgsettings net ... key:K` shows it (four base-36 parts).
    #[arg(
        long,
        env = "KDLEAK_KEY",
        hide_env_values = true,
        conflicts_with = "key_file"
    )]
    key: Option<String>,
    /// Read the KDNET key from this file instead.
    #[arg(long)]
    key_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct DecodeArgs {
    /// The capture file (Wireshark/tcpdump .pcap, .pcapng, optionally gzip-compressed).
    capture: PathBuf,
    #[command(flatten)]
    key: KeyArgs,
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
        Command::Attach(args) => run_attach(*args),
        Command::Analyze(args) => run_analyze(*args),
        Command::Info(args) => run_info(*args),
        Command::Watch(args) => run_watch(*args),
        Command::Sim(args) => run_sim(*args),
        Command::Types(args) => types_cmd::run(*args),
    }
}

fn run_sim(args: SimArgs) -> Result<ExitCode> {
    if let Some(path) = &args.write_dump {
        return write_sim_dump(&args, path);
    }
    anyhow::ensure!(
        args.dump_type.is_none(),
        "--dump-type needs --write-dump FILE"
    );
    anyhow::ensure!(
        args.kdnet.is_some() || args.pipe.is_some() || args.tcp.is_some() || args.pty.is_some(),
        "kdleak sim needs a transport (--kdnet, --pipe, --tcp or --pty) or --write-dump FILE"
    );
    let transport = match args.kdnet {
        Some(host) => {
            let key = read_key(args.key)?;
            anyhow::ensure!(
                args.poke_interval.is_finite() && args.poke_interval > 0.0,
                "--poke-interval must be a positive number of seconds"
            );
            let mut config = KdnetConfig::new(host, key);
            config.poke_interval = Duration::from_secs_f64(args.poke_interval);
            config.bind = args.bind;
            config.faults = args.faults;
            anyhow::ensure!(
                args.mtu >= 576,
                "--mtu {} is below the 576 bytes every IPv4 host must accept",
                args.mtu
            );
            config.mtu = args.mtu;
            Transport::Kdnet(config)
        }
        None => Transport::Kdcom(KdcomConfig {
            unix: args.pipe,
            tcp: args.tcp,
            pty: args.pty,
            faults: args.faults,
            max_packet: args.max_packet,
        }),
    };
    let mut machine = match &args.scenario {
        None => Machine::default(),
        Some(name) => {
            Machine::for_scenario(name).with_context(|| format!("cannot load scenario {name}"))?
        }
    };
    if !(args.time_scale.is_finite() && args.time_scale > 0.0) {
        anyhow::bail!("--time-scale must be a positive number");
    }
    machine.set_time_scale(args.time_scale);
    machine.apply_quirks(args.quirks);
    // The clock shows when the target started (it does not tick).
    machine.set_system_time(sim::dump::filetime(std::time::SystemTime::now()));
    let runtime = async_runtime()?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let stats = runtime
        .block_on(sim::run(transport, machine, args.state_file, shutdown))
        .context("simulated target failed")?;
    eprintln!("kdleak sim: summary\n{stats}");
    Ok(ExitCode::SUCCESS)
}

/// `kdleak sim --write-dump`: the scenario as laid out (timeline time 0), written and done.
fn write_sim_dump(args: &SimArgs, path: &std::path::Path) -> Result<ExitCode> {
    let mut machine = match &args.scenario {
        None => Machine::default(),
        Some(name) => {
            Machine::for_scenario(name).with_context(|| format!("cannot load scenario {name}"))?
        }
    };
    machine.apply_quirks(args.quirks.clone());
    let scenario = args.scenario.as_deref().unwrap_or("tiny built-in kernel");
    // The header's time of the crash is the kernel's clock, as in a real dump.
    let system_time = sim::dump::filetime(std::time::SystemTime::now());
    machine.set_system_time(system_time);
    let options = sim::dump::DumpOptions {
        kind: args.dump_type.unwrap_or(DumpTypeArg::Full).into(),
        system_time,
        comment: format!("kdleak sim: simulated target ({scenario})"),
    };
    let summary = sim::dump::write_dump(&machine, path, &options)?;
    eprintln!(
        "kdleak sim: wrote a {} dump (DumpType {}, {} pages, {} bytes, CR3 {:#x}) to {}",
        summary.kind.name(),
        summary.dump_type,
        summary.pages,
        summary.file_size,
        summary.cr3,
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn run_decode(args: DecodeArgs) -> Result<ExitCode> {
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

fn read_key(args: KeyArgs) -> Result<Key> {
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

// ---- symbols (issue 5): shared by `info` and the coming `attach`/`watch` ----------------------

/// Where PDBs come from (WinDbg symbol-path syntax; see README "Symbols").
#[derive(clap::Args, Debug, Clone)]
struct SymbolArgs {
    /// Symbol path: `srv*CACHE*URL`, `srv*URL`, `cache*DIR`, directories, `;`-separated.
    /// Default: $_NT_ALT_SYMBOL_PATH;$_NT_SYMBOL_PATH.
    #[arg(long, value_name = "PATH", alias = "symbol-path")]
    sympath: Option<String>,
    /// Never contact a symbol server; use local stores and the cache only.
    #[arg(long)]
    offline: bool,
    /// Use a PDB even when its GUID/age do not match the module's RSDS record.
    #[arg(long)]
    force_symbols: bool,
    /// Seconds to wait for a symbol server to connect and answer.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    symbol_timeout: f64,
    /// Largest PDB (or CAB, or the PDB a CAB expands to) taken from a symbol server or store
    /// into the cache, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = kdleak::symbols::resolver::DEFAULT_MAX_DOWNLOAD >> 20)]
    symbol_max_download: u64,
}

impl SymbolArgs {
    fn options(&self) -> Result<kdleak::symbols::SymbolOptions> {
        let mut opts = kdleak::symbols::SymbolOptions::new(self.sympath.as_deref())?;
        opts.offline = self.offline;
        opts.force = self.force_symbols;
        opts.timeout = Duration::from_secs_f64(self.symbol_timeout.max(0.0));
        opts.max_download = self.symbol_max_download.saturating_mul(1 << 20);
        Ok(opts)
    }
}

// ---- kdleak info (issue 4) -------------------------------------------------------------------

/// How to reach a target: everything `info` and `attach` share.
#[derive(clap::Args)]
struct TargetArgs {
    /// Connection, in WinDbg -k syntax: net:port=P,key=K | com:port=/dev/ttyS0,baud=115200 |
    /// com:pipe,port=/path/to/socket[,reconnect] | com:tcp,port=HOST:PORT | sim[:SCENARIO].
    conn: String,
    #[command(flatten)]
    key: KeyArgs,
    /// Local address to bind the KDNET UDP port on (default: all interfaces).
    #[arg(long, value_name = "ADDR")]
    bind: Option<std::net::IpAddr>,
    /// Seconds to wait for the target to connect and stop.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    connect_timeout: f64,
    /// Seconds the work while stopped may take; the target is resumed when it runs out.
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Seconds to wait for the reply to each request. A memory read that gets none is retried
    /// at a smaller size (down to 512 bytes) before kdleak gives up.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    request_timeout: f64,
    /// Largest memory read per request in bytes (default 3944, the KD maximum; kdleak lowers it when the target clips reads).
    #[arg(long, value_name = "BYTES")]
    chunk: Option<usize>,
    /// Leave the target stopped afterwards (the only way kdleak leaves it stopped).
    #[arg(long)]
    stay_broken: bool,
    #[command(flatten)]
    symbols: SymbolArgs,
}

impl TargetArgs {
    /// The connection and how to use it. A malformed --sympath/_NT_SYMBOL_PATH, key or
    /// connection string is a usage error before anything connects.
    fn stop_options(self) -> Result<(kdleak::connect::ConnectSpec, StopOptions)> {
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

#[derive(clap::Args)]
struct InfoArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

fn run_info(args: InfoArgs) -> Result<ExitCode> {
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

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Text,
    Json,
    Csv,
}

#[derive(clap::Args)]
struct AttachArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    report: ReportArgs,
    /// Write what the pull cost to FILE as JSON: requests, wire bytes, memory bytes read and
    /// needed, seconds the target was stopped.
    #[arg(long, value_name = "FILE")]
    stats: Option<PathBuf>,
}

/// What to report and how: everything `attach` and `analyze` share.
#[derive(clap::Args)]
struct ReportArgs {
    /// Only this verified driver (repeatable; `.sys` optional). Default: every verified driver.
    #[arg(long = "driver", value_name = "NAME")]
    drivers: Vec<String>,
    /// Skip the allocate/free log: no stacks, far less to read over a slow link.
    #[arg(long)]
    no_log: bool,
    /// Read the whole allocate/free log. By default the log is read newest-first and only until
    /// every outstanding allocation has its stack (the same stacks, far fewer bytes when the
    /// leaks are recent); the whole log adds older records to each block's history and counts
    /// every record. `--history` implies it.
    #[arg(long, conflicts_with = "no_log")]
    whole_log: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    format: ReportFormat,
    /// Write the report to FILE (atomically) instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Group the leak table by allocation site: the caller, the whole stack, or the pool tag.
    #[arg(long, value_enum, default_value_t = GroupBy::Caller)]
    group_by: GroupBy,
    /// Text: print every log record of each block (allocations and frees, newest first, as
    /// `!verifier 80 <address>` lists them), not only the newest allocation.
    #[arg(long)]
    history: bool,
    /// Text: the layout of the WinDbg blocks. `current`: as today's WinDbg prints `!verifier 3`
    /// and `!verifier 80` (flag lists of the target's build); `classic`: the Windows 7-era layout
    /// of the reference session (byte for byte with --whole-log).
    #[arg(long, value_enum, default_value_t = WindbgStyle::Current, value_name = "STYLE")]
    windbg_style: WindbgStyle,
}

impl ReportArgs {
    fn pull_options(&self) -> kdleak::verifier::PullOptions {
        kdleak::verifier::PullOptions {
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
    fn emit(&self, mut report: kdleak::verifier::LeakReport) -> Result<ExitCode> {
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

fn run_attach(args: AttachArgs) -> Result<ExitCode> {
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

// ---- kdleak analyze (issue 10) ---------------------------------------------------------------

#[derive(clap::Args)]
struct AnalyzeArgs {
    /// The crash dump: a complete or kernel memory dump of x64 Windows (MEMORY.DMP; full or
    /// bitmap layout). Minidumps and small (triage) dumps lack the pool and are refused.
    dump: PathBuf,
    #[command(flatten)]
    symbols: SymbolArgs,
    #[command(flatten)]
    report: ReportArgs,
}

fn run_analyze(args: AnalyzeArgs) -> Result<ExitCode> {
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

// ---- kdleak watch (issue 7) ------------------------------------------------------------------

fn parse_duration_arg(text: &str) -> std::result::Result<Duration, String> {
    kdleak::duration::parse(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{text}` is not a duration (e.g. 500ms, 60s, 5m, 2h)"))
}

#[derive(clap::Args)]
struct WatchArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Time between polls (e.g. 60s, 5m, 500ms).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration_arg)]
    interval: Duration,
    /// Stop after N polls.
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    count: Option<u64>,
    /// Stop when the next poll would start later than this after the first (e.g. 2h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    duration: Option<Duration>,
    /// Only this verified driver (repeatable; `.sys` optional). Default: every verified driver.
    #[arg(long = "driver", value_name = "NAME")]
    drivers: Vec<String>,
    /// The series: one JSON record per poll, appended and flushed line by line.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Write a self-contained HTML report (chart + suspected leaks), refreshed after each poll.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Exit 1 (and stop) once outstanding bytes grew by more than BYTES since the first poll.
    #[arg(long, value_name = "BYTES")]
    fail_on_growth: Option<u64>,
    /// Consecutive growing polls that flag a site as a suspected leak.
    #[arg(long, value_name = "N", default_value_t = 3)]
    growth_polls: u32,
    /// Group allocations into sites by caller, whole stack or pool tag.
    #[arg(long, value_enum, default_value_t = GroupBy::Caller)]
    group_by: GroupBy,
    /// The final summary on standard output.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// No live view on standard error.
    #[arg(long)]
    quiet: bool,
    /// Give up (exit 3) after polls have failed for this long.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration_arg)]
    give_up_after: Duration,
}

fn run_watch(args: WatchArgs) -> Result<ExitCode> {
    let (spec, stop) = args.target.stop_options()?;
    if args.growth_polls == 0 {
        anyhow::bail!("--growth-polls must be at least 1");
    }
    let options = kdleak::watch::WatchOptions {
        stop,
        pull: kdleak::verifier::PullOptions {
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

/// One thread runs the I/O driver and the session: every request is a send, a wait on one
/// socket and a parse, so a multi-threaded runtime only adds a cross-thread wake-up per packet
/// (measured: 0.41 ms per request on loopback, mostly context switches). PDB loading still runs
/// on tokio's blocking pool.
fn async_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
