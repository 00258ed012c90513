//! Two links over a simulated lossy medium: every packet arrives exactly once and in order,
//! whatever the medium drops, duplicates, corrupts or (for datagrams) reorders.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kdproto::kd::{Framing, PacketType};
use kdproto::link::{Dialect, Link, LinkConfig, LinkEvent, Transmit};
use proptest::prelude::*;

/// A tiny deterministic generator, so each proptest case is one reproducible seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

struct Faults {
    loss: u64,
    duplicate: u64,
    corrupt: u64,
    max_jitter_ms: u64,
}

/// One direction of the medium: bytes in flight keyed by arrival time (ties keep send order).
#[derive(Default)]
struct Wire {
    in_flight: BTreeMap<(Instant, u64), (Bytes, bool)>,
    sent: u64,
}

impl Wire {
    fn carry(
        &mut self,
        transmit: Transmit,
        framing: Framing,
        now: Instant,
        rng: &mut Rng,
        f: &Faults,
    ) {
        let is_break_in = transmit == Transmit::BreakIn;
        let bytes = transmit.to_bytes(framing).unwrap();
        if rng.chance(f.loss) {
            return;
        }
        let copies = if rng.chance(f.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let mut bytes = bytes.to_vec();
            // Only payload and trailer damage is detectable: KD's checksum does not cover the
            // header (kd.md §1.3), so a flipped id bit is invisible to any KD implementation.
            if bytes.len() > 16 && rng.chance(f.corrupt) {
                let at = 16 + (rng.next() as usize) % (bytes.len() - 16);
                bytes[at] ^= 1 << (rng.next() % 8);
            }
            // Streams keep their order; datagrams may overtake each other.
            let jitter = match framing {
                Framing::Serial => 0,
                Framing::Datagram => rng.next() % (f.max_jitter_ms + 1),
            };
            let at = now + Duration::from_millis(1 + jitter);
            self.sent += 1;
            self.in_flight
                .insert((at, self.sent), (Bytes::from(bytes), is_break_in));
        }
    }

    fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.keys().next().map(|(at, _)| *at)
    }

    fn deliver_due(&mut self, now: Instant, to: &mut Link) {
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (bytes, is_break_in) = entry.remove();
            if is_break_in && to.config().framing == Framing::Datagram {
                to.receive_break_in();
            } else {
                to.receive(&bytes, now);
            }
        }
    }
}

fn exchange(dialect: Dialect, framing: Framing, faults: Faults, seed: u64, requests: usize) {
    let mut rng = Rng(seed | 1);
    let mut host_config = LinkConfig::host(dialect, framing);
    host_config.max_attempts = None;
    let mut host = Link::new(host_config);
    let mut target = Link::new(LinkConfig::target(dialect, framing));
    let (mut to_target, mut to_host) = (Wire::default(), Wire::default());
    let mut now = Instant::now();
    let deadline = now + Duration::from_secs(3600);

    for n in 0..requests {
        let request = Bytes::from(format!("request {n}"));
        host.send(PacketType::StateManipulate, request, now)
            .unwrap();
    }
    let (mut at_target, mut at_host) = (Vec::new(), Vec::new());
    while at_host.len() < requests {
        assert!(
            now < deadline,
            "no progress: target has {} host has {}",
            at_target.len(),
            at_host.len()
        );
        while let Some(t) = host.poll_transmit() {
            to_target.carry(t, framing, now, &mut rng, &faults);
        }
        while let Some(t) = target.poll_transmit() {
            to_host.carry(t, framing, now, &mut rng, &faults);
        }
        while let Some(event) = target.poll_event() {
            if let LinkEvent::Received(packet) = event {
                let text = String::from_utf8(packet.payload.to_vec()).unwrap();
                at_target.push(text.clone());
                let reply = text.replace("request", "reply");
                target
                    .send(PacketType::StateManipulate, reply.into(), now)
                    .unwrap();
            }
        }
        while let Some(event) = host.poll_event() {
            if let LinkEvent::Received(packet) = event {
                at_host.push(String::from_utf8(packet.payload.to_vec()).unwrap());
            }
        }
        let next = [
            to_target.next_arrival(),
            to_host.next_arrival(),
            host.poll_timeout(),
            target.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("something is always pending until the exchange completes");
        now = now.max(next);
        to_target.deliver_due(now, &mut target);
        to_host.deliver_due(now, &mut host);
        host.handle_timeout(now);
        target.handle_timeout(now);
    }
    let expected: Vec<String> = (0..requests).map(|n| format!("request {n}")).collect();
    assert_eq!(at_target, expected, "requests exactly once, in order");
    let replies: Vec<String> = (0..requests).map(|n| format!("reply {n}")).collect();
    assert_eq!(at_host, replies, "replies exactly once, in order");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn kdnet_delivers_exactly_once_in_order_despite_loss_duplication_and_reordering(seed: u64) {
        // KDNET's HMAC turns corruption into loss before the KD layer sees it.
        let faults = Faults { loss: 25, duplicate: 10, corrupt: 0, max_jitter_ms: 700 };
        exchange(Dialect::Kdnet, Framing::Datagram, faults, seed, 30);
    }

    #[test]
    fn kdcom_delivers_exactly_once_in_order_despite_loss_duplication_and_corruption(seed: u64) {
        let faults = Faults { loss: 20, duplicate: 10, corrupt: 10, max_jitter_ms: 0 };
        exchange(Dialect::Kdcom, Framing::Serial, faults, seed, 30);
    }
}
