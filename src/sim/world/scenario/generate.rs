//! Deterministic large scenarios: N verified drivers, M tracked allocations per driver, and a
//! `VfPoolTraces` ring filled to a given fraction with alloc/free history
//! (`gen:build=19041,drivers=20,allocs=5000,log=1.0,seed=1`).
//!
//! Drivers: the first is the fixture's `myfault.sys`, the second `leaky.sys`, both at their
//! manifest bases; drivers 3.. are the fixture's `leaky.sys` image loaded again under the names
//! `drv003.sys`, `drv004.sys`, … at their own bases (relocated, see [`super::DriverSpec::base`]),
//! so each has a real MZ/PE header, `.pdata` and an RSDS record (naming `leaky.pdb`), and frames
//! such as `drv003!LeakyAllocate+0x32` resolve at that base.
//!
//! Any fixture and any ISF: `gen:fixture=PATH,isf=PATH` lays the fixture kernel's memory out
//! from another build's ISF — the host then reads it with the fixture kernel's PDB (named by
//! the RSDS record in the mapped kernel), which is how a host PDB of another build misreads a
//! target, and what the pull's self-checks must catch.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::pe::Manifest;
use super::{
    default_root, AllocationSpec, DriverSpec, DriverState, KernelSpec, Num, PoolKind, Result,
    Scenario, ScenarioError, TraceSpec, VerifierSpec,
};

/// Parameters of [`Scenario::generate`]. `Default`: win10-19041, 2 drivers × 100 allocations,
/// full ring of 0x10000 records, 10 % of the allocations freed, seed 1.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateSpec {
    /// Fixture build: 7601, 19041 or 22000 (`captures/fixtures/win7-7601`, …). Ignored when
    /// `fixture` is given (the build is then the fixture manifest's).
    pub build: u32,
    /// A fixture directory (PE images + `manifest.json`, with `myfault.sys` and `leaky.sys`)
    /// instead of the shipped one of `build`; absolute, or relative to the repository root like
    /// a scenario file's.
    pub fixture: Option<PathBuf>,
    /// The ISF the memory is laid out from; default: the fixture manifest's.
    pub isf: Option<PathBuf>,
    /// Verified, loaded drivers (≥ 1).
    pub drivers: u32,
    /// Tracked allocations per driver (live + freed).
    pub allocations_per_driver: u32,
    /// Minimum fraction (0.0..=1.0) of the ring holding records. Allocation and free records come
    /// first; missing ones are made up by alloc/free churn pairs of the first driver, logged
    /// before the allocations. More allocations than the ring holds wrap it (fill 1.0).
    pub log_fill: f64,
    /// `VfPoolTracesLength` (power of two).
    pub trace_length: u64,
    /// Percentage (0..=100) of each driver's allocations that are freed right away.
    pub free_percent: u32,
    pub seed: u64,
}

impl Default for GenerateSpec {
    fn default() -> Self {
        GenerateSpec {
            build: 19041,
            fixture: None,
            isf: None,
            drivers: 2,
            allocations_per_driver: 100,
            log_fill: 1.0,
            trace_length: 0x10000,
            free_percent: 10,
            seed: 1,
        }
    }
}

impl GenerateSpec {
    /// Parses `gen:key=value,…` (or the part after `gen:`; `gen` alone = defaults). Keys:
    /// `build` (7601 | 19041 | 22000, or the fixture label `win10-19041`), `fixture` (a label
    /// like `build`, or a fixture directory), `isf` (an ISF file), `drivers`, `allocs`, `log`
    /// (fraction), `ring` (trace length, decimal or 0x-hex), `free` (percent), `seed`. Paths
    /// cannot hold commas.
    pub fn parse(text: &str) -> Result<GenerateSpec> {
        let bad = |m: String| ScenarioError::Invalid(format!("generator spec `{text}`: {m}"));
        let body = text.trim();
        let body = body.strip_prefix("gen").unwrap_or(body);
        let body = body.strip_prefix(':').unwrap_or(body);
        let mut g = GenerateSpec::default();
        let mut build_given = false;
        for kv in body.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| bad(format!("`{kv}` is not key=value")))?;
            let int = |v: &str| -> Result<u64> {
                let v = v.trim();
                let r = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
                    Some(h) => u64::from_str_radix(h, 16).ok(),
                    None => v.parse().ok(),
                };
                r.ok_or_else(|| bad(format!("`{k}`: bad number `{v}`")))
            };
            let small = |v: &str| -> Result<u32> {
                u32::try_from(int(v)?).map_err(|_| bad(format!("`{k}` too large")))
            };
            let label = |v: &str| -> Option<u32> {
                Some(match v {
                    "win7-7601" | "win7" => 7601,
                    "win10-19041" | "win10" => 19041,
                    "win11-22000" | "win11" => 22000,
                    n => n.parse().ok()?,
                })
            };
            match k.trim() {
                "build" => {
                    g.build = match label(v.trim()) {
                        Some(b) => b,
                        None => small(v)?,
                    };
                    build_given = true;
                }
                "fixture" => match label(v.trim()) {
                    Some(b) => {
                        g.build = b;
                        build_given = true;
                    }
                    None => g.fixture = Some(PathBuf::from(v.trim())),
                },
                "isf" => g.isf = Some(PathBuf::from(v.trim())),
                "drivers" => g.drivers = small(v)?,
                "allocs" | "allocations" => g.allocations_per_driver = small(v)?,
                "log" | "log_fill" => {
                    g.log_fill = v
                        .trim()
                        .parse()
                        .map_err(|_| bad(format!("`log`: bad fraction `{v}`")))?
                }
                "ring" | "trace_length" => g.trace_length = int(v)?,
                "free" => g.free_percent = small(v)?,
                "seed" => g.seed = int(v)?,
                other => return Err(bad(format!("unknown key `{other}`"))),
            }
        }
        if build_given && g.fixture.is_some() {
            return Err(bad(
                "give `build` or a fixture directory, not both (the fixture's manifest names its \
                 build)"
                    .into(),
            ));
        }
        g.validate()?;
        Ok(g)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(ScenarioError::Invalid(format!("generator: {m}")));
        if self.fixture.is_none() && fixture_label(self.build).is_none() {
            return bad(&format!(
                "no fixture for build {} (7601, 19041, 22000)",
                self.build
            ));
        }
        if self.drivers == 0 || self.drivers > 999 {
            return bad("drivers must be 1..=999");
        }
        if !(0.0..=1.0).contains(&self.log_fill) {
            return bad("log fill must be within 0.0..=1.0");
        }
        if self.trace_length == 0
            || !self.trace_length.is_power_of_two()
            || self.trace_length > 1 << 24
        {
            return bad("ring length must be a power of two ≤ 0x1000000");
        }
        if self.free_percent > 100 {
            return bad("free percent must be ≤ 100");
        }
        Ok(())
    }

    /// The canonical spec string (`Scenario::name` of the generated scenario).
    pub fn to_spec_string(&self) -> String {
        let kernel = match &self.fixture {
            Some(fixture) => format!("fixture={}", fixture.display()),
            None => format!("build={}", self.build),
        };
        let isf = self
            .isf
            .as_ref()
            .map(|isf| format!(",isf={}", isf.display()))
            .unwrap_or_default();
        format!(
            "gen:{kernel}{isf},drivers={},allocs={},log={},ring={:#x},free={},seed={}",
            self.drivers,
            self.allocations_per_driver,
            self.log_fill,
            self.trace_length,
            self.free_percent,
            self.seed
        )
    }
}

fn fixture_label(build: u32) -> Option<&'static str> {
    Some(match build {
        7601 => "win7-7601",
        19041 => "win10-19041",
        22000 => "win11-22000",
        _ => return None,
    })
}

/// splitmix64: small, fast, and stable across platforms and releases (no external RNG crate).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

const KERNEL_ALLOC_FRAMES: [&str; 2] = [
    "nt!VeAllocatePoolWithTagPriority+0x2b6",
    "nt!VerifierExAllocatePoolEx+0x1d",
];
const KERNEL_IOCTL_FRAMES: [&str; 4] = [
    "nt!IovCallDriver+0xa0",
    "nt!IopXxxControlFile+0x607",
    "nt!NtDeviceIoControlFile+0x56",
    "nt!KiSystemServiceCopyEnd+0x13",
];

impl Scenario {
    /// A deterministic generated scenario (same spec → same scenario, field for field).
    pub fn generate(spec: &GenerateSpec) -> Result<Scenario> {
        spec.validate()?;
        let fixture = match &spec.fixture {
            Some(path) => path.clone(),
            None => PathBuf::from(format!(
                "captures/fixtures/{}",
                fixture_label(spec.build).expect("validated")
            )),
        };
        let label = fixture.display().to_string();
        let manifest = Manifest::load(&default_root()?.join(&fixture))?;
        let img = |f: &str| {
            manifest.images.get(f).ok_or_else(|| {
                ScenarioError::Manifest(format!(
                    "{label}: no {f} (a generated scenario loads myfault.sys and leaky.sys)"
                ))
            })
        };
        let (myfault, leaky) = (img("myfault.sys")?, img("leaky.sys")?);
        // Extra copies of leaky.sys above the highest fixture driver, 64 KiB-aligned slots.
        let step = (leaky.size_of_image + 0xFFFF) & !0xFFFF;
        let top = (myfault.image_base + myfault.size_of_image)
            .max(leaky.image_base + leaky.size_of_image);
        let extra_base = (top + 0xF_FFFF) & !0xF_FFFF;

        let mut rng = Rng(spec.seed ^ 0x6b64_6c65_616b_0001);
        let mut drivers = vec![];
        let mut allocations = vec![];
        let mut records = 0u64;
        for i in 0..spec.drivers as u64 {
            let (name, image, base) = match i {
                0 => ("myfault.sys".to_string(), None, None),
                1 => ("leaky.sys".to_string(), None, None),
                _ => (
                    format!("drv{:03}.sys", i + 1),
                    Some("leaky.sys".to_string()),
                    Some(Num(extra_base + (i - 2) * step)),
                ),
            };
            let stem = Manifest::module_name(&name);
            drivers.push(DriverSpec {
                name: name.clone(),
                image,
                verified: true,
                state: DriverState::Loaded,
                suspect_entry: None,
                loads: None,
                unloads: None,
                full_name: None,
                base,
                pdb_path: None,
                counters: Default::default(),
            });
            // Driver-specific frames: (caller, outer frames, free frame).
            let (caller, outer, free_frame) = if i == 0 {
                (
                    format!("{stem}!MyfaultDeviceControl+0x358"),
                    vec![format!("{stem}!MyfaultDispatch+0xb7")],
                    format!("{stem}!MyfaultDeviceControl+0x370"),
                )
            } else {
                (
                    format!("{stem}!LeakyAllocate+0x32"),
                    vec![format!("{stem}!LeakyDeviceControl+0x7b")],
                    format!("{stem}!LeakyDeviceControl+0x12f"),
                )
            };
            let mut stack: Vec<String> =
                KERNEL_ALLOC_FRAMES.iter().map(|s| s.to_string()).collect();
            stack.push(caller.clone());
            stack.extend(outer.iter().cloned());
            stack.extend(KERNEL_IOCTL_FRAMES.iter().map(|s| s.to_string()));
            let mut free_stack = vec!["nt!ExFreePoolWithTag+0x4b".to_string(), free_frame];
            free_stack.extend(outer.iter().cloned());
            free_stack.extend(KERNEL_IOCTL_FRAMES.iter().map(|s| s.to_string()));

            for _ in 0..spec.allocations_per_driver {
                let r = rng.range(0, 100);
                let size = if r < 80 {
                    rng.range(0x10, 0x100)
                } else if r < 98 {
                    rng.range(0x100, 0x800)
                } else {
                    rng.range(0x800, 0x4000)
                };
                let paged = rng.range(0, 8) == 0;
                let freed = rng.range(0, 100) < spec.free_percent as u64;
                // Special pool serves blocks that fit in one page with its header.
                let special = !freed && size <= 0xFE0 && rng.range(0, 64) == 0;
                // Tags: 'G' + driver number (3 digits) for non-paged, 'g' + number for paged.
                let mut tag = String::new();
                let _ = write!(
                    tag,
                    "{}{:03}",
                    if paged { 'g' } else { 'G' },
                    (i + 1) % 1000
                );
                records += 1 + freed as u64;
                allocations.push(AllocationSpec {
                    driver: name.clone(),
                    address: None,
                    size: Num(size),
                    pool: if paged {
                        PoolKind::Paged
                    } else {
                        PoolKind::NonPaged
                    },
                    tag,
                    caller: Some(caller.clone()),
                    stack: stack.clone(),
                    thread: None,
                    freed,
                    free_stack: if freed { free_stack.clone() } else { vec![] },
                    special,
                    count: 1,
                });
            }
        }
        let want = (spec.log_fill * spec.trace_length as f64).ceil() as u64;
        let churn = want.saturating_sub(records).div_ceil(2);
        let first = Manifest::module_name(&drivers[0].name);
        let index_start = rng.next() & 0xFFFF_FFFF;
        Ok(Scenario {
            name: spec.to_spec_string(),
            description: format!(
                "generated: {} verified drivers × {} allocations ({} % freed), ring {:#x} filled ≥ {}, seed {}",
                spec.drivers,
                spec.allocations_per_driver,
                spec.free_percent,
                spec.trace_length,
                spec.log_fill,
                spec.seed
            ),
            kernel: KernelSpec {
                fixture,
                isf: spec.isf.clone(),
                pool_base: None,
                slist: None,
                avl_tables: Some(1 + spec.drivers / 16),
                self_map_slot: None,
            },
            verifier: VerifierSpec {
                level: Num(8),
                ..Default::default()
            },
            trace: TraceSpec {
                length: Num(spec.trace_length),
                index_start: Num(index_start),
                churn,
                churn_driver: Some(drivers[0].name.clone()),
                churn_stack: vec![
                    KERNEL_ALLOC_FRAMES[0].to_string(),
                    if first == "myfault" {
                        "myfault!MyfaultDeviceControl+0x358".to_string()
                    } else {
                        format!("{first}!LeakyAllocate+0x32")
                    },
                ],
                ..Default::default()
            },
            drivers,
            allocations,
            timeline: Vec::new(),
            bugcheck: None,
        })
    }

    /// `gen:…` → [`Scenario::generate`] with [`GenerateSpec::parse`]; anything else →
    /// [`Scenario::builtin`].
    pub fn from_name(name: &str) -> Result<Scenario> {
        let t = name.trim();
        if t == "gen" || t.starts_with("gen:") {
            Scenario::generate(&GenerateSpec::parse(t)?)
        } else {
            Scenario::builtin(t)
        }
    }
}
