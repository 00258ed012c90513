//! Walking a legacy pcap file: a 24-byte file header, then records of a 16-byte header (24 in
//! the "modified" format) and the frame.
//!
//! Record lengths are checked here before `pcap-parser` slices the frame, so a damaged length
//! is reported as damage and a file cut short as truncation, rather than both looking like
//! "incomplete".

use pcap_parser::{
    parse_pcap_frame, parse_pcap_frame_be, parse_pcap_frame_modified, parse_pcap_header,
    LegacyPcapBlock, PcapHeader,
};

use super::bytes_at::{from, u32_at};
use super::collect::Collector;
use super::frame::{is_supported_link_type, link_type_name};
use super::{CaptureError, CaptureFormat, MAX_FRAME_BYTES};

const FILE_HEADER_LEN: usize = 24;

/// How this file lays out its records.
struct Layout {
    big_endian: bool,
    modified: bool,
    /// Units of the sub-second timestamp field per second.
    ticks_per_second: f64,
    link_type: u16,
}

impl Layout {
    fn record_header_len(&self) -> usize {
        if self.modified {
            24
        } else {
            16
        }
    }
}

/// Reads every record of a pcap file (whose magic [`super::input::detect`] already checked).
pub(super) fn walk(data: &[u8]) -> Result<Collector, CaptureError> {
    let (header, layout) = file_header(data)?;
    let mut collector = Collector::new(CaptureFormat::Pcap {
        big_endian: layout.big_endian,
        nanosecond: header.is_nanosecond_precision(),
    });
    let mut offset = FILE_HEADER_LEN;
    while let Some(rest) = from(data, offset).filter(|rest| !rest.is_empty()) {
        let frame = collector.next_frame_number();
        let corrupt = |reason: String| CaptureError::CorruptBlock {
            frame,
            offset,
            reason,
        };
        let Some(record_len) = record_len(rest, &layout).map_err(corrupt)? else {
            collector.mark_truncated();
            break;
        };
        let record = parse_record(rest, &layout)
            .ok_or_else(|| corrupt("pcap-parser rejected the record header".to_string()))?;
        collector.frame(layout.link_type, timestamp(&record, &layout), record.data);
        offset = offset.saturating_add(record_len);
    }
    Ok(collector)
}

/// Parses the file header and refuses link types we cannot decode: a pcap file has one link
/// type for all its frames, so there is no point walking them.
fn file_header(data: &[u8]) -> Result<(PcapHeader, Layout), CaptureError> {
    let corrupt = |reason: &str| CaptureError::CorruptBlock {
        frame: 1,
        offset: 0,
        reason: reason.to_string(),
    };
    let header = match parse_pcap_header(data) {
        Ok((_, header)) => header,
        Err(pcap_parser::nom::Err::Incomplete(_)) => {
            return Err(corrupt("the file ends inside the 24-byte pcap file header"))
        }
        Err(_) => return Err(corrupt("pcap-parser rejected the pcap file header")),
    };
    // The upper 16 bits of the field hold FCS-length flags (pcap spec, "LinkType and
    // additional information"); the link type proper is the lower 16.
    let link_type = u16::try_from(header.network.0 & 0xffff).unwrap_or(u16::MAX);
    if !is_supported_link_type(link_type) {
        return Err(CaptureError::UnsupportedLinkType {
            link_type,
            name: link_type_name(link_type),
        });
    }
    let layout = Layout {
        big_endian: header.is_bigendian(),
        modified: header.is_modified_format(),
        ticks_per_second: if header.is_nanosecond_precision() {
            1e9
        } else {
            1e6
        },
        link_type,
    };
    Ok((header, layout))
}

/// Total length of the record starting `rest`: `Ok(None)` if the file ends inside it
/// (truncated), `Err` if its captured length is absurd (damaged header).
fn record_len(rest: &[u8], layout: &Layout) -> Result<Option<usize>, String> {
    let header_len = layout.record_header_len();
    let Some(caplen) = u32_at(rest, 8, layout.big_endian) else {
        return Ok(None);
    };
    if caplen > MAX_FRAME_BYTES {
        return Err(format!(
            "record claims {caplen} captured bytes (limit {MAX_FRAME_BYTES})"
        ));
    }
    let total = usize::try_from(caplen)
        .ok()
        .and_then(|caplen| caplen.checked_add(header_len));
    Ok(total.filter(|&total| total <= rest.len()))
}

/// Lets `pcap-parser` slice a record that [`record_len`] found complete.
fn parse_record<'a>(rest: &'a [u8], layout: &Layout) -> Option<LegacyPcapBlock<'a>> {
    let parsed = if layout.modified {
        parse_pcap_frame_modified(rest)
    } else if layout.big_endian {
        parse_pcap_frame_be(rest)
    } else {
        parse_pcap_frame(rest)
    };
    parsed.ok().map(|(_, record)| record)
}

/// Seconds since the epoch. f64 keeps microseconds exactly and nanoseconds to within a few
/// hundred, which is plenty for ordering and display.
fn timestamp(record: &LegacyPcapBlock<'_>, layout: &Layout) -> f64 {
    f64::from(record.ts_sec) + f64::from(record.ts_usec) / layout.ticks_per_second
}
