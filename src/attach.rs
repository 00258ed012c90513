//! `kdleak attach CONN`: break in, pull Driver Verifier's leak report, resume.

use crate::connect::ConnectSpec;
use crate::kernel_context::KernelContext;
use crate::session::{self, Session};
use crate::stop::{with_stopped_target, StopContext, StopOptions};
use crate::verifier::{self, LeakReport, PullOptions};

/// How to reach the target and what to pull.
#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    pub stop: StopOptions,
    pub pull: PullOptions,
}

/// Attaches to `spec`, pulls the report while the target is stopped, and resumes it (unless
/// `stay_broken`) on every exit path. Sites are left for the caller to group.
pub async fn run(spec: &ConnectSpec, options: &AttachOptions) -> session::Result<LeakReport> {
    with_stopped_target(
        spec,
        &options.stop,
        async |s: &mut Session, c: StopContext| {
            let kernel = KernelContext::load(s, &c.symbols).await?;
            let pull = PullOptions {
                connection: c.connection,
                ..options.pull.clone()
            };
            Ok(verifier::pull(s, &kernel, &c.symbols, &pull).await?)
        },
    )
    .await
}
