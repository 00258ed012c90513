//! Control-channel bodies: the target's Poke and the host's Response (kdnet.md §3.2, §3.3).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use bytes::{BufMut, Bytes, BytesMut};

use crate::{Error, Result};

/// `body[0]` of every control message seen (kdnet.md §3.2: "0x01 (sub-protocol version?)").
pub const CONTROL_VERSION: u8 = 0x01;
/// `body[1]` of a Poke / Offer (kdnet.md §3.2).
pub const KIND_POKE: u8 = 0x01;
/// `body[1]` of a Response (kdnet.md §3.3).
pub const KIND_RESPONSE: u8 = 0x02;
/// Poke body length (kdnet.md §3.2).
pub const POKE_LEN: usize = 344;
/// Response body length (kdnet.md §3.3).
pub const RESPONSE_LEN: usize = 322;
/// Zero bytes that end both messages (kdnet.md §3.2 offset 88, §3.3 offset 66).
pub const RESERVED_LEN: usize = 256;
/// One address field: 16-byte IP + big-endian port (kdnet.md §3.2, §1.4).
const ADDR_LEN: usize = 18;

/// An address field of a Poke: a 16-byte IPv6 address (IPv4-mapped in every capture) and a port
/// (kdnet.md §1.1, §3.2). Kept as raw bytes so an IPv6 value survives a round trip.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetAddr {
    pub ip: [u8; 16],
    pub port: u16,
}

impl NetAddr {
    /// `::ffff:0.0.0.0` port 0: what a target writes as "no debugger connected" (kdnet.md §3.2).
    pub const NONE_V4: Self = Self::from_v4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

    /// The IPv4-mapped form `::ffff:a.b.c.d`.
    pub const fn from_v4(addr: SocketAddrV4) -> Self {
        Self {
            ip: addr.ip().to_ipv6_mapped().octets(),
            port: addr.port(),
        }
    }

    /// The IPv4 address, if the field holds an IPv4-mapped one.
    pub fn to_v4(&self) -> Option<SocketAddrV4> {
        Ipv6Addr::from(self.ip)
            .to_ipv4_mapped()
            .map(|ip| SocketAddrV4::new(ip, self.port))
    }

    /// IPv4 when mapped, IPv6 otherwise.
    pub fn to_socket_addr(&self) -> SocketAddr {
        match self.to_v4() {
            Some(v4) => SocketAddr::V4(v4),
            None => SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(self.ip), self.port, 0, 0)),
        }
    }

    fn read(bytes: &[u8]) -> Self {
        Self {
            ip: bytes[..16].try_into().expect("caller passes 18 bytes"),
            port: u16::from_be_bytes([bytes[16], bytes[17]]),
        }
    }

    fn write(&self, out: &mut BytesMut) {
        out.put_slice(&self.ip);
        out.put_u16(self.port);
    }
}

impl From<SocketAddrV4> for NetAddr {
    fn from(addr: SocketAddrV4) -> Self {
        Self::from_v4(addr)
    }
}

impl fmt::Display for NetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_socket_addr().fmt(f)
    }
}

impl fmt::Debug for NetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetAddr({self})")
    }
}

/// The target's offer, sent about every 3 s for the whole session (kdnet.md §3.1, §3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poke {
    /// Target random material, echoed by the Response; opaque to the host (kdnet.md §3.2, §6.9).
    pub client_key: [u8; 32],
    /// The target's own address.
    pub target: NetAddr,
    /// The host address the target is configured with (`hostip:port`).
    pub host: NetAddr,
    /// The debugger the target is connected to; port 0 means none (kdnet.md §3.2 offset 70..88).
    pub debugger: NetAddr,
}

impl Poke {
    /// Whether the target reports a connected debugger (kdnet.md §3.2: port 0 = none, as NTE reads it).
    pub fn has_debugger(&self) -> bool {
        self.debugger.port != 0
    }

    /// The 344-byte body (kdnet.md §3.2).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(POKE_LEN);
        out.put_u8(CONTROL_VERSION);
        out.put_u8(KIND_POKE);
        out.put_slice(&self.client_key);
        self.target.write(&mut out);
        self.host.write(&mut out);
        self.debugger.write(&mut out);
        out.put_bytes(0, RESERVED_LEN);
        debug_assert_eq!(out.len(), POKE_LEN);
        out.freeze()
    }

    /// Parses a Poke body. The 256 trailing bytes are not checked: their meaning is unknown
    /// (kdnet.md §6.8) and a future version may use them.
    pub fn parse(body: &[u8]) -> Result<Self> {
        if body.len() != POKE_LEN {
            return Err(Error::BadControlMessage("poke body is not 344 bytes"));
        }
        if body[..2] != [CONTROL_VERSION, KIND_POKE] {
            return Err(Error::BadControlMessage(
                "poke body does not start with 01 01",
            ));
        }
        Ok(Self {
            client_key: body[2..34].try_into().expect("length checked"),
            target: NetAddr::read(&body[34..34 + ADDR_LEN]),
            host: NetAddr::read(&body[52..52 + ADDR_LEN]),
            debugger: NetAddr::read(&body[70..70 + ADDR_LEN]),
        })
    }
}

/// The host's answer; its body is hashed into the data key (kdnet.md §2.3, §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Copied from the Poke being answered.
    pub client_key: [u8; 32],
    /// 32 fresh random bytes from the host: the host's half of the data key.
    pub host_key: [u8; 32],
}

impl Response {
    /// The 322-byte body (kdnet.md §3.3).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(RESPONSE_LEN);
        out.put_u8(CONTROL_VERSION);
        out.put_u8(KIND_RESPONSE);
        out.put_slice(&self.client_key);
        out.put_slice(&self.host_key);
        out.put_bytes(0, RESERVED_LEN);
        debug_assert_eq!(out.len(), RESPONSE_LEN);
        out.freeze()
    }

    /// Parses a Response body. The trailing 256 bytes are not checked (kdnet.md §6.8); the data key
    /// hashes the body as received, so they still count.
    pub fn parse(body: &[u8]) -> Result<Self> {
        if body.len() != RESPONSE_LEN {
            return Err(Error::BadControlMessage("response body is not 322 bytes"));
        }
        if body[..2] != [CONTROL_VERSION, KIND_RESPONSE] {
            return Err(Error::BadControlMessage(
                "response body does not start with 01 02",
            ));
        }
        Ok(Self {
            client_key: body[2..34].try_into().expect("length checked"),
            host_key: body[34..66].try_into().expect("length checked"),
        })
    }
}

/// Any control-channel body. Unknown kinds are values, not errors: their meaning is open
/// (kdnet.md §6.8) and a decoder should still show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    Poke(Poke),
    Response(Response),
    /// Anything else, e.g. NTE's empty "host poke" (kdnet.md §3.4). `kind` is `body[1]`, or 0 for
    /// a body shorter than 2 bytes; `body` is the whole body, `body[0]` included, so nothing is lost.
    Other {
        kind: u8,
        body: Bytes,
    },
}

impl ControlMessage {
    /// Classifies by `body[0..2]`. A body that claims to be a Poke or Response but has the wrong
    /// size is an error, not `Other`.
    pub fn parse(body: Bytes) -> Result<Self> {
        match body.as_ref() {
            [CONTROL_VERSION, KIND_POKE, ..] => Poke::parse(&body).map(Self::Poke),
            [CONTROL_VERSION, KIND_RESPONSE, ..] => Response::parse(&body).map(Self::Response),
            [_, kind, ..] => Ok(Self::Other { kind: *kind, body }),
            [] | [_] => Ok(Self::Other { kind: 0, body }),
        }
    }

    pub fn encode(&self) -> Bytes {
        match self {
            Self::Poke(poke) => poke.encode(),
            Self::Response(response) => response.encode(),
            Self::Other { body, .. } => body.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poke() -> Poke {
        Poke {
            client_key: std::array::from_fn(|i| i as u8),
            target: "192.168.0.13:50000".parse::<SocketAddrV4>().unwrap().into(),
            host: "192.168.0.11:50000".parse::<SocketAddrV4>().unwrap().into(),
            debugger: NetAddr::NONE_V4,
        }
    }

    #[test]
    fn poke_layout() {
        let body = poke().encode();
        assert_eq!(body.len(), POKE_LEN);
        assert_eq!(&body[..3], &[1, 1, 0]);
        // Target address at body offset 34, port at 50 (kdnet.md §3.2).
        assert_eq!(
            &body[34..52],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 0, 13, 0xc3, 0x50]
        );
        assert_eq!(&body[52 + 12..52 + 18], &[192, 168, 0, 11, 0xc3, 0x50]);
        assert_eq!(&body[70 + 10..70 + 18], &[0xff, 0xff, 0, 0, 0, 0, 0, 0]);
        assert!(body[88..].iter().all(|&b| b == 0));
        assert_eq!(Poke::parse(&body).unwrap(), poke());
        assert!(!poke().has_debugger());
    }

    #[test]
    fn response_layout() {
        let response = Response {
            client_key: [0x11; 32],
            host_key: [0x22; 32],
        };
        let body = response.encode();
        assert_eq!(body.len(), RESPONSE_LEN);
        assert_eq!(&body[..2], &[1, 2]);
        assert_eq!(&body[2..34], &[0x11; 32]);
        assert_eq!(&body[34..66], &[0x22; 32]);
        assert!(body[66..].iter().all(|&b| b == 0));
        assert_eq!(Response::parse(&body).unwrap(), response);
    }

    #[test]
    fn wrong_sizes_and_kinds_are_errors() {
        let body = poke().encode();
        assert!(matches!(
            Poke::parse(&body[..343]),
            Err(Error::BadControlMessage(_))
        ));
        assert!(matches!(
            ControlMessage::parse(body.slice(..343)),
            Err(Error::BadControlMessage(_))
        ));
        assert!(matches!(
            Response::parse(&body[..322]),
            Err(Error::BadControlMessage(_))
        ));
    }

    #[test]
    fn unknown_kinds_are_values() {
        let body = Bytes::from_static(&[1, 3, 9, 9]);
        let message = ControlMessage::parse(body.clone()).unwrap();
        assert_eq!(
            message,
            ControlMessage::Other {
                kind: 3,
                body: body.clone()
            }
        );
        assert_eq!(message.encode(), body);
        // A poke-shaped body with another first byte is not claimed as a Poke.
        let mut other = poke().encode().to_vec();
        other[0] = 2;
        assert!(matches!(
            ControlMessage::parse(other.into()).unwrap(),
            ControlMessage::Other { kind: 1, .. }
        ));
        for short in [&[][..], &[1]] {
            let body = Bytes::from_static(short);
            let message = ControlMessage::parse(body.clone()).unwrap();
            assert_eq!(message, ControlMessage::Other { kind: 0, body });
        }
    }

    #[test]
    fn addresses() {
        let v4: SocketAddrV4 = "192.168.2.1:51111".parse().unwrap();
        let addr = NetAddr::from(v4);
        assert_eq!(addr.to_v4(), Some(v4));
        assert_eq!(addr.to_string(), "192.168.2.1:51111");
        assert_eq!(format!("{addr:?}"), "NetAddr(192.168.2.1:51111)");
        let v6 = NetAddr {
            ip: Ipv6Addr::LOCALHOST.octets(),
            port: 5,
        };
        assert_eq!(v6.to_v4(), None);
        assert_eq!(v6.to_string(), "[::1]:5");
        assert_eq!(NetAddr::NONE_V4.to_string(), "0.0.0.0:0");
    }
}
