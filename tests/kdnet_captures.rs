//! The real WinDbg ↔ Windows 10 KDNET session (`captures/kdnet/windbg-uncut.pcapng.gz`, key
//! 8.8.8.8): every datagram opens, authenticates, re-seals to the identical bytes, and every KD
//! packet inside passes its checksum and parses into a typed, known message.

use std::path::PathBuf;

use kdleak::capture::read_udp_datagrams;
use kdproto::api::Message;
use kdproto::kd::{Framing, Packet};
use kdproto::kdnet::{self, Channel, ControlMessage, DataBody, Keys};

fn capture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("captures/kdnet")
        .join(name)
}

#[test]
fn every_windbg_datagram_authenticates_reseals_and_parses_into_known_messages() {
    let capture = read_udp_datagrams(&capture("windbg-uncut.pcapng.gz")).unwrap();
    assert_eq!(capture.datagrams.len(), 955);
    let mut keys = Keys::new("8.8.8.8".parse().unwrap());
    let (mut kd_packets, mut messages) = (0, 0);
    for udp in &capture.datagrams {
        let datagram =
            kdnet::open(&udp.payload, &keys).unwrap_or_else(|e| panic!("frame {}: {e}", udp.index));
        let resealed = kdnet::seal(&datagram, &keys).unwrap();
        assert_eq!(
            resealed, udp.payload,
            "frame {} re-seals byte-exact",
            udp.index
        );
        match datagram.channel {
            Channel::Control => {
                if let ControlMessage::Response(_) =
                    ControlMessage::parse(datagram.body.clone()).unwrap()
                {
                    let data_key = keys.control().data_key(&datagram.body);
                    keys.set_data_key(data_key);
                }
            }
            Channel::Data => {
                let DataBody::Kd(bytes) = DataBody::parse(datagram.body) else {
                    continue;
                };
                let packet = Packet::parse(&bytes, Framing::Datagram)
                    .unwrap_or_else(|e| panic!("frame {}: {e}", udp.index));
                kd_packets += 1;
                if packet.is_control() {
                    continue;
                }
                let message = Message::parse(packet.packet_type, &packet.payload)
                    .unwrap_or_else(|e| panic!("frame {}: {e}", udp.index));
                assert!(
                    !matches!(message, Message::Other { .. }),
                    "frame {}: untyped {:?}",
                    udp.index,
                    packet.packet_type
                );
                let api = message.api().expect("typed messages have an API number");
                assert!(api.is_known(), "frame {}: unknown API {api}", udp.index);
                assert_eq!(
                    message.encode(),
                    packet.payload,
                    "frame {} re-encodes",
                    udp.index
                );
                messages += 1;
            }
        }
    }
    assert_eq!(kd_packets, 526);
    assert!(messages > 250, "{messages} data packets");
}

#[test]
fn the_windbg_session_starts_as_kdnet_md_describes() {
    // kdnet.md §4.4: poke, response, ping, PrintString, ..., LoadSymbols, GetVersion reply.
    let decoded = kdleak::decode::decode_file(
        &capture("windbg-uncut.pcapng.gz"),
        &"8.8.8.8".parse().unwrap(),
    )
    .unwrap();
    let kinds: Vec<String> = decoded.packets[..12]
        .iter()
        .map(|p| {
            serde_json::to_value(&p.content).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        ["poke", "response", "ping", "kd", "kd", "kd", "kd", "kd", "kd", "kd", "kd", "kd"]
    );
    let reply = serde_json::to_value(&decoded.packets[11].content).unwrap();
    assert_eq!(reply["api"], "DbgKdGetVersionApi");
    assert_eq!(reply["fields"]["build"], 10586);
    assert_eq!(reply["fields"]["machine_type"], "0x8664");
}

#[test]
fn the_load_symbols_stop_names_winload() {
    let capture = read_udp_datagrams(&capture("windbg-uncut.pcapng.gz")).unwrap();
    let decoded = kdleak::decode::decode_datagrams(&capture.datagrams, &"8.8.8.8".parse().unwrap());
    let stop = serde_json::to_value(&decoded.packets[7].content).unwrap();
    assert_eq!(stop["packet_type"], "STATE_CHANGE64");
    assert_eq!(stop["fields"]["path"], "winload.efi");
}
