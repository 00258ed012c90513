//! `kdleak attach CONN`: break in, pull Driver Verifier's leak report, resume.

use std::sync::Arc;

use serde::Serialize;
use tracing::warn;

use crate::connect::ConnectSpec;
use crate::kernel_context::KernelContext;
use crate::kernel_stop::stop_with_kernel;
use crate::session::{self, Session, SessionStats};
use crate::stop::{with_target, StopOptions, Target};
use crate::verifier::{self, LeakReport, PullCache, PullOptions, TargetStop};

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

/// What a pull cost: requests, bytes on the wire and in memory, and how long the target was
/// frozen — per stop, and in all — beside the host work done while it ran.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PullCost {
    /// Seconds the target was frozen, over every stop.
    pub stopped_s: f64,
    /// Each stop, in order: what it was for and how long it froze the target.
    pub stops: Vec<TargetStop>,
    /// CPU seconds (user + system) the host process spent while the target was frozen: the
    /// requests' cost on this side of the link (`cargo bench --bench pull` divides it by them).
    pub stopped_cpu_s: f64,
    /// Seconds of host work while the target ran (symbols fetched between the stops,
    /// symbolizing after the last).
    pub outside_s: f64,
    /// Bytes per read request at the end (lower than asked when the target clips reads).
    pub read_size: usize,
    /// The fewest requests that read the asked-for bytes and nothing else
    /// ([`Session::request_floor`]).
    pub min_requests_extents: u64,
    #[serde(flatten)]
    pub session: SessionStats,
}

/// Attaches to `spec`, pulls the report, and resumes the target (unless `stay_broken`) on every
/// exit path. The target is stopped only for reads: the kernel's PDB, when this host lacks it,
/// is fetched between two stops ([`stop_with_kernel`]), and the stacks are symbolized after the
/// last. Sites are left for the caller to group.
pub async fn run(spec: &ConnectSpec, options: &AttachOptions) -> session::Result<Attached> {
    with_target(spec, &options.stop, async |target: &mut Target<'_>| {
        let connection = target.connection().to_string();
        let (mut report, kernel) = stop_with_kernel(
            target,
            async |s: &mut Session, _version, kernel: KernelContext| {
                let pull = PullOptions {
                    connection,
                    processors: s.stop().map_or(0, |stop| stop.number_processors),
                    ..options.pull.clone()
                };
                let report =
                    verifier::read_with(s, &kernel, &pull, &mut PullCache::default()).await?;
                if let Some(stop) = &report.bugcheck {
                    // A bug-checked Windows continues the crash when resumed (the dump is
                    // written, the machine restarts): say so before the Continue.
                    let line = if s.options().stay_broken {
                        format!(
                            "the target is stopped in bug check {}; --stay-broken keeps it \
                             stopped (resuming it continues the crash: a dump is written and \
                             the machine restarts)",
                            stop.title()
                        )
                    } else {
                        format!(
                            "the target is stopped in bug check {}: resuming it now continues \
                             the crash (a dump is written and the machine restarts); \
                             --stay-broken keeps it stopped",
                            stop.title()
                        )
                    };
                    warn!("{line}");
                    eprintln!("kdleak: {line}");
                }
                Ok((report, kernel))
            },
        )
        .await?;
        let symbols = Arc::clone(target.symbols());
        target
            .run_outside(async {
                verifier::symbolize_report_with(
                    &mut report,
                    &kernel,
                    &symbols,
                    &options.pull.images,
                )
                .await;
                Ok(())
            })
            .await?;
        report.target.stops = target.stops().to_vec();
        report.target.outside_s = Some(target.outside_s());
        let cost = PullCost {
            stopped_s: report.target.frozen_s(),
            stopped_cpu_s: target.stopped_cpu_s(),
            stops: report.target.stops.clone(),
            outside_s: target.outside_s(),
            read_size: target.session().read_chunk(),
            min_requests_extents: target.session().request_floor(),
            session: target.session().stats().clone(),
        };
        Ok(Attached { report, cost })
    })
    .await
}
