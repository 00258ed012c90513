//! What the simulated target counts, and its run state, in a serialisable form.

use std::collections::BTreeMap;
use std::fmt;

use kdproto::link::LinkStats;
use serde::{Deserialize, Serialize};

use crate::sim::wire::faults::FaultCounts;

/// Whether the simulated kernel runs or sits in the debugger's stop loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SimState {
    #[default]
    Running,
    Stopped,
}

impl fmt::Display for SimState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
        })
    }
}

/// Counters of one simulator run. Also the body of `--state-file` (with `state` set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    pub state: SimState,
    /// Break-ins that stopped a running target.
    pub break_ins: u64,
    /// Break-ins that arrived while already stopped (ignored, as Windows does).
    pub break_ins_while_stopped: u64,
    /// STATE_CHANGE64 packets queued, re-sends included.
    pub state_changes: u64,
    /// State changes re-sent after a RESET or RESEND (kd.md §2.6).
    pub state_change_resends: u64,
    pub continues: u64,
    /// Microseconds the target has spent stopped, over every stop that has ended (by a Continue
    /// or a reboot), on the simulator's own clock: what a host's stops cost the machine.
    #[serde(default)]
    pub stopped_us: u64,
    /// Manipulate requests by API name.
    pub requests: BTreeMap<String, u64>,
    /// Requests answered with the unsupported-API echo.
    pub unsupported: u64,
    /// Data packets the stop loop did not use (while running, or not STATE_MANIPULATE).
    pub ignored_packets: u64,
    /// Everything rejected, KD link and KDNET layer together.
    pub rejected: u64,
    /// `rejected` split by reason ("kd: BadChecksum", "kdnet: AuthenticationFailed", …).
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// KDNET: pokes sent, handshakes completed.
    pub pokes: u64,
    pub handshakes: u64,
    /// KDCOM: stream clients served.
    pub connections: u64,
    /// Reboots injected by `--faults reboot_after=`.
    pub reboots: u64,
    /// Bug checks the target made on its own (`--faults bugcheck_after_continues=`).
    #[serde(default)]
    pub bug_checks: u64,
    /// Whether `--faults stall_after=` has made the target stop answering.
    pub stalled: bool,
    /// What the fault injector did to the traffic.
    pub faults: FaultCounts,
    /// Memory reads left unanswered by `--quirks unanswered_reads_over`.
    #[serde(default)]
    pub unanswered_reads: u64,
    /// The Dr7 of the last Continue2 (kd.md §3.6), to check what a host resumes with.
    #[serde(default)]
    pub last_continue_dr7: Option<u64>,
    pub link: LinkStats,
}

impl SimStats {
    /// Counts one rejected input under `reason`.
    pub fn reject(&mut self, reason: impl Into<String>) {
        self.rejected += 1;
        *self.rejected_by_reason.entry(reason.into()).or_default() += 1;
    }

    pub fn count_request(&mut self, api: impl Into<String>) {
        *self.requests.entry(api.into()).or_default() += 1;
    }

    /// Requests of all APIs.
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }
}

/// A short name for a rejection: the error's variant name, without its values.
pub fn reason_of(layer: &str, error: &kdproto::Error) -> String {
    let debug = format!("{error:?}");
    let name = debug
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or("Unknown");
    format!("{layer}: {name}")
}

impl fmt::Display for SimStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "state: {}", self.state)?;
        writeln!(
            f,
            "break-ins: {} (+{} while stopped), state changes: {} ({} re-sent), continues: {}, \
             stopped {:.3} s",
            self.break_ins,
            self.break_ins_while_stopped,
            self.state_changes,
            self.state_change_resends,
            self.continues,
            self.stopped_us as f64 / 1e6
        )?;
        if self.pokes > 0 || self.handshakes > 0 {
            writeln!(
                f,
                "kdnet: {} pokes, {} handshakes",
                self.pokes, self.handshakes
            )?;
        }
        if self.connections > 0 {
            writeln!(f, "kdcom: {} connections", self.connections)?;
        }
        if self.faults.planned > 0 {
            writeln!(f, "faults: {}", self.faults)?;
        }
        if self.unanswered_reads > 0 {
            writeln!(f, "unanswered reads (quirk): {}", self.unanswered_reads)?;
        }
        if self.reboots > 0 || self.stalled {
            writeln!(f, "reboots: {}, stalled: {}", self.reboots, self.stalled)?;
        }
        writeln!(
            f,
            "requests: {} ({} unsupported)",
            self.total_requests(),
            self.unsupported
        )?;
        for (api, n) in &self.requests {
            writeln!(f, "  {api}: {n}")?;
        }
        writeln!(f, "rejected: {}", self.rejected)?;
        for (reason, n) in &self.rejected_by_reason {
            writeln!(f, "  {reason}: {n}")?;
        }
        let l = &self.link;
        write!(
            f,
            "link: {} data in, {} acks sent, {} acks in, {} retransmits, {} resends in/{} out, \
             {} resets in/{} out, {} duplicates",
            l.data_received,
            l.acks_sent,
            l.acks_received,
            l.retransmits,
            l.resends_received,
            l.resends_sent,
            l.resets_received,
            l.resets_sent,
            l.duplicates
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_drop_values() {
        assert_eq!(
            reason_of("kd", &kdproto::Error::BadTrailer(3)),
            "kd: BadTrailer"
        );
        assert_eq!(
            reason_of("kdnet", &kdproto::Error::AuthenticationFailed),
            "kdnet: AuthenticationFailed"
        );
    }

    #[test]
    fn state_serialises_lowercase() {
        let stats = SimStats {
            state: SimState::Stopped,
            ..SimStats::default()
        };
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["state"], "stopped");
        assert_eq!(json["break_ins"], 0);
    }
}
