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
//!
//! A host asking a target for its version over KDNET, with the I/O left to the caller:
//!
//! ```
//! use std::time::Instant;
//! use kdproto::api::{Manipulate, Message};
//! use kdproto::kd::{Framing, PacketType};
//! use kdproto::kdnet::{Channel, DataBody, Datagram, Direction, Keys};
//! use kdproto::link::{Dialect, Link, LinkConfig, Transmit};
//!
//! let key: kdproto::kdnet::Key = "1.2.3.4".parse()?;
//! let keys = Keys::new(key.clone()).with_data_key(key.data_key(&[0; 322]));
//! let mut link = Link::new(LinkConfig::host(Dialect::Kdnet, Framing::Datagram));
//! let request = Message::from(Manipulate::get_version()).encode();
//! link.send(PacketType::StateManipulate, request, Instant::now())?;
//!
//! let Some(Transmit::Packet(packet)) = link.poll_transmit() else { unreachable!() };
//! assert_eq!(packet.id, 0x8000_0000); // WinDbg's first KDNET id
//! let datagram = Datagram {
//!     version: 4,
//!     channel: Channel::Data,
//!     direction: Direction::HostToTarget,
//!     seq: 1,
//!     body: DataBody::from_packet(&packet)?.encode(),
//! };
//! let wire = kdproto::kdnet::seal(&datagram, &keys)?; // hand these bytes to a UDP socket
//! assert_eq!(kdproto::kdnet::open(&wire, &keys)?, datagram);
//! # Ok::<(), kdproto::Error>(())
//! ```

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
