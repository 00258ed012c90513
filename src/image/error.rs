//! Why a crash dump cannot be used. Each message says what is wrong with the file and, for a
//! dump of the wrong kind, what to configure on the machine that writes it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The file cannot be opened or read (the path is left to the caller's message).
    #[error("cannot read the file: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not a Windows crash dump at all (or its header is cut short).
    #[error("not a Windows kernel crash dump: {0}")]
    NotADump(String),
    /// A well-formed header that contradicts itself or the file (a damaged or cut copy).
    #[error(
        "the dump is damaged: {what} (at file offset {offset:#x}); copy it again from the target"
    )]
    Corrupt { what: String, offset: u64 },
    /// A real dump of a kind that lacks the memory the pull needs.
    #[error("{0}")]
    Unsupported(String),
}

impl DumpError {
    pub(crate) fn corrupt(offset: u64, what: impl Into<String>) -> Self {
        Self::Corrupt {
            what: what.into(),
            offset,
        }
    }

    /// The process exit code (README "Exit codes"): a file that is not a usable dump is an input
    /// error (2); a real dump of a kind this host cannot use is target data (4).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Io { .. } | Self::NotADump(_) | Self::Corrupt { .. } => 2,
            Self::Unsupported(_) => 4,
        }
    }
}

pub type Result<T, E = DumpError> = std::result::Result<T, E>;
