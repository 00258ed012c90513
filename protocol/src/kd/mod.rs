//! The KD packet layer (kd.md §1): one 16-byte header, an optional payload, and on serial links a
//! 0xAA trailer after data packets.

mod deframer;
mod packet;

pub use deframer::{DeframeEvent, Deframer};
pub use packet::{
    checksum, Framing, Packet, PacketType, BREAKIN_BYTE, CONTROL_LEADER, DATA_LEADER, HEADER_LEN,
    INITIAL_PACKET_ID, MAX_PAYLOAD, SYNC_PACKET_ID, TRAILER,
};
