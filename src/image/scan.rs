//! Finding what an image without a Windows header does not say — the page-table root and the
//! kernel — the way memory-forensics tools do (Volatility 3's `DtbSelfRef64bit` and
//! `PdbSignatureScanner`, `framework/automagic/windows.py` and `pdbscan.py`):
//!
//! 1. one pass over the physical pages the file stores (a sparse file's holes skipped) looks for
//!    page-table roots — a page whose entry in a kernel-half slot (0x100–0x1FF) points at the
//!    page itself, the self-map every x64 Windows keeps — and for CodeView `RSDS` records that
//!    name the kernel's PDB (`ntkrnlmp.pdb`);
//! 2. the first root (lowest address) through which `KUSER_SHARED_DATA` translates to a stored
//!    page is taken (an ELF core's CPU CR3s are tried before the scan);
//! 3. each RSDS page is found in the kernel half of that root's address space, and the pages
//!    before it are walked back to the `MZ` image whose debug directory leads to that same record:
//!    the kernel's base. Its PDB then comes from the symbol path like any other, and gives
//!    `PsLoadedModuleList`, `NtBuildNumber` and the rest.
//!
//! Every count is bounded: candidates and records kept, page tables walked, pages walked back.
//! A progress bar shows on stderr when the pass takes more than a second.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::error::{DumpError, Result};
use super::paging::Translation;
use super::physmap::PAGE_SIZE;
use super::{Dump, Source};
use crate::kernel::{self, PdbInfo};
use crate::verifier::facts::{KERNEL_PDB_NAMES, KUSER_SHARED_DATA, SELF_MAP_SLOTS};

const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
const PRESENT: u64 = 1;
const LARGE: u64 = 1 << 7;
/// Bytes read per file read in the physical pass.
const CHUNK: u64 = 1 << 20;
/// Page-table roots and RSDS records kept from the pass.
const MAX_ROOTS: usize = 64;
const MAX_RECORDS: usize = 256;
/// Page tables read while looking for the pages that hold RSDS records (4 KiB each).
const MAX_TABLES: usize = 1 << 18;
/// How far before its RSDS record a kernel image may start (ntoskrnl is ~10–20 MiB).
const MAX_IMAGE_PAGES: u64 = (64 << 20) / PAGE_SIZE;
/// The longest RSDS record name compared.
const MAX_NAME: usize = 260;
const PROGRESS_AFTER: Duration = Duration::from_secs(1);

/// A page that maps itself from a kernel-half PML4 slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Root {
    address: u64,
    slot: usize,
}

/// A CodeView record naming a kernel PDB, at physical address `address`.
#[derive(Debug, Clone)]
struct Record {
    address: u64,
    pdb: PdbInfo,
}

/// What the physical pass found.
#[derive(Default)]
struct Pass {
    roots: Vec<Root>,
    records: Vec<Record>,
    bytes: u64,
    elapsed: Duration,
}

impl<S: Source> Dump<S> {
    /// Fills in the page-table root and the kernel base when the image's format does not give
    /// them, saying in [`Dump::findings`] how each was found.
    pub async fn locate(&mut self) -> Result<()> {
        let need_kernel = self.facts.kern_base == 0
            && self.facts.kd_debugger_data_block == 0
            && self.facts.ps_loaded_module_list == 0;
        if self.facts.directory_table_base == 0 {
            for (cpu, cr3) in self.cr3_candidates.clone().into_iter().enumerate() {
                if self.maps_kuser(cr3)? {
                    self.facts.directory_table_base = cr3 & ADDRESS_MASK;
                    self.translations.clear();
                    self.findings.push(format!(
                        "page-table root {:#x}: CR3 of CPU {cpu} in the image's notes \
                         (KUSER_SHARED_DATA translates through it)",
                        cr3 & ADDRESS_MASK
                    ));
                    break;
                }
                self.findings.push(format!(
                    "CR3 {cr3:#x} of CPU {cpu} does not map KUSER_SHARED_DATA (a user-mode \
                     root?); scanning"
                ));
            }
        }
        let need_root = self.facts.directory_table_base == 0;
        if !need_root && !need_kernel {
            return Ok(());
        }
        let pass = self.physical_pass(need_root, need_kernel)?;
        let scanned = format!(
            "{} MiB scanned in {:.2} s",
            pass.bytes >> 20,
            pass.elapsed.as_secs_f64()
        );
        if need_root {
            let mut chosen = None;
            for root in &pass.roots {
                if self.maps_kuser(root.address)? {
                    chosen = Some(*root);
                    break;
                }
            }
            let Some(root) = chosen else {
                return Err(DumpError::NotADump(format!(
                    "no page-table root of x64 Windows in the image ({scanned}; {} page(s) map \
                     themselves, none translates KUSER_SHARED_DATA): not the physical memory of \
                     an x64 Windows machine, or not a raw image (give --format if it is another \
                     format)",
                    pass.roots.len()
                )));
            };
            self.facts.directory_table_base = root.address;
            self.translations.clear();
            self.findings.push(format!(
                "page-table root {:#x}: found by its self-map entry at PML4 slot {:#x} ({} \
                 candidate(s), the first that translates KUSER_SHARED_DATA; {scanned})",
                root.address,
                root.slot,
                pass.roots.len()
            ));
        }
        if need_kernel {
            let (base, record) = self.kernel_from_records(&pass.records).await?;
            self.facts.kern_base = base;
            self.findings.push(format!(
                "kernel at {base:#x}: found by its image header and RSDS record {} (at physical \
                 {:#x}; {} kernel record(s) in the image; {scanned})",
                record.pdb,
                record.address,
                pass.records.len()
            ));
        }
        Ok(())
    }

    /// Whether KUSER_SHARED_DATA translates, through `root`, to a page the image stores.
    fn maps_kuser(&self, root: u64) -> Result<bool> {
        if self
            .map
            .file_offset((root & ADDRESS_MASK) / PAGE_SIZE)
            .is_none()
        {
            return Ok(false);
        }
        let translation = super::paging::translate(root, KUSER_SHARED_DATA, |pa| {
            let mut entry = [0u8; 8];
            Ok::<_, DumpError>(
                self.read_physical(pa, &mut entry)?
                    .then(|| u64::from_le_bytes(entry)),
            )
        })?;
        Ok(matches!(translation, Translation::Physical(pa)
            if self.map.file_offset(pa / PAGE_SIZE).is_some()))
    }

    /// One pass over the stored pages, in physical order, for roots and kernel RSDS records.
    fn physical_pass(&self, roots: bool, records: bool) -> Result<Pass> {
        let started = Instant::now();
        let data = self.src.data_regions();
        // (first physical address, file range) of every stored stretch that holds data.
        let mut stretches = Vec::new();
        for run in self.map.runs() {
            let (start, end) = (run.file_offset, run.file_offset + run.pages * PAGE_SIZE);
            for region in data.iter().filter(|r| r.start < end && r.end > start) {
                // Whole pages of the run within the region.
                let from = start + (region.start.max(start) - start) / PAGE_SIZE * PAGE_SIZE;
                let to = start + (region.end.min(end) - start).div_ceil(PAGE_SIZE) * PAGE_SIZE;
                let to = to.min(end);
                if from < to {
                    stretches.push((run.first_pfn * PAGE_SIZE + (from - start), from..to));
                }
            }
        }
        let total: u64 = stretches.iter().map(|(_, r)| r.end - r.start).sum();
        let progress = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        progress.set_style(
            ProgressStyle::with_template(
                "kdleak: scanning the image {bar:30} {bytes}/{total_bytes} ({eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let mut shown = false;
        let mut pass = Pass::default();
        let mut buf = vec![0u8; CHUNK as usize];
        let finder = memchr::memmem::Finder::new(b"RSDS");
        for (physical, range) in stretches {
            let mut offset = range.start;
            while offset < range.end {
                let n = (range.end - offset).min(CHUNK) as usize;
                let chunk = &mut buf[..n];
                self.src.read_at(offset, chunk).map_err(|e| {
                    DumpError::corrupt(offset, format!("reading the image failed: {e}"))
                })?;
                let pa = physical + (offset - range.start);
                if roots && pass.roots.len() < MAX_ROOTS {
                    find_roots(chunk, pa, &mut pass.roots);
                }
                if records && pass.records.len() < MAX_RECORDS {
                    for at in finder.find_iter(chunk) {
                        if let Some(pdb) = kernel_record(&chunk[at..]) {
                            pass.records.push(Record {
                                address: pa + at as u64,
                                pdb,
                            });
                            if pass.records.len() == MAX_RECORDS {
                                break;
                            }
                        }
                    }
                }
                offset += n as u64;
                pass.bytes += n as u64;
                progress.set_position(pass.bytes);
                if !shown && started.elapsed() > PROGRESS_AFTER {
                    progress.set_draw_target(ProgressDrawTarget::stderr());
                    shown = true;
                }
            }
        }
        progress.finish_and_clear();
        pass.elapsed = started.elapsed();
        Ok(pass)
    }

    /// The kernel base: the image whose RSDS record is one of `records`, found through the
    /// page tables of the chosen root.
    async fn kernel_from_records(&mut self, records: &[Record]) -> Result<(u64, Record)> {
        if records.is_empty() {
            return Err(DumpError::NotADump(format!(
                "no RSDS record naming {} in the image: no x64 Windows kernel is in this memory",
                KERNEL_PDB_NAMES.join(" or ")
            )));
        }
        let wanted: HashSet<u64> = records.iter().map(|r| r.address / PAGE_SIZE).collect();
        let mapped = self.virtual_pages_of(&wanted)?;
        let mut tried = 0usize;
        for record in records {
            let Some(pages) = mapped.get(&(record.address / PAGE_SIZE)) else {
                continue;
            };
            for &page in pages {
                tried += 1;
                if let Some(base) = self.image_before(page, record).await {
                    return Ok((base, record.clone()));
                }
            }
        }
        Err(DumpError::NotADump(format!(
            "{} RSDS record(s) name the kernel's PDB ({}), but {tried} mapping(s) in the kernel \
             half lead to no image header whose debug directory points at them: the page tables \
             or the kernel image are not in the image",
            records.len(),
            records[0].pdb
        )))
    }

    /// Kernel-half virtual pages that map each page frame in `wanted`, through the chosen root.
    fn virtual_pages_of(&self, wanted: &HashSet<u64>) -> Result<HashMap<u64, Vec<u64>>> {
        let mut found: HashMap<u64, Vec<u64>> = HashMap::new();
        let root = self.facts.directory_table_base & ADDRESS_MASK;
        let mut tables = 0usize;
        let table = |pa: u64, tables: &mut usize| -> Result<Option<Vec<u64>>> {
            *tables += 1;
            let mut page = vec![0u8; PAGE_SIZE as usize];
            if *tables > MAX_TABLES || !self.read_physical(pa & ADDRESS_MASK, &mut page)? {
                return Ok(None);
            }
            Ok(Some(
                page.chunks_exact(8)
                    .map(|e| u64::from_le_bytes(e.try_into().expect("8 bytes")))
                    .collect(),
            ))
        };
        let mut note = |pfn: u64, va: u64| {
            if wanted.contains(&pfn) {
                found.entry(pfn).or_default().push(va);
            }
        };
        let Some(pml4) = table(root, &mut tables)? else {
            return Ok(found);
        };
        for i in SELF_MAP_SLOTS {
            let e4 = pml4[i];
            if e4 & PRESENT == 0 || e4 & LARGE != 0 || e4 & ADDRESS_MASK == root {
                continue;
            }
            let va4 = 0xFFFF_0000_0000_0000 | (i as u64) << 39;
            let Some(pdpt) = table(e4, &mut tables)? else {
                continue;
            };
            for (j, &e3) in pdpt.iter().enumerate() {
                if e3 & PRESENT == 0 {
                    continue;
                }
                let va3 = va4 | (j as u64) << 30;
                if e3 & LARGE != 0 {
                    let first = (e3 & 0x000f_ffff_c000_0000) / PAGE_SIZE;
                    for &pfn in wanted
                        .iter()
                        .filter(|&&p| p >= first && p < first + (1 << 18))
                    {
                        note(pfn, va3 + (pfn - first) * PAGE_SIZE);
                    }
                    continue;
                }
                let Some(pd) = table(e3, &mut tables)? else {
                    continue;
                };
                for (k, &e2) in pd.iter().enumerate() {
                    if e2 & PRESENT == 0 {
                        continue;
                    }
                    let va2 = va3 | (k as u64) << 21;
                    if e2 & LARGE != 0 {
                        let first = (e2 & 0x000f_ffff_ffe0_0000) / PAGE_SIZE;
                        for &pfn in wanted.iter().filter(|&&p| p >= first && p < first + 512) {
                            note(pfn, va2 + (pfn - first) * PAGE_SIZE);
                        }
                        continue;
                    }
                    let Some(pt) = table(e2, &mut tables)? else {
                        continue;
                    };
                    for (l, &e1) in pt.iter().enumerate() {
                        if e1 & PRESENT != 0 {
                            note((e1 & ADDRESS_MASK) / PAGE_SIZE, va2 | (l as u64) << 12);
                        }
                    }
                }
            }
        }
        Ok(found)
    }

    /// Walks back from the virtual page holding `record` to the image whose debug directory
    /// leads to it.
    async fn image_before(&mut self, page: u64, record: &Record) -> Option<u64> {
        for back in 0..MAX_IMAGE_PAGES {
            let base = page.checked_sub(back * PAGE_SIZE)?;
            let head = self.read_virtual(base, 2).ok()?;
            if !head.unreadable.is_empty() || head.bytes != b"MZ" {
                continue;
            }
            if let Ok(Some(pdb)) = kernel::read_pdb_info(self, base, 0).await {
                if pdb == record.pdb {
                    return Some(base);
                }
            }
        }
        None
    }
}

/// Pages of `chunk` (physical address `pa`) that map themselves from a kernel-half slot.
fn find_roots(chunk: &[u8], pa: u64, roots: &mut Vec<Root>) {
    for (index, page) in chunk.chunks_exact(PAGE_SIZE as usize).enumerate() {
        let address = pa + index as u64 * PAGE_SIZE;
        for slot in SELF_MAP_SLOTS {
            let e = u64::from_le_bytes(page[slot * 8..slot * 8 + 8].try_into().expect("8"));
            if e & PRESENT != 0 && e & LARGE == 0 && e & ADDRESS_MASK == address {
                roots.push(Root { address, slot });
                break;
            }
        }
        if roots.len() >= MAX_ROOTS {
            return;
        }
    }
}

/// The RSDS record at the start of `bytes`, if it names a kernel PDB.
fn kernel_record(bytes: &[u8]) -> Option<PdbInfo> {
    let record = &bytes[..bytes.len().min(24 + MAX_NAME)];
    let pdb = PdbInfo::parse_rsds(record)?;
    let name = pdb.file_name().to_ascii_lowercase();
    KERNEL_PDB_NAMES.contains(&name.as_str()).then_some(pdb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_pointing_at_itself_from_the_kernel_half_is_a_root() {
        let mut chunk = vec![0u8; 3 * PAGE_SIZE as usize];
        // Page 1 (pa 0x5000) maps itself at slot 0x1ED; page 2 at a user slot (not a root).
        let at = PAGE_SIZE as usize + 0x1ED * 8;
        chunk[at..at + 8].copy_from_slice(&(0x5000u64 | 0x63).to_le_bytes());
        let at = 2 * PAGE_SIZE as usize + 0x10 * 8;
        chunk[at..at + 8].copy_from_slice(&(0x6000u64 | 0x63).to_le_bytes());
        let mut roots = Vec::new();
        find_roots(&chunk, 0x4000, &mut roots);
        assert_eq!(
            roots,
            vec![Root {
                address: 0x5000,
                slot: 0x1ED
            }]
        );
    }

    #[test]
    fn only_records_naming_the_kernel_pdb_count() {
        let record = |name: &[u8]| {
            let mut r = b"RSDS".to_vec();
            r.extend_from_slice(&[7u8; 16]);
            r.extend_from_slice(&1u32.to_le_bytes());
            r.extend_from_slice(name);
            r.push(0);
            r
        };
        assert!(kernel_record(&record(b"ntkrnlmp.pdb")).is_some());
        assert!(kernel_record(&record(b"d:\\os\\obj\\NTKRNLMP.PDB")).is_some());
        assert!(kernel_record(&record(b"leaky.pdb")).is_none());
        assert!(kernel_record(b"RSDS").is_none());
    }
}
