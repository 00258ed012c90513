//! The simulated target over real loopback UDP, driven by a minimal host built from kdproto.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kdleak::sim::wire::kdnet::{self, KdnetConfig};
use kdleak::sim::{Machine, Reporter, SimState, SimStats};
use kdproto::api::{
    Manipulate, Message, StateEvent, STATUS_BREAKPOINT, STATUS_SUCCESS, STATUS_UNSUCCESSFUL,
};
use kdproto::kd::{Framing, PacketType};
use kdproto::kdnet::{
    Channel, ControlMessage, DataBody, Datagram, Direction, Endpoint, Key, NetAddr, Opened, Poke,
};
use kdproto::link::{Dialect, Link, LinkConfig, LinkEvent};
use tokio::net::UdpSocket;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

fn key(text: &str) -> Key {
    text.parse().unwrap()
}

struct RunningSim {
    status: watch::Receiver<SimStats>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<SimStats>>,
}

impl RunningSim {
    fn start(host: SocketAddr, key: Key, state_file: Option<std::path::PathBuf>) -> Self {
        let mut config = KdnetConfig::new(host, key);
        config.poke_interval = Duration::from_millis(100);
        let (mut reporter, status) = Reporter::new(state_file);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            kdnet::run(config, Machine::default(), &mut reporter, async {
                let _ = stopped.await;
            })
            .await
        });
        Self {
            status,
            stop: Some(stop),
            task,
        }
    }

    async fn wait_for(&mut self, what: impl Fn(&SimStats) -> bool) -> SimStats {
        timeout(LIMIT, self.status.wait_for(what))
            .await
            .expect("sim status timed out")
            .expect("sim stopped publishing")
            .clone()
    }

    async fn finish(mut self) -> SimStats {
        let _ = self.stop.take().unwrap().send(());
        timeout(LIMIT, self.task).await.unwrap().unwrap().unwrap()
    }
}

/// The test's host: a UDP socket, a KDNET endpoint and a host-role KD link.
struct Host {
    socket: UdpSocket,
    endpoint: Endpoint,
    target: Option<SocketAddr>,
    link: Link,
}

impl Host {
    async fn bind(key: Key) -> Self {
        Self {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            endpoint: Endpoint::host(key),
            target: None,
            link: Link::new(LinkConfig::host(Dialect::Kdnet, Framing::Datagram)),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    async fn recv_raw(&self) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0; 65536];
        let (n, from) = timeout(LIMIT, self.socket.recv_from(&mut buf))
            .await
            .expect("no datagram from the sim")
            .unwrap();
        buf.truncate(n);
        (buf, from)
    }

    /// Waits for a poke and answers it.
    async fn handshake(&mut self) -> Poke {
        let (wire, from) = self.recv_raw().await;
        let Opened::Control {
            datagram,
            message: ControlMessage::Poke(poke),
        } = self.endpoint.open(&wire).unwrap()
        else {
            panic!("expected a poke");
        };
        let response = self.endpoint.accept_poke(&datagram, [0x42; 32]).unwrap();
        self.socket.send_to(&response, from).await.unwrap();
        self.target = Some(from);
        poke
    }

    /// The next data-channel body (pokes are skipped).
    async fn recv_data(&mut self) -> DataBody {
        loop {
            let (wire, _) = self.recv_raw().await;
            match self.endpoint.open(&wire).unwrap() {
                Opened::Data { body, .. } => return body,
                Opened::Control { .. } => continue,
            }
        }
    }

    async fn send_body(&mut self, body: &DataBody) {
        let wire = self.endpoint.seal_data(body).unwrap();
        self.socket
            .send_to(&wire, self.target.unwrap())
            .await
            .unwrap();
    }

    async fn flush(&mut self) {
        while let Some(transmit) = self.link.poll_transmit() {
            let body = DataBody::parse(transmit.to_bytes(Framing::Datagram).unwrap());
            self.send_body(&body).await;
        }
    }

    /// Pumps until the link delivers a data packet; returns it parsed.
    async fn next_message(&mut self) -> Message {
        loop {
            self.flush().await;
            while let Some(event) = self.link.poll_event() {
                if let LinkEvent::Received(packet) = event {
                    self.flush().await;
                    return Message::parse(packet.packet_type, &packet.payload).unwrap();
                }
            }
            if let DataBody::Kd(bytes) = self.recv_data().await {
                self.link.receive(&bytes, Instant::now());
            }
        }
    }

    /// Pumps until our last packet is acknowledged.
    async fn until_idle(&mut self) {
        while !self.link.is_idle() {
            self.flush().await;
            if let DataBody::Kd(bytes) = self.recv_data().await {
                self.link.receive(&bytes, Instant::now());
            }
        }
        self.flush().await;
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
        match self.next_message().await {
            Message::Manipulate(reply) if reply.api == api => reply,
            other => panic!("expected a {api} reply, got {other}"),
        }
    }
}

#[tokio::test]
async fn kdnet_attach_read_and_continue() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    let mut host = Host::bind(key("1.2.3.4")).await;
    let mut sim = RunningSim::start(host.addr(), key("1.2.3.4"), Some(state_file.clone()));

    let poke = host.handshake().await;
    assert!(!poke.has_debugger());
    assert_eq!(
        host.recv_data().await,
        DataBody::Ping {
            host: "127.0.0.1".parse().unwrap()
        }
    );
    // Pokes go on after the handshake and now name the debugger (kdnet.md §3.2).
    loop {
        let (wire, _) = host.recv_raw().await;
        if let Ok(Opened::Control {
            message: ControlMessage::Poke(poke),
            ..
        }) = host.endpoint.open(&wire)
        {
            assert!(poke.has_debugger());
            assert_eq!(
                poke.debugger,
                NetAddr::from(match host.addr() {
                    SocketAddr::V4(v4) => v4,
                    SocketAddr::V6(_) => unreachable!(),
                })
            );
            break;
        }
    }

    host.send_body(&DataBody::BreakIn).await;
    let Message::StateChange(change) = host.next_message().await else {
        panic!("expected a state change");
    };
    let StateEvent::Exception(exception) = &change.event else {
        panic!("expected an exception");
    };
    assert_eq!(exception.code, STATUS_BREAKPOINT);
    assert_eq!(exception.first_chance, 1);
    assert_eq!(change.control_report.instructions()[..2], [0xCC, 0xC3]);
    sim.wait_for(|s| s.state == SimState::Stopped).await;

    let reply = host.request(Manipulate::get_version()).await;
    let version = *reply.version().unwrap();
    assert_eq!(version.machine_type, 0x8664);
    assert_ne!(version.kern_base, 0);

    let reply = host
        .request(Manipulate::read_virtual_memory(version.kern_base, 0x400))
        .await;
    assert_eq!(reply.return_status, STATUS_SUCCESS);
    assert_eq!(reply.data.len(), 0x400);
    assert_eq!(&reply.data[..2], b"MZ");

    let reply = host
        .request(Manipulate::read_virtual_memory(0x1000, 0x100))
        .await;
    assert_eq!(reply.return_status, STATUS_UNSUCCESSFUL);
    assert_eq!(reply.memory().unwrap().actual_bytes, 0);
    assert!(reply.data.is_empty());

    // The tiny kernel's image ends at base + 0x3000; the next page is unmapped.
    let reply = host
        .request(Manipulate::read_virtual_memory(
            version.kern_base + 0x3000 - 0x10,
            0x40,
        ))
        .await;
    assert_eq!(reply.return_status, STATUS_UNSUCCESSFUL);
    assert_eq!(reply.data.len(), 0x10);
    assert_eq!(reply.memory().unwrap().actual_bytes, 0x10);

    // A read larger than one MTU-sized datagram is clamped.
    let reply = host
        .request(Manipulate::read_virtual_memory(version.kern_base, 0x2000))
        .await;
    assert_eq!(reply.return_status, STATUS_SUCCESS);
    assert_eq!(
        reply.data.len(),
        kdleak::sim::machine::target::kdnet_max_read()
    );

    host.link
        .send(
            PacketType::StateManipulate,
            Message::from(Manipulate::continue2(0x10002, 0x400)).encode(),
            Instant::now(),
        )
        .unwrap();
    host.until_idle().await;
    let stats = sim
        .wait_for(|s| s.state == SimState::Running && s.continues == 1)
        .await;
    assert_eq!(stats.break_ins, 1);
    assert_eq!(stats.handshakes, 1);
    assert_eq!(stats.requests["DbgKdReadVirtualMemoryApi"], 4);

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    assert_eq!(json["state"], "running");
    assert_eq!(json["break_ins"], 1);
    assert_eq!(json["continues"], 1);
    assert_eq!(json["rejected"], 0);

    let final_stats = sim.finish().await;
    assert_eq!(final_stats.state, SimState::Running);
}

#[tokio::test]
async fn kdnet_wrong_key_host_is_rejected() {
    let host = Host::bind(key("5.6.7.8")).await;
    let mut sim = RunningSim::start(host.addr(), key("1.2.3.4"), None);
    let mut wrong = Endpoint::host(key("5.6.7.8"));

    let (wire, from) = host.recv_raw().await;
    assert_eq!(wrong.open(&wire), Err(kdproto::Error::AuthenticationFailed));
    // The host cannot read the poke; it answers one of its own making, sealed with its key.
    let fake_poke = Datagram {
        version: kdnet::DEFAULT_VERSION,
        channel: Channel::Control,
        direction: Direction::TargetToHost,
        seq: 3,
        body: Poke {
            client_key: [7; 32],
            target: NetAddr::NONE_V4,
            host: NetAddr::NONE_V4,
            debugger: NetAddr::NONE_V4,
        }
        .encode(),
    };
    let response = wrong.accept_poke(&fake_poke, [9; 32]).unwrap();
    host.socket.send_to(&response, from).await.unwrap();

    let stats = sim
        .wait_for(|s| s.rejected_by_reason.get("kdnet: AuthenticationFailed") == Some(&1))
        .await;
    assert_eq!(stats.handshakes, 0);
    // Only pokes keep coming: no session, no ping.
    for _ in 0..3 {
        let (wire, _) = host.recv_raw().await;
        assert_eq!(kdproto::kdnet::peek(&wire).unwrap().1, Channel::Control);
    }
    let stats = sim.finish().await;
    assert_eq!(stats.handshakes, 0);
    assert!(stats.pokes >= 4);
}

#[tokio::test]
async fn kdnet_a_restarted_host_handshakes_again_and_finds_the_target_still_stopped() {
    let mut first = Host::bind(key("1.2.3.4")).await;
    let addr = first.addr();
    let mut sim = RunningSim::start(addr, key("1.2.3.4"), None);
    first.handshake().await;
    first.recv_data().await; // the ping
    first.send_body(&DataBody::BreakIn).await;
    assert!(matches!(
        first.next_message().await,
        Message::StateChange(_)
    ));
    sim.wait_for(|s| s.state == SimState::Stopped).await;
    drop(first); // the debugger dies with the target stopped

    // A new debugger process on the same port answers the next poke (kdnet.md §3.4 step 5).
    let mut second = Host {
        socket: UdpSocket::bind(addr).await.unwrap(),
        endpoint: Endpoint::host(key("1.2.3.4")),
        target: None,
        link: Link::new(LinkConfig::host(Dialect::Kdnet, Framing::Datagram)),
    };
    let poke = loop {
        let (wire, from) = second.recv_raw().await;
        if let Ok(Opened::Control {
            datagram,
            message: ControlMessage::Poke(poke),
        }) = second.endpoint.open(&wire)
        {
            let response = second.endpoint.accept_poke(&datagram, [0x24; 32]).unwrap();
            second.socket.send_to(&response, from).await.unwrap();
            second.target = Some(from);
            break poke;
        }
    };
    assert!(
        poke.has_debugger(),
        "the old session is still named in the poke"
    );
    sim.wait_for(|s| s.handshakes == 2).await;
    assert!(matches!(second.recv_data().await, DataBody::Ping { .. }));

    // RESET makes the stopped target send its state change again (kd.md §2.6).
    second.link.send_reset(Instant::now());
    let Message::StateChange(change) = second.next_message().await else {
        panic!("expected the pending state change again");
    };
    assert_eq!(change.exception_info().unwrap().code, STATUS_BREAKPOINT);
    let reply = second.request(Manipulate::get_version()).await;
    assert_eq!(reply.version().unwrap().machine_type, 0x8664);
    second
        .link
        .send(
            PacketType::StateManipulate,
            Message::from(Manipulate::continue2(0x10002, 0x400)).encode(),
            Instant::now(),
        )
        .unwrap();
    second.until_idle().await;
    let stats = sim
        .wait_for(|s| s.state == SimState::Running && s.continues == 1)
        .await;
    assert_eq!(stats.break_ins, 1);
    assert!(stats.state_change_resends >= 1);
    sim.finish().await;
}
