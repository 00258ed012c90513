//! KDCOM transport of the simulated target: a listening Unix stream socket and/or TCP port,
//! one client at a time, bytes straight into the serial-framed link (kd.md §1, §2).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Instant;

use kdproto::kd::Framing;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};

use super::delay_line::sleep_precisely;
use super::faults::{FaultInjector, FaultSpec};
use super::kdnet::sleep_until;
use crate::sim::machine::target::{TargetConfig, TargetCore};
use crate::sim::machine::Machine;
use crate::sim::status::report::Reporter;
use crate::sim::status::stats::SimStats;

/// Where the KDCOM target listens; at least one of the two.
#[derive(Debug, Clone, Default)]
pub struct KdcomConfig {
    /// A Unix stream socket path (a stale socket file there is replaced).
    pub unix: Option<PathBuf>,
    pub tcp: Option<SocketAddr>,
    /// Serve a pseudo-terminal instead, with a symbolic link to its device at this path, so a
    /// host opens it as a serial port.
    pub pty: Option<PathBuf>,
    /// Loss, duplication, corruption, latency, line rate, reboot and stall to inject.
    pub faults: FaultSpec,
    /// Largest KD payload accepted or sent; `None`: PACKET_MAX_SIZE, 4000 (kd.md §1.1).
    pub max_packet: Option<usize>,
}

/// The faulty line and the scheduled reboot/stall, shared by every client of one run.
struct Line {
    faults: FaultInjector,
    boot_machine: Machine,
    reboot_at: Option<Instant>,
    reboot_after_continues: Option<u64>,
    bugcheck_after_continues: Option<u64>,
    stall_at: Option<Instant>,
}

impl Line {
    fn new(spec: FaultSpec, boot_machine: Machine) -> Self {
        let started = Instant::now();
        Self {
            reboot_at: spec.reboot_after.map(|after| started + after),
            reboot_after_continues: spec.reboot_after_continues,
            bugcheck_after_continues: spec.bugcheck_after_continues,
            stall_at: spec.stall_after.map(|after| started + after),
            faults: FaultInjector::new(spec),
            boot_machine,
        }
    }

    /// Writes through the faulty line: each write may be lost, doubled or corrupted, waits its
    /// latency (in order: a stream never reorders), and occupies the line for its length at the
    /// configured baud rate.
    async fn write<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        bytes: &[u8],
    ) -> io::Result<()> {
        for delivery in self.faults.plan(bytes) {
            let wait = delivery.delay + self.faults.line_time(delivery.bytes.len());
            if !wait.is_zero() {
                sleep_precisely(wait).await;
            }
            stream.write_all(&delivery.bytes).await?;
        }
        Ok(())
    }

    /// What of `bytes`, just read, reaches the target, after their time on the line.
    async fn read(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let wait = self.faults.line_time(bytes.len());
        if !wait.is_zero() {
            sleep_precisely(wait).await;
        }
        self.faults
            .plan(bytes)
            .into_iter()
            .map(|d| d.bytes)
            .collect()
    }
}

enum Listeners {
    Unix(UnixListener),
    Tcp(TcpListener),
    Both(UnixListener, TcpListener),
}

/// Runs the KDCOM target until `shutdown` completes; returns the final counters.
pub async fn run(
    config: KdcomConfig,
    machine: Machine,
    reporter: &mut Reporter,
    shutdown: impl Future<Output = ()>,
) -> io::Result<SimStats> {
    if let Some(link) = &config.pty {
        return run_pty(link, &config, machine, reporter, shutdown).await;
    }
    let unix = match &config.unix {
        Some(path) => {
            remove_stale_socket(path)?;
            Some(UnixListener::bind(path)?)
        }
        None => None,
    };
    let tcp = match config.tcp {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    let listeners = match (unix, tcp) {
        (Some(u), Some(t)) => Listeners::Both(u, t),
        (Some(u), None) => Listeners::Unix(u),
        (None, Some(t)) => Listeners::Tcp(t),
        (None, None) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "kdcom: no Unix socket path or TCP address to listen on",
            ))
        }
    };
    let mut line = Line::new(config.faults.clone(), machine.clone());
    let mut core = TargetCore::new(machine, target_config(&config));
    tokio::pin!(shutdown);
    let result = serve_clients(
        &listeners,
        &mut core,
        &mut line,
        reporter,
        shutdown.as_mut(),
    )
    .await;
    if let Some(path) = &config.unix {
        let _ = std::fs::remove_file(path);
    }
    result?;
    let stats = core.stats();
    reporter.publish(stats.clone())?;
    Ok(stats)
}

fn target_config(config: &KdcomConfig) -> TargetConfig {
    config
        .max_packet
        .map_or_else(TargetConfig::kdcom, TargetConfig::kdcom_with_max_packet)
}

/// Serves one pseudo-terminal for the whole run: like a UART, it is there whether or not a host
/// has it open, so a host may come and go.
async fn run_pty(
    link: &std::path::Path,
    config: &KdcomConfig,
    machine: Machine,
    reporter: &mut Reporter,
    shutdown: impl Future<Output = ()>,
) -> io::Result<SimStats> {
    let pty = super::pty::Pty::open(Some(link))?;
    tracing::info!("sim kdcom: serial device {}", pty.path.display());
    let master = tokio::fs::File::from_std(pty.master.try_clone()?);
    let mut line = Line::new(config.faults.clone(), machine.clone());
    let mut core = TargetCore::new(machine, target_config(config));
    core.stats_mut().connections += 1;
    tokio::pin!(shutdown);
    serve(master, &mut core, &mut line, reporter, shutdown.as_mut()).await?;
    drop(pty);
    let stats = core.stats();
    reporter.publish(stats.clone())?;
    Ok(stats)
}

async fn serve_clients(
    listeners: &Listeners,
    core: &mut TargetCore,
    line: &mut Line,
    reporter: &mut Reporter,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> io::Result<()> {
    loop {
        reporter.publish(core.stats())?;
        let accepted = tokio::select! {
            () = shutdown.as_mut() => return Ok(()),
            stream = accept(listeners) => stream?,
        };
        core.stats_mut().connections += 1;
        core.restart_link();
        let finished = match accepted {
            Stream::Unix(stream) => serve(stream, core, line, reporter, shutdown.as_mut()).await,
            Stream::Tcp(stream) => serve(stream, core, line, reporter, shutdown.as_mut()).await,
        };
        match finished {
            Ok(true) => return Ok(()),
            Ok(false) => tracing::info!("sim kdcom: client disconnected"),
            Err(error) => tracing::info!("sim kdcom: client error: {error}"),
        }
    }
}

enum Stream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

async fn accept(listeners: &Listeners) -> io::Result<Stream> {
    match listeners {
        Listeners::Unix(u) => Ok(Stream::Unix(u.accept().await?.0)),
        Listeners::Tcp(t) => Ok(Stream::Tcp(t.accept().await?.0)),
        Listeners::Both(u, t) => tokio::select! {
            r = u.accept() => Ok(Stream::Unix(r?.0)),
            r = t.accept() => Ok(Stream::Tcp(r?.0)),
        },
    }
}

/// Serves one client; `Ok(true)` when shutdown was requested, `Ok(false)` at EOF.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    core: &mut TargetCore,
    line: &mut Line,
    reporter: &mut Reporter,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> io::Result<bool> {
    let mut buf = vec![0u8; 8192];
    loop {
        while let Some(transmit) = core.poll_transmit() {
            match transmit.to_bytes(Framing::Serial) {
                Ok(bytes) => line.write(&mut stream, &bytes).await?,
                Err(error) => tracing::warn!("sim kdcom: cannot encode: {error}"),
            }
        }
        stream.flush().await?;
        // Once the host's Continue has been acknowledged, so the host saw it taken.
        if line
            .bugcheck_after_continues
            .is_some_and(|n| core.stats().continues >= n)
        {
            line.bugcheck_after_continues = None;
            if core.bug_check(Instant::now()) {
                tracing::info!("sim kdcom: bug check");
                continue;
            }
        }
        if core.crash_continued() {
            // Resumed after its bug check: Windows writes the dump and restarts.
            core.reboot(line.boot_machine.clone());
            tracing::info!("sim kdcom: rebooted after the bug check");
        }
        if line
            .reboot_after_continues
            .is_some_and(|n| core.stats().continues >= n)
        {
            line.reboot_after_continues = None;
            core.reboot(line.boot_machine.clone());
            tracing::info!("sim kdcom: rebooted");
        }
        core.stats_mut().faults = line.faults.counts().clone();
        reporter.publish(core.stats())?;
        let deadline = core.poll_timeout();
        tokio::select! {
            () = shutdown.as_mut() => return Ok(true),
            () = sleep_until(line.reboot_at) => {
                // A new boot: memory reloaded, running, packet ids from INITIAL|SYNC.
                line.reboot_at = None;
                core.reboot(line.boot_machine.clone());
                tracing::info!("sim kdcom: rebooted");
            }
            () = sleep_until(line.stall_at) => {
                // A hung machine answers nothing until it is shut down.
                core.stats_mut().stalled = true;
                reporter.publish(core.stats())?;
                tracing::info!("sim kdcom: stalled");
                shutdown.as_mut().await;
                return Ok(true);
            }
            read = stream.read(&mut buf) => match read? {
                0 => return Ok(false),
                n => {
                    for copy in line.read(&buf[..n]).await {
                        core.receive(&copy, Instant::now());
                    }
                }
            },
            () = sleep_until(deadline) => core.handle_timeout(Instant::now()),
            () = sleep_until(reporter.flush_due()) => reporter.flush()?,
        }
    }
}

fn remove_stale_socket(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}
