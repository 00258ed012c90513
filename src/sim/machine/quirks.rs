//! Behaviour of KD targets that are not Windows' own stub, and of Windows machines booted without
//! a debugger: `kdleak sim --quirks flags=0x3,data_list=0,unanswered_reads_over=1024,…`.
//!
//! Each quirk reproduces something a host meets in the field, so the host's handling of it can be
//! tested end to end:
//!
//! * `flags=HEX`, `data_list=HEX`, `kern_base=HEX`, `machine=HEX` replace GetVersion's Flags,
//!   DebuggerDataList, KernBase and MachineType. Xen's kdd sets Flags from its own guesses (DATA
//!   always, PTR64 from its OS table) and reports DebuggerDataList 0 when it did not find the list
//!   (`xen-project/xen` `tools/debugger/kdd/kdd.c`, `kdd_handle_handshake`); real boot debuggers
//!   set flags loosely too.
//! * `unanswered_reads_over=N`: a ReadVirtualMemory/ReadPhysicalMemory asking for more than N
//!   bytes is acknowledged and never answered, as a stub whose reply buffer is smaller than the
//!   request does — instead of clipping the read as Windows does (kd.md §3.10).
//! * `dr7=HEX`: the Dr7 every processor reports in its control report (KernelDr7). Stubs that
//!   send another architecture's control report (kdd sends the x86 one for x64 guests, kd.md
//!   §3.1) make a host read junk there.
//! * `kdbg=encoded`: KDDEBUGGER_DATA64 is kept encoded in memory, as Windows 8 and later x64 do
//!   when they boot without a kernel debugger (stops-and-unloads.md §4); live reads and
//!   `--write-dump` both see the encoded block.

use std::str::FromStr;

/// The quirks in force. The default is a well-behaved Windows target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quirks {
    pub version_flags: Option<u16>,
    pub debugger_data_list: Option<u64>,
    pub kern_base: Option<u64>,
    pub machine_type: Option<u16>,
    pub unanswered_reads_over: Option<usize>,
    pub dr7: Option<u64>,
    pub encoded_kdbg: bool,
}

/// A `--quirks` string that cannot be used, naming the bad token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad --quirks token '{token}': {reason} (expected e.g. flags=0x3,data_list=0,kern_base=0xfffff80312400000,machine=0x14c,unanswered_reads_over=1024,dr7=0x400,kdbg=encoded)")]
pub struct QuirksError {
    pub token: String,
    pub reason: &'static str,
}

fn number(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

impl FromStr for Quirks {
    type Err = QuirksError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut quirks = Self::default();
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let error = |reason| QuirksError {
                token: token.to_string(),
                reason,
            };
            let (name, value) = token.split_once('=').ok_or_else(|| error("missing '='"))?;
            let value16 = || {
                number(value)
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| error("not a 16-bit number"))
            };
            let value64 = || number(value).ok_or_else(|| error("not a number"));
            match name.trim() {
                "flags" => quirks.version_flags = Some(value16()?),
                "data_list" => quirks.debugger_data_list = Some(value64()?),
                "kern_base" => quirks.kern_base = Some(value64()?),
                "machine" => quirks.machine_type = Some(value16()?),
                "unanswered_reads_over" => {
                    let limit = value64()?;
                    if limit == 0 {
                        return Err(error("a read limit must be at least 1 byte"));
                    }
                    quirks.unanswered_reads_over = Some(limit as usize);
                }
                "dr7" => quirks.dr7 = Some(value64()?),
                "kdbg" => match value.trim() {
                    "encoded" => quirks.encoded_kdbg = true,
                    "plain" => quirks.encoded_kdbg = false,
                    _ => return Err(error("kdbg is `encoded` or `plain`")),
                },
                _ => return Err(error("unknown quirk")),
            }
        }
        Ok(quirks)
    }
}

impl Quirks {
    /// True when a memory read of `len` bytes gets no answer.
    pub fn leaves_read_unanswered(&self, len: usize) -> bool {
        self.unanswered_reads_over.is_some_and(|limit| len > limit)
    }
}

/// The keys of the simulated machine's KDBG encoding. Windows draws KiWaitNever and KiWaitAlways
/// at boot; these are fixed so dumps are reproducible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdbgKeys {
    pub wait_never: u64,
    pub wait_always: u64,
    /// Address of `KdpDataBlockEncoded`, mixed into every word.
    pub flag_address: u64,
}

/// The encoding Windows applies to each u64 of the block (KdEncodeDataBlock, as decoders such as
/// QEMU's `contrib/elf2dmp` and Volatility 3 undo it):
/// `encoded = never ^ ror(flag_address ^ bswap(always ^ plain), never & 63)`.
pub fn encode_kdbg_word(plain: u64, keys: &KdbgKeys) -> u64 {
    let mixed = keys.flag_address ^ (keys.wait_always ^ plain).swap_bytes();
    keys.wait_never ^ mixed.rotate_right((keys.wait_never & 63) as u32)
}

/// The inverse of [`encode_kdbg_word`] (what a memory-forensics tool computes).
pub fn decode_kdbg_word(encoded: u64, keys: &KdbgKeys) -> u64 {
    let mixed = (keys.wait_never ^ encoded).rotate_left((keys.wait_never & 63) as u32);
    keys.wait_always ^ (keys.flag_address ^ mixed).swap_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_quirk_parses() {
        let q: Quirks =
            "flags=0x3,data_list=0,kern_base=0xfffff80000000000,machine=0x14c,unanswered_reads_over=1024,dr7=0xffffffff00000401,kdbg=encoded"
                .parse()
                .unwrap();
        assert_eq!(q.version_flags, Some(3));
        assert_eq!(q.debugger_data_list, Some(0));
        assert_eq!(q.kern_base, Some(0xfffff800_00000000));
        assert_eq!(q.machine_type, Some(0x14c));
        assert_eq!(q.unanswered_reads_over, Some(1024));
        assert_eq!(q.dr7, Some(0xffff_ffff_0000_0401));
        assert!(q.encoded_kdbg);
        assert!(q.leaves_read_unanswered(1025));
        assert!(!q.leaves_read_unanswered(1024));
        assert_eq!("".parse::<Quirks>().unwrap(), Quirks::default());
    }

    #[test]
    fn bad_tokens_are_named() {
        for (text, token) in [
            ("flags=0x10000", "flags=0x10000"),
            ("data_list", "data_list"),
            ("dr7=zz", "dr7=zz"),
            ("kdbg=rot13", "kdbg=rot13"),
            ("unanswered_reads_over=0", "unanswered_reads_over=0"),
            ("loss=0.1", "loss=0.1"),
        ] {
            let error = text.parse::<Quirks>().unwrap_err();
            assert_eq!(error.token, token);
            assert!(error.to_string().contains(token));
        }
    }

    #[test]
    fn the_kdbg_encoding_round_trips_and_hides_the_tag() {
        let keys = KdbgKeys {
            wait_never: 0x8642_0975_31fe_dcba,
            wait_always: 0x0f1e_2d3c_4b5a_6978,
            flag_address: 0xffff_f803_1234_5678,
        };
        for plain in [0, 1, 0x4742_444b_0000_0000, 0xffff_f803_1861_df80, u64::MAX] {
            let encoded = encode_kdbg_word(plain, &keys);
            assert_eq!(decode_kdbg_word(encoded, &keys), plain);
        }
        let tag_word = 0x0000_0380_4742_444b;
        assert_ne!(encode_kdbg_word(tag_word, &keys) as u32, 0x4742_444b);
    }
}
