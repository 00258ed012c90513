//! The simulated Windows target: a tiny kernel that answers the KD protocol over KDNET (UDP) or
//! KDCOM (a Unix or TCP stream), for tests of the host without a Windows machine.
//!
//! Its rooms, and how data flows through them:
//!
//! * [`world`] — what the simulated Windows is: scenarios (TOML) laid out in memory from the ISF
//!   tables, and the timeline that changes them while the target runs.
//! * [`machine`] — the machine that holds it: memory, physical frames and page tables, the
//!   built-in kernel, CPU state, breakpoints, answers to requests and the sans-IO stop loop.
//! * [`wire`] — how the host reaches it: KDNET (UDP) and KDCOM (Unix, TCP, pty) transports,
//!   seeded faults and a delay line, feeding bytes into the stop loop and its replies back out.
//! * [`image`] — memory images written from the machine (crash dumps), one file per format.
//! * [`status`] — what the simulator counts and publishes (`--state-file`, the final summary).
//!
//! A scenario ([`world`]) builds a [`Machine`]; a transport ([`wire`]) drives the machine's
//! [`TargetCore`] and reports to [`status`]; [`image`] reads a machine and writes a file.

pub mod image;
pub mod machine;
pub mod status;
pub mod wire;
pub mod world;

pub use machine::memory::SimMemory;
pub use machine::target::{TargetConfig, TargetCore};
pub use machine::{Machine, MachineBuilder};
pub use status::report::Reporter;
pub use status::stats::{SimState, SimStats};

use std::future::Future;
use std::path::PathBuf;

/// Which wire the simulated target speaks.
#[derive(Debug, Clone)]
pub enum Transport {
    Kdnet(wire::kdnet::KdnetConfig),
    Kdcom(wire::kdcom::KdcomConfig),
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
        Transport::Kdnet(config) => {
            wire::kdnet::run(config, machine, &mut reporter, shutdown).await
        }
        Transport::Kdcom(config) => {
            wire::kdcom::run(config, machine, &mut reporter, shutdown).await
        }
    }
}
