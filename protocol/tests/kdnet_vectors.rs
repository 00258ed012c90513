//! Known-answer tests for the KDNET codec against public captures (kdnet.md §5):
//! `captures/kdnet/derived-vectors.txt`, `libkdnet-test_pkt.hex` and `kek.pcap`.

use std::collections::HashMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use bytes::Bytes;
use kdproto::kd::{Framing, Packet};
use kdproto::kdnet::{
    open, peek, seal, Channel, ControlMessage, DataBody, Datagram, Direction, Endpoint, Key, Keys,
    Opened, Poke, Response,
};
use kdproto::Error;

const DK_V2: &str = "6d41dd0561a9f887afd8e82b2527e19ff800011075ff2ee6904553abbec778f2";
const DK_V4: &str = "6bd91c57bd6a551ad30b509c05c0c95b32cc5e47a0866907eaf0b1583384f660";

fn capture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../captures/kdnet")
        .join(name)
}

fn read_text(name: &str) -> String {
    fs::read_to_string(capture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn unhex(text: &str) -> Vec<u8> {
    hex::decode(text.trim()).unwrap_or_else(|e| panic!("bad hex {text:.20}…: {e}"))
}

/// One `[name] …` entry of derived-vectors.txt §2 or §3.
#[derive(Debug)]
struct Vector {
    name: String,
    version: u8,
    channel: Channel,
    direction: Direction,
    seq: u64,
    pad: u8,
    udp: Vec<u8>,
    tag: Vec<u8>,
    plaintext: Vec<u8>,
}

/// Key rows of §1: (key string, parts, control key, hmac key).
struct KeyRow {
    text: String,
    parts: Vec<u64>,
    control: Vec<u8>,
    hmac: Vec<u8>,
}

/// Sections of derived-vectors.txt, keyed by the number after "## ".
struct Derived {
    keys: Vec<KeyRow>,
    packets: HashMap<u32, Vec<Vector>>,
    data_keys: HashMap<u32, Vec<u8>>,
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.trim().strip_prefix(name)?.trim_start();
    Some(rest.strip_prefix('=')?.trim())
}

fn derived() -> Derived {
    let text = read_text("derived-vectors.txt");
    let mut out = Derived {
        keys: Vec::new(),
        packets: HashMap::new(),
        data_keys: HashMap::new(),
    };
    let mut section = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("## ") {
            if let Some(number) = rest.split('.').next().and_then(|n| n.parse().ok()) {
                section = number;
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(value) = field(line, "key_string") {
            out.keys.push(KeyRow {
                text: value.to_owned(),
                parts: Vec::new(),
                control: Vec::new(),
                hmac: Vec::new(),
            });
        } else if let Some(value) = field(line, "parts_u64") {
            out.keys.last_mut().unwrap().parts = value
                .split_whitespace()
                .map(|p| u64::from_str_radix(p.trim_start_matches("0x"), 16).unwrap())
                .collect();
        } else if let Some(value) = field(line, "control") {
            out.keys.last_mut().unwrap().control = unhex(value);
        } else if let Some(value) = field(line, "hmac_key") {
            out.keys.last_mut().unwrap().hmac = unhex(value);
        } else if let Some(header) = line.strip_prefix('[') {
            let (name, attrs) = header.split_once(']').unwrap();
            let attrs: HashMap<&str, &str> = attrs
                .split_whitespace()
                .map(|a| a.split_once('=').unwrap())
                .collect();
            assert_eq!(attrs["hmac_ok"], "True", "{name}");
            out.packets.entry(section).or_default().push(Vector {
                name: name.to_owned(),
                version: attrs["version"].parse().unwrap(),
                channel: match attrs["channel"] {
                    "0" => Channel::Data,
                    "1" => Channel::Control,
                    other => panic!("channel {other}"),
                },
                direction: match attrs["dir"] {
                    "target->host" => Direction::TargetToHost,
                    "host->target" => Direction::HostToTarget,
                    other => panic!("dir {other}"),
                },
                seq: attrs["seq"].parse().unwrap(),
                pad: attrs["pad"].parse().unwrap(),
                udp: Vec::new(),
                tag: Vec::new(),
                plaintext: Vec::new(),
            });
        } else if let Some(value) = field(line, "udp") {
            last_vector(&mut out, section).udp = unhex(value);
        } else if let Some(value) = field(line, "tag_iv") {
            last_vector(&mut out, section).tag = unhex(value);
        } else if let Some(value) = field(line, "plaintext") {
            last_vector(&mut out, section).plaintext = unhex(value);
        } else if line.trim_start().starts_with("=> data_key") {
            let hex = line.rsplit('=').next().unwrap();
            out.data_keys.insert(section, unhex(hex));
        } else if !line.trim_start().starts_with("source") {
            panic!("unrecognised line in derived-vectors.txt: {line}");
        }
    }
    out
}

fn last_vector(out: &mut Derived, section: u32) -> &mut Vector {
    out.packets.get_mut(&section).unwrap().last_mut().unwrap()
}

/// libkdnet-test_pkt.hex: (name, bytes) in file order.
fn libkdnet_packets() -> Vec<(String, Vec<u8>)> {
    read_text("libkdnet-test_pkt.hex")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let mut fields = line.split_whitespace();
            let name = fields.next().unwrap().to_owned();
            let len: usize = fields.next().unwrap().parse().unwrap();
            let bytes = unhex(fields.next().unwrap());
            assert_eq!(bytes.len(), len, "{name}");
            (name, bytes)
        })
        .collect()
}

/// Opens a capture in order: control with K, then data once the Response has fixed DK.
/// Returns each datagram, checking that re-sealing gives the captured bytes back.
fn open_in_order<'a>(
    key: &Key,
    packets: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> (Vec<(String, Datagram)>, Keys) {
    let mut keys = Keys::new(key.clone());
    let mut opened = Vec::new();
    for (name, bytes) in packets {
        let datagram = open(bytes, &keys).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            seal(&datagram, &keys).unwrap().as_ref(),
            bytes,
            "{name}: re-seal differs"
        );
        if datagram.channel == Channel::Control && datagram.direction == Direction::HostToTarget {
            keys.set_data_key(key.data_key(&datagram.body));
        }
        opened.push((name.to_owned(), datagram));
    }
    (opened, keys)
}

fn check_against_vector(datagram: &Datagram, vector: &Vector) {
    let name = &vector.name;
    assert_eq!(datagram.version, vector.version, "{name}");
    assert_eq!(datagram.channel, vector.channel, "{name}");
    assert_eq!(datagram.direction, vector.direction, "{name}");
    assert_eq!(datagram.seq, vector.seq, "{name}");
    assert_eq!(datagram.pad(), vector.pad, "{name}");
    assert_eq!(datagram.plaintext().unwrap(), vector.plaintext, "{name}");
    assert_eq!(&vector.udp[vector.udp.len() - 16..], vector.tag, "{name}");
}

/// Every data body is a ping, a break-in, or a KD packet that `kd` accepts with its checksum.
fn check_body(datagram: &Datagram, name: &str) {
    match datagram.channel {
        Channel::Control => {
            let message = ControlMessage::parse(datagram.body.clone()).unwrap();
            assert!(
                matches!(
                    (&message, datagram.direction),
                    (ControlMessage::Poke(_), Direction::TargetToHost)
                        | (ControlMessage::Response(_), Direction::HostToTarget)
                ),
                "{name}: {message:?}"
            );
            assert_eq!(message.encode(), datagram.body, "{name}");
        }
        Channel::Data => match DataBody::parse(datagram.body.clone()) {
            DataBody::Kd(bytes) => {
                Packet::parse(&bytes, Framing::Datagram)
                    .unwrap_or_else(|e| panic!("{name}: KD packet: {e}"));
            }
            DataBody::Ping { .. } => assert_eq!(datagram.direction, Direction::TargetToHost),
            DataBody::BreakIn => assert_eq!(datagram.direction, Direction::HostToTarget),
        },
    }
}

#[test]
fn key_vectors() {
    let rows = derived().keys;
    assert_eq!(rows.len(), 5);
    for row in rows {
        let key = Key::parse(&row.text).unwrap();
        assert_eq!(key.as_bytes().as_slice(), row.control, "{}", row.text);
        assert_eq!(
            key.hmac_key().as_bytes().as_slice(),
            row.hmac,
            "{}",
            row.text
        );
        let parts: Vec<u64> = key
            .as_bytes()
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(parts, row.parts, "{}", row.text);
    }
}

#[test]
fn libkdnet_packets_open_authenticate_and_reseal() {
    let key = Key::parse("1.1.1.1").unwrap();
    let packets = libkdnet_packets();
    let udp: Vec<_> = packets
        .iter()
        .filter(|(name, _)| name != "unciphered_go")
        .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
        .collect();
    assert_eq!(udp.len(), 18);
    let (opened, keys) = open_in_order(&key, udp);
    assert_eq!(hex::encode(keys.data().unwrap().as_bytes()), DK_V2);
    for (name, datagram) in &opened {
        assert_eq!(datagram.version, 2, "{name}");
        check_body(datagram, name);
    }

    let derived = derived();
    assert_eq!(derived.data_keys[&2], hex::decode(DK_V2).unwrap());
    let vectors = &derived.packets[&2];
    assert_eq!(vectors.len(), 16);
    for vector in vectors {
        let (_, datagram) = opened
            .iter()
            .find(|(name, _)| *name == vector.name)
            .unwrap_or_else(|| panic!("{} not in the hex file", vector.name));
        check_against_vector(datagram, vector);
        let (_, bytes) = packets.iter().find(|(n, _)| *n == vector.name).unwrap();
        assert_eq!(bytes, &vector.udp, "{}", vector.name);
    }
}

#[test]
fn libkdnet_bodies_are_what_their_names_say() {
    let key = Key::parse("1.1.1.1").unwrap();
    let packets = libkdnet_packets();
    let (opened, _) = open_in_order(
        &key,
        packets
            .iter()
            .filter(|(name, _)| name != "unciphered_go")
            .map(|(n, b)| (n.as_str(), b.as_slice())),
    );
    let body = |name: &str| {
        let (_, d) = opened.iter().find(|(n, _)| n == name).unwrap();
        DataBody::parse(d.body.clone())
    };
    assert_eq!(
        body("conncheck"),
        DataBody::Ping {
            host: Ipv4Addr::new(192, 168, 0, 11)
        }
    );
    assert_eq!(body("break_data"), DataBody::BreakIn);

    let (_, poke) = opened.iter().find(|(n, _)| n == "poke").unwrap();
    let poke = Poke::parse(&poke.body).unwrap();
    assert_eq!(poke.target.to_string(), "192.168.0.13:50000");
    assert_eq!(poke.host.to_string(), "192.168.0.11:50000");
    // A previous debugger session is still listed (kdnet.md §3.4 step 5).
    assert_eq!(poke.debugger.to_string(), "192.168.0.11:50000");
    assert!(poke.has_debugger());
    let (_, response) = opened.iter().find(|(n, _)| n == "poke_resp").unwrap();
    assert_eq!(
        Response::parse(&response.body).unwrap().client_key,
        poke.client_key
    );
}

#[test]
fn windbg_vectors_open_authenticate_and_reseal() {
    let key = Key::parse("8.8.8.8").unwrap();
    let derived = derived();
    let vectors = &derived.packets[&3];
    assert_eq!(vectors.len(), 14);
    let (opened, keys) = open_in_order(
        &key,
        vectors.iter().map(|v| (v.name.as_str(), v.udp.as_slice())),
    );
    assert_eq!(hex::encode(keys.data().unwrap().as_bytes()), DK_V4);
    assert_eq!(derived.data_keys[&3], hex::decode(DK_V4).unwrap());
    for ((name, datagram), vector) in opened.iter().zip(vectors) {
        check_against_vector(datagram, vector);
        check_body(datagram, name);
    }
    // Fresh boot: the first poke lists no debugger (kdnet.md §3.2).
    let poke = Poke::parse(&opened[0].1.body).unwrap();
    assert!(!poke.has_debugger());
    assert_eq!(poke.target.to_string(), "192.168.2.72:51111");
    assert_eq!(poke.host.to_string(), "192.168.2.1:51111");
    assert_eq!(
        DataBody::parse(opened[2].1.body.clone()),
        DataBody::Ping {
            host: Ipv4Addr::new(192, 168, 2, 1)
        }
    );
}

/// Captured (poke, response) → the host endpoint, given the captured host random, emits the
/// captured Response byte for byte and derives the captured data key.
fn host_reproduces_response(key: &str, poke: &[u8], response: &[u8], dk: &str) -> Endpoint {
    let mut host = Endpoint::host(Key::parse(key).unwrap());
    let Opened::Control { datagram, message } = host.open(poke).unwrap() else {
        panic!("poke is not a control datagram")
    };
    assert!(matches!(message, ControlMessage::Poke(_)));
    let captured = open(response, host.keys()).unwrap();
    let host_random = Response::parse(&captured.body).unwrap().host_key;
    let sent = host.accept_poke(&datagram, host_random).unwrap();
    assert_eq!(sent.as_ref(), response);
    assert_eq!(host.version(), datagram.version);
    assert_eq!(hex::encode(host.keys().data().unwrap().as_bytes()), dk);
    assert_eq!(host.next_data_seq(), 1);
    host
}

#[test]
fn host_endpoint_reproduces_captured_responses() {
    let packets = libkdnet_packets();
    let get = |name: &str| &packets.iter().find(|(n, _)| n == name).unwrap().1;
    let mut host = host_reproduces_response("1.1.1.1", get("poke"), get("poke_resp"), DK_V2);
    // The host's first data datagram: KD RESEND, data seq 1 (kdnet.md §4.4).
    let resend = open(get("conncheck_resp"), host.keys()).unwrap();
    assert_eq!(
        host.seal_data_raw(resend.body).unwrap().as_ref(),
        get("conncheck_resp").as_slice()
    );
    // Then the break-in at seq 2.
    assert_eq!(
        host.seal_data(&DataBody::BreakIn).unwrap().as_ref(),
        get("break_data").as_slice()
    );
    // The target's ping opens on the host's side.
    assert_eq!(
        host.open(get("conncheck")).unwrap(),
        Opened::Data {
            seq: 2,
            body: DataBody::Ping {
                host: Ipv4Addr::new(192, 168, 0, 11)
            }
        }
    );
    // The host's own datagram is refused by the host.
    assert_eq!(
        host.open(get("break_data")),
        Err(Error::WrongDirection(Direction::HostToTarget))
    );

    let vectors = &derived().packets[&3];
    host_reproduces_response("8.8.8.8", &vectors[0].udp, &vectors[1].udp, DK_V4);
}

#[test]
fn target_endpoint_reproduces_captured_session_start() {
    let key = Key::parse("8.8.8.8").unwrap();
    let vectors = &derived().packets[&3];
    let keys = Keys::new(key.clone());
    let mut target = Endpoint::target(key, 4);

    let poke = open(&vectors[0].udp, &keys).unwrap();
    let sent = target
        .make_poke(poke.seq, &Poke::parse(&poke.body).unwrap())
        .unwrap();
    assert_eq!(sent.as_ref(), vectors[0].udp.as_slice());

    let Opened::Control { datagram, message } = target.open(&vectors[1].udp).unwrap() else {
        panic!("response is not a control datagram")
    };
    assert!(matches!(message, ControlMessage::Response(_)));
    target.accept_response(&datagram).unwrap();
    assert_eq!(hex::encode(target.keys().data().unwrap().as_bytes()), DK_V4);

    // pkt3: the ping at data seq 1; pkt4: the first KD packet at seq 2 (kdnet.md §4.4).
    let ping = DataBody::Ping {
        host: Ipv4Addr::new(192, 168, 2, 1),
    };
    assert_eq!(
        target.seal_data(&ping).unwrap().as_ref(),
        vectors[2].udp.as_slice()
    );
    let print = open(&vectors[3].udp, target.keys()).unwrap();
    let packet = Packet::parse(&print.body, Framing::Datagram).unwrap();
    assert_eq!(
        target
            .seal_data(&DataBody::from_packet(&packet).unwrap())
            .unwrap()
            .as_ref(),
        vectors[3].udp.as_slice()
    );
    // pkt5 is the host's RESEND: accepted, classified as a KD packet.
    assert!(matches!(
        target.open(&vectors[4].udp).unwrap(),
        Opened::Data {
            seq: 1,
            body: DataBody::Kd(_)
        }
    ));
}

#[test]
fn flipped_ciphertext_bit_fails_authentication() {
    let vectors = &derived().packets[&3];
    let key = Key::parse("8.8.8.8").unwrap();
    let (_, keys) = open_in_order(
        &key,
        [("pkt1", &vectors[0].udp[..]), ("pkt2", &vectors[1].udp[..])],
    );
    for vector in vectors {
        let mut bytes = vector.udp.clone();
        bytes[6 + (vector.udp.len() - 22) / 2] ^= 0x10;
        assert_eq!(
            open(&bytes, &keys),
            Err(Error::AuthenticationFailed),
            "{}",
            vector.name
        );
    }
}

#[test]
fn wrong_key_and_framing_errors_on_captured_bytes() {
    let vectors = &derived().packets[&2];
    let poke = &vectors[0].udp;
    let wrong = Keys::new(Key::parse("1.1.1.2").unwrap());
    assert_eq!(open(poke, &wrong), Err(Error::AuthenticationFailed));
    assert_eq!(
        open(&poke[..poke.len() - 1], &wrong),
        Err(Error::BadDatagramLength(373))
    );
    let mut bad = poke.clone();
    bad[3] = b'X';
    assert_eq!(peek(&bad), Err(Error::BadMagic(*b"MDBX")));
    // Data datagrams need the data key.
    let ping = &vectors[2].udp;
    assert_eq!(peek(ping), Ok((2, Channel::Data)));
    assert_eq!(
        open(ping, &Keys::new(Key::parse("1.1.1.1").unwrap())),
        Err(Error::NoDataKey)
    );
}

/// UDP payloads of a classic little-endian libpcap file with Ethernet + IPv4 + UDP frames.
fn pcap_udp_payloads(bytes: &[u8]) -> Vec<Bytes> {
    assert_eq!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
    assert_eq!(
        u32::from_le_bytes(bytes[20..24].try_into().unwrap()),
        1,
        "Ethernet"
    );
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let captured = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &bytes[at + 16..at + 16 + captured];
        at += 16 + captured;
        if frame[12..14] != [0x08, 0x00] || frame[14 + 9] != 17 {
            continue;
        }
        let ip_header = usize::from(frame[14] & 0x0F) * 4;
        let udp = &frame[14 + ip_header..];
        let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        out.push(Bytes::copy_from_slice(&udp[8..udp_len]));
    }
    out
}

#[test]
fn kek_pcap_is_version_5_and_fails_with_key_8_8_8_8() {
    let payloads = pcap_udp_payloads(&fs::read(capture("kek.pcap")).unwrap());
    assert_eq!(payloads.len(), 704);
    let mut keys = Keys::new(Key::parse("8.8.8.8").unwrap());
    // Give the data channel some key, so data datagrams reach the HMAC check too.
    keys.set_data_key(keys.control().data_key(&[0; 322]));
    let mut control = 0;
    for payload in &payloads {
        let (version, channel) = peek(payload).unwrap();
        assert_eq!(version, 5);
        control += usize::from(channel == Channel::Control);
        assert_eq!(open(payload, &keys), Err(Error::AuthenticationFailed));
    }
    // 5 pokes, each captured twice (captures/kdnet/README.md §2).
    assert_eq!(control, 10);
}
