//! The allocate/free log `VfPoolTraces` (verifier.md §6), read once, newest record first, and
//! indexed by address range, so every outstanding allocation gets its latest allocation stack
//! and history from one pass — instead of one full scan per address as `!verifier 80` does.

use crate::kernel::Memory;
use crate::symbols::TypeDesc;

use super::error::{Result, VerifierError};
use super::facts;
use indicatif::{ProgressBar, ProgressStyle};

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
    /// `VfPoolTraces`: the ring's address.
    pub base: u64,
    pub length: u64,
    pub index: u64,
    pub frames_per_record: u32,
    pub records: Vec<Record>,
    /// Entries (slots, written or not) this log covers: the ring's length, or fewer when a
    /// newest-first read stopped early.
    pub entries_read: u64,
}

/// Largest single read of the ring; the session splits it into transport-sized requests.
const READ_BLOCK: usize = 0x10000;

/// A bar over the log's bytes with rate and ETA: at 115200 baud the log takes 12–40 minutes
/// (peers.md §6). Hidden unless asked for and stderr is a terminal (indicatif checks).
fn progress_bar(wanted: bool, bytes: u64) -> ProgressBar {
    if !wanted || bytes < 2 * READ_BLOCK as u64 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(bytes);
    if let Ok(style) = ProgressStyle::with_template(
        "reading the allocation log {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(250));
    bar
}

/// Reads the whole ring. `None` when the build logs nothing (`VfPoolTraces` is NULL).
pub async fn read_log<M: Memory>(mem: &mut M, nt: &Nt<'_>) -> Result<Option<Log>> {
    let Some(ring) = read_ring(mem, nt).await? else {
        return Ok(None);
    };
    Ok(Some(read_log_since(mem, &ring, None, false).await?.0))
}

/// How [`read_log_since`] got the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogRead {
    /// The whole ring was read (first read, or the ring changed or wrapped past what was seen).
    Full { records: u64 },
    /// Only the records written since the previous read (`VfPoolTracesIndex` − its old value).
    Since { new_records: u64 },
}

impl LogRead {
    /// Records this read fetched from the target.
    pub fn fetched(&self) -> u64 {
        match *self {
            LogRead::Full { records } => records,
            LogRead::Since { new_records } => new_records,
        }
    }
}

/// The ring's header and the layout of its entries ([`read_ring`]).
pub struct Ring {
    base: u64,
    length: u64,
    index: u64,
    entry_size: usize,
    frames_per_record: u32,
    frame_size: u64,
    address: crate::symbols::Field,
    size: crate::symbols::Field,
    thread: crate::symbols::Field,
    stack_offset: u64,
}

/// Reads `VfPoolTraces`, its length and index, and the record layout. `None` when the build
/// logs nothing (`VfPoolTraces` is NULL).
pub async fn read_ring<M: Memory>(mem: &mut M, nt: &Nt<'_>) -> Result<Option<Ring>> {
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
    let stack = nt.field(TY, "StackTrace")?;
    let (frames_per_record, frame_size) = match &stack.ty {
        TypeDesc::Array { count, element, .. } => (*count as u32, element.size()),
        _ => (13, 8),
    };
    Ok(Some(Ring {
        base,
        length,
        index,
        entry_size,
        frames_per_record,
        frame_size,
        address: nt.field(TY, "Address")?,
        size: nt.field(TY, "Size")?,
        thread: nt.field(TY, "Thread")?,
        stack_offset: stack.offset,
    }))
}

impl Ring {
    /// Where the ring is, how long, and its `VfPoolTracesIndex` — what tells whether anything
    /// was allocated or freed since a previous pull (every tracked allocation and free writes a
    /// record).
    pub fn position(&self) -> (u64, u64, u64) {
        (self.base, self.length, self.index)
    }

    /// The log of this ring, holding `records` (newest first) from `entries_read` slots.
    fn log(&self, records: Vec<Record>, entries_read: u64) -> Log {
        Log {
            base: self.base,
            length: self.length,
            index: self.index,
            frames_per_record: self.frames_per_record,
            records,
            entries_read,
        }
    }

    /// The record in one entry's bytes; `None` for a never-written slot.
    fn record(&self, slot: u64, bytes: &[u8]) -> Option<Record> {
        let field = |f| value(bytes, f).unwrap_or(0);
        let (address, thread) = (field(&self.address), field(&self.thread));
        if address == 0 && thread == 0 {
            return None; // never written
        }
        let frames = (0..self.frames_per_record as usize)
            .map(|i| {
                let at = self.stack_offset as usize + i * self.frame_size as usize;
                bytes
                    .get(at..at + 8)
                    .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            })
            .take_while(|&frame| frame != 0)
            .collect();
        Some(Record {
            slot,
            address,
            size: field(&self.size),
            thread,
            frames,
        })
    }

    /// Reads `count` consecutive entries from `first_slot` (no wrap).
    async fn read_slots<M: Memory>(
        &self,
        mem: &mut M,
        first_slot: u64,
        count: u64,
        bar: &ProgressBar,
    ) -> Result<Vec<u8>> {
        let total = self.entry_size * count as usize;
        let start = self.base + first_slot * self.entry_size as u64;
        // Grows as reads succeed: a hostile length must not reserve gigabytes up front.
        let mut bytes = Vec::with_capacity(total.min(READ_BLOCK));
        while bytes.len() < total {
            let take = READ_BLOCK.min(total - bytes.len());
            bytes.extend(
                read(
                    mem,
                    start + bytes.len() as u64,
                    take,
                    "the VfPoolTraces log",
                )
                .await?,
            );
            bar.inc(take as u64);
        }
        Ok(bytes)
    }
}

/// Reads the ring incrementally: with the log of a previous read (`prev`, from the same boot),
/// only the entries written since (`VfPoolTracesIndex` tells how many) are fetched and merged
/// in front of the older records, whose overwritten slots are dropped. The whole ring is read
/// when there is no previous log, when the ring moved or changed size, or when the index moved
/// by a ring's length or more (it wrapped past what was seen, or went backwards: a new boot).
pub async fn read_log_since<M: Memory>(
    mem: &mut M,
    ring: &Ring,
    prev: Option<Log>,
    progress: bool,
) -> Result<(Log, LogRead)> {
    let mask = ring.length - 1;
    let new = prev.as_ref().and_then(|p| {
        let same = p.base == ring.base
            && p.length == ring.length
            && p.frames_per_record == ring.frames_per_record;
        let n = ring.index.wrapping_sub(p.index) & 0xFFFF_FFFF;
        (same && n < ring.length).then_some(n)
    });
    if let (Some(n), Some(mut prev)) = (new, prev) {
        let first = (prev.index + 1) & mask;
        let mut bytes = Vec::new();
        let head = n.min(ring.length - first);
        let bar = progress_bar(progress, n * ring.entry_size as u64);
        if head > 0 {
            bytes = ring.read_slots(mem, first, head, &bar).await?;
        }
        if n > head {
            bytes.extend(ring.read_slots(mem, 0, n - head, &bar).await?);
        }
        bar.finish_and_clear();
        let mut records: Vec<Record> = (0..n)
            .rev()
            .filter_map(|k| {
                let slot = (first + k) & mask;
                ring.record(
                    slot,
                    &bytes[k as usize * ring.entry_size..][..ring.entry_size],
                )
            })
            .collect();
        let overwritten = |slot: u64| (slot.wrapping_sub(first) & mask) < n;
        records.extend(prev.records.drain(..).filter(|r| !overwritten(r.slot)));
        // The previous log covered the whole ring; with the new entries it still does.
        let log = ring.log(records, ring.length);
        return Ok((log, LogRead::Since { new_records: n }));
    }
    let bar = progress_bar(progress, ring.length * ring.entry_size as u64);
    let bytes = ring.read_slots(mem, 0, ring.length, &bar).await?;
    bar.finish_and_clear();
    let newest = facts::newest_log_slot(ring.index, ring.length);
    let records: Vec<Record> = (0..ring.length)
        .filter_map(|back| {
            let slot = (newest + ring.length - back) & mask;
            ring.record(
                slot,
                &bytes[slot as usize * ring.entry_size..][..ring.entry_size],
            )
        })
        .collect();
    let read = LogRead::Full {
        records: records.len() as u64,
    };
    Ok((ring.log(records, ring.length), read))
}

/// The first newest-first batch: about one full-size read. Leaks under investigation are
/// usually recent, so their records are among the newest; batches then double.
const FIRST_NEWEST_BYTES: usize = 0x1000;

/// Reads the ring newest record first and stops as soon as every address of `wanted` (sorted)
/// has a record at exactly that address: each outstanding allocation's newest allocation
/// record, which is its stack. The stacks are those a whole-ring read gives (records are
/// searched in the same newest-first order); older records are not read. Returns the log as
/// far as it was read and whether that was the whole ring.
pub async fn read_log_until_found<M: Memory>(
    mem: &mut M,
    ring: &Ring,
    wanted: &[u64],
    progress: bool,
) -> Result<(Log, bool)> {
    let mask = ring.length - 1;
    let newest = facts::newest_log_slot(ring.index, ring.length);
    let mut found = vec![false; wanted.len()];
    let mut missing = wanted.len();
    let mut records = Vec::new();
    let mut slots_read = 0u64;
    let max_batch = (READ_BLOCK / ring.entry_size).max(1) as u64;
    let mut batch = (FIRST_NEWEST_BYTES / ring.entry_size).clamp(1, max_batch as usize) as u64;
    let bar = progress_bar(progress, ring.length * ring.entry_size as u64);
    while slots_read < ring.length && missing > 0 {
        let count = batch.min(ring.length - slots_read);
        let last = (newest + ring.length - slots_read) & mask;
        let first = (last + ring.length + 1 - count) & mask;
        let mut bytes = if first <= last {
            ring.read_slots(mem, first, count, &bar).await?
        } else {
            ring.read_slots(mem, first, ring.length - first, &bar)
                .await?
        };
        if first > last {
            bytes.extend(ring.read_slots(mem, 0, last + 1, &bar).await?);
        }
        for k in (0..count).rev() {
            let slot = (first + k) & mask;
            let entry = &bytes[k as usize * ring.entry_size..][..ring.entry_size];
            let Some(record) = ring.record(slot, entry) else {
                continue;
            };
            if let Ok(i) = wanted.binary_search(&record.address) {
                if !found[i] {
                    found[i] = true;
                    missing -= 1;
                }
            }
            records.push(record);
        }
        slots_read += count;
        batch = (batch * 2).min(max_batch);
    }
    bar.finish_and_clear();
    let log = ring.log(records, slots_read);
    Ok((log, slots_read == ring.length))
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
