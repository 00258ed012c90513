//! `watch --metrics ADDR` scraped by a real Prometheus server (Debian's `prometheus`, which
//! `scripts/test` installs): started on loopback with a temporary storage directory and a 1 s
//! scrape interval pointing at kdleak, then asked through its HTTP API whether the leaking
//! site's outstanding-bytes series rises and whether the README's alert rule fires for it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
mod peers;
use common::*;

const LEAKY_SITE: &str = "leaky!LeakyAllocate+0x32";

fn get(url: &str, query: &[(&str, &str)]) -> Result<(String, String), String> {
    let mut request = ureq::get(url);
    for (k, v) in query {
        request = request.query(*k, *v);
    }
    let mut response = request.call().map_err(|e| e.to_string())?;
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((content_type, body))
}

/// Prometheus's answer to an instant query, or `None` while it has none.
fn query(prometheus: &str, expr: &str) -> Option<Value> {
    let (_, body) = get(&format!("{prometheus}/api/v1/query"), &[("query", expr)]).ok()?;
    let answer: Value = serde_json::from_str(&body).ok()?;
    (answer["status"] == "success").then(|| answer["data"]["result"].clone())
}

/// The alert rules the README gives (the ```yaml block that starts with `# kdleak-rules.yml`).
fn readme_rules() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("# kdleak-rules.yml\n")
        .expect("the README has the alert rules");
    let len = readme[start..].find("```").unwrap();
    readme[start..start + len].to_string()
}

fn start_prometheus(dir: &Path, scrape: &str) -> (Running, String) {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!(
            "{}",
            peers::unavailable("prometheus", "not installed (Debian package `prometheus`)")
        );
    }
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             rule_files: ['rules.yml']\n\
             scrape_configs:\n  - job_name: kdleak\n    static_configs:\n      - targets: ['{scrape}']\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("rules.yml"), readme_rules()).unwrap();
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(dir.join("rules.yml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "the README's alert rules: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let mut command = Command::new("prometheus");
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn");
    let running = spawn(command);
    let url = format!("http://127.0.0.1:{port}");
    wait_for("Prometheus ready", Duration::from_secs(60), || {
        get(&format!("{url}/-/ready"), &[]).is_ok()
    });
    (running, url)
}

/// Values of a range query's first series, oldest first.
fn samples(result: &Value) -> Vec<f64> {
    result[0]["values"]
        .as_array()
        .map(|values| {
            values
                .iter()
                .filter_map(|v| v[1].as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn prometheus_scrapes_a_fleet_and_sees_the_leaking_site_rise() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let lab = dir.path().join("lab.toml");
    std::fs::write(
        &lab,
        "[defaults]\ninterval = \"500ms\"\noffline = true\nsympath = \"\"\n\n\
         [[target]]\nname = \"leaky-box\"\nconnection = \"sim:watch-leak\"\n\n\
         [[target]]\nname = \"quiet-box\"\nconnection = \"sim:win10-myfault\"\n",
    )
    .unwrap();
    let mut watch = kdleak();
    watch
        .env("KDLEAK_SIM_TIME_SCALE", "1200")
        .args(["watch", "--targets"])
        .arg(&lab)
        .args(["--count", "100000", "--quiet"])
        .args(["--metrics", &format!("127.0.0.1:{metrics_port}")])
        .arg("--out")
        .arg(dir.path().join("fleet.jsonl"));
    let _watch = spawn(watch);
    let (_prometheus, url) = start_prometheus(dir.path(), &format!("127.0.0.1:{metrics_port}"));

    // The leaking site's series, as Prometheus stored it: rising over at least 4 scrapes.
    let leaky = format!(
        "kdleak_site_outstanding_bytes{{target=\"leaky-box\",driver=\"leaky.sys\",site=\"{LEAKY_SITE}\"}}"
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    let rising = loop {
        let values = query(&url, &format!("{leaky}[2m]"))
            .map(|r| samples(&r))
            .unwrap_or_default();
        let distinct_rises = values.windows(2).filter(|w| w[1] > w[0]).count();
        if values.len() >= 4 && distinct_rises >= 3 {
            break values;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw the leak rise: {values:?}; targets: {:?}",
            get(&format!("{url}/api/v1/targets"), &[]).map(|(_, b)| b)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(rising.last() > rising.first(), "{rising:?}");
    assert!(
        rising.windows(2).all(|w| w[1] >= w[0]),
        "a leak only grows: {rising:?}"
    );
    // 4 KiB blocks charged 0x1010 bytes each.
    assert!(rising.iter().all(|v| *v as u64 % 0x1010 == 0), "{rising:?}");

    // The alert rule of the README fires on the leaking site only.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let flagged = query(&url, "kdleak_site_growth_streak >= 3").unwrap_or_default();
        let sites: Vec<(&str, &str)> = flagged
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s["metric"]["target"].as_str().unwrap_or(""),
                    s["metric"]["site"].as_str().unwrap_or(""),
                )
            })
            .collect();
        if !sites.is_empty() {
            assert_eq!(sites, [("leaky-box", LEAKY_SITE)]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the growth streak never reached 3"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The README's alert fires for the leaking site (5 growing polls; no `for`).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = get(&format!("{url}/api/v1/alerts"), &[]).unwrap();
        let alerts: Value = serde_json::from_str(&body).unwrap();
        let firing: Vec<&Value> = alerts["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == "PoolLeakSuspected" && a["state"] == "firing")
            .collect();
        if !firing.is_empty() {
            assert!(
                firing
                    .iter()
                    .all(|a| a["labels"]["site"] == LEAKY_SITE
                        && a["labels"]["target"] == "leaky-box"),
                "{firing:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the README's alert never fired: {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let suspected = query(
        &url,
        &format!("kdleak_site_suspected_leak{{site=\"{LEAKY_SITE}\"}}"),
    )
    .unwrap();
    assert_eq!(suspected[0]["value"][1], "1", "{suspected}");
    // Both targets are up; the quiet one is flat and has no suspected leak.
    let up = query(&url, "kdleak_target_up").unwrap();
    assert_eq!(up.as_array().unwrap().len(), 2, "{up}");
    assert!(up.as_array().unwrap().iter().all(|s| s["value"][1] == "1"));
    let quiet = query(&url, "kdleak_suspected_leaks{target=\"quiet-box\"}").unwrap();
    assert_eq!(quiet[0]["value"][1], "0", "{quiet}");
    let polls = query(&url, "kdleak_polls_total{target=\"quiet-box\"}").unwrap();
    assert!(
        polls[0]["value"][1]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            >= 2.0
    );
    let wire = query(&url, "kdleak_poll_wire_bytes{target=\"leaky-box\"}").unwrap();
    assert!(
        wire[0]["value"][1]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            > 0.0
    );
}

#[test]
fn a_single_watch_serves_openmetrics_text() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut watch = kdleak();
    watch
        .env("KDLEAK_SIM_TIME_SCALE", "1200")
        .args(["watch", "sim:watch-leak", "--offline", "--sympath", ""])
        .args(["--interval", "200ms", "--count", "100000", "--quiet"])
        .args(["--metrics", &format!("127.0.0.1:{port}"), "--name", "box1"])
        .args(["--metrics-top-sites", "1"])
        .arg("--out")
        .arg(dir.path().join("series.jsonl"));
    let _watch = spawn(watch);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut page = (String::new(), String::new());
    wait_for("two polls in the metrics", Duration::from_secs(120), || {
        page = get(&url, &[]).unwrap_or_default();
        page.1.contains("kdleak_polls_total{target=\"box1\"} 2")
            || page.1.contains("kdleak_polls_total{target=\"box1\"} 3")
    });
    let (content_type, text) = page;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE kdleak_site_outstanding_bytes gauge"));
    assert!(
        text.contains("kdleak_target_up{target=\"box1\"} 1"),
        "{text}"
    );
    // One site per driver with its own label: leaky.sys has one site, myfault.sys more than one
    // (summed as "other").
    let site_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("kdleak_site_outstanding_bytes{"))
        .collect();
    assert!(
        site_lines
            .iter()
            .any(|l| l.contains(&format!("site=\"{LEAKY_SITE}\""))),
        "{site_lines:?}"
    );
    for driver in ["leaky.sys", "myfault.sys"] {
        let named = site_lines
            .iter()
            .filter(|l| {
                l.contains(&format!("driver=\"{driver}\"")) && !l.contains("site=\"other\"")
            })
            .count();
        assert_eq!(named, 1, "{driver}: {site_lines:?}");
    }
    assert!(get(&format!("http://127.0.0.1:{port}/nothing"), &[]).is_err());
}
