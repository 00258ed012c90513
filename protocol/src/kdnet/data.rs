//! Data-channel bodies (kdnet.md §4.2): the target's ping, the host's break-in byte, KD packets.

use std::net::Ipv4Addr;

use bytes::{BufMut, Bytes, BytesMut};

use crate::kd::{Framing, Packet, BREAKIN_BYTE};
use crate::Result;

/// Length of the ping body: 8 zero bytes + an IPv4 address (kdnet.md §4.2; SVMM `KD_PING_SIZE`).
pub const PING_LEN: usize = 12;
/// Zero bytes that open a ping (kdnet.md §4.2).
const PING_ZEROS: usize = 8;

/// What a data-channel datagram carries. KD packets are left as bytes for
/// [`Packet::parse`] with [`Framing::Datagram`], so this layer never judges them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataBody {
    /// The target's first data datagram after a handshake, naming the host it talks to
    /// (kdnet.md §4.2). WinDbg answers it with a KD RESEND.
    Ping { host: Ipv4Addr },
    /// The single byte 0x62 'b' a host sends to stop a running target (kdnet.md §4.2, §4.7).
    BreakIn,
    /// One KD packet, without the serial 0xAA trailer (kdnet.md §4.2).
    Kd(Bytes),
}

impl DataBody {
    /// Classifies a body. A ping cannot be mistaken for a KD packet (those have at least a
    /// 16-byte header), nor can the 1-byte break-in.
    pub fn parse(body: Bytes) -> Self {
        match body.as_ref() {
            [b] if *b == BREAKIN_BYTE => Self::BreakIn,
            [zeros @ .., a, b, c, d] if body.len() == PING_LEN && zeros.iter().all(|&z| z == 0) => {
                // Byte-reversed IPv4: 192.168.2.1 is 01 02 a8 c0 (kdnet.md §1.4).
                Self::Ping {
                    host: Ipv4Addr::new(*d, *c, *b, *a),
                }
            }
            _ => Self::Kd(body),
        }
    }

    pub fn encode(&self) -> Bytes {
        match self {
            Self::Ping { host } => {
                let mut out = BytesMut::with_capacity(PING_LEN);
                out.put_bytes(0, PING_ZEROS);
                out.put_u32_le(u32::from(*host));
                out.freeze()
            }
            Self::BreakIn => Bytes::from_static(&[BREAKIN_BYTE]),
            Self::Kd(bytes) => bytes.clone(),
        }
    }

    /// A KD packet as KDNET carries it: [`Framing::Datagram`], no trailer.
    pub fn from_packet(packet: &Packet) -> Result<Self> {
        packet.to_bytes(Framing::Datagram).map(Self::Kd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kd::PacketType;

    #[test]
    fn ping_is_byte_reversed() {
        let ping = DataBody::Ping {
            host: Ipv4Addr::new(192, 168, 2, 1),
        };
        let body = ping.encode();
        assert_eq!(body.as_ref(), &[0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0xa8, 0xc0]);
        assert_eq!(DataBody::parse(body), ping);
    }

    #[test]
    fn break_in_is_one_byte() {
        assert_eq!(DataBody::BreakIn.encode().as_ref(), b"b");
        assert_eq!(DataBody::parse(Bytes::from_static(b"b")), DataBody::BreakIn);
    }

    #[test]
    fn everything_else_is_kd() {
        for body in [&b""[..], b"a", &[1; 12], b"bbbb", &[0; 16]] {
            let body = Bytes::copy_from_slice(body);
            assert_eq!(DataBody::parse(body.clone()), DataBody::Kd(body));
        }
    }

    #[test]
    fn kd_packets_have_no_trailer() {
        let packet = Packet::data(PacketType::StateManipulate, 0x8000_0000, &b"abc"[..]);
        let body = DataBody::from_packet(&packet).unwrap();
        let DataBody::Kd(bytes) = &body else {
            panic!("{body:?}")
        };
        assert_eq!(bytes.len(), 16 + 3);
        assert_eq!(Packet::parse(bytes, Framing::Datagram).unwrap(), packet);
    }
}
