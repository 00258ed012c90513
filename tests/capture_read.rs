//! Reading the real KDNET captures in `captures/kdnet/`, and damaged copies of them.
//!
//! Expected counts and byte totals were taken once with tshark (`tshark -r FILE -Y udp -T fields
//! -e udp.length`); the tests themselves do not need tshark.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kdleak::capture::{
    read_udp_datagrams, read_udp_datagrams_from_bytes, CaptureError, CaptureFormat, CaptureRead,
};
use proptest::prelude::*;

fn capture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("captures/kdnet")
        .join(name)
}

fn windbg_uncut() -> CaptureRead {
    read_udp_datagrams(&capture_path("windbg-uncut.pcapng.gz")).expect("read windbg-uncut")
}

fn kek() -> CaptureRead {
    read_udp_datagrams(&capture_path("kek.pcap")).expect("read kek.pcap")
}

fn file_bytes(name: &str) -> Vec<u8> {
    std::fs::read(capture_path(name)).expect("read capture bytes")
}

/// The pcapng inside windbg-uncut.pcapng.gz, for tests that damage it.
fn windbg_uncut_pcapng() -> Vec<u8> {
    let mut data = Vec::new();
    flate2::read::GzDecoder::new(file_bytes("windbg-uncut.pcapng.gz").as_slice())
        .read_to_end(&mut data)
        .expect("gunzip");
    data
}

/// A scratch file under the test target directory.
fn scratch_file(name: &str, content: &[u8]) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, content).expect("write scratch file");
    path
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("socket address")
}

fn payload_bytes(read: &CaptureRead) -> usize {
    read.datagrams.iter().map(|d| d.payload.len()).sum()
}

/// Every frame is a datagram or counted in exactly one skip counter.
fn assert_accounted(read: &CaptureRead) {
    assert_eq!(read.frames, read.datagrams.len() + read.skipped());
    let per_link: usize = read.link_types.values().sum();
    assert!(per_link <= read.frames);
}

#[test]
fn windbg_uncut_yields_955_mdbg_datagrams() {
    let read = windbg_uncut();
    assert_eq!(read.format, CaptureFormat::PcapNg);
    assert!(read.gzipped);
    assert!(!read.truncated);
    assert_eq!(read.frames, 955);
    assert_eq!(read.datagrams.len(), 955);
    assert_eq!(read.skipped(), 0);
    assert_eq!(read.link_types.get(&1), Some(&955), "all Ethernet");
    assert!(read
        .datagrams
        .iter()
        .all(|d| d.payload.starts_with(b"MDBG")));
    assert_eq!(
        payload_bytes(&read),
        220_066,
        "tshark's total of udp.length - 8"
    );
    assert_accounted(&read);
}

#[test]
fn windbg_uncut_first_datagram_is_target_to_host() {
    let read = windbg_uncut();
    let first = &read.datagrams[0];
    assert_eq!(first.index, 1);
    assert_eq!(first.src, addr("192.168.2.72:51111"));
    assert_eq!(first.dst, addr("192.168.2.1:51111"));
    assert_eq!(first.payload.len(), 382 - 8);
    assert!((first.time - 1_453_631_771.474_228).abs() < 1e-6);
    let second = &read.datagrams[1];
    assert_eq!((second.src, second.dst), (first.dst, first.src));
}

#[test]
fn windbg_uncut_indices_are_frame_numbers_and_times_increase() {
    let read = windbg_uncut();
    for (position, datagram) in read.datagrams.iter().enumerate() {
        assert_eq!(datagram.index, position + 1);
    }
    assert!(read
        .datagrams
        .windows(2)
        .all(|pair| pair[0].time <= pair[1].time));
    assert_eq!(read.relative_time(&read.datagrams[0]), 0.0);
    let last = read.datagrams.last().expect("datagrams");
    // capinfos: capture duration 1289.049869 seconds.
    assert!((read.relative_time(last) - 1_289.049_869).abs() < 1e-5);
}

#[test]
fn kek_pcap_yields_704_datagrams() {
    let read = kek();
    assert_eq!(
        read.format,
        CaptureFormat::Pcap {
            big_endian: false,
            nanosecond: false
        }
    );
    assert!(!read.gzipped);
    assert!(!read.truncated);
    assert_eq!(read.frames, 704);
    assert_eq!(read.datagrams.len(), 704);
    assert!(read
        .datagrams
        .iter()
        .all(|d| d.payload.starts_with(b"MDBG")));
    assert_eq!(
        payload_bytes(&read),
        84_096,
        "tshark's total of udp.length - 8"
    );
    let first = &read.datagrams[0];
    assert_eq!(first.src, addr("192.168.1.105:50000"));
    assert_eq!(first.dst, addr("192.168.1.101:50000"));
    assert!(read
        .datagrams
        .iter()
        .any(|d| d.src == addr("192.168.1.101:50000")));
    assert_accounted(&read);
}

#[test]
fn bytes_variant_matches_path_variant() {
    let from_bytes =
        read_udp_datagrams_from_bytes(&file_bytes("kek.pcap")).expect("read kek.pcap bytes");
    assert_eq!(from_bytes, kek());
    let unzipped = read_udp_datagrams_from_bytes(&windbg_uncut_pcapng()).expect("read pcapng");
    assert!(!unzipped.gzipped);
    assert_eq!(unzipped.datagrams, windbg_uncut().datagrams);
}

#[test]
fn garbage_file_is_not_a_capture() {
    let path = scratch_file("garbage.pcap", b"this is a text file, not a capture\n");
    let error = read_udp_datagrams(&path).expect_err("garbage must not parse");
    assert!(
        matches!(&error, CaptureError::NotCapture { first_bytes } if first_bytes.starts_with("74 68 69 73")),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("not a pcap or pcapng file"), "{message}");
    assert!(message.contains("this is a text f"), "{message}");
}

#[test]
fn empty_file_is_not_a_capture() {
    let error = read_udp_datagrams_from_bytes(&[]).expect_err("empty");
    assert!(error.to_string().contains("empty"), "{error}");
}

#[test]
fn missing_file_error_names_the_path() {
    let path = capture_path("no-such-capture.pcapng");
    let error = read_udp_datagrams(&path).expect_err("missing file");
    assert!(matches!(error, CaptureError::NotFound { .. }), "{error:?}");
    assert!(error.to_string().contains("no-such-capture.pcapng"));
}

#[test]
fn directory_is_unreadable() {
    let error = read_udp_datagrams(&capture_path("")).expect_err("a directory");
    assert!(
        matches!(error, CaptureError::Unreadable { .. }),
        "{error:?}"
    );
}

#[test]
fn truncated_gz_gives_a_prefix_or_an_error() {
    let full = windbg_uncut();
    let gz = file_bytes("windbg-uncut.pcapng.gz");
    for cut in [
        11,
        20,
        100,
        4096,
        gz.len() / 3,
        gz.len() / 2,
        gz.len() - 9,
        gz.len() - 1,
    ] {
        let Ok(read) = read_udp_datagrams_from_bytes(&gz[..cut]) else {
            continue;
        };
        assert!(read.truncated, "cut at {cut}");
        // Only the last bytes of the deflate stream and the gzip trailer can go without losing
        // a frame.
        assert!(
            read.datagrams.len() < 955 || cut >= gz.len() - 16,
            "cut at {cut}"
        );
        assert_eq!(read.datagrams[..], full.datagrams[..read.datagrams.len()]);
        assert_accounted(&read);
    }
    // Half the file decompresses to the first few hundred frames.
    let half = read_udp_datagrams_from_bytes(&gz[..gz.len() / 2]).expect("half a gzip");
    assert!(half.datagrams.len() > 100, "{}", half.datagrams.len());
}

/// Offsets where a record of a little-endian microsecond pcap file ends.
fn pcap_record_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = vec![24];
    let mut offset = 24;
    while offset + 16 <= bytes.len() {
        let caplen = u32::from_le_bytes(bytes[offset + 8..offset + 12].try_into().unwrap());
        offset += 16 + caplen as usize;
        ends.push(offset);
    }
    ends
}

#[test]
fn truncated_pcap_keeps_every_frame_before_the_cut() {
    let full = kek();
    let bytes = file_bytes("kek.pcap");
    let record_ends = pcap_record_ends(&bytes);
    // Cuts every 101 bytes hit record headers, frame data and record boundaries.
    for cut in (0..bytes.len()).step_by(101) {
        match read_udp_datagrams_from_bytes(&bytes[..cut]) {
            Ok(read) => {
                assert_eq!(read.datagrams[..], full.datagrams[..read.datagrams.len()]);
                assert_eq!(read.truncated, !record_ends.contains(&cut), "cut at {cut}");
                assert_eq!(
                    read.frames,
                    record_ends.iter().filter(|&&end| end <= cut).count() - 1
                );
                assert_accounted(&read);
            }
            Err(error) => assert!(cut < 24, "cut at {cut}: {error}"),
        }
    }
}

#[test]
fn corrupt_block_length_reports_the_frame() {
    let mut data = windbg_uncut_pcapng();
    // Find the 10th Enhanced Packet Block and damage its length field.
    let mut offset = 0;
    let mut packets = 0;
    loop {
        let block_type = u32::from_le_bytes(data[offset..offset + 4].try_into().unwrap());
        let len = u32::from_le_bytes(data[offset + 4..offset + 8].try_into().unwrap()) as usize;
        if block_type == 6 {
            packets += 1;
            if packets == 10 {
                break;
            }
        }
        offset += len;
    }
    data[offset + 4..offset + 8].copy_from_slice(&13u32.to_le_bytes());
    let error = read_udp_datagrams_from_bytes(&data).expect_err("corrupt length");
    match &error {
        CaptureError::CorruptBlock {
            frame, offset: at, ..
        } => {
            assert_eq!(*frame, 10);
            assert_eq!(*at, offset);
        }
        other => panic!("expected CorruptBlock, got {other:?}"),
    }
    assert!(error.to_string().contains("frame 10"), "{error}");
}

#[test]
fn unsupported_link_type_is_named() {
    let mut bytes = file_bytes("kek.pcap");
    bytes[20..24].copy_from_slice(&105u32.to_le_bytes()); // IEEE 802.11
    let error = read_udp_datagrams_from_bytes(&bytes).expect_err("Wi-Fi link type");
    assert!(matches!(
        error,
        CaptureError::UnsupportedLinkType { link_type: 105, .. }
    ));
    assert!(error.to_string().contains("IEEE802_11"), "{error}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Overwriting random bytes of a real capture never panics, and what is read stays
    /// consistent.
    #[test]
    fn damaged_kek_never_panics(damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16)) {
        let mut bytes = file_bytes("kek.pcap");
        for (at, value) in damage {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        if let Ok(read) = read_udp_datagrams_from_bytes(&bytes) {
            assert_accounted(&read);
        }
    }

    /// The same for the pcapng inside windbg-uncut, where damage also hits block framing and
    /// interface descriptions.
    #[test]
    fn damaged_windbg_uncut_never_panics(damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16)) {
        let mut bytes = windbg_uncut_pcapng();
        for (at, value) in damage {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        if let Ok(read) = read_udp_datagrams_from_bytes(&bytes) {
            assert_accounted(&read);
        }
    }
}
