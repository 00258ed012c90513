//! The leak pull: Driver Verifier's pool tracking read from a stopped kernel (verifier.md).
//!
//! * [`facts`] — the Windows facts no PDB holds (signatures, page geometry, SLIST decoding, log
//!   indexing, flag texts), each with its source.
//! * [`model`] — the result every output format renders.

pub mod facts;
pub mod model;

pub use model::{
    Allocation, DriverCounters, DriverReport, Frame, LeakReport, LeakSite, LogRecord, LogSummary,
    TargetSummary, VerifierState, SCHEMA_VERSION,
};
