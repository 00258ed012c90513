//! CAB-compressed `.pd_` files from a symbol server (issue 17): expansion never panics, never
//! writes more than the file inside declares nor more than the limit, and writes exactly what it
//! declares when it succeeds. Inputs: mode 0 a whole cabinet; mode 1 patches over a small valid
//! MSZIP cabinet built from the input.
//!
//! Shared by the fuzz target and `tests/fuzz_regressions.rs`, which replays saved inputs.
#![allow(dead_code)]

use std::io::{Cursor, Write};

use kdleak::symbols::store::expand_cab_into;

const LIMIT: u64 = 1 << 20;

struct Counting(u64);

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        assert!(self.0 <= LIMIT, "wrote past the limit");
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn small_cab(content: &[u8], compression: cab::CompressionType) -> Vec<u8> {
    let mut builder = cab::CabinetBuilder::new();
    builder.add_folder(compression).add_file("x.pdb");
    let mut writer = builder.build(Cursor::new(Vec::new())).unwrap();
    while let Some(mut file) = writer.next_file().unwrap() {
        file.write_all(content).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn exercise(cabinet: Vec<u8>) {
    let mut sink = Counting(0);
    if let Ok(written) = expand_cab_into(Cursor::new(cabinet), "x.pdb", LIMIT, &mut sink) {
        assert_eq!(written, sink.0);
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        exercise(rest.to_vec());
        return;
    }
    // [u8 patch count][patches: u16 offset, u8 value]...[content]
    let count = usize::from(rest.first().copied().unwrap_or(0) % 16);
    let patches = rest.get(1..1 + 3 * count).unwrap_or(&[]);
    let content = rest.get(1 + 3 * count..).unwrap_or(&[]);
    let compression = if mode & 2 == 0 {
        cab::CompressionType::MsZip
    } else {
        cab::CompressionType::None
    };
    let mut cabinet = small_cab(content, compression);
    for p in patches.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([p[0], p[1]])) % cabinet.len();
        cabinet[at] = p[2];
    }
    exercise(cabinet);
}
