//! A real serial port (`com:port=/dev/ttyS0,baud=115200`) through the `serialport` crate, built
//! without libudev. The port's blocking I/O runs on two threads bridged to an in-memory async
//! stream, so the session sees an ordinary [`StreamTransport`].

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serialport::SerialPort;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tracing::{debug, info};

use super::{StreamTransport, TransportError};

/// How long one blocking read waits before checking whether the session is gone.
const POLL: Duration = Duration::from_millis(50);

/// Opens `device` at `baud`, 8N1, no flow control, exclusive.
pub async fn open_serial(device: &str, baud: u32) -> Result<StreamTransport, TransportError> {
    let name = format!("serial port {device}");
    let path = device.to_string();
    let opened = tokio::task::spawn_blocking(move || {
        serialport::new(&path, baud)
            .data_bits(serialport::DataBits::Eight)
            .parity(serialport::Parity::None)
            .stop_bits(serialport::StopBits::One)
            .flow_control(serialport::FlowControl::None)
            .timeout(POLL)
            .open()
    })
    .await
    .map_err(|e| TransportError::Unsupported(format!("serial open task failed: {e}")))?;
    let port = opened.map_err(|e| open_error(&name, e))?;
    info!(device, baud, "serial port open");
    let stream = bridge(port).map_err(|source| TransportError::Open {
        what: format!("cannot use {name}"),
        hint: String::new(),
        source,
    })?;
    Ok(StreamTransport::new(stream, name))
}

fn open_error(name: &str, error: serialport::Error) -> TransportError {
    let (kind, hint) = match error.kind() {
        serialport::ErrorKind::NoDevice => (
            io::ErrorKind::NotFound,
            " (no such device, or another program has it open: check the path, e.g. ls /dev/ttyS* /dev/ttyUSB*)",
        ),
        serialport::ErrorKind::Io(io::ErrorKind::PermissionDenied) => (
            io::ErrorKind::PermissionDenied,
            " (permission denied: add your user to the dialout group or run with access to the device)",
        ),
        serialport::ErrorKind::Io(kind) => (kind, ""),
        serialport::ErrorKind::InvalidInput => (
            io::ErrorKind::InvalidInput,
            " (the device rejected the settings: check the baud rate)",
        ),
        serialport::ErrorKind::Unknown => (io::ErrorKind::Other, ""),
    };
    TransportError::Open {
        what: format!("cannot open {name}"),
        hint: hint.into(),
        source: io::Error::new(kind, error.description),
    }
}

/// Bridges a blocking serial port to an async stream: one thread copies port → stream, one
/// stream → port. Both end when the returned stream is dropped. Must be called inside a tokio
/// runtime.
pub fn bridge(port: Box<dyn SerialPort>) -> io::Result<DuplexStream> {
    let mut reader = port.try_clone().map_err(io::Error::other)?;
    let mut writer = port;
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut from_session, mut to_session) = tokio::io::split(theirs);
    let closed = Arc::new(AtomicBool::new(false));
    let handle = tokio::runtime::Handle::current();

    let (handle_r, closed_r) = (handle.clone(), closed.clone());
    std::thread::Builder::new()
        .name("kdleak-serial-rx".into())
        .spawn(move || {
            let mut buf = [0u8; 4096];
            while !closed_r.load(Ordering::Relaxed) {
                match reader.read(&mut buf) {
                    Ok(0) => std::thread::sleep(POLL),
                    Ok(n) => {
                        if handle_r.block_on(to_session.write_all(&buf[..n])).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // A pty whose other side is not open yet reports EIO; keep polling.
                        debug!(error = %e, "serial read failed");
                        std::thread::sleep(POLL);
                    }
                }
            }
        })?;
    std::thread::Builder::new()
        .name("kdleak-serial-tx".into())
        .spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match handle.block_on(from_session.read(&mut buf)) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if writer
                            .write_all(&buf[..n])
                            .and_then(|()| writer.flush())
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
            closed.store(true, Ordering::Relaxed);
        })?;
    Ok(ours)
}
