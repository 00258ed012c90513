//! Host session failures. Each message says what happened and what to check; each maps to an
//! exit code (README "Exit codes").

use std::time::Duration;

use kdproto::api::ApiNumber;

use crate::transport::TransportError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Break-in got no state change.
    #[error("{0}")]
    AttachTimeout(String),
    /// A request got no reply in time.
    #[error("{api} got no reply in {:.1} s{detail}: the target may have stopped listening (rebooted, resumed by another debugger, or the link is lossy)", timeout.as_secs_f64())]
    RequestTimeout {
        api: ApiNumber,
        timeout: Duration,
        detail: String,
    },
    /// The link gave up resending a packet.
    #[error(
        "{api} was sent {attempts} times without an acknowledgement: the target stopped answering"
    )]
    NotAcknowledged { api: ApiNumber, attempts: u32 },
    /// The target broke a protocol rule we cannot work around.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A request was made while the target runs.
    #[error("the target is not stopped")]
    NotStopped,
    /// The target rebooted mid-session.
    #[error("the target rebooted during the session")]
    TargetRestarted,
    /// Every stop of a pull found another boot or kernel than the stop before it.
    #[error("{0}")]
    BootChanged(String),
    /// SIGINT or SIGTERM arrived.
    #[error("interrupted by {0}")]
    Interrupted(&'static str),
    /// The whole operation ran past `--timeout`.
    #[error("the operation did not finish within {:.1} s (--timeout)", .0.as_secs_f64())]
    OverallTimeout(Duration),
    /// A failure status for a request that must succeed.
    #[error("{api} failed with status {status:#010x}")]
    Status { api: ApiNumber, status: u32 },
    /// Something the target reported that this host cannot handle yet.
    #[error("{0}")]
    Unsupported(String),
    /// Target data or symbols this host cannot use (no kernel PDB, corrupt structures).
    #[error("{0}")]
    TargetData(String),
    /// The work done while stopped failed; the resume itself failed too.
    #[error("{error}; and resuming the target failed too: {resume}")]
    ResumeFailed {
        error: Box<Error>,
        resume: Box<Error>,
    },
}

impl Error {
    /// Process exit code for this failure, in kdleak's one documented scheme (README "Exit
    /// codes"): 3 for anything about reaching or talking to the target (cannot open, wrong key,
    /// timeouts, a target that stops answering or breaks the protocol), 4 for target data this
    /// host cannot use, 130 when interrupted by a signal.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Interrupted(_) => 130,
            Self::ResumeFailed { error, .. } => error.exit_code(),
            Self::Status { .. } | Self::Unsupported(_) | Self::TargetData(_) => 4,
            _ => 3,
        }
    }
}

impl From<kdproto::Error> for Error {
    fn from(value: kdproto::Error) -> Self {
        Self::Protocol(value.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
