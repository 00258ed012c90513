//! `kdleak decode`: explains a KDNET capture datagram by datagram, for users debugging a setup.
//!
//! The decoder replays the capture's handshakes to follow the data key (kdnet.md §2.3), opens
//! every datagram (authenticating it before reading anything inside), and describes the KD packet
//! and DbgKd message it carries. Datagrams that fail authentication are kept in the output, marked,
//! and counted, so a wrong key shows up as exactly that.

mod describe;
mod render;

use std::path::Path;

use bytes::Bytes;
use kdproto::kd::{Framing, Packet};
use kdproto::kdnet::{self, Channel, ControlMessage, DataBody, Direction, Key, Keys};
use serde::Serialize;

use crate::capture::{self, CaptureError, UdpDatagram};
pub use describe::KdDescription;
pub use render::{write_json, write_text};

/// Everything the decoder learned from one capture.
#[derive(Debug, Serialize)]
pub struct Decoded {
    #[serde(flatten)]
    pub summary: Summary,
    pub packets: Vec<DecodedDatagram>,
}

/// Counts over the whole capture. `datagrams`, `authenticated` and `auth_failures` are the
/// documented top-level JSON fields.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub datagrams: usize,
    pub authenticated: usize,
    pub auth_failures: usize,
    /// UDP datagrams that are not KDNET at all (no "MDBG" frame).
    pub not_kdnet: usize,
    pub handshakes: usize,
    pub kd_packets: usize,
    /// KD packets inside authentic datagrams that break a KD rule (checksum, length, leader).
    pub kd_errors: usize,
}

impl Summary {
    /// A one-line diagnosis when something is wrong, naming what to check.
    pub fn hint(&self) -> Option<String> {
        let kdnet = self.datagrams - self.not_kdnet;
        if self.auth_failures == 0 {
            return None;
        }
        Some(if self.authenticated == 0 {
            format!(
                "all {kdnet} KDNET datagrams failed authentication: the key is probably wrong \
                 (compare with `bcdedit /dbgsettings` on the target)"
            )
        } else {
            format!(
                "{} of {kdnet} KDNET datagrams failed authentication: traffic from another \
                 debugging session, or a handshake missing from the capture",
                self.auth_failures
            )
        })
    }
}

/// One UDP datagram of the capture and what it carried.
#[derive(Debug, Serialize)]
pub struct DecodedDatagram {
    /// Frame number in the capture file (Wireshark's "No.").
    pub frame: usize,
    /// Seconds since the first datagram.
    pub time: f64,
    pub src: String,
    pub dst: String,
    pub length: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub authenticated: bool,
    pub content: Content,
}

/// What an authenticated datagram carried, or why it could not be read.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Content {
    Poke {
        target: String,
        host: String,
        /// The debugger the target says it is connected to, if any.
        debugger: Option<String>,
    },
    Response,
    ControlOther {
        control_kind: u8,
        length: usize,
    },
    Ping {
        host: String,
    },
    BreakIn,
    Kd(KdDescription),
    /// An authentic datagram whose KD packet breaks a rule.
    KdError {
        error: String,
    },
    /// Not decrypted: wrong key, no data key yet, or not KDNET at all.
    Unreadable {
        error: String,
    },
}

/// Reads and decodes a capture file.
pub fn decode_file(path: &Path, key: &Key) -> Result<Decoded, CaptureError> {
    let capture = capture::read_udp_datagrams(path)?;
    Ok(decode_datagrams(&capture.datagrams, key))
}

/// Decodes datagrams in capture order, following handshakes as they happen.
pub fn decode_datagrams(datagrams: &[UdpDatagram], key: &Key) -> Decoded {
    let mut keys = Keys::new(key.clone());
    let mut summary = Summary::default();
    let start = datagrams.first().map_or(0.0, |d| d.time);
    let packets = datagrams
        .iter()
        .map(|udp| {
            let decoded = decode_one(udp, start, &mut keys, &mut summary);
            summary.datagrams += 1;
            decoded
        })
        .collect();
    Decoded { summary, packets }
}

fn decode_one(
    udp: &UdpDatagram,
    start: f64,
    keys: &mut Keys,
    summary: &mut Summary,
) -> DecodedDatagram {
    let mut decoded = DecodedDatagram {
        frame: udp.index,
        time: udp.time - start,
        src: udp.src.to_string(),
        dst: udp.dst.to_string(),
        length: udp.payload.len(),
        version: None,
        channel: None,
        direction: None,
        seq: None,
        authenticated: false,
        content: Content::Response,
    };
    let (version, channel) = match kdnet::peek(&udp.payload) {
        Ok(header) => header,
        Err(error) => {
            summary.not_kdnet += 1;
            decoded.content = Content::Unreadable {
                error: error.to_string(),
            };
            return decoded;
        }
    };
    decoded.version = Some(version);
    decoded.channel = Some(channel_name(channel));
    let datagram = match kdnet::open(&udp.payload, keys) {
        Ok(datagram) => datagram,
        Err(error) => {
            summary.auth_failures += 1;
            decoded.content = Content::Unreadable {
                error: error.to_string(),
            };
            return decoded;
        }
    };
    summary.authenticated += 1;
    decoded.authenticated = true;
    decoded.direction = Some(direction_name(datagram.direction));
    decoded.seq = Some(datagram.seq);
    decoded.content = match datagram.channel {
        Channel::Control => describe_control(&datagram.body, keys, summary),
        Channel::Data => describe_data(datagram.body, datagram.direction, summary),
    };
    decoded
}

fn describe_control(body: &Bytes, keys: &mut Keys, summary: &mut Summary) -> Content {
    match ControlMessage::parse(body.clone()) {
        Ok(ControlMessage::Poke(poke)) => Content::Poke {
            target: poke.target.to_socket_addr().to_string(),
            host: poke.host.to_socket_addr().to_string(),
            debugger: poke
                .has_debugger()
                .then(|| poke.debugger.to_socket_addr().to_string()),
        },
        Ok(ControlMessage::Response(_)) => {
            // DK = SHA-256(K ‖ Response body) from here on (kdnet.md §2.3).
            let data_key = keys.control().data_key(body);
            keys.set_data_key(data_key);
            summary.handshakes += 1;
            Content::Response
        }
        Ok(ControlMessage::Other { kind, body }) => Content::ControlOther {
            control_kind: kind,
            length: body.len(),
        },
        Err(error) => Content::KdError {
            error: error.to_string(),
        },
    }
}

fn describe_data(body: Bytes, direction: Direction, summary: &mut Summary) -> Content {
    match DataBody::parse(body) {
        DataBody::Ping { host } => Content::Ping {
            host: host.to_string(),
        },
        DataBody::BreakIn => Content::BreakIn,
        DataBody::Kd(bytes) => match Packet::parse(&bytes, Framing::Datagram) {
            Ok(packet) => {
                summary.kd_packets += 1;
                match describe::describe(&packet, direction) {
                    Ok(description) => Content::Kd(description),
                    Err(error) => {
                        summary.kd_errors += 1;
                        Content::KdError {
                            error: error.to_string(),
                        }
                    }
                }
            }
            Err(error) => {
                summary.kd_errors += 1;
                Content::KdError {
                    error: error.to_string(),
                }
            }
        },
    }
}

fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Data => "data",
        Channel::Control => "control",
    }
}

fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::TargetToHost => "target->host",
        Direction::HostToTarget => "host->target",
    }
}
