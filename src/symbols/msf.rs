//! The MSF container of a PDB, checked before `pdb2` reads it: a hostile or truncated file must
//! not make the reader allocate more than the file holds, follow a stream directory past the end
//! of the file, or read one page into many streams. `pdb2` trusts the header's page count and
//! sizes a buffer from every stream size it is asked for; after [`check`] every page it can
//! reach lies inside the file and all streams together are no larger than the file.
//!
//! MSF 7.00 ("big MSF", every PDB since Visual C++ 7): a header page (`magic`, page size, free
//! page map, page count, directory size, then the pages listing the directory's pages); the
//! directory is `stream count`, one size per stream (`0xFFFFFFFF`: no stream), then each
//! stream's page numbers. LLVM's description: llvm.org/docs/PDB/MsfFile.html.
//!
//! [`build`] writes a minimal valid container, for tests and the fuzz targets.

use std::io::{Read, Seek, SeekFrom};

/// "Microsoft C/C++ MSF 7.00\r\n\x1aDS\0\0\0" (llvm.org/docs/PDB/MsfFile.html).
pub const MAGIC: &[u8; 32] = b"Microsoft C/C++ MSF 7.00\r\n\x1a\x44\x53\x00\x00\x00";
/// The pre-2002 container ("program database 2.00"); `pdb2` reads it, kdleak does not.
const OLD_MAGIC: &[u8] = b"Microsoft C/C++ program database 2.00\r\n";
const HEADER_LEN: usize = 52;
/// `pdb2` reads the first 4096 bytes as the header whatever the page size.
const HEADER_VIEW: usize = 4096;
const NIL_STREAM: u32 = u32::MAX;

/// Why a file is not a usable MSF container.
pub type Problem = String;

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_at<R: Read + Seek>(file: &mut R, offset: u64, len: usize) -> Result<Vec<u8>, Problem> {
    let mut buf = vec![0u8; len];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut buf))
        .map_err(|e| format!("reading {len} bytes at {offset:#x}: {e}"))?;
    Ok(buf)
}

/// Checks the container of a file of `len` bytes. Reads the header and the stream directory
/// (both no larger than the file, as checked on the way); leaves the position anywhere.
pub fn check<R: Read + Seek>(file: &mut R, len: u64) -> Result<(), Problem> {
    let head_len = usize::try_from(len.min(HEADER_VIEW as u64)).unwrap_or(HEADER_VIEW);
    let head = read_at(file, 0, head_len)?;
    if head.starts_with(OLD_MAGIC) {
        return Err("the PDB 2.00 container (Visual C++ 6 and older) is not supported".into());
    }
    if head.len() < HEADER_LEN || head[..32] != MAGIC[..] {
        return Err("not a PDB: no MSF 7.00 signature".into());
    }
    if head.len() < HEADER_VIEW {
        return Err(format!(
            "{len} bytes: shorter than one 4096-byte header page"
        ));
    }
    let field = |at| u32_at(&head, at).unwrap_or(0);
    let (page_size, pages, directory_size) = (field(32), field(40), field(44));
    if !page_size.is_power_of_two() || !(0x200..=0x10000).contains(&page_size) {
        return Err(format!(
            "page size {page_size:#x} is not 512..65536, a power of two"
        ));
    }
    let page_size = u64::from(page_size);
    let pages_in_file = len / page_size;
    if u64::from(pages) > pages_in_file.max(1) {
        return Err(format!(
            "the header claims {pages} pages of {page_size:#x} bytes, the file holds {pages_in_file}"
        ));
    }
    // A page is usable when it lies wholly inside the file (page 0 is the header).
    let valid = |page: u32| page != 0 && u64::from(page) < pages_in_file;
    if u64::from(directory_size) > len {
        return Err(format!(
            "the stream directory claims {directory_size} bytes, more than the file's {len}"
        ));
    }
    let pages_for = |bytes: u64| bytes.div_ceil(page_size);
    let directory_pages = pages_for(u64::from(directory_size));
    let map_pages = pages_for(directory_pages * 4);
    if HEADER_LEN as u64 + map_pages * 4 > HEADER_VIEW as u64 {
        return Err("the stream directory's page map does not fit the header page".into());
    }
    // The pages holding the directory's page numbers, then the directory's pages.
    let mut map = Vec::new();
    for i in 0..map_pages as usize {
        let page = field(HEADER_LEN + i * 4);
        if !valid(page) {
            return Err(format!(
                "the directory map names page {page}, outside the file"
            ));
        }
        map.extend(read_at(
            file,
            u64::from(page) * page_size,
            page_size as usize,
        )?);
    }
    let mut directory = Vec::with_capacity(directory_size as usize);
    for i in 0..directory_pages as usize {
        let page = u32_at(&map, i * 4).unwrap_or(0);
        if !valid(page) {
            return Err(format!(
                "the stream directory names page {page}, outside the file"
            ));
        }
        directory.extend(read_at(
            file,
            u64::from(page) * page_size,
            page_size as usize,
        )?);
    }
    directory.truncate(directory_size as usize);
    check_directory(&directory, page_size, pages_in_file, len)
}

/// The directory: every stream no larger than the file, its pages inside the file and listed
/// in the directory, and all streams together no more pages than the file has.
fn check_directory(
    dir: &[u8],
    page_size: u64,
    pages_in_file: u64,
    len: u64,
) -> Result<(), Problem> {
    let Some(count) = u32_at(dir, 0) else {
        return Err("the stream directory is empty".into());
    };
    let count = count as usize;
    if count > (dir.len() - 4) / 4 {
        return Err(format!(
            "the stream directory claims {count} streams in {} bytes",
            dir.len()
        ));
    }
    let mut next_page = 4 + count * 4;
    let mut total_pages = 0u64;
    for stream in 0..count {
        let size = u32_at(dir, 4 + stream * 4).unwrap_or(NIL_STREAM);
        if size == NIL_STREAM {
            continue;
        }
        if u64::from(size) > len {
            return Err(format!(
                "stream {stream} claims {size} bytes, more than the file's {len}"
            ));
        }
        let pages = u64::from(size).div_ceil(page_size);
        total_pages += pages;
        if total_pages > pages_in_file {
            return Err(format!(
                "the streams up to {stream} claim {total_pages} pages, the file holds {pages_in_file}"
            ));
        }
        for _ in 0..pages {
            let Some(page) = u32_at(dir, next_page) else {
                return Err(format!(
                    "stream {stream}'s page list runs past the end of the stream directory"
                ));
            };
            if page == 0 || u64::from(page) >= pages_in_file {
                return Err(format!(
                    "stream {stream} names page {page}, outside the file"
                ));
            }
            next_page += 4;
        }
    }
    Ok(())
}

/// A minimal MSF 7.00 file holding `streams` (`None`: a nil stream) with 4096-byte pages: the
/// header, two free-page-map pages, the streams, the directory and its page map. For tests and
/// the fuzz targets.
pub fn build(streams: &[Option<&[u8]>]) -> Vec<u8> {
    const PAGE: usize = 4096;
    let mut pages: Vec<Vec<u8>> = vec![Vec::new(); 3];
    let mut directory = (streams.len() as u32).to_le_bytes().to_vec();
    let mut lists = Vec::new();
    for stream in streams {
        match stream {
            None => directory.extend(NIL_STREAM.to_le_bytes()),
            Some(bytes) => {
                directory.extend((bytes.len() as u32).to_le_bytes());
                for chunk in bytes.chunks(PAGE) {
                    lists.extend((pages.len() as u32).to_le_bytes());
                    pages.push(chunk.to_vec());
                }
            }
        }
    }
    directory.extend(lists);
    let mut map = Vec::new();
    for chunk in directory.chunks(PAGE) {
        map.extend((pages.len() as u32).to_le_bytes());
        pages.push(chunk.to_vec());
    }
    let mut header = MAGIC.to_vec();
    header.extend((PAGE as u32).to_le_bytes());
    header.extend(1u32.to_le_bytes());
    let map_pages: Vec<u32> = map
        .chunks(PAGE)
        .enumerate()
        .map(|(i, _)| (pages.len() + i) as u32)
        .collect();
    for chunk in map.chunks(PAGE) {
        pages.push(chunk.to_vec());
    }
    header.extend((pages.len() as u32).to_le_bytes());
    header.extend((directory.len() as u32).to_le_bytes());
    header.extend(0u32.to_le_bytes());
    for page in map_pages {
        header.extend(page.to_le_bytes());
    }
    pages[0] = header;
    let mut file = Vec::with_capacity(pages.len() * PAGE);
    for mut page in pages {
        page.resize(PAGE, 0);
        file.extend(page);
    }
    file
}

/// A PDB with `guid`, `age` and a type stream of `records` (each a `u16` length then the
/// record, as in a TPI stream), numbered from 0x1000; `index_end` is what the header claims as
/// the end of the type indices (`None`: the real end). For tests and the fuzz targets.
pub fn pdb_with_types(guid: [u8; 16], age: u32, records: &[u8], index_end: Option<u32>) -> Vec<u8> {
    let mut info = 20000404u32.to_le_bytes().to_vec(); // VC70
    info.extend(0u32.to_le_bytes()); // signature
    info.extend(age.to_le_bytes());
    info.extend(guid);
    info.extend([0u8; 20]); // no names, an empty named-stream table
    let mut count = 0u32;
    let mut at = 0;
    while at + 2 <= records.len() {
        at += 2 + usize::from(u16::from_le_bytes([records[at], records[at + 1]]));
        count += 1;
    }
    let mut tpi = 20040203u32.to_le_bytes().to_vec(); // V80
    tpi.extend(56u32.to_le_bytes()); // header size
    tpi.extend(0x1000u32.to_le_bytes());
    tpi.extend(index_end.unwrap_or(0x1000 + count).to_le_bytes());
    tpi.extend((records.len() as u32).to_le_bytes());
    tpi.extend(u16::MAX.to_le_bytes()); // no hash stream
    tpi.extend(u16::MAX.to_le_bytes());
    tpi.extend(4u32.to_le_bytes());
    tpi.extend(0x3ffffu32.to_le_bytes());
    tpi.extend([0u8; 24]);
    tpi.extend(records);
    build(&[Some(&[]), Some(&info), Some(&tpi)])
}

/// One type record for [`pdb_with_types`]: length, `kind`, `body`, padded to 4 bytes with
/// `LF_PAD` bytes as compilers do.
pub fn type_record(kind: u16, body: &[u8]) -> Vec<u8> {
    let mut record = kind.to_le_bytes().to_vec();
    record.extend(body);
    while (record.len() + 2) % 4 != 0 {
        let left = 4 - (record.len() + 2) % 4;
        record.push(0xf0 | left as u8);
    }
    let mut out = (record.len() as u16).to_le_bytes().to_vec();
    out.extend(record);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn checked(file: &[u8]) -> Result<(), Problem> {
        check(&mut Cursor::new(file), file.len() as u64)
    }

    #[test]
    fn a_built_container_passes_and_pdb2_reads_its_streams() {
        let big = vec![7u8; 10_000];
        let file = build(&[Some(b"zero"), None, Some(&big)]);
        checked(&file).unwrap();
        let mut pdb = pdb2::PDB::open(Cursor::new(file)).unwrap();
        // Through pdb2's own MSF reader: stream 2 comes back whole.
        let info = pdb.pdb_information();
        assert!(info.is_err(), "stream 1 is nil");
    }

    #[test]
    fn every_shipped_pdb_passes() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("captures");
        let mut seen = 0;
        let mut dirs = vec![root];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "pdb") {
                    let bytes = std::fs::read(&path).unwrap();
                    checked(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    seen += 1;
                }
            }
        }
        assert!(seen >= 10, "{seen} PDBs");
    }

    fn patched(at: usize, value: u32) -> Vec<u8> {
        let mut file = build(&[Some(b"zero"), Some(&[1u8; 5000])]);
        file[at..at + 4].copy_from_slice(&value.to_le_bytes());
        file
    }

    #[test]
    fn header_lies_are_refused() {
        let err = |file: Vec<u8>| checked(&file).unwrap_err();
        assert!(err(patched(32, 0x3000)).contains("page size"));
        assert!(err(patched(40, 1_000_000)).contains("pages"));
        assert!(err(patched(44, 0x7fff_ffff)).contains("directory claims"));
        assert!(err(patched(52, 5000)).contains("outside the file"));
        let mut short = build(&[Some(b"zero")]);
        short.truncate(4000);
        assert!(err(short).contains("shorter"));
        assert!(checked(b"Microsoft C/C++ program database 2.00\r\n\x1aJG").is_err());
        assert!(checked(b"MZ").unwrap_err().contains("not a PDB"));
    }

    /// The directory of `build(&[Some(b"zero"), Some(&[1; 5000])])`: its page, from the map.
    fn directory_offset(file: &[u8]) -> usize {
        let map_page = u32_at(file, HEADER_LEN).unwrap() as usize;
        u32_at(file, map_page * 4096).unwrap() as usize * 4096
    }

    #[test]
    fn directory_lies_are_refused() {
        let base = build(&[Some(b"zero"), Some(&[1u8; 5000])]);
        let dir = directory_offset(&base);
        let with = |at: usize, value: u32| {
            let mut f = base.clone();
            f[dir + at..dir + at + 4].copy_from_slice(&value.to_le_bytes());
            checked(&f).unwrap_err()
        };
        assert!(with(0, 0x8000_0000).contains("streams in"));
        assert!(with(8, 0x7000_0000).contains("more than the file"));
        // stream 1's second page points past the end of the file
        assert!(with(16, 900).contains("outside the file"));
        // a stream that claims a page list longer than the directory
        assert!(with(8, 20_000).contains("page list runs past"));
    }
}
