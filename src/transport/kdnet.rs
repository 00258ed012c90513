//! KDNET host transport (kdnet.md §3.4, §7): bind the UDP port, answer the first authenticated
//! poke, pin the target's address, and re-handshake when the pinned target pokes with no
//! debugger (a reboot). Key material never reaches a log.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use kdproto::kd::Framing;
use kdproto::kdnet::{ControlMessage, DataBody, Endpoint, Key, Opened, Poke};
use kdproto::link::Transmit;
use tokio::net::UdpSocket;
use tokio::time::{timeout_at, Instant};
use tracing::{debug, info, trace, warn};

use super::{host_random, Incoming, TransportError};

/// Receive buffer: kdnet.md §4.6 recommends 64 KiB.
const RECV_BUF: usize = 64 * 1024;
/// A poke with debugger port 0 this soon after a handshake was sent before the target saw our
/// Response; it is not a reboot.
const REHANDSHAKE_GUARD: Duration = Duration::from_millis(1500);

/// Counters for diagnostics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KdnetStats {
    /// Datagrams received in total.
    pub datagrams: u64,
    /// Datagrams that failed to decrypt or authenticate (almost always a wrong key).
    pub auth_failures: u64,
    /// Datagrams from an address other than the pinned target.
    pub foreign_dropped: u64,
    /// Authenticated datagrams we could not use (data before a key, malformed bodies).
    pub unusable: u64,
    /// Handshakes completed (1 + re-handshakes).
    pub handshakes: u64,
    /// Keepalive pokes ignored while connected.
    pub pokes_ignored: u64,
}

/// A connected KDNET session.
pub struct KdnetTransport {
    socket: UdpSocket,
    endpoint: Endpoint,
    peer: SocketAddr,
    stats: KdnetStats,
    last_handshake: Instant,
    buf: Vec<u8>,
}

/// Binds the UDP port, explaining the usual failures.
pub async fn bind(addr: SocketAddr) -> Result<UdpSocket, TransportError> {
    UdpSocket::bind(addr).await.map_err(|source| {
        let hint = match source.kind() {
            io::ErrorKind::AddrInUse => format!(
                " (another debugger or kdleak already uses UDP port {}; close it or pick another port)",
                addr.port()
            ),
            io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)".into(),
            io::ErrorKind::AddrNotAvailable => " (--bind must be an address of this host)".into(),
            _ => String::new(),
        };
        TransportError::Open {
            what: format!("cannot bind UDP {addr}"),
            hint,
            source,
        }
    })
}

impl KdnetTransport {
    /// Waits up to `timeout` for an authenticated poke on `socket`, answers it and pins its
    /// sender. The timeout error says whether nothing arrived or nothing authenticated.
    pub async fn accept(
        socket: UdpSocket,
        key: Key,
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        let port = socket.local_addr().map(|a| a.port()).unwrap_or_default();
        let deadline = Instant::now() + timeout;
        let mut endpoint = Endpoint::host(key);
        let mut stats = KdnetStats::default();
        let mut buf = vec![0u8; RECV_BUF];
        info!(port, "waiting for the target's KDNET poke");
        loop {
            let (len, from) = match timeout_at(deadline, socket.recv_from(&mut buf)).await {
                Ok(r) => r.map_err(|source| TransportError::Io {
                    what: format!("receiving on UDP port {port}"),
                    source,
                })?,
                Err(_) => return Err(accept_timeout(port, timeout, &stats)),
            };
            stats.datagrams += 1;
            match endpoint.open(&buf[..len]) {
                Ok(Opened::Control {
                    datagram,
                    message: ControlMessage::Poke(poke),
                }) => {
                    if poke.has_debugger() {
                        warn!(%from, debugger = %poke.debugger, "the target reports another debugger connected; taking over");
                    }
                    let response = endpoint.accept_poke(&datagram, host_random())?;
                    send_to(&socket, &response, from).await?;
                    stats.handshakes += 1;
                    info!(%from, version = endpoint.version(), "KDNET handshake done");
                    return Ok(Self {
                        socket,
                        endpoint,
                        peer: from,
                        stats,
                        last_handshake: Instant::now(),
                        buf,
                    });
                }
                Ok(other) => {
                    stats.unusable += 1;
                    trace!(%from, kind = opened_kind(&other), "ignored before the handshake");
                }
                Err(kdproto::Error::NoDataKey) => {
                    stats.unusable += 1;
                    debug!(%from, "data datagram before the handshake (target still in another session)");
                }
                Err(error) => {
                    stats.auth_failures += 1;
                    debug!(%from, %error, "datagram did not authenticate");
                }
            }
        }
    }

    /// The pinned target address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    pub fn stats(&self) -> &KdnetStats {
        &self.stats
    }

    pub fn describe(&self) -> String {
        match self.socket.local_addr() {
            Ok(local) => format!("KDNET target {} (UDP port {})", self.peer, local.port()),
            Err(_) => format!("KDNET target {}", self.peer),
        }
    }

    /// Seals and sends one transmission to the pinned target.
    pub async fn send(&mut self, transmit: &Transmit) -> Result<(), TransportError> {
        let body = match transmit {
            Transmit::BreakIn => DataBody::BreakIn,
            Transmit::Packet(_) => DataBody::Kd(transmit.to_bytes(Framing::Datagram)?),
        };
        let wire = self.endpoint.seal_data(&body)?;
        send_to(&self.socket, &wire, self.peer).await
    }

    /// Sends a KD control packet outside the link (the RESEND that answers a ping).
    pub async fn send_raw_kd(&mut self, packet: Bytes) -> Result<(), TransportError> {
        let wire = self.endpoint.seal_data(&DataBody::Kd(packet))?;
        send_to(&self.socket, &wire, self.peer).await
    }

    /// The next thing the pinned target sent. Cancel-safe at the `recv_from` await.
    pub async fn recv(&mut self) -> Result<Incoming, TransportError> {
        loop {
            let (len, from) = self
                .socket
                .recv_from(&mut self.buf)
                .await
                .map_err(|source| TransportError::Io {
                    what: "receiving KDNET datagrams".into(),
                    source,
                })?;
            self.stats.datagrams += 1;
            if from != self.peer {
                self.stats.foreign_dropped += 1;
                debug!(%from, pinned = %self.peer, "datagram from another address dropped");
                continue;
            }
            let opened = match self.endpoint.open(&self.buf[..len]) {
                Ok(opened) => opened,
                Err(error) => {
                    self.stats.auth_failures += 1;
                    debug!(%error, "datagram from the target did not open");
                    continue;
                }
            };
            match opened {
                Opened::Data { body, seq } => match body {
                    DataBody::Kd(bytes) => {
                        trace!(seq, len = bytes.len(), "KD datagram");
                        return Ok(Incoming::Bytes(bytes));
                    }
                    DataBody::Ping { .. } => return Ok(Incoming::Ping),
                    DataBody::BreakIn => self.stats.unusable += 1,
                },
                Opened::Control {
                    datagram,
                    message: ControlMessage::Poke(poke),
                } => {
                    if self.is_reboot(&poke) {
                        let response = self.endpoint.accept_poke(&datagram, host_random())?;
                        send_to(&self.socket, &response, self.peer).await?;
                        self.stats.handshakes += 1;
                        self.last_handshake = Instant::now();
                        warn!(target = %self.peer, "the target poked without a debugger (rebooted?); handshake renewed");
                        return Ok(Incoming::TargetRestarted);
                    }
                    self.stats.pokes_ignored += 1;
                }
                Opened::Control { .. } => self.stats.unusable += 1,
            }
        }
    }

    fn is_reboot(&self, poke: &Poke) -> bool {
        !poke.has_debugger() && self.last_handshake.elapsed() >= REHANDSHAKE_GUARD
    }
}

async fn send_to(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) -> Result<(), TransportError> {
    socket
        .send_to(bytes, to)
        .await
        .map(drop)
        .map_err(|source| TransportError::Io {
            what: format!("sending to {to}"),
            source,
        })
}

fn opened_kind(opened: &Opened) -> &'static str {
    match opened {
        Opened::Control { .. } => "control",
        Opened::Data { .. } => "data",
    }
}

/// kdnet.md §7 "Connection diagnostics".
fn accept_timeout(port: u16, timeout: Duration, stats: &KdnetStats) -> TransportError {
    let secs = timeout.as_secs_f64();
    if stats.datagrams == 0 {
        return TransportError::ConnectTimeout(format!(
            "no datagrams on UDP port {port} in {secs:.1} s: check bcdedit /dbgsettings hostip/port on the target, the host firewall, and that the port is free"
        ));
    }
    if stats.auth_failures == stats.datagrams {
        return TransportError::WrongKey(format!(
            "received {} datagrams on UDP port {port} in {secs:.1} s but none authenticated: check the key (bcdedit /dbgsettings on the target)",
            stats.datagrams
        ));
    }
    TransportError::ConnectTimeout(format!(
        "received {} datagrams on UDP port {port} in {secs:.1} s ({} did not authenticate) but no poke from the target: it may still be in another debugging session; restart the target's debugger connection or wait for its next poke",
        stats.datagrams, stats.auth_failures
    ))
}
