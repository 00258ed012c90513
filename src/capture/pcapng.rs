//! Walking a pcapng file: a sequence of sections, each a Section Header Block (which fixes the
//! byte order), Interface Description Blocks (link type and clock of each interface), and packet
//! blocks that name their interface.
//!
//! Block framing (type, length, trailing length) is checked here, so a block we skip or cannot
//! parse never desynchronises the walk; `pcap-parser` parses the block contents. A damaged
//! packet block is counted as a malformed frame; damage to the framing or to a section or
//! interface header ends the walk with an error, since later blocks can no longer be found or
//! interpreted.

use std::num::NonZeroU64;

use pcap_parser::traits::PcapNGPacketBlock;
use pcap_parser::{
    parse_enhancedpacketblock_be, parse_enhancedpacketblock_le, parse_interfacedescriptionblock_be,
    parse_interfacedescriptionblock_le, parse_sectionheaderblock, parse_simplepacketblock_be,
    parse_simplepacketblock_le, InterfaceDescriptionBlock, OptionCode, EPB_MAGIC, IDB_MAGIC,
    SHB_MAGIC, SPB_MAGIC,
};

use super::bytes_at::{array, from, range, u16_at, u32_at};
use super::collect::Collector;
use super::{CaptureError, CaptureFormat};

/// Obsolete Packet Block (pcapng drafts before EPB); old Wireshark versions wrote it.
const OPB_MAGIC: u32 = 0x0000_0002;
/// Block type, block length, trailing block length.
const MIN_BLOCK_LEN: usize = 12;
const BOM_LE: [u8; 4] = [0x4d, 0x3c, 0x2b, 0x1a];
const BOM_BE: [u8; 4] = [0x1a, 0x2b, 0x3c, 0x4d];

/// What an interface's packets need to be decoded.
struct Interface {
    link_type: u16,
    /// Timestamp units per second.
    resolution: NonZeroU64,
    /// Seconds added to every timestamp.
    offset_seconds: i64,
    /// Zero means "no limit".
    snaplen: u32,
}

impl Interface {
    /// Seconds since the epoch of a 64-bit timestamp in this interface's units.
    fn time(&self, high: u32, low: u32) -> f64 {
        let ticks = (u64::from(high) << 32) | u64::from(low);
        let whole = ticks / self.resolution;
        let fraction = ticks % self.resolution;
        self.offset_seconds as f64 + whole as f64 + fraction as f64 / self.resolution.get() as f64
    }
}

/// Walk state: the current section's byte order and interfaces.
struct Walker {
    collector: Collector,
    big_endian: bool,
    interfaces: Vec<Interface>,
    /// Time of the last timestamped packet, given to Simple Packet Blocks, which have none.
    last_time: f64,
}

/// Reads every block of a pcapng file (whose magic [`super::input::detect`] already checked).
pub(super) fn walk(data: &[u8]) -> Result<Collector, CaptureError> {
    let mut walker = Walker {
        collector: Collector::new(CaptureFormat::PcapNg),
        big_endian: false,
        interfaces: Vec::new(),
        last_time: 0.0,
    };
    let mut offset = 0;
    while let Some(rest) = from(data, offset).filter(|rest| !rest.is_empty()) {
        let frame = walker.collector.next_frame_number();
        let corrupt = |reason: String| CaptureError::CorruptBlock {
            frame,
            offset,
            reason,
        };
        let Some((block_type, block)) =
            frame_block(rest, &mut walker.big_endian).map_err(corrupt)?
        else {
            walker.collector.mark_truncated();
            break;
        };
        walker.block(block_type, block).map_err(corrupt)?;
        offset = offset.saturating_add(block.len());
    }
    Ok(walker.collector)
}

/// Finds the block at the start of `rest`: its type (in the section's byte order) and all its
/// bytes. A Section Header Block sets `big_endian` from its byte-order magic first, since its
/// length is already in the new section's order. `Ok(None)` means the file ends inside the
/// block.
fn frame_block<'a>(
    rest: &'a [u8],
    big_endian: &mut bool,
) -> Result<Option<(u32, &'a [u8])>, String> {
    let Some(raw_type) = array::<4>(rest, 0) else {
        return Ok(None);
    };
    // The SHB type is a byte palindrome, so it reads the same in either order.
    if u32::from_le_bytes(raw_type) == SHB_MAGIC {
        match array::<4>(rest, 8) {
            None => return Ok(None),
            Some(BOM_LE) => *big_endian = false,
            Some(BOM_BE) => *big_endian = true,
            Some(other) => {
                return Err(format!(
                    "section header has byte-order magic {other:02x?}, expected 4d 3c 2b 1a or 1a 2b 3c 4d"
                ))
            }
        }
    }
    let (Some(block_type), Some(declared)) =
        (u32_at(rest, 0, *big_endian), u32_at(rest, 4, *big_endian))
    else {
        return Ok(None);
    };
    let len = usize::try_from(declared).unwrap_or(usize::MAX);
    if len < MIN_BLOCK_LEN || len % 4 != 0 {
        return Err(format!(
            "block of type {block_type:#x} has length {declared}, which is not a multiple of 4 of at least 12"
        ));
    }
    let Some(block) = range(rest, 0, len) else {
        return Ok(None);
    };
    let trailing = u32_at(block, len.saturating_sub(4), *big_endian);
    if trailing != Some(declared) {
        return Err(format!(
            "block of type {block_type:#x} has length {declared} but trailing length {}",
            trailing.unwrap_or(0)
        ));
    }
    Ok(Some((block_type, block)))
}

impl Walker {
    /// Handles one complete block. `Err` is a reason the file cannot be read further.
    fn block(&mut self, block_type: u32, block: &[u8]) -> Result<(), String> {
        match block_type {
            SHB_MAGIC => self.section(block),
            IDB_MAGIC => self.interface(block),
            EPB_MAGIC => {
                self.enhanced_packet(block);
                Ok(())
            }
            SPB_MAGIC => {
                self.simple_packet(block);
                Ok(())
            }
            OPB_MAGIC => {
                self.obsolete_packet(block);
                Ok(())
            }
            // Name resolution, statistics, secrets, custom blocks...: nothing we need.
            _ => Ok(()),
        }
    }

    /// A new section: interfaces are numbered afresh.
    fn section(&mut self, block: &[u8]) -> Result<(), String> {
        let (_, header) = parse_sectionheaderblock(block)
            .map_err(|_| "pcap-parser rejected the section header block".to_string())?;
        if header.major_version != 1 {
            return Err(format!(
                "section header has pcapng version {}.{}, only 1.x exists",
                header.major_version, header.minor_version
            ));
        }
        self.interfaces.clear();
        Ok(())
    }

    /// An interface description; its position in the section is its interface id.
    fn interface(&mut self, block: &[u8]) -> Result<(), String> {
        let id = self.interfaces.len();
        let parsed = if self.big_endian {
            parse_interfacedescriptionblock_be(block)
        } else {
            parse_interfacedescriptionblock_le(block)
        };
        let (_, idb) = parsed
            .map_err(|_| format!("pcap-parser rejected the description of interface {id}"))?;
        let (tsresol, offset_seconds) = clock_options(&idb, self.big_endian);
        let resolution = timestamp_resolution(tsresol).ok_or_else(|| {
            format!("interface {id} has timestamp resolution {tsresol:#04x}, which is out of range")
        })?;
        self.interfaces.push(Interface {
            link_type: u16::try_from(idb.linktype.0).unwrap_or(u16::MAX),
            resolution,
            offset_seconds,
            snaplen: idb.snaplen,
        });
        Ok(())
    }

    /// An Enhanced Packet Block: interface id, 64-bit timestamp, frame.
    fn enhanced_packet(&mut self, block: &[u8]) {
        let parsed = if self.big_endian {
            parse_enhancedpacketblock_be(block)
        } else {
            parse_enhancedpacketblock_le(block)
        };
        let Ok((_, epb)) = parsed else {
            return self.collector.malformed_frame();
        };
        let if_id = usize::try_from(epb.if_id).unwrap_or(usize::MAX);
        self.timestamped_packet(if_id, epb.ts_high, epb.ts_low, epb.packet_data());
    }

    /// A Simple Packet Block: interface 0, no timestamp, frame cut to the interface's snaplen.
    fn simple_packet(&mut self, block: &[u8]) {
        let parsed = if self.big_endian {
            parse_simplepacketblock_be(block)
        } else {
            parse_simplepacketblock_le(block)
        };
        let (Ok((_, spb)), Some(interface)) = (parsed, self.interfaces.first()) else {
            return self.collector.malformed_frame();
        };
        let data = spb.packet_data();
        let snaplen = usize::try_from(interface.snaplen).unwrap_or(usize::MAX);
        let data = match snaplen {
            0 => data,
            _ => data.get(..snaplen).unwrap_or(data),
        };
        self.collector
            .frame(interface.link_type, self.last_time, data);
    }

    /// An Obsolete Packet Block, which `pcap-parser` does not know: like an EPB with a 16-bit
    /// interface id and a 16-bit drop count.
    fn obsolete_packet(&mut self, block: &[u8]) {
        let be = self.big_endian;
        let fields = (
            u16_at(block, 8, be),
            u32_at(block, 12, be),
            u32_at(block, 16, be),
            u32_at(block, 20, be),
        );
        let (Some(if_id), Some(high), Some(low), Some(caplen)) = fields else {
            return self.collector.malformed_frame();
        };
        let end = usize::try_from(caplen).map_or(usize::MAX, |len| len.saturating_add(28));
        // The data must end before the 4-byte trailing length.
        let Some(data) = range(block, 28, end).filter(|_| end <= block.len().saturating_sub(4))
        else {
            return self.collector.malformed_frame();
        };
        self.timestamped_packet(usize::from(if_id), high, low, data);
    }

    /// Records a packet with a timestamp from interface `if_id`.
    fn timestamped_packet(&mut self, if_id: usize, high: u32, low: u32, data: &[u8]) {
        let Some(interface) = self.interfaces.get(if_id) else {
            return self.collector.malformed_frame();
        };
        let time = interface.time(high, low);
        self.last_time = time;
        self.collector.frame(interface.link_type, time, data);
    }
}

/// The interface's `if_tsresol` (default 6: microseconds) and `if_tsoffset` (default 0)
/// options. Read here rather than from `pcap-parser`'s fields, which decode `if_tsoffset`
/// little-endian even in big-endian sections.
fn clock_options(idb: &InterfaceDescriptionBlock<'_>, big_endian: bool) -> (u8, i64) {
    let mut tsresol = None;
    let mut offset = None;
    for option in &idb.options {
        match option.code {
            OptionCode::IfTsresol => {
                tsresol = tsresol.or(option.value().first().copied());
            }
            OptionCode::IfTsoffset => {
                let value = array::<8>(option.value(), 0).map(|bytes| match big_endian {
                    true => i64::from_be_bytes(bytes),
                    false => i64::from_le_bytes(bytes),
                });
                offset = offset.or(value);
            }
            _ => {}
        }
    }
    (tsresol.unwrap_or(6), offset.unwrap_or(0))
}

/// Timestamp units per second: `10^n`, or `2^n` when the top bit is set. `None` if it does not
/// fit in 64 bits.
fn timestamp_resolution(tsresol: u8) -> Option<NonZeroU64> {
    let base: u64 = if tsresol & 0x80 == 0 { 10 } else { 2 };
    base.checked_pow(u32::from(tsresol & 0x7f))
        .and_then(NonZeroU64::new)
}
