//! A small fake Windows target for the host-session tests, built from kdproto alone: a target
//! link, a KDNET target endpoint or a Unix-socket KDCOM stream, and a sparse memory map holding a
//! version block, KDBG, a module list and PE images.
#![allow(dead_code, clippy::collapsible_match)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kdleak::kernel::pe::synthetic_image;
use kdproto::api::{
    ApiNumber, DebugIo, Exception, Manipulate, Message, StateChange, Version,
    DBGKD_64BIT_PROTOCOL_VERSION2, DBGKD_VERS_FLAG_DATA, DBGKD_VERS_FLAG_MP, DBGKD_VERS_FLAG_PTR64,
    IMAGE_FILE_MACHINE_AMD64, KD_SECONDARY_VERSION_AMD64_CONTEXT, STATUS_SUCCESS,
    STATUS_UNSUCCESSFUL,
};
use kdproto::kd::{Framing, PacketType};
use kdproto::kdnet::{ControlMessage, DataBody, Endpoint, Key, NetAddr, Opened, Poke};
use kdproto::link::{Dialect, Link, LinkConfig, LinkEvent, Transmit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UdpSocket, UnixListener};
use tokio::task::JoinHandle;

pub const KERN_BASE: u64 = 0xfffff803_12400000;
pub const MODULE_LIST: u64 = 0xfffff803_12a00000;
pub const DATA_LIST: u64 = 0xfffff803_12a01000;
pub const KDBG: u64 = 0xfffff803_12a02000;
pub const ENTRIES: u64 = 0xfffff803_12b00000;
pub const HAL_BASE: u64 = 0xfffff803_10000000;
pub const BREAK_PC: u64 = 0xfffff803_12456780;
/// A readable page followed by an unmapped one.
pub const EDGE_PAGE: u64 = 0xfffff803_13000000;
pub const BUILD: u16 = 19045;

/// What the test can observe about the target.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    pub stopped: bool,
    pub stops: u32,
    pub continues: u32,
    pub last_dr7: Option<u64>,
    pub requests: Vec<(ApiNumber, u64, u32)>,
    pub handshakes: u32,
}

#[derive(Clone)]
pub struct Behaviour {
    /// Never react to break-in.
    pub mute: bool,
    /// Largest read answered (clamped silently, as Windows does).
    pub max_read: usize,
    /// Send a stale reply (another API) before each real reply.
    pub stale_first: bool,
    /// Send a DbgPrint before the state change.
    pub print: Option<&'static str>,
    /// Serial only: wait this long before sending anything while stopped (a slow link).
    pub reply_delay: Option<Duration>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            mute: false,
            max_read: 0x800,
            stale_first: false,
            print: Some("fake target says hello\n"),
            reply_delay: None,
        }
    }
}

pub fn version() -> Version {
    Version {
        major_version: 0x0F,
        minor_version: BUILD,
        protocol_version: DBGKD_64BIT_PROTOCOL_VERSION2,
        kd_secondary_version: KD_SECONDARY_VERSION_AMD64_CONTEXT,
        flags: DBGKD_VERS_FLAG_MP | DBGKD_VERS_FLAG_DATA | DBGKD_VERS_FLAG_PTR64,
        machine_type: IMAGE_FILE_MACHINE_AMD64,
        max_packet_type: 0x0C,
        max_state_change: 3,
        max_manipulate: 0x31,
        kern_base: KERN_BASE,
        ps_loaded_module_list: MODULE_LIST,
        debugger_data_list: DATA_LIST,
        ..Version::default()
    }
}

pub const GUID_NT: [u8; 16] = [0x11; 16];
pub const GUID_HAL: [u8; 16] = [0x22; 16];

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn put(map: &mut BTreeMap<u64, Vec<u8>>, at: u64, bytes: Vec<u8>) {
    map.insert(at, bytes);
}

/// The memory image: list heads, KDBG, two KLDR entries, two PE images, an edge page.
pub fn memory() -> BTreeMap<u64, Vec<u8>> {
    let mut m = BTreeMap::new();
    let e0 = ENTRIES;
    let e1 = ENTRIES + 0x200;
    put(
        &mut m,
        MODULE_LIST,
        [e0.to_le_bytes(), e1.to_le_bytes()].concat(),
    );
    put(
        &mut m,
        DATA_LIST,
        [KDBG.to_le_bytes(), KDBG.to_le_bytes()].concat(),
    );
    let mut kdbg = vec![0u8; 0x380];
    kdbg[0..8].copy_from_slice(&DATA_LIST.to_le_bytes());
    kdbg[8..16].copy_from_slice(&DATA_LIST.to_le_bytes());
    kdbg[0x10..0x14].copy_from_slice(b"KDBG");
    kdbg[0x14..0x18].copy_from_slice(&0x380u32.to_le_bytes());
    kdbg[0x18..0x20].copy_from_slice(&KERN_BASE.to_le_bytes());
    kdbg[0x20..0x28].copy_from_slice(&BREAK_PC.to_le_bytes());
    kdbg[0x48..0x50].copy_from_slice(&MODULE_LIST.to_le_bytes());
    put(&mut m, KDBG, kdbg);
    let entry = |next: u64, base: u64, size: u32, name_at: u64, name: &str| {
        let mut e = vec![0u8; 0xA0];
        e[0..8].copy_from_slice(&next.to_le_bytes());
        e[0x30..0x38].copy_from_slice(&base.to_le_bytes());
        e[0x40..0x44].copy_from_slice(&size.to_le_bytes());
        let len = (name.len() * 2) as u16;
        for at in [0x48, 0x58] {
            e[at..at + 2].copy_from_slice(&len.to_le_bytes());
            e[at + 2..at + 4].copy_from_slice(&len.to_le_bytes());
            e[at + 8..at + 16].copy_from_slice(&name_at.to_le_bytes());
        }
        e
    };
    put(
        &mut m,
        e0,
        entry(e1, KERN_BASE, 0x0100_0000, e0 + 0x100, "ntoskrnl.exe"),
    );
    put(&mut m, e0 + 0x100, utf16("ntoskrnl.exe"));
    put(
        &mut m,
        e1,
        entry(MODULE_LIST, HAL_BASE, 0x0010_0000, e1 + 0x100, "hal.dll"),
    );
    put(&mut m, e1 + 0x100, utf16("hal.dll"));
    put(
        &mut m,
        KERN_BASE,
        synthetic_image(GUID_NT, 1, "d:\\os\\obj\\amd64fre\\ntkrnlmp.pdb"),
    );
    put(&mut m, HAL_BASE, synthetic_image(GUID_HAL, 2, "hal.pdb"));
    put(&mut m, EDGE_PAGE, (0..0x1000u32).map(|i| i as u8).collect());
    m
}

/// The target logic, transport-free.
pub struct Core {
    pub link: Link,
    mem: BTreeMap<u64, Vec<u8>>,
    behaviour: Behaviour,
    observed: Arc<Mutex<Observed>>,
    dr7: u64,
}

impl Core {
    fn new(
        dialect: Dialect,
        framing: Framing,
        behaviour: Behaviour,
        observed: Arc<Mutex<Observed>>,
    ) -> Self {
        Self {
            link: Link::new(LinkConfig::target(dialect, framing)),
            mem: memory(),
            behaviour,
            observed,
            dr7: 0x400,
        }
    }

    fn byte(&self, a: u64) -> Option<u8> {
        let (base, bytes) = self.mem.range(..=a).next_back()?;
        bytes.get((a - base) as usize).copied()
    }

    fn stopped(&self) -> bool {
        self.observed.lock().unwrap().stopped
    }

    fn send(&mut self, packet_type: PacketType, payload: Bytes) {
        self.link
            .send(packet_type, payload, Instant::now())
            .unwrap();
    }

    fn state_change(&self) -> StateChange {
        let mut sc = StateChange::exception(Exception::breakpoint(BREAK_PC));
        sc.number_processors = 2;
        sc.thread = 0xffffc001_00001000;
        sc.control_report.dr7 = self.dr7;
        sc
    }

    fn break_in(&mut self) {
        if self.behaviour.mute || self.stopped() {
            return;
        }
        if let Some(text) = self.behaviour.print {
            self.send(PacketType::DebugIo, DebugIo::print_string(text).encode());
        }
        {
            let mut o = self.observed.lock().unwrap();
            o.stopped = true;
            o.stops += 1;
        }
        let sc = self.state_change();
        self.send(PacketType::StateChange64, Message::from(sc).encode());
    }

    fn on_events(&mut self) {
        while let Some(event) = self.link.poll_event() {
            match event {
                LinkEvent::BreakIn => self.break_in(),
                LinkEvent::PeerReset if self.stopped() && self.link.is_idle() => {
                    let sc = self.state_change();
                    self.send(PacketType::StateChange64, Message::from(sc).encode());
                }
                LinkEvent::Received(packet)
                    if packet.packet_type == PacketType::StateManipulate =>
                {
                    if self.stopped() {
                        let request = Manipulate::parse(&packet.payload).unwrap();
                        self.answer(request);
                    }
                }
                _ => {}
            }
        }
    }

    fn answer(&mut self, request: Manipulate) {
        let (addr, len) = request
            .memory()
            .map(|m| (m.target_base_address, m.transfer_count))
            .unwrap_or_default();
        self.observed
            .lock()
            .unwrap()
            .requests
            .push((request.api, addr, len));
        if self.behaviour.stale_first && request.api != ApiNumber::CONTINUE2 {
            let stale = Manipulate::unsupported_reply(&Manipulate::get_context());
            self.send(PacketType::StateManipulate, stale.encode());
        }
        let reply = match request.api {
            ApiNumber::GET_VERSION => Manipulate::get_version_reply(&request, version()),
            ApiNumber::READ_VIRTUAL_MEMORY => {
                let want = (len as usize).min(self.behaviour.max_read);
                let mut data = Vec::new();
                for i in 0..want as u64 {
                    match self.byte(addr + i) {
                        Some(b) => data.push(b),
                        None => break,
                    }
                }
                let status = if data.len() == len as usize || data.len() == want {
                    STATUS_SUCCESS
                } else {
                    STATUS_UNSUCCESSFUL
                };
                Manipulate::reply_to(&request, status, data)
            }
            ApiNumber::CONTINUE2 => {
                let mut o = self.observed.lock().unwrap();
                o.stopped = false;
                o.continues += 1;
                if let kdproto::api::ManipulateParams::Continue2(c) = &request.params {
                    o.last_dr7 = Some(c.dr7);
                }
                return;
            }
            _ => Manipulate::unsupported_reply(&request),
        };
        self.send(PacketType::StateManipulate, reply.encode());
    }
}

pub struct FakeTarget {
    pub observed: Arc<Mutex<Observed>>,
    pub task: JoinHandle<()>,
    /// KDNET only: poke with debugger port 0 now (a "reboot").
    pub reboot: Option<tokio::sync::mpsc::UnboundedSender<()>>,
}

impl FakeTarget {
    pub fn observed(&self) -> Observed {
        self.observed.lock().unwrap().clone()
    }
}

impl Drop for FakeTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// A KDCOM target listening on a Unix socket at `path` (one connection).
pub fn serial_target(path: &Path, behaviour: Behaviour) -> FakeTarget {
    let listener = UnixListener::bind(path).unwrap();
    let observed = Arc::new(Mutex::new(Observed::default()));
    let obs = observed.clone();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        serve_serial(stream, behaviour, obs).await;
    });
    FakeTarget {
        observed,
        task,
        reboot: None,
    }
}

/// A KDCOM target on an already connected stream (a pty master, a TCP stream).
pub fn serial_target_on<S>(stream: S, behaviour: Behaviour) -> FakeTarget
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let observed = Arc::new(Mutex::new(Observed::default()));
    let obs = observed.clone();
    let task = tokio::spawn(serve_serial(stream, behaviour, obs));
    FakeTarget {
        observed,
        task,
        reboot: None,
    }
}

async fn serve_serial<S>(mut stream: S, behaviour: Behaviour, obs: Arc<Mutex<Observed>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut core = Core::new(Dialect::Kdcom, Framing::Serial, behaviour, obs);
    let mut buf = vec![0u8; 8192];
    let delay = core.behaviour.reply_delay;
    loop {
        if let Some(delay) = delay.filter(|_| core.stopped()) {
            tokio::time::sleep(delay).await;
        }
        while let Some(t) = core.link.poll_transmit() {
            if stream
                .write_all(&t.to_bytes(Framing::Serial).unwrap())
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = stream.flush().await;
        tokio::select! {
            n = stream.read(&mut buf) => {
                let Ok(n) = n else { return };
                if n == 0 { return; }
                core.link.receive(&buf[..n], Instant::now());
            }
            () = sleep_until_opt(core.link.poll_timeout()) => core.link.handle_timeout(Instant::now()),
        }
        core.on_events();
    }
}

fn poke(target: SocketAddr, host: SocketAddr, debugger: Option<SocketAddr>, n: u8) -> Poke {
    let v4 = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => NetAddr::from_v4(v4),
        SocketAddr::V6(_) => unreachable!(),
    };
    let mut client_key = [0x5a; 32];
    client_key[0] = n;
    Poke {
        client_key,
        target: v4(target),
        host: v4(host),
        debugger: debugger.map(v4).unwrap_or(NetAddr::NONE_V4),
    }
}

/// A KDNET target poking `host` every `poke_every` with `key`.
pub fn kdnet_target(
    host: SocketAddr,
    key: &str,
    behaviour: Behaviour,
    poke_every: Duration,
) -> FakeTarget {
    let key = Key::parse(key).unwrap();
    let observed = Arc::new(Mutex::new(Observed::default()));
    let obs = observed.clone();
    let (reboot_tx, mut reboot_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let task = tokio::spawn(async move {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let me = socket.local_addr().unwrap();
        let mut endpoint = Endpoint::target(key, 4);
        let mut core = Core::new(Dialect::Kdnet, Framing::Datagram, behaviour, obs.clone());
        let mut connected = false;
        let mut seq = 3u64;
        let mut n = 0u8;
        let mut next_poke = tokio::time::Instant::now();
        let mut buf = vec![0u8; 65536];
        loop {
            if connected {
                while let Some(t) = core.link.poll_transmit() {
                    let body = match &t {
                        Transmit::BreakIn => DataBody::BreakIn,
                        Transmit::Packet(p) => DataBody::from_packet(p).unwrap(),
                    };
                    let wire = endpoint.seal_data(&body).unwrap();
                    socket.send_to(&wire, host).await.unwrap();
                }
            }
            tokio::select! {
                r = socket.recv_from(&mut buf) => {
                    let (len, _) = r.unwrap();
                    match endpoint.open(&buf[..len]) {
                        Ok(Opened::Control { datagram, message: ControlMessage::Response(_) }) => {
                            if endpoint.accept_response(&datagram).is_ok() {
                                connected = true;
                                obs.lock().unwrap().handshakes += 1;
                                let ping = DataBody::Ping { host: std::net::Ipv4Addr::LOCALHOST };
                                let wire = endpoint.seal_data(&ping).unwrap();
                                socket.send_to(&wire, host).await.unwrap();
                            }
                        }
                        Ok(Opened::Data { body: DataBody::BreakIn, .. }) => {
                            core.link.receive_break_in();
                        }
                        Ok(Opened::Data { body: DataBody::Kd(bytes), .. }) => {
                            core.link.receive(&bytes, Instant::now());
                        }
                        _ => {}
                    }
                }
                () = tokio::time::sleep_until(next_poke) => {
                    n = n.wrapping_add(1);
                    let debugger = connected.then_some(host);
                    let wire = endpoint.make_poke(seq, &poke(me, host, debugger, n)).unwrap();
                    seq += 3;
                    let _ = socket.send_to(&wire, host).await;
                    next_poke = tokio::time::Instant::now() + poke_every;
                }
                Some(()) = reboot_rx.recv() => {
                    connected = false;
                    core.link.restart();
                    obs.lock().unwrap().stopped = false;
                    n = n.wrapping_add(1);
                    let wire = endpoint.make_poke(seq, &poke(me, host, None, n)).unwrap();
                    seq += 3;
                    let _ = socket.send_to(&wire, host).await;
                }
                () = sleep_until_opt(core.link.poll_timeout()) => core.link.handle_timeout(Instant::now()),
            }
            core.on_events();
        }
    });
    FakeTarget {
        observed,
        task,
        reboot: Some(reboot_tx),
    }
}

/// The fake target's kernel claims `ntkrnlmp.pdb` with made-up identity: the host takes the
/// module-entry layout from the Windows 10 fixture kernel PDB, accepted despite the mismatch
/// (`--force-symbols`), so the walk still comes from a PDB, not from constants.
pub fn fixture_symbols() -> kdleak::symbols::SymbolOptions {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/fixtures/win10-19041");
    let mut options = kdleak::symbols::SymbolOptions::new(Some(dir.to_str().unwrap())).unwrap();
    options.offline = true;
    options.force = true;
    options
}
