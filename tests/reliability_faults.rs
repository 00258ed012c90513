//! The fault matrix (issue 9): the leak pull against the simulated target behind seeded faults —
//! KDNET with 10 % and 30 % loss, 5 % duplication, reordering and bit corruption; a Unix-socket
//! stream with a 1e-4 byte error rate and garbage between packets; a reboot and a stall in the
//! middle of the pull. Every run must give the fault-free report (JSON minus `target.time` and
//! `target.connection`) or an explicit failure/partial result — never a different table.
//!
//! `KDLEAK_FAULT_RUNS` seeds per fault type (default 5; `scripts/fault_matrix.sh` runs 50 and
//! prints the counts); `KDLEAK_FAULT_SEED` replays from a given seed.

use std::time::{Duration, Instant};

use kdleak::sim::wire::faults::FaultSpec;

mod reliability_support;
use reliability_support::*;

#[derive(Default, Debug)]
struct Counts {
    identical: u64,
    failed: u64,
    partial: u64,
    wrong: Vec<String>,
}

/// Seeds run at once (the runs mostly wait on timers): `KDLEAK_FAULT_PARALLEL`, default 5.
fn parallel() -> usize {
    std::env::var("KDLEAK_FAULT_PARALLEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// One faulty run.
#[derive(Debug, Clone)]
enum Job {
    /// KDNET with these `--faults` (the seed is appended).
    Kdnet(String),
    /// A Unix-socket stream through a damaging proxy.
    Stream(StreamDamage),
}

async fn run(job: Job, seed: u64) -> Outcome {
    let baseline = baseline().await;
    match job {
        Job::Kdnet(spec) => {
            let faults: FaultSpec = format!("{spec},seed={seed}").parse().unwrap();
            let (result, mut sim) = pull_over_kdnet(machine(image()), faults).await;
            let outcome = classify(&result, &baseline);
            if outcome == Outcome::Identical {
                assert!(
                    sim.running_within(Duration::from_secs(10)).await,
                    "seed {seed}: the target was not resumed: {}",
                    sim.stats()
                );
            }
            sim.shutdown().await;
            outcome
        }
        Job::Stream(damage) => {
            let (result, sim) =
                pull_over_stream(machine(image()), FaultSpec::default(), Some(damage)).await;
            sim.shutdown().await;
            classify(&result, &baseline)
        }
    }
}

/// Runs `runs()` seeds of one fault type and fails on any different table.
async fn matrix(name: &'static str, job: impl Fn(u64) -> Job) {
    baseline().await;
    let started = Instant::now();
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(parallel()));
    let mut set = tokio::task::JoinSet::new();
    for seed in first_seed()..first_seed() + runs() {
        let job = job(seed);
        let limit = limit.clone();
        set.spawn(async move {
            let _permit = limit.acquire_owned().await.unwrap();
            let one = Instant::now();
            let outcome = tokio::time::timeout(Duration::from_secs(120), run(job.clone(), seed))
                .await
                .unwrap_or_else(|_| panic!("{name} seed {seed} ({job:?}): no end in 120 s"));
            eprintln!("{name} seed {seed}: {outcome:?} in {:.1?}", one.elapsed());
            (seed, outcome)
        });
    }
    let mut counts = Counts::default();
    while let Some(joined) = set.join_next().await {
        let (seed, outcome) = joined.unwrap();
        match outcome {
            Outcome::Identical => counts.identical += 1,
            Outcome::Failed(code, _) => {
                assert!(code != 0, "{name} seed {seed}: an error with exit code 0");
                counts.failed += 1
            }
            Outcome::Partial(_) => counts.partial += 1,
            Outcome::Wrong(diff) => counts.wrong.push(format!("seed {seed}: {diff}")),
        }
    }
    // One line per fault type; scripts/fault_matrix.sh collects these.
    println!(
        "FAULT-MATRIX {name}: runs {} identical {} failed-cleanly {} partial {} WRONG {} ({:.1?})",
        runs(),
        counts.identical,
        counts.failed,
        counts.partial,
        counts.wrong.len(),
        started.elapsed()
    );
    assert!(
        counts.wrong.is_empty(),
        "{name}: different tables: {:?}",
        counts.wrong
    );
}

fn kdnet(spec: &str) -> impl Fn(u64) -> Job + '_ {
    move |_| Job::Kdnet(spec.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdnet_loss_10_percent() {
    matrix("kdnet-loss-10%", kdnet("loss=0.1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdnet_loss_30_percent() {
    matrix("kdnet-loss-30%", kdnet("loss=0.3")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdnet_duplication_5_percent() {
    matrix("kdnet-dup-5%", kdnet("dup=0.05")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdnet_reordering() {
    matrix(
        "kdnet-reorder-10%",
        kdnet("reorder=0.1,latency=1ms,jitter=2ms"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdnet_bit_corruption() {
    matrix("kdnet-corrupt-5%", kdnet("corrupt=0.05")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_byte_errors_and_garbage() {
    matrix("stream-1e-4-garbage", |seed| {
        Job::Stream(StreamDamage {
            byte_error_rate: 1e-4,
            garbage: 0.05,
            seed,
        })
    })
    .await;
}

/// A point inside the pull for `seed`, between 5 % and 95 % of a fault-free pull's duration.
fn mid_pull(seed: u64, span: Duration) -> Duration {
    let x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33;
    span.mul_f64(0.05 + 0.9 * (x as f64 / (1u64 << 31) as f64))
}

/// How long a fault-free pull takes here (the sim starts first), measured once.
async fn pull_span() -> Duration {
    static SPAN: tokio::sync::OnceCell<Duration> = tokio::sync::OnceCell::const_new();
    *SPAN
        .get_or_init(|| async {
            baseline().await;
            let started = Instant::now();
            let (result, sim) = pull_over_kdnet(machine(image()), FaultSpec::default()).await;
            result.unwrap();
            sim.shutdown().await;
            started.elapsed()
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_mid_pull() {
    let span = pull_span().await;
    matrix("kdnet-reboot-mid-pull", |seed| {
        Job::Kdnet(format!(
            "reboot_after={}us",
            mid_pull(seed, span).as_micros()
        ))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_mid_pull() {
    let span = pull_span().await;
    matrix("kdnet-stall-mid-pull", |seed| {
        Job::Kdnet(format!(
            "stall_after={}us",
            mid_pull(seed, span).as_micros()
        ))
    })
    .await;
}
