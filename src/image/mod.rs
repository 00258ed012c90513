//! Memory images of a Windows x64 machine — the crash dumps Windows and WinDbg write, the ELF
//! cores QEMU/libvirt write of a VM, raw physical images — as a second source of target memory:
//! the machine's facts, physical pages by page frame, and virtual reads through the image's own
//! page tables, behind the same [`Memory`] trait as a live session.
//!
//! * [`format`](mod@format) — the seam: [`MachineFacts`] and the page map each format's reader
//!   returns, and the one place that picks the reader; [`crashdump`] — `DUMP_HEADER64` dumps
//!   (DumpType 1, 5, 6, and the RDMP types 8, 9, 10); [`elf`] — QEMU ELF cores; [`raw`] — raw
//!   physical memory.
//! * [`scan`] — the page-table root and the kernel, for images that do not name them.
//! * [`physmap`] — physical page frame → file offset; [`paging`] — the x64 page-table walk;
//!   [`Dump`] (here) — virtual reads and the `Memory` trait over any format; [`error`].
//!
//! Data flows one way: file ([`Source`]) → format reader → facts + [`PhysMap`] → [`Dump`] →
//! scan (when the format does not say) → page walk → virtual reads.
//!
//! The file is read lazily with positional reads: opening reads the header (crash dumps: 8 KiB
//! and the bitmap), and each memory read then reads only the pages it touches. The operating
//! system's page cache does the caching, so a dump of many GiB costs what the pull reads.
//! Positional reads rather than a memory map: a map of a file that shrinks under it (a dump
//! still being copied) kills the process with SIGBUS, a read just fails.

pub mod crashdump;
pub mod elf;
pub mod error;
pub mod format;
pub mod paging;
pub mod physmap;
pub mod raw;
pub mod scan;

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

pub use crashdump::{DumpHeader, DumpKind, HEADER_LEN};
pub use error::{DumpError, Result};
pub use format::{FormatHint, Layout, MachineFacts};
pub use paging::Translation;
pub use physmap::{PhysMap, PAGE_SIZE};

use crate::kernel::Memory;
use crate::session::{self, ReadOutcome};

/// Random access to the bytes of a dump: a file, or a buffer in tests and the fuzzer.
pub trait Source {
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` from `offset`; fails if the source ends first.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
    /// The byte ranges that hold data, ascending: a sparse file's holes (zeros never written)
    /// are left out, so a scan need not read them. Everything, unless the source knows better.
    fn data_regions(&self) -> Vec<Range<u64>> {
        std::iter::once(0..self.len()).collect()
    }
}

impl Source for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        match end.filter(|&e| e <= Source::len(self)) {
            Some(end) => {
                buf.copy_from_slice(&self[offset as usize..end as usize]);
                Ok(())
            }
            None => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

impl Source for Vec<u8> {
    fn len(&self) -> u64 {
        Source::len(self.as_slice())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.as_slice().read_at(offset, buf)
    }
}

/// A dump file with its length taken once at open.
pub struct DumpFile {
    file: File,
    len: u64,
    /// Bytes read so far (the benchmark's "bytes read from the file").
    read: AtomicU64,
}

impl DumpFile {
    /// Bytes read from the file since it was opened.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}

/// Data regions of a sparse file beyond which the rest counts as one region.
const MAX_DATA_REGIONS: usize = 1 << 20;

impl Source for DumpFile {
    fn len(&self) -> u64 {
        self.len
    }

    #[cfg(unix)]
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }

    /// `SEEK_DATA`/`SEEK_HOLE` (lseek(2)); where the file system cannot say, the whole file.
    #[cfg(target_os = "linux")]
    fn data_regions(&self) -> Vec<Range<u64>> {
        use nix::unistd::{lseek, Whence};
        let mut regions = Vec::new();
        let mut at = 0u64;
        while at < self.len {
            let Ok(start) = lseek(&self.file, at as i64, Whence::SeekData) else {
                // ENXIO: no data after `at`; anything else: the file system cannot tell.
                if regions.is_empty() && at == 0 {
                    return std::iter::once(0..self.len).collect();
                }
                break;
            };
            let start = start as u64;
            let end = lseek(&self.file, start as i64, Whence::SeekHole)
                .map_or(self.len, |end| end as u64)
                .min(self.len);
            if end <= start {
                break;
            }
            if regions.len() == MAX_DATA_REGIONS {
                regions.push(start..self.len);
                break;
            }
            regions.push(start..end);
            at = end;
        }
        regions
    }

    #[cfg(windows)]
    fn read_at(&self, mut offset: u64, mut buf: &mut [u8]) -> std::io::Result<()> {
        self.read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_read(&self.file, buf, offset)? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }
}

/// Virtual pages whose translation is remembered before the cache starts over.
const TRANSLATION_CACHE: usize = 1 << 16;

/// An opened dump: its machine's facts, where each physical page is, and virtual reads.
pub struct Dump<S: Source = DumpFile> {
    src: S,
    pub facts: MachineFacts,
    /// What the file is (the format reader's words).
    pub format: String,
    /// How the facts the format does not give were found ([`Dump::locate`]), for the output.
    pub findings: Vec<String>,
    cr3_candidates: Vec<u64>,
    map: PhysMap,
    /// Virtual page → physical page frame (`None`: not in the dump), for this process's reads.
    translations: HashMap<u64, Option<u64>>,
}

/// Opens the image at `path`, checks its header and page map against the file, and refuses
/// dumps that cannot hold the pull's memory (minidumps, triage dumps) saying why. The format is
/// found from the file's first bytes unless `hint` names it.
pub fn open(path: &Path, hint: FormatHint) -> Result<Dump<DumpFile>> {
    let io = |source| DumpError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(DumpError::NotADump(
            "it is a directory or a device, not a regular file".into(),
        ));
    }
    Dump::with_hint(
        DumpFile {
            file,
            len: meta.len(),
            read: AtomicU64::new(0),
        },
        hint,
    )
}

impl<S: Source> Dump<S> {
    /// Reads the facts and page map of `src`, with the reader of its format.
    pub fn new(src: S) -> Result<Self> {
        Self::with_hint(src, FormatHint::Detect)
    }

    /// [`Dump::new`] with the format found from the first bytes or named by `hint`.
    pub fn with_hint(src: S, hint: FormatHint) -> Result<Self> {
        let Layout {
            facts,
            map,
            format,
            cr3_candidates,
        } = format::read(&src, hint)?;
        let dtb = facts.directory_table_base;
        let pml4 = (dtb & 0x000f_ffff_ffff_f000) / PAGE_SIZE;
        // 0: the format does not say; [`Dump::locate`] finds the root.
        if dtb != 0 && map.file_offset(pml4).is_none() {
            return Err(DumpError::corrupt(
                0x10,
                format!(
                    "DirectoryTableBase (CR3) {dtb:#x} names page frame {pml4:#x}, which the \
                     dump does not hold ({} pages): no virtual address can be translated",
                    map.pages()
                ),
            ));
        }
        Ok(Self {
            src,
            facts,
            format,
            findings: Vec::new(),
            cr3_candidates,
            map,
            translations: HashMap::new(),
        })
    }

    pub fn phys_map(&self) -> &PhysMap {
        &self.map
    }

    /// The file (or buffer) the image is read from.
    pub fn source(&self) -> &S {
        &self.src
    }

    /// Reads `buf.len()` bytes at physical address `pa` (within one page); `false` if the dump
    /// does not hold that page.
    pub fn read_physical(&self, pa: u64, buf: &mut [u8]) -> Result<bool> {
        let in_page = pa % PAGE_SIZE;
        debug_assert!(in_page + buf.len() as u64 <= PAGE_SIZE);
        let Some(page) = self.map.file_offset(pa / PAGE_SIZE) else {
            return Ok(false);
        };
        let at = page + in_page;
        self.src.read_at(at, buf).map_err(|e| {
            DumpError::corrupt(at, format!("reading physical address {pa:#x} failed: {e}"))
        })?;
        Ok(true)
    }

    /// Where virtual address `va` is in physical memory, through the dump's page tables.
    pub fn translate(&self, va: u64) -> Result<Translation> {
        paging::translate(self.facts.directory_table_base, va, |pa| {
            let mut entry = [0u8; 8];
            Ok(self
                .read_physical(pa, &mut entry)?
                .then(|| u64::from_le_bytes(entry)))
        })
    }

    /// The physical page frame of the virtual page at `va_page`, cached.
    fn frame(&mut self, va_page: u64) -> Result<Option<u64>> {
        if let Some(&frame) = self.translations.get(&va_page) {
            return Ok(frame);
        }
        let frame = match self.translate(va_page)? {
            Translation::Physical(pa) => Some(pa / PAGE_SIZE),
            Translation::NotMapped | Translation::TableMissing(_) => None,
        };
        if self.translations.len() >= TRANSLATION_CACHE {
            self.translations.clear();
        }
        self.translations.insert(va_page, frame);
        Ok(frame)
    }

    /// Reads `len` bytes of virtual memory at `address`; pages that are not mapped or not in
    /// the dump are zeros, listed in `unreadable`.
    pub fn read_virtual(&mut self, address: u64, len: usize) -> Result<ReadOutcome> {
        let mut out = ReadOutcome {
            address,
            bytes: vec![0; len],
            unreadable: Vec::new(),
        };
        let mut done = 0usize;
        while done < len {
            let Some(va) = address.checked_add(done as u64) else {
                // Past the top of the address space: nothing there; the bytes stay zero and the
                // unreadable range before already ends at the top.
                break;
            };
            let in_page = (va % PAGE_SIZE) as usize;
            let n = (PAGE_SIZE as usize - in_page).min(len - done);
            let readable = match self.frame(va - in_page as u64)? {
                Some(frame) => {
                    let pa = frame * PAGE_SIZE + in_page as u64;
                    self.read_physical(pa, &mut out.bytes[done..done + n])?
                }
                None => false,
            };
            if !readable {
                mark(&mut out.unreadable, va..va.saturating_add(n as u64));
            }
            done += n;
        }
        Ok(out)
    }
}

/// Appends `range` to sorted, merged unreadable ranges.
fn mark(unreadable: &mut Vec<std::ops::Range<u64>>, range: std::ops::Range<u64>) {
    match unreadable.last_mut() {
        Some(last) if last.end == range.start => last.end = range.end,
        _ => unreadable.push(range),
    }
}

impl<S: Source> Memory for Dump<S> {
    async fn read(&mut self, address: u64, len: usize) -> session::Result<ReadOutcome> {
        self.read_virtual(address, len)
            .map_err(|e| session::Error::TargetData(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::crashdump::header::tests::header;
    use super::crashdump::runs::tests::{bitmap_dump, full_dump};
    use super::*;

    const VA: u64 = 0xfffff800_00400000;

    /// A full dump of frames 0..8 whose tables (PML4 at frame 1) map VA → frame 5 and
    /// VA + 0x1000 → frame 0x100 (not in the dump); frame 5 holds a pattern.
    fn dump_with_tables() -> Vec<u8> {
        let mut f = full_dump(&[(0, 8)]);
        let page = |f: &mut Vec<u8>, frame: u64, index: u64, value: u64| {
            let at = HEADER_LEN + (frame * PAGE_SIZE + index * 8) as usize;
            f[at..at + 8].copy_from_slice(&value.to_le_bytes());
        };
        let [a, b, c, d] = [39, 30, 21, 12].map(|s| (VA >> s) & 0x1ff);
        page(&mut f, 1, a, 0x2003);
        page(&mut f, 2, b, 0x3003);
        page(&mut f, 3, c, 0x4003);
        page(&mut f, 4, d, 0x5003);
        page(&mut f, 4, d + 1, 0x100_003);
        for i in 0..PAGE_SIZE as usize {
            f[HEADER_LEN + 5 * PAGE_SIZE as usize + i] = i as u8;
        }
        f[0x10..0x18].copy_from_slice(&0x1000u64.to_le_bytes());
        f
    }

    #[test]
    fn a_virtual_read_follows_the_page_tables_and_reports_missing_pages() {
        let mut dump = Dump::new(dump_with_tables()).unwrap();
        let out = dump.read_virtual(VA + 0xff0, 0x20).unwrap();
        assert_eq!(&out.bytes[..0x10], &(0xf0..=0xffu8).collect::<Vec<_>>()[..]);
        assert_eq!(&out.bytes[0x10..], &[0u8; 0x10]);
        assert_eq!(out.unreadable, vec![VA + 0x1000..VA + 0x1010]);
        // An unmapped address, and a read that wraps the address space.
        let out = dump.read_virtual(0x1000, 8).unwrap();
        assert_eq!(out.unreadable, vec![0x1000..0x1008]);
        let out = dump.read_virtual(u64::MAX - 3, 8).unwrap();
        assert_eq!(out.bytes.len(), 8);
        assert_eq!(out.unreadable.first().map(|r| r.start), Some(u64::MAX - 3));
    }

    #[test]
    fn cr3_outside_the_dump_is_refused() {
        let mut f = dump_with_tables();
        f[0x10..0x18].copy_from_slice(&0x7777_7000u64.to_le_bytes());
        let err = Dump::new(f).err().unwrap();
        assert!(
            err.to_string()
                .contains("DirectoryTableBase (CR3) 0x77777000"),
            "{err}"
        );
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn a_bitmap_dump_reads_the_frames_it_holds() {
        let mut f = bitmap_dump(&[0, 7], 8);
        f[0x10..0x18].copy_from_slice(&0x7000u64.to_le_bytes());
        let dump = Dump::new(f).unwrap();
        let mut b = [1u8; 4];
        assert!(dump.read_physical(0x7ffc, &mut b).unwrap());
        assert_eq!(b, [0; 4]);
        assert!(!dump.read_physical(0x3000, &mut b).unwrap());
    }

    #[test]
    fn an_empty_or_tiny_file_is_not_a_dump() {
        for bytes in [vec![], b"PAGE".to_vec()] {
            let err = Dump::new(bytes).err().unwrap();
            assert!(matches!(err, DumpError::NotADump(_)), "{err}");
        }
        let err = Dump::new(header(1)[..0x100].to_vec()).err().unwrap();
        assert!(
            err.to_string()
                .contains("inside the 0x2000-byte dump header"),
            "{err}"
        );
    }
}
