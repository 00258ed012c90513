//! The simulated Windows target: a tiny kernel that answers the KD protocol over KDNET (UDP) or
//! KDCOM (a Unix or TCP stream), for tests of the host without a Windows machine.
//!
//! * [`memory`] — sparse page memory with Windows' partial-read rule; [`physical`] — its frames
//!   and x64 page tables; [`dump`] — Windows crash dumps of it.
//! * [`machine`] / [`kernel`] — the kernel state (version block, CPUs, MSRs) and its built-in image.
//! * [`breakpoints`], [`context`] — the breakpoint table and SetContextEx staging.
//! * [`requests`] — answers to manipulate requests; [`target`] — the sans-IO stop loop.
//! * [`kdnet`], [`kdcom`] — tokio transports; [`report`] — status for tests and `--state-file`.

pub mod breakpoints;
pub mod context;
pub mod delay_line;
pub mod dump;
pub mod faults;
pub mod isf;
pub mod kdcom;
pub mod kdnet;
pub mod kernel;
pub mod machine;
pub mod memory;
pub mod physical;
pub mod pty;
pub mod quirks;
pub mod report;
pub mod requests;
pub mod scenario;
pub mod stats;
pub mod target;
pub mod timeline;

pub use machine::{Machine, MachineBuilder};
pub use memory::SimMemory;
pub use report::Reporter;
pub use stats::{SimState, SimStats};
pub use target::{TargetConfig, TargetCore};

use std::future::Future;
use std::path::PathBuf;

/// Which wire the simulated target speaks.
#[derive(Debug, Clone)]
pub enum Transport {
    Kdnet(kdnet::KdnetConfig),
    Kdcom(kdcom::KdcomConfig),
}

/// Runs the simulated target with `machine` until `shutdown` completes, keeping `state_file`
/// (if any) current; returns the final counters.
pub async fn run(
    transport: Transport,
    machine: Machine,
    state_file: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<SimStats> {
    let (mut reporter, _status) = Reporter::new(state_file);
    match transport {
        Transport::Kdnet(config) => kdnet::run(config, machine, &mut reporter, shutdown).await,
        Transport::Kdcom(config) => kdcom::run(config, machine, &mut reporter, shutdown).await,
    }
}
