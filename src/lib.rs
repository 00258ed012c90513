//! kdleak: pulls Driver Verifier pool-leak data from a Windows kernel over KDNET or serial KD.
//!
//! * [`connect`] — WinDbg `-k` connection strings; [`transport`] — UDP, streams, serial ports.
//! * [`session`] — the host session: attach, break in, requests, chunked reads, always resume.
//! * [`kernel`] — KDBG, loaded modules, PE/RSDS from target memory, behind the `Memory` trait.
//! * [`symbols`] — PDB (or ISF symbol pack) layouts and names, the symbol path; [`kernel_context`]
//!   ties them together; [`needed`] — the PDBs a pull needs (`kdleak symbols manifest`).
//! * [`info`] — `kdleak info`; [`decode`] / [`capture`] — `kdleak decode`.
//! * [`sim`] — the simulated Windows target; [`embedded`] — its fixtures, built into the binary.

pub mod analyze;
pub mod atomic_file;
pub mod attach;
pub mod capture;
pub mod connect;
pub mod decode;
pub mod duration;
pub mod embedded;
pub mod image;
pub mod info;
pub mod kernel;
pub mod kernel_context;
pub mod kernel_stop;
pub mod needed;
pub mod report;
pub mod session;
pub mod sim;
pub mod stop;
pub mod symbols;
pub mod transport;
pub mod verifier;
pub mod watch;
pub use kdproto;
