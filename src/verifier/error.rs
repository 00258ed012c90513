//! Why a pull could not read what it needed. Each message says what to check.

use crate::kernel::KernelError;
use crate::session;

#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    #[error(transparent)]
    Session(#[from] session::Error),
    /// The kernel PDB lacks a symbol the pull needs.
    #[error("the kernel PDB has no symbol {0}: is this a Windows 7 or later x64 kernel, and the right PDB?")]
    MissingSymbol(String),
    /// The kernel PDB lacks a type or field.
    #[error("kernel symbols: {0}")]
    Symbols(String),
    /// Memory that must be readable is not.
    #[error("cannot read {what} at {address:#x}: the memory is not readable")]
    Unreadable { what: String, address: u64 },
    /// A structure fails a consistency check (signature, pointer, count).
    #[error("{what} at {address:#x} looks corrupt: {why}")]
    Corrupt {
        what: String,
        address: u64,
        why: String,
    },
    /// Driver Verifier is off, or pool tracking is not enabled.
    #[error("{0}")]
    NotEnabled(String),
    /// A driver asked for with --driver is not verified.
    #[error("{0}")]
    DriverNotVerified(String),
}

impl From<KernelError> for VerifierError {
    fn from(value: KernelError) -> Self {
        match value {
            KernelError::Session(e) => Self::Session(e),
            KernelError::Unreadable { what, address } => Self::Unreadable { what, address },
            KernelError::Invalid(why) => Self::Corrupt {
                what: "kernel data".into(),
                address: 0,
                why,
            },
        }
    }
}

impl From<VerifierError> for session::Error {
    /// Everything but transport failures is about target data or symbols (exit 4).
    fn from(value: VerifierError) -> Self {
        match value {
            VerifierError::Session(e) => e,
            other => session::Error::TargetData(other.to_string()),
        }
    }
}

pub type Result<T, E = VerifierError> = std::result::Result<T, E>;
