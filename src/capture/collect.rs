//! Turning the frames a container walker finds into [`CaptureRead`]: numbering, counting,
//! decoding. Shared by the pcap and pcapng walkers so both count the same way.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::frame::{decode, link_type_name, Outcome};
use super::{CaptureError, CaptureFormat, CaptureRead, UdpDatagram};

/// Accumulates the result while a container is walked.
pub(super) struct Collector {
    pub(super) read: CaptureRead,
    /// The first unsupported link type a frame was captured on, for the error when nothing at
    /// all could be decoded.
    first_unsupported: Option<u16>,
}

impl Collector {
    pub(super) fn new(format: CaptureFormat) -> Self {
        Collector {
            read: CaptureRead {
                format,
                gzipped: false,
                datagrams: Vec::new(),
                frames: 0,
                skipped_non_udp: 0,
                skipped_fragments: 0,
                skipped_malformed: 0,
                skipped_unsupported_link: 0,
                link_types: BTreeMap::new(),
                truncated: false,
                start_time: None,
            },
            first_unsupported: None,
        }
    }

    /// The 1-based number the next frame will get; error messages use it to say where the
    /// damage is.
    pub(super) fn next_frame_number(&self) -> usize {
        self.read.frames.saturating_add(1)
    }

    /// Records the file was cut short mid-frame.
    pub(super) fn mark_truncated(&mut self) {
        self.read.truncated = true;
    }

    /// Counts a packet record too damaged to say which interface or link type it belongs to.
    pub(super) fn malformed_frame(&mut self) {
        self.read.frames = self.next_frame_number();
        bump(&mut self.read.skipped_malformed);
    }

    /// Takes one frame captured at `time` on a `link_type` interface.
    pub(super) fn frame(&mut self, link_type: u16, time: f64, data: &[u8]) {
        let index = self.next_frame_number();
        self.read.frames = index;
        self.read.start_time.get_or_insert(time);
        let seen = self.read.link_types.entry(link_type).or_insert(0);
        *seen = seen.saturating_add(1);
        match decode(link_type, data) {
            Outcome::Udp { src, dst, payload } => self.read.datagrams.push(UdpDatagram {
                index,
                time,
                src,
                dst,
                payload: Bytes::copy_from_slice(payload),
            }),
            Outcome::NonUdp => bump(&mut self.read.skipped_non_udp),
            Outcome::Fragment => bump(&mut self.read.skipped_fragments),
            Outcome::Malformed => bump(&mut self.read.skipped_malformed),
            Outcome::UnsupportedLink => {
                self.first_unsupported.get_or_insert(link_type);
                bump(&mut self.read.skipped_unsupported_link);
            }
        }
    }

    /// The result, or an unsupported-link-type error when frames exist but none could be
    /// decoded because of their link type (a silent empty result would hide the real problem).
    pub(super) fn finish(self) -> Result<CaptureRead, CaptureError> {
        match self.first_unsupported {
            Some(link_type) if self.read.datagrams.is_empty() => {
                Err(CaptureError::UnsupportedLinkType {
                    link_type,
                    name: link_type_name(link_type),
                })
            }
            _ => Ok(self.read),
        }
    }
}

fn bump(counter: &mut usize) {
    *counter = counter.saturating_add(1);
}
