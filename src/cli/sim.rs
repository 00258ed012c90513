//! `kdleak sim`: serve a simulated Windows target, or write a crash dump of it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::ValueEnum;
use kdleak::sim::{
    self, machine::quirks::Quirks, wire::faults::FaultSpec, wire::kdcom::KdcomConfig,
    wire::kdnet::KdnetConfig, Machine, Transport,
};

use super::args::{read_key, KeyArgs};
use super::async_runtime;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("transport").multiple(true).args(["kdnet", "pipe", "tcp", "pty"])))]
pub struct SimArgs {
    /// KDNET: poke the debugger host at HOST:PORT (the target's `hostip:port`).
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["pipe", "tcp", "pty"])]
    pub kdnet: Option<SocketAddr>,
    #[command(flatten)]
    pub key: KeyArgs,
    /// KDNET: seconds between pokes.
    #[arg(long, default_value_t = 3.0, value_name = "SECONDS")]
    pub poke_interval: f64,
    /// KDNET: local address to send from (default: any, a free port).
    #[arg(long, value_name = "ADDR:PORT")]
    pub bind: Option<SocketAddr>,
    /// KDCOM: listen on this Unix stream socket (a debugger connects as the client).
    #[arg(long, value_name = "PATH")]
    pub pipe: Option<PathBuf>,
    /// KDCOM: listen on this TCP address.
    #[arg(long, value_name = "ADDR:PORT")]
    pub tcp: Option<SocketAddr>,
    /// KDCOM: serve a pseudo-terminal, with a symbolic link to it at PATH (open PATH as a
    /// serial port: `com:port=PATH,baud=115200`).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["kdnet", "pipe", "tcp"])]
    pub pty: Option<PathBuf>,
    /// Keep this JSON file current with the state ("running"/"stopped") and counters.
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,
    /// KDNET: the link MTU; no datagram is larger, so bigger reads come back short.
    #[arg(long, default_value_t = sim::wire::kdnet::DEFAULT_MTU, value_name = "BYTES")]
    pub mtu: usize,
    /// KDCOM: largest KD packet payload (default and maximum 4000).
    #[arg(long, value_name = "BYTES")]
    pub max_packet: Option<usize>,
    /// Serve this scenario: a built-in name (win7-myfault, win10-myfault, win11-myfault,
    /// watch-leak), a
    /// generated one (gen:build=19041,drivers=20,allocs=5000,log=1.0,seed=1) or a scenario TOML
    /// file. Default: a tiny built-in kernel without verifier data.
    #[arg(long, value_name = "NAME|FILE")]
    pub scenario: Option<String>,
    /// Inject faults, seeded: e.g. loss=0.3,dup=0.05,reorder=0.1,corrupt=0.01,latency=5ms,
    /// jitter=1ms,baud=115200,reboot_after=20s,stall_after=1m,seed=7.
    #[arg(long, value_name = "SPEC", default_value = "")]
    pub faults: FaultSpec,
    /// Behave like a KD target that is not Windows' own stub, or a Windows that booted without a
    /// debugger: e.g. flags=0x3,data_list=0,kern_base=HEX,machine=0x14c,
    /// unanswered_reads_over=1024,dr7=HEX,kdbg=encoded (README "kdleak sim").
    #[arg(long, value_name = "SPEC", default_value = "")]
    pub quirks: Quirks,
    /// Compress the scenario timeline's target time: 60 = one target minute per wall second.
    #[arg(long, value_name = "FACTOR", default_value_t = 1.0)]
    pub time_scale: f64,
    /// Write a Windows x64 crash dump of the scenario's memory to FILE and exit (no transport).
    #[arg(long, value_name = "FILE", conflicts_with = "transport")]
    pub write_dump: Option<PathBuf>,
    /// With --write-dump: full (default; DumpType 1, physical memory runs), kernel (bitmap dump
    /// with an SDMP header: kernel pages only) or bitmap (bitmap dump with an FDMP header: all RAM).
    // Checked in run_sim: clap drops `requires = "write_dump"` when a transport (which conflicts
    // with --write-dump) is present, and ignores it for an argument with a default.
    #[arg(long, value_enum)]
    pub dump_type: Option<DumpTypeArg>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DumpTypeArg {
    Full,
    Kernel,
    Bitmap,
}

impl From<DumpTypeArg> for sim::image::DumpKind {
    fn from(arg: DumpTypeArg) -> Self {
        match arg {
            DumpTypeArg::Full => Self::Full,
            DumpTypeArg::Kernel => Self::Kernel,
            DumpTypeArg::Bitmap => Self::Bitmap,
        }
    }
}

pub fn run(args: SimArgs) -> Result<ExitCode> {
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
    machine.set_system_time(sim::image::filetime(std::time::SystemTime::now()));
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
    let system_time = sim::image::filetime(std::time::SystemTime::now());
    machine.set_system_time(system_time);
    let options = sim::image::DumpOptions {
        kind: args.dump_type.unwrap_or(DumpTypeArg::Full).into(),
        system_time,
        comment: format!("kdleak sim: simulated target ({scenario})"),
    };
    let summary = sim::image::write_dump(&machine, path, &options)?;
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
