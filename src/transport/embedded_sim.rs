//! `sim` / `sim:SCENARIO`: the simulated target of [`crate::sim`] started in-process, serving
//! KDCOM on a private Unix socket, so the host runs over a real transport.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::{stream, Transport, TransportError};
use crate::sim::kdcom::{self, KdcomConfig};
use crate::sim::{Machine, Reporter, SimStats};

/// A running in-process simulated target. Stop it with [`EmbeddedSim::shutdown`].
pub struct EmbeddedSim {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<SimStats>>,
    status: watch::Receiver<SimStats>,
    dir: PathBuf,
}

impl EmbeddedSim {
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

/// The machine for `scenario`: the tiny built-in kernel, a built-in scenario name, or a file.
pub fn machine_for(scenario: Option<&str>) -> Result<Machine, TransportError> {
    let Some(name) = scenario else {
        return Ok(Machine::default());
    };
    Machine::for_scenario(name)
        .map_err(|e| TransportError::Unsupported(format!("cannot load scenario {name}: {e}")))
}

/// Starts the simulated target and connects to it.
pub async fn start(
    scenario: Option<&str>,
    timeout: Duration,
) -> Result<(Transport, EmbeddedSim), TransportError> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let machine = machine_for(scenario)?;
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
    };
    let mut transport = stream::connect_unix(&path, true, timeout).await?;
    transport.set_name(match scenario {
        Some(name) => format!("the simulated target ({name})"),
        None => "the simulated target (tiny kernel)".to_string(),
    });
    Ok((Transport::Stream(transport), sim))
}
