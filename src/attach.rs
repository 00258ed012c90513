//! `kdleak attach CONN`: break in, pull Driver Verifier's leak report, resume.

use std::time::Instant;

use serde::Serialize;

use crate::connect::ConnectSpec;
use crate::kernel_context::KernelContext;
use crate::session::{self, Session, SessionStats};
use crate::stop::{with_stopped_target, StopContext, StopOptions};
use crate::verifier::{self, LeakReport, PullOptions};

/// How to reach the target and what to pull.
#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    pub stop: StopOptions,
    pub pull: PullOptions,
}

/// A pull and what it cost the link (`kdleak attach --stats`).
#[derive(Debug, Clone)]
pub struct Attached {
    pub report: LeakReport,
    pub cost: PullCost,
}

/// What one stop cost: requests, bytes on the wire and in memory, and how long the target was
/// frozen (from the stop to the end of the pull; the resume is one more request).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PullCost {
    pub stopped_s: f64,
    /// Bytes per read request at the end (lower than asked when the target clips reads).
    pub read_size: usize,
    #[serde(flatten)]
    pub session: SessionStats,
}

/// Attaches to `spec`, pulls the report while the target is stopped, and resumes it (unless
/// `stay_broken`) on every exit path. Sites are left for the caller to group.
pub async fn run(spec: &ConnectSpec, options: &AttachOptions) -> session::Result<Attached> {
    with_stopped_target(
        spec,
        &options.stop,
        async |s: &mut Session, c: StopContext| {
            let started = Instant::now();
            let kernel = KernelContext::load(s, &c.symbols).await?;
            let pull = PullOptions {
                connection: c.connection,
                processors: s.stop().map_or(0, |stop| stop.number_processors),
                ..options.pull.clone()
            };
            let report = verifier::pull(s, &kernel, &c.symbols, &pull).await?;
            let cost = PullCost {
                stopped_s: started.elapsed().as_secs_f64(),
                read_size: s.read_chunk(),
                session: s.stats().clone(),
            };
            Ok(Attached { report, cost })
        },
    )
    .await
}
