//! The time series of a watch: one [`PollRecord`] per poll (one JSONL line), and the
//! [`Tracker`] that turns consecutive pulls into deltas, new/freed counts and suspected leaks.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::report::{self, GroupBy};
use crate::verifier::model::{Frame, LeakReport};

/// Bumped whenever a field of a poll record changes meaning or disappears.
pub const SERIES_SCHEMA_VERSION: u32 = 1;

/// One poll: what the target held, what changed since the previous poll, and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollRecord {
    pub schema_version: u32,
    /// 1, 2, 3, … (failed polls count too).
    pub poll: u64,
    /// When the poll's pull happened (RFC 3339 UTC, host clock).
    pub time: String,
    /// Seconds since the watch started (host clock).
    pub elapsed_s: f64,
    /// Whether the pull succeeded; a failed poll has `error` and no sites.
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// KD bytes exchanged for this poll (received + sent), from the session's counters.
    pub wire_bytes: u64,
    pub wire_bytes_in: u64,
    pub wire_bytes_out: u64,
    /// Manipulate requests of this poll.
    pub requests: u64,
    /// Stops this poll made, and the seconds they froze the target (host clock).
    #[serde(default)]
    pub stops: u32,
    #[serde(default)]
    pub frozen_s: f64,
    /// `full` (the whole log ring), `since` (only the records written since the last poll) or
    /// `none` (not read).
    pub log_read: String,
    /// Log records fetched by this poll.
    pub log_records_read: u64,
    /// `VfPoolTracesIndex` at this poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_index: Option<u64>,
    /// Outstanding tracked blocks and their bytes over the watched drivers.
    pub outstanding_count: u64,
    pub outstanding_bytes: u64,
    /// `outstanding_bytes` minus its value at the first poll of this boot.
    pub growth_bytes: i64,
    /// Blocks outstanding now that were not at the previous poll, and the reverse.
    pub new_allocations: u64,
    pub freed_allocations: u64,
    /// Per site and driver, biggest first.
    pub sites: Vec<SiteRecord>,
    /// Sites that grew across `growth_polls` consecutive polls.
    pub suspected_leaks: Vec<SuspectedLeak>,
    /// Set when the series is not continuous before this poll (a reboot, a reconnection, a gap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discontinuity: Option<Discontinuity>,
    /// The bug check the target was stopped in at this poll (README "The unload-time leak").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bugcheck: Option<crate::verifier::BugCheckReport>,
    pub complete: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete_reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRecord {
    pub site: String,
    pub driver: String,
    pub count: u64,
    pub bytes: u64,
    /// Change since the previous poll (0 at the first poll of a boot).
    pub delta_count: i64,
    pub delta_bytes: i64,
    /// Consecutive polls (up to this one) in which `bytes` grew.
    pub growth_streak: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspectedLeak {
    pub site: String,
    pub driver: String,
    pub count: u64,
    pub bytes: u64,
    pub growth_streak: u32,
    /// Bytes gained over the streak.
    pub streak_growth_bytes: u64,
    pub tag: String,
    /// The newest outstanding block's allocation stack, innermost first.
    pub stack: Vec<Frame>,
}

/// Why the series is not continuous before a poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Discontinuity {
    /// `reboot` (the target booted again: counters and the log restarted), `reconnect` (the
    /// connection was opened again), or `gap` (polls failed and were retried).
    pub kind: String,
    pub detail: String,
    /// Seconds without a successful poll.
    pub gap_s: f64,
    /// Failed attempts before this poll succeeded.
    pub failed_attempts: u32,
}

/// What a poll cost, measured by the caller.
#[derive(Debug, Clone, Default)]
pub struct PollCost {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub requests: u64,
    pub log_read: Option<crate::verifier::log::LogRead>,
    /// Stops this poll made (two when the first poll of a boot fetched the kernel's PDB).
    pub stops: u32,
    /// Seconds this poll's stops froze the target.
    pub frozen_s: f64,
}

#[derive(Debug, Clone, Default)]
struct SiteState {
    bytes: u64,
    count: u64,
    streak: u32,
    streak_start_bytes: u64,
}

/// Turns consecutive pulls into poll records.
#[derive(Debug)]
pub struct Tracker {
    group_by: GroupBy,
    /// Consecutive growing polls that make a site a suspected leak.
    growth_polls: u32,
    sites: BTreeMap<(String, String), SiteState>,
    blocks: HashSet<(String, u64)>,
    baseline: Option<u64>,
    prev_attempted: Option<u64>,
    prev_index: Option<u64>,
    polls: u64,
}

impl Tracker {
    pub fn new(group_by: GroupBy, growth_polls: u32) -> Self {
        Self {
            group_by,
            growth_polls: growth_polls.max(1),
            sites: BTreeMap::new(),
            blocks: HashSet::new(),
            baseline: None,
            prev_attempted: None,
            prev_index: None,
            polls: 0,
        }
    }

    /// Forgets the previous boot: deltas, streaks and the growth baseline start again.
    pub fn reset(&mut self) {
        self.sites.clear();
        self.blocks.clear();
        self.baseline = None;
        self.prev_attempted = None;
        self.prev_index = None;
    }

    /// Whether `report` comes from a new boot of the target compared to the previous poll:
    /// `MmVerifierData.AllocationsAttempted` or `VfPoolTracesIndex` went backwards.
    pub fn looks_rebooted(&self, report: &LeakReport) -> bool {
        let attempted = report
            .verifier
            .statistics
            .get("AllocationsAttempted")
            .copied();
        let index = report.verifier.log.as_ref().map(|l| l.index);
        matches!((self.prev_attempted, attempted), (Some(p), Some(a)) if a < p)
            || matches!((self.prev_index, index), (Some(p), Some(i)) if i < p && p - i < 1 << 31)
    }

    /// A failed poll.
    pub fn failed(
        &mut self,
        poll: u64,
        elapsed_s: f64,
        error: String,
        cost: &PollCost,
    ) -> PollRecord {
        self.polls += 1;
        PollRecord {
            schema_version: SERIES_SCHEMA_VERSION,
            poll,
            time: crate::verifier::pull::now_rfc3339(),
            elapsed_s,
            ok: false,
            error: Some(error),
            wire_bytes: cost.bytes_in + cost.bytes_out,
            wire_bytes_in: cost.bytes_in,
            wire_bytes_out: cost.bytes_out,
            requests: cost.requests,
            stops: cost.stops,
            frozen_s: cost.frozen_s,
            log_read: "none".into(),
            log_records_read: 0,
            log_index: None,
            outstanding_count: 0,
            outstanding_bytes: 0,
            growth_bytes: 0,
            new_allocations: 0,
            freed_allocations: 0,
            sites: Vec::new(),
            suspected_leaks: Vec::new(),
            discontinuity: None,
            bugcheck: None,
            complete: false,
            incomplete_reasons: Vec::new(),
        }
    }

    /// The record of a successful poll; updates the state for the next.
    pub fn record(
        &mut self,
        poll: u64,
        elapsed_s: f64,
        report: &LeakReport,
        cost: &PollCost,
        discontinuity: Option<Discontinuity>,
    ) -> PollRecord {
        self.polls += 1;
        let first_of_boot = self.baseline.is_none();
        let sites = report::sites(report, self.group_by);
        let blocks: HashSet<(String, u64)> = report
            .drivers
            .iter()
            .flat_map(|d| d.allocations.iter().map(|a| (d.name.clone(), a.address)))
            .collect();
        let (new_allocations, freed_allocations) = if first_of_boot {
            (0, 0)
        } else {
            (
                blocks.difference(&self.blocks).count() as u64,
                self.blocks.difference(&blocks).count() as u64,
            )
        };
        let outstanding_bytes: u64 = sites.iter().map(|s| s.bytes).sum();
        let outstanding_count: u64 = sites.iter().map(|s| s.count).sum();
        let baseline = *self.baseline.get_or_insert(outstanding_bytes);

        let mut next: BTreeMap<(String, String), SiteState> = BTreeMap::new();
        let mut records = Vec::new();
        let mut suspected = Vec::new();
        for site in &sites {
            let key = (site.site.clone(), site.driver.clone());
            let prev = self.sites.get(&key);
            let (delta_count, delta_bytes) = match prev {
                Some(p) => (
                    site.count as i64 - p.count as i64,
                    site.bytes as i64 - p.bytes as i64,
                ),
                None if first_of_boot => (0, 0),
                None => (site.count as i64, site.bytes as i64),
            };
            let (streak, streak_start_bytes) = match prev {
                _ if delta_bytes <= 0 => (0, site.bytes),
                Some(p) if p.streak > 0 => (p.streak + 1, p.streak_start_bytes),
                Some(p) => (1, p.bytes),
                None => (1, 0),
            };
            next.insert(
                key,
                SiteState {
                    bytes: site.bytes,
                    count: site.count,
                    streak,
                    streak_start_bytes,
                },
            );
            records.push(SiteRecord {
                site: site.site.clone(),
                driver: site.driver.clone(),
                count: site.count,
                bytes: site.bytes,
                delta_count,
                delta_bytes,
                growth_streak: streak,
            });
            if streak >= self.growth_polls {
                let newest = report
                    .drivers
                    .iter()
                    .filter(|d| d.name == site.driver)
                    .flat_map(|d| d.allocations.iter())
                    .filter(|a| self.group_by.site_of(a) == site.site)
                    .max_by_key(|a| (!a.stack.is_empty(), a.address));
                suspected.push(SuspectedLeak {
                    site: site.site.clone(),
                    driver: site.driver.clone(),
                    count: site.count,
                    bytes: site.bytes,
                    growth_streak: streak,
                    streak_growth_bytes: site.bytes.saturating_sub(streak_start_bytes),
                    tag: newest.map(|a| a.tag.clone()).unwrap_or_default(),
                    stack: newest.map(|a| a.stack.clone()).unwrap_or_default(),
                });
            }
        }
        self.sites = next;
        self.blocks = blocks;
        self.prev_attempted = report
            .verifier
            .statistics
            .get("AllocationsAttempted")
            .copied();
        self.prev_index = report.verifier.log.as_ref().map(|l| l.index);
        let (log_read, log_records_read) = match cost.log_read {
            Some(crate::verifier::log::LogRead::Full { records }) => ("full", records),
            Some(crate::verifier::log::LogRead::Since { new_records }) => ("since", new_records),
            None => ("none", 0),
        };
        PollRecord {
            schema_version: SERIES_SCHEMA_VERSION,
            poll,
            time: report.target.time.clone(),
            elapsed_s,
            ok: true,
            error: None,
            wire_bytes: cost.bytes_in + cost.bytes_out,
            wire_bytes_in: cost.bytes_in,
            wire_bytes_out: cost.bytes_out,
            requests: cost.requests,
            stops: cost.stops,
            frozen_s: cost.frozen_s,
            log_read: log_read.into(),
            log_records_read,
            log_index: report.verifier.log.as_ref().map(|l| l.index),
            outstanding_count,
            outstanding_bytes,
            growth_bytes: outstanding_bytes as i64 - baseline as i64,
            new_allocations,
            freed_allocations,
            sites: records,
            suspected_leaks: suspected,
            discontinuity,
            bugcheck: report.bugcheck.clone(),
            complete: report.complete,
            incomplete_reasons: report.incomplete_reasons.clone(),
        }
    }
}

/// One line of the live terminal view.
pub fn live_line(record: &PollRecord) -> String {
    if !record.ok {
        return format!(
            "poll {:>4}  {:>7.1}s  FAILED: {}",
            record.poll,
            record.elapsed_s,
            record.error.as_deref().unwrap_or("?")
        );
    }
    let mut line = format!(
        "poll {:>4}  {:>7.1}s  wire {:>9}  outstanding {:>6} blocks {:>10} ({:+})  new {} freed {}",
        record.poll,
        record.elapsed_s,
        human_bytes(record.wire_bytes),
        record.outstanding_count,
        human_bytes(record.outstanding_bytes),
        record.growth_bytes,
        record.new_allocations,
        record.freed_allocations,
    );
    if let Some(d) = &record.discontinuity {
        line.push_str(&format!("  [{}: {}]", d.kind, d.detail));
    }
    for leak in &record.suspected_leaks {
        line.push_str(&format!(
            "\n      LEAK? {} ({}) {} in {} blocks, grew {} polls in a row",
            leak.site,
            leak.driver,
            human_bytes(leak.bytes),
            leak.count,
            leak.growth_streak
        ));
    }
    line
}

/// `512 B`, `4.0 KiB`, `1.2 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verifier::model::{
        Allocation, DriverCounters, DriverReport, TargetSummary, VerifierState,
    };

    fn report(leaky_blocks: u64, attempted: u64) -> LeakReport {
        let block = |i: u64, caller: &str| Allocation {
            address: 0x1000 * (i + 1),
            size: 0x1010,
            tag: "Leak".into(),
            caller: 0,
            caller_symbol: caller.into(),
            pool: None,
            stack: vec![Frame {
                address: 1,
                symbol: caller.into(),
            }],
            requested_size: None,
            thread: None,
            history: Vec::new(),
        };
        let driver = |name: &str, allocations| DriverReport {
            name: name.into(),
            entry: 0,
            state: "Loaded".into(),
            target_driver: None,
            loads: None,
            unloads: None,
            image_base: None,
            image_size: None,
            counters: DriverCounters::default(),
            allocations,
        };
        LeakReport {
            schema_version: 1,
            target: TargetSummary {
                build: 19041,
                kernel_base: 0,
                time: String::new(),
                connection: String::new(),
                symbol_sources: Vec::new(),
                stops: Vec::new(),
                outside_s: None,
            },
            verifier: VerifierState {
                level: 8,
                flags: Vec::new(),
                option_flags: None,
                pool_tracking: true,
                statistics: [("AllocationsAttempted".to_string(), attempted)].into(),
                log: None,
            },
            drivers: vec![
                driver(
                    "leaky.sys",
                    (0..leaky_blocks).map(|i| block(i, "leaky!A")).collect(),
                ),
                driver("steady.sys", vec![block(100, "steady!B")]),
            ],
            sites: Vec::new(),
            complete: true,
            incomplete_reasons: Vec::new(),
            symbols_skipped: Vec::new(),
            bugcheck: None,
            unloaded_modules: Vec::new(),
        }
    }

    #[test]
    fn a_site_growing_in_three_polls_in_a_row_is_suspected() {
        let mut tracker = Tracker::new(GroupBy::Caller, 3);
        let cost = PollCost::default();
        let mut last = None;
        for (poll, blocks) in [1u64, 2, 3, 3, 4, 5, 6].into_iter().enumerate() {
            let r = tracker.record(
                poll as u64 + 1,
                0.0,
                &report(blocks, 10 + blocks),
                &cost,
                None,
            );
            last = Some(r);
            let r = last.as_ref().unwrap();
            let suspected = !r.suspected_leaks.is_empty();
            // Streak: polls 2, 3 grow; 4 is flat (reset); 5, 6, 7 grow → flagged at 7 only.
            assert_eq!(suspected, poll == 6, "poll {}", poll + 1);
        }
        let r = last.unwrap();
        assert_eq!(r.suspected_leaks.len(), 1);
        assert_eq!(r.suspected_leaks[0].driver, "leaky.sys");
        assert_eq!(r.suspected_leaks[0].streak_growth_bytes, 3 * 0x1010);
        assert_eq!(r.growth_bytes, 5 * 0x1010);
        assert_eq!((r.new_allocations, r.freed_allocations), (1, 0));
        // Counters going backwards: a new boot.
        assert!(tracker.looks_rebooted(&report(1, 5)));
    }
}
