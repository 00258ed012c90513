//! Getting the capture's bytes: reading the file within the size limit, gunzipping by magic
//! number (not by file name, since captures get renamed), and recognising the container.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::bytes_at::array;
use super::{CaptureError, MAX_CAPTURE_BYTES};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
/// Legacy pcap magics as read little-endian: microsecond, nanosecond and "modified" (Kuznetsov)
/// in a little-endian file, then microsecond and nanosecond in a big-endian file.
const PCAP_MAGICS_LE: [u32; 5] = [
    0xa1b2_c3d4,
    0xa1b2_3c4d,
    0xa1b2_cd34,
    0xd4c3_b2a1,
    0x4d3c_b2a1,
];

/// The two container formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Container {
    Pcap,
    PcapNg,
}

/// A capture's content after gunzipping.
pub(super) struct Unpacked<'a> {
    pub(super) data: Cow<'a, [u8]>,
    pub(super) gzipped: bool,
    /// The gzip stream ended early; `data` holds what decompressed before the cut.
    pub(super) truncated: bool,
}

/// Reads the whole file, refusing files above the size limit before they fill memory.
pub(super) fn read_file(path: &Path) -> Result<Vec<u8>, CaptureError> {
    let unreadable = |source: io::Error| CaptureError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => CaptureError::NotFound {
            path: path.to_path_buf(),
        },
        _ => unreadable(source),
    })?;
    read_bounded(file, MAX_CAPTURE_BYTES).map_err(|error| match error {
        Bounded::Io(source, _) => unreadable(source),
        Bounded::TooLarge => too_large(),
    })
}

/// Gunzips `content` if it starts with the gzip magic; otherwise borrows it unchanged.
pub(super) fn gunzip_if_compressed(content: &[u8]) -> Result<Unpacked<'_>, CaptureError> {
    if array::<2>(content, 0) != Some(GZIP_MAGIC) {
        return Ok(Unpacked {
            data: Cow::Borrowed(content),
            gzipped: false,
            truncated: false,
        });
    }
    match read_bounded(MultiGzDecoder::new(content), MAX_CAPTURE_BYTES) {
        Ok(data) => Ok(Unpacked {
            data: Cow::Owned(data),
            gzipped: true,
            truncated: false,
        }),
        // A gzip file cut short (an interrupted download or copy): keep what decompressed.
        Err(Bounded::Io(source, partial)) if source.kind() == io::ErrorKind::UnexpectedEof => {
            Ok(Unpacked {
                data: Cow::Owned(partial),
                gzipped: true,
                truncated: true,
            })
        }
        Err(Bounded::Io(source, _)) => Err(CaptureError::Gzip { source }),
        Err(Bounded::TooLarge) => Err(too_large()),
    }
}

/// Recognises the container by its magic number.
pub(super) fn detect(data: &[u8]) -> Result<Container, CaptureError> {
    if array::<4>(data, 0) == Some(PCAPNG_MAGIC) {
        return Ok(Container::PcapNg);
    }
    match array::<4>(data, 0).map(u32::from_le_bytes) {
        Some(magic) if PCAP_MAGICS_LE.contains(&magic) => Ok(Container::Pcap),
        _ => Err(CaptureError::NotCapture {
            first_bytes: first_bytes(data),
        }),
    }
}

/// Why [`read_bounded`] stopped.
#[derive(Debug)]
pub(super) enum Bounded {
    /// A read error, with the bytes read before it.
    Io(io::Error, Vec<u8>),
    TooLarge,
}

/// Reads `reader` to the end, but no more than `limit` bytes: a gzip bomb or a huge file stops
/// at the limit instead of exhausting memory.
pub(super) fn read_bounded(reader: impl Read, limit: u64) -> Result<Vec<u8>, Bounded> {
    let mut data = Vec::new();
    match reader.take(limit.saturating_add(1)).read_to_end(&mut data) {
        Ok(_) if u64::try_from(data.len()).map_or(true, |len| len > limit) => {
            Err(Bounded::TooLarge)
        }
        Ok(_) => Ok(data),
        Err(error) => Err(Bounded::Io(error, data)),
    }
}

fn too_large() -> CaptureError {
    CaptureError::TooLarge {
        limit: MAX_CAPTURE_BYTES,
    }
}

/// Hex and text of up to the first 16 bytes, so the user can see what the file really is (a
/// text export, an HTML error page, an ETL trace...).
pub(super) fn first_bytes(data: &[u8]) -> String {
    if data.is_empty() {
        return "nothing (the file is empty)".to_string();
    }
    let head = data.get(..16).unwrap_or(data);
    let hex: Vec<String> = head.iter().map(|byte| format!("{byte:02x}")).collect();
    let printable: String = head
        .iter()
        .map(|&byte| match byte {
            0x20..=0x7e => char::from(byte),
            _ => '.',
        })
        .collect();
    let more = if data.len() > head.len() { "..." } else { "" };
    let gap = if more.is_empty() { "" } else { " " };
    format!("{}{gap}{more} (\"{printable}\"{more})", hex.join(" "))
}
