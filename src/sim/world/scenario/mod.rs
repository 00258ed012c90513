//! Scenarios for the simulated Windows target: which kernel fixture, which drivers, which pool
//! allocations and verifier settings — and [`Scenario::build`], which lays all of it out in
//! memory from the build's ISF tables (see `captures/scenarios/README.md` for the TOML format).
//!
//! The layout never uses the host's PDB-reading code: every offset comes from the ISF
//! ([`super::isf`]), so the host (which reads the generated PDBs) and the simulator check each other.

mod generate;
pub mod image;
mod layout;
mod pe;
mod system;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use generate::GenerateSpec;
pub use image::MemoryImage;
pub use layout::{
    charged_size, Counters, LayoutReport, RuntimeState, TrackerRuntime, PAGE as TRACKER_PAGE,
    POOL_PAGE_SIGNATURE, SLOT as TRACKER_SLOT,
};
pub use pe::{Manifest, ManifestImage};
pub use system::{csd_version, nt_version, KUSER_SHARED_DATA};

use super::isf::FieldUse;

/// Errors while loading or laying out a scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario: {0}")]
    Invalid(String),
    #[error("scenario: {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("scenario: TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("scenario: manifest: {0}")]
    Manifest(String),
    #[error(transparent)]
    Isf(#[from] super::isf::IsfError),
    #[error(transparent)]
    Embedded(#[from] crate::embedded::EmbeddedError),
}

pub type Result<T> = std::result::Result<T, ScenarioError>;

/// An unsigned number written in TOML as an integer or as a string (`"0xfffffa8005400000"`,
/// `"fffffa80`05400000"`), needed because TOML integers are signed 64-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Num(pub u64);

impl Serialize for Num {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:#x}", self.0))
    }
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            I(i64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::I(i) if i >= 0 => Ok(Num(i as u64)),
            Raw::I(i) => Err(serde::de::Error::custom(format!("negative number {i}"))),
            Raw::S(s) => parse_num(&s)
                .map(Num)
                .ok_or_else(|| serde::de::Error::custom(format!("bad number `{s}`"))),
        }
    }
}

/// Parses a number written as a string: always hexadecimal, with or without `0x`, WinDbg's
/// backtick and `_` separators allowed (`"0xfffffa8005400000"`, `"fffffa80`05400000"`).
pub fn parse_num(s: &str) -> Option<u64> {
    let t: String = s.trim().chars().filter(|&c| c != '`' && c != '_').collect();
    let h = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(&t);
    u64::from_str_radix(h, 16).ok()
}

/// A scenario (one TOML file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub kernel: KernelSpec,
    pub verifier: VerifierSpec,
    #[serde(default)]
    pub trace: TraceSpec,
    #[serde(rename = "driver", default)]
    pub drivers: Vec<DriverSpec>,
    #[serde(rename = "allocation", default)]
    pub allocations: Vec<AllocationSpec>,
    /// Changes that happen while the target runs (see [`crate::sim::world::timeline`]).
    #[serde(rename = "timeline", default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineSpec>,
    /// The target is stopped in a bug check (`KiBugCheckData`, the dump header's
    /// BugCheckCode/Parameters); absent: an ordinary break-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bugcheck: Option<BugCheckSpec>,
}

/// `[bugcheck]`: the stop is a bug check (spec stops-and-unloads.md §1–2). Either
/// `driver = "x.sys"` — Driver Verifier's 0xC4/0x62 for that driver, the parameters as Windows
/// passes them (2: the address of the driver's loader-entry `BaseDllName`, 3: its
/// `_VF_TARGET_VERIFIED_DRIVER_DATA`, 4: its outstanding allocations) — or `code` and
/// `parameters` as given.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BugCheckSpec {
    /// The driver whose unload found pool outstanding (0xC4/0x62).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// A lying target: parameter 4 written as this instead of the outstanding count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<Num>,
    /// Any other bug check: its code and up to four parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Num>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Num>,
}

/// Which kernel: a fixture directory (PE images + `manifest.json`) and its ISF.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSpec {
    /// Fixture directory, relative to the repository root (e.g. `captures/fixtures/win11-22000`).
    pub fixture: PathBuf,
    /// ISF file; default `captures/isf/<manifest.isf>`.
    #[serde(default)]
    pub isf: Option<PathBuf>,
    /// Start of the range for dynamically allocated structures (default: 0xfffffa8002400000 on
    /// Win7, 0xffffc00a00000000 on later builds).
    #[serde(default)]
    pub pool_base: Option<Num>,
    /// SLIST_HEADER format for the per-driver tracker lists (default: `header8` where the build's
    /// `_SLIST_HEADER` has `Header8` (Win7), else `x64`).
    #[serde(default)]
    pub slist: Option<SlistFormat>,
    /// Number of `_VF_AVL_TABLE`s in `ViTargetDriversAvl` (nodes are spread round-robin). Default 1.
    #[serde(default)]
    pub avl_tables: Option<u32>,
    /// PML4 slot of the page tables' self-map (`physical.rs`): 0x1ED before Windows 10 1607 (the
    /// only value allowed there); on later builds a slot in 0x100–0x1FE that no mapped memory
    /// uses. Default: 0x1ED, or a slot derived from the scenario name.
    #[serde(default)]
    pub self_map_slot: Option<Num>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlistFormat {
    /// Vista/7 8-byte format: `Header8.NextEntry` holds bits 4..42 of the first entry (§5.4).
    Header8,
    /// Vista/7 16-byte format with `Header16.HeaderType = 1`.
    Header16,
    /// Win8+ `HeaderX64`: `NextEntry` (bits 4..63) in the second qword.
    X64,
}

/// `MmVerifierData` settings and counters that cannot be derived from the allocations.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierSpec {
    /// `MmVerifierData.Level` (flag mask; 8 = pool tracking).
    pub level: Num,
    #[serde(default)]
    pub option_flags: Num,
    #[serde(default)]
    pub verify_mode: Num,
    /// `VfRuleClasses` (Win10+); default: `level & 8`.
    #[serde(default)]
    pub rule_classes: Option<Num>,
    /// Overrides / extra counters (field name of `_MM_DRIVER_VERIFIER_DATA` → value). The
    /// Current*/Peak*/*Bytes counters are always derived; `AllocationsAttempted` and
    /// `AllocationsSucceeded` default to the number of allocations (churn included); `Loads` to the
    /// sum of the suspect entries' loads.
    #[serde(default)]
    pub stats: std::collections::BTreeMap<String, Num>,
    /// A lying target: values written over the derived `_MM_DRIVER_VERIFIER_DATA` counters
    /// (Current*/Peak* allocations, *Bytes) after the layout, by field name. A timeline event
    /// writes the derived values again.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub counters: std::collections::BTreeMap<String, Num>,
}

/// The `VfPoolTraces` ring.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSpec {
    /// `VfPoolTracesLength` (power of two).
    #[serde(default = "default_trace_length")]
    pub length: Num,
    /// Value of `VfPoolTracesIndex` before the first record (default 0).
    #[serde(default)]
    pub index_start: Num,
    /// Number of allocate+free pairs logged before the scenario's own allocations (each pair
    /// counts as one allocation attempt of `churn_size` bytes by `churn_driver`).
    #[serde(default)]
    pub churn: u64,
    /// Driver doing the churn (default: first verified loaded driver).
    #[serde(default)]
    pub churn_driver: Option<String>,
    #[serde(default = "default_churn_size")]
    pub churn_size: Num,
    #[serde(default)]
    pub churn_stack: Vec<String>,
    #[serde(default)]
    pub churn_thread: Option<Num>,
}

fn default_trace_length() -> Num {
    Num(0x10000)
}
fn default_churn_size() -> Num {
    Num(0x100)
}

impl Default for TraceSpec {
    fn default() -> Self {
        TraceSpec {
            length: default_trace_length(),
            index_start: Num(0),
            churn: 0,
            churn_driver: None,
            churn_size: default_churn_size(),
            churn_stack: vec![],
            churn_thread: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DriverState {
    #[default]
    Loaded,
    /// Was loaded and unloaded (suspect entry with Loads == Unloads ≥ 1; no image, no module
    /// entry, a `MmUnloadedDrivers` record of its range). A verified one may still own
    /// allocations (its verified data then outlives it, reachable from a 0x62 bug check only).
    Unloaded,
    /// Being unloaded, stopped in Driver Verifier's leak check (0xC4/0x62): image mapped, loader
    /// entry listed, suspect entry still loaded, but no longer in the verified-driver tree
    /// (stops-and-unloads.md §1).
    Unloading,
    /// Configured for verification but never loaded (Loads == 0).
    NeverLoaded,
}

impl DriverState {
    /// Its image is mapped and its loader entry on `PsLoadedModuleList`.
    pub fn mapped(self) -> bool {
        matches!(self, DriverState::Loaded | DriverState::Unloading)
    }
}

/// A driver: a fixture image (`myfault.sys`, `leaky.sys`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverSpec {
    /// Base name, e.g. `myfault.sys` (also the fixture file name unless `image` is given).
    pub name: String,
    #[serde(default)]
    pub image: Option<String>,
    /// Under Driver Verifier (gets a `VfSuspectDriversList` entry and, when loaded, verified data).
    #[serde(default)]
    pub verified: bool,
    #[serde(default)]
    pub state: DriverState,
    /// Fixed address of the `_VF_SUSPECT_DRIVER_ENTRY` (the "Entry" column on Win7).
    #[serde(default)]
    pub suspect_entry: Option<Num>,
    #[serde(default)]
    pub loads: Option<u32>,
    #[serde(default)]
    pub unloads: Option<u32>,
    /// FullDllName in the module list (default `\SystemRoot\system32\drivers\<name>`).
    #[serde(default)]
    pub full_name: Option<String>,
    /// Load address (page-aligned); default the image's manifest ImageBase. A different base
    /// relocates the image (DIR64 fixups, `ImageBase` in the mapped header updated), so one fixture
    /// image can be loaded several times under different names (`name = "drv003.sys"`,
    /// `image = "leaky.sys"`); `drv003!LeakyAllocate+0x32` then resolves at the new base.
    #[serde(default)]
    pub base: Option<Num>,
    /// The PDB path the image's RSDS record names, instead of the fixture's (GUID and age
    /// kept): a hostile target's name (`..\\..\\x.pdb`, `CON.pdb`, control characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pdb_path: Option<String>,
    /// A lying target: values written over this driver's derived
    /// `_VF_TARGET_VERIFIED_DRIVER_DATA` counters after the layout, by field name (e.g.
    /// `CurrentNonPagedPoolAllocations = 4`). A timeline event of the driver writes the derived
    /// values again.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub counters: std::collections::BTreeMap<String, Num>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolKind {
    #[default]
    NonPaged,
    Paged,
}

/// One tracked pool allocation (or `count` identical ones), in allocation order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocationSpec {
    /// Allocating driver (verified; loaded, or `unloading`/`unloaded` with a `[bugcheck]`).
    pub driver: String,
    /// Fixed block address (only with count = 1); default: from the pool range.
    #[serde(default)]
    pub address: Option<Num>,
    /// Requested size in bytes (the tracker holds the charged size, `charged_size`).
    pub size: Num,
    #[serde(default)]
    pub pool: PoolKind,
    /// Four-character tag (`"Leak"`), or a number (`"0x6b61654c"`).
    pub tag: String,
    /// CallingAddress: `module!Symbol+0xoff` or a raw address. Default: the first stack frame in
    /// the allocating driver.
    #[serde(default)]
    pub caller: Option<String>,
    /// Frames logged in `VfPoolTraces` (first = innermost), `module!Symbol+0xoff` or raw.
    #[serde(default)]
    pub stack: Vec<String>,
    #[serde(default)]
    pub thread: Option<Num>,
    /// Freed right after being allocated (its tracker slot goes back on the free list and a free
    /// record is logged with `free_stack`).
    #[serde(default)]
    pub freed: bool,
    #[serde(default)]
    pub free_stack: Vec<String>,
    /// Special-pool allocation (NumberOfBytes = requested size, back-pointer in the page).
    #[serde(default)]
    pub special: bool,
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// One `[[timeline]]` entry of a scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineSpec {
    /// Period in target time: `"60s"`, `"10s"`, `"1m"`, `"500ms"`, `"2h"`.
    pub every: String,
    /// The allocating driver (verified and loaded).
    pub driver: String,
    /// Allocate a block of this many bytes each period and keep it (a leak).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocate: Option<Num>,
    /// Allocate a block of this many bytes each period and free it at once (no growth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocate_and_free: Option<Num>,
    /// Pool tag, four characters or a number (default `"Leak"`).
    #[serde(default = "default_tag")]
    pub tag: String,
    #[serde(default)]
    pub pool: PoolKind,
    /// Logged allocation stack, innermost first (`module!Symbol+0xoff` or raw addresses).
    #[serde(default)]
    pub stack: Vec<String>,
    /// Logged free stack (with `allocate_and_free`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub free_stack: Vec<String>,
    /// CallingAddress; default: the first stack frame inside the driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<Num>,
}

fn default_tag() -> String {
    "Leak".into()
}

/// Names of the built-in scenarios.
pub const BUILTIN: &[&str] = &[
    "win7-myfault",
    "win10-myfault",
    "win11-myfault",
    "watch-leak",
    "win7-unload-leak",
    "win10-unload-leak",
    "win11-unload-leak",
];

/// The root relative fixture and ISF paths (`captures/fixtures/…`, `captures/isf/…`) are
/// resolved against: the built-in data, unpacked on first use ([`crate::embedded::root`]), so the
/// simulator needs no checkout.
pub fn default_root() -> Result<PathBuf> {
    Ok(crate::embedded::root()?.to_path_buf())
}

impl Scenario {
    pub fn from_toml(text: &str) -> Result<Scenario> {
        Ok(toml::from_str(text)?)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Reads a scenario file.
    pub fn load(path: impl AsRef<Path>) -> Result<Scenario> {
        let p = path.as_ref();
        let text = std::fs::read_to_string(p).map_err(|source| ScenarioError::Io {
            path: p.into(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// What `--scenario` and `sim:SCENARIO` accept: a scenario file if one exists at that path,
    /// otherwise a built-in or generated name ([`Scenario::from_name`]).
    pub fn resolve(name_or_path: &str) -> Result<Scenario> {
        if Path::new(name_or_path).is_file() {
            Self::load(name_or_path)
        } else {
            Self::from_name(name_or_path)
        }
    }

    /// The directory holding the scenario's kernel and driver PDBs (its fixture), for a host's
    /// symbol path.
    pub fn symbol_dir(&self) -> Result<PathBuf> {
        Ok(default_root()?.join(&self.kernel.fixture))
    }

    /// A built-in scenario by name (`win7-myfault`, `win10-myfault`, `win11-myfault`).
    pub fn builtin(name: &str) -> Result<Scenario> {
        let text = match name {
            "win7-myfault" => include_str!("../../../../captures/scenarios/win7-myfault.toml"),
            "win10-myfault" => include_str!("../../../../captures/scenarios/win10-myfault.toml"),
            "win11-myfault" => include_str!("../../../../captures/scenarios/win11-myfault.toml"),
            "watch-leak" => include_str!("../../../../captures/scenarios/watch-leak.toml"),
            "win7-unload-leak" => {
                include_str!("../../../../captures/scenarios/win7-unload-leak.toml")
            }
            "win10-unload-leak" => {
                include_str!("../../../../captures/scenarios/win10-unload-leak.toml")
            }
            "win11-unload-leak" => {
                include_str!("../../../../captures/scenarios/win11-unload-leak.toml")
            }
            other => {
                return Err(ScenarioError::Invalid(format!(
                    "no built-in scenario `{other}` (have {BUILTIN:?})"
                )))
            }
        };
        Self::from_toml(text)
    }

    /// Lays the scenario out, paths relative to [`default_root`].
    pub fn build(&self) -> Result<MemoryImage> {
        Ok(self.build_in(default_root()?)?.image)
    }

    /// Lays the scenario out with paths relative to `root`; also returns what was written where.
    pub fn build_in(&self, root: impl AsRef<Path>) -> Result<LayoutReport> {
        layout::build(self, root.as_ref())
    }

    /// Like [`Scenario::build`], with the list of every distinct ISF field the layout wrote (each
    /// once, in the order of first write).
    pub fn build_with_log(&self) -> Result<(MemoryImage, Vec<FieldUse>)> {
        let r = self.build_in(default_root()?)?;
        Ok((r.image, r.field_uses))
    }
}
