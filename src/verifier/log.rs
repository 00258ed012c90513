//! The allocate/free log `VfPoolTraces` (verifier.md §6), read once, newest record first, and
//! indexed by address range, so every outstanding allocation gets its latest allocation stack
//! and history from one pass — instead of one full scan per address as `!verifier 80` does.

use crate::kernel::Memory;
use crate::symbols::TypeDesc;

use super::error::{Result, VerifierError};
use super::facts;
use super::layout::{read, read_u32, read_u64, value, Nt};

/// One written record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub slot: u64,
    pub address: u64,
    pub size: u64,
    pub thread: u64,
    pub frames: Vec<u64>,
}

/// The ring's header and its records, newest first.
#[derive(Debug, Default)]
pub struct Log {
    pub length: u64,
    pub index: u64,
    pub frames_per_record: u32,
    pub records: Vec<Record>,
}

/// Largest single read of the ring; the session splits it into transport-sized requests.
const READ_BLOCK: usize = 0x10000;

/// Reads the whole ring. `None` when the build logs nothing (`VfPoolTraces` is NULL).
pub async fn read_log<M: Memory>(mem: &mut M, nt: &Nt<'_>) -> Result<Option<Log>> {
    let base = read_u64(mem, nt.symbol("VfPoolTraces")?, "VfPoolTraces").await?;
    if base == 0 {
        return Ok(None);
    }
    let length =
        u64::from(read_u32(mem, nt.symbol("VfPoolTracesLength")?, "VfPoolTracesLength").await?);
    let index =
        u64::from(read_u32(mem, nt.symbol("VfPoolTracesIndex")?, "VfPoolTracesIndex").await?);
    if length == 0 || !length.is_power_of_two() || length > facts::MAX_LOG_LENGTH {
        return Err(VerifierError::Corrupt {
            what: "VfPoolTracesLength".into(),
            address: base,
            why: format!(
                "{length:#x} entries is not a power of two up to {:#x}",
                facts::MAX_LOG_LENGTH
            ),
        });
    }
    const TY: &str = "_VF_POOL_TRACE";
    let entry_size = nt.size(TY)? as usize;
    let (address, size, thread, stack) = (
        nt.field(TY, "Address")?,
        nt.field(TY, "Size")?,
        nt.field(TY, "Thread")?,
        nt.field(TY, "StackTrace")?,
    );
    let (frames_per_record, frame_size) = match &stack.ty {
        TypeDesc::Array { count, element, .. } => (*count as u32, element.size()),
        _ => (13, 8),
    };
    let total = entry_size * length as usize;
    let mut ring = Vec::with_capacity(total);
    while ring.len() < total {
        let take = READ_BLOCK.min(total - ring.len());
        ring.extend(read(mem, base + ring.len() as u64, take, "the VfPoolTraces log").await?);
    }
    let newest = facts::newest_log_slot(index, length);
    let mut records = Vec::new();
    for back in 0..length {
        let slot = (newest + length - back) & (length - 1);
        let bytes = &ring[slot as usize * entry_size..][..entry_size];
        let field = |f| value(bytes, f).unwrap_or(0);
        let (address, thread) = (field(&address), field(&thread));
        if address == 0 && thread == 0 {
            continue; // never written
        }
        let frames = (0..frames_per_record as usize)
            .map(|i| {
                let at = stack.offset as usize + i * frame_size as usize;
                bytes
                    .get(at..at + 8)
                    .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            })
            .take_while(|&frame| frame != 0)
            .collect();
        records.push(Record {
            slot,
            address,
            size: field(&size),
            thread,
            frames,
        });
    }
    Ok(Some(Log {
        length,
        index,
        frames_per_record,
        records,
    }))
}

/// For each of `addresses` (sorted ascending), the indices of the records whose range
/// `[Address, Address + Size)` contains it, newest first (verifier.md §6.4's filter). One pass
/// over the log with a binary search per record.
pub fn index_by_address(log: &Log, addresses: &[u64]) -> Vec<Vec<usize>> {
    let mut hits = vec![Vec::new(); addresses.len()];
    for (i, record) in log.records.iter().enumerate() {
        let end = record.address.saturating_add(record.size.max(1));
        let first = addresses.partition_point(|&a| a < record.address);
        for (slot, _) in addresses[first..]
            .iter()
            .enumerate()
            .take_while(|(_, &a)| a < end)
        {
            hits[first + slot].push(i);
        }
    }
    hits
}
