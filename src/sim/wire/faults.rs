//! Fault injection for the simulated target: loss, duplication, reordering, corruption, latency,
//! line-rate throttling, a reboot and a stall — seeded, so a failing run can be replayed.
//!
//! `--faults loss=0.3,dup=0.05,reorder=0.1,corrupt=0.01,latency=5ms,jitter=1ms,baud=115200,
//! reboot_after=20s,stall_after=1m,seed=7`. Probabilities are per datagram (KDNET) or per write
//! (KDCOM). The injector only decides; the transports carry out its plan.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What to inject. The default injects nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultSpec {
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub corrupt: f64,
    pub latency: Duration,
    pub jitter: Duration,
    /// Throttle streams to this line rate (10 bits per byte, as an 8N1 UART).
    pub baud: Option<u32>,
    /// The target reboots this long after it starts: new boot, new handshake, memory reloaded.
    pub reboot_after: Option<Duration>,
    /// The target reboots once it has been resumed this many times (a reboot between two host
    /// pulls that does not depend on how fast the host runs).
    pub reboot_after_continues: Option<u64>,
    /// A scenario with a `[bugcheck]` runs first as its loaded-driver equivalent, and stops in
    /// the bug check on its own once it has been resumed this many times (the driver unloaded
    /// between two host pulls: `watch` across the stop; issue 20).
    pub bugcheck_after_continues: Option<u64>,
    /// The target stops answering this long after it starts, as a hung machine.
    pub stall_after: Option<Duration>,
    pub seed: u64,
}

/// A `--faults` string that cannot be used, naming the bad token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad --faults token '{token}': {reason} (expected e.g. loss=0.3,dup=0.05,reorder=0.1,corrupt=0.01,latency=5ms,jitter=1ms,baud=115200,reboot_after=20s,reboot_after_continues=5,bugcheck_after_continues=2,stall_after=1m,seed=7)")]
pub struct FaultSpecError {
    pub token: String,
    pub reason: &'static str,
}

impl FromStr for FaultSpec {
    type Err = FaultSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut spec = Self::default();
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let error = |reason| FaultSpecError {
                token: token.to_string(),
                reason,
            };
            let (name, value) = token.split_once('=').ok_or_else(|| error("missing '='"))?;
            match name {
                "loss" => {
                    spec.loss = probability(value).ok_or_else(|| error("not a probability 0..1"))?
                }
                "dup" => {
                    spec.duplicate =
                        probability(value).ok_or_else(|| error("not a probability 0..1"))?
                }
                "reorder" => {
                    spec.reorder =
                        probability(value).ok_or_else(|| error("not a probability 0..1"))?
                }
                "corrupt" => {
                    spec.corrupt =
                        probability(value).ok_or_else(|| error("not a probability 0..1"))?
                }
                "latency" => {
                    spec.latency = crate::duration::parse(value)
                        .ok_or_else(|| error("not a duration like 5ms"))?
                }
                "jitter" => {
                    spec.jitter = crate::duration::parse(value)
                        .ok_or_else(|| error("not a duration like 1ms"))?
                }
                "baud" => {
                    let baud = value.parse::<u32>().ok().filter(|b| *b >= 50);
                    spec.baud = Some(baud.ok_or_else(|| error("not a line rate ≥ 50"))?);
                }
                "reboot_after" => {
                    spec.reboot_after = Some(
                        crate::duration::parse(value)
                            .ok_or_else(|| error("not a duration like 20s"))?,
                    )
                }
                "bugcheck_after_continues" => {
                    spec.bugcheck_after_continues = Some(
                        value
                            .parse::<u64>()
                            .ok()
                            .filter(|n| *n >= 1)
                            .ok_or_else(|| error("not a count ≥ 1"))?,
                    )
                }
                "reboot_after_continues" => {
                    spec.reboot_after_continues = Some(
                        value
                            .parse::<u64>()
                            .ok()
                            .filter(|n| *n >= 1)
                            .ok_or_else(|| error("not a count ≥ 1"))?,
                    )
                }
                "stall_after" => {
                    spec.stall_after = Some(
                        crate::duration::parse(value)
                            .ok_or_else(|| error("not a duration like 1m"))?,
                    )
                }
                "seed" => spec.seed = value.parse().map_err(|_| error("not an integer"))?,
                _ => return Err(error("unknown fault")),
            }
        }
        Ok(spec)
    }
}

fn probability(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|p| (0.0..=1.0).contains(p))
}

/// One copy of a datagram or write to deliver after `delay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub delay: Duration,
    pub bytes: Vec<u8>,
}

/// What the injector did, for the simulator's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultCounts {
    pub planned: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupted: u64,
}

/// Decides, message by message, what the faulty medium does.
#[derive(Debug, Clone)]
pub struct FaultInjector {
    spec: FaultSpec,
    state: u64,
    counts: FaultCounts,
}

impl FaultInjector {
    pub fn new(spec: FaultSpec) -> Self {
        Self {
            state: spec.seed ^ 0x6661_756c_7473_0001,
            spec,
            counts: FaultCounts::default(),
        }
    }

    pub fn spec(&self) -> &FaultSpec {
        &self.spec
    }

    pub fn counts(&self) -> &FaultCounts {
        &self.counts
    }

    /// The copies of `bytes` the medium delivers: none (lost), one, or two (duplicated), each
    /// possibly corrupted and delayed. A reordered copy is held back long enough for later
    /// traffic to overtake it.
    pub fn plan(&mut self, bytes: &[u8]) -> Vec<Delivery> {
        self.counts.planned += 1;
        if self.chance(self.spec.loss) {
            self.counts.dropped += 1;
            return Vec::new();
        }
        let copies = if self.chance(self.spec.duplicate) {
            self.counts.duplicated += 1;
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                let mut copy = bytes.to_vec();
                if !copy.is_empty() && self.chance(self.spec.corrupt) {
                    self.counts.corrupted += 1;
                    let at = (self.next() % copy.len() as u64) as usize;
                    copy[at] ^= 1 << (self.next() % 8);
                }
                let mut delay = self.spec.latency + self.jitter();
                if self.chance(self.spec.reorder) {
                    self.counts.reordered += 1;
                    delay += self.spec.latency + 2 * self.spec.jitter + Duration::from_millis(20);
                }
                Delivery { delay, bytes: copy }
            })
            .collect()
    }

    /// How long `len` bytes occupy the line at the configured baud rate (8N1: 10 bits a byte).
    pub fn line_time(&self, len: usize) -> Duration {
        self.spec.baud.map_or(Duration::ZERO, |baud| {
            Duration::from_secs_f64(len as f64 * 10.0 / f64::from(baud))
        })
    }

    fn jitter(&mut self) -> Duration {
        let jitter = self.spec.jitter.as_nanos() as u64;
        if jitter == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.next() % (jitter + 1))
    }

    fn chance(&mut self, probability: f64) -> bool {
        let unit = (self.next() >> 11) as f64 / ((1u64 << 53) as f64);
        probability > 0.0 && unit < probability
    }

    /// SplitMix64.
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} messages: {} dropped, {} duplicated, {} reordered, {} corrupted",
            self.planned, self.dropped, self.duplicated, self.reordered, self.corrupted
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn injector(spec: &str) -> FaultInjector {
        FaultInjector::new(spec.parse().unwrap())
    }

    #[test]
    fn the_spec_parses_every_fault() {
        let spec: FaultSpec = "loss=0.3,dup=0.05,reorder=0.1,corrupt=0.01,latency=5ms,jitter=1ms,\
                               baud=115200,reboot_after=20s,reboot_after_continues=4,\
                               bugcheck_after_continues=2,stall_after=1m,seed=7"
            .parse()
            .unwrap();
        assert_eq!(spec.reboot_after_continues, Some(4));
        assert_eq!(spec.bugcheck_after_continues, Some(2));
        assert_eq!(spec.loss, 0.3);
        assert_eq!(spec.duplicate, 0.05);
        assert_eq!(spec.reorder, 0.1);
        assert_eq!(spec.corrupt, 0.01);
        assert_eq!(spec.latency, Duration::from_millis(5));
        assert_eq!(spec.jitter, Duration::from_millis(1));
        assert_eq!(spec.baud, Some(115_200));
        assert_eq!(spec.reboot_after, Some(Duration::from_secs(20)));
        assert_eq!(spec.stall_after, Some(Duration::from_secs(60)));
        assert_eq!(spec.seed, 7);
    }

    #[test]
    fn bad_tokens_are_named() {
        for (text, token) in [
            ("loss=1.5", "loss=1.5"),
            ("loss=0.1,latency=5parsecs", "latency=5parsecs"),
            ("drop=0.1", "drop=0.1"),
            ("loss", "loss"),
            ("baud=0", "baud=0"),
        ] {
            let error = text.parse::<FaultSpec>().unwrap_err();
            assert_eq!(error.token, token);
            assert!(error.to_string().contains(token));
        }
    }

    #[test]
    fn no_faults_delivers_everything_once_unchanged_and_at_once() {
        let mut faults = injector("");
        for n in 0..100u8 {
            assert_eq!(
                faults.plan(&[n; 10]),
                vec![Delivery {
                    delay: Duration::ZERO,
                    bytes: vec![n; 10]
                }]
            );
        }
    }

    #[test]
    fn loss_0_3_drops_about_30_percent_with_a_fixed_seed() {
        let mut faults = injector("loss=0.3,seed=1");
        let delivered = (0..10_000)
            .filter(|_| !faults.plan(b"x").is_empty())
            .count();
        let dropped = 10_000 - delivered;
        assert!((2_800..3_200).contains(&dropped), "{dropped} dropped");
        assert_eq!(faults.counts().dropped, dropped as u64);
    }

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let plan = |seed| {
            let mut faults = injector(&format!(
                "loss=0.2,dup=0.2,corrupt=0.2,jitter=3ms,seed={seed}"
            ));
            (0..200)
                .map(|_| faults.plan(b"datagram"))
                .collect::<Vec<_>>()
        };
        assert_eq!(plan(9), plan(9));
        assert_ne!(plan(9), plan(10));
    }

    #[test]
    fn duplication_corruption_and_reordering_happen_at_their_rates() {
        let mut faults = injector("dup=0.1,corrupt=0.05,reorder=0.2,latency=5ms,seed=3");
        let mut copies = 0;
        let mut changed = 0;
        let mut held_back = 0;
        for _ in 0..10_000 {
            for delivery in faults.plan(&[0u8; 32]) {
                copies += 1;
                changed += usize::from(delivery.bytes != [0u8; 32]);
                held_back += usize::from(delivery.delay > Duration::from_millis(5));
            }
        }
        assert!((10_800..11_200).contains(&copies), "{copies} copies");
        assert!((400..700).contains(&changed), "{changed} corrupted");
        assert!((2_000..2_450).contains(&held_back), "{held_back} reordered");
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let mut faults = injector("latency=5ms,jitter=2ms,seed=4");
        for _ in 0..1000 {
            let delay = faults.plan(b"x")[0].delay;
            assert!(delay >= Duration::from_millis(5) && delay <= Duration::from_millis(7));
        }
    }

    #[test]
    fn the_line_rate_sets_the_time_on_the_wire() {
        let faults = injector("baud=115200");
        assert_eq!(faults.line_time(11_520), Duration::from_secs(1));
        assert_eq!(injector("").line_time(11_520), Duration::ZERO);
    }
}
