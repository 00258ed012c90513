//! Properties of the packet layer: encoding round-trips, and the stream deframer's events do not
//! depend on how the byte stream was split into reads.

use bytes::Bytes;
use kdproto::kd::{DeframeEvent, Deframer, Framing, Packet, PacketType};
use proptest::prelude::*;

fn any_packet() -> impl Strategy<Value = Packet> {
    let data = (
        prop_oneof![
            Just(1u16),
            Just(2),
            Just(3),
            Just(7),
            Just(9),
            Just(10),
            Just(11),
            12u16..100
        ],
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(ty, id, payload)| Packet::data(PacketType::from_u16(ty), id, payload));
    let control =
        (4u16..=6, any::<u32>()).prop_map(|(ty, id)| Packet::control(PacketType::from_u16(ty), id));
    prop_oneof![3 => data, 1 => control]
}

fn events_of(chunks: &[&[u8]]) -> Vec<DeframeEvent> {
    let mut deframer = Deframer::new();
    let mut events = Vec::new();
    for chunk in chunks {
        deframer.push(chunk);
        events.extend(std::iter::from_fn(|| deframer.poll()));
    }
    events
}

proptest! {
    #[test]
    fn encode_then_parse_is_the_identity(packet in any_packet(), serial: bool) {
        let framing = if serial { Framing::Serial } else { Framing::Datagram };
        let bytes = packet.to_bytes(framing).unwrap();
        prop_assert_eq!(bytes.len(), packet.encoded_len(framing));
        prop_assert_eq!(Packet::parse(&bytes, framing).unwrap(), packet);
    }

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes: Vec<u8>, serial: bool) {
        let framing = if serial { Framing::Serial } else { Framing::Datagram };
        let _ = Packet::parse(&bytes, framing);
    }

    #[test]
    fn a_clean_stream_yields_exactly_its_packets(packets in proptest::collection::vec(any_packet(), 0..20)) {
        let stream: Vec<u8> = packets
            .iter()
            .flat_map(|p| p.to_bytes(Framing::Serial).unwrap().to_vec())
            .collect();
        let expected: Vec<DeframeEvent> = packets.into_iter().map(DeframeEvent::Packet).collect();
        prop_assert_eq!(events_of(&[&stream]), expected);
    }

    #[test]
    fn the_deframer_yields_the_same_events_however_the_stream_is_split(
        pieces in proptest::collection::vec(
            prop_oneof![
                any_packet().prop_map(|p| p.to_bytes(Framing::Serial).unwrap()),
                proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from),
            ],
            0..20,
        ),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..30),
    ) {
        let stream: Vec<u8> = pieces.iter().flat_map(|p| p.to_vec()).collect();
        let whole = events_of(&[&stream]);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.sort_unstable();
        points.dedup();
        let mut chunks = Vec::new();
        let mut start = 0;
        for point in points {
            chunks.push(&stream[start..point]);
            start = point;
        }
        chunks.push(&stream[start..]);
        prop_assert_eq!(events_of(&chunks), whole.clone());
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        prop_assert_eq!(events_of(&bytewise), whole);
    }
}
