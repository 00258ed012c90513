//! Delivers delayed datagrams on time. Tokio's timer wheel rounds every sleep up to the next
//! millisecond, so an injected 1 ms latency became 1–2 ms; a dedicated thread sleeping on a
//! timeout and spinning out the last microseconds keeps the injected round trip within a few
//! microseconds of what was asked, which the pull benchmark's physical floor relies on.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::UdpSocket;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
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
            Some(at) => wait_until(rx, at),
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

/// A thread woken by a timer runs tens to hundreds of microseconds late on a busy machine:
/// sleep until this much before the deadline, then spin.
const SPIN: Duration = Duration::from_micros(150);

/// The next datagram to delay, or a timeout at `at` (not before, and within microseconds).
fn wait_until(
    rx: &Receiver<(Instant, Vec<u8>)>,
    at: Instant,
) -> Result<(Instant, Vec<u8>), RecvTimeoutError> {
    let left = at.saturating_duration_since(Instant::now());
    if left > SPIN {
        return rx.recv_timeout(left - SPIN);
    }
    loop {
        match rx.try_recv() {
            Ok(next) => return Ok(next),
            Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) if Instant::now() >= at => {
                return Err(RecvTimeoutError::Timeout)
            }
            Err(TryRecvError::Empty) => std::hint::spin_loop(),
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
        // Far enough ahead that both are queued before either is due, even on a loaded machine
        // (at 30/10 ms a stall between the two calls let "late" go out first, correctly).
        line.send_at(start + Duration::from_millis(300), b"late".to_vec());
        line.send_at(start + Duration::from_millis(150), b"early".to_vec());
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 16];
        let n = receiver.recv(&mut buf).unwrap();
        let first = start.elapsed();
        assert_eq!(&buf[..n], b"early");
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"late");
        assert!(first >= Duration::from_millis(150), "{first:?}");
        assert!(start.elapsed() >= Duration::from_millis(300));
    }
}
