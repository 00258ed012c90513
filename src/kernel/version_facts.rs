//! **Kernel structure offsets that do not come from the target's PDB.**
//!
//! TEMPORARY. These are guesses the host makes about private kernel structures. Everything here
//! must be replaced by lookups in the kernel's PDB (`_KLDR_DATA_TABLE_ENTRY`) once the symbols
//! layer lands; nothing else in the host may hard-code a private structure offset.
//!
//! Source: `shared/spec/kd.md` §4.3 — KLDR_DATA_TABLE_ENTRY (x64), identical in every build from
//! Windows 10 1803 to Windows 11 23H2 (Vergilius), and the same prefix as Windows 7's
//! `_LDR_DATA_TABLE_ENTRY` for the fields used here.

/// `InLoadOrderLinks.Flink` (LIST_ENTRY64 at 0).
pub const KLDR_FLINK: usize = 0x00;
/// `DllBase`.
pub const KLDR_DLL_BASE: usize = 0x30;
/// `EntryPoint`.
pub const KLDR_ENTRY_POINT: usize = 0x38;
/// `SizeOfImage` (u32).
pub const KLDR_SIZE_OF_IMAGE: usize = 0x40;
/// `FullDllName` (UNICODE_STRING: Length u16, MaximumLength u16, pad, Buffer u64 @+8).
pub const KLDR_FULL_DLL_NAME: usize = 0x48;
/// `BaseDllName` (UNICODE_STRING).
pub const KLDR_BASE_DLL_NAME: usize = 0x58;
/// Bytes of an entry to read to cover the fields above.
pub const KLDR_READ_LEN: usize = 0x68;
/// Offset of `Buffer` inside a 64-bit UNICODE_STRING.
pub const UNICODE_STRING_BUFFER: usize = 0x08;
