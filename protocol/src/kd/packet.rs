use bytes::{BufMut, Bytes, BytesMut};

use crate::{Error, Result};

/// Leader of a data packet, "0000" (kd.md §1.1).
pub const DATA_LEADER: u32 = 0x3030_3030;
/// Leader of a control packet, "iiii" (kd.md §1.1).
pub const CONTROL_LEADER: u32 = 0x6969_6969;
/// The single byte a host sends to break in (kd.md §1.1: one 0x62, not a 4-byte leader).
pub const BREAKIN_BYTE: u8 = 0x62;
/// Trailing byte after a serial data packet's payload (kd.md §1.1; absent over KDNET, kdnet.md §4.2).
pub const TRAILER: u8 = 0xAA;
/// PACKET_MAX_SIZE: the largest payload a KD peer accepts (kd.md §1.1).
pub const MAX_PAYLOAD: usize = 4000;
/// Size of the packet header.
pub const HEADER_LEN: usize = 16;
/// INITIAL_PACKET_ID (kd.md §1.4).
pub const INITIAL_PACKET_ID: u32 = 0x8080_0000;
/// SYNC_PACKET_ID: set on the first packet after a (re)start of numbering (kd.md §1.4 rule 5).
pub const SYNC_PACKET_ID: u32 = 0x0000_0800;

/// KD packet types (kd.md §1.2). Unknown values are kept, not rejected, so nothing is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    Unused,
    StateChange32,
    StateManipulate,
    DebugIo,
    Acknowledge,
    Resend,
    Reset,
    StateChange64,
    PollBreakin,
    TraceIo,
    ControlRequest,
    FileIo,
    Other(u16),
}

impl PacketType {
    pub fn from_u16(value: u16) -> Self {
        match value {
            0 => Self::Unused,
            1 => Self::StateChange32,
            2 => Self::StateManipulate,
            3 => Self::DebugIo,
            4 => Self::Acknowledge,
            5 => Self::Resend,
            6 => Self::Reset,
            7 => Self::StateChange64,
            8 => Self::PollBreakin,
            9 => Self::TraceIo,
            10 => Self::ControlRequest,
            11 => Self::FileIo,
            other => Self::Other(other),
        }
    }

    pub fn to_u16(self) -> u16 {
        match self {
            Self::Unused => 0,
            Self::StateChange32 => 1,
            Self::StateManipulate => 2,
            Self::DebugIo => 3,
            Self::Acknowledge => 4,
            Self::Resend => 5,
            Self::Reset => 6,
            Self::StateChange64 => 7,
            Self::PollBreakin => 8,
            Self::TraceIo => 9,
            Self::ControlRequest => 10,
            Self::FileIo => 11,
            Self::Other(other) => other,
        }
    }

    /// ACK, RESEND and RESET travel as control packets: leader "iiii", no payload, no trailer.
    pub fn is_control(self) -> bool {
        matches!(self, Self::Acknowledge | Self::Resend | Self::Reset)
    }

    /// WinDbg-style name, for logs and `kdleak decode`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unused => "UNUSED",
            Self::StateChange32 => "STATE_CHANGE32",
            Self::StateManipulate => "STATE_MANIPULATE",
            Self::DebugIo => "DEBUG_IO",
            Self::Acknowledge => "ACKNOWLEDGE",
            Self::Resend => "RESEND",
            Self::Reset => "RESET",
            Self::StateChange64 => "STATE_CHANGE64",
            Self::PollBreakin => "POLL_BREAKIN",
            Self::TraceIo => "TRACE_IO",
            Self::ControlRequest => "CONTROL_REQUEST",
            Self::FileIo => "FILE_IO",
            Self::Other(_) => "UNKNOWN",
        }
    }
}

/// How packets are delimited on the medium.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// KDCOM byte streams (serial ports, VM pipes, TCP): data packets end with 0xAA.
    Serial,
    /// KDNET datagrams: one packet per datagram, no trailer (kdnet.md §4.2).
    Datagram,
}

/// One KD packet. Control packets have an empty payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub packet_type: PacketType,
    pub id: u32,
    pub payload: Bytes,
}

/// The 32-bit wrapping sum of the payload bytes (kd.md §1.3).
pub fn checksum(payload: &[u8]) -> u32 {
    payload
        .iter()
        .fold(0u32, |sum, &byte| sum.wrapping_add(u32::from(byte)))
}

/// The fixed header, as read from the wire before the payload is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub leader: u32,
    pub packet_type: PacketType,
    pub byte_count: u16,
    pub id: u32,
    pub checksum: u32,
}

impl Header {
    pub(crate) fn parse(bytes: &[u8; HEADER_LEN]) -> Self {
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        Self {
            leader: u32_at(0),
            packet_type: PacketType::from_u16(u16::from_le_bytes([bytes[4], bytes[5]])),
            byte_count: u16::from_le_bytes([bytes[6], bytes[7]]),
            id: u32_at(8),
            checksum: u32_at(12),
        }
    }
}

impl Packet {
    /// A data packet; the checksum is computed when it is encoded.
    pub fn data(packet_type: PacketType, id: u32, payload: impl Into<Bytes>) -> Self {
        Self {
            packet_type,
            id,
            payload: payload.into(),
        }
    }

    /// An ACK, RESEND or RESET.
    pub fn control(packet_type: PacketType, id: u32) -> Self {
        Self {
            packet_type,
            id,
            payload: Bytes::new(),
        }
    }

    pub fn is_control(&self) -> bool {
        self.packet_type.is_control()
    }

    /// Length on the wire with the given framing.
    pub fn encoded_len(&self, framing: Framing) -> usize {
        let trailer = usize::from(framing == Framing::Serial && !self.is_control());
        HEADER_LEN + self.payload.len() + trailer
    }

    /// Appends the packet to `out`. Payloads longer than [`MAX_PAYLOAD`] are refused, so nothing
    /// this crate emits can be rejected by a peer for its size.
    pub fn encode(&self, framing: Framing, out: &mut BytesMut) -> Result<()> {
        if self.payload.len() > MAX_PAYLOAD {
            return Err(Error::Oversize(self.payload.len()));
        }
        let (leader, sum) = if self.is_control() {
            (CONTROL_LEADER, 0)
        } else {
            (DATA_LEADER, checksum(&self.payload))
        };
        out.reserve(self.encoded_len(framing));
        out.put_u32_le(leader);
        out.put_u16_le(self.packet_type.to_u16());
        out.put_u16_le(self.payload.len() as u16);
        out.put_u32_le(self.id);
        out.put_u32_le(sum);
        out.put_slice(&self.payload);
        if framing == Framing::Serial && !self.is_control() {
            out.put_u8(TRAILER);
        }
        Ok(())
    }

    pub fn to_bytes(&self, framing: Framing) -> Result<Bytes> {
        let mut out = BytesMut::with_capacity(self.encoded_len(framing));
        self.encode(framing, &mut out)?;
        Ok(out.freeze())
    }

    /// Parses exactly one complete packet, as carried by one KDNET datagram (or cut out of a stream).
    /// Every rule is checked: leader, leader/type agreement, size limit, length, checksum, trailer.
    pub fn parse(bytes: &[u8], framing: Framing) -> Result<Self> {
        let header: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(Error::Truncated {
                what: "KD packet header",
                needed: HEADER_LEN,
                available: bytes.len(),
            })?;
        let header = Header::parse(header);
        header.validate()?;
        let rest = &bytes[HEADER_LEN..];
        if header.leader == CONTROL_LEADER {
            if !rest.is_empty() {
                return Err(Error::LengthMismatch {
                    declared: 0,
                    found: rest.len(),
                });
            }
            return Ok(Self::control(header.packet_type, header.id));
        }
        let declared = usize::from(header.byte_count);
        let trailer = usize::from(framing == Framing::Serial);
        if rest.len() != declared + trailer {
            return Err(Error::LengthMismatch {
                declared,
                found: rest.len().saturating_sub(trailer),
            });
        }
        let payload = &rest[..declared];
        header.check_payload(payload)?;
        if framing == Framing::Serial && rest[declared] != TRAILER {
            return Err(Error::BadTrailer(rest[declared]));
        }
        Ok(Self::data(
            header.packet_type,
            header.id,
            Bytes::copy_from_slice(payload),
        ))
    }
}

impl Header {
    /// Checks everything that can be judged from the header alone.
    pub(crate) fn validate(&self) -> Result<()> {
        match self.leader {
            CONTROL_LEADER => {
                if !self.packet_type.is_control() {
                    return Err(Error::UnknownControlType(self.packet_type.to_u16()));
                }
                if self.byte_count != 0 {
                    return Err(Error::LengthMismatch {
                        declared: usize::from(self.byte_count),
                        found: 0,
                    });
                }
                Ok(())
            }
            DATA_LEADER => {
                if self.packet_type.is_control() {
                    return Err(Error::InvalidField {
                        field: "packet type of a data packet",
                        value: u64::from(self.packet_type.to_u16()),
                    });
                }
                if usize::from(self.byte_count) > MAX_PAYLOAD {
                    return Err(Error::Oversize(usize::from(self.byte_count)));
                }
                Ok(())
            }
            other => Err(Error::BadLeader(other)),
        }
    }

    pub(crate) fn check_payload(&self, payload: &[u8]) -> Result<()> {
        let actual = checksum(payload);
        if actual != self.checksum {
            return Err(Error::BadChecksum {
                expected: self.checksum,
                actual,
            });
        }
        Ok(())
    }
}
