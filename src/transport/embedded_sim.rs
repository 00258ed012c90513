//! `sim` / `sim:SCENARIO`: the simulated target of [`crate::sim`] started in-process, serving
//! KDCOM on a private Unix socket, so the host runs over a real transport.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::{stream, Transport, TransportError};
use crate::sim::wire::kdcom::{self, KdcomConfig};
use crate::sim::world::scenario::{Scenario, ScenarioError};
use crate::sim::{Machine, Reporter, SimStats};

/// The scenario `sim` serves when none is named: the reference session of verifier.md §1.
pub const DEFAULT_SCENARIO: &str = "win7-myfault";

/// A running in-process simulated target. Stop it with [`EmbeddedSim::shutdown`].
pub struct EmbeddedSim {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<SimStats>>,
    status: watch::Receiver<SimStats>,
    dir: PathBuf,
    symbol_dir: PathBuf,
}

impl EmbeddedSim {
    /// Where the simulated kernel's and drivers' PDBs are (the scenario's fixture directory),
    /// for the host's symbol path.
    pub fn symbol_dir(&self) -> &std::path::Path {
        &self.symbol_dir
    }

    /// The target's latest counters and run state.
    pub fn stats(&self) -> SimStats {
        self.status.borrow().clone()
    }

    /// Stops the target and removes its socket; returns its final counters.
    pub async fn shutdown(mut self) -> io::Result<SimStats> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = (&mut self.task)
            .await
            .map_err(|e| io::Error::other(format!("simulated target task failed: {e}")))?;
        let _ = std::fs::remove_dir_all(&self.dir);
        result
    }
}

impl Drop for EmbeddedSim {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The machine for a scenario name or file, and the directory holding its PDBs.
fn machine_for(name: &str) -> Result<(Machine, PathBuf), TransportError> {
    let unusable =
        |e: ScenarioError| TransportError::Unsupported(format!("cannot load scenario {name}: {e}"));
    let scenario = Scenario::resolve(name).map_err(unusable)?;
    let mut machine = Machine::for_scenario(name).map_err(unusable)?;
    // Tests of watch mode compress the timeline's target time (`kdleak sim --time-scale`).
    if let Some(scale) = std::env::var("KDLEAK_SIM_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
    {
        machine.set_time_scale(scale);
    }
    Ok((machine, scenario.symbol_dir().map_err(unusable)?))
}

/// Starts the simulated target serving `scenario` (default [`DEFAULT_SCENARIO`]) and connects
/// to it.
pub async fn start(
    scenario: Option<&str>,
    timeout: Duration,
) -> Result<(Transport, EmbeddedSim), TransportError> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = scenario.unwrap_or(DEFAULT_SCENARIO);
    let (machine, symbol_dir) = machine_for(name)?;
    let dir = std::env::temp_dir().join(format!(
        "kdleak-sim-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|source| TransportError::Open {
        what: format!("cannot create {}", dir.display()),
        hint: String::new(),
        source,
    })?;
    let path = dir.join("kd.sock");
    let config = KdcomConfig {
        unix: Some(path.clone()),
        ..KdcomConfig::default()
    };
    let (mut reporter, status) = Reporter::new(None);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        kdcom::run(config, machine, &mut reporter, async {
            let _ = stopped.await;
        })
        .await
    });
    let sim = EmbeddedSim {
        stop: Some(stop),
        task,
        status,
        dir,
        symbol_dir,
    };
    let mut transport = stream::connect_unix(&path, true, timeout).await?;
    transport.set_name(format!("the simulated target ({name})"));
    Ok((Transport::Stream(transport), sim))
}
