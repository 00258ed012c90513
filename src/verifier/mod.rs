//! The leak pull: Driver Verifier's pool tracking read from a stopped kernel (verifier.md).
//!
//! * [`facts`] — the Windows facts no PDB holds (signatures, page geometry, SLIST decoding, log
//!   indexing, flag texts), each with its source.
//! * [`layout`] — named access to kernel structures through the kernel PDB.
//! * [`stats`], [`drivers`], [`trackers`], [`log`] — `MmVerifierData`, the verified drivers,
//!   their tracked allocations, the allocate/free log.
//! * [`pull`] — all of it for one stop; [`model`] — the result every output format renders.
//! * [`selfcheck`] — the relations between those sources that every pull verifies.

pub mod bugcheck;
pub mod drivers;
pub mod error;
pub mod facts;
pub mod layout;
pub mod log;
pub mod model;
pub mod pull;
pub mod selfcheck;
pub mod stats;
pub mod trackers;

pub use error::VerifierError;
pub use model::{
    Allocation, BugCheckReport, DriverCounters, DriverReport, Frame, LeakReport, LeakSite,
    LogRecord, LogSummary, StopPurpose, SymbolSource, TargetStop, TargetSummary, UnloadedModule,
    VerifierState, SCHEMA_VERSION,
};
pub use pull::{
    pull, pull_with, read_with, rfc3339, symbolize_report, symbolize_report_with, PullCache,
    PullOptions,
};
