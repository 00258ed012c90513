//! The leak pull's result: a plain data model that every output format renders (text, JSON, CSV,
//! later HTML). JSON is documented in the README ("JSON output") and versioned by
//! [`SCHEMA_VERSION`]: addresses are `0x`-prefixed lowercase hex strings (JSON numbers lose
//! precision above 2^53), sizes and counts are integers.

use serde::{Deserialize, Serialize};

pub use crate::symbols::SourceKind;

/// Bumped whenever a field changes meaning or disappears (additions keep the version).
pub const SCHEMA_VERSION: u32 = 1;

/// Everything one pull learned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeakReport {
    pub schema_version: u32,
    pub target: TargetSummary,
    pub verifier: VerifierState,
    pub drivers: Vec<DriverReport>,
    /// Allocation sites over every reported driver, biggest first.
    pub sites: Vec<LeakSite>,
    /// False when anything was skipped or unreadable; `incomplete_reasons` says what.
    pub complete: bool,
    pub incomplete_reasons: Vec<String>,
    /// Modules whose symbols a frame needed but could not be used (a PDB name refused, a PDB
    /// not found or unusable): their frames read `module+0xoff`. Absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub symbols_skipped: Vec<SkippedSymbols>,
    /// The target was stopped in a bug check (absent: an ordinary break-in, or a dump of a
    /// machine that did not crash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bugcheck: Option<BugCheckReport>,
    /// The kernel's unloaded-driver list (`MmUnloadedDrivers`), newest first, when the pull
    /// needed it (a caller or frame outside every loaded module, or a 0x62 for an unloaded
    /// driver). Absent when it was not read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unloaded_modules: Vec<UnloadedModule>,
}

/// A bug check the target was stopped in, and what its parameters mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BugCheckReport {
    #[serde(with = "hex")]
    pub code: u64,
    /// `DRIVER_VERIFIER_DETECTED_VIOLATION`, when kdleak knows the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Parameters 1–4.
    pub parameters: [String; 4],
    /// Where they were read: `KiBugCheckData` or `dump header`.
    pub source: String,
    /// What parameter 1 says, for the subcodes kdleak decodes (0xC4/0x62).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meaning: Option<String>,
    /// 0xC4/0x62: the driver named by parameter 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// 0xC4/0x62: parameter 3, the verifier's structure for the driver.
    #[serde(with = "hex_opt", default, skip_serializing_if = "Option::is_none")]
    pub verifier_data: Option<u64>,
    /// 0xC4/0x62: parameter 4, the allocations the kernel counted as not freed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_freed: Option<u64>,
    /// 0xC4/0x62: the outstanding allocations the pull found for that driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<u64>,
}

impl BugCheckReport {
    /// `0xC4 (DRIVER_VERIFIER_DETECTED_VIOLATION)`.
    pub fn title(&self) -> String {
        match &self.name {
            Some(name) => format!("0x{:X} ({name})", self.code),
            None => format!("{:#x}", self.code),
        }
    }
}

/// One record of the unloaded-driver list (WinDbg's `lm` "Unloaded modules").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnloadedModule {
    pub name: String,
    #[serde(with = "hex")]
    pub start: u64,
    #[serde(with = "hex")]
    pub end: u64,
    /// When it was unloaded (FILETIME, 100 ns since 1601).
    pub time: u64,
}

/// A module whose symbols were skipped, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedSymbols {
    /// The module's name as the target's module list gives it.
    pub module: String,
    /// The PDB path its RSDS record names, as recorded.
    pub pdb: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSummary {
    pub build: u32,
    #[serde(with = "hex")]
    pub kernel_base: u64,
    /// When the pull happened (RFC 3339, UTC, host clock).
    pub time: String,
    /// How kdleak reached the target (connection string without the key).
    pub connection: String,
    /// Where each module's symbols came from: the kernel (whose layouts every read uses) first,
    /// then each module a caller or stack frame falls in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub symbol_sources: Vec<SymbolSource>,
    /// A live pull's stops, in order, each with how long it froze the target (absent for
    /// dumps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stops: Vec<TargetStop>,
    /// Seconds of a live pull's host work done while the target ran: fetching symbols between
    /// the stops, symbolizing after the last (absent for dumps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_s: Option<f64>,
}

impl TargetSummary {
    /// Seconds the target was frozen, over every stop.
    pub fn frozen_s(&self) -> f64 {
        self.stops.iter().map(|stop| stop.frozen_s).sum()
    }
}

/// What a stop of the target was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopPurpose {
    /// Only to identify the kernel (GetVersion, its RSDS record): its PDB was not on this host,
    /// so it was fetched while the target ran again.
    Identify,
    /// The reads of the pull (or of `info`).
    Read,
}

impl StopPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            StopPurpose::Identify => "identify",
            StopPurpose::Read => "read",
        }
    }
}

/// One stop: what it was for and how long the target was frozen (host clock, from the stop
/// report to the acknowledged Continue).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetStop {
    pub purpose: StopPurpose,
    pub frozen_s: f64,
    /// This stop found another boot than the stop before it (the target rebooted while its
    /// symbols were fetched); the pull started over from this stop.
    #[serde(default, skip_serializing_if = "is_false")]
    pub new_boot: bool,
}

/// Where one module's symbols came from (`target.symbol_sources`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymbolSource {
    /// WinDbg's module name (`nt`, `myfault`).
    pub module: String,
    /// The PDB the module's RSDS record names, with its GUID and age (absent when the image
    /// headers could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pdb: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age: Option<u32>,
    /// `pdb` (the symbol path), `isf` (an ISF table of a symbol pack) or `none`.
    pub source: SourceKind,
    /// The PDB file or the ISF table (`pack.zip!entry` inside a zip).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Why there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// `MmVerifierData` and friends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifierState {
    /// `MmVerifierData.Level`: the verifier flag mask (`verifier /flags`).
    #[serde(with = "hex")]
    pub level: u64,
    /// One text per set bit of `level`, as `!verifier` prints them.
    pub flags: Vec<String>,
    /// `VfOptionFlags`, when the build has it.
    #[serde(with = "hex_opt", default, skip_serializing_if = "Option::is_none")]
    pub option_flags: Option<u64>,
    /// Whether pool tracking is on (level bit 0x8).
    pub pool_tracking: bool,
    /// Global statistics by `MmVerifierData` field name (e.g. `AllocationsAttempted`).
    pub statistics: std::collections::BTreeMap<String, u64>,
    /// The allocate/free log, when it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogSummary {
    /// `VfPoolTracesLength`.
    pub length: u64,
    /// `VfPoolTracesIndex` at the time of the pull.
    pub index: u64,
    /// Frames per record (13 or 50, from `_VF_POOL_TRACE`).
    pub frames_per_record: u32,
    /// Records that were written (not empty slots), among those read.
    pub records: u64,
    /// False when the log was read newest-first only until every outstanding allocation had
    /// its stack (kdleak's default; `--whole-log` reads it all): older records, and so older
    /// history, were not read.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub whole_ring: bool,
    /// Entries (ring slots, written or not) the pull read: `length` for a whole-ring read,
    /// fewer when the newest-first read stopped early. What `!verifier 80`'s "Parsing …" and
    /// "Parsed entry …" lines report. Absent in reports written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries_read: Option<u64>,
}

impl LogSummary {
    /// Entries the pull read: [`LogSummary::entries_read`], or for an older report the whole
    /// ring when it says so, else the records it holds.
    pub fn entries_parsed(&self) -> u64 {
        self.entries_read.unwrap_or(if self.whole_ring {
            self.length
        } else {
            self.records
        })
    }
}

fn yes() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Per-driver counters, from `_VF_TARGET_VERIFIED_DRIVER_DATA` (or the older per-driver object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverCounters {
    pub current_nonpaged_allocations: u64,
    pub current_paged_allocations: u64,
    pub nonpaged_bytes: u64,
    pub paged_bytes: u64,
    pub peak_nonpaged_allocations: u64,
    pub peak_paged_allocations: u64,
    pub peak_nonpaged_bytes: u64,
    pub peak_paged_bytes: u64,
    /// `ContiguousMemoryBytes` / `PeakContiguousMemoryBytes`, when the build has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contiguous_memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_contiguous_memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverReport {
    /// Image name (`myfault.sys`).
    pub name: String,
    /// The `_VF_SUSPECT_DRIVER_ENTRY` address (WinDbg's "Entry" column).
    #[serde(with = "hex")]
    pub entry: u64,
    /// `Loaded`, `Unloaded` or `NotLoaded` (configured, never seen).
    pub state: String,
    /// The driver's `_VF_TARGET_DRIVER` (today's WinDbg names the driver by it).
    #[serde(with = "hex_opt", default, skip_serializing_if = "Option::is_none")]
    pub target_driver: Option<u64>,
    /// The suspect entry's `Loads` and `Unloads` counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loads: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unloads: Option<u64>,
    #[serde(with = "hex_opt", default, skip_serializing_if = "Option::is_none")]
    pub image_base: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<u64>,
    pub counters: DriverCounters,
    pub allocations: Vec<Allocation>,
}

/// One outstanding tracked allocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    #[serde(with = "hex")]
    pub address: u64,
    /// Charged size, as the tracker records it (WinDbg's SizeInBytes).
    pub size: u64,
    /// Pool tag as four characters (non-printable bytes as `.`).
    pub tag: String,
    #[serde(with = "hex")]
    pub caller: u64,
    pub caller_symbol: String,
    /// `nonpaged` or `paged`, when the log or tracker tells; `special` for special pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The most recent allocation stack from the log, newest record first; empty when the log
    /// no longer holds it (or was not read).
    pub stack: Vec<Frame>,
    /// The requested size and thread of that log record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_size: Option<u64>,
    #[serde(with = "hex_opt", default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<u64>,
    /// Every log record for this block's range, newest first (allocations and frees).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<LogRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    #[serde(with = "hex")]
    pub address: u64,
    /// `module!Function+0xoff`, `module+0xoff`, or the raw address when outside every module.
    pub symbol: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Position in the ring.
    pub slot: u64,
    #[serde(with = "hex")]
    pub address: u64,
    pub size: u64,
    #[serde(with = "hex")]
    pub thread: u64,
    pub stack: Vec<Frame>,
}

/// Outstanding allocations grouped by site (caller, whole stack, or tag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakSite {
    /// The caller's symbol, the stack's symbols joined by " <- ", or the tag.
    pub site: String,
    pub driver: String,
    pub count: u64,
    pub bytes: u64,
}

/// `0x…` strings for u64 in JSON.
pub mod hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{value:#x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| serde::de::Error::custom(format!("not a 0x hex number: {text}")))
    }

    pub fn parse(text: &str) -> Option<u64> {
        u64::from_str_radix(text.strip_prefix("0x")?, 16).ok()
    }
}

/// `0x…` strings for Option<u64> in JSON.
pub mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.serialize_str(&format!("{v:#x}")),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| {
                super::hex::parse(&text)
                    .ok_or_else(|| serde::de::Error::custom(format!("not a 0x hex number: {text}")))
            })
            .transpose()
    }
}
