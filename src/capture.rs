//! Reading KDNET traffic out of packet captures, for `kdleak decode`.
//!
//! A capture is whatever Wireshark, tcpdump or dumpcap saved while WinDbg talked to a target:
//! legacy pcap (either byte order, micro- or nanosecond timestamps) or pcapng, optionally gzip
//! compressed. [`read_udp_datagrams`] turns it into the list of UDP datagrams it carries, in file
//! order, with their frame numbers so a decoded packet can be found again in Wireshark.
//!
//! Captures come from users and may be damaged, cut short or not captures at all, so every length
//! read from the file is checked before use and nothing here panics: a bad frame is counted and
//! skipped, a file cut short yields what was read before the cut ([`CaptureRead::truncated`]), and
//! only damage that makes the rest of the file unreadable is an error. The lints below make the
//! compiler hold us to that (no indexing, unchecked arithmetic or unwrap on file data).
//!
//! Container parsing uses `pcap-parser`; the link, IP and UDP layers are decoded here
//! (`capture/frame.rs`), since they are a few fixed-size headers.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo
)]

mod bytes_at;
mod collect;
mod error;
mod frame;
mod input;
mod pcap;
mod pcapng;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;

pub use error::CaptureError;
pub use frame::{is_supported_link_type, link_type_name};

/// Largest capture (after gzip decompression) we load into memory: 1 GiB. KDNET sessions are a
/// few megabytes; anything bigger is almost certainly the wrong file or a gzip bomb.
pub const MAX_CAPTURE_BYTES: u64 = 1 << 30;

/// Largest single frame we accept (1 MiB). A UDP datagram is at most 64 KiB; a frame length far
/// above that means the record header is garbage, not a big packet.
pub const MAX_FRAME_BYTES: u32 = 1 << 20;

/// One UDP datagram found in a capture.
#[derive(Debug, Clone, PartialEq)]
pub struct UdpDatagram {
    /// 1-based frame number in the file, the same number Wireshark shows in its "No." column.
    pub index: usize,
    /// Capture time, seconds since the Unix epoch (see [`CaptureRead::relative_time`]).
    pub time: f64,
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// The UDP payload (for KDNET, starts with `MDBG`).
    pub payload: Bytes,
}

/// The container format a capture was read from, for summaries and error reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureFormat {
    /// Legacy libpcap format.
    Pcap {
        /// The file was written big-endian.
        big_endian: bool,
        /// Timestamps have nanosecond rather than microsecond resolution.
        nanosecond: bool,
    },
    /// pcapng (any number of sections and interfaces).
    PcapNg,
}

/// Everything [`read_udp_datagrams`] found in a capture.
///
/// Every frame is counted exactly once: it became a datagram or it is in one of the `skipped_*`
/// counters, so `frames == datagrams.len() + skipped()`.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureRead {
    /// Container format.
    pub format: CaptureFormat,
    /// The file was gzip-compressed.
    pub gzipped: bool,
    /// UDP datagrams in file order.
    pub datagrams: Vec<UdpDatagram>,
    /// Packet records in the file (pcap records, pcapng enhanced/simple/obsolete packet blocks).
    pub frames: usize,
    /// Frames that are not UDP: other IP protocols, ARP, other EtherTypes.
    pub skipped_non_udp: usize,
    /// UDP datagrams split into IP fragments; they are not reassembled (KDNET never fragments).
    pub skipped_fragments: usize,
    /// Frames whose headers are inconsistent or cut short (e.g. by a small snap length).
    pub skipped_malformed: usize,
    /// Frames on interfaces whose link type this reader does not decode (pcapng only).
    pub skipped_unsupported_link: usize,
    /// Number of frames seen per link type (see [`link_type_name`]).
    pub link_types: BTreeMap<u16, usize>,
    /// The file ended in the middle of a frame or block: the capture was cut short and the last
    /// frame is missing. The frames before the cut are all here.
    pub truncated: bool,
    /// Time of the first frame in the file (any frame, not only UDP), seconds since the epoch.
    pub start_time: Option<f64>,
}

impl CaptureRead {
    /// Frames that did not become a datagram.
    pub fn skipped(&self) -> usize {
        self.skipped_non_udp
            .saturating_add(self.skipped_fragments)
            .saturating_add(self.skipped_malformed)
            .saturating_add(self.skipped_unsupported_link)
    }

    /// Seconds from the first frame of the capture to `datagram`, like Wireshark's default time
    /// column; easier to read in reports than epoch times.
    pub fn relative_time(&self, datagram: &UdpDatagram) -> f64 {
        datagram.time - self.start_time.unwrap_or(datagram.time)
    }
}

/// Reads the capture at `path` (pcap or pcapng, gzip-compressed or not) and returns its UDP
/// datagrams.
///
/// Errors name what to check: a missing or unreadable path, a file that is not a capture, a link
/// type we cannot decode, or damage that makes the rest of the file unreadable.
pub fn read_udp_datagrams(path: &Path) -> Result<CaptureRead, CaptureError> {
    let content = input::read_file(path)?;
    read_udp_datagrams_from_bytes(&content)
}

/// Like [`read_udp_datagrams`], on the content of a capture file already in memory.
pub fn read_udp_datagrams_from_bytes(content: &[u8]) -> Result<CaptureRead, CaptureError> {
    let unpacked = input::gunzip_if_compressed(content)?;
    let data: &[u8] = &unpacked.data;
    let mut collector = match input::detect(data)? {
        input::Container::Pcap => pcap::walk(data)?,
        input::Container::PcapNg => pcapng::walk(data)?,
    };
    collector.read.gzipped = unpacked.gzipped;
    collector.read.truncated |= unpacked.truncated;
    collector.finish()
}
