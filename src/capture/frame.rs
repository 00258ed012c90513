//! Decoding one captured frame down to its UDP datagram: link layer, then IPv4/IPv6, then UDP.
//!
//! Checksums are not verified: captures taken on the debugging host usually have checksum
//! offload, so outgoing packets carry placeholder checksums that Wireshark also flags.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::bytes_at::{array, be_u16, from, range, u32_at, u8_at};

/// LINKTYPE_NULL: BSD loopback, 4-byte address family in the capturing host's byte order.
const LINK_NULL: u16 = 0;
/// LINKTYPE_ETHERNET.
const LINK_ETHERNET: u16 = 1;
/// LINKTYPE_RAW: bare IPv4 or IPv6.
const LINK_RAW: u16 = 101;
/// LINKTYPE_LOOP: OpenBSD loopback, address family big-endian.
const LINK_LOOP: u16 = 108;
/// LINKTYPE_LINUX_SLL: Linux "any" interface, 16-byte cooked header.
const LINK_SLL: u16 = 113;
/// LINKTYPE_IPV4: bare IPv4.
const LINK_IPV4: u16 = 228;
/// LINKTYPE_IPV6: bare IPv6.
const LINK_IPV6: u16 = 229;
/// LINKTYPE_LINUX_SLL2: newer Linux cooked header, 20 bytes.
const LINK_SLL2: u16 = 276;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q VLAN tag, 802.1ad QinQ service tag, and the pre-standard QinQ tag.
const ETHERTYPE_VLAN_TAGS: [u16; 3] = [0x8100, 0x88a8, 0x9100];

const IP_PROTO_UDP: u8 = 17;
const UDP_HEADER_LEN: usize = 8;
const IPV6_HEADER_LEN: usize = 40;

/// What one frame turned out to be.
#[derive(Debug, PartialEq)]
pub(super) enum Outcome<'a> {
    /// A complete UDP datagram.
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        payload: &'a [u8],
    },
    /// Not UDP over IP.
    NonUdp,
    /// A UDP datagram's IP fragment.
    Fragment,
    /// Headers cut short or inconsistent.
    Malformed,
    /// A link type this module cannot decode.
    UnsupportedLink,
}

/// Which IP versions a link layer said may follow.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Network {
    V4,
    V6,
    /// Raw IP: the version nibble decides.
    Either,
}

/// Whether frames of `link_type` can be decoded.
pub fn is_supported_link_type(link_type: u16) -> bool {
    matches!(
        link_type,
        LINK_NULL
            | LINK_ETHERNET
            | LINK_RAW
            | LINK_LOOP
            | LINK_SLL
            | LINK_IPV4
            | LINK_IPV6
            | LINK_SLL2
    )
}

/// The tcpdump.org name of a link type, for error messages and summaries ("unknown" if we have
/// no name for it).
pub fn link_type_name(link_type: u16) -> &'static str {
    match link_type {
        0 => "NULL (BSD loopback)",
        1 => "ETHERNET",
        9 => "PPP",
        10 => "FDDI",
        50 => "PPP_HDLC",
        101 => "RAW (IP)",
        105 => "IEEE802_11 (Wi-Fi)",
        108 => "LOOP (OpenBSD loopback)",
        113 => "LINUX_SLL (Linux cooked)",
        127 => "IEEE802_11_RADIOTAP (Wi-Fi with radiotap)",
        189 => "USB_LINUX",
        192 => "PPI",
        220 => "USB_LINUX_MMAPPED",
        228 => "IPV4",
        229 => "IPV6",
        239 => "NFLOG",
        249 => "USBPCAP",
        252 => "WIRESHARK_UPPER_PDU",
        276 => "LINUX_SLL2 (Linux cooked v2)",
        147..=162 => "USER (private)",
        _ => "unknown",
    }
}

/// Decodes a frame captured on a `link_type` interface.
pub(super) fn decode(link_type: u16, frame: &[u8]) -> Outcome<'_> {
    match link_layer(link_type, frame) {
        LinkPayload::Ip(network, packet) => ip(network, packet),
        LinkPayload::NotIp => Outcome::NonUdp,
        LinkPayload::Malformed => Outcome::Malformed,
        LinkPayload::Unsupported => Outcome::UnsupportedLink,
    }
}

/// What the link layer carries.
enum LinkPayload<'a> {
    Ip(Network, &'a [u8]),
    NotIp,
    Malformed,
    Unsupported,
}

/// Strips the link-layer header.
fn link_layer(link_type: u16, frame: &[u8]) -> LinkPayload<'_> {
    match link_type {
        LINK_ETHERNET => ethernet(frame),
        LINK_NULL | LINK_LOOP => loopback(frame),
        LINK_RAW => LinkPayload::Ip(Network::Either, frame),
        LINK_IPV4 => LinkPayload::Ip(Network::V4, frame),
        LINK_IPV6 => LinkPayload::Ip(Network::V6, frame),
        LINK_SLL => by_ethertype(be_u16(frame, 14), from(frame, 16)),
        LINK_SLL2 => by_ethertype(be_u16(frame, 0), from(frame, 20)),
        _ => LinkPayload::Unsupported,
    }
}

/// Ethernet II, skipping any number of VLAN tags (each is 4 bytes, so the loop ends with the
/// frame). 802.3 frames with an LLC header are not IP for our purposes.
fn ethernet(frame: &[u8]) -> LinkPayload<'_> {
    let mut type_at: usize = 12;
    loop {
        let Some(ethertype) = be_u16(frame, type_at) else {
            return LinkPayload::Malformed;
        };
        let Some(next) = type_at.checked_add(2) else {
            return LinkPayload::Malformed;
        };
        if !ETHERTYPE_VLAN_TAGS.contains(&ethertype) {
            return by_ethertype(Some(ethertype), from(frame, next));
        }
        // Skip the tag's 2-byte TCI; the inner EtherType follows.
        let Some(inner) = next.checked_add(2) else {
            return LinkPayload::Malformed;
        };
        type_at = inner;
    }
}

/// Maps an EtherType (also used by Linux cooked headers) to the IP version it announces.
fn by_ethertype<'a>(ethertype: Option<u16>, rest: Option<&'a [u8]>) -> LinkPayload<'a> {
    let (Some(ethertype), Some(rest)) = (ethertype, rest) else {
        return LinkPayload::Malformed;
    };
    match ethertype {
        ETHERTYPE_IPV4 => LinkPayload::Ip(Network::V4, rest),
        ETHERTYPE_IPV6 => LinkPayload::Ip(Network::V6, rest),
        _ => LinkPayload::NotIp,
    }
}

/// BSD/OpenBSD loopback: a 4-byte address family. Its byte order is the capturing host's, and
/// the IPv6 value differs between BSDs (24, 28, 30) and Linux (10), so both orders and all
/// values are accepted.
fn loopback(frame: &[u8]) -> LinkPayload<'_> {
    let (Some(le), Some(be), Some(rest)) = (
        u32_at(frame, 0, false),
        u32_at(frame, 0, true),
        from(frame, 4),
    ) else {
        return LinkPayload::Malformed;
    };
    let family = |value: u32| match value {
        2 => Some(Network::V4),
        10 | 24 | 28 | 30 => Some(Network::V6),
        _ => None,
    };
    match family(le).or_else(|| family(be)) {
        Some(network) => LinkPayload::Ip(network, rest),
        None => LinkPayload::NotIp,
    }
}

/// Dispatches on the IP version nibble, checking it against what the link layer announced.
fn ip(network: Network, packet: &[u8]) -> Outcome<'_> {
    let Some(first) = u8_at(packet, 0) else {
        return Outcome::Malformed;
    };
    match (first >> 4, network) {
        (4, Network::V4 | Network::Either) => ipv4(packet),
        (6, Network::V6 | Network::Either) => ipv6(packet),
        _ => Outcome::Malformed,
    }
}

/// IPv4: header length and total length bound the payload (Ethernet padding after it is
/// dropped); fragments of UDP datagrams are reported, not reassembled.
fn ipv4(packet: &[u8]) -> Outcome<'_> {
    let (Some(first), Some(total_len), Some(flags_offset), Some(protocol)) = (
        u8_at(packet, 0),
        be_u16(packet, 2),
        be_u16(packet, 6),
        u8_at(packet, 9),
    ) else {
        return Outcome::Malformed;
    };
    let header_len = usize::from(first & 0x0f).saturating_mul(4);
    let total_len = usize::from(total_len);
    let (Some(src), Some(dst)) = (array::<4>(packet, 12), array::<4>(packet, 16)) else {
        return Outcome::Malformed;
    };
    if header_len < 20 || total_len < header_len {
        return Outcome::Malformed;
    }
    let Some(body) = range(packet, header_len, total_len) else {
        return Outcome::Malformed;
    };
    if protocol != IP_PROTO_UDP {
        return Outcome::NonUdp;
    }
    let more_fragments = flags_offset & 0x2000 != 0;
    let fragment_offset = flags_offset & 0x1fff;
    if more_fragments || fragment_offset != 0 {
        return Outcome::Fragment;
    }
    udp(
        IpAddr::V4(Ipv4Addr::from(src)),
        IpAddr::V4(Ipv4Addr::from(dst)),
        body,
    )
}

/// IPv6: the payload length bounds the payload; extension headers are walked to find UDP.
fn ipv6(packet: &[u8]) -> Outcome<'_> {
    let (Some(payload_len), Some(next_header), Some(src), Some(dst)) = (
        be_u16(packet, 4),
        u8_at(packet, 6),
        array::<16>(packet, 8),
        array::<16>(packet, 24),
    ) else {
        return Outcome::Malformed;
    };
    let end = IPV6_HEADER_LEN.saturating_add(usize::from(payload_len));
    let Some(body) = range(packet, IPV6_HEADER_LEN, end) else {
        return Outcome::Malformed;
    };
    match ipv6_upper_layer(next_header, body) {
        Ok(udp_bytes) => udp(
            IpAddr::V6(Ipv6Addr::from(src)),
            IpAddr::V6(Ipv6Addr::from(dst)),
            udp_bytes,
        ),
        Err(outcome) => outcome,
    }
}

/// Follows IPv6 extension headers to a UDP header. Each header is at least 8 bytes, so the walk
/// ends with the packet. A Fragment header that really fragments is reported as a fragment when
/// it carries UDP; an "atomic" one (offset 0, no more fragments) is skipped like any other.
fn ipv6_upper_layer(mut next_header: u8, mut rest: &[u8]) -> Result<&[u8], Outcome<'static>> {
    loop {
        let header_len = match next_header {
            IP_PROTO_UDP => return Ok(rest),
            // Hop-by-hop, Routing, Destination options, Mobility, HIP, Shim6: (len + 1) * 8.
            0 | 43 | 60 | 135 | 139 | 140 => {
                let len = u8_at(rest, 1).ok_or(Outcome::Malformed)?;
                usize::from(len).saturating_add(1).saturating_mul(8)
            }
            // Authentication header: (len + 2) * 4.
            51 => {
                let len = u8_at(rest, 1).ok_or(Outcome::Malformed)?;
                usize::from(len).saturating_add(2).saturating_mul(4)
            }
            44 => {
                let offset_flags = be_u16(rest, 2).ok_or(Outcome::Malformed)?;
                let inner = u8_at(rest, 0).ok_or(Outcome::Malformed)?;
                if offset_flags & 0xfff9 != 0 {
                    return Err(if inner == IP_PROTO_UDP {
                        Outcome::Fragment
                    } else {
                        Outcome::NonUdp
                    });
                }
                8
            }
            _ => return Err(Outcome::NonUdp),
        };
        next_header = u8_at(rest, 0).ok_or(Outcome::Malformed)?;
        rest = from(rest, header_len).ok_or(Outcome::Malformed)?;
    }
}

/// UDP: the length field bounds the payload.
fn udp(src_ip: IpAddr, dst_ip: IpAddr, segment: &[u8]) -> Outcome<'_> {
    let (Some(src_port), Some(dst_port), Some(length)) =
        (be_u16(segment, 0), be_u16(segment, 2), be_u16(segment, 4))
    else {
        return Outcome::Malformed;
    };
    let Some(payload) = range(segment, UDP_HEADER_LEN, usize::from(length)) else {
        return Outcome::Malformed;
    };
    Outcome::Udp {
        src: SocketAddr::new(src_ip, src_port),
        dst: SocketAddr::new(dst_ip, dst_port),
        payload,
    }
}
