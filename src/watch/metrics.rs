//! `watch --metrics ADDR`: the watch's state as OpenMetrics text (prometheus-client's encoder)
//! over a small HTTP server (hyper), for a Prometheus server to scrape.
//!
//! The state is the last poll of each target, kept by [`Metrics`] (an [`Observer`] of the
//! watches) and encoded on each scrape by a [`Collector`]: a site that disappears from a target
//! disappears from the page, so nothing stale accumulates. Labels are bounded: per target and
//! driver, the `top_sites` biggest sites (suspected leaks first) get their own `site` label, the
//! rest are summed as `site="other"`, so a target with thousands of sites still exposes at most
//! `top_sites + 1` series per driver and metric.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tracing::{debug, warn};

use super::series::PollRecord;
use super::{Observer, PollEvent};

/// Sites per driver with their own label when nothing else is said.
pub const DEFAULT_TOP_SITES: usize = 10;

/// The `site` label of the sites beyond the top N of a driver.
pub const OTHER_SITE: &str = "other";

/// One site's series (or the sum of the sites beyond the top N).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SiteSample {
    pub driver: String,
    pub site: String,
    pub bytes: u64,
    pub blocks: u64,
    pub delta_bytes: i64,
    pub growth_streak: u32,
    pub suspected: bool,
}

/// What is known of one target.
#[derive(Debug, Clone, Default)]
struct TargetState {
    polls: u64,
    failures: u64,
    /// Whether the last attempt succeeded.
    up: bool,
    last_success_unix_s: Option<f64>,
    poll_s: f64,
    requests: u64,
    wire_bytes: u64,
    requests_total: u64,
    wire_bytes_total: u64,
    outstanding_bytes: u64,
    outstanding_blocks: u64,
    growth_bytes: i64,
    suspected_leaks: u64,
    reboots: u64,
    sites: Vec<SiteSample>,
}

/// The watches' state for the metrics page; an [`Observer`] of every watch.
#[derive(Debug)]
pub struct Metrics {
    top_sites: usize,
    targets: Mutex<BTreeMap<String, TargetState>>,
}

impl Metrics {
    pub fn new(top_sites: usize) -> Self {
        Self {
            top_sites,
            targets: Mutex::new(BTreeMap::new()),
        }
    }

    /// Makes a target known before its first poll (`kdleak_target_up` 0).
    pub fn declare(&self, target: &str) {
        self.lock().entry(target.to_string()).or_default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, TargetState>> {
        self.targets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes in one poll of `target` (a failed attempt when `retrying`).
    pub fn observe(&self, target: &str, record: &PollRecord, poll_s: f64, retrying: bool) {
        let mut targets = self.lock();
        let state = targets.entry(target.to_string()).or_default();
        state.poll_s = poll_s;
        state.requests = record.requests;
        state.wire_bytes = record.wire_bytes;
        state.requests_total += record.requests;
        state.wire_bytes_total += record.wire_bytes;
        if !retrying {
            state.polls += 1;
        }
        if !record.ok {
            // Every failed attempt comes once: retried ones with `retrying`, the one that ends
            // the watch as the poll's record.
            state.failures += 1;
            state.up = false;
            return;
        }
        state.up = true;
        state.last_success_unix_s = Some(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        state.outstanding_bytes = record.outstanding_bytes;
        state.outstanding_blocks = record.outstanding_count;
        state.growth_bytes = record.growth_bytes;
        state.suspected_leaks = record.suspected_leaks.len() as u64;
        if record
            .discontinuity
            .as_ref()
            .is_some_and(|d| d.kind == "reboot")
        {
            state.reboots += 1;
        }
        state.sites = bounded_sites(record, self.top_sites);
    }

    /// The page a scrape gets: OpenMetrics text, `# EOF` last.
    pub fn encode(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Arc::clone(self)));
        let mut text = String::new();
        // Writing into a String cannot fail; the collector's own errors are fmt errors too.
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            warn!(%error, "cannot encode the metrics");
        }
        text
    }

    /// Series on the page (lines that are neither comments nor empty), for the label bound.
    pub fn series_count(self: &Arc<Self>) -> usize {
        self.encode()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count()
    }
}

impl Observer for Metrics {
    fn poll(&self, event: &PollEvent<'_>) {
        self.observe(event.target, event.record, event.poll_s, event.retrying);
    }
}

/// The sites of a record as labelled series: per driver, the `top` biggest (suspected leaks
/// first, then by bytes) and one `other` series summing the rest.
pub fn bounded_sites(record: &PollRecord, top: usize) -> Vec<SiteSample> {
    let suspected: std::collections::HashSet<(&str, &str)> = record
        .suspected_leaks
        .iter()
        .map(|l| (l.driver.as_str(), l.site.as_str()))
        .collect();
    let mut by_driver: BTreeMap<&str, Vec<SiteSample>> = BTreeMap::new();
    for site in &record.sites {
        by_driver
            .entry(site.driver.as_str())
            .or_default()
            .push(SiteSample {
                driver: site.driver.clone(),
                site: site.site.clone(),
                bytes: site.bytes,
                blocks: site.count,
                delta_bytes: site.delta_bytes,
                growth_streak: site.growth_streak,
                suspected: suspected.contains(&(site.driver.as_str(), site.site.as_str())),
            });
    }
    let mut out = Vec::new();
    for (driver, mut sites) in by_driver {
        sites.sort_by(|a, b| {
            b.suspected
                .cmp(&a.suspected)
                .then(b.bytes.cmp(&a.bytes))
                .then(a.site.cmp(&b.site))
        });
        // A site really named `other` must not merge silently with the rest: it counts as rest.
        let (mut kept, mut rest): (Vec<_>, Vec<_>) =
            sites.into_iter().partition(|s| s.site != OTHER_SITE);
        if kept.len() > top {
            rest.extend(kept.split_off(top));
        }
        out.extend(kept);
        if !rest.is_empty() {
            out.push(rest.iter().fold(
                SiteSample {
                    driver: driver.to_string(),
                    site: OTHER_SITE.to_string(),
                    ..SiteSample::default()
                },
                |mut sum, s| {
                    sum.bytes += s.bytes;
                    sum.blocks += s.blocks;
                    sum.delta_bytes += s.delta_bytes;
                    sum.growth_streak = sum.growth_streak.max(s.growth_streak);
                    sum.suspected |= s.suspected;
                    sum
                },
            ));
        }
    }
    out
}

type Labels = Vec<(&'static str, String)>;

/// Encodes one metric family: its descriptor, then one sample per label set.
fn family<V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels, V)>,
) -> Result<(), std::fmt::Error>
where
    V: prometheus_client::encoding::EncodeGaugeValue
        + prometheus_client::encoding::EncodeCounterValue,
{
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let mut sample = metric.encode_family(&labels)?;
        match kind {
            MetricType::Counter => {
                sample.encode_counter::<NoLabelSet, V, f64>(&value, None)?;
            }
            _ => sample.encode_gauge(&value)?,
        }
    }
    Ok(())
}

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let targets = self.lock().clone();
        let t = |name: &String| -> Labels { vec![("target", name.clone())] };
        let per_target = |f: &dyn Fn(&TargetState) -> f64| -> Vec<(Labels, f64)> {
            targets.iter().map(|(n, s)| (t(n), f(s))).collect()
        };
        let gauge = MetricType::Gauge;
        let counter = MetricType::Counter;
        let e = &mut encoder;
        family(
            e,
            "kdleak_target_up",
            "1 when the target's last poll attempt succeeded",
            gauge,
            per_target(&|s| f64::from(u8::from(s.up))),
        )?;
        family(
            e,
            "kdleak_polls",
            "Polls made (failed ones too)",
            counter,
            per_target(&|s| s.polls as f64),
        )?;
        family(
            e,
            "kdleak_poll_failures",
            "Poll attempts that failed (each retry counts)",
            counter,
            per_target(&|s| s.failures as f64),
        )?;
        family(
            e,
            "kdleak_reboots",
            "Reboots of the target seen between polls",
            counter,
            per_target(&|s| s.reboots as f64),
        )?;
        let succeeded: Vec<(Labels, f64)> = targets
            .iter()
            .filter_map(|(n, s)| s.last_success_unix_s.map(|v| (t(n), v)))
            .collect();
        family(
            e,
            "kdleak_last_success_timestamp_seconds",
            "Unix time of the target's last successful poll",
            gauge,
            succeeded,
        )?;
        family(
            e,
            "kdleak_poll_duration_seconds",
            "Seconds the last poll attempt took (connect, stops, reads, symbolization)",
            gauge,
            per_target(&|s| s.poll_s),
        )?;
        family(
            e,
            "kdleak_poll_requests",
            "KD requests of the last poll",
            gauge,
            per_target(&|s| s.requests as f64),
        )?;
        family(
            e,
            "kdleak_poll_wire_bytes",
            "KD bytes exchanged by the last poll (received + sent)",
            gauge,
            per_target(&|s| s.wire_bytes as f64),
        )?;
        family(
            e,
            "kdleak_requests",
            "KD requests over all polls",
            counter,
            per_target(&|s| s.requests_total as f64),
        )?;
        family(
            e,
            "kdleak_wire_bytes",
            "KD bytes exchanged over all polls",
            counter,
            per_target(&|s| s.wire_bytes_total as f64),
        )?;
        family(
            e,
            "kdleak_outstanding_bytes",
            "Outstanding tracked pool bytes over the watched drivers at the last good poll",
            gauge,
            per_target(&|s| s.outstanding_bytes as f64),
        )?;
        family(
            e,
            "kdleak_outstanding_blocks",
            "Outstanding tracked pool blocks over the watched drivers at the last good poll",
            gauge,
            per_target(&|s| s.outstanding_blocks as f64),
        )?;
        family(
            e,
            "kdleak_growth_bytes",
            "Outstanding bytes minus their value at the first poll of this boot",
            gauge,
            per_target(&|s| s.growth_bytes as f64),
        )?;
        family(
            e,
            "kdleak_suspected_leaks",
            "Sites that grew in growth_polls consecutive polls",
            gauge,
            per_target(&|s| s.suspected_leaks as f64),
        )?;
        let sites: Vec<(Labels, &SiteSample)> = targets
            .iter()
            .flat_map(|(n, s)| {
                s.sites.iter().map(move |site| {
                    (
                        vec![
                            ("target", n.clone()),
                            ("driver", site.driver.clone()),
                            ("site", site.site.clone()),
                        ],
                        site,
                    )
                })
            })
            .collect();
        let per_site = |f: &dyn Fn(&SiteSample) -> f64| -> Vec<(Labels, f64)> {
            sites.iter().map(|(l, s)| (l.clone(), f(s))).collect()
        };
        family(
            e,
            "kdleak_site_outstanding_bytes",
            "Outstanding bytes of an allocation site (the top N per driver; the rest as site=\"other\")",
            gauge,
            per_site(&|s| s.bytes as f64),
        )?;
        family(
            e,
            "kdleak_site_outstanding_blocks",
            "Outstanding blocks of an allocation site",
            gauge,
            per_site(&|s| s.blocks as f64),
        )?;
        family(
            e,
            "kdleak_site_delta_bytes",
            "Change of the site's outstanding bytes since the previous poll",
            gauge,
            per_site(&|s| s.delta_bytes as f64),
        )?;
        family(
            e,
            "kdleak_site_growth_streak",
            "Consecutive polls (up to the last) in which the site's outstanding bytes grew",
            gauge,
            per_site(&|s| f64::from(s.growth_streak)),
        )?;
        family(
            e,
            "kdleak_site_suspected_leak",
            "1 when the site grew in growth_polls consecutive polls",
            gauge,
            per_site(&|s| f64::from(u8::from(s.suspected))),
        )?;
        Ok(())
    }
}

/// The content type of OpenMetrics text (what Prometheus asks for first).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the metrics at `/metrics` (and `/`) on `addr` until the task is dropped; returns the
/// bound address (port 0 picks a free one).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "metrics: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let metrics = Arc::clone(&metrics);
                    async move {
                        let response = match request.uri().path() {
                            "/metrics" | "/" => Response::builder()
                                .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE)
                                .body(Full::new(Bytes::from(metrics.encode()))),
                            _ => Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(b"kdleak: try /metrics\n"))),
                        };
                        response
                    }
                });
                if let Err(error) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(%error, %peer, "metrics connection ended");
                }
            });
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::series::{SiteRecord, SuspectedLeak};

    fn record(sites_per_driver: u64) -> PollRecord {
        let mut sites = Vec::new();
        for driver in ["a.sys", "b.sys"] {
            for i in 0..sites_per_driver {
                sites.push(SiteRecord {
                    site: format!("{driver}!F{i}+0x{i:x}"),
                    driver: driver.into(),
                    count: i + 1,
                    bytes: (i + 1) * 16,
                    delta_count: 1,
                    delta_bytes: 16,
                    growth_streak: 2,
                });
            }
        }
        let mut tracker = crate::watch::Tracker::new(crate::report::GroupBy::Caller, 3);
        let mut r = tracker.failed(1, 0.0, String::new(), &Default::default());
        r.ok = true;
        r.error = None;
        r.outstanding_bytes = sites.iter().map(|s| s.bytes).sum();
        r.sites = sites;
        r.suspected_leaks = vec![SuspectedLeak {
            site: "a.sys!F0+0x0".into(),
            driver: "a.sys".into(),
            count: 1,
            bytes: 16,
            growth_streak: 3,
            streak_growth_bytes: 16,
            tag: "Tag1".into(),
            stack: Vec::new(),
        }];
        r
    }

    #[test]
    fn hundreds_of_sites_give_at_most_top_n_plus_one_series_per_driver() {
        let metrics = Arc::new(Metrics::new(10));
        metrics.observe("lab1", &record(5), 0.1, false);
        let small = metrics.series_count();
        metrics.observe("lab1", &record(500), 0.1, false);
        let text = metrics.encode();
        let bytes_lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("kdleak_site_outstanding_bytes{"))
            .collect();
        // 2 drivers × (10 named + other).
        assert_eq!(bytes_lines.len(), 22, "{bytes_lines:#?}");
        // Five site metrics; nothing else depends on the site count.
        assert_eq!(metrics.series_count(), small + 5 * (22 - 10));
        // The rest is summed, not dropped: the per-driver sum equals the record's.
        let sum: f64 = bytes_lines
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        assert_eq!(sum as u64, record(500).outstanding_bytes);
        // The suspected site keeps its own series though it is the smallest of a.sys.
        assert!(text.contains(
            "kdleak_site_suspected_leak{target=\"lab1\",driver=\"a.sys\",site=\"a.sys!F0+0x0\"} 1"
        ));
        assert!(text.contains("site=\"other\""));
        assert!(text.ends_with("# EOF\n"));
        // A site that is gone is gone from the page.
        metrics.observe("lab1", &record(1), 0.1, false);
        assert!(!metrics.encode().contains("F400"));
    }

    #[test]
    fn failures_count_each_attempt_once_and_mark_the_target_down() {
        let metrics = Arc::new(Metrics::new(3));
        metrics.observe("t", &record(2), 0.2, false);
        let mut failed = record(0);
        failed.ok = false;
        // Two attempts retried, then the one that gave up (the poll's record).
        metrics.observe("t", &failed, 1.0, true);
        metrics.observe("t", &failed, 1.0, true);
        metrics.observe("t", &failed, 1.0, false);
        let text = metrics.encode();
        assert!(text.contains("kdleak_target_up{target=\"t\"} 0"), "{text}");
        assert!(
            text.contains("kdleak_poll_failures_total{target=\"t\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("kdleak_polls_total{target=\"t\"} 2"),
            "{text}"
        );
        assert!(text.contains("kdleak_last_success_timestamp_seconds{target=\"t\"}"));
    }
}
