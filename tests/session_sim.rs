//! `kdleak info` (the library path) against the simulated target of `kdleak::sim`, over KDNET and
//! a Unix socket, for the built-in tiny kernel and the win7/win10/win11 scenarios: build, kernel
//! base, every module with its PDB identity, and the target running afterwards.

use std::path::PathBuf;
use std::time::Duration;

use kdleak::connect::ConnectSpec;
use kdleak::info::{self, InfoOptions, TargetInfo};
use kdleak::session::SessionOptions;
use kdleak::sim::wire::kdcom::{self, KdcomConfig};
use kdleak::sim::wire::kdnet::{self as sim_kdnet, KdnetConfig};
use kdleak::sim::world::scenario::Scenario;
use kdleak::sim::{Machine, Reporter, SimState, SimStats};
use kdleak::transport::{kdnet, KdnetTransport, OpenOptions, Transport};
use kdproto::kdnet::Key;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);
const KEY: &str = "1.2.3.4";

fn options() -> InfoOptions {
    InfoOptions {
        symbols: Some(sim_symbols()),
        open: OpenOptions {
            connect_timeout: Duration::from_secs(10),
            ..OpenOptions::default()
        },
        session: SessionOptions {
            connect_timeout: Duration::from_secs(10),
            break_in_interval: Duration::from_millis(300),
            handle_signals: false,
            ..SessionOptions::default()
        },
    }
}

/// The fixture PDBs of every scenario; the tiny kernel's made-up identity takes the Windows 11
/// fixture kernel's layout (--force-symbols).
fn sim_symbols() -> kdleak::symbols::SymbolOptions {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/fixtures");
    let path = ["win11-22000", "win10-19041", "win7-7601"]
        .map(|f| fixtures.join(f).display().to_string())
        .join(";");
    let mut options = kdleak::symbols::SymbolOptions::new(Some(&path)).unwrap();
    options.offline = true;
    options.force = true;
    options
}

fn machine(scenario: Option<&str>) -> Machine {
    match scenario {
        None => Machine::default(),
        Some(name) => {
            let image = Scenario::builtin(name).unwrap().build().unwrap();
            Machine::builder().image(image).build()
        }
    }
}

struct Sim {
    status: watch::Receiver<SimStats>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<SimStats>>,
}

impl Sim {
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

    async fn running_after(mut self) {
        let stats = timeout(LIMIT, self.status.wait_for(|s| s.continues >= 1))
            .await
            .expect("sim never saw a continue")
            .unwrap()
            .clone();
        assert_eq!(stats.state, SimState::Running, "{stats}");
        let _ = self.stop.take().unwrap().send(());
        let _ = timeout(LIMIT, self.task).await;
    }
}

fn check(info: &TargetInfo, machine: &Machine) {
    let version = machine.version();
    assert_eq!(info.build, version.build());
    assert_eq!(info.kernel_base, version.kern_base);
    assert_eq!(info.machine, "x64");
    assert!(info.modules.complete, "{:?}", info.modules.problem);
    assert!(!info.modules.modules.is_empty());
    assert_eq!(info.modules.modules[0].base, version.kern_base);
    for m in &info.modules.modules {
        assert!(!m.name.is_empty(), "{m:?}");
        assert!(
            m.pdb.is_some(),
            "{} has no PDB identity: {:?}",
            m.name,
            m.pdb_error
        );
    }
    assert!(info.resumed);
}

async fn over_kdnet(scenario: Option<&str>) {
    let machine = machine(scenario);
    let socket = kdnet::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let host = socket.local_addr().unwrap();
    let sim_machine = machine.clone();
    let sim = Sim::start(move |mut reporter, stopped| {
        let mut config = KdnetConfig::new(host, KEY.parse().unwrap());
        config.poke_interval = Duration::from_millis(100);
        tokio::spawn(async move {
            sim_kdnet::run(config, sim_machine, &mut reporter, async {
                let _ = stopped.await;
            })
            .await
        })
    });
    let transport =
        KdnetTransport::accept(socket, Key::parse(KEY).unwrap(), Duration::from_secs(10))
            .await
            .unwrap();
    let info = info::run_on(Transport::from(transport), &options())
        .await
        .unwrap();
    check(&info, &machine);
    sim.running_after().await;
}

async fn over_pipe(scenario: Option<&str>) {
    let machine = machine(scenario);
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("kd.sock");
    let sim_machine = machine.clone();
    let sim_path = path.clone();
    let sim = Sim::start(move |mut reporter, stopped| {
        let config = KdcomConfig {
            unix: Some(sim_path),
            ..KdcomConfig::default()
        };
        tokio::spawn(async move {
            kdcom::run(config, sim_machine, &mut reporter, async {
                let _ = stopped.await;
            })
            .await
        })
    });
    let spec: ConnectSpec = format!("com:pipe,port={},reconnect", path.display())
        .parse()
        .unwrap();
    let info = info::run(&spec, &options()).await.unwrap();
    check(&info, &machine);
    sim.running_after().await;
}

#[tokio::test]
async fn tiny_kernel_over_kdnet() {
    timeout(LIMIT, over_kdnet(None)).await.expect("timed out");
}

#[tokio::test]
async fn tiny_kernel_over_a_pipe() {
    timeout(LIMIT, over_pipe(None)).await.expect("timed out");
}

#[tokio::test]
async fn scenarios_over_kdnet() {
    for name in ["win7-myfault", "win10-myfault", "win11-myfault"] {
        timeout(LIMIT, over_kdnet(Some(name))).await.expect(name);
    }
}

#[tokio::test]
async fn scenarios_over_a_pipe() {
    for name in ["win7-myfault", "win10-myfault", "win11-myfault"] {
        timeout(LIMIT, over_pipe(Some(name))).await.expect(name);
    }
}

#[tokio::test]
async fn sim_connection_string_starts_the_target_in_process() {
    timeout(LIMIT, async {
        let spec: ConnectSpec = "sim:win10-myfault".parse().unwrap();
        let info = info::run(&spec, &options()).await.unwrap();
        check(&info, &machine(Some("win10-myfault")));
        assert_eq!(info.connection, "the simulated target (win10-myfault)");
        // Plain `sim` serves the reference scenario.
        let spec: ConnectSpec = "sim".parse().unwrap();
        let info = info::run(&spec, &options()).await.unwrap();
        check(&info, &machine(Some("win7-myfault")));
        assert_eq!(info.connection, "the simulated target (win7-myfault)");
        let err = info::run(&"sim:no-such".parse().unwrap(), &options())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no-such"), "{err}");
    })
    .await
    .expect("timed out");
}
