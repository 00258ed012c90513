//! The link state machine fed arbitrary bytes in both roles and framings: no panic, and every
//! transmit it asks for encodes.
#![no_main]

use std::time::{Duration, Instant};

use kdproto::kd::{Framing, PacketType};
use kdproto::link::{Dialect, Link, LinkConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let dialect = if selector & 1 == 0 {
        Dialect::Kdcom
    } else {
        Dialect::Kdnet
    };
    let framing = if selector & 2 == 0 {
        Framing::Serial
    } else {
        Framing::Datagram
    };
    let config = if selector & 4 == 0 {
        LinkConfig::host(dialect, framing)
    } else {
        LinkConfig::target(dialect, framing)
    };
    let mut link = Link::new(config);
    let mut now = Instant::now();
    link.send(
        PacketType::StateManipulate,
        rest.iter().take(64).copied().collect::<Vec<u8>>().into(),
        now,
    )
    .unwrap();
    for chunk in rest.chunks(usize::from(selector >> 3) + 1) {
        link.receive(chunk, now);
        now += Duration::from_millis(300);
        link.handle_timeout(now);
        while let Some(transmit) = link.poll_transmit() {
            transmit.to_bytes(framing).unwrap();
        }
        while link.poll_event().is_some() {}
    }
});
