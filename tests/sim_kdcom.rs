//! The simulated target as a KDCOM peer on a Unix socket, TCP and a pseudo-terminal, driven by a
//! minimal kdproto host; also a reboot injected by `--faults`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kdleak::sim::wire::faults::FaultSpec;
use kdleak::sim::wire::kdcom::{self, KdcomConfig};
use kdleak::sim::{Machine, Reporter, SimState, SimStats};
use kdproto::api::{context, Manipulate, Message, StateChange, STATUS_BREAKPOINT, STATUS_SUCCESS};
use kdproto::kd::{Framing, PacketType};
use kdproto::link::{Dialect, Link, LinkConfig, LinkEvent};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

struct Host<S> {
    stream: S,
    link: Link,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Host<S> {
    fn new(stream: S) -> Self {
        Self {
            stream,
            link: Link::new(LinkConfig::host(Dialect::Kdcom, Framing::Serial)),
        }
    }

    async fn flush(&mut self) {
        while let Some(t) = self.link.poll_transmit() {
            let bytes = t.to_bytes(Framing::Serial).unwrap();
            self.stream.write_all(&bytes).await.unwrap();
        }
        self.stream.flush().await.unwrap();
    }

    /// Reads for up to `wait`; returns the first data packet the link delivers.
    async fn next_message(&mut self, wait: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut buf = [0u8; 4096];
        loop {
            self.flush().await;
            while let Some(event) = self.link.poll_event() {
                if let LinkEvent::Received(packet) = event {
                    self.flush().await;
                    return Some(Message::parse(packet.packet_type, &packet.payload).unwrap());
                }
            }
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Err(_) => return None,
                Ok(read) => {
                    let n = read.unwrap();
                    assert_ne!(n, 0, "sim closed the stream");
                    self.link.receive(&buf[..n], Instant::now());
                }
            }
        }
    }

    async fn request(&mut self, request: Manipulate) -> Manipulate {
        let api = request.api;
        self.link
            .send(
                PacketType::StateManipulate,
                Message::from(request).encode(),
                Instant::now(),
            )
            .unwrap();
        match self.next_message(LIMIT).await {
            Some(Message::Manipulate(reply)) if reply.api == api => reply,
            other => panic!("expected a {api} reply, got {other:?}"),
        }
    }

    /// ntoseye's attach: alternate 'b' and RESET until a state change arrives (kd.md §2.6).
    async fn break_in(&mut self) -> Box<StateChange> {
        timeout(LIMIT, async {
            for attempt in 0.. {
                if attempt % 2 == 0 {
                    self.link.send_break_in();
                } else {
                    self.link.send_reset(Instant::now());
                }
                if let Some(Message::StateChange(change)) =
                    self.next_message(Duration::from_millis(200)).await
                {
                    return change;
                }
            }
            unreachable!()
        })
        .await
        .expect("no state change")
    }

    /// Break in, check the stop, GetVersion and GetContext, then Continue2.
    async fn attach_and_resume(&mut self, break_pc: u64) {
        let change = self.break_in().await;
        assert_eq!(change.program_counter, break_pc);
        assert_eq!(change.exception_info().unwrap().code, STATUS_BREAKPOINT);

        let reply = self.request(Manipulate::get_version()).await;
        assert_eq!(reply.version().unwrap().machine_type, 0x8664);

        let reply = self.request(Manipulate::get_context()).await;
        assert_eq!(reply.return_status, STATUS_SUCCESS);
        assert_eq!(reply.data.len(), context::SIZE);
        let rip = u64::from_le_bytes(
            reply.data[context::RIP..context::RIP + 8]
                .try_into()
                .unwrap(),
        );
        assert_eq!(rip, change.program_counter);

        self.link
            .send(
                PacketType::StateManipulate,
                Message::from(Manipulate::continue2(0x10002, 0x400)).encode(),
                Instant::now(),
            )
            .unwrap();
        self.flush().await;
    }
}

struct RunningSim {
    status: watch::Receiver<SimStats>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<SimStats>>,
    break_pc: u64,
}

impl RunningSim {
    fn start(config: KdcomConfig) -> Self {
        let (mut reporter, status) = Reporter::new(None);
        let (stop, stopped) = oneshot::channel::<()>();
        let machine = Machine::default();
        let break_pc = machine.break_pc;
        let task = tokio::spawn(async move {
            kdcom::run(config, machine, &mut reporter, async {
                let _ = stopped.await;
            })
            .await
        });
        Self {
            status,
            stop,
            task,
            break_pc,
        }
    }

    async fn wait_for(&mut self, what: impl Fn(&SimStats) -> bool) -> SimStats {
        timeout(LIMIT, self.status.wait_for(what))
            .await
            .expect("sim status timed out")
            .expect("sim stopped publishing")
            .clone()
    }

    async fn finish(self) -> SimStats {
        self.stop.send(()).unwrap();
        timeout(LIMIT, self.task).await.unwrap().unwrap().unwrap()
    }
}

async fn retry<T, F: std::future::Future<Output = std::io::Result<T>>>(
    what: &str,
    mut connect: impl FnMut() -> F,
) -> T {
    timeout(LIMIT, async {
        loop {
            match connect().await {
                Ok(stream) => return stream,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("sim never offered {what}"))
}

fn resumed(s: &SimStats) -> bool {
    s.continues >= 1 && s.state == SimState::Running
}

#[tokio::test]
async fn kdcom_unix_socket_attach_context_and_continue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kdleak-sim.sock");
    let mut sim = RunningSim::start(KdcomConfig {
        unix: Some(path.clone()),
        ..KdcomConfig::default()
    });
    let stream = retry("a Unix socket", || UnixStream::connect(&path)).await;
    let mut host = Host::new(stream);
    host.attach_and_resume(sim.break_pc).await;

    let stats = sim.wait_for(resumed).await;
    assert_eq!(stats.break_ins, 1);
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.requests["DbgKdGetContextApi"], 1);
    let final_stats = sim.finish().await;
    assert_eq!(final_stats.state, SimState::Running);
    assert!(!path.exists(), "the socket file is removed on exit");
}

#[tokio::test]
async fn kdcom_over_tcp() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut sim = RunningSim::start(KdcomConfig {
        tcp: Some(addr),
        ..KdcomConfig::default()
    });
    let stream = retry("a TCP port", || TcpStream::connect(addr)).await;
    Host::new(stream).attach_and_resume(sim.break_pc).await;
    sim.wait_for(resumed).await;
    assert_eq!(sim.finish().await.rejected, 0);
}

#[tokio::test]
async fn kdcom_over_a_pseudo_terminal_opened_as_a_serial_device() {
    let dir = tempfile::tempdir().unwrap();
    let link: PathBuf = dir.path().join("ttyKD0");
    let mut sim = RunningSim::start(KdcomConfig {
        pty: Some(link.clone()),
        ..KdcomConfig::default()
    });
    let device = retry("a pseudo-terminal", || {
        let link = link.clone();
        async move {
            tokio::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(link)
                .await
        }
    })
    .await;
    Host::new(device).attach_and_resume(sim.break_pc).await;
    let stats = sim.wait_for(resumed).await;
    assert_eq!(stats.rejected, 0);
    sim.finish().await;
    assert!(!link.exists(), "the device link is removed on exit");
}

#[tokio::test]
async fn an_injected_reboot_reloads_the_target_and_a_host_can_break_in_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kdleak-sim.sock");
    let mut sim = RunningSim::start(KdcomConfig {
        unix: Some(path.clone()),
        faults: "reboot_after=1s".parse::<FaultSpec>().unwrap(),
        ..KdcomConfig::default()
    });
    let stream = retry("a Unix socket", || UnixStream::connect(&path)).await;
    let mut host = Host::new(stream);
    host.attach_and_resume(sim.break_pc).await;
    sim.wait_for(resumed).await;
    let rebooted = sim.wait_for(|s| s.reboots == 1).await;
    assert_eq!(rebooted.state, SimState::Running);
    // The new boot numbers its packets from INITIAL|SYNC; the host's link takes that as a
    // restart and attaching works again.
    host.attach_and_resume(sim.break_pc).await;
    let stats = sim
        .wait_for(|s| s.continues == 2 && s.state == SimState::Running)
        .await;
    assert_eq!(stats.break_ins, 2);
    sim.finish().await;
}
