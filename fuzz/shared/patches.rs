//! Patches over a valid synthetic file, shared by the memory-image fuzz targets (`dump_header`,
//! `image_elf`, `image_raw`): each 10 bytes of input are a u16 position, scaled over the first
//! `span` bytes of the file, and a u64 written there (clipped at the file's end).
#![allow(dead_code)]

/// Applies the patches in `input` to `file`. `span` says, from a patch's bytes, over how many
/// leading bytes of the file its position is scaled. Returns the wrapping sum of the values
/// written, for a probe address that moves with the input.
pub fn apply(file: &mut [u8], input: &[u8], span: impl Fn(&[u8]) -> usize) -> u64 {
    let mut sum = 0u64;
    for patch in input.chunks_exact(10) {
        let at = usize::from(u16::from_le_bytes([patch[0], patch[1]])) * span(patch) / 0x10000;
        let value: [u8; 8] = patch[2..10].try_into().expect("8 bytes");
        let end = (at + 8).min(file.len());
        file[at..end].copy_from_slice(&value[..end - at]);
        sum = sum.wrapping_add(u64::from_le_bytes(value));
    }
    sum
}
