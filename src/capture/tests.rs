//! Unit tests on synthetic frames and files: every link type, container variant and kind of
//! damage, plus property tests that arbitrary input never panics.

#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod build;

use std::net::SocketAddr;

use proptest::prelude::*;

use self::build::*;
use super::frame::{decode, Outcome};
use super::input::{first_bytes, read_bounded, Bounded};
use super::*;

const LINK_ETHERNET: u32 = 1;
const PCAP_LE: [u8; 4] = [0xd4, 0xc3, 0xb2, 0xa1];
const PCAP_BE_NANO: [u8; 4] = [0xa1, 0xb2, 0x3c, 0x4d];
const PCAP_MODIFIED: [u8; 4] = [0x34, 0xcd, 0xb2, 0xa1];

fn v4_src() -> SocketAddr {
    "10.0.0.1:51111".parse().unwrap()
}

fn v4_dst() -> SocketAddr {
    "10.0.0.2:51112".parse().unwrap()
}

fn v6_src() -> SocketAddr {
    "[fe80::1]:51111".parse().unwrap()
}

fn read(bytes: &[u8]) -> CaptureRead {
    read_udp_datagrams_from_bytes(bytes).expect("synthetic capture reads")
}

/// Asserts `outcome` is the datagram the builders make.
fn assert_udp(outcome: Outcome<'_>, src: SocketAddr) {
    match outcome {
        Outcome::Udp {
            src: found,
            payload,
            ..
        } => {
            assert_eq!(found, src);
            assert_eq!(payload, PAYLOAD);
        }
        other => panic!("expected the UDP datagram, got {other:?}"),
    }
}

// ---- link, IP and UDP layers ----

#[test]
fn decode_ethernet_ipv4_and_ipv6() {
    assert_udp(decode(1, &ethernet(&[], 0x0800, &udp4(PAYLOAD))), v4_src());
    assert_udp(decode(1, &ethernet(&[], 0x86dd, &udp6(PAYLOAD))), v6_src());
    match decode(1, &ethernet(&[], 0x0800, &udp4(PAYLOAD))) {
        Outcome::Udp { dst, .. } => assert_eq!(dst, v4_dst()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn decode_drops_ethernet_padding_after_the_ip_packet() {
    let mut frame = ethernet(&[], 0x0800, &udp4(b"MDBG\x06payload"));
    frame.extend_from_slice(&[0; 20]); // minimum-frame padding or a trailing FCS
    assert_udp(decode(1, &frame), v4_src());
}

#[test]
fn decode_skips_stacked_vlan_tags() {
    let frame = ethernet(&[0x88a8, 0x8100], 0x0800, &udp4(PAYLOAD));
    assert_udp(decode(1, &frame), v4_src());
    let frame = ethernet(&[0x8100], 0x86dd, &udp6(PAYLOAD));
    assert_udp(decode(1, &frame), v6_src());
    // A tag with nothing after it.
    assert_eq!(
        decode(1, &ethernet(&[0x8100], 0x8100, &[])),
        Outcome::Malformed
    );
}

#[test]
fn decode_linux_cooked_headers() {
    assert_udp(decode(113, &sll(0x0800, &udp4(PAYLOAD))), v4_src());
    assert_udp(decode(113, &sll(0x86dd, &udp6(PAYLOAD))), v6_src());
    assert_udp(decode(276, &sll2(0x0800, &udp4(PAYLOAD))), v4_src());
    assert_udp(decode(276, &sll2(0x86dd, &udp6(PAYLOAD))), v6_src());
    assert_eq!(decode(113, &sll(0x0806, &[0; 28])), Outcome::NonUdp);
    assert_eq!(decode(276, &[0x08, 0x00, 0, 0]), Outcome::Malformed);
}

#[test]
fn decode_loopback_families_in_either_byte_order() {
    assert_udp(decode(0, &loopback([2, 0, 0, 0], &udp4(PAYLOAD))), v4_src());
    assert_udp(decode(0, &loopback([0, 0, 0, 2], &udp4(PAYLOAD))), v4_src());
    for family in [[30, 0, 0, 0], [0, 0, 0, 24], [28, 0, 0, 0], [10, 0, 0, 0]] {
        assert_udp(decode(0, &loopback(family, &udp6(PAYLOAD))), v6_src());
    }
    assert_udp(
        decode(108, &loopback([0, 0, 0, 2], &udp4(PAYLOAD))),
        v4_src(),
    );
    assert_eq!(
        decode(0, &loopback([7, 0, 0, 0], &udp4(PAYLOAD))),
        Outcome::NonUdp
    );
    assert_eq!(decode(0, &[2, 0]), Outcome::Malformed);
}

#[test]
fn decode_raw_ip_checks_the_version() {
    assert_udp(decode(101, &udp4(PAYLOAD)), v4_src());
    assert_udp(decode(101, &udp6(PAYLOAD)), v6_src());
    assert_udp(decode(228, &udp4(PAYLOAD)), v4_src());
    assert_udp(decode(229, &udp6(PAYLOAD)), v6_src());
    assert_eq!(decode(228, &udp6(PAYLOAD)), Outcome::Malformed);
    assert_eq!(decode(229, &udp4(PAYLOAD)), Outcome::Malformed);
    assert_eq!(decode(101, &[]), Outcome::Malformed);
}

#[test]
fn decode_walks_ipv6_extension_headers() {
    // Hop-by-hop (8 bytes) -> atomic fragment header (8 bytes) -> UDP.
    let mut body = vec![44, 0, 1, 4, 0, 0, 0, 0];
    body.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 7]);
    body.extend(udp_segment(PAYLOAD));
    assert_udp(decode(229, &ipv6(0, &body)), v6_src());
    // Authentication header: (1 + 2) * 4 = 12 bytes.
    let mut body = vec![17, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    body.extend(udp_segment(PAYLOAD));
    assert_udp(decode(229, &ipv6(51, &body)), v6_src());
    // An extension header longer than the packet.
    assert_eq!(decode(229, &ipv6(60, &[17, 200, 0, 0])), Outcome::Malformed);
    // TCP and "no next header".
    assert_eq!(decode(229, &ipv6(6, &[0; 20])), Outcome::NonUdp);
    assert_eq!(decode(229, &ipv6(59, &[])), Outcome::NonUdp);
}

#[test]
fn decode_reports_fragments_of_udp_only() {
    let udp = udp_segment(PAYLOAD);
    assert_eq!(decode(101, &ipv4(17, 0x2000, &udp)), Outcome::Fragment);
    assert_eq!(decode(101, &ipv4(17, 0x0010, &udp)), Outcome::Fragment);
    assert_eq!(decode(101, &ipv4(6, 0x2000, &udp)), Outcome::NonUdp);
    // Don't Fragment is not a fragment.
    assert_udp(decode(101, &ipv4(17, 0x4000, &udp)), v4_src());
    let mut first_fragment = vec![17, 0, 0, 1, 0, 0, 0, 9];
    first_fragment.extend_from_slice(&udp);
    assert_eq!(decode(229, &ipv6(44, &first_fragment)), Outcome::Fragment);
    let tcp_fragment = [6, 0, 0, 9, 0, 0, 0, 9, 0, 0, 0, 0];
    assert_eq!(decode(229, &ipv6(44, &tcp_fragment)), Outcome::NonUdp);
}

#[test]
fn decode_skips_other_protocols() {
    assert_eq!(decode(1, &ethernet(&[], 0x0806, &[0; 28])), Outcome::NonUdp);
    assert_eq!(
        decode(1, &ethernet(&[], 0x0800, &ipv4(6, 0, &[0; 20]))),
        Outcome::NonUdp
    );
    assert_eq!(
        decode(1, &ethernet(&[], 0x0800, &ipv4(1, 0, &[8, 0]))),
        Outcome::NonUdp
    );
    assert_eq!(decode(105, &[0; 64]), Outcome::UnsupportedLink);
}

#[test]
fn decode_rejects_inconsistent_lengths() {
    let good = udp4(PAYLOAD);
    // IP total length beyond the captured bytes (snaplen cut).
    assert_eq!(decode(101, &good[..good.len() - 1]), Outcome::Malformed);
    // IHL below 5.
    let mut bad_ihl = good.clone();
    bad_ihl[0] = 0x44;
    assert_eq!(decode(101, &bad_ihl), Outcome::Malformed);
    // IHL beyond the total length.
    let mut long_ihl = ipv4(17, 0, &[]);
    long_ihl[0] = 0x4f;
    assert_eq!(decode(101, &long_ihl), Outcome::Malformed);
    // UDP length shorter than its header, and longer than the IP payload.
    for udp_len in [7u16, 200] {
        let mut segment = udp_segment(PAYLOAD);
        segment[4..6].copy_from_slice(&udp_len.to_be_bytes());
        assert_eq!(decode(101, &ipv4(17, 0, &segment)), Outcome::Malformed);
    }
    // IPv6 payload length beyond the frame.
    let mut v6 = udp6(PAYLOAD);
    v6[5] += 1;
    assert_eq!(decode(101, &v6), Outcome::Malformed);
    // Headers cut anywhere.
    let frame = ethernet(&[0x8100], 0x0800, &good);
    for cut in 0..frame.len() {
        assert_eq!(decode(1, &frame[..cut]), Outcome::Malformed, "cut at {cut}");
    }
}

#[test]
fn empty_udp_payload_is_a_datagram() {
    match decode(101, &udp4(b"")) {
        Outcome::Udp { payload, .. } => assert!(payload.is_empty()),
        other => panic!("{other:?}"),
    }
}

// ---- legacy pcap ----

#[test]
fn pcap_big_endian_nanosecond() {
    let frame = ethernet(&[], 0x0800, &udp4(PAYLOAD));
    let file = Pcap::new(PCAP_BE_NANO, LINK_ETHERNET)
        .record(1_000, 500_000_000, &frame)
        .record(1_001, 250_000_000, &frame);
    let read = read(&file.out);
    assert_eq!(
        read.format,
        CaptureFormat::Pcap {
            big_endian: true,
            nanosecond: true
        }
    );
    assert_eq!(read.datagrams.len(), 2);
    assert_eq!(read.datagrams[0].time, 1_000.5);
    assert_eq!(read.datagrams[1].time, 1_001.25);
    assert_eq!(read.datagrams[1].index, 2);
    assert_eq!(read.relative_time(&read.datagrams[1]), 0.75);
}

#[test]
fn pcap_modified_format() {
    let file = Pcap::new(PCAP_MODIFIED, 101).record(7, 5, &udp4(PAYLOAD));
    let read = read(&file.out);
    assert_eq!(read.datagrams.len(), 1);
    assert_eq!(read.datagrams[0].payload, PAYLOAD);
    assert_eq!(read.datagrams[0].time, 7.000_005);
}

#[test]
fn pcap_link_type_flag_bits_are_ignored() {
    // FCS-length bits above the 16-bit link type.
    let file = Pcap::new(PCAP_LE, 0x1000_0000 | 113).record(1, 0, &sll(0x0800, &udp4(PAYLOAD)));
    let read = read(&file.out);
    assert_eq!(read.datagrams.len(), 1);
    assert_eq!(read.link_types.get(&113), Some(&1));
}

#[test]
fn pcap_counts_skipped_frames() {
    let file = Pcap::new(PCAP_LE, LINK_ETHERNET)
        .record(1, 0, &ethernet(&[], 0x0806, &[0; 28]))
        .record(2, 0, &ethernet(&[], 0x0800, &ipv4(17, 0x2000, &[0; 16])))
        .record(3, 0, &[0; 5])
        .record(4, 0, &ethernet(&[], 0x0800, &udp4(PAYLOAD)));
    let read = read(&file.out);
    assert_eq!(
        (
            read.frames,
            read.skipped_non_udp,
            read.skipped_fragments,
            read.skipped_malformed
        ),
        (4, 1, 1, 1)
    );
    assert_eq!(read.datagrams[0].index, 4);
    assert_eq!(read.start_time, Some(1.0));
    assert_eq!(read.relative_time(&read.datagrams[0]), 3.0);
}

#[test]
fn pcap_absurd_record_length_is_corrupt() {
    let mut file = Pcap::new(PCAP_LE, LINK_ETHERNET)
        .record(1, 0, &ethernet(&[], 0x0800, &udp4(PAYLOAD)))
        .out;
    let second = file.len();
    file.extend_from_slice(&[0; 8]);
    file.extend_from_slice(&u32::MAX.to_le_bytes());
    file.extend_from_slice(&[0; 64]);
    match read_udp_datagrams_from_bytes(&file) {
        Err(CaptureError::CorruptBlock {
            frame: 2, offset, ..
        }) => assert_eq!(offset, second),
        other => panic!("{other:?}"),
    }
}

#[test]
fn pcap_unsupported_link_type_errors_before_reading_frames() {
    let file = Pcap::new(PCAP_LE, 127);
    match read_udp_datagrams_from_bytes(&file.out) {
        Err(CaptureError::UnsupportedLinkType {
            link_type: 127,
            name,
        }) => {
            assert!(name.contains("RADIOTAP"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn pcap_header_cut_short_is_corrupt() {
    let file = Pcap::new(PCAP_LE, LINK_ETHERNET);
    assert!(matches!(
        read_udp_datagrams_from_bytes(&file.out[..10]),
        Err(CaptureError::CorruptBlock {
            frame: 1,
            offset: 0,
            ..
        })
    ));
}

// ---- pcapng ----

#[test]
fn pcapng_big_endian_with_clock_options() {
    let mut file = PcapNg::new(true);
    let offset = file.u64(100);
    file.interface(1, 0, &[(9, vec![9]), (14, offset)])
        .enhanced(0, 1_500_000_000, &ethernet(&[], 0x0800, &udp4(PAYLOAD)));
    let read = read(&file.out);
    assert_eq!(read.format, CaptureFormat::PcapNg);
    assert_eq!(read.datagrams.len(), 1);
    assert_eq!(read.datagrams[0].time, 101.5);
}

#[test]
fn pcapng_binary_timestamp_resolution() {
    let mut file = PcapNg::new(false);
    file.interface(101, 0, &[(9, vec![0x80 | 10])])
        .enhanced(0, 3 * 1024 + 256, &udp4(PAYLOAD));
    assert_eq!(read(&file.out).datagrams[0].time, 3.25);
}

#[test]
fn pcapng_interfaces_sections_and_packet_kinds() {
    let mut file = PcapNg::new(false);
    file.interface(1, 0, &[])
        .interface(276, 0, &[])
        .enhanced(1, 2_000_000, &sll2(0x0800, &udp4(PAYLOAD)))
        .simple(&ethernet(&[], 0x86dd, &udp6(PAYLOAD)))
        .obsolete(0, 3_000_000, &ethernet(&[], 0x0800, &udp4(PAYLOAD)))
        .block(0x0000_0bad, &[1, 2, 3, 4, 5]) // a custom block: skipped
        .block(5, &[0; 20]); // interface statistics: skipped
                             // A new, big-endian section: raw IP is now interface 0.
    let mut second = PcapNg::new(true);
    second
        .interface(101, 0, &[])
        .enhanced(0, 4_000_000, &udp6(PAYLOAD));
    file.out.extend(second.out);
    let read = read(&file.out);
    let summary: Vec<_> = read
        .datagrams
        .iter()
        .map(|d| (d.index, d.time, d.src))
        .collect();
    assert_eq!(
        summary,
        [
            (1, 2.0, v4_src()),
            (2, 2.0, v6_src()), // a simple packet has no time of its own
            (3, 3.0, v4_src()),
            (4, 4.0, v6_src()),
        ]
    );
    assert_eq!(read.link_types.get(&276), Some(&1));
    assert_eq!(read.link_types.get(&1), Some(&2));
    assert_eq!(read.link_types.get(&101), Some(&1));
}

#[test]
fn pcapng_simple_packet_is_cut_to_snaplen() {
    let frame = ethernet(&[], 0x0800, &udp4(PAYLOAD));
    let mut file = PcapNg::new(false);
    file.interface(1, 30, &[]).simple(&frame);
    let read = read(&file.out);
    assert_eq!(read.skipped_malformed, 1, "snaplen 30 cuts the UDP header");
}

#[test]
fn pcapng_packet_without_its_interface_is_malformed() {
    let frame = ethernet(&[], 0x0800, &udp4(PAYLOAD));
    let mut file = PcapNg::new(false);
    file.simple(&frame)
        .interface(1, 0, &[])
        .enhanced(3, 0, &frame)
        .enhanced(0, 0, &frame);
    let read = read(&file.out);
    assert_eq!((read.frames, read.skipped_malformed), (3, 2));
    assert_eq!(read.datagrams[0].index, 3);
}

#[test]
fn pcapng_only_unsupported_interfaces_is_an_error() {
    let mut file = PcapNg::new(false);
    file.interface(249, 0, &[]).enhanced(0, 0, &[0; 40]);
    assert!(matches!(
        read_udp_datagrams_from_bytes(&file.out),
        Err(CaptureError::UnsupportedLinkType {
            link_type: 249,
            name: "USBPCAP"
        })
    ));
    // With one decodable interface it is just a skip count.
    file.interface(101, 0, &[]).enhanced(1, 0, &udp4(PAYLOAD));
    let read = read(&file.out);
    assert_eq!(
        (read.datagrams.len(), read.skipped_unsupported_link),
        (1, 1)
    );
}

#[test]
fn pcapng_damaged_framing_is_corrupt() {
    let frame = udp4(PAYLOAD);
    let mut file = PcapNg::new(false);
    file.interface(101, 0, &[]).enhanced(0, 0, &frame);
    let second = file.out.len();
    file.enhanced(0, 0, &frame);
    let end = file.out.len();

    let mut bad_trailer = file.out.clone();
    bad_trailer[end - 1] ^= 1;
    let mut bad_length = file.out.clone();
    bad_length[second + 4] = 0x0e;
    for damaged in [bad_trailer, bad_length] {
        match read_udp_datagrams_from_bytes(&damaged) {
            Err(CaptureError::CorruptBlock {
                frame: 2, offset, ..
            }) => {
                assert_eq!(offset, second)
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn pcapng_bad_section_or_interface_headers_are_corrupt() {
    let mut bad_bom = PcapNg::new(false).out;
    bad_bom[8] = 0;
    let mut bad_resolution = PcapNg::new(false);
    bad_resolution.interface(1, 0, &[(9, vec![20])]);
    let mut bad_version = PcapNg::new(false).out;
    bad_version[12] = 2;
    for damaged in [bad_bom, bad_resolution.out, bad_version] {
        let error = read_udp_datagrams_from_bytes(&damaged).expect_err("damaged header");
        assert!(
            matches!(error, CaptureError::CorruptBlock { frame: 1, .. }),
            "{error:?}"
        );
    }
}

#[test]
fn pcapng_cut_mid_block_keeps_earlier_frames() {
    let mut file = PcapNg::new(false);
    file.interface(101, 0, &[]).enhanced(0, 0, &udp4(PAYLOAD));
    let whole = file.out.len();
    file.enhanced(0, 0, &udp4(PAYLOAD));
    for cut in whole + 1..file.out.len() {
        let read = read(&file.out[..cut]);
        assert!(read.truncated);
        assert_eq!(read.datagrams.len(), 1);
    }
    assert!(!read(&file.out[..whole]).truncated);
}

// ---- input: gzip, limits, magic ----

#[test]
fn gzip_is_detected_by_magic_and_may_be_multi_member() {
    let frame = udp4(PAYLOAD);
    let mut file = PcapNg::new(false);
    file.interface(101, 0, &[]).enhanced(0, 0, &frame);
    let mut second = PcapNg::new(false);
    second.interface(101, 0, &[]).enhanced(0, 1_000_000, &frame);
    let mut gz = gzip(&file.out);
    gz.extend(gzip(&second.out));
    let read = read(&gz);
    assert!(read.gzipped);
    assert_eq!(read.datagrams.len(), 2);
}

#[test]
fn gzip_damage_is_an_error_and_a_cut_is_truncation() {
    let mut file = PcapNg::new(false);
    file.interface(101, 0, &[]);
    for _ in 0..50 {
        file.enhanced(0, 0, &udp4(PAYLOAD));
    }
    let gz = gzip(&file.out);
    let cut = read(&gz[..gz.len() / 2]);
    assert!(cut.truncated && cut.gzipped);
    let mut bad_method = gz.clone();
    bad_method[2] = 7; // compression method other than deflate
    assert!(matches!(
        read_udp_datagrams_from_bytes(&bad_method),
        Err(CaptureError::Gzip { .. })
    ));
    let mut bad_crc = gz.clone();
    let crc_at = gz.len() - 8;
    bad_crc[crc_at] ^= 0xff;
    assert!(matches!(
        read_udp_datagrams_from_bytes(&bad_crc),
        Err(CaptureError::Gzip { .. })
    ));
}

#[test]
fn reading_stops_at_the_size_limit() {
    assert_eq!(
        read_bounded(&[0u8; 10][..], 10).expect("at limit").len(),
        10
    );
    assert!(matches!(
        read_bounded(&[0u8; 11][..], 10),
        Err(Bounded::TooLarge)
    ));
    let bomb = gzip(&[0; 100_000]);
    let decoder = flate2::read::MultiGzDecoder::new(bomb.as_slice());
    assert!(matches!(
        read_bounded(decoder, 50_000),
        Err(Bounded::TooLarge)
    ));
}

#[test]
fn not_a_capture_shows_the_first_bytes() {
    assert_eq!(first_bytes(b"GIF8"), "47 49 46 38 (\"GIF8\")");
    assert_eq!(
        first_bytes(b"<!DOCTYPE html>\n<html>"),
        "3c 21 44 4f 43 54 59 50 45 20 68 74 6d 6c 3e 0a ... (\"<!DOCTYPE html>.\"...)"
    );
    for content in [
        &b""[..],
        b"\x0a\x0d",
        b"PK\x03\x04 a zip file",
        b"\xa1\xb2\xc3",
    ] {
        assert!(matches!(
            read_udp_datagrams_from_bytes(content),
            Err(CaptureError::NotCapture { .. })
        ));
    }
}

// ---- never panic ----

/// Magic numbers that get arbitrary bytes past format detection into each walker.
fn magic_prefix() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(vec![0xd4, 0xc3, 0xb2, 0xa1]),
        Just(vec![0xa1, 0xb2, 0xc3, 0xd4]),
        Just(vec![0x4d, 0x3c, 0xb2, 0xa1]),
        Just(vec![0xa1, 0xb2, 0x3c, 0x4d]),
        Just(vec![0x34, 0xcd, 0xb2, 0xa1]),
        Just(vec![
            0x0a, 0x0d, 0x0d, 0x0a, 0x1c, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a
        ]),
        Just(vec![
            0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0x1c, 0x1a, 0x2b, 0x3c, 0x4d
        ]),
        Just(vec![0x1f, 0x8b]),
        Just(vec![]),
    ]
}

/// A valid synthetic pcapng with every block kind, to be damaged.
fn rich_pcapng(big_endian: bool) -> Vec<u8> {
    let mut file = PcapNg::new(big_endian);
    let offset = file.u64(5);
    file.interface(1, 0, &[(9, vec![9]), (14, offset), (2, b"eth0".to_vec())])
        .interface(113, 64, &[])
        .enhanced(0, 1, &ethernet(&[0x8100], 0x86dd, &udp6(PAYLOAD)))
        .enhanced(1, 2, &sll(0x0800, &udp4(PAYLOAD)))
        .simple(&ethernet(&[], 0x0800, &udp4(PAYLOAD)))
        .obsolete(1, 3, &sll(0x0800, &udp4(PAYLOAD)))
        .block(4, &[0; 4]); // an empty name resolution block: skipped
    file.out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(prefix in magic_prefix(), rest in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut content = prefix;
        content.extend(rest);
        if let Ok(read) = read_udp_datagrams_from_bytes(&content) {
            prop_assert_eq!(read.frames, read.datagrams.len() + read.skipped());
        }
    }

    #[test]
    fn arbitrary_frames_never_panic(link in prop::sample::select(vec![0u16, 1, 101, 108, 113, 228, 229, 276, 9]), frame in prop::collection::vec(any::<u8>(), 0..128)) {
        let _ = decode(link, &frame);
    }

    #[test]
    fn damaged_synthetic_captures_never_panic(
        big_endian in any::<bool>(),
        kind in 0..3u8,
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut content = match kind {
            0 => rich_pcapng(big_endian),
            1 => Pcap::new(if big_endian { PCAP_BE_NANO } else { PCAP_LE }, LINK_ETHERNET)
                .record(1, 2, &ethernet(&[], 0x0800, &udp4(PAYLOAD)))
                .record(3, 4, &ethernet(&[0x8100], 0x86dd, &udp6(PAYLOAD)))
                .out,
            _ => gzip(&rich_pcapng(big_endian)),
        };
        for (at, value) in damage {
            let at = at.index(content.len());
            content[at] = value;
        }
        content.truncate(cut.index(content.len() + 1));
        if let Ok(read) = read_udp_datagrams_from_bytes(&content) {
            prop_assert_eq!(read.frames, read.datagrams.len() + read.skipped());
        }
    }
}

#[test]
fn undamaged_rich_pcapng_reads_fully() {
    for big_endian in [false, true] {
        let read = read(&rich_pcapng(big_endian));
        assert_eq!(read.datagrams.len(), 4);
        assert_eq!(read.datagrams[0].time, 5.000_000_001);
        assert!(!read.truncated);
    }
}
