//! Changes that happen while the simulated target runs: a scenario's `[[timeline]]` entries
//! (`every = "60s"`, a driver, `allocate = 4096` or `allocate_and_free = 512`, a tag and a
//! stack), applied by target time between a Continue and the next break-in.
//!
//! Every change keeps Driver Verifier's structures consistent exactly as the scenario layout
//! builds them (`scenario/layout.rs`, verifier.md §5–§6), with offsets from the same ISF tables
//! (never the host's PDB code): the tracker slot comes from the driver's free SLIST
//! (`PoolTrackers`), or from a new tracker page pushed on `PoolPageHeaders`; the driver's and
//! `MmVerifierData`'s current/peak counters and `AllocationsAttempted`/`AllocationsSucceeded`
//! move; each allocation and free adds one `VfPoolTraces` record at `++VfPoolTracesIndex`.
//!
//! Target time only passes while the target runs; `time_scale` compresses it (60: one target
//! minute per wall second) so tests of watch mode are fast.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::isf::{Isf, StructWriter};
use super::scenario::{
    charged_size, parse_num, Counters, LayoutReport, PoolKind, Result, Scenario, ScenarioError,
    SlistFormat, TrackerRuntime, POOL_PAGE_SIGNATURE, TRACKER_PAGE as PAGE, TRACKER_SLOT as SLOT,
};
use crate::sim::machine::memory::SimMemory;

/// One resolved entry and when it next fires (target time since boot).
#[derive(Debug, Clone)]
struct Entry {
    every: Duration,
    next: Duration,
    tracker: usize,
    size: u64,
    free: bool,
    paged: bool,
    tag: u64,
    caller: u64,
    thread: u64,
    stack: Vec<u64>,
    free_stack: Vec<u64>,
}

/// A running target's timeline: the entries, the verifier state they continue from, and the
/// target clock. Cloned with the machine, so a reboot starts it again from the boot state.
#[derive(Clone)]
pub struct Timeline {
    isf: Arc<Isf>,
    entries: Vec<Entry>,
    trackers: Vec<TrackerRuntime>,
    global: Counters,
    attempted: u64,
    slist: SlistFormat,
    pool_next: u64,
    ring: u64,
    entry_size: u64,
    frames: u64,
    length: u64,
    index: u64,
    mm_verifier_data: u64,
    index_global: u64,
    tracking_global: Option<u64>,
    /// Target time since boot.
    elapsed: Duration,
    /// Wall seconds → target seconds.
    time_scale: f64,
    /// Changes applied so far (allocations + frees).
    pub applied: u64,
}

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline")
            .field("entries", &self.entries.len())
            .field("elapsed", &self.elapsed)
            .field("time_scale", &self.time_scale)
            .field("index", &self.index)
            .field("applied", &self.applied)
            .finish()
    }
}

impl Timeline {
    /// The timeline of `sc` over its layout `report`; `None` when the scenario has none.
    pub fn new(sc: &Scenario, report: &LayoutReport) -> Result<Option<Timeline>> {
        if sc.timeline.is_empty() {
            return Ok(None);
        }
        let isf = Isf::load_cached(&report.isf_path)?;
        let symbols = &report.image.symbols;
        let sym = |name: &str| {
            symbols
                .get(name)
                .copied()
                .ok_or_else(|| ScenarioError::Manifest(format!("timeline: no symbol `{name}`")))
        };
        let resolve = |text: &str| -> Result<u64> {
            let t = text.trim();
            if !t.contains('!') {
                return parse_num(t)
                    .ok_or_else(|| ScenarioError::Invalid(format!("timeline: bad frame `{t}`")));
            }
            let (name, off) = match t.split_once('+') {
                Some((n, o)) => (
                    n,
                    parse_num(o).ok_or_else(|| {
                        ScenarioError::Invalid(format!("timeline: bad offset in `{t}`"))
                    })?,
                ),
                None => (t, 0),
            };
            let key = symbols
                .keys()
                .find(|k| k.eq_ignore_ascii_case(name))
                .ok_or_else(|| ScenarioError::Invalid(format!("timeline: unknown `{t}`")))?;
            Ok(symbols[key] + off)
        };
        let mut entries = Vec::new();
        for spec in &sc.timeline {
            let every = crate::duration::parse(&spec.every)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    ScenarioError::Invalid(format!("timeline: bad period `{}`", spec.every))
                })?;
            let tracker = report
                .runtime
                .trackers
                .iter()
                .position(|t| t.driver.eq_ignore_ascii_case(&spec.driver))
                .ok_or_else(|| {
                    ScenarioError::Invalid(format!(
                        "timeline: `{}` is not a verified, loaded driver",
                        spec.driver
                    ))
                })?;
            let (size, free) = match (spec.allocate, spec.allocate_and_free) {
                (Some(n), None) => (n.0, false),
                (None, Some(n)) => (n.0, true),
                _ => {
                    return Err(ScenarioError::Invalid(
                        "timeline: give exactly one of `allocate` and `allocate_and_free`".into(),
                    ))
                }
            };
            let stack: Vec<u64> = spec
                .stack
                .iter()
                .map(|f| resolve(f))
                .collect::<Result<_>>()?;
            let free_stack: Vec<u64> = spec
                .free_stack
                .iter()
                .map(|f| resolve(f))
                .collect::<Result<_>>()?;
            let placed = report
                .drivers
                .iter()
                .find(|d| d.name.eq_ignore_ascii_case(&spec.driver));
            let caller = match &spec.caller {
                Some(c) => resolve(c)?,
                None => placed
                    .and_then(|d| {
                        stack
                            .iter()
                            .copied()
                            .find(|&f| (d.base..d.base + d.size).contains(&f))
                    })
                    .or_else(|| placed.map(|d| d.base))
                    .unwrap_or(0),
            };
            entries.push(Entry {
                every,
                next: every,
                tracker,
                size,
                free,
                paged: spec.pool == PoolKind::Paged,
                tag: u64::from(tag_value(&spec.tag)?),
                caller,
                thread: spec.thread.map_or(report.runtime.default_thread, |n| n.0),
                stack,
                free_stack,
            });
        }
        let entry_size = report.trace_entry_size;
        Ok(Some(Timeline {
            entries,
            trackers: report.runtime.trackers.clone(),
            global: report.runtime.global,
            attempted: report.runtime.allocations_attempted,
            slist: report.runtime.slist,
            pool_next: (report.runtime.pool_next + PAGE) & !(PAGE - 1),
            ring: report.trace_array,
            entry_size,
            frames: report.trace_frames,
            length: report.trace_length,
            index: report.trace_index,
            mm_verifier_data: sym("MmVerifierData")?,
            index_global: sym("VfPoolTracesIndex")?,
            tracking_global: symbols.get("VerifierIsTrackingPool").copied(),
            elapsed: Duration::ZERO,
            time_scale: 1.0,
            applied: 0,
            isf,
        }))
    }

    pub fn time_scale(&self) -> f64 {
        self.time_scale
    }

    /// Wall seconds → target seconds (60: one target minute per wall second).
    pub fn set_time_scale(&mut self, scale: f64) {
        if scale.is_finite() && scale > 0.0 {
            self.time_scale = scale;
        }
    }

    /// Target time since boot.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Lets `wall` of running time pass (scaled) and applies every change that falls due.
    pub fn run_for(&mut self, memory: &mut SimMemory, wall: Duration) {
        let target = Duration::try_from_secs_f64(wall.as_secs_f64() * self.time_scale)
            .unwrap_or(Duration::ZERO);
        self.advance(memory, target);
    }

    /// Lets `target` of target time pass and applies every change that falls due, in time order.
    pub fn advance(&mut self, memory: &mut SimMemory, target: Duration) {
        self.elapsed += target;
        loop {
            let due = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.next <= self.elapsed)
                .min_by_key(|(i, e)| (e.next, *i))
                .map(|(i, _)| i);
            let Some(i) = due else { break };
            let entry = self.entries[i].clone();
            self.entries[i].next += entry.every;
            if let Err(error) = self.apply(memory, &entry) {
                tracing::warn!(%error, "sim timeline: change not applied");
                // Never retry a change that cannot be applied (it would spin).
                self.entries[i].next = Duration::MAX;
            }
        }
    }

    /// One allocation (and its free, for `allocate_and_free`).
    fn apply(&mut self, memory: &mut SimMemory, e: &Entry) -> Result<()> {
        let charged = charged_size(e.size, false);
        let va = self.block(memory, charged, !e.free);
        let slot = self.take_slot(memory, e.tracker)?;
        let inuse = "_VI_POOL_ENTRY_INUSE";
        let pe = self.isf.offset("_VI_POOL_ENTRY", "InUse")?;
        self.set(memory, slot + pe, inuse, "VirtualAddress", va)?;
        self.set(memory, slot + pe, inuse, "CallingAddress", e.caller)?;
        self.set(memory, slot + pe, inuse, "NumberOfBytes", charged)?;
        self.set(memory, slot + pe, inuse, "Tag", e.tag)?;
        self.trackers[e.tracker].counters.alloc(e.paged, charged);
        self.global.alloc(e.paged, charged);
        self.attempted += 1;
        self.log(memory, va, e.size, e.thread, &e.stack)?;
        self.applied += 1;
        if e.free {
            self.set(memory, slot + pe, inuse, "NumberOfBytes", charged | 1)?;
            self.put_slot(memory, e.tracker, slot)?;
            self.trackers[e.tracker].counters.free(e.paged, charged);
            self.global.free(e.paged, charged);
            self.log(memory, va, charged, e.thread, &e.free_stack)?;
            self.applied += 1;
        } else {
            // The back-pointer to the tracker slot in the block's last qword (verifier.md §5.2).
            memory.write(va + charged - 8, &slot.to_le_bytes());
        }
        self.write_counters(memory, e.tracker)
    }

    /// A block address from the pool range; a live block is mapped (zeroed).
    fn block(&mut self, memory: &mut SimMemory, charged: u64, live: bool) -> u64 {
        let align = if charged >= PAGE { PAGE } else { 16 };
        let a = (self.pool_next + align - 1) & !(align - 1);
        let a = if align < PAGE { a + 0x10 } else { a };
        self.pool_next = a + charged + 0x20;
        if live {
            memory.map_zeroed(a, charged);
        }
        a
    }

    /// Pops a free tracker slot, or takes a new tracker page as the layout does.
    fn take_slot(&mut self, memory: &mut SimMemory, ti: usize) -> Result<u64> {
        if let Some(slot) = self.trackers[ti].free.pop() {
            self.trackers[ti].ops_free += 1;
            self.write_free_list(memory, ti)?;
            return Ok(slot);
        }
        let page = (self.pool_next + PAGE - 1) & !(PAGE - 1);
        self.pool_next = page + PAGE;
        memory.map_zeroed(page, PAGE);
        let ph = "_VI_POOL_PAGE_HEADER";
        let hdr = page + self.isf.offset("_VI_POOL_ENTRY", "PageHeader")?;
        let t = &self.trackers[ti];
        let (older, vd) = (t.pages.last().copied().unwrap_or(0), t.verified_data);
        self.set(memory, hdr, ph, "NextPage", older)?;
        self.set(memory, hdr, ph, "VerifierEntry", vd)?;
        self.set(memory, hdr, ph, "Signature", POOL_PAGE_SIGNATURE)?;
        let pe = self.isf.offset("_VI_POOL_ENTRY", "InUse")?;
        let nf = self.isf.offset("_VI_POOL_ENTRY", "NextFree")?;
        for s in 1..PAGE / SLOT - 1 {
            let sa = page + s * SLOT;
            self.set(memory, sa + pe, "_VI_POOL_ENTRY_INUSE", "NumberOfBytes", 1)?;
            let next = self.trackers[ti].free.last().copied().unwrap_or(0);
            self.set(memory, sa + nf, "_SLIST_ENTRY", "Next", next)?;
            self.trackers[ti].free.push(sa);
            self.trackers[ti].ops_free += 1;
        }
        let t = &mut self.trackers[ti];
        t.pages.push(page);
        t.ops_pages += 1;
        let (first, depth, seq, vd) = (page, t.pages.len() as u64, t.ops_pages, t.verified_data);
        let head = self.field_address(vd, "PoolPageHeaders")?;
        self.write_slist(memory, head, first, depth, seq)?;
        self.write_free_list(memory, ti)?;
        Ok(page + (PAGE / SLOT - 1) * SLOT)
    }

    /// Pushes a freed slot back on the driver's free SLIST.
    fn put_slot(&mut self, memory: &mut SimMemory, ti: usize, slot: u64) -> Result<()> {
        let nf = self.isf.offset("_VI_POOL_ENTRY", "NextFree")?;
        let next = self.trackers[ti].free.last().copied().unwrap_or(0);
        self.set(memory, slot + nf, "_SLIST_ENTRY", "Next", next)?;
        self.trackers[ti].free.push(slot);
        self.trackers[ti].ops_free += 1;
        self.write_free_list(memory, ti)
    }

    fn write_free_list(&mut self, memory: &mut SimMemory, ti: usize) -> Result<()> {
        let t = &self.trackers[ti];
        let (first, depth, seq) = (
            t.free.last().copied().unwrap_or(0),
            t.free.len() as u64,
            t.ops_free,
        );
        let head = self.field_address(t.verified_data, "PoolTrackers")?;
        self.write_slist(memory, head, first, depth, seq)
    }

    fn field_address(&self, vd: u64, field: &str) -> Result<u64> {
        Ok(vd + self.isf.offset("_VF_TARGET_VERIFIED_DRIVER_DATA", field)?)
    }

    /// The driver's and the global counters, and the allocation statistics.
    fn write_counters(&mut self, memory: &mut SimMemory, ti: usize) -> Result<()> {
        let vd = self.trackers[ti].verified_data;
        for (f, v) in self.trackers[ti].counters.fields() {
            self.set(memory, vd, "_VF_TARGET_VERIFIED_DRIVER_DATA", f, v)?;
        }
        let (mvd, mt) = (self.mm_verifier_data, "_MM_DRIVER_VERIFIER_DATA");
        let mut fields: BTreeMap<&str, u64> = self.global.fields().into_iter().collect();
        fields.insert("AllocationsAttempted", self.attempted);
        fields.insert("AllocationsSucceeded", self.attempted);
        for (f, v) in fields {
            if self.isf.has_field(mt, f) {
                self.set(memory, mvd, mt, f, v)?;
            }
        }
        if let Some(a) = self.tracking_global {
            memory.write(a, &1u32.to_le_bytes());
        }
        Ok(())
    }

    /// One `VfPoolTraces` record at `++VfPoolTracesIndex` (verifier.md §6).
    fn log(
        &mut self,
        memory: &mut SimMemory,
        address: u64,
        size: u64,
        thread: u64,
        frames: &[u64],
    ) -> Result<()> {
        self.index = (self.index + 1) & 0xFFFF_FFFF;
        let e = self.ring + (self.index & (self.length - 1)) * self.entry_size;
        let tt = "_VF_POOL_TRACE";
        self.set(memory, e, tt, "Address", address)?;
        self.set(memory, e, tt, "Size", size)?;
        self.set(memory, e, tt, "Thread", thread)?;
        for k in 0..self.frames {
            let v = frames.get(k as usize).copied().unwrap_or(0);
            self.set(memory, e, tt, &format!("StackTrace[{k}]"), v)?;
        }
        memory.write(self.index_global, &(self.index as u32).to_le_bytes());
        Ok(())
    }

    /// Writes the SLIST_HEADER at `h` (as `write_slist` in the layout, verifier.md §5.4).
    fn write_slist(
        &self,
        memory: &mut SimMemory,
        h: u64,
        first: u64,
        depth: u64,
        seq: u64,
    ) -> Result<()> {
        let t = "_SLIST_HEADER";
        match self.slist {
            SlistFormat::Header8 => {
                self.set(memory, h, t, "Header8.Depth", depth)?;
                self.set(memory, h, t, "Header8.Sequence", seq & 0x1FF)?;
                self.set(
                    memory,
                    h,
                    t,
                    "Header8.NextEntry",
                    (first >> 4) & ((1 << 39) - 1),
                )?;
                self.set(memory, h, t, "Header8.HeaderType", 0)?;
            }
            SlistFormat::Header16 => {
                self.set(memory, h, t, "Header16.Depth", depth)?;
                self.set(memory, h, t, "Header16.Sequence", seq & 0xFFFF_FFFF_FFFF)?;
                self.set(memory, h, t, "Header16.HeaderType", 1)?;
                self.set(memory, h, t, "Header16.Init", 1)?;
                self.set(memory, h, t, "Header16.NextEntry", first >> 4)?;
            }
            SlistFormat::X64 => {
                self.set(memory, h, t, "HeaderX64.Depth", depth)?;
                self.set(memory, h, t, "HeaderX64.Sequence", seq & 0xFFFF_FFFF_FFFF)?;
                self.set(memory, h, t, "HeaderX64.NextEntry", first >> 4)?;
            }
        }
        Ok(())
    }

    /// Sets `ty.path` of the structure at `addr` in target memory (read, modify, write back).
    fn set(
        &self,
        memory: &mut SimMemory,
        addr: u64,
        ty: &str,
        path: &str,
        value: u64,
    ) -> Result<()> {
        let size = self.isf.type_size(ty)? as usize;
        let (mut buf, complete) = memory.read(addr, size);
        if !complete || buf.len() != size {
            return Err(ScenarioError::Invalid(format!(
                "timeline: {ty} at {addr:#x} is not mapped"
            )));
        }
        StructWriter::new(&self.isf, &mut buf).set(ty, path, value)?;
        memory.write(addr, &buf);
        Ok(())
    }
}

fn tag_value(tag: &str) -> Result<u32> {
    if tag.len() == 4 && tag.is_ascii() && !tag.starts_with("0x") {
        let b = tag.as_bytes();
        return Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    }
    parse_num(tag)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| ScenarioError::Invalid(format!("bad tag `{tag}`")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_target_minutes_of_watch_leak() {
        let mut machine = crate::sim::Machine::for_scenario("watch-leak").unwrap();
        let index_at = |m: &crate::sim::Machine| {
            let t = m.timeline.as_ref().unwrap();
            let (b, _) = m.memory.read(t.index_global, 4);
            u32::from_le_bytes(b.try_into().unwrap())
        };
        let start = index_at(&machine);
        machine.set_time_scale(60.0);
        // 10 s of wall time at 60× = 10 target minutes: 10 leaks, 60 alloc+free pairs.
        machine.run_for(Duration::from_secs(10));
        let t = machine.timeline.as_ref().unwrap();
        assert_eq!(t.elapsed(), Duration::from_secs(600));
        assert_eq!(t.applied, 10 + 2 * 60);
        assert_eq!(index_at(&machine) - start, 130);
        let leaky = t.trackers.iter().find(|t| t.driver == "leaky.sys").unwrap();
        let bytes: u64 = leaky.counters.fields()[5].1;
        assert_eq!(
            bytes,
            11 * charged_size(4096, false),
            "boot block + 10 leaks"
        );
    }
}
