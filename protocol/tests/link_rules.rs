//! One test per link rule (kd.md §1.4, §2; kdnet.md §4.3), driving links in memory with explicit
//! time: no sockets, no sleeps.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kdproto::kd::{Framing, Packet, PacketType, INITIAL_PACKET_ID, SYNC_PACKET_ID};
use kdproto::link::{Dialect, Link, LinkConfig, LinkEvent, Transmit};
use kdproto::Error;

fn host(dialect: Dialect, framing: Framing) -> Link {
    Link::new(LinkConfig::host(dialect, framing))
}

fn target(dialect: Dialect, framing: Framing) -> Link {
    Link::new(LinkConfig::target(dialect, framing))
}

fn transmits(link: &mut Link) -> Vec<Transmit> {
    std::iter::from_fn(|| link.poll_transmit()).collect()
}

fn events(link: &mut Link) -> Vec<LinkEvent> {
    std::iter::from_fn(|| link.poll_event()).collect()
}

fn packets(link: &mut Link) -> Vec<Packet> {
    transmits(link)
        .into_iter()
        .map(|t| match t {
            Transmit::Packet(p) => p,
            Transmit::BreakIn => panic!("unexpected break-in"),
        })
        .collect()
}

fn received(events: &[LinkEvent]) -> Vec<Packet> {
    events
        .iter()
        .filter_map(|e| match e {
            LinkEvent::Received(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

/// Moves everything `from` wants to send into `to`, with the framing both use.
fn pump(from: &mut Link, to: &mut Link, now: Instant) {
    let framing = from.config().framing;
    for transmit in transmits(from) {
        let bytes = transmit.to_bytes(framing).unwrap();
        match (framing, &transmit) {
            (Framing::Datagram, Transmit::BreakIn) => to.receive_break_in(),
            _ => to.receive(&bytes, now),
        }
    }
}

fn payload(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

#[test]
fn a_data_packet_is_acked_and_delivered_once() {
    let now = Instant::now();
    let (mut h, mut t) = (
        host(Dialect::Kdcom, Framing::Serial),
        target(Dialect::Kdcom, Framing::Serial),
    );
    h.send(PacketType::StateManipulate, payload("request"), now)
        .unwrap();
    pump(&mut h, &mut t, now);
    let got = received(&events(&mut t));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, payload("request"));
    pump(&mut t, &mut h, now);
    assert!(events(&mut h).contains(&LinkEvent::Acknowledged {
        id: INITIAL_PACKET_ID,
        packet_type: PacketType::StateManipulate
    }));
    assert!(h.is_idle());
    assert_eq!(h.poll_timeout(), None);
}

#[test]
fn a_duplicate_data_packet_is_acked_again_and_not_delivered_twice() {
    let now = Instant::now();
    let mut t = target(Dialect::Kdcom, Framing::Serial);
    let packet = Packet::data(PacketType::StateManipulate, INITIAL_PACKET_ID, payload("x"));
    let bytes = packet.to_bytes(Framing::Serial).unwrap();
    t.receive(&bytes, now);
    t.receive(&bytes, now);
    let acks = packets(&mut t);
    assert_eq!(acks.len(), 2, "both copies are acknowledged");
    assert!(acks
        .iter()
        .all(|a| a.packet_type == PacketType::Acknowledge));
    assert_eq!(received(&events(&mut t)).len(), 1);
    assert_eq!(t.stats().duplicates, 1);
}

#[test]
fn an_unacked_packet_is_retransmitted_after_the_timeout_with_the_same_id() {
    let start = Instant::now();
    let mut h = host(Dialect::Kdnet, Framing::Datagram);
    h.send(PacketType::StateManipulate, payload("r"), start)
        .unwrap();
    let first = packets(&mut h);
    let deadline = h.poll_timeout().expect("a deadline while unacknowledged");
    assert_eq!(deadline, start + Duration::from_millis(500));
    h.handle_timeout(deadline - Duration::from_millis(1));
    assert!(transmits(&mut h).is_empty(), "not before the deadline");
    h.handle_timeout(deadline);
    let again = packets(&mut h);
    assert_eq!(again, first);
    assert_eq!(h.stats().retransmits, 1);
}

#[test]
fn retransmits_stop_after_max_attempts_with_send_failed() {
    let mut now = Instant::now();
    let mut config = LinkConfig::host(Dialect::Kdcom, Framing::Serial);
    config.max_attempts = Some(3);
    let mut h = Link::new(config);
    h.send(PacketType::StateManipulate, payload("a"), now)
        .unwrap();
    h.send(PacketType::StateManipulate, payload("b"), now)
        .unwrap();
    for _ in 0..3 {
        now = h.poll_timeout().unwrap();
        h.handle_timeout(now);
    }
    let sent = packets(&mut h);
    // Three copies of "a", then "b" starts.
    assert_eq!(sent.iter().filter(|p| p.payload == payload("a")).count(), 3);
    assert_eq!(sent.last().unwrap().payload, payload("b"));
    assert!(matches!(
        events(&mut h).as_slice(),
        [LinkEvent::SendFailed { attempts: 3, .. }]
    ));
}

#[test]
fn a_resend_retransmits_the_pending_packet_immediately() {
    let now = Instant::now();
    let mut h = host(Dialect::Kdcom, Framing::Serial);
    h.send(PacketType::StateManipulate, payload("r"), now)
        .unwrap();
    let first = packets(&mut h);
    let resend = Packet::control(PacketType::Resend, 0);
    h.receive(&resend.to_bytes(Framing::Serial).unwrap(), now);
    assert_eq!(packets(&mut h), first);
}

#[test]
fn a_resend_with_nothing_in_flight_is_reported_to_the_layer_above() {
    let now = Instant::now();
    let mut t = target(Dialect::Kdnet, Framing::Datagram);
    let resend = Packet::control(PacketType::Resend, 0);
    t.receive(&resend.to_bytes(Framing::Datagram).unwrap(), now);
    assert_eq!(events(&mut t), vec![LinkEvent::ResendRequested]);
}

#[test]
fn kdcom_target_ids_start_with_sync_then_toggle_without_it() {
    let now = Instant::now();
    let (mut h, mut t) = (
        host(Dialect::Kdcom, Framing::Serial),
        target(Dialect::Kdcom, Framing::Serial),
    );
    let mut ids = Vec::new();
    for n in 0..3 {
        t.send(PacketType::DebugIo, payload(&format!("print {n}")), now)
            .unwrap();
        let sent = packets(&mut t);
        ids.push(sent[0].id);
        for p in &sent {
            h.receive(&p.to_bytes(Framing::Serial).unwrap(), now);
        }
        let acks = packets(&mut h);
        // The host ACKs with SYNC masked (kd.md §1.4 rule 2).
        assert_eq!(acks[0].id, sent[0].id & !SYNC_PACKET_ID);
        for a in &acks {
            t.receive(&a.to_bytes(Framing::Serial).unwrap(), now);
        }
    }
    assert_eq!(ids, vec![0x8080_0800, 0x8080_0001, 0x8080_0000]);
    assert_eq!(received(&events(&mut h)).len(), 3);
}

#[test]
fn kdnet_ids_count_by_two_and_acks_echo_the_exact_id() {
    let now = Instant::now();
    let (mut h, mut t) = (
        host(Dialect::Kdnet, Framing::Datagram),
        target(Dialect::Kdnet, Framing::Datagram),
    );
    let mut host_ids = Vec::new();
    for _ in 0..3 {
        h.send(PacketType::StateManipulate, payload("q"), now)
            .unwrap();
        let sent = packets(&mut h);
        host_ids.push(sent[0].id);
        for p in &sent {
            t.receive(&p.to_bytes(Framing::Datagram).unwrap(), now);
        }
        let acks = packets(&mut t);
        assert_eq!(acks[0].id, sent[0].id);
        for a in &acks {
            h.receive(&a.to_bytes(Framing::Datagram).unwrap(), now);
        }
    }
    assert_eq!(host_ids, vec![0x8000_0000, 0x8000_0002, 0x8000_0004]);
    assert_eq!(t.next_packet_id(), 0);
    t.send(PacketType::StateChange64, payload("s"), now)
        .unwrap();
    assert_eq!(packets(&mut t)[0].id, 0);
}

#[test]
fn a_kdcom_reset_resynchronises_both_sides_and_the_pending_packet_is_resent_with_initial_id() {
    let now = Instant::now();
    let (mut h, mut t) = (
        host(Dialect::Kdcom, Framing::Serial),
        target(Dialect::Kdcom, Framing::Serial),
    );
    // The target's state change is lost; the host resets.
    t.send(PacketType::StateChange64, payload("stop"), now)
        .unwrap();
    assert_eq!(packets(&mut t)[0].id, 0x8080_0800);
    h.send_reset(now);
    pump(&mut h, &mut t, now);
    let answer = packets(&mut t);
    assert_eq!(answer[0].packet_type, PacketType::Reset);
    assert_eq!(answer[1].packet_type, PacketType::StateChange64);
    assert_eq!(
        answer[1].id, INITIAL_PACKET_ID,
        "re-sent with INITIAL after RESET"
    );
    for p in &answer {
        h.receive(&p.to_bytes(Framing::Serial).unwrap(), now);
    }
    // The host does not answer the reply RESET (no ping-pong), ACKs the state change.
    let acks = packets(&mut h);
    assert_eq!(
        acks,
        vec![Packet::control(PacketType::Acknowledge, INITIAL_PACKET_ID)]
    );
    assert_eq!(received(&events(&mut h)).len(), 1);
    // The host's first packet after RESET is INITIAL (kd.md §1.4).
    h.send(PacketType::StateManipulate, payload("getversion"), now)
        .unwrap();
    assert_eq!(packets(&mut h)[0].id, INITIAL_PACKET_ID);
}

#[test]
fn a_kdnet_target_answers_reset_with_its_current_id_and_resends_with_the_same_id() {
    // LIB capture: reset id 0x80000000 → reset_ack id 0x926 → wait_state2 id 0x926 (kdnet.md §4.3).
    let now = Instant::now();
    let mut t = target(Dialect::Kdnet, Framing::Datagram);
    let mut h = host(Dialect::Kdnet, Framing::Datagram);
    // Advance the target's counter as a long-running target's would be.
    for n in 0..3 {
        t.send(PacketType::DebugIo, payload(&format!("x{n}")), now)
            .unwrap();
        pump(&mut t, &mut h, now);
        pump(&mut h, &mut t, now);
    }
    events(&mut h);
    t.send(PacketType::StateChange64, payload("stop"), now)
        .unwrap();
    let stop_id = packets(&mut t)[0].id;
    assert_eq!(stop_id, 6);
    h.send_reset(now);
    let reset = packets(&mut h);
    assert_eq!(reset[0].id, 0x8000_0000, "host RESET carries its next id");
    t.receive(&reset[0].to_bytes(Framing::Datagram).unwrap(), now);
    let answer = packets(&mut t);
    assert_eq!(answer[0], Packet::control(PacketType::Reset, stop_id));
    assert_eq!(answer[1].id, stop_id);
    assert_eq!(answer[1].packet_type, PacketType::StateChange64);
}

#[test]
fn a_damaged_serial_packet_gets_a_resend_and_the_sender_retransmits() {
    let now = Instant::now();
    let (mut h, mut t) = (
        host(Dialect::Kdcom, Framing::Serial),
        target(Dialect::Kdcom, Framing::Serial),
    );
    h.send(PacketType::StateManipulate, payload("read"), now)
        .unwrap();
    let mut bytes = transmits(&mut h)[0]
        .to_bytes(Framing::Serial)
        .unwrap()
        .to_vec();
    bytes[17] ^= 0x40;
    t.receive(&bytes, now);
    assert!(matches!(
        events(&mut t).as_slice(),
        [LinkEvent::Rejected(Error::BadChecksum { .. })]
    ));
    pump(&mut t, &mut h, now); // RESEND
    pump(&mut h, &mut t, now); // retransmission
    assert_eq!(received(&events(&mut t))[0].payload, payload("read"));
}

#[test]
fn a_damaged_kdnet_packet_gets_a_resend() {
    let now = Instant::now();
    let mut t = target(Dialect::Kdnet, Framing::Datagram);
    let mut bytes = Packet::data(PacketType::StateManipulate, 0x8000_0000, payload("abc"))
        .to_bytes(Framing::Datagram)
        .unwrap()
        .to_vec();
    bytes[12] ^= 1;
    t.receive(&bytes, now);
    assert_eq!(
        packets(&mut t),
        vec![Packet::control(PacketType::Resend, 0)]
    );
}

#[test]
fn a_strict_kdcom_target_acks_but_rejects_an_out_of_order_id() {
    let now = Instant::now();
    let mut t = target(Dialect::Kdcom, Framing::Serial);
    let wrong = Packet::data(
        PacketType::StateManipulate,
        INITIAL_PACKET_ID | 1,
        payload("x"),
    );
    t.receive(&wrong.to_bytes(Framing::Serial).unwrap(), now);
    assert_eq!(packets(&mut t)[0].packet_type, PacketType::Acknowledge);
    assert!(received(&events(&mut t)).is_empty());
    assert_eq!(t.stats().out_of_order, 1);
}

#[test]
fn a_tolerant_host_accepts_kdnet_style_ids_from_a_target() {
    let now = Instant::now();
    let mut h = host(Dialect::Kdcom, Framing::Datagram);
    for id in [0x926, 0x928, 0x92a] {
        let p = Packet::data(PacketType::DebugIo, id, payload(&format!("{id}")));
        h.receive(&p.to_bytes(Framing::Datagram).unwrap(), now);
    }
    assert_eq!(received(&events(&mut h)).len(), 3);
}

#[test]
fn a_kdnet_target_tolerates_a_host_using_the_kdcom_toggle() {
    // RZ numbers its KDNET packets with the KDCOM toggle and works against Windows (kdnet.md §4.3).
    let now = Instant::now();
    let mut t = target(Dialect::Kdnet, Framing::Datagram);
    for id in [
        INITIAL_PACKET_ID | 1,
        INITIAL_PACKET_ID,
        INITIAL_PACKET_ID | 1,
    ] {
        let p = Packet::data(PacketType::StateManipulate, id, payload("same request"));
        t.receive(&p.to_bytes(Framing::Datagram).unwrap(), now);
    }
    assert_eq!(received(&events(&mut t)).len(), 3);
}

#[test]
fn a_late_kdnet_copy_of_an_older_packet_is_a_duplicate() {
    let now = Instant::now();
    let mut t = target(Dialect::Kdnet, Framing::Datagram);
    for (id, text) in [(0x8000_0000, "a"), (0x8000_0002, "b"), (0x8000_0000, "a")] {
        let p = Packet::data(PacketType::StateManipulate, id, payload(text));
        t.receive(&p.to_bytes(Framing::Datagram).unwrap(), now);
    }
    assert_eq!(received(&events(&mut t)).len(), 2);
    assert_eq!(t.stats().duplicates, 1);
}

#[test]
fn a_kdcom_target_accepts_the_same_request_bytes_again_when_ids_toggle() {
    // Polling the same address twice gives identical payloads; toggled ids keep them distinct.
    let now = Instant::now();
    let mut t = target(Dialect::Kdcom, Framing::Serial);
    for id in [INITIAL_PACKET_ID, INITIAL_PACKET_ID | 1, INITIAL_PACKET_ID] {
        let p = Packet::data(PacketType::StateManipulate, id, payload("same"));
        t.receive(&p.to_bytes(Framing::Serial).unwrap(), now);
    }
    assert_eq!(received(&events(&mut t)).len(), 3);
}

#[test]
fn a_sync_packet_from_a_rebooted_target_is_delivered_and_the_host_restarts_its_ids() {
    let now = Instant::now();
    let (mut h, mut t) = (
        host(Dialect::Kdcom, Framing::Serial),
        target(Dialect::Kdcom, Framing::Serial),
    );
    t.send(PacketType::StateChange64, payload("first boot"), now)
        .unwrap();
    pump(&mut t, &mut h, now);
    pump(&mut h, &mut t, now);
    h.send(PacketType::StateManipulate, payload("q"), now)
        .unwrap();
    pump(&mut h, &mut t, now);
    pump(&mut t, &mut h, now);
    assert_eq!(h.next_packet_id(), INITIAL_PACKET_ID | 1);
    events(&mut h);
    // Reboot: a new target starts again at INITIAL|SYNC with new content.
    let mut rebooted = target(Dialect::Kdcom, Framing::Serial);
    rebooted
        .send(PacketType::StateChange64, payload("second boot"), now)
        .unwrap();
    pump(&mut rebooted, &mut h, now);
    let seen = events(&mut h);
    assert!(seen.contains(&LinkEvent::PeerRestarted));
    assert_eq!(received(&seen)[0].payload, payload("second boot"));
    assert_eq!(h.next_packet_id(), INITIAL_PACKET_ID);
}

#[test]
fn a_break_in_byte_reaches_the_target_but_not_the_host() {
    let now = Instant::now();
    let (mut h, mut t) = (
        host(Dialect::Kdcom, Framing::Serial),
        target(Dialect::Kdcom, Framing::Serial),
    );
    h.send_break_in();
    assert_eq!(
        transmits(&mut h)[0].to_bytes(Framing::Serial).unwrap(),
        Bytes::from_static(b"b")
    );
    t.receive(b"b", now);
    assert_eq!(events(&mut t), vec![LinkEvent::BreakIn]);
    h.receive(b"b", now);
    assert!(events(&mut h).is_empty());
}

#[test]
fn control_packet_types_cannot_be_sent_as_data() {
    let mut h = host(Dialect::Kdcom, Framing::Serial);
    assert!(h
        .send(PacketType::Acknowledge, Bytes::new(), Instant::now())
        .is_err());
    assert!(h
        .send(PacketType::DebugIo, vec![0; 4001].into(), Instant::now())
        .is_err());
}

#[test]
fn kdnet_ids_past_bit_11_are_new_packets_not_sync_or_duplicates() {
    // WinDbg's counter reaches 0x80000800 after 1024 packets; bit 11 is SYNC only on KDCOM.
    // (Found by a pull of Windows 11's 27 MB log: the target took packet 1025 for a repeat.)
    let now = Instant::now();
    let mut t = target(Dialect::Kdnet, Framing::Datagram);
    for n in 0..3000u32 {
        let id = 0x8000_0000 + 2 * n;
        let p = Packet::data(PacketType::StateManipulate, id, payload("read"));
        t.receive(&p.to_bytes(Framing::Datagram).unwrap(), now);
    }
    assert_eq!(received(&events(&mut t)).len(), 3000);
    assert_eq!(t.stats().duplicates, 0);
}
