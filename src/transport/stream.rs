//! Byte-stream transports with KDCOM (serial) framing: Unix sockets (VM serial pipes), TCP
//! (`QEMU -serial tcp:`), and anything else that is `AsyncRead + AsyncWrite` (a serial port).

use std::io;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use kdproto::kd::Framing;
use kdproto::link::Transmit;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{sleep, Instant};
use tracing::{debug, info};

use super::TransportError;

/// Anything a KDCOM stream can run over.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

/// How often `reconnect` retries a socket that is not there yet.
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// A connected byte stream.
pub struct StreamTransport {
    io: Box<dyn ByteStream>,
    name: String,
    buf: Vec<u8>,
}

impl StreamTransport {
    /// Wraps any stream; `name` appears in messages ("serial pipe /tmp/vm.sock").
    pub fn new(io: impl ByteStream + 'static, name: impl Into<String>) -> Self {
        Self {
            io: Box::new(io),
            name: name.into(),
            buf: vec![0; 8192],
        }
    }

    pub fn describe(&self) -> String {
        self.name.clone()
    }

    /// Changes the name messages use.
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    pub async fn send(&mut self, transmit: &Transmit) -> Result<(), TransportError> {
        let bytes = transmit.to_bytes(Framing::Serial)?;
        self.io
            .write_all(&bytes)
            .await
            .map_err(|e| self.io_error(e))?;
        self.io.flush().await.map_err(|e| self.io_error(e))
    }

    /// The next chunk of bytes. Cancel-safe for sockets (a single `read`).
    pub async fn recv(&mut self) -> Result<Bytes, TransportError> {
        let n = self
            .io
            .read(&mut self.buf)
            .await
            .map_err(|source| TransportError::Io {
                what: format!("reading from {}", self.name),
                source,
            })?;
        if n == 0 {
            return Err(TransportError::Closed(self.name.clone()));
        }
        Ok(Bytes::copy_from_slice(&self.buf[..n]))
    }

    fn io_error(&self, source: io::Error) -> TransportError {
        TransportError::Io {
            what: format!("writing to {}", self.name),
            source,
        }
    }
}

/// Connects to a Unix stream socket. With `reconnect`, waits (up to `timeout`) for the socket to
/// appear and accept, as WinDbg's `reconnect` waits for the pipe.
pub async fn connect_unix(
    path: &Path,
    reconnect: bool,
    timeout: Duration,
) -> Result<StreamTransport, TransportError> {
    let name = format!("serial pipe {}", path.display());
    let deadline = Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, UnixStream::connect(path)).await {
            Ok(Ok(stream)) => {
                info!(path = %path.display(), "connected");
                return Ok(StreamTransport::new(stream, name));
            }
            Ok(Err(source)) if reconnect => {
                if Instant::now() >= deadline {
                    return Err(TransportError::ConnectTimeout(format!(
                        "{name} did not appear or accept a connection in {:.1} s (last error: {source}): check that the VM is running and its serial port is a Unix socket server at this path",
                        timeout.as_secs_f64()
                    )));
                }
                debug!(path = %path.display(), %source, "pipe not ready; retrying");
                sleep(RETRY_EVERY.min(deadline - Instant::now())).await;
            }
            Ok(Err(source)) => {
                let hint = match source.kind() {
                    io::ErrorKind::NotFound => " (nothing at that path: is the VM running with its serial port set to a Unix socket server at this path? add ,reconnect to wait for it)".to_string(),
                    io::ErrorKind::ConnectionRefused => " (nothing is listening on the socket: is the VM running? add ,reconnect to wait for it)".to_string(),
                    io::ErrorKind::PermissionDenied => " (check the socket's permissions)".to_string(),
                    _ => String::new(),
                };
                return Err(TransportError::Open {
                    what: format!("cannot connect to {name}"),
                    hint,
                    source,
                });
            }
            Err(_) => {
                return Err(TransportError::ConnectTimeout(format!(
                    "{name} did not accept a connection in {:.1} s: check that the VM is running and its serial port is a Unix socket server at this path",
                    timeout.as_secs_f64()
                )))
            }
        }
    }
}

/// Connects to serial-over-TCP.
pub async fn connect_tcp(addr: &str, timeout: Duration) -> Result<StreamTransport, TransportError> {
    let name = format!("serial over TCP {addr}");
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            info!(addr, "connected");
            Ok(StreamTransport::new(stream, name))
        }
        Ok(Err(source)) => {
            let hint = match source.kind() {
                io::ErrorKind::ConnectionRefused => {
                    " (nothing listening: is the VM running with -serial tcp:HOST:PORT,server?)"
                        .to_string()
                }
                _ => String::new(),
            };
            Err(TransportError::Open {
                what: format!("cannot connect to {name}"),
                hint,
                source,
            })
        }
        Err(_) => Err(TransportError::ConnectTimeout(format!(
            "{name}: no connection in {:.1} s: check the host, port and firewall",
            timeout.as_secs_f64()
        ))),
    }
}
