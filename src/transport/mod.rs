//! The byte carriers under a host session: KDNET over UDP, or any byte stream with KDCOM framing
//! (Unix socket, TCP, serial port). The session drives a [`kdproto::link::Link`] over whichever
//! one [`open`] returns and does not care which it is.

pub mod embedded_sim;
mod error;
pub mod kdnet;
mod random;
pub mod serial;
pub mod stream;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use kdproto::kd::Framing;
use kdproto::link::{Dialect, Transmit};

use crate::connect::ConnectSpec;
pub use error::TransportError;
pub use kdnet::{KdnetStats, KdnetTransport};
pub use random::host_random;
pub use stream::{ByteStream, StreamTransport};

/// What arrived from the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A chunk of a KDCOM stream, or the KD packet one KDNET data datagram carried.
    Bytes(Bytes),
    /// The KDNET ping a target sends first after a handshake (kdnet.md §4.2); the host answers RESEND.
    Ping,
    /// A rebooted KDNET target poked with no debugger and was answered: the KD stream restarts.
    TargetRestarted,
}

/// How to open a transport.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Local address to bind KDNET's UDP port on (default: all IPv4 interfaces).
    pub bind: IpAddr,
    /// How long to wait for the target's first poke, or for a stream to connect.
    pub connect_timeout: Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            connect_timeout: Duration::from_secs(30),
        }
    }
}

/// One open transport.
pub enum Transport {
    /// Boxed: the KDNET state is several times larger than a stream's.
    Kdnet(Box<KdnetTransport>),
    Stream(StreamTransport),
}

impl From<KdnetTransport> for Transport {
    fn from(value: KdnetTransport) -> Self {
        Self::Kdnet(Box::new(value))
    }
}

impl From<StreamTransport> for Transport {
    fn from(value: StreamTransport) -> Self {
        Self::Stream(value)
    }
}

impl Transport {
    /// KD packet framing on this medium.
    pub fn framing(&self) -> Framing {
        match self {
            Self::Kdnet(_) => Framing::Datagram,
            Self::Stream(_) => Framing::Serial,
        }
    }

    /// KD id numbering on this medium.
    pub fn dialect(&self) -> Dialect {
        match self {
            Self::Kdnet(_) => Dialect::Kdnet,
            Self::Stream(_) => Dialect::Kdcom,
        }
    }

    /// A description for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Kdnet(t) => t.describe(),
            Self::Stream(t) => t.describe(),
        }
    }

    /// Sends one link transmission.
    pub async fn send(&mut self, transmit: &Transmit) -> Result<(), TransportError> {
        match self {
            Self::Kdnet(t) => t.send(transmit).await,
            Self::Stream(t) => t.send(transmit).await,
        }
    }

    /// Waits for the next input. Cancel-safe: dropping the future loses nothing already read.
    pub async fn recv(&mut self) -> Result<Incoming, TransportError> {
        match self {
            Self::Kdnet(t) => t.recv().await,
            Self::Stream(t) => t.recv().await.map(Incoming::Bytes),
        }
    }
}

/// Opens the transport a connection string names. For KDNET this binds the port and completes
/// the handshake with the target's poke. `sim` needs its target kept alive: use
/// [`embedded_sim::start`] (as [`crate::info::run`] does).
pub async fn open(spec: &ConnectSpec, options: &OpenOptions) -> Result<Transport, TransportError> {
    match spec {
        ConnectSpec::Net { port, key, .. } => {
            let socket = kdnet::bind(SocketAddr::new(options.bind, *port)).await?;
            KdnetTransport::accept(socket, key.clone(), options.connect_timeout)
                .await
                .map(Transport::from)
        }
        ConnectSpec::Pipe {
            path, reconnect, ..
        } => stream::connect_unix(path, *reconnect, options.connect_timeout)
            .await
            .map(Transport::Stream),
        ConnectSpec::Tcp { addr } => stream::connect_tcp(addr, options.connect_timeout)
            .await
            .map(Transport::Stream),
        ConnectSpec::Serial { device, baud } => serial::open_serial(device, *baud)
            .await
            .map(Transport::Stream),
        ConnectSpec::Sim { .. } => Err(TransportError::Unsupported(
            "the embedded simulated target needs embedded_sim::start, which keeps it running"
                .into(),
        )),
    }
}
