use crate::kdnet::KeyError;

/// Every rule a packet, datagram or key can break. Closed: callers (the simulator's strict mode,
/// `kdleak decode`) match on the variant to count and explain failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input ended before a fixed-size structure did.
    #[error("{what} truncated: need {needed} bytes, have {available}")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    /// The first four bytes are neither the data nor the control leader.
    #[error("bad KD packet leader {0:#010x} (expected 0x30303030 or 0x69696969)")]
    BadLeader(u32),
    /// The payload bytes do not sum to the header's checksum (kd.md §1.3).
    #[error("KD checksum mismatch: header {expected:#x}, payload sums to {actual:#x}")]
    BadChecksum { expected: u32, actual: u32 },
    /// A serial data packet did not end with 0xAA (kd.md §1.1).
    #[error("KD data packet trailer is {0:#04x}, expected 0xaa")]
    BadTrailer(u8),
    /// ByteCount is above PACKET_MAX_SIZE (kd.md §1.1).
    #[error("KD byte count {0} exceeds the 4000-byte packet maximum")]
    Oversize(usize),
    /// A control packet carried a payload, or a data packet's length disagrees with its header.
    #[error("KD packet length mismatch: header says {declared} payload bytes, found {found}")]
    LengthMismatch { declared: usize, found: usize },
    /// A control packet type that is not ACK, RESEND or RESET.
    #[error("unknown KD control packet type {0}")]
    UnknownControlType(u16),
    /// A message field holds a value its structure does not allow.
    #[error("invalid {field}: {value:#x}")]
    InvalidField { field: &'static str, value: u64 },

    /// A KDNET datagram whose length cannot be 6 + 16·k + 16 (kdnet.md §2.5).
    #[error("KDNET datagram of {0} bytes: must be at least 38 and 6 more than a multiple of 16")]
    BadDatagramLength(usize),
    /// The first four bytes are not "MDBG".
    #[error("not a KDNET datagram: magic {0:02x?}, expected \"MDBG\"")]
    BadMagic([u8; 4]),
    /// The channel byte is neither data (0) nor control (1).
    #[error("unknown KDNET channel {0}")]
    UnknownChannel(u8),
    /// The truncated HMAC-SHA256 tag does not match: almost always a wrong key.
    #[error("KDNET authentication failed (HMAC mismatch): check the key")]
    AuthenticationFailed,
    /// A data-channel datagram arrived before the handshake produced a data key.
    #[error("KDNET data datagram before the handshake: no data key yet")]
    NoDataKey,
    /// The padding count is larger than the plaintext allows, or padding bytes are not zero.
    #[error("KDNET padding {pad} invalid for a {len}-byte plaintext")]
    BadPadding { pad: u8, len: usize },
    /// The direction bit says the datagram came from our own side.
    #[error("KDNET datagram has the wrong direction bit (from {0:?})")]
    WrongDirection(crate::kdnet::Direction),
    /// A Poke or Response body of the wrong size (other control kinds are values, not errors).
    #[error("malformed KDNET control message: {0}")]
    BadControlMessage(&'static str),
    /// A handshake message that does not fit the endpoint's state or role: a Response that does
    /// not echo the last poke, or a call the endpoint's role never makes.
    #[error("KDNET handshake: {0}")]
    Handshake(&'static str),
    /// The KDNET key string could not be parsed.
    #[error(transparent)]
    Key(#[from] KeyError),
}
