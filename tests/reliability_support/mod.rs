//! Shared by the `reliability_*` tests: the simulated target served in-process over KDNET or a
//! Unix socket (with a byte-corrupting, garbage-injecting proxy for streams), the leak pull run
//! against it with tight timeouts, and the comparison with the fault-free report.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kdleak::kernel_context::KernelContext;
use kdleak::session::{self, Session, SessionOptions};
use kdleak::sim::wire::faults::FaultSpec;
use kdleak::sim::wire::kdcom::{self, KdcomConfig};
use kdleak::sim::wire::kdnet::{self as sim_kdnet, KdnetConfig};
use kdleak::sim::world::scenario::{default_root, LayoutReport, MemoryImage, Scenario};
use kdleak::sim::{Machine, Reporter, SimState, SimStats};
use kdleak::stop::{with_stopped_transport, StopContext, StopOptions};
use kdleak::symbols::{SymbolOptions, Symbols};
use kdleak::transport::{kdnet, stream, KdnetTransport, Transport};
use kdleak::verifier::{self, LeakReport, PullOptions};
use kdproto::kdnet::Key;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub const KEY: &str = "1.2.3.4";
pub const FIXTURE: &str = "win10-19041";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs per fault type: `KDLEAK_FAULT_RUNS` (scripts/fault_matrix.sh sets 50), default 5.
pub fn runs() -> u64 {
    std::env::var("KDLEAK_FAULT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// First seed: `KDLEAK_FAULT_SEED` (to replay a run), default 1.
pub fn first_seed() -> u64 {
    std::env::var("KDLEAK_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// One loader for the process: every PDB is parsed once.
pub fn symbols() -> Arc<Symbols> {
    static SYMBOLS: OnceLock<Arc<Symbols>> = OnceLock::new();
    SYMBOLS
        .get_or_init(|| {
            let mut options = SymbolOptions::new(Some("")).unwrap();
            options.offline = true;
            StopOptions {
                symbols: Some(options),
                ..StopOptions::default()
            }
            .symbol_loader(Some(&root().join("captures/fixtures").join(FIXTURE)))
            .unwrap()
        })
        .clone()
}

/// win10-myfault with a 256-record log ring instead of 65536: the same structures, ~50 read
/// requests a pull instead of ~8200, so lossy runs end in seconds.
pub fn scenario() -> Scenario {
    let text = std::fs::read_to_string(root().join("captures/scenarios/win10-myfault.toml"))
        .unwrap()
        .replace("length = 0x10000", "length = 0x100");
    assert!(
        text.contains("length = 0x100\n"),
        "the scenario's [trace] moved"
    );
    Scenario::from_toml(&text).unwrap()
}

/// The scenario laid out (once), with where everything went.
pub fn layout() -> LayoutReport {
    static LAYOUT: OnceLock<LayoutReport> = OnceLock::new();
    LAYOUT
        .get_or_init(|| scenario().build_in(default_root().unwrap()).unwrap())
        .clone()
}

/// The scenario's memory image.
pub fn image() -> MemoryImage {
    layout().image
}

pub fn machine(image: MemoryImage) -> Machine {
    Machine::builder().image(image).build()
}

/// Tight limits, so a run that cannot succeed ends within seconds.
/// Overwrites mapped bytes of the image (the address must be mapped).
pub fn poke(image: &mut MemoryImage, address: u64, bytes: &[u8]) {
    let (&start, region) = image.regions.range_mut(..=address).next_back().unwrap();
    let at = (address - start) as usize;
    assert!(
        at + bytes.len() <= region.len(),
        "{address:#x} is not mapped"
    );
    region[at..at + bytes.len()].copy_from_slice(bytes);
}

pub fn stop_options() -> StopOptions {
    StopOptions {
        session: SessionOptions {
            connect_timeout: Duration::from_secs(8),
            break_in_interval: Duration::from_millis(200),
            retransmit: Duration::from_millis(100),
            max_attempts: Some(40),
            request_timeout: Duration::from_secs(4),
            resume_timeout: Duration::from_secs(3),
            overall_timeout: Some(Duration::from_secs(90)),
            handle_signals: false,
            ..SessionOptions::default()
        },
        ..StopOptions::default()
    }
}

/// The pull `kdleak attach` does, over an open transport.
pub async fn pull_on(transport: Transport, options: &StopOptions) -> session::Result<LeakReport> {
    with_stopped_transport(
        transport,
        options,
        symbols(),
        async |s: &mut Session, c: StopContext| {
            let kernel = KernelContext::load(s, &c.symbols).await?;
            let pull = PullOptions {
                connection: c.connection,
                history_limit: 8,
                ..PullOptions::default()
            };
            Ok(verifier::pull(s, &kernel, &c.symbols, &pull).await?)
        },
    )
    .await
}

/// A simulated target running in this process.
pub struct Sim {
    pub status: watch::Receiver<SimStats>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<SimStats>>,
}

impl Sim {
    /// KDNET, poking `host`.
    pub fn kdnet(host: std::net::SocketAddr, machine: Machine, faults: FaultSpec) -> Self {
        let mut config = KdnetConfig::new(host, Key::parse(KEY).unwrap());
        config.poke_interval = Duration::from_millis(100);
        config.faults = faults;
        Self::start(move |mut reporter, stopped| {
            tokio::spawn(async move {
                sim_kdnet::run(config, machine, &mut reporter, async {
                    let _ = stopped.await;
                })
                .await
            })
        })
    }

    /// KDCOM on a Unix socket.
    pub fn kdcom(path: &Path, machine: Machine, faults: FaultSpec) -> Self {
        let config = KdcomConfig {
            unix: Some(path.to_path_buf()),
            faults,
            ..KdcomConfig::default()
        };
        Self::start(move |mut reporter, stopped| {
            tokio::spawn(async move {
                kdcom::run(config, machine, &mut reporter, async {
                    let _ = stopped.await;
                })
                .await
            })
        })
    }

    fn start(
        run: impl FnOnce(Reporter, oneshot::Receiver<()>) -> JoinHandle<std::io::Result<SimStats>>,
    ) -> Self {
        let (reporter, status) = Reporter::new(None);
        let (stop, stopped) = oneshot::channel();
        Self {
            status,
            stop: Some(stop),
            task: run(reporter, stopped),
        }
    }

    /// Waits (up to `limit`) for the target to run again after at least one continue.
    pub async fn running_within(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(
            limit,
            self.status
                .wait_for(|s| s.state == SimState::Running && s.continues >= 1),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }

    pub fn stats(&self) -> SimStats {
        self.status.borrow().clone()
    }

    pub async fn shutdown(mut self) -> SimStats {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(Duration::from_secs(1), &mut self.task).await {
            Ok(Ok(Ok(stats))) => stats,
            _ => {
                self.task.abort();
                self.status.borrow().clone()
            }
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Pulls over KDNET from `machine` behind `faults`; also returns the target's counters.
pub async fn pull_over_kdnet(
    machine: Machine,
    faults: FaultSpec,
) -> (session::Result<LeakReport>, Sim) {
    let socket = kdnet::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let host = socket.local_addr().unwrap();
    let sim = Sim::kdnet(host, machine, faults);
    let options = stop_options();
    let transport = match KdnetTransport::accept(
        socket,
        Key::parse(KEY).unwrap(),
        options.session.connect_timeout,
    )
    .await
    {
        Ok(t) => Transport::from(t),
        Err(e) => return (Err(e.into()), sim),
    };
    (pull_on(transport, &options).await, sim)
}

/// Byte-level damage a proxy adds to a stream, both directions.
#[derive(Debug, Clone, Copy)]
pub struct StreamDamage {
    /// Probability that a byte gets one bit flipped.
    pub byte_error_rate: f64,
    /// Probability that garbage (random bytes, sometimes a fake packet leader) precedes a chunk.
    pub garbage: f64,
    pub seed: u64,
}

/// Pulls over a Unix socket from `machine` behind `faults`, through a damaging proxy if `damage`.
pub async fn pull_over_stream(
    machine: Machine,
    faults: FaultSpec,
    damage: Option<StreamDamage>,
) -> (session::Result<LeakReport>, Sim) {
    let dir = tempfile::tempdir().unwrap();
    let sim_path = dir.path().join("kd.sock");
    let sim = Sim::kdcom(&sim_path, machine, faults);
    let host_path = match damage {
        None => sim_path.clone(),
        Some(damage) => {
            let proxy_path = dir.path().join("proxy.sock");
            let listener = tokio::net::UnixListener::bind(&proxy_path).unwrap();
            let target = sim_path.clone();
            tokio::spawn(async move {
                let Ok((host, _)) = listener.accept().await else {
                    return;
                };
                let mut target = loop {
                    match tokio::net::UnixStream::connect(&target).await {
                        Ok(s) => break s,
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                };
                let mut host = host;
                let (hr, hw) = host.split();
                let (tr, tw) = target.split();
                let mut up = Damager::new(damage, 1);
                let mut down = Damager::new(damage, 2);
                let _ = tokio::join!(up.pump(hr, tw), down.pump(tr, hw));
            });
            proxy_path
        }
    };
    let options = stop_options();
    let transport = match stream::connect_unix(&host_path, true, Duration::from_secs(5)).await {
        Ok(t) => Transport::Stream(t),
        Err(e) => return (Err(e.into()), sim),
    };
    let result = pull_on(transport, &options).await;
    drop(dir);
    (result, sim)
}

struct Damager {
    damage: StreamDamage,
    state: u64,
}

impl Damager {
    fn new(damage: StreamDamage, lane: u64) -> Self {
        Self {
            damage,
            state: damage.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ lane,
        }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    async fn pump(
        &mut self,
        mut from: impl tokio::io::AsyncRead + Unpin,
        mut to: impl tokio::io::AsyncWrite + Unpin,
    ) {
        let mut buf = vec![0u8; 8192];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut out = Vec::with_capacity(n + 64);
            if self.chance(self.damage.garbage) {
                let len = (self.next() % 48) as usize;
                // Sometimes a packet leader ("0000" data, "iiii" control) with junk after it.
                match self.next() % 4 {
                    0 => out.extend_from_slice(b"0000"),
                    1 => out.extend_from_slice(b"iiii"),
                    _ => {}
                }
                out.extend((0..len).map(|_| self.next() as u8));
            }
            for &b in &buf[..n] {
                let b = if self.chance(self.damage.byte_error_rate) {
                    b ^ (1 << (self.next() % 8))
                } else {
                    b
                };
                out.push(b);
            }
            if to.write_all(&out).await.is_err() {
                return;
            }
        }
    }
}

/// The report as `kdleak attach --format json` prints it, minus what differs between runs
/// (`target.time`, `target.connection`).
pub fn comparable(report: &LeakReport) -> Value {
    let mut report = report.clone();
    report.sites = kdleak::report::sites(&report, kdleak::report::GroupBy::Caller);
    let mut value: Value = serde_json::from_str(&kdleak::report::json::render(&report)).unwrap();
    let target = value["target"].as_object_mut().unwrap();
    target.remove("time");
    target.remove("connection");
    value
}

/// How one faulty run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The same report as without faults.
    Identical,
    /// An error (a non-zero exit of `kdleak attach`), with its message and exit code.
    Failed(u8, String),
    /// A report explicitly marked incomplete, with its reasons.
    Partial(Vec<String>),
    /// A complete report that differs from the fault-free one: must never happen.
    Wrong(String),
}

pub fn classify(result: &session::Result<LeakReport>, baseline: &Value) -> Outcome {
    match result {
        Err(e) => Outcome::Failed(e.exit_code(), e.to_string()),
        Ok(report) if !report.complete && !report.incomplete_reasons.is_empty() => {
            Outcome::Partial(report.incomplete_reasons.clone())
        }
        Ok(report) => {
            let got = comparable(report);
            if &got == baseline {
                Outcome::Identical
            } else {
                Outcome::Wrong(first_difference(baseline, &got))
            }
        }
    }
}

/// The first path where two JSON values differ, for the failure message.
pub fn first_difference(a: &Value, b: &Value) -> String {
    fn walk(a: &Value, b: &Value, path: &str) -> Option<String> {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for (k, v) in x {
                    match y.get(k) {
                        Some(w) => {
                            if let Some(d) = walk(v, w, &format!("{path}.{k}")) {
                                return Some(d);
                            }
                        }
                        None => return Some(format!("{path}.{k} missing")),
                    }
                }
                y.keys()
                    .find(|k| !x.contains_key(*k))
                    .map(|k| format!("{path}.{k} added"))
            }
            (Value::Array(x), Value::Array(y)) => {
                if x.len() != y.len() {
                    return Some(format!("{path}: {} vs {} elements", x.len(), y.len()));
                }
                x.iter()
                    .zip(y)
                    .enumerate()
                    .find_map(|(i, (v, w))| walk(v, w, &format!("{path}[{i}]")))
            }
            _ if a == b => None,
            _ => Some(format!("{path}: {a} vs {b}")),
        }
    }
    walk(a, b, "").unwrap_or_else(|| "no difference".into())
}

/// The fault-free report, pulled once per process over KDNET.
pub async fn baseline() -> Value {
    static BASELINE: tokio::sync::OnceCell<Value> = tokio::sync::OnceCell::const_new();
    BASELINE
        .get_or_init(|| async {
            let (result, sim) = pull_over_kdnet(machine(image()), FaultSpec::default()).await;
            let report = result.expect("the fault-free pull fails");
            assert!(report.complete, "{:?}", report.incomplete_reasons);
            sim.shutdown().await;
            comparable(&report)
        })
        .await
        .clone()
}
