//! Delivers delayed datagrams on time. Tokio's timer wheel rounds every sleep up to the next
//! millisecond, so an injected 1 ms latency became 1–2 ms; a dedicated thread sleeping on a
//! condition-variable timeout (nanosecond deadlines) keeps the injected round trip within tens
//! of microseconds of what was asked, which the pull benchmark's physical floor relies on.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::UdpSocket;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// A sender of datagrams at given instants, on its own thread.
#[derive(Debug)]
pub struct DelayLine {
    tx: Sender<(Instant, Vec<u8>)>,
}

impl DelayLine {
    /// Starts the thread; it sends through `socket` (connected) and stops when the line is
    /// dropped, discarding what is still in flight, as a medium that is switched off would.
    pub fn start(socket: UdpSocket) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("sim-delay-line".into())
            .spawn(move || run(&socket, &rx))?;
        Ok(Self { tx })
    }

    /// Sends `bytes` at `at` (at once if that has passed).
    pub fn send_at(&self, at: Instant, bytes: Vec<u8>) {
        // The thread only ends when this sender is gone.
        let _ = self.tx.send((at, bytes));
    }
}

/// Due time, then arrival order, so equal deadlines keep their order.
type Pending = Reverse<(Instant, u64, Vec<u8>)>;

fn run(socket: &UdpSocket, rx: &Receiver<(Instant, Vec<u8>)>) {
    let mut queue: BinaryHeap<Pending> = BinaryHeap::new();
    let mut arrivals = 0u64;
    loop {
        let next = queue.peek().map(|Reverse((at, _, _))| *at);
        let received = match next {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        match received {
            Ok((at, bytes)) => {
                arrivals += 1;
                queue.push(Reverse((at, arrivals, bytes)));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        while queue.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
            if let Some(Reverse((_, _, bytes))) = queue.pop() {
                send(socket, &bytes);
            }
        }
    }
}

/// The socket is shared with the async side and so non-blocking: a full send buffer is waited
/// out briefly rather than dropping the datagram.
fn send(socket: &UdpSocket, bytes: &[u8]) {
    for _ in 0..100 {
        match socket.send(bytes) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(50));
            }
            Err(error) => {
                tracing::debug!("sim delay line: send: {error}");
                return;
            }
            Ok(_) => return,
        }
    }
}

/// Sleeps `duration` on tokio's blocking pool: std's sleep is accurate to tens of microseconds,
/// tokio's timer rounds up to the next millisecond, which on an emulated 115200-baud line would
/// add up to a millisecond to every 16-byte ACK (1.4 ms of line time).
pub async fn sleep_precisely(duration: Duration) {
    if duration.is_zero() {
        return;
    }
    if tokio::task::spawn_blocking(move || std::thread::sleep(duration))
        .await
        .is_err()
    {
        tokio::time::sleep(duration).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_arrive_in_deadline_order_and_on_time() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.connect(receiver.local_addr().unwrap()).unwrap();
        let line = DelayLine::start(sender).unwrap();
        let start = Instant::now();
        line.send_at(start + Duration::from_millis(30), b"late".to_vec());
        line.send_at(start + Duration::from_millis(10), b"early".to_vec());
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 16];
        let n = receiver.recv(&mut buf).unwrap();
        let first = start.elapsed();
        assert_eq!(&buf[..n], b"early");
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"late");
        assert!(first >= Duration::from_millis(10), "{first:?}");
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
