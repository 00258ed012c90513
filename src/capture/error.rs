//! Why a capture could not be read. Each message ends with what the user should check, since
//! the usual cause is the wrong file rather than a bug.

use std::io;
use std::path::PathBuf;

/// A capture file that could not be read at all. Damage limited to single frames is not an
/// error: such frames are counted in [`super::CaptureRead`] and skipped.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The path does not exist.
    #[error("capture file {} not found: check the path", path.display())]
    NotFound { path: PathBuf },

    /// The path exists but could not be read (permissions, a directory, an I/O error).
    #[error("cannot read capture file {}: {source}; check that it is a readable file", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The content starts with neither a pcap, a pcapng nor a gzip magic number.
    #[error(
        "not a pcap or pcapng file: it starts with {first_bytes}; expected a pcap magic \
         (d4 c3 b2 a1, a1 b2 c3 d4, 4d 3c b2 a1, a1 b2 3c 4d) or the pcapng magic (0a 0d 0d 0a), \
         optionally gzip-compressed; check the file, or re-save it from Wireshark as pcap or pcapng"
    )]
    NotCapture {
        /// Hex dump of up to the first 16 bytes, or "nothing (the file is empty)".
        first_bytes: String,
    },

    /// The gzip stream is damaged (bad header, bad deflate data or CRC mismatch).
    #[error("capture is gzip-compressed but the gzip data is damaged: {source}; check it with `gzip -t`")]
    Gzip {
        #[source]
        source: io::Error,
    },

    /// The file, or its decompressed content, is larger than [`super::MAX_CAPTURE_BYTES`].
    #[error(
        "capture is larger than {limit} bytes (after decompression); check that this is the right \
         file, or cut the KDNET part out with `editcap -r` or `tshark -w`"
    )]
    TooLarge { limit: u64 },

    /// Every frame is of a link type we cannot decode.
    #[error(
        "unsupported link type {link_type} ({name}): kdleak reads Ethernet, raw IP, Linux cooked \
         (SLL/SLL2) and loopback captures; check that the capture was taken on the network \
         interface that carries the KDNET traffic"
    )]
    UnsupportedLinkType { link_type: u16, name: &'static str },

    /// A record or block header is damaged so badly that nothing after it can be found.
    #[error(
        "corrupt capture at frame {frame} (byte offset {offset} of the uncompressed file): \
         {reason}; check the file with `capinfos`, or re-save it from Wireshark"
    )]
    CorruptBlock {
        /// 1-based number of the frame being read (the damage may be in a non-packet block
        /// just before it).
        frame: usize,
        /// Offset of the damaged record or block.
        offset: usize,
        reason: String,
    },
}
