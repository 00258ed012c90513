//! How the host reaches the simulated target: the transports, and what can go wrong on the way.
//!
//! * [`kdnet`] — KDNET over UDP (poke, handshake, sealed datagrams); [`kdcom`] — KDCOM over a
//!   Unix or TCP stream, or a [`pty`] the host opens as a serial port.
//! * [`faults`] — seeded loss, duplication, reordering, corruption, latency, throttling, reboot
//!   and stall; [`delay_line`] — delivers delayed datagrams to the microsecond.
//!
//! Data flows host → transport → faults/delay line → the machine's stop loop
//! ([`crate::sim::machine::target`]) and its replies back the same way; each transport reports
//! what it counts to [`crate::sim::status`].

pub mod delay_line;
pub mod faults;
pub mod kdcom;
pub mod kdnet;
pub mod pty;
