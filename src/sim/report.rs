//! Publishes the simulator's status: a watch channel for in-process observers (tests) and an
//! optional JSON `--state-file`, replaced atomically (write a temporary file, then rename).

use std::io;
use std::path::{Path, PathBuf};

use tokio::sync::watch;

use super::stats::SimStats;

#[derive(Debug)]
pub struct Reporter {
    state_file: Option<PathBuf>,
    tx: watch::Sender<SimStats>,
    last: Option<SimStats>,
}

impl Reporter {
    pub fn new(state_file: Option<PathBuf>) -> (Self, watch::Receiver<SimStats>) {
        let (tx, rx) = watch::channel(SimStats::default());
        (
            Self {
                state_file,
                tx,
                last: None,
            },
            rx,
        )
    }

    /// Publishes `stats` if they changed since the last call.
    pub fn publish(&mut self, stats: SimStats) -> io::Result<()> {
        if self.last.as_ref() == Some(&stats) {
            return Ok(());
        }
        if let Some(path) = &self.state_file {
            write_atomically(path, &serde_json::to_vec_pretty(&stats)?)?;
        }
        self.tx.send_replace(stats.clone());
        self.last = Some(stats);
        Ok(())
    }
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
}
