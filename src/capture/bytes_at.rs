//! Bounds-checked fixed-size reads: every header field in a capture goes through these, so a
//! short or lying length becomes `None` instead of a panic.

/// `N` bytes at `at`, or `None` if `data` is too short.
pub(super) fn array<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
    data.get(at..)?.first_chunk::<N>().copied()
}

/// The byte at `at`.
pub(super) fn u8_at(data: &[u8], at: usize) -> Option<u8> {
    data.get(at).copied()
}

/// Big-endian (network order) `u16` at `at`.
pub(super) fn be_u16(data: &[u8], at: usize) -> Option<u16> {
    array(data, at).map(u16::from_be_bytes)
}

/// `u16` at `at` in the file's byte order.
pub(super) fn u16_at(data: &[u8], at: usize, big_endian: bool) -> Option<u16> {
    let bytes = array(data, at)?;
    Some(if big_endian {
        u16::from_be_bytes(bytes)
    } else {
        u16::from_le_bytes(bytes)
    })
}

/// `u32` at `at` in the file's byte order.
pub(super) fn u32_at(data: &[u8], at: usize, big_endian: bool) -> Option<u32> {
    let bytes = array(data, at)?;
    Some(if big_endian {
        u32::from_be_bytes(bytes)
    } else {
        u32::from_le_bytes(bytes)
    })
}

/// `data[start..end]`, or `None` if the range is inverted or past the end.
pub(super) fn range(data: &[u8], start: usize, end: usize) -> Option<&[u8]> {
    data.get(start..end)
}

/// Everything from `start` on, or `None` if `start` is past the end.
pub(super) fn from(data: &[u8], start: usize) -> Option<&[u8]> {
    data.get(start..)
}
