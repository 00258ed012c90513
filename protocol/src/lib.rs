//! `kdproto`: the Windows kernel debugger wire protocol, without I/O.
//!
//! Bytes go in, typed events and bytes come out; time is always an argument. The host (`kdleak`)
//! and the simulated target both drive the same code, so each is a check on the other.
//!
//! * [`kd`] — the 16-byte KD packet, its checksum, the serial stream deframer.
//! * [`api`] — DBGKD_* messages carried in KD data packets, both directions.
//! * [`kdnet`] — the KDNET UDP wrapper: keys, seal/open, poke/response, ping, break-in.
//! * [`link`] — the reliability state machine (ACK, RESEND, RESET, ids, duplicates, retransmits).
//!
//! Facts come from `shared/spec/kd.md` and `shared/spec/kdnet.md`; comments cite their sections.

pub mod api;
mod error;
pub mod kd;
pub mod kdnet;
pub mod link;
mod role;

pub use error::Error;
pub use role::Role;

/// Result type of every fallible `kdproto` call.
pub type Result<T, E = Error> = std::result::Result<T, E>;
