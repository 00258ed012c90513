//! The simulated target as a KDCOM peer on a Unix socket, driven by a minimal kdproto host.

use std::time::{Duration, Instant};

use kdleak::sim::kdcom::{self, KdcomConfig};
use kdleak::sim::{Machine, Reporter, SimState};
use kdproto::api::{context, Manipulate, Message, STATUS_BREAKPOINT, STATUS_SUCCESS};
use kdproto::kd::{Framing, PacketType};
use kdproto::link::{Dialect, Link, LinkConfig, LinkEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

struct Host {
    stream: UnixStream,
    link: Link,
}

impl Host {
    async fn flush(&mut self) {
        while let Some(t) = self.link.poll_transmit() {
            let bytes = t.to_bytes(Framing::Serial).unwrap();
            self.stream.write_all(&bytes).await.unwrap();
        }
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
}

#[tokio::test]
async fn kdcom_unix_socket_attach_context_and_continue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kdleak-sim.sock");
    let (mut reporter, mut status) = Reporter::new(None);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = KdcomConfig {
        unix: Some(path.clone()),
        ..KdcomConfig::default()
    };
    let machine = Machine::default();
    let break_pc = machine.break_pc;
    let task = tokio::spawn(async move {
        kdcom::run(config, machine, &mut reporter, async {
            let _ = stopped.await;
        })
        .await
    });

    let stream = timeout(LIMIT, async {
        loop {
            match UnixStream::connect(&path).await {
                Ok(stream) => return stream,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("sim never listened");
    let mut host = Host {
        stream,
        link: Link::new(LinkConfig::host(Dialect::Kdcom, Framing::Serial)),
    };

    // ntoseye's attach: alternate 'b' and RESET until a state change arrives (kd.md §2.6).
    let change = timeout(LIMIT, async {
        for attempt in 0.. {
            if attempt % 2 == 0 {
                host.link.send_break_in();
            } else {
                host.link.send_reset(Instant::now());
            }
            if let Some(Message::StateChange(change)) =
                host.next_message(Duration::from_millis(200)).await
            {
                return change;
            }
        }
        unreachable!()
    })
    .await
    .expect("no state change");
    assert_eq!(change.program_counter, break_pc);
    assert_eq!(change.exception_info().unwrap().code, STATUS_BREAKPOINT);

    let reply = host.request(Manipulate::get_version()).await;
    assert_eq!(reply.version().unwrap().machine_type, 0x8664);

    let reply = host.request(Manipulate::get_context()).await;
    assert_eq!(reply.return_status, STATUS_SUCCESS);
    assert_eq!(reply.data.len(), context::SIZE);
    let rip = u64::from_le_bytes(
        reply.data[context::RIP..context::RIP + 8]
            .try_into()
            .unwrap(),
    );
    assert_eq!(rip, change.program_counter);

    host.link
        .send(
            PacketType::StateManipulate,
            Message::from(Manipulate::continue2(0x10002, 0x400)).encode(),
            Instant::now(),
        )
        .unwrap();
    host.flush().await;
    let stats = timeout(
        LIMIT,
        status.wait_for(|s| s.continues == 1 && s.state == SimState::Running),
    )
    .await
    .expect("sim did not resume")
    .unwrap()
    .clone();
    assert_eq!(stats.break_ins, 1);
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.requests["DbgKdGetContextApi"], 1);

    stop.send(()).unwrap();
    let final_stats = timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
    assert_eq!(final_stats.state, SimState::Running);
    assert!(!path.exists(), "the socket file is removed on exit");
}
