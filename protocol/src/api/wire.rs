//! Small helpers shared by the message codecs: nom error mapping, little-endian stores into fixed
//! unions, and the "slack" bookkeeping that makes real captures re-encode byte for byte.

use bytes::{BufMut, Bytes, BytesMut};
use nom::number::complete::{le_u16, le_u32};
use nom::{IResult, Parser};

use crate::{Error, Result};

/// What every field parser returns: nom over a byte slice with nom's default error.
pub(crate) type PResult<'a, T> = IResult<&'a [u8], T>;

/// Checks that `input` holds at least `needed` bytes, then runs `parser` on it. A nom failure can
/// only mean "ran out of bytes", so it is reported as [`Error::Truncated`] naming `what`.
pub(crate) fn parse_fixed<'a, T>(
    what: &'static str,
    needed: usize,
    input: &'a [u8],
    parser: impl FnOnce(&'a [u8]) -> PResult<'a, T>,
) -> Result<T> {
    let truncated = Error::Truncated {
        what,
        needed,
        available: input.len(),
    };
    if input.len() < needed {
        return Err(truncated);
    }
    parser(&input[..needed])
        .map(|(_, value)| value)
        .map_err(|_| truncated)
}

/// The head DBGKD_DEBUG_IO and DBGKD_TRACE_IO share (kd.md §3.9): ApiNumber u32, ProcessorLevel
/// u16, Processor u16, then a union of `N` bytes; the rest of the payload is the message's data.
pub(crate) struct IoHead<const N: usize> {
    pub api: u32,
    pub processor_level: u16,
    pub processor: u16,
    pub union: [u8; N],
    pub data: Bytes,
}

/// Parses the shared head of a `len`-byte DEBUG_IO/TRACE_IO structure named `what`.
pub(crate) fn parse_io_head<const N: usize>(
    what: &'static str,
    len: usize,
    payload: &[u8],
) -> Result<IoHead<N>> {
    let (api, processor_level, processor) =
        parse_fixed(what, len, payload, |i| (le_u32, le_u16, le_u16).parse(i))?;
    Ok(IoHead {
        api,
        processor_level,
        processor,
        union: array(&payload[8..]),
        data: Bytes::copy_from_slice(&payload[len..]),
    })
}

/// Encodes the shared head, the union and the data.
pub(crate) fn encode_io(
    api: u32,
    processor_level: u16,
    processor: u16,
    union: &[u8],
    data: &[u8],
) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + union.len() + data.len());
    out.put_u32_le(api);
    out.put_u16_le(processor_level);
    out.put_u16_le(processor);
    out.put_slice(union);
    out.put_slice(data);
    out.freeze()
}

/// Copies a fixed-size array out of a slice that is known to be long enough.
pub(crate) fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

pub(crate) fn put_u8(buf: &mut [u8], at: usize, value: u8) {
    buf[at] = value;
}

pub(crate) fn put_u16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u64(buf: &mut [u8], at: usize, value: u64) {
    buf[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

pub(crate) fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(array(&buf[at..]))
}

/// Which bytes of an `N`-byte union a typed view writes. Found by writing the view over all-zero
/// and all-ones buffers: a byte the view leaves alone keeps its background, so it differs.
pub(crate) fn owned_mask<const N: usize>(write: impl Fn(&mut [u8; N])) -> [bool; N] {
    let mut zeros = [0x00u8; N];
    let mut ones = [0xFFu8; N];
    write(&mut zeros);
    write(&mut ones);
    let mut mask = [false; N];
    for (i, owned) in mask.iter_mut().enumerate() {
        *owned = zeros[i] == ones[i];
    }
    mask
}

/// The "slack" of a union: its raw bytes with every byte the typed view owns set to zero. Peers
/// leave junk in the bytes a message does not use (WinDbg's stack garbage in requests, stale
/// ExceptionInformation entries in state changes); keeping it lets `encode(parse(x)) == x`, and
/// zeroing the owned bytes keeps `parse(encode(v)) == v` for values whose slack is zero there.
pub(crate) fn slack_of<const N: usize>(raw: &[u8; N], write: impl Fn(&mut [u8; N])) -> [u8; N] {
    let mask = owned_mask(write);
    let mut slack = *raw;
    for (byte, owned) in slack.iter_mut().zip(mask) {
        if owned {
            *byte = 0;
        }
    }
    slack
}

/// The union as sent: the slack first, then the typed view written over it.
pub(crate) fn compose<const N: usize>(slack: &[u8; N], write: impl Fn(&mut [u8; N])) -> [u8; N] {
    let mut union = *slack;
    write(&mut union);
    union
}

/// Text for summaries: printable ASCII kept, the rest escaped, cut at `limit` bytes.
pub(crate) fn escape(bytes: &[u8], limit: usize) -> String {
    let mut out = String::new();
    for &b in bytes.iter().take(limit) {
        out.extend(std::ascii::escape_default(b).map(char::from));
    }
    if bytes.len() > limit {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_mask_finds_written_bytes_even_when_values_match_the_background() {
        // Writing 0x00 and 0xFF values must still count as "owned".
        let write = |u: &mut [u8; 8]| {
            put_u16(u, 1, 0x00FF);
            put_u8(u, 6, 0);
        };
        let mask = owned_mask(write);
        assert_eq!(mask, [false, true, true, false, false, false, true, false]);
    }

    #[test]
    fn slack_and_compose_are_inverse() {
        let raw = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let write = |u: &mut [u8; 8]| put_u32(u, 2, 0x0605_0403);
        let slack = slack_of(&raw, write);
        assert_eq!(slack, [1, 2, 0, 0, 0, 0, 7, 8]);
        assert_eq!(compose(&slack, write), raw);
    }

    #[test]
    fn parse_fixed_reports_truncation() {
        let short = [0u8; 3];
        let result = parse_fixed("THING", 4, &short, nom::number::complete::le_u32);
        assert_eq!(
            result,
            Err(Error::Truncated {
                what: "THING",
                needed: 4,
                available: 3
            })
        );
    }
}
