//! What the simulated Windows is: which kernel, drivers, pool allocations and verifier settings,
//! laid out in memory exactly as Windows lays them out.
//!
//! * [`isf`] — Volatility 3 ISF tables, the only source of structure layouts here (never the
//!   host's PDB code).
//! * [`scenario`] — TOML scenarios and their layout in memory from the ISF tables.
//! * [`timeline`] — a scenario's `[[timeline]]` entries applied while the target runs.
//!
//! Data flows isf → scenario → timeline; a scenario's layout fills the machine's memory
//! ([`crate::sim::machine`]), and the machine advances the timeline by target time.

pub mod isf;
pub mod scenario;
pub mod timeline;
