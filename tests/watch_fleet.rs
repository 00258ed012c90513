//! `kdleak watch --targets lab.toml`: a fleet of `kdleak sim` processes over KDNET on distinct
//! loopback ports, watched by ONE kdleak, against single-target watches of the same scenarios.
//!
//! The fleet (KDLEAK_FLEET_TARGETS targets, default 8; `scripts/fleet-32` runs 32) is mostly
//! healthy targets — frozen ones (time stands still: deterministic tables) and leaking ones
//! (watch-leak at 300×) — plus one that reboots (`reboot_after_continues`), one that hangs
//! (SIGSTOP mid-watch) and one that disappears (SIGKILL mid-watch). The healthy targets' results
//! must equal single-target watches, the faulty ones must be reported, and nobody else may be
//! delayed by them. The fleet process's CPU time and peak RSS are printed per target.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// watch-leak with time (almost) standing still: the same table at every poll.
    Frozen,
    /// watch-leak at 300×: leaky.sys leaks a block per 200 ms.
    Leaking,
    /// Leaking, and reboots after its 6th Continue.
    Reboots,
    /// Stopped (SIGSTOP) once it has 3 polls: a hung machine.
    Hangs,
    /// Killed once it has 3 polls: a machine that disappears.
    Disappears,
}

fn kinds(n: usize) -> Vec<Kind> {
    (0..n)
        .map(|i| match i {
            0 => Kind::Hangs,
            1 => Kind::Disappears,
            2 => Kind::Reboots,
            i if i % 2 == 1 => Kind::Leaking,
            _ => Kind::Frozen,
        })
        .collect()
}

/// A UDP port free now on loopback (the fleet binds it; the sim sends to it).
fn udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A base-36 KDNET key per target: every target has its own.
fn key(i: usize) -> String {
    format!("{}.fleet.{}.k", i + 1, (i * 7) % 36)
}

/// How a target is reached: most over KDNET, some frozen ones over a Unix-socket pipe or TCP
/// serial (what a VM's virtual serial port gives).
#[derive(Debug, Clone)]
enum Link {
    Kdnet { port: u16, key: String },
    Pipe(std::path::PathBuf),
    Tcp(u16),
}

impl Link {
    fn for_target(i: usize, kind: Kind, dir: &Path) -> Link {
        match (kind, i % 6) {
            (Kind::Frozen, 4) => Link::Pipe(dir.join(format!("kd{i}.sock"))),
            (Kind::Frozen, 0) => Link::Tcp(free_port()),
            _ => Link::Kdnet {
                port: udp_port(),
                key: key(i),
            },
        }
    }

    /// The connection string kdleak takes.
    fn connection(&self) -> String {
        match self {
            Link::Kdnet { port, key } => format!("net:port={port},key={key}"),
            Link::Pipe(path) => format!("com:pipe,port={},reconnect", path.display()),
            Link::Tcp(port) => format!("com:tcp,port=127.0.0.1:{port}"),
        }
    }
}

fn start_sim(kind: Kind, link: &Link) -> Running {
    let mut sim = kdleak();
    sim.args(["sim", "--scenario", "watch-leak", "--poke-interval", "0.5"])
        .args([
            "--time-scale",
            // 300×: a leaked block per 200 ms of running. Faster, a sim that runs long before
            // the fleet's first poll reaches it (32 sims on a busy machine) fills what its
            // timeline can allocate, and its leak stops.
            if kind == Kind::Frozen {
                "0.0001"
            } else {
                "300"
            },
        ]);
    match link {
        Link::Kdnet { port, key } => {
            sim.args(["--kdnet", &format!("127.0.0.1:{port}"), "--key", key]);
        }
        Link::Pipe(path) => {
            sim.arg("--pipe").arg(path);
        }
        Link::Tcp(port) => {
            sim.args(["--tcp", &format!("127.0.0.1:{port}")]);
        }
    }
    if kind == Kind::Reboots {
        sim.args(["--faults", "reboot_after_continues=6"]);
    }
    spawn(sim)
}

fn sympath() -> String {
    root()
        .join("captures/fixtures/win10-19041")
        .display()
        .to_string()
}

/// Records of a JSONL file, by target (`None`: the single-target series, under "").
fn read_stream(path: &Path) -> BTreeMap<String, Vec<Value>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut by_target: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let record: Value = serde_json::from_str(line).expect("every line is one JSON record");
        let target = record["target"].as_str().unwrap_or("").to_string();
        by_target.entry(target).or_default().push(record);
    }
    by_target
}

/// The deterministic part of a record: (site, driver, count, bytes) of every site.
fn table(record: &Value) -> Vec<(String, String, u64, u64)> {
    let mut rows: Vec<_> = record["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["site"].as_str().unwrap().to_string(),
                s["driver"].as_str().unwrap().to_string(),
                s["count"].as_u64().unwrap(),
                s["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn site_names(record: &Value) -> Vec<(String, String)> {
    table(record)
        .into_iter()
        .map(|(s, d, _, _)| (s, d))
        .collect()
}

/// (site, driver, stack) of the suspected leaks.
fn leaks(record: &Value) -> Vec<(String, String, Vec<String>)> {
    record["suspected_leaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["site"].as_str().unwrap().to_string(),
                l["driver"].as_str().unwrap().to_string(),
                l["stack"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["symbol"].as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

/// A single-target `kdleak watch` of a fresh sim of `kind`; its series.
fn single_watch(kind: Kind, interval: &str, count: u32, dir: &Path) -> Vec<Value> {
    let port = udp_port();
    let key = key(99);
    let _sim = start_sim(
        kind,
        &Link::Kdnet {
            port,
            key: key.clone(),
        },
    );
    let series = dir.join(format!("single-{kind:?}.jsonl"));
    let mut watch = kdleak();
    watch
        .args(["watch", &format!("net:port={port},key={key}")])
        .args(["--offline", "--sympath", &sympath(), "--quiet"])
        .args(["--interval", interval, "--count", &count.to_string()])
        .arg("--out")
        .arg(&series);
    let out = finish(spawn(watch), Duration::from_secs(240));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_stream(&series).remove("").unwrap()
}

/// CPU seconds (user + system) and peak RSS in KiB of a live process, from /proc.
fn usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`: state is field 3; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    // USER_HZ is 100 on Linux (getconf CLK_TCK).
    Some((ticks / 100.0, hwm))
}

#[test]
fn one_kdleak_watches_a_fleet_and_faulty_targets_delay_no_other() {
    let n: usize = std::env::var("KDLEAK_FLEET_TARGETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
        .max(5);
    // One poll per target per interval: the fleet's load grows with n on a 2-core machine.
    let interval = if n > 8 { "2s" } else { "1s" };
    let count: u32 = 16;
    let dir = tempfile::tempdir().unwrap();
    let kinds = kinds(n);

    let mut sims = Vec::new();
    let mut file = String::new();
    writeln!(
        file,
        "[defaults]\ninterval = \"{interval}\"\noffline = true\nsympath = \"{}\"\n\
         give_up_after = \"120s\"\nconnect_timeout = 60\n",
        sympath()
    )
    .unwrap();
    for (i, kind) in kinds.iter().enumerate() {
        let link = Link::for_target(i, *kind, dir.path());
        sims.push(start_sim(*kind, &link));
        let name = format!("lab{i:02}-{kind:?}").to_lowercase();
        writeln!(
            file,
            "[[target]]\nname = \"{name}\"\nconnection = \"{}\"",
            link.connection()
        )
        .unwrap();
        if matches!(kind, Kind::Hangs | Kind::Disappears) {
            // Per-target timeouts: a hung request costs this target 15 s, nobody else anything.
            writeln!(
                file,
                "request_timeout = 15\ntimeout = 20\ngive_up_after = \"1s\""
            )
            .unwrap();
        }
        file.push('\n');
    }
    let lab = dir.path().join("lab.toml");
    std::fs::write(&lab, &file).unwrap();
    let stream = dir.path().join("fleet.jsonl");
    let pages = dir.path().join("pages");
    let mut watch = kdleak();
    watch
        .args(["watch", "--targets"])
        .arg(&lab)
        .args(["--count", &count.to_string(), "--quiet", "--format", "json"])
        .arg("--out")
        .arg(&stream)
        .arg("--report")
        .arg(&pages);
    let started = Instant::now();
    let mut running = spawn(watch);
    let pid = running.0.id();

    // Fault the two once they have three polls each; sample the fleet's usage meanwhile.
    let name_of = |i: usize| format!("lab{i:02}-{:?}", kinds[i]).to_lowercase();
    let mut faulted = [false, false];
    let mut hang_started: Option<f64> = None;
    let mut last_usage = (0.0, 0);
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the fleet did not finish in 600 s"
        );
        if let Some(u) = usage(pid) {
            last_usage = u;
        }
        let records = read_stream(&stream);
        for (slot, signal) in [(0usize, "-STOP"), (1, "-KILL")] {
            let polls = records.get(&name_of(slot)).map_or(0, Vec::len);
            if !faulted[slot] && polls >= 3 {
                let ok = Command::new("kill")
                    .args([signal, &sims[slot].0.id().to_string()])
                    .status()
                    .unwrap()
                    .success();
                assert!(ok);
                faulted[slot] = true;
                if slot == 0 {
                    hang_started = Some(started.elapsed().as_secs_f64());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let wall = started.elapsed().as_secs_f64();
    // The hung sim gets SIGCONT before it is killed on drop (SIGKILL works either way).
    let _ = Command::new("kill")
        .args(["-CONT", &sims[0].0.id().to_string()])
        .status();
    let out = finish(running, Duration::from_secs(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        faulted.iter().all(|f| *f),
        "the faults were injected: {:?} {stderr} {}",
        read_stream(&stream)
            .iter()
            .map(|(t, r)| (t.clone(), r.len()))
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(hang_started.is_some());
    // Two targets gave up (connection: exit 3); the others finished.
    assert_eq!(out.status.code(), Some(3), "{status:?} {stderr}");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ends: BTreeMap<String, String> = summary["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["target"].as_str().unwrap().to_string(),
                t["end"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let records = read_stream(&stream);
    assert_eq!(records.len(), n, "every target is in the one stream");

    // The faulty ones are reported.
    for slot in [0, 1] {
        let name = name_of(slot);
        assert!(ends[&name].starts_with("failed"), "{name}: {}", ends[&name]);
        let last = records[&name].last().unwrap();
        assert_eq!(last["ok"], false, "{name}: the failure is recorded: {last}");
        assert!(last["error"].is_string());
        assert!(records[&name][..3].iter().all(|r| r["ok"] == true));
    }
    let index = std::fs::read_to_string(pages.join("index.html")).unwrap();
    assert!(index.contains(&format!("{n} targets")), "{index}");
    assert!(
        index.contains("2 failing"),
        "the fleet page says who failed"
    );
    assert!(index.contains("given up after"));

    // The reboot is marked, and the target went on.
    let rebooted = &records[&name_of(2)];
    assert_eq!(ends[&name_of(2)], "finished");
    assert_eq!(rebooted.len(), count as usize);
    assert_eq!(
        rebooted
            .iter()
            .filter(|r| r["discontinuity"]["kind"] == "reboot")
            .count(),
        1,
        "{rebooted:?}"
    );

    // Single-target watches of the same scenarios, for comparison.
    let frozen_single = single_watch(Kind::Frozen, "300ms", 3, dir.path());
    let leaking_single = single_watch(Kind::Leaking, "1s", 6, dir.path());
    let frozen_table = table(frozen_single.last().unwrap());
    assert!(!frozen_table.is_empty());
    let leaking_last = leaking_single.last().unwrap();
    let leaking_sites = site_names(leaking_last);
    let leaking_leaks = leaks(leaking_last);
    assert_eq!(leaking_leaks.len(), 1, "{leaking_last}");

    let mut max_gap: f64 = 0.0;
    for (i, kind) in kinds.iter().enumerate().skip(3) {
        let name = name_of(i);
        let series = &records[&name];
        assert_eq!(ends[&name], "finished", "{name}");
        assert_eq!(series.len(), count as usize, "{name}: every poll");
        for r in series {
            assert_eq!(r["ok"], true, "{name}: unaffected: {r}");
            // The first poll may have waited for its sim to listen (TCP: refused until then;
            // a fleet retries setup), and says so; after it, nothing.
            let setup_retry = r["poll"] == 1 && r["discontinuity"]["kind"] == "reconnect";
            assert!(
                r["discontinuity"].is_null() || setup_retry,
                "{name}: unaffected: {r}"
            );
            assert_eq!(r["complete"], true, "{name}: {r}");
        }
        // Polls kept their pace while the hung target waited out its 15 s request timeout.
        for pair in series.windows(2) {
            let gap =
                pair[1]["elapsed_s"].as_f64().unwrap() - pair[0]["elapsed_s"].as_f64().unwrap();
            max_gap = max_gap.max(gap);
        }
        let last = series.last().unwrap();
        match kind {
            Kind::Frozen => assert_eq!(table(last), frozen_table, "{name}"),
            Kind::Leaking => {
                assert_eq!(site_names(last), leaking_sites, "{name}");
                let leaky: Vec<(u64, f64, u64)> = series
                    .iter()
                    .map(|r| {
                        (
                            r["poll"].as_u64().unwrap(),
                            r["elapsed_s"].as_f64().unwrap(),
                            r["sites"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .find(|s| s["driver"] == "leaky.sys")
                                .map_or(0, |s| s["bytes"].as_u64().unwrap()),
                        )
                    })
                    .collect();
                assert_eq!(leaks(last), leaking_leaks, "{name}: {leaky:?}");
                for (_, driver, _, bytes) in table(last) {
                    if driver == "leaky.sys" {
                        assert_eq!(bytes % 0x1010, 0);
                    }
                }
            }
            _ => unreachable!(),
        }
        let page = std::fs::read_to_string(pages.join(format!("{name}.html"))).unwrap();
        assert!(page.contains(&format!("{count} polls")), "{name}");
    }
    assert!(
        max_gap < 12.0,
        "a healthy target waited {max_gap:.1} s between two polls: something delayed it"
    );
    let (cpu, rss_kib) = last_usage;
    let polls: usize = records.values().map(Vec::len).sum();
    eprintln!(
        "fleet of {n} targets ({count} polls each every {interval}): {polls} records in {wall:.1} s; \
         kdleak CPU {cpu:.2} s = {:.3} s per target, {:.1} ms per poll; peak RSS {:.1} MiB = \
         {:.2} MiB per target; longest gap between two polls of a healthy target {max_gap:.2} s",
        cpu / n as f64,
        cpu * 1000.0 / polls as f64,
        rss_kib as f64 / 1024.0,
        rss_kib as f64 / 1024.0 / n as f64,
    );
}
