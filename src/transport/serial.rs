//! A real serial port (`com:port=/dev/ttyS0,baud=115200`) through the `serialport` crate, built
//! without libudev. The port's blocking I/O runs on two threads bridged to an in-memory async
//! stream, so the session sees an ordinary [`StreamTransport`].

use std::io::{self, Read};
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
                        if let Err(error) = write_patiently(&mut *writer, &buf[..n]) {
                            debug!(%error, "serial write failed");
                            break;
                        }
                    }
                }
            }
            closed.store(true, Ordering::Relaxed);
        })?;
    Ok(ours)
}

/// How long a write may wait for the line to take its bytes before the port counts as broken: a
/// slow line (4 KiB take 0.36 s at 115200 baud) or a busy peer draining a pty fills the output
/// buffer, and each attempt waits only `POLL`.
const WRITE_PATIENCE: Duration = Duration::from_secs(10);

/// Writes all of `bytes`, retrying the writes that time out (the port's timeout is `POLL`, so a
/// full output buffer is not a closed line) until `WRITE_PATIENCE` has passed without progress.
fn write_patiently(writer: &mut dyn io::Write, mut bytes: &[u8]) -> io::Result<()> {
    let mut last_progress = std::time::Instant::now();
    let retryable = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
        )
    };
    while !bytes.is_empty() {
        match writer.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                bytes = &bytes[n..];
                last_progress = std::time::Instant::now();
            }
            Err(e) if retryable(&e) && last_progress.elapsed() < WRITE_PATIENCE => {}
            Err(e) => return Err(e),
        }
    }
    loop {
        match writer.flush() {
            Ok(()) => return Ok(()),
            Err(e) if retryable(&e) && last_progress.elapsed() < WRITE_PATIENCE => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `chunk` bytes per write and times out every other attempt, as a full tty
    /// output buffer does.
    struct SlowLine {
        written: Vec<u8>,
        chunk: usize,
        attempts: usize,
    }

    impl io::Write for SlowLine {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.attempts += 1;
            if self.attempts % 2 == 1 {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let n = bytes.len().min(self.chunk);
            self.written.extend_from_slice(&bytes[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_write_that_times_out_on_a_full_line_is_retried_not_a_closed_port() {
        let mut line = SlowLine {
            written: Vec::new(),
            chunk: 7,
            attempts: 0,
        };
        let bytes: Vec<u8> = (0..100).collect();
        write_patiently(&mut line, &bytes).unwrap();
        assert_eq!(line.written, bytes);
    }

    #[test]
    fn a_real_write_error_still_ends_the_port() {
        struct Gone;
        impl io::Write for Gone {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let error = write_patiently(&mut Gone, b"x").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    }
}
