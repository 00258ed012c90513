//! Publishes the simulator's status: a watch channel for in-process observers (tests) and an
//! optional JSON `--state-file`, replaced atomically (write a temporary file, then rename).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::stats::SimStats;

/// How long counter-only changes may wait before the state file shows them. Writing the file
/// on every request (a create and a rename) cost the KDNET simulator half its request rate.
const COUNTER_WRITE_DELAY: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub struct Reporter {
    state_file: Option<PathBuf>,
    tx: watch::Sender<SimStats>,
    last: Option<SimStats>,
    /// What the state file holds, and when it was written.
    written: Option<(SimStats, Instant)>,
    counter_delay: Duration,
}

impl Reporter {
    pub fn new(state_file: Option<PathBuf>) -> (Self, watch::Receiver<SimStats>) {
        let (tx, rx) = watch::channel(SimStats::default());
        (
            Self {
                state_file,
                tx,
                last: None,
                written: None,
                counter_delay: COUNTER_WRITE_DELAY,
            },
            rx,
        )
    }

    /// Publishes `stats` if they changed since the last call. The state file follows at once
    /// when the headline changed (state, break-ins, continues, connections, reboots, rejects);
    /// counter-only changes are written by [`Reporter::flush`] at [`Reporter::flush_due`].
    pub fn publish(&mut self, stats: SimStats) -> io::Result<()> {
        if self.last.as_ref() == Some(&stats) {
            return Ok(());
        }
        self.tx.send_replace(stats.clone());
        self.last = Some(stats);
        let urgent = match &self.written {
            None => true,
            Some((written, at)) => {
                !same_headline(written, self.last.as_ref().unwrap_or(written))
                    || at.elapsed() >= self.counter_delay
            }
        };
        if urgent {
            self.flush()?;
        }
        Ok(())
    }

    /// When the state file is behind and must be brought up to date (`None`: it is not).
    pub fn flush_due(&self) -> Option<Instant> {
        self.state_file.as_ref()?;
        match (&self.last, &self.written) {
            (Some(last), Some((written, at))) if last != written => Some(*at + self.counter_delay),
            (Some(_), None) => Some(Instant::now()),
            _ => None,
        }
    }

    /// Writes the latest stats to the state file, if it is behind.
    pub fn flush(&mut self) -> io::Result<()> {
        let (Some(path), Some(last)) = (&self.state_file, &self.last) else {
            return Ok(());
        };
        if self.written.as_ref().is_some_and(|(w, _)| w == last) {
            return Ok(());
        }
        write_atomically(path, &serde_json::to_vec_pretty(last)?)?;
        self.written = Some((last.clone(), Instant::now()));
        Ok(())
    }
}

/// Whether two snapshots agree on everything a watcher waits for (not on request counters).
fn same_headline(a: &SimStats, b: &SimStats) -> bool {
    a.state == b.state
        && a.break_ins == b.break_ins
        && a.continues == b.continues
        && a.handshakes == b.handshakes
        && a.connections == b.connections
        && a.reboots == b.reboots
        && a.stalled == b.stalled
        && a.rejected == b.rejected
}

/// Writes `bytes` next to `path` and renames the result over it, so readers never see a
/// half-written file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    let temp = path.with_file_name(name);
    std::fs::write(&temp, bytes)?;
    std::fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimState;

    #[test]
    fn state_file_is_json_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let (mut reporter, rx) = Reporter::new(Some(path.clone()));
        let mut stats = SimStats {
            state: SimState::Stopped,
            break_ins: 1,
            ..SimStats::default()
        };
        reporter.publish(stats.clone()).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["state"], "stopped");
        stats.state = SimState::Running;
        reporter.publish(stats).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["state"], "running");
        assert_eq!(rx.borrow().state, SimState::Running);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn counter_changes_wait_for_the_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let (mut reporter, rx) = Reporter::new(Some(path.clone()));
        reporter.counter_delay = Duration::from_secs(3600);
        let mut stats = SimStats::default();
        reporter.publish(stats.clone()).unwrap();
        assert_eq!(reporter.flush_due(), None);
        stats.unsupported = 7;
        reporter.publish(stats.clone()).unwrap();
        assert_eq!(rx.borrow().unsupported, 7, "observers see every change");
        let read = || -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
        };
        assert_eq!(
            read()["unsupported"],
            0,
            "a counter alone does not rewrite the file"
        );
        assert!(reporter.flush_due().is_some());
        reporter.flush().unwrap();
        assert_eq!(read()["unsupported"], 7);
        assert_eq!(reporter.flush_due(), None);
        stats.continues = 1;
        reporter.publish(stats).unwrap();
        assert_eq!(
            read()["continues"],
            1,
            "headline changes are written at once"
        );
    }
}
