//! The leak pull's result: a plain data model that every output format renders (text, JSON, CSV,
//! later HTML). JSON is documented in the README ("JSON output") and versioned by
//! [`SCHEMA_VERSION`]: addresses are `0x`-prefixed lowercase hex strings (JSON numbers lose
//! precision above 2^53), sizes and counts are integers.

use serde::{Deserialize, Serialize};

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
