//! The target is frozen only to be read: with a cold symbol cache, `kdleak attach` stops the
//! target briefly to identify its kernel, fetches the PDBs from a symbol server while it runs,
//! and stops it again for the reads. Checked against `kdleak sim` over a socket, with the
//! target's stopped time taken from the simulator's state file (its own clock), and a loopback
//! symbol server that takes seconds to answer.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

mod common;
use common::*;

/// A target with 20 verified drivers and 200 allocations: a pull of some 500 requests, closer to
/// a real machine's than the one-driver scenarios (where the few requests of the first stop
/// would weigh as much as the pull).
const PULL_SCENARIO: &str = "gen:build=19041,drivers=20,allocs=200,log=0.1,seed=1";

/// The tests of this file one at a time: they time stops on a machine of two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long the symbol server takes to answer each request.
const SERVER_DELAY: Duration = Duration::from_secs(1);

/// A symbol store (`name.pdb/KEY/name.pdb`) of a fixture build's PDBs, from its manifest.
fn fixture_store(build: &str, dir: &Path) {
    let fixtures = root().join("captures/fixtures").join(build);
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("manifest.json")).unwrap())
            .unwrap();
    for file in manifest["files"].as_object().unwrap().values() {
        let pdb = file["pdb"].as_str().unwrap();
        let key = file["rsds"]["symstore_key"].as_str().unwrap();
        let dest = dir.join(pdb).join(key);
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::copy(fixtures.join(pdb), dest.join(pdb)).unwrap();
    }
}

/// A loopback HTTP symbol server over `root` that waits [`SERVER_DELAY`] before each answer,
/// as a far-away server does. It logs the paths asked for and, from the simulator's state file,
/// whether the target was running or stopped while it answered.
struct SlowServer {
    port: u16,
    paths: Arc<Mutex<Vec<(String, Value)>>>,
}

impl SlowServer {
    fn start(root: PathBuf, sim_state: PathBuf) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let log = paths.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                std::thread::sleep(SERVER_DELAY);
                log.lock()
                    .unwrap()
                    .push((path.clone(), state(&sim_state)["state"].clone()));
                let file = root.join(path.trim_start_matches('/'));
                let response = match std::fs::read(&file) {
                    Ok(body) if file.is_file() => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: \
                             application/octet-stream\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(&body);
                        r
                    }
                    _ => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = stream.write_all(&response);
            }
        });
        Self { port, paths }
    }

    fn paths(&self) -> Vec<String> {
        self.paths
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Asserts that the target ran while every request was answered.
    fn assert_target_ran_throughout(&self) {
        let seen = self.paths.lock().unwrap().clone();
        assert!(!seen.is_empty());
        for (path, state) in seen {
            assert_eq!(
                state, "running",
                "the target was {state} while {path} downloaded"
            );
        }
    }
}

/// `kdleak sim` serving `scenario` on a socket in `dir`, with a state file.
struct Sim {
    socket: PathBuf,
    state: PathBuf,
    _running: Running,
}

impl Sim {
    fn start(dir: &Path, scenario: &str, faults: &str) -> Self {
        let socket = dir.join("kd.sock");
        let state = dir.join("state.json");
        let mut sim = kdleak();
        sim.args(["sim", "--scenario", scenario, "--faults", faults, "--pipe"])
            .arg(&socket)
            .arg("--state-file")
            .arg(&state);
        let running = spawn(sim);
        wait_for("the sim's socket", Duration::from_secs(30), || {
            socket.exists()
        });
        Self {
            socket,
            state,
            _running: running,
        }
    }

    fn state(&self) -> Value {
        state(&self.state)
    }

    /// Seconds the target has been stopped, by the simulator's clock, once `continues` stops
    /// have ended.
    fn stopped_s_after(&self, continues: u64) -> f64 {
        wait_for("the state file", Duration::from_secs(10), || {
            self.state()["continues"].as_u64() >= Some(continues)
                && self.state()["state"] == "running"
        });
        self.state()["stopped_us"].as_u64().unwrap() as f64 / 1e6
    }

    fn continues(&self) -> u64 {
        self.state()["continues"].as_u64().unwrap_or(0)
    }
}

/// What one `kdleak attach` gave: its report and its `--stats`.
struct Pull {
    report: Value,
    stats: Value,
}

/// The symbol path of a cache in `dir` (empty at first) in front of `server`.
fn cold_sympath(dir: &Path, server: &SlowServer) -> String {
    format!(
        "srv*{}*http://127.0.0.1:{}",
        dir.join("cache").display(),
        server.port
    )
}

fn connection(sim: &Sim) -> String {
    format!("com:pipe,port={}", sim.socket.display())
}

fn attach(sim: &Sim, sympath: &str, dir: &Path, name: &str, extra: &[&str]) -> Pull {
    let report = dir.join(format!("{name}.json"));
    let stats = dir.join(format!("{name}-stats.json"));
    let mut attach = kdleak();
    attach
        .arg("attach")
        .arg(connection(sim))
        .args(["--sympath", sympath, "--format", "json", "--out"])
        .arg(&report)
        .arg("--stats")
        .arg(&stats)
        .args(extra);
    let out = finish(spawn(attach), Duration::from_secs(120));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |path: &Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    Pull {
        report: read(&report),
        stats: read(&stats),
    }
}

/// The report without what differs between two pulls of one state: when, and how the stops
/// went.
fn without_times(report: &Value) -> Value {
    let mut report = report.clone();
    let target = report["target"].as_object_mut().unwrap();
    for key in ["time", "stops", "outside_s"] {
        target.remove(key);
    }
    report
}

fn stop_count(pull: &Pull) -> u64 {
    pull.stats["stops"].as_array().unwrap().len() as u64
}

fn purposes(stats: &Value) -> Vec<(String, bool)> {
    stats["stops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stop| {
            (
                stop["purpose"].as_str().unwrap().to_string(),
                stop["new_boot"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// Cold and warm pulls to compare: the least stopped time of each stands for it, so that a
/// scheduling hiccup of this shared machine in one pull does not decide the comparison.
const ROUNDS: usize = 3;

#[test]
fn a_cold_cache_freezes_the_target_no_longer_than_a_warm_one_and_gives_the_same_report() {
    let _alone = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    fixture_store("win10-19041", &store);
    let server = SlowServer::start(store, dir.path().join("state.json"));
    let sim = Sim::start(dir.path(), PULL_SCENARIO, "");
    let (mut colds, mut warms) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // A cache of its own per round: each cold pull downloads everything.
        let sympath = cold_sympath(&dir.path().join(format!("round{round}")), &server);
        let asked_before = server.paths().len();
        let continues = sim.continues();
        let before = sim.stopped_s_after(continues);
        let cold = attach(&sim, &sympath, dir.path(), "cold", &[]);
        let cold_stopped = sim.stopped_s_after(continues + stop_count(&cold)) - before;
        let fetched = server.paths()[asked_before..].to_vec();

        let continues = sim.continues();
        let before = sim.stopped_s_after(continues);
        let warm = attach(&sim, &sympath, dir.path(), "warm", &[]);
        let warm_stopped = sim.stopped_s_after(continues + stop_count(&warm)) - before;
        let outside = cold.stats["outside_s"].as_f64().unwrap();
        eprintln!(
            "round {round}: target stopped (simulator's clock) {cold_stopped:.3} s with a cold \
             cache ({} stops), {warm_stopped:.3} s with a warm one ({}); kdleak's clock: \
             {:.3} s, {:.3} s; {outside:.3} s of symbol work while the target ran",
            stop_count(&cold),
            stop_count(&warm),
            cold.stats["stopped_s"],
            warm.stats["stopped_s"]
        );
        assert!(
            fetched.iter().any(|p| p.contains("ntkrnlmp.pdb"))
                && fetched.iter().any(|p| p.contains("myfault.pdb")),
            "{fetched:?}"
        );
        assert_eq!(
            purposes(&cold.stats),
            [("identify".to_string(), false), ("read".to_string(), false)]
        );
        // The downloads were waited for while the target ran.
        assert!(
            outside >= fetched.len() as f64 * SERVER_DELAY.as_secs_f64(),
            "{outside}"
        );
        assert_eq!(
            server.paths().len(),
            asked_before + fetched.len(),
            "the cache is warm"
        );
        assert_eq!(purposes(&warm.stats), [("read".to_string(), false)]);
        assert_eq!(without_times(&cold.report), without_times(&warm.report));
        assert_eq!(cold.report["complete"], true);
        assert_eq!(cold.report["target"]["stops"], cold.stats["stops"]);
        colds.push(cold_stopped);
        warms.push(warm_stopped);
    }
    server.assert_target_ran_throughout();
    let least = |times: &[f64]| times.iter().copied().fold(f64::INFINITY, f64::min);
    let (cold, warm) = (least(&colds), least(&warms));
    eprintln!("least stopped time: cold cache {cold:.3} s, warm {warm:.3} s");
    assert!(
        cold <= warm * 1.10,
        "a cold cache froze the target {cold:.3} s, a warm one {warm:.3} s (each the least of \
         {ROUNDS}: {colds:?}, {warms:?})"
    );
}

#[test]
fn a_reboot_between_the_two_stops_starts_over_on_the_new_boot() {
    let _alone = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    fixture_store("win10-19041", &store);
    let server = SlowServer::start(store, dir.path().join("state.json"));
    let sympath = cold_sympath(dir.path(), &server);
    // The target reboots right after the first stop's Continue, while the PDB downloads.
    let sim = Sim::start(dir.path(), "win10-myfault", "reboot_after_continues=1");

    let cold = attach(&sim, &sympath, dir.path(), "cold", &[]);
    assert_eq!(sim.state()["reboots"], 1);
    assert_eq!(
        purposes(&cold.stats),
        [("identify".to_string(), false), ("read".to_string(), true)],
        "the second stop saw the new boot (KUSER_SHARED_DATA.BootId)"
    );
    server.assert_target_ran_throughout();
    let warm = attach(&sim, &sympath, dir.path(), "warm", &[]);
    assert_eq!(purposes(&warm.stats), [("read".to_string(), false)]);
    assert_eq!(without_times(&cold.report), without_times(&warm.report));
    assert_eq!(cold.report["complete"], true);
    assert_eq!(sim.state()["state"], "running");

    // The text report's last line says both stops of a cold pull and the work done while the
    // target ran, and its figures add up.
    let mut text = kdleak();
    text.arg("attach").arg(connection(&sim)).args([
        "--sympath",
        &cold_sympath(&dir.path().join("text"), &server),
    ]);
    let out = finish(spawn(text), Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let line = stdout
        .lines()
        .rfind(|l| l.starts_with("Target frozen "))
        .unwrap_or_else(|| panic!("no frozen line: {stdout}"));
    let seconds = |after: &str| -> f64 {
        let rest = &line[line
            .find(after)
            .unwrap_or_else(|| panic!("{after:?}: {line}"))
            + after.len()..];
        rest.split(' ').next().unwrap().parse().unwrap()
    };
    let (total, identify, read) = (
        seconds("Target frozen "),
        seconds("(identify "),
        seconds(", read "),
    );
    assert!(line.contains(" s in 2 stops (identify "), "{line}");
    assert!(line.ends_with(" s of host work while it ran."), "{line}");
    assert!((total - identify - read).abs() <= 0.0015, "{line}");
    assert!(seconds("); ") >= SERVER_DELAY.as_secs_f64(), "{line}");
    assert_eq!(sim.state()["state"], "running");
}

#[test]
fn info_fetches_the_kernel_pdb_while_the_target_runs() {
    let _alone = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    fixture_store("win10-19041", &store);
    let server = SlowServer::start(store, dir.path().join("state.json"));
    let sim = Sim::start(dir.path(), "win10-myfault", "");
    let mut info = kdleak();
    info.arg("info")
        .arg(connection(&sim))
        .args(["--sympath", &cold_sympath(dir.path(), &server)])
        .args(["--format", "json"]);
    let out = finish(spawn(info), Duration::from_secs(60));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        purposes(&info),
        [("identify".to_string(), false), ("read".to_string(), false)]
    );
    assert!(info["modules"]["modules"].as_array().unwrap().len() > 1);
    assert_eq!(server.paths().len(), 1, "{:?}", server.paths());
    server.assert_target_ran_throughout();
}

#[test]
fn watch_fetches_symbols_between_the_first_polls_two_stops_only() {
    let _alone = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    fixture_store("win10-19041", &store);
    let server = SlowServer::start(store, dir.path().join("state.json"));
    let sim = Sim::start(dir.path(), "win10-myfault", "");
    let series = dir.path().join("series.jsonl");
    let mut watch = kdleak();
    watch
        .arg("watch")
        .arg(connection(&sim))
        .args(["--sympath", &cold_sympath(dir.path(), &server)])
        .args(["--interval", "100ms", "--count", "3", "--quiet", "--out"])
        .arg(&series);
    let out = finish(spawn(watch), Duration::from_secs(60));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<Value> = read_series(&series);
    let stops: Vec<u64> = records
        .iter()
        .map(|r| r["stops"].as_u64().unwrap())
        .collect();
    assert_eq!(stops, [2, 1, 1], "{records:?}");
    for r in &records {
        assert_eq!(r["ok"], true, "{r}");
        assert!(r["frozen_s"].as_f64().unwrap() > 0.0, "{r}");
    }
    server.assert_target_ran_throughout();
}
