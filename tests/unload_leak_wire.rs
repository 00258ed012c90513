//! Issue 20 over the wire: win10-unload-leak (bug check 0xC4/0x62) pulled over KDNET and over a
//! pipe (KDCOM on a Unix socket) gives the same report, naming the stop; an unloaded-driver
//! list that cannot be right (an index past the 50-record array, a record whose range no driver
//! has, a name of 64 KiB) ends the pull in bounded time with the allocations still found and
//! the report incomplete saying why — never a hang; nor do bug check parameters that point at
//! nothing.

use std::time::{Duration, Instant};

use kdleak::sim::machine::Machine;
use kdleak::sim::wire::faults::FaultSpec;
use kdleak::sim::world::scenario::{DriverState, MemoryImage, Scenario};
use kdleak::verifier::LeakReport;

mod reliability_support;
use reliability_support::*;

fn image(unloaded: bool) -> MemoryImage {
    let mut scenario = Scenario::builtin("win10-unload-leak").unwrap();
    if unloaded {
        scenario.drivers[1].state = DriverState::Unloaded;
    }
    scenario.build().unwrap()
}

fn machine_of(image: MemoryImage) -> Machine {
    Machine::builder().image(image).build()
}

fn leaky(report: &LeakReport) -> usize {
    report
        .drivers
        .iter()
        .filter(|d| d.name == "leaky.sys")
        .map(|d| d.allocations.len())
        .sum()
}

/// The KDBG's address for a variable the fixture kernel lacks (kd.md §4.2 offsets).
fn kdbg_variable(image: &MemoryImage, offset: u64) -> u64 {
    let kdbg = image.read_u64(image.debugger_data_list).unwrap();
    image.read_u64(kdbg + offset).unwrap()
}

/// One way to corrupt the image.
type Damage = Box<dyn Fn(&mut MemoryImage)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdnet_and_a_pipe_give_the_same_bugcheck_report() {
    let (kdnet, sim) = pull_over_kdnet(machine_of(image(false)), FaultSpec::default()).await;
    sim.shutdown().await;
    let kdnet = kdnet.expect("pull over KDNET");
    let (pipe, sim) = pull_over_stream(machine_of(image(false)), FaultSpec::default(), None).await;
    sim.shutdown().await;
    let pipe = pipe.expect("pull over a pipe");
    for report in [&kdnet, &pipe] {
        let stop = report.bugcheck.as_ref().expect("the stop is named");
        assert_eq!((stop.code, stop.parameters[0].as_str()), (0xC4, "0x62"));
        assert_eq!(stop.driver.as_deref(), Some("leaky.sys"));
        assert_eq!((stop.not_freed, stop.found), (Some(3), Some(3)));
        assert_eq!(leaky(report), 3);
        assert!(report.complete, "{:?}", report.incomplete_reasons);
    }
    assert_eq!(comparable(&kdnet), comparable(&pipe));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_unloaded_driver_list_is_an_error_not_a_hang() {
    let base = image(true);
    let array_at = kdbg_variable(&base, 0x220);
    let last_at = kdbg_variable(&base, 0x228);
    let array = base.read_u64(array_at).unwrap();
    let cases: Vec<(&str, Damage)> = vec![
        (
            "past the array",
            Box::new(move |i| poke(i, last_at, &0xFFFF_FFFFu32.to_le_bytes())),
        ),
        (
            "range",
            Box::new(move |i| poke(i, array + 0x18, &0x10u64.to_le_bytes())),
        ),
        (
            "name",
            Box::new(move |i| poke(i, array, &0xFFFEu16.to_le_bytes())),
        ),
        (
            "kernel memory",
            Box::new(move |i| poke(i, array_at, &0x1000u64.to_le_bytes())),
        ),
    ];
    for (what, damage) in cases {
        let mut image = base.clone();
        damage(&mut image);
        let started = Instant::now();
        let (report, sim) = pull_over_stream(machine_of(image), FaultSpec::default(), None).await;
        sim.shutdown().await;
        let report = report.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(started.elapsed() < Duration::from_secs(60), "{what}");
        assert!(!report.complete, "{what}");
        assert!(
            report
                .incomplete_reasons
                .iter()
                .any(|r| r.contains("unloaded-driver list") && r.contains("MmUnloadedDrivers")),
            "{what}: {:?}",
            report.incomplete_reasons
        );
        // The allocations come from parameter 3, not from the list.
        assert_eq!(leaky(&report), 3, "{what}");
        assert!(report.unloaded_modules.is_empty(), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bug_check_parameters_that_point_at_nothing_make_an_incomplete_report() {
    let base = image(false);
    let data = kdbg_variable(&base, 0x88);
    for (parameter, value, said) in [
        (2u64, 0x1000u64, "parameter 2"),
        (3, 0xffff_c00a_7000_0000, "parameter 3"),
        (3, base.kern_base, "parameter 3"),
    ] {
        let mut image = base.clone();
        poke(&mut image, data + 8 * parameter, &value.to_le_bytes());
        let (report, sim) = pull_over_stream(machine_of(image), FaultSpec::default(), None).await;
        sim.shutdown().await;
        let report = report.unwrap_or_else(|e| panic!("{said} = {value:#x}: {e}"));
        let stop = report.bugcheck.as_ref().expect("the stop is named");
        if parameter == 2 {
            // Named from parameter 3's suspect entry instead; its allocations are all found.
            assert_eq!(stop.driver.as_deref(), Some("leaky.sys"));
            assert_eq!(leaky(&report), 3);
        }
        assert!(!report.complete, "{said} = {value:#x}");
        assert!(
            report.incomplete_reasons.iter().any(|r| r.contains(said)),
            "{said} = {value:#x}: {:?}",
            report.incomplete_reasons
        );
    }
}
