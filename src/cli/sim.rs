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
    /// with an SDMP header: kernel pages only), bitmap (bitmap dump with an FDMP header: all RAM),
    /// live (DumpType 6, Task Manager's live kernel dump), rdmp-kernel, rdmp-kernel-user,
    /// rdmp-complete (DumpType 8, 9, 10: WinDbg's `.dump /k`, `/ka`, `/f` since 2022).
    // Checked in run_sim: clap drops `requires = "write_dump"` when a transport (which conflicts
    // with --write-dump) is present, and ignores it for an argument with a default.
    #[arg(long, value_enum)]
    pub dump_type: Option<DumpTypeArg>,
    /// With --write-dump: write what a hypervisor writes of a VM instead of a crash dump: elf (a
    /// QEMU-style ELF core, as `virsh dump --memory-only`) or raw (raw physical memory, as a
    /// `.raw`/`.vmem`).
    #[arg(long, value_enum, conflicts_with = "dump_type")]
    pub write_image: Option<ImageArg>,
    /// With --write-image: the machine's RAM in bytes (e.g. 8G, 0x200000000): the simulator's
    /// frames go to the top, the rest are holes not stored on disk (a sparse multi-GiB image).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub physical_size: Option<u64>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ImageArg {
    Elf,
    Raw,
}

/// Bytes as decimal, 0x hex, or with a K/M/G/T suffix (powers of 1024).
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, scale) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() && !text.starts_with("0x") => {
            let scale = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                other => return Err(format!("unknown size suffix {other}")),
            };
            (&text[..i], scale)
        }
        _ => (text, 1),
    };
    let value = match number.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => number.parse(),
    }
    .map_err(|e| format!("{text}: {e}"))?;
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("{text} is too large"))
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DumpTypeArg {
    Full,
    Kernel,
    Bitmap,
    Live,
    RdmpKernel,
    RdmpKernelUser,
    RdmpComplete,
}

impl From<DumpTypeArg> for sim::image::DumpKind {
    fn from(arg: DumpTypeArg) -> Self {
        match arg {
            DumpTypeArg::Full => Self::Full,
            DumpTypeArg::Kernel => Self::Kernel,
            DumpTypeArg::Bitmap => Self::Bitmap,
            DumpTypeArg::Live => Self::Live,
            DumpTypeArg::RdmpKernel => Self::RdmpKernel,
            DumpTypeArg::RdmpKernelUser => Self::RdmpKernelUser,
            DumpTypeArg::RdmpComplete => Self::RdmpComplete,
        }
    }
}

pub fn run(args: SimArgs) -> Result<ExitCode> {
    if let Some(path) = &args.write_dump {
        return write_sim_dump(&args, path);
    }
    anyhow::ensure!(
        args.dump_type.is_none() && args.write_image.is_none() && args.physical_size.is_none(),
        "--dump-type, --write-image and --physical-size need --write-dump FILE"
    );
    anyhow::ensure!(
        args.kdnet.is_some() || args.pipe.is_some() || args.tcp.is_some() || args.pty.is_some(),
        "kdleak sim needs a transport (--kdnet, --pipe, --tcp or --pty) or --write-dump FILE"
    );
    let crash_later = args.faults.bugcheck_after_continues.is_some();
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
        None if crash_later => {
            anyhow::bail!("--faults bugcheck_after_continues needs a --scenario with a [bugcheck]")
        }
        None => Machine::default(),
        Some(name) if crash_later => Machine::for_scenario_crashing_later(name)
            .with_context(|| format!("cannot load scenario {name}"))?,
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
    anyhow::ensure!(
        args.physical_size.is_none() || args.write_image.is_some(),
        "--physical-size needs --write-image elf|raw (a crash dump lists the machine's own RAM)"
    );
    if let Some(image) = args.write_image {
        let placement = sim::image::Placement {
            physical_size: args.physical_size.unwrap_or(0),
        };
        let summary = match image {
            ImageArg::Elf => sim::image::write_elf(&machine, path, placement)?,
            ImageArg::Raw => sim::image::write_raw(&machine, path, placement)?,
        };
        eprintln!(
            "kdleak sim: wrote {} ({} pages stored, {} bytes, CR3 {:#x}) to {}",
            match image {
                ImageArg::Elf => "an ELF core",
                ImageArg::Raw => "a raw physical image",
            },
            summary.pages,
            summary.file_size,
            summary.cr3,
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
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
