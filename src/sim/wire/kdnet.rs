//! KDNET transport of the simulated target (kdnet.md §3, §4, §7): one UDP socket that pokes the
//! configured host every few seconds, accepts the Response, sends the ping, and carries KD
//! packets in sealed data datagrams.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use kdproto::kd::Framing;
use kdproto::kdnet::{ControlMessage, DataBody, Endpoint, Key, NetAddr, Opened, Poke};
use tokio::net::UdpSocket;

use super::delay_line::DelayLine;
use super::faults::{FaultInjector, FaultSpec};
use crate::sim::machine::target::{TargetConfig, TargetCore};
use crate::sim::machine::Machine;
use crate::sim::status::report::Reporter;
use crate::sim::status::stats::{reason_of, SimStats};

/// KDNET protocol version byte the simulator speaks (kdnet.md §1.2: 2, 4 and 5 are seen).
pub const DEFAULT_VERSION: u8 = 6;
/// Ethernet's MTU: a real kdnet target's datagrams fit one frame (kdnet.md §4.6).
pub const DEFAULT_MTU: usize = 1500;
/// Poke period of a real target (kdnet.md §3.1).
pub const DEFAULT_POKE_INTERVAL: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct KdnetConfig {
    /// The host the target is configured for (`hostip:port`); pokes go there.
    pub host: SocketAddr,
    /// Our own address; port 0 picks one. `None`: the unspecified address of the host's family.
    pub bind: Option<SocketAddr>,
    pub key: Key,
    pub version: u8,
    pub poke_interval: Duration,
    /// Seeds the client key material of the pokes.
    pub seed: u64,
    /// Loss, duplication, reordering, corruption, latency, reboot and stall to inject.
    pub faults: FaultSpec,
    /// The link's MTU: no datagram the target sends is larger, so bigger reads come back short
    /// (default 1500, Ethernet).
    pub mtu: usize,
}

impl KdnetConfig {
    pub fn new(host: SocketAddr, key: Key) -> Self {
        Self {
            host,
            bind: None,
            key,
            version: DEFAULT_VERSION,
            poke_interval: DEFAULT_POKE_INTERVAL,
            seed: 0x6b64_6c65_616b_0001,
            faults: FaultSpec::default(),
            mtu: DEFAULT_MTU,
        }
    }
}

/// SplitMix64: deterministic pseudo-random bytes from a seed.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The poke sequence: client key counter +1 and seq +3 per poke (kdnet.md §3.2).
#[derive(Debug, Clone)]
struct Poker {
    client_key: [u8; 32],
    counter: u64,
    seq: u64,
}

impl Poker {
    fn new(seed: u64) -> Self {
        let mut state = seed;
        let mut client_key = [0; 32];
        for chunk in client_key.chunks_mut(8) {
            chunk.copy_from_slice(&splitmix(&mut state).to_le_bytes());
        }
        let counter = u64::from_le_bytes(client_key[..8].try_into().expect("8 bytes"));
        Self {
            client_key,
            counter,
            seq: 0,
        }
    }

    fn next(&mut self) -> (u64, [u8; 32]) {
        self.counter = self.counter.wrapping_add(1);
        self.seq += 3;
        self.client_key[..8].copy_from_slice(&self.counter.to_le_bytes());
        (self.seq, self.client_key)
    }
}

fn net_addr(addr: SocketAddr) -> NetAddr {
    match addr {
        SocketAddr::V4(v4) => NetAddr::from(v4),
        SocketAddr::V6(v6) => NetAddr {
            ip: v6.ip().octets(),
            port: v6.port(),
        },
    }
}

/// Runs the KDNET target until `shutdown` completes; returns the final counters.
pub async fn run(
    config: KdnetConfig,
    machine: Machine,
    reporter: &mut Reporter,
    shutdown: impl Future<Output = ()>,
) -> io::Result<SimStats> {
    let bind = config.bind.unwrap_or(match config.host {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    });
    let socket = UdpSocket::bind(bind).await?;
    // Connected: only the configured host is heard, and the local address is concrete.
    socket.connect(config.host).await?;
    let local = socket.local_addr()?;
    let socket = socket.into_std()?;
    let delayed = DelayLine::start(socket.try_clone()?)?;
    let mut medium = FaultyUdp {
        socket: UdpSocket::from_std(socket)?,
        delayed,
        faults: FaultInjector::new(config.faults.clone()),
    };
    let boot_machine = machine.clone();
    let started = Instant::now();
    let mut reboot_at = config.faults.reboot_after.map(|after| started + after);
    let mut reboot_after_continues = config.faults.reboot_after_continues;
    let mut bugcheck_after_continues = config.faults.bugcheck_after_continues;
    let stall_at = config.faults.stall_after.map(|after| started + after);
    tracing::info!("sim kdnet: {local} poking {}", config.host);

    let mut core = TargetCore::new(machine, TargetConfig::kdnet_with_mtu(config.mtu));
    let mut endpoint = Endpoint::target(config.key.clone(), config.version);
    let mut poker = Poker::new(config.seed);
    let mut debugger: Option<SocketAddr> = None;
    let mut pokes = tokio::time::interval(config.poke_interval);
    pokes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 65536];
    tokio::pin!(shutdown);

    loop {
        flush(&mut medium, &mut core, &mut endpoint).await;
        // Once the host's Continue has been acknowledged, so the host saw it taken.
        if bugcheck_after_continues.is_some_and(|n| core.stats().continues >= n) {
            bugcheck_after_continues = None;
            if core.bug_check(Instant::now()) {
                tracing::info!("sim kdnet: bug check");
                continue;
            }
        }
        if core.crash_continued() {
            // Resumed after its bug check: Windows writes the dump and restarts.
            core.reboot(boot_machine.clone());
            endpoint = Endpoint::target(config.key.clone(), config.version);
            debugger = None;
            tracing::info!("sim kdnet: rebooted after the bug check");
        }
        if reboot_after_continues.is_some_and(|n| core.stats().continues >= n) {
            reboot_after_continues = None;
            core.reboot(boot_machine.clone());
            endpoint = Endpoint::target(config.key.clone(), config.version);
            debugger = None;
            tracing::info!("sim kdnet: rebooted");
        }
        core.stats_mut().faults = medium.faults.counts().clone();
        reporter.publish(core.stats())?;
        let deadline = core.poll_timeout();
        tokio::select! {
            () = &mut shutdown => break,
            () = sleep_until(reboot_at) => {
                // A new boot: memory reloaded, no debugger; its pokes say so and a host
                // re-handshakes (kdnet.md §3.4).
                reboot_at = None;
                core.reboot(boot_machine.clone());
                endpoint = Endpoint::target(config.key.clone(), config.version);
                debugger = None;
                tracing::info!("sim kdnet: rebooted");
            }
            () = sleep_until(stall_at) => {
                // A hung machine answers nothing until it is shut down.
                core.stats_mut().stalled = true;
                reporter.publish(core.stats())?;
                tracing::info!("sim kdnet: stalled");
                (&mut shutdown).await;
                break;
            }
            _ = pokes.tick() => {
                let (seq, client_key) = poker.next();
                let poke = Poke {
                    client_key,
                    target: net_addr(local),
                    host: net_addr(config.host),
                    debugger: debugger.map_or(NetAddr::NONE_V4, net_addr),
                };
                match endpoint.make_poke(seq, &poke) {
                    Ok(wire) => {
                        core.stats_mut().pokes += 1;
                        medium.send(&wire).await;
                    }
                    Err(error) => tracing::warn!("sim kdnet: cannot seal a poke: {error}"),
                }
            }
            received = medium.socket.recv(&mut buf) => {
                let len = match received {
                    Ok(len) => len,
                    // ICMP port unreachable from a host that is not up yet.
                    Err(error) => {
                        tracing::debug!("sim kdnet: recv: {error}");
                        continue;
                    }
                };
                let now = Instant::now();
                for copy in medium.faults.plan(&buf[..len]).into_iter().map(|d| d.bytes) {
                    match endpoint.open(&copy) {
                        Err(error) => {
                            tracing::debug!("sim kdnet: rejected datagram: {error}");
                            core.stats_mut().reject(reason_of("kdnet", &error));
                        }
                        Ok(Opened::Control { datagram, message: ControlMessage::Response(_) }) => {
                            match endpoint.accept_response(&datagram) {
                                Ok(()) => {
                                    core.stats_mut().handshakes += 1;
                                    debugger = Some(config.host);
                                    core.restart_link();
                                    let host = match config.host {
                                        SocketAddr::V4(v4) => *v4.ip(),
                                        SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
                                    };
                                    match endpoint.seal_data(&DataBody::Ping { host }) {
                                        Ok(wire) => medium.send(&wire).await,
                                        Err(error) => tracing::warn!("sim kdnet: ping: {error}"),
                                    }
                                }
                                Err(error) => core.stats_mut().reject(reason_of("kdnet", &error)),
                            }
                        }
                        Ok(Opened::Control { .. }) => {
                            core.stats_mut().reject("kdnet: unexpected control message");
                        }
                        Ok(Opened::Data { body: DataBody::BreakIn, .. }) => core.receive_break_in(now),
                        Ok(Opened::Data { body: DataBody::Kd(bytes), .. }) => core.receive(&bytes, now),
                        Ok(Opened::Data { body: DataBody::Ping { .. }, .. }) => {
                            core.stats_mut().reject("kdnet: ping from the host");
                        }
                    }
                }
            }
            () = sleep_until(deadline) => core.handle_timeout(Instant::now()),
            () = sleep_until(reporter.flush_due()) => reporter.flush()?,
        }
    }
    let stats = core.stats();
    reporter.publish(stats.clone())?;
    Ok(stats)
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await,
        None => std::future::pending().await,
    }
}

/// Seals everything the target has to send, then sends it: the ACK of a request and its reply
/// leave back to back, so the host usually finds both on one wake-up instead of being woken
/// for the ACK and again, a seal later, for the reply.
async fn flush(medium: &mut FaultyUdp, core: &mut TargetCore, endpoint: &mut Endpoint) {
    let mut sealed = Vec::new();
    while let Some(transmit) = core.poll_transmit() {
        if !endpoint.has_data_key() {
            continue; // No session: nothing can carry it.
        }
        match transmit
            .to_bytes(Framing::Datagram)
            .and_then(|body| endpoint.seal_data_raw(body))
        {
            Ok(wire) => sealed.push(wire),
            Err(error) => tracing::warn!("sim kdnet: cannot seal: {error}"),
        }
    }
    for wire in sealed {
        medium.send(&wire).await;
    }
}

/// The target's UDP socket seen through the fault injector: each datagram may be lost,
/// duplicated, corrupted or delayed (a delayed copy goes through the delay line, so later
/// datagrams can overtake it).
struct FaultyUdp {
    socket: UdpSocket,
    delayed: DelayLine,
    faults: FaultInjector,
}

impl FaultyUdp {
    async fn send(&mut self, wire: &[u8]) {
        let now = Instant::now();
        for delivery in self.faults.plan(wire) {
            if delivery.delay.is_zero() {
                send(&self.socket, &delivery.bytes).await;
            } else {
                self.delayed.send_at(now + delivery.delay, delivery.bytes);
            }
        }
    }
}

async fn send(socket: &UdpSocket, wire: &[u8]) {
    if let Err(error) = socket.send(wire).await {
        tracing::debug!("sim kdnet: send: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pokes_count_up() {
        let mut poker = Poker::new(7);
        let (seq1, key1) = poker.next();
        let (seq2, key2) = poker.next();
        assert_eq!((seq1, seq2), (3, 6));
        let c1 = u64::from_le_bytes(key1[..8].try_into().unwrap());
        let c2 = u64::from_le_bytes(key2[..8].try_into().unwrap());
        assert_eq!(c2, c1.wrapping_add(1));
        assert_eq!(key1[8..], key2[8..]);
    }
}
