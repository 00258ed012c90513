//! Lays a [`Scenario`] out in memory from the ISF (verifier.md §2–§6, kd.md §4).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::super::isf::{link_list, utf16z, FieldUse, Isf, StructWriter};
use super::image::MemoryImage;
use super::pe::{map_pe, Manifest};
use super::{DriverState, PoolKind, Result, Scenario, ScenarioError, SlistFormat};

/// `_VF_TARGET_VERIFIED_DRIVER_DATA.Signature` / `_MI_VERIFIER_DRIVER_ENTRY.Signature`.
pub const VERIFIED_DATA_SIGNATURE: u64 = 0x9876_1940;
/// `_VI_POOL_PAGE_HEADER.Signature`.
pub const POOL_PAGE_SIGNATURE: u64 = 0x2132_1345;
/// Tracker page size.
pub const PAGE: u64 = 0x1000;
/// `_VI_POOL_ENTRY` slot size in a tracker page.
pub const SLOT: u64 = 0x20;

/// The kernel's charged size for a tracked allocation (verifier.md §5.2): special pool keeps the
/// request; otherwise `round_up_16(req + 8)` for requests ≤ 0xFE0, and for larger ones
/// `round_up(req + 8, 0x1000)` when `req + 8 ≥ 0x10000` or its page remainder is > 0xFC0.
pub fn charged_size(requested: u64, special: bool) -> u64 {
    if special {
        return requested;
    }
    let s = requested + 8;
    let r16 = (s + 15) & !15;
    if requested <= 0xFE0 {
        r16
    } else if s >= 0x10000 || (s & 0xFFF) > 0xFC0 {
        (s + 0xFFF) & !0xFFF
    } else {
        r16
    }
}

/// A placed allocation (what a correct `!verifier 3` must list, for live ones).
#[derive(Debug, Clone)]
pub struct PlacedAllocation {
    pub driver: String,
    pub address: u64,
    pub requested: u64,
    pub charged: u64,
    pub paged: bool,
    pub tag: u32,
    pub caller: u64,
    pub thread: u64,
    pub stack: Vec<u64>,
    /// Address of its `_VI_POOL_ENTRY` tracker slot.
    pub slot: u64,
    pub freed: bool,
    pub churn: bool,
}

/// A placed driver / module.
#[derive(Debug, Clone)]
pub struct PlacedDriver {
    pub name: String,
    pub base: u64,
    pub size: u64,
    pub loaded: bool,
    pub verified: bool,
    pub ldr_entry: Option<u64>,
    pub suspect_entry: Option<u64>,
    pub verified_data: Option<u64>,
    pub avl_node: Option<u64>,
    pub tracker_pages: Vec<u64>,
}

/// Everything [`Scenario::build_in`] produced.
#[derive(Debug, Clone)]
pub struct LayoutReport {
    pub image: MemoryImage,
    /// Every distinct ISF field the layout wrote (type, path, offset, size, bits), once each, in
    /// the order of first write.
    pub field_uses: Vec<FieldUse>,
    /// Modules in load order (kernel first), then configured-only drivers.
    pub drivers: Vec<PlacedDriver>,
    /// All allocations in event order (churn first).
    pub allocations: Vec<PlacedAllocation>,
    /// Trace ring: array address, entry size, frames per entry, length, final index.
    pub trace_array: u64,
    pub trace_entry_size: u64,
    pub trace_frames: u64,
    pub trace_length: u64,
    pub trace_index: u64,
    pub isf_path: std::path::PathBuf,
    /// The state a running target needs to keep changing these structures consistently (the
    /// simulator's timeline, [`crate::sim::world::timeline`]).
    pub runtime: RuntimeState,
}

/// One verified driver's tracker state after the layout: what the next allocation or free
/// continues from.
#[derive(Debug, Clone)]
pub struct TrackerRuntime {
    pub driver: String,
    /// Its `_VF_TARGET_VERIFIED_DRIVER_DATA`.
    pub verified_data: u64,
    /// Tracker pages, oldest first.
    pub pages: Vec<u64>,
    /// Free slots as a stack (last = the SLIST's first entry).
    pub free: Vec<u64>,
    pub ops_pages: u64,
    pub ops_free: u64,
    pub counters: Counters,
}

/// What the layout leaves for later changes (see [`LayoutReport::runtime`]).
#[derive(Debug, Clone)]
pub struct RuntimeState {
    pub slist: SlistFormat,
    /// Next free address of the simulated pool range.
    pub pool_next: u64,
    pub trackers: Vec<TrackerRuntime>,
    pub global: Counters,
    /// `MmVerifierData.AllocationsAttempted` / `AllocationsSucceeded` as written.
    pub allocations_attempted: u64,
    pub default_thread: u64,
}

#[derive(Default)]
pub(super) struct Mem {
    pub(super) regions: BTreeMap<u64, Vec<u8>>,
}

impl Mem {
    fn overlaps(&self, addr: u64, len: u64) -> Option<u64> {
        if let Some((&s, v)) = self.regions.range(..addr + len).next_back() {
            if s + v.len() as u64 > addr {
                return Some(s);
            }
        }
        None
    }
    pub(super) fn map(&mut self, addr: u64, bytes: Vec<u8>) -> Result<()> {
        if let Some(s) = self.overlaps(addr, bytes.len() as u64) {
            return Err(ScenarioError::Invalid(format!(
                "region {addr:#x}+{:#x} overlaps region at {s:#x}",
                bytes.len()
            )));
        }
        self.regions.insert(addr, bytes);
        Ok(())
    }
    fn slice_mut(&mut self, addr: u64, len: u64) -> Result<&mut [u8]> {
        let (&s, v) = self
            .regions
            .range_mut(..=addr)
            .next_back()
            .ok_or_else(|| ScenarioError::Invalid(format!("write to unmapped {addr:#x}")))?;
        let off = (addr - s) as usize;
        if off as u64 + len > v.len() as u64 {
            return Err(ScenarioError::Invalid(format!(
                "write {addr:#x}+{len:#x} outside region {s:#x}+{:#x}",
                v.len()
            )));
        }
        Ok(&mut v[off..off + len as usize])
    }
    pub(super) fn write(&mut self, addr: u64, bytes: &[u8]) -> Result<()> {
        self.slice_mut(addr, bytes.len() as u64)?
            .copy_from_slice(bytes);
        Ok(())
    }
}

/// Bump allocator over the simulated pool range, skipping reserved (scenario-fixed) ranges.
struct Pool {
    next: u64,
    reserved: Vec<(u64, u64)>,
}

impl Pool {
    fn alloc(&mut self, size: u64, align: u64) -> u64 {
        loop {
            let a = (self.next + align - 1) & !(align - 1);
            // Leave a 0x10 "pool header" gap before small blocks, like real pool.
            let a = if align < PAGE { a + 0x10 } else { a };
            let end = a + size;
            if let Some(&(_, re)) = self.reserved.iter().find(|&&(rs, re)| a < re && rs < end) {
                self.next = re;
                continue;
            }
            self.next = end;
            return a;
        }
    }
}

/// The layout under construction: mapped regions plus every ISF field written so far.
pub(super) struct B<'a> {
    pub(super) isf: &'a Isf,
    pub(super) mem: Mem,
    /// First write of each distinct (type, path), in order.
    log: Vec<FieldUse>,
    /// Scratch log of the current write and the (type, path) pairs already in `log`: a large
    /// generated scenario writes millions of fields but only ~100–200 distinct ones.
    scratch: Vec<FieldUse>,
    logged: HashMap<String, std::collections::HashSet<String>>,
    pool: Pool,
}

impl B<'_> {
    /// Sets `ty.path` of the structure at `addr`.
    pub(super) fn set(&mut self, addr: u64, ty: &str, path: &str, value: u64) -> Result<()> {
        let size = self.isf.type_size(ty)?;
        let buf = self.mem.slice_mut(addr, size)?;
        StructWriter::with_log(self.isf, buf, &mut self.scratch).set(ty, path, value)?;
        for u in self.scratch.drain(..) {
            let seen = self.logged.get(&u.ty).is_some_and(|p| p.contains(&u.path));
            if !seen {
                self.logged
                    .entry(u.ty.clone())
                    .or_default()
                    .insert(u.path.clone());
                self.log.push(u);
            }
        }
        Ok(())
    }
    pub(super) fn set_opt(&mut self, addr: u64, ty: &str, path: &str, value: u64) -> Result<()> {
        if self.isf.has_field(ty, path) {
            self.set(addr, ty, path, value)?;
        }
        Ok(())
    }
    fn size(&self, ty: &str) -> Result<u64> {
        Ok(self.isf.type_size(ty)?)
    }
    /// Allocates and maps a zeroed block.
    fn new_block(&mut self, size: u64, align: u64) -> Result<u64> {
        let a = self.pool.alloc(size, align);
        self.mem.map(a, vec![0; size as usize])?;
        Ok(a)
    }
    fn unicode(&mut self, addr: u64, ty: &str, path: &str, text: &str, buffer: u64) -> Result<()> {
        let len = (text.encode_utf16().count() * 2) as u64;
        self.set(addr, ty, &format!("{path}.Length"), len)?;
        self.set(addr, ty, &format!("{path}.MaximumLength"), len + 2)?;
        self.set(addr, ty, &format!("{path}.Buffer"), buffer)?;
        self.mem.write(buffer, &utf16z(text))
    }
    fn link(&mut self, head: u64, entries: &[u64]) -> Result<()> {
        let mut writes = vec![];
        link_list(head, entries, |a, f, b| {
            writes.push((a, f, b));
            Ok(())
        })?;
        for (a, f, b) in writes {
            self.set(a, "_LIST_ENTRY", "Flink", f)?;
            self.set(a, "_LIST_ENTRY", "Blink", b)?;
        }
        Ok(())
    }
}

fn tag_value(tag: &str) -> Result<u32> {
    if tag.len() == 4 && tag.is_ascii() && !tag.starts_with("0x") {
        let b = tag.as_bytes();
        return Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    }
    super::parse_num(tag)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| ScenarioError::Invalid(format!("bad tag `{tag}`")))
}

/// Current and peak pool counters (per driver and in `MmVerifierData`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    cur_paged: u64,
    cur_np: u64,
    paged_bytes: u64,
    np_bytes: u64,
    peak_paged: u64,
    peak_np: u64,
    peak_paged_bytes: u64,
    peak_np_bytes: u64,
}

impl Counters {
    pub(crate) fn alloc(&mut self, paged: bool, bytes: u64) {
        if paged {
            self.cur_paged += 1;
            self.paged_bytes += bytes;
        } else {
            self.cur_np += 1;
            self.np_bytes += bytes;
        }
        self.peak_paged = self.peak_paged.max(self.cur_paged);
        self.peak_np = self.peak_np.max(self.cur_np);
        self.peak_paged_bytes = self.peak_paged_bytes.max(self.paged_bytes);
        self.peak_np_bytes = self.peak_np_bytes.max(self.np_bytes);
    }
    pub(crate) fn free(&mut self, paged: bool, bytes: u64) {
        if paged {
            self.cur_paged -= 1;
            self.paged_bytes -= bytes;
        } else {
            self.cur_np -= 1;
            self.np_bytes -= bytes;
        }
    }
    pub(crate) fn fields(&self) -> [(&'static str, u64); 8] {
        [
            ("CurrentPagedPoolAllocations", self.cur_paged),
            ("CurrentNonPagedPoolAllocations", self.cur_np),
            ("PeakPagedPoolAllocations", self.peak_paged),
            ("PeakNonPagedPoolAllocations", self.peak_np),
            ("PagedBytes", self.paged_bytes),
            ("NonPagedBytes", self.np_bytes),
            ("PeakPagedBytes", self.peak_paged_bytes),
            ("PeakNonPagedBytes", self.peak_np_bytes),
        ]
    }
}

#[derive(Clone)]
struct SlotData {
    va: u64,
    caller: u64,
    bytes: u64,
    tag: u64,
}

#[derive(Default)]
struct Tracker {
    /// Tracker pages, oldest first.
    pages: Vec<u64>,
    /// Free-slot SLIST as a stack (last = first entry of the list).
    free: Vec<u64>,
    slots: HashMap<u64, SlotData>,
    ops_pages: u64,
    ops_free: u64,
    counters: Counters,
}

struct Event {
    address: u64,
    size: u64,
    thread: u64,
    frames: Vec<u64>,
}

pub(super) fn build(sc: &Scenario, root: &Path) -> Result<LayoutReport> {
    let fixture = root.join(&sc.kernel.fixture);
    let manifest = Manifest::load(&fixture)?;
    let isf_path = match &sc.kernel.isf {
        Some(p) => root.join(p),
        None => root.join("captures/isf").join(&manifest.isf),
    };
    let isf = Isf::load_cached(&isf_path)?;
    let isf: &Isf = &isf;
    let kimg = manifest.kernel()?.clone();
    let kbase = kimg.image_base;
    let ksym = |name: &str| -> Result<u64> {
        kimg.symbols
            .get(name)
            .map(|r| kbase + r)
            .ok_or_else(|| ScenarioError::Manifest(format!("kernel has no symbol `{name}`")))
    };
    let win7 = manifest.build < 9200;

    // ---- drivers: validate
    for d in &sc.drivers {
        if d.name.eq_ignore_ascii_case("ntoskrnl.exe") {
            return Err(ScenarioError::Invalid(
                "the kernel is implicit; do not list ntoskrnl.exe".into(),
            ));
        }
        if d.state.mapped()
            && !manifest
                .images
                .contains_key(d.image.as_deref().unwrap_or(&d.name))
        {
            return Err(ScenarioError::Invalid(format!(
                "driver `{}`: no image in {}",
                d.name,
                fixture.display()
            )));
        }
    }
    let driver_idx = |name: &str| {
        sc.drivers
            .iter()
            .position(|d| d.name.eq_ignore_ascii_case(name))
    };

    // ---- reserved ranges (scenario-fixed addresses)
    let mut reserved = vec![];
    for a in &sc.allocations {
        if let Some(addr) = a.address {
            if a.count != 1 {
                return Err(ScenarioError::Invalid(
                    "allocation with a fixed address needs count = 1".into(),
                ));
            }
            let ch = charged_size(a.size.0, a.special);
            reserved.push((addr.0 & !0xFFF, (addr.0 + ch.max(1) + 0xFFF) & !0xFFF));
        }
    }
    for d in &sc.drivers {
        if let Some(e) = d.suspect_entry {
            reserved.push((e.0 - 0x10, e.0 + 0x100));
        }
    }
    let pool_base = sc.kernel.pool_base.map(|n| n.0).unwrap_or(if win7 {
        0xfffffa80_02400000
    } else {
        0xffffc00a_00000000
    });
    let mut b = B {
        isf,
        mem: Mem::default(),
        log: vec![],
        scratch: vec![],
        logged: Default::default(),
        pool: Pool {
            next: pool_base,
            reserved,
        },
    };

    // ---- map images
    let kpe = map_pe(&fixture.join("ntoskrnl.exe"))?;
    if kpe.image_base != kbase {
        return Err(ScenarioError::Manifest(
            "ntoskrnl.exe ImageBase differs from manifest".into(),
        ));
    }
    let kpdata = kpe.exception_dir;
    let kentry = kpe.entry_rva;
    let (kcheck, kts) = (kpe.checksum, kpe.timestamp);
    b.mem.map(kbase, kpe.bytes)?;
    struct Module {
        name: String,
        full: String,
        base: u64,
        size: u64,
        entry: u32,
        pdata: (u32, u32),
        checksum: u32,
        timestamp: u32,
        driver: Option<usize>,
    }
    let mut modules = vec![Module {
        name: "ntoskrnl.exe".into(),
        full: "\\SystemRoot\\system32\\ntoskrnl.exe".into(),
        base: kbase,
        size: kimg.size_of_image,
        entry: kentry,
        pdata: kpdata,
        checksum: kcheck,
        timestamp: kts,
        driver: None,
    }];
    // (module name, load base, image file) of every loaded driver, for `module!Symbol+off`.
    let mut loaded_at: Vec<(String, u64, String)> = vec![];
    for (i, d) in sc.drivers.iter().enumerate() {
        if !d.state.mapped() {
            continue;
        }
        let file = d.image.clone().unwrap_or_else(|| d.name.clone());
        let mi = &manifest.images[&file];
        let mut pe = map_pe(&fixture.join(&file))?;
        if pe.image_base != mi.image_base {
            return Err(ScenarioError::Manifest(format!(
                "{file}: ImageBase differs from manifest"
            )));
        }
        let base = match d.base {
            Some(n) if n.0 & 0xFFF != 0 => {
                return Err(ScenarioError::Invalid(format!(
                    "driver `{}`: base {:#x} is not page-aligned",
                    d.name, n.0
                )))
            }
            Some(n) => n.0,
            None => mi.image_base,
        };
        if base != mi.image_base {
            relocate(&mut pe, base)
                .map_err(|m| ScenarioError::Invalid(format!("{file} at {base:#x}: {m}")))?;
        }
        if let Some(pdb_path) = &d.pdb_path {
            super::pe::set_pdb_path(&mut pe, pdb_path)
                .map_err(|m| ScenarioError::Invalid(format!("driver `{}`: {m}", d.name)))?;
        }
        loaded_at.push((Manifest::module_name(&d.name), base, file.clone()));
        modules.push(Module {
            name: d.name.clone(),
            full: d
                .full_name
                .clone()
                .unwrap_or_else(|| format!("\\SystemRoot\\system32\\drivers\\{}", d.name)),
            base,
            size: mi.size_of_image,
            entry: pe.entry_rva,
            pdata: pe.exception_dir,
            checksum: pe.checksum,
            timestamp: pe.timestamp,
            driver: Some(i),
        });
        b.mem.map(base, pe.bytes)?;
    }

    let mut placed: Vec<PlacedDriver> = modules
        .iter()
        .map(|m| PlacedDriver {
            name: m.name.clone(),
            base: m.base,
            size: m.size,
            loaded: true,
            verified: m.driver.map(|i| sc.drivers[i].verified).unwrap_or(false),
            ldr_entry: None,
            suspect_entry: None,
            verified_data: None,
            avl_node: None,
            tracker_pages: vec![],
        })
        .collect();

    let mut mod_range: HashMap<usize, (u64, u64)> = modules
        .iter()
        .filter_map(|m| m.driver.map(|d| (d, (m.base, m.size))))
        .collect();
    // Unloaded drivers: the range they were loaded at (their `MmUnloadedDrivers` record).
    let mut unloaded_ranges: Vec<(String, u64, u64)> = vec![];
    for (i, d) in sc.drivers.iter().enumerate() {
        if d.state != DriverState::Unloaded {
            continue;
        }
        let file = d.image.clone().unwrap_or_else(|| d.name.clone());
        if let Some(mi) = manifest.images.get(&file) {
            let base = d.base.map_or(mi.image_base, |n| n.0);
            mod_range.insert(i, (base, mi.size_of_image));
            unloaded_ranges.push((d.name.clone(), base, mi.size_of_image));
        }
    }
    let mod_range = mod_range;
    let driver_frame = |stack: &[u64], di: usize| -> Option<u64> {
        let (bs, sz) = *mod_range.get(&di)?;
        stack.iter().copied().find(|&f| f >= bs && f < bs + sz)
    };

    // ---- PsLoadedModuleList
    let ldr_ty = if isf.has_type("_KLDR_DATA_TABLE_ENTRY") {
        "_KLDR_DATA_TABLE_ENTRY"
    } else {
        "_LDR_DATA_TABLE_ENTRY"
    };
    let ldr_size = b.size(ldr_ty)?;
    let mut ldr_links = vec![];
    for (mi, m) in modules.iter().enumerate() {
        let full_len = utf16z(&m.full).len() as u64;
        let base_len = utf16z(&m.name).len() as u64;
        let e = b.new_block(ldr_size + full_len + base_len, 16)?;
        b.set(e, ldr_ty, "DllBase", m.base)?;
        b.set(e, ldr_ty, "EntryPoint", m.base + m.entry as u64)?;
        b.set(e, ldr_ty, "SizeOfImage", m.size)?;
        b.unicode(e, ldr_ty, "FullDllName", &m.full, e + ldr_size)?;
        b.unicode(e, ldr_ty, "BaseDllName", &m.name, e + ldr_size + full_len)?;
        // LDRP_ENTRY_PROCESSED | LDRP_IMAGE_DLL-ish flags; drivers in the real list carry 0x49104000-like values.
        b.set(e, ldr_ty, "Flags", 0x0900_4000)?;
        b.set_opt(e, ldr_ty, "LoadCount", 1)?;
        b.set_opt(e, ldr_ty, "CheckSum", m.checksum as u64)?;
        b.set_opt(e, ldr_ty, "TimeDateStamp", m.timestamp as u64)?;
        b.set_opt(e, ldr_ty, "SizeOfImageNotRounded", m.size)?;
        if isf.has_field(ldr_ty, "ExceptionTable") && m.pdata.0 != 0 {
            b.set(e, ldr_ty, "ExceptionTable", m.base + m.pdata.0 as u64)?;
            b.set(e, ldr_ty, "ExceptionTableSize", m.pdata.1 as u64)?;
        }
        placed[mi].ldr_entry = Some(e);
        ldr_links.push(e + isf.offset(ldr_ty, "InLoadOrderLinks")?);
    }
    let ps_list = ksym("PsLoadedModuleList")?;
    b.link(ps_list, &ldr_links)?;

    // ---- VfSuspectDriversList
    let sde = "_VF_SUSPECT_DRIVER_ENTRY";
    let sde_size = b.size(sde)?;
    let mut suspect: HashMap<usize, u64> = HashMap::new();
    let mut suspect_links = vec![];
    let (mut sum_loads, mut sum_unloads) = (0u64, 0u64);
    for (i, d) in sc.drivers.iter().enumerate() {
        if !d.verified {
            continue;
        }
        let name_len = utf16z(&d.name).len() as u64;
        let full = d
            .full_name
            .clone()
            .unwrap_or_else(|| format!("\\SystemRoot\\system32\\drivers\\{}", d.name));
        let has_full = isf.has_field(sde, "FullName");
        let full_len = if has_full {
            utf16z(&full).len() as u64
        } else {
            0
        };
        let total = sde_size + name_len + full_len;
        let e = match d.suspect_entry {
            Some(a) => {
                b.mem.map(a.0, vec![0; total as usize])?;
                a.0
            }
            None => b.new_block(total, 16)?,
        };
        b.unicode(e, sde, "BaseName", &d.name, e + sde_size)?;
        if has_full {
            b.unicode(e, sde, "FullName", &full, e + sde_size + name_len)?;
        }
        let (dl, du) = match d.state {
            DriverState::Loaded | DriverState::Unloading => (1, 0),
            DriverState::Unloaded => (1, 1),
            DriverState::NeverLoaded => (0, 0),
        };
        let loads = d.loads.unwrap_or(dl) as u64;
        let unloads = d.unloads.unwrap_or(du) as u64;
        if d.state.mapped() != (loads > unloads) {
            return Err(ScenarioError::Invalid(format!(
                "driver `{}`: loads/unloads contradict state",
                d.name
            )));
        }
        sum_loads += loads;
        sum_unloads += unloads;
        b.set(e, sde, "Loads", loads)?;
        b.set(e, sde, "Unloads", unloads)?;
        suspect.insert(i, e);
        suspect_links.push(e + isf.offset(sde, "Links")?);
        if let Some(p) = placed.iter_mut().find(|p| p.name == d.name) {
            p.suspect_entry = Some(e);
        } else {
            placed.push(PlacedDriver {
                name: d.name.clone(),
                base: 0,
                size: 0,
                loaded: false,
                verified: true,
                ldr_entry: None,
                suspect_entry: Some(e),
                verified_data: None,
                avl_node: None,
                tracker_pages: vec![],
            });
        }
    }
    b.link(ksym("VfSuspectDriversList")?, &suspect_links)?;

    // ---- verified data for verified loaded drivers
    let vdt = "_VF_TARGET_VERIFIED_DRIVER_DATA";
    let vd_size = b.size(vdt)?;
    let mut vdata: HashMap<usize, u64> = HashMap::new();
    for (i, d) in sc.drivers.iter().enumerate() {
        // A driver unloaded with allocations keeps its verified data (what a 0x62 names).
        let keeps_data = d.state == DriverState::Unloaded
            && sc
                .allocations
                .iter()
                .any(|a| a.driver.eq_ignore_ascii_case(&d.name));
        if d.verified && (d.state.mapped() || keeps_data) {
            let v = b.new_block(vd_size, 16)?;
            b.set(v, vdt, "SuspectDriverEntry", suspect[&i])?;
            b.set(v, vdt, "Signature", VERIFIED_DATA_SIGNATURE)?;
            vdata.insert(i, v);
            placed
                .iter_mut()
                .find(|p| p.name == d.name)
                .unwrap()
                .verified_data = Some(v);
        }
    }

    // ---- events: churn, then the scenario's allocations
    let thread_default = {
        let ethread = if isf.has_type("_ETHREAD") {
            b.size("_ETHREAD")?
        } else {
            0x500
        };
        b.new_block(ethread, 16)?
    };
    struct Req {
        driver: usize,
        address: Option<u64>,
        size: u64,
        paged: bool,
        tag: u32,
        caller: u64,
        thread: u64,
        stack: Vec<u64>,
        freed: bool,
        free_stack: Vec<u64>,
        special: bool,
        churn: bool,
    }
    // Loaded drivers first (their module name and actual base, so a fixture image loaded under
    // another name or base resolves there), then the manifest.
    let resolve = |text: &str| -> Result<u64> {
        if let Some((module, rest)) = text.trim().split_once('!') {
            if let Some((_, base, file)) = loaded_at
                .iter()
                .find(|(m, _, _)| m.eq_ignore_ascii_case(module))
            {
                let (sym, off) = rest.split_once('+').unwrap_or((rest, "0"));
                let off = super::parse_num(off)
                    .ok_or_else(|| ScenarioError::Invalid(format!("bad offset in `{text}`")))?;
                let rva = manifest.images[file].symbols.get(sym).ok_or_else(|| {
                    ScenarioError::Invalid(format!("`{text}`: no symbol `{sym}` in {file}"))
                })?;
                return Ok(base + rva + off);
            }
        }
        manifest.resolve(text)
    };
    let resolve_all = |v: &[String]| -> Result<Vec<u64>> { v.iter().map(|f| resolve(f)).collect() };
    let mut reqs = vec![];
    if sc.trace.churn > 0 {
        let di = match &sc.trace.churn_driver {
            Some(n) => driver_idx(n)
                .ok_or_else(|| ScenarioError::Invalid(format!("churn driver `{n}` not listed")))?,
            None => sc
                .drivers
                .iter()
                .position(|d| d.verified && d.state == DriverState::Loaded)
                .ok_or_else(|| {
                    ScenarioError::Invalid("churn needs a verified loaded driver".into())
                })?,
        };
        let stack = resolve_all(&sc.trace.churn_stack)?;
        let caller = driver_frame(&stack, di).unwrap_or(
            modules
                .iter()
                .find(|m| m.driver == Some(di))
                .map(|m| m.base + m.entry as u64)
                .unwrap_or(0),
        );
        for _ in 0..sc.trace.churn {
            reqs.push(Req {
                driver: di,
                address: None,
                size: sc.trace.churn_size.0,
                paged: false,
                tag: tag_value("Chrn")?,
                caller,
                thread: sc.trace.churn_thread.map(|n| n.0).unwrap_or(thread_default),
                stack: stack.clone(),
                freed: true,
                free_stack: stack.clone(),
                special: false,
                churn: true,
            });
        }
    }
    for a in &sc.allocations {
        let di = driver_idx(&a.driver).ok_or_else(|| {
            ScenarioError::Invalid(format!("allocation by unknown driver `{}`", a.driver))
        })?;
        if !vdata.contains_key(&di) {
            return Err(ScenarioError::Invalid(format!(
                "allocation by `{}`, which is not verified",
                a.driver
            )));
        }
        let stack = resolve_all(&a.stack)?;
        let caller = match &a.caller {
            Some(c) => resolve(c)?,
            None => driver_frame(&stack, di).ok_or_else(|| {
                ScenarioError::Invalid(format!(
                    "allocation by `{}`: no caller and no frame in the driver",
                    a.driver
                ))
            })?,
        };
        for _ in 0..a.count {
            reqs.push(Req {
                driver: di,
                address: a.address.map(|n| n.0),
                size: a.size.0,
                paged: a.pool == PoolKind::Paged,
                tag: tag_value(&a.tag)?,
                caller,
                thread: a.thread.map(|n| n.0).unwrap_or(thread_default),
                stack: stack.clone(),
                freed: a.freed,
                free_stack: resolve_all(&a.free_stack)?,
                special: a.special,
                churn: false,
            });
        }
    }

    // ---- simulate the tracker (verifier.md §5.2)
    let mut trackers: HashMap<usize, Tracker> = HashMap::new();
    let mut global = Counters::default();
    let mut events = vec![];
    let mut allocations = vec![];
    let churn_arena = if sc.trace.churn > 0 {
        b.pool.alloc(0x10000, PAGE)
    } else {
        0
    };
    for (n, r) in reqs.iter().enumerate() {
        let charged = charged_size(r.size, r.special);
        let va = match r.address {
            Some(a) => a,
            None if r.churn => churn_arena + (n as u64 % 16) * 0x1000,
            // Special pool: a page of its own, the block at the page's end (16-byte aligned)
            // when it fits below the back-pointer slot at +0x10, else at the page start.
            None if r.special => {
                let pages = (charged + 0x20).div_ceil(PAGE);
                let page = b.pool.alloc(pages * PAGE, PAGE);
                let end_aligned = (charged + 15) & !15;
                if end_aligned + 0x20 <= PAGE {
                    page + PAGE - end_aligned
                } else {
                    page
                }
            }
            None => {
                let align = if charged >= PAGE { PAGE } else { 16 };
                let a = b.pool.alloc(charged, align);
                b.pool.next += 0x20;
                a
            }
        };
        let vd = vdata[&r.driver];
        let t = trackers.entry(r.driver).or_default();
        let slot = match t.free.pop() {
            Some(s) => {
                t.ops_free += 1;
                s
            }
            None => {
                let page = b.pool.alloc(PAGE, PAGE);
                b.mem.map(page, vec![0; PAGE as usize])?;
                t.pages.push(page);
                t.ops_pages += 1;
                for s in 1..PAGE / SLOT - 1 {
                    let sa = page + s * SLOT;
                    t.slots.insert(
                        sa,
                        SlotData {
                            va: 0,
                            caller: 0,
                            bytes: 1,
                            tag: 0,
                        },
                    );
                    t.free.push(sa);
                    t.ops_free += 1;
                }
                page + (PAGE / SLOT - 1) * SLOT
            }
        };
        let _ = vd;
        t.slots.insert(
            slot,
            SlotData {
                va,
                caller: r.caller,
                bytes: charged,
                tag: r.tag as u64,
            },
        );
        t.counters.alloc(r.paged, charged);
        global.alloc(r.paged, charged);
        events.push(Event {
            address: va,
            size: r.size,
            thread: r.thread,
            frames: r.stack.clone(),
        });
        if r.freed {
            let sd = t.slots.get_mut(&slot).unwrap();
            sd.bytes |= 1;
            t.free.push(slot);
            t.ops_free += 1;
            t.counters.free(r.paged, charged);
            global.free(r.paged, charged);
            events.push(Event {
                address: va,
                size: charged,
                thread: r.thread,
                frames: r.free_stack.clone(),
            });
        } else {
            // Live block: map its first page and the page holding the back-pointer.
            let bp = if r.special {
                if va & 0xFFF != 0 {
                    (va & !0xFFF) + 0x10
                } else {
                    (va & !0xFFF) + 0xFE8
                }
            } else {
                va + charged - 8
            };
            if r.special {
                b.mem.map(va & !0xFFF, vec![0; PAGE as usize])?;
            } else if charged <= 2 * PAGE {
                b.mem.map(va, vec![0; charged as usize])?;
            } else {
                b.mem.map(va, vec![0; PAGE as usize])?;
                let last = bp & !0xFFF;
                b.mem.map(last, vec![0; (va + charged - last) as usize])?;
            }
            b.mem.write(bp, &slot.to_le_bytes())?;
        }
        allocations.push(PlacedAllocation {
            driver: sc.drivers[r.driver].name.clone(),
            address: va,
            requested: r.size,
            charged,
            paged: r.paged,
            tag: r.tag,
            caller: r.caller,
            thread: r.thread,
            stack: r.stack.clone(),
            slot,
            freed: r.freed,
            churn: r.churn,
        });
    }

    // ---- write tracker pages, SLIST heads and per-driver counters
    let slist = sc
        .kernel
        .slist
        .unwrap_or(if isf.has_field("_SLIST_HEADER", "Header8.NextEntry") {
            SlistFormat::Header8
        } else {
            SlistFormat::X64
        });
    let inuse = "_VI_POOL_ENTRY_INUSE";
    let ph = "_VI_POOL_PAGE_HEADER";
    let pe_off = isf.offset("_VI_POOL_ENTRY", "InUse")?;
    let ph_off = isf.offset("_VI_POOL_ENTRY", "PageHeader")?;
    let nf_off = isf.offset("_VI_POOL_ENTRY", "NextFree")?;
    let mut driver_keys: Vec<usize> = vdata.keys().copied().collect();
    driver_keys.sort();
    let mut runtime_trackers = Vec::new();
    for di in driver_keys {
        let vd = vdata[&di];
        let t = trackers.remove(&di).unwrap_or_default();
        runtime_trackers.push(TrackerRuntime {
            driver: sc.drivers[di].name.clone(),
            verified_data: vd,
            pages: t.pages.clone(),
            free: t.free.clone(),
            ops_pages: t.ops_pages,
            ops_free: t.ops_free,
            counters: t.counters,
        });
        for (k, &page) in t.pages.iter().enumerate() {
            let hdr = page + ph_off;
            let older = if k == 0 { 0 } else { t.pages[k - 1] };
            b.set(hdr, ph, "NextPage", older)?;
            b.set(hdr, ph, "VerifierEntry", vd)?;
            b.set(hdr, ph, "Signature", POOL_PAGE_SIGNATURE)?;
        }
        let mut slots: Vec<_> = t.slots.iter().collect();
        slots.sort_by_key(|(a, _)| **a);
        for (&sa, sd) in slots {
            let e = sa + pe_off;
            b.set(e, inuse, "VirtualAddress", sd.va)?;
            b.set(e, inuse, "CallingAddress", sd.caller)?;
            b.set(e, inuse, "NumberOfBytes", sd.bytes)?;
            b.set(e, inuse, "Tag", sd.tag)?;
        }
        // Free list: each free slot's NextFree (overlaying VirtualAddress) links to the one below.
        for (k, &sa) in t.free.iter().enumerate() {
            let next = if k == 0 { 0 } else { t.free[k - 1] };
            b.set(sa + nf_off, "_SLIST_ENTRY", "Next", next)?;
        }
        let pages_first = t.pages.last().copied().unwrap_or(0);
        let free_first = t.free.last().copied().unwrap_or(0);
        write_slist(
            &mut b,
            slist,
            vd + isf.offset(vdt, "PoolPageHeaders")?,
            pages_first,
            t.pages.len() as u64,
            t.ops_pages,
        )?;
        write_slist(
            &mut b,
            slist,
            vd + isf.offset(vdt, "PoolTrackers")?,
            free_first,
            t.free.len() as u64,
            t.ops_free,
        )?;
        for (f, v) in t.counters.fields() {
            b.set(vd, vdt, f, v)?;
        }
        for (f, v) in &sc.drivers[di].counters {
            b.set(vd, vdt, f, v.0)?; // a lying target (scenario `counters`)
        }
        let name = &sc.drivers[di].name;
        placed
            .iter_mut()
            .find(|p| &p.name == name)
            .unwrap()
            .tracker_pages = t.pages.clone();
    }

    // ---- MmVerifierData
    let mvd = ksym("MmVerifierData")?;
    let mt = "_MM_DRIVER_VERIFIER_DATA";
    let n_allocs = reqs.len() as u64;
    let mut stats: BTreeMap<String, u64> = BTreeMap::new();
    stats.insert("Level".into(), sc.verifier.level.0);
    stats.insert("AllocationsAttempted".into(), n_allocs);
    stats.insert("AllocationsSucceeded".into(), n_allocs);
    stats.insert("Loads".into(), sum_loads);
    stats.insert("Unloads".into(), sum_unloads);
    stats.insert("VerifyMode".into(), sc.verifier.verify_mode.0);
    for (k, v) in &sc.verifier.stats {
        if global.fields().iter().any(|(f, _)| f == k) {
            return Err(ScenarioError::Invalid(format!(
                "stats.{k} is derived from the allocations; do not set it"
            )));
        }
        stats.insert(k.clone(), v.0);
    }
    for (f, v) in global.fields() {
        stats.insert(f.into(), v);
    }
    for (k, v) in stats
        .iter()
        .chain(sc.verifier.counters.iter().map(|(k, v)| (k, &v.0)))
    {
        b.set(mvd, mt, k, *v)?; // derived, then a lying target's (scenario `counters`)
    }

    // ---- ViTargetDriversAvl
    let avl_addr = ksym("ViTargetDriversAvl")?;
    let links_ty = "_RTL_BALANCED_LINKS";
    let links_size = b.size(links_ty)?;
    let td = "_VF_TARGET_DRIVER";
    let td_size = b.size(td)?;
    let (p_path, rs_path) = if isf.has_field(td, "TreeNode.p") {
        ("TreeNode.p", "TreeNode.RangeSize")
    } else {
        ("TreeNode.Base.p", "TreeNode.Base.RangeSize")
    };
    let ntables = sc.kernel.avl_tables.unwrap_or(1).max(1) as usize;
    let tab_ty = "_VF_AVL_TABLE";
    let tab_size = b.size(tab_ty)?;
    let tables = b.new_block(tab_size * ntables as u64, 16)?;
    // A driver being unloaded has left the tree already (VfTargetDriversRemove, §1).
    let mut order: Vec<usize> = (0..modules.len())
        .filter(|&i| {
            modules[i]
                .driver
                .is_none_or(|d| sc.drivers[d].state != DriverState::Unloading)
        })
        .collect();
    order.sort_by_key(|&i| modules[i].base);
    let mut per_table: Vec<Vec<(u64, usize)>> = vec![vec![]; ntables];
    for (k, &mi) in order.iter().enumerate() {
        let node = b.new_block(links_size + td_size, 16)?;
        let user = node + links_size;
        let m = &modules[mi];
        b.set(user, td, p_path, m.base)?;
        b.set(user, td, rs_path, m.size)?;
        if let Some(di) = m.driver {
            if let Some(&v) = vdata.get(&di) {
                b.set(user, td, "VerifiedData", v)?;
            }
            if isf.has_field(td, "DriverObject") && isf.has_type("_DRIVER_OBJECT") {
                let dot = "_DRIVER_OBJECT";
                let dsz = b.size(dot)?;
                let stem = Manifest::module_name(&m.name);
                let dname = format!("\\Driver\\{stem}");
                let o = b.new_block(dsz + utf16z(&dname).len() as u64, 16)?;
                b.set(o, dot, "Type", 4)?;
                b.set(o, dot, "Size", dsz)?;
                b.set(o, dot, "DriverStart", m.base)?;
                b.set(o, dot, "DriverSize", m.size)?;
                b.set(o, dot, "DriverSection", placed[mi].ldr_entry.unwrap())?;
                b.unicode(o, dot, "DriverName", &dname, o + dsz)?;
                b.set(user, td, "DriverObject", o)?;
            }
        }
        placed[mi].avl_node = Some(node);
        per_table[k % ntables].push((node, mi));
    }
    for (ti, nodes) in per_table.iter().enumerate() {
        let tab = tables + ti as u64 * tab_size;
        let root_links = tab + isf.offset(tab_ty, "RtlTable.BalancedRoot")?;
        b.set(tab, tab_ty, "RtlTable.BalancedRoot.Parent", root_links)?;
        let ids: Vec<u64> = nodes.iter().map(|(n, _)| *n).collect();
        let (root, height) = build_avl(&mut b, &ids, root_links)?;
        b.set(tab, tab_ty, "RtlTable.BalancedRoot.RightChild", root)?;
        b.set(
            tab,
            tab_ty,
            "RtlTable.NumberGenericTableElements",
            ids.len() as u64,
        )?;
        b.set(tab, tab_ty, "RtlTable.DepthOfTree", height)?;
    }
    let avl = "_VF_AVL_TREE";
    b.set(avl_addr, avl, "NodeCount", order.len() as u64)?;
    b.set(avl_addr, avl, "Tables", tables)?;
    b.set(avl_addr, avl, "TablesNo", ntables as u64)?;
    b.set(avl_addr, avl, "u1.NodeSize", links_size + td_size)?;

    // ---- VfPoolTraces ring (verifier.md §6)
    let tt = "_VF_POOL_TRACE";
    let entry_size = b.size(tt)?;
    let frames = isf.array_count(tt, "StackTrace")?;
    let length = sc.trace.length.0;
    if length == 0 || !length.is_power_of_two() {
        return Err(ScenarioError::Invalid(format!(
            "trace.length {length:#x} is not a power of two"
        )));
    }
    let ring = b.new_block(length * entry_size, PAGE)?;
    let mut index = sc.trace.index_start.0 & 0xFFFF_FFFF;
    for ev in &events {
        index = (index + 1) & 0xFFFF_FFFF;
        let e = ring + (index & (length - 1)) * entry_size;
        b.set(e, tt, "Address", ev.address)?;
        b.set(e, tt, "Size", ev.size)?;
        b.set(e, tt, "Thread", ev.thread)?;
        for k in 0..frames {
            let v = ev.frames.get(k as usize).copied().unwrap_or(0);
            b.set(e, tt, &format!("StackTrace[{k}]"), v)?;
        }
    }

    // ---- scalar globals (types per verifier.md §8; the ISF has no types for globals)
    let put = |b: &mut B, name: &str, v: u64, width: usize| -> Result<()> {
        if let Ok(a) = ksym(name) {
            b.mem.write(a, &v.to_le_bytes()[..width])?;
        }
        Ok(())
    };
    put(&mut b, "VfPoolTraces", ring, 8)?;
    put(&mut b, "VfPoolTracesIndex", index, 4)?;
    put(&mut b, "VfPoolTracesLength", length, 4)?;
    put(&mut b, "VfOptionFlags", sc.verifier.option_flags.0, 4)?;
    put(&mut b, "VfVerifyMode", sc.verifier.verify_mode.0, 4)?;
    put(&mut b, "VerifierIsTrackingPool", (n_allocs > 0) as u64, 4)?;
    put(&mut b, "ViTargetInitialized", 1, 4)?;
    put(&mut b, "VfSafeMode", 0, 4)?;
    put(
        &mut b,
        "VfRuleClasses",
        sc.verifier
            .rule_classes
            .map(|n| n.0)
            .unwrap_or(sc.verifier.level.0 & 8),
        4,
    )?;
    put(&mut b, "KernelVerifier", 0, 4)?;

    // ---- what every kernel has beside the verifier (KUSER_SHARED_DATA, KdVersionBlock, …)
    let kernel_anchors = super::system::KernelAnchors {
        build: manifest.build,
        kern_base: kbase,
        ps_loaded_module_list: ps_list,
        debugger_data_list: ksym("KdpDebuggerDataListHead")?,
        kd_version_block: ksym("KdVersionBlock").ok(),
        ke_number_processors: ksym("KeNumberProcessors").ok(),
        cm_nt_csd_version: ksym("CmNtCSDVersion").ok(),
        mm_pte_base: ksym("MmPteBase").ok(),
    };
    // Besides the regions: the pool range the timeline keeps allocating from, and the per-CPU
    // pages the machine maps beside the kernel.
    let per_cpu = crate::sim::machine::kernel::KernelLayout::new(kbase, 1).kpcr(0);
    let taken = super::system::slots_between(pool_base, b.pool.next.max(pool_base))
        .chain(super::system::slots_between(per_cpu, per_cpu + 0xFFFF))
        .collect();
    let system = super::system::lay_out(
        &mut b,
        &kernel_anchors,
        sc.kernel.self_map_slot.map(|n| n.0),
        sc.name.as_bytes(),
        taken,
    )?;

    // ---- the bug check and the unloaded-driver list (stops-and-unloads.md §2–3). The fixture
    // kernels lack these variables, so they get a block of the pool, which the KDBG names
    // (KiBugcheckData 0x88, MmUnloadedDrivers 0x220, MmLastUnloadedDriver 0x228: kd.md §4.2),
    // as the real block names the real ones. Laid out only when a scenario needs them, so
    // every other scenario keeps its addresses.
    let mut kdbg_extra: Vec<(u64, u64)> = vec![];
    let mut bugcheck = None;
    if sc.bugcheck.is_some() || !unloaded_ranges.is_empty() {
        let vars = match (
            ksym("KiBugCheckData"),
            ksym("MmUnloadedDrivers"),
            ksym("MmLastUnloadedDriver"),
        ) {
            (Ok(k), Ok(u), Ok(l)) => (k, u, l),
            _ => {
                let block = b.new_block(0x40, 16)?;
                (block, block + 0x28, block + 0x30)
            }
        };
        let (ki_bugcheck_data, mm_unloaded, mm_last) = vars;
        kdbg_extra.extend([
            (0x88, ki_bugcheck_data),
            (0x220, mm_unloaded),
            (0x228, mm_last),
        ]);
        if !unloaded_ranges.is_empty() {
            // MiRememberUnloadedDriver's array: MI_UNLOADED_DRIVERS = 50 entries of
            // `_UNLOADED_DRIVERS` {UNICODE_STRING Name; PVOID StartAddress, EndAddress;
            // LARGE_INTEGER CurrentTime} = 0x28 bytes on x64 (Volatility 3's
            // `unloadedmodules-x64.json`; the 50 is the `cmp eax, 32h` after loading
            // MmLastUnloadedDriver in x64 kernels). The type is in no ISF/PDB, so the layout is
            // this fact, not an ISF lookup.
            const ENTRIES: u64 = 50;
            const ENTRY: u64 = 0x28;
            let array = b.new_block(ENTRIES * ENTRY, 16)?;
            // A FILETIME in 2024 for each record, a minute apart.
            let mut time: u64 = 133_500_000_000_000_000;
            for (k, (name, base, size)) in unloaded_ranges.iter().take(ENTRIES as usize).enumerate()
            {
                let e = array + k as u64 * ENTRY;
                let text = utf16z(name);
                let buffer = b.new_block(text.len() as u64, 2)?;
                b.mem.write(buffer, &text)?;
                let len = (text.len() - 2) as u16;
                let mut us = vec![];
                us.extend(len.to_le_bytes());
                us.extend((len + 2).to_le_bytes());
                us.extend([0u8; 4]);
                us.extend(buffer.to_le_bytes());
                b.mem.write(e, &us)?;
                b.mem.write(e + 0x10, &base.to_le_bytes())?;
                b.mem.write(e + 0x18, &(base + size).to_le_bytes())?;
                b.mem.write(e + 0x20, &time.to_le_bytes())?;
                time += 60 * 10_000_000;
            }
            b.mem.write(mm_unloaded, &array.to_le_bytes())?;
            let count = unloaded_ranges.len().min(ENTRIES as usize) as u32;
            b.mem.write(mm_last, &count.to_le_bytes())?;
        }
        if let Some(spec) = &sc.bugcheck {
            let values = bugcheck_values(sc, spec, &placed, &allocations, ldr_ty, isf)?;
            let mut bytes = vec![];
            for v in values {
                bytes.extend(v.to_le_bytes());
            }
            b.mem.write(ki_bugcheck_data, &bytes)?;
            bugcheck = Some(values);
        }
    }

    // ---- KDBG (kd.md §4.2; the type is not in the ISF, so its offsets are the spec's)
    let kdbg = ksym("KdDebuggerDataBlock")?;
    let head = ksym("KdpDebuggerDataListHead")?;
    let rd = |b: &mut B, a: u64, n: usize| -> Result<Vec<u8>> {
        Ok(b.mem.slice_mut(a, n as u64)?.to_vec())
    };
    if rd(&mut b, kdbg + 0x10, 4)? != b"KDBG" {
        return Err(ScenarioError::Manifest(
            "KdDebuggerDataBlock has no 'KDBG' OwnerTag in the fixture".into(),
        ));
    }
    let kdbg_size = u32::from_le_bytes(rd(&mut b, kdbg + 0x14, 4)?.try_into().unwrap()) as u64;
    b.mem.write(head, &kdbg.to_le_bytes())?;
    b.mem.write(head + 8, &kdbg.to_le_bytes())?;
    b.mem.write(kdbg, &head.to_le_bytes())?;
    b.mem.write(kdbg + 8, &head.to_le_bytes())?;
    let mut patch = vec![
        (0x18, kbase),
        (0x20, ksym("RtlpBreakWithStatusInstruction")?),
        (0x48, ps_list),
        (0x248, mvd),
    ];
    if let Ok(a) = ksym("KernelVerifier") {
        patch.push((0x240, a));
    }
    if let Ok(a) = ksym("KiProcessorBlock") {
        patch.push((0x218, a));
    }
    for (off, name) in [(0x208, "NtBuildLab"), (0x268, "CmNtCSDVersion")] {
        if let Ok(a) = ksym(name) {
            patch.push((off, a));
        }
    }
    // PteBase (a value, 0x360) exists in KDBGs of 0x368 bytes and more; it must agree with the
    // self-map slot the page tables use.
    if kernel_anchors.mm_pte_base.is_some() {
        patch.push((0x360, system.pte_base));
    }
    patch.extend(kdbg_extra);
    for (off, v) in patch {
        if off + 8 <= kdbg_size {
            b.mem.write(kdbg + off, &v.to_le_bytes())?;
        }
    }

    // ---- symbols
    let mut symbols = BTreeMap::new();
    for (file, img) in &manifest.images {
        let m = Manifest::module_name(file);
        for (s, rva) in &img.symbols {
            symbols.insert(format!("{m}!{s}"), img.image_base + rva);
            if m == "nt" {
                symbols.insert(s.clone(), img.image_base + rva);
            }
        }
    }
    // Loaded drivers under their own module name at their actual base.
    for (m, base, file) in &loaded_at {
        for (s, rva) in &manifest.images[file].symbols {
            symbols.insert(format!("{m}!{s}"), base + rva);
        }
    }
    symbols.insert("sim!VfPoolTracesArray".into(), ring);
    symbols.insert("sim!ViTargetDriversAvlTables".into(), tables);
    symbols.insert("sim!DefaultThread".into(), thread_default);

    let image = MemoryImage {
        regions: b.mem.regions,
        kern_base: kbase,
        ps_loaded_module_list: ps_list,
        debugger_data_list: head,
        break_pc: ksym("RtlpBreakWithStatusInstruction")?,
        build: manifest.build,
        symbols,
        self_map_slot: system.self_map_slot,
        runtime: system.runtime,
        bugcheck,
    };
    Ok(LayoutReport {
        image,
        field_uses: b.log,
        drivers: placed,
        allocations,
        trace_array: ring,
        trace_entry_size: entry_size,
        trace_frames: frames,
        trace_length: length,
        trace_index: index,
        isf_path,
        runtime: RuntimeState {
            slist,
            pool_next: b.pool.next,
            trackers: runtime_trackers,
            global,
            allocations_attempted: stats
                .get("AllocationsAttempted")
                .copied()
                .unwrap_or(n_allocs),
            default_thread: thread_default,
        },
    })
}

/// KiBugCheckData's five values (code, parameters 1–4) for a scenario's `[bugcheck]`.
fn bugcheck_values(
    sc: &Scenario,
    spec: &super::BugCheckSpec,
    placed: &[PlacedDriver],
    allocations: &[PlacedAllocation],
    ldr_ty: &str,
    isf: &Isf,
) -> Result<[u64; 5]> {
    if let Some(name) = &spec.driver {
        let d = sc
            .drivers
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                ScenarioError::Invalid(format!("bugcheck.driver `{name}` not listed"))
            })?;
        let p = placed.iter().find(|p| p.name == d.name).ok_or_else(|| {
            ScenarioError::Invalid(format!("bugcheck.driver `{name}` is not verified"))
        })?;
        let data = p.verified_data.ok_or_else(|| {
            ScenarioError::Invalid(format!(
                "bugcheck.driver `{name}` has no verified data (verified, and unloading or \
                 unloaded with allocations?)"
            ))
        })?;
        // Parameter 2 names the driver: its loader entry's BaseDllName while the entry is
        // listed; once unloaded, the name of its MmUnloadedDrivers record is all that is left,
        // so the suspect entry's BaseName (a UNICODE_STRING as well) stands in.
        let name_at = match p.ldr_entry {
            Some(e) => e + isf.offset(ldr_ty, "BaseDllName")?,
            None => {
                p.suspect_entry.expect("verified")
                    + isf.offset("_VF_SUSPECT_DRIVER_ENTRY", "BaseName")?
            }
        };
        let outstanding = allocations
            .iter()
            .filter(|a| a.driver == d.name && !a.freed)
            .count() as u64;
        let count = spec.count.map_or(outstanding, |n| n.0);
        return Ok([0xC4, 0x62, name_at, data, count]);
    }
    let code = spec
        .code
        .ok_or_else(|| ScenarioError::Invalid("[bugcheck] needs `driver` or `code`".into()))?;
    if spec.parameters.len() > 4 {
        return Err(ScenarioError::Invalid(
            "[bugcheck] has at most four parameters".into(),
        ));
    }
    let mut values = [code.0, 0, 0, 0, 0];
    for (k, p) in spec.parameters.iter().enumerate() {
        values[k + 1] = p.0;
    }
    Ok(values)
}

/// Writes an SLIST_HEADER at `h` whose first entry is `first` (verifier.md §5.4).
fn write_slist(
    b: &mut B,
    fmt: SlistFormat,
    h: u64,
    first: u64,
    depth: u64,
    seq: u64,
) -> Result<()> {
    let t = "_SLIST_HEADER";
    if first & 0xF != 0 {
        return Err(ScenarioError::Invalid(format!(
            "SLIST entry {first:#x} not 16-byte aligned"
        )));
    }
    match fmt {
        SlistFormat::Header8 => {
            if first != 0 && (first >> 43) != (h >> 43) {
                return Err(ScenarioError::Invalid(format!(
                    "Header8 SLIST at {h:#x} cannot reach {first:#x}"
                )));
            }
            b.set(h, t, "Header8.Depth", depth)?;
            b.set(h, t, "Header8.Sequence", seq & 0x1FF)?;
            b.set(h, t, "Header8.NextEntry", (first >> 4) & ((1 << 39) - 1))?;
            b.set(h, t, "Header8.HeaderType", 0)?;
        }
        SlistFormat::Header16 => {
            b.set(h, t, "Header16.Depth", depth)?;
            b.set(h, t, "Header16.Sequence", seq & 0xFFFF_FFFF_FFFF)?;
            b.set(h, t, "Header16.HeaderType", 1)?;
            b.set(h, t, "Header16.Init", 1)?;
            b.set(h, t, "Header16.NextEntry", first >> 4)?;
        }
        SlistFormat::X64 => {
            b.set(h, t, "HeaderX64.Depth", depth)?;
            b.set(h, t, "HeaderX64.Sequence", seq & 0xFFFF_FFFF_FFFF)?;
            b.set(h, t, "HeaderX64.NextEntry", first >> 4)?;
        }
    }
    Ok(())
}

/// Builds a height-balanced BST over `nodes` (sorted by key); returns (root, height).
fn build_avl(b: &mut B, nodes: &[u64], parent: u64) -> Result<(u64, u64)> {
    if nodes.is_empty() {
        return Ok((0, 0));
    }
    let mid = nodes.len() / 2;
    let n = nodes[mid];
    let (l, lh) = build_avl(b, &nodes[..mid], n)?;
    let (r, rh) = build_avl(b, &nodes[mid + 1..], n)?;
    let lt = "_RTL_BALANCED_LINKS";
    b.set(n, lt, "Parent", parent)?;
    b.set(n, lt, "LeftChild", l)?;
    b.set(n, lt, "RightChild", r)?;
    let bal = (rh as i64 - lh as i64) as i8;
    b.set(n, lt, "Balance", bal as u8 as u64)?;
    Ok((n, 1 + lh.max(rh)))
}

/// Rebases a mapped PE32+ image to `new_base`: applies its base relocations (DIR64 only) and
/// updates `OptionalHeader.ImageBase`, as the loader does.
fn relocate(pe: &mut super::pe::MappedPe, new_base: u64) -> std::result::Result<(), String> {
    let b = &mut pe.bytes;
    let rd32 = |b: &[u8], o: usize| -> std::result::Result<u32, String> {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
            .ok_or_else(|| format!("read past image at {o:#x}"))
    };
    let opt = rd32(b, 0x3c)? as usize + 24;
    let delta = new_base.wrapping_sub(pe.image_base);
    let (rva, size) = (
        rd32(b, opt + 112 + 5 * 8)? as usize,
        rd32(b, opt + 112 + 5 * 8 + 4)? as usize,
    );
    let mut blk = rva;
    while size != 0 && blk + 8 <= rva + size {
        let page = rd32(b, blk)? as usize;
        let len = rd32(b, blk + 4)? as usize;
        if len < 8 {
            return Err(format!("bad relocation block at {blk:#x}"));
        }
        for k in (blk + 8..blk + len).step_by(2) {
            let e = u16::from_le_bytes(
                b.get(k..k + 2)
                    .ok_or("short relocation")?
                    .try_into()
                    .unwrap(),
            );
            match e >> 12 {
                0 => {}
                10 => {
                    let at = page + (e & 0xFFF) as usize;
                    let v = b.get_mut(at..at + 8).ok_or("relocation past image")?;
                    let x = u64::from_le_bytes((&*v).try_into().unwrap()).wrapping_add(delta);
                    v.copy_from_slice(&x.to_le_bytes());
                }
                t => return Err(format!("relocation type {t}")),
            }
        }
        blk += len;
    }
    b[opt + 24..opt + 32].copy_from_slice(&new_base.to_le_bytes());
    pe.image_base = new_base;
    Ok(())
}
