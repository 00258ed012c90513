use bytes::{Buf, Bytes, BytesMut};

use super::packet::{
    Header, Packet, BREAKIN_BYTE, CONTROL_LEADER, DATA_LEADER, HEADER_LEN, MAX_PAYLOAD, TRAILER,
};
use crate::Error;

/// What the deframer found in the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeframeEvent {
    /// A complete packet that passed the length, checksum and trailer checks.
    Packet(Packet),
    /// A lone 0x62 between packets: the host asks the target to stop (kd.md §1.5, §2.7).
    BreakIn,
    /// A data packet arrived damaged; the receiver answers with RESEND (kd.md §1.5).
    Resend(Error),
    /// A packet the receiver drops without answering, such as an unknown control type.
    Ignored(Error),
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Looking for four identical leader bytes; `run` counts the current run of `leader_byte`.
    Scanning { leader_byte: u8, run: u8 },
    /// Leader seen; waiting for the remaining 12 header bytes.
    Header { leader: u32 },
    /// Header accepted; waiting for the payload (and the trailer).
    Payload { header: Header },
}

const SCANNING: State = State::Scanning {
    leader_byte: 0,
    run: 0,
};

/// Turns a KDCOM byte stream (serial port, VM pipe, TCP) into packets.
///
/// It never needs more than one packet of buffered input, survives reads split anywhere, skips
/// garbage between packets, and turns damaged data packets into a [`DeframeEvent::Resend`] rather
/// than an error, because on a serial line damage is routine. The events do not depend on how
/// the stream was split.
#[derive(Debug)]
pub struct Deframer {
    buffer: BytesMut,
    state: State,
    max_payload: usize,
    garbage_bytes: u64,
}

impl Default for Deframer {
    fn default() -> Self {
        Self::new()
    }
}

impl Deframer {
    pub fn new() -> Self {
        Self::with_max_payload(MAX_PAYLOAD)
    }

    /// A deframer that refuses payloads above `max_payload` (at most [`MAX_PAYLOAD`]).
    pub fn with_max_payload(max_payload: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            state: SCANNING,
            max_payload: max_payload.min(MAX_PAYLOAD),
            garbage_bytes: 0,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes skipped while looking for a leader (noise, a peer's boot messages, torn packets).
    pub fn garbage_bytes(&self) -> u64 {
        self.garbage_bytes
    }

    /// True while part of a packet has been read but not all of it.
    pub fn is_mid_packet(&self) -> bool {
        !matches!(self.state, State::Scanning { run: 0, .. })
    }

    /// Drops a partially received packet, e.g. when the caller's read timeout expires in the middle
    /// of one (kd.md §1.5: the retry logic above decides what happens next).
    pub fn abandon_partial(&mut self) {
        self.state = SCANNING;
    }

    /// Returns the next event, or `None` when more bytes are needed.
    pub fn poll(&mut self) -> Option<DeframeEvent> {
        loop {
            match self.state {
                State::Scanning { leader_byte, run } => {
                    if let Some(event) = self.scan(leader_byte, run) {
                        return Some(event);
                    }
                    if matches!(self.state, State::Scanning { .. }) {
                        return None;
                    }
                }
                State::Header { leader } => {
                    if self.buffer.len() < HEADER_LEN - 4 {
                        return None;
                    }
                    let mut raw = [0u8; HEADER_LEN];
                    raw[..4].copy_from_slice(&leader.to_le_bytes());
                    raw[4..].copy_from_slice(&self.buffer[..HEADER_LEN - 4]);
                    self.buffer.advance(HEADER_LEN - 4);
                    let header = Header::parse(&raw);
                    if let Some(event) = self.accept_header(header) {
                        return Some(event);
                    }
                }
                State::Payload { header } => {
                    let needed = usize::from(header.byte_count) + 1;
                    if self.buffer.len() < needed {
                        return None;
                    }
                    let payload = self.buffer.split_to(needed - 1).freeze();
                    let trailer = self.buffer.get_u8();
                    self.state = SCANNING;
                    return Some(Self::finish_data(header, payload, trailer));
                }
            }
        }
    }

    /// Consumes bytes until a leader run completes (state changes) or a break-in byte is seen.
    fn scan(&mut self, mut leader_byte: u8, mut run: u8) -> Option<DeframeEvent> {
        while self.buffer.has_remaining() {
            let byte = self.buffer.get_u8();
            match byte {
                0x30 | 0x69 if byte == leader_byte => run += 1,
                0x30 | 0x69 => {
                    self.garbage_bytes += u64::from(run);
                    leader_byte = byte;
                    run = 1;
                }
                _ => {
                    self.garbage_bytes += u64::from(run);
                    leader_byte = 0;
                    run = 0;
                    if byte == BREAKIN_BYTE {
                        self.state = SCANNING;
                        return Some(DeframeEvent::BreakIn);
                    }
                    self.garbage_bytes += 1;
                }
            }
            if run == 4 {
                self.state = State::Header {
                    leader: u32::from_le_bytes([byte; 4]),
                };
                return None;
            }
        }
        self.state = State::Scanning { leader_byte, run };
        None
    }

    fn accept_header(&mut self, header: Header) -> Option<DeframeEvent> {
        self.state = SCANNING;
        if let Err(error) = header.validate() {
            // A damaged data header is answered with RESEND; a bad control packet is dropped.
            return Some(match header.leader {
                DATA_LEADER => DeframeEvent::Resend(error),
                _ => DeframeEvent::Ignored(error),
            });
        }
        if header.leader == CONTROL_LEADER {
            return Some(DeframeEvent::Packet(Packet::control(
                header.packet_type,
                header.id,
            )));
        }
        if usize::from(header.byte_count) > self.max_payload {
            return Some(DeframeEvent::Resend(Error::Oversize(usize::from(
                header.byte_count,
            ))));
        }
        self.state = State::Payload { header };
        None
    }

    fn finish_data(header: Header, payload: Bytes, trailer: u8) -> DeframeEvent {
        if let Err(error) = header.check_payload(&payload) {
            return DeframeEvent::Resend(error);
        }
        if trailer != TRAILER {
            return DeframeEvent::Resend(Error::BadTrailer(trailer));
        }
        DeframeEvent::Packet(Packet::data(header.packet_type, header.id, payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kd::{Framing, PacketType};

    fn serial(packet: &Packet) -> Vec<u8> {
        packet.to_bytes(Framing::Serial).unwrap().to_vec()
    }

    fn drain(deframer: &mut Deframer) -> Vec<DeframeEvent> {
        std::iter::from_fn(|| deframer.poll()).collect()
    }

    fn manipulate(id: u32) -> Packet {
        Packet::data(
            PacketType::StateManipulate,
            id,
            vec![0x46, 0x31, 0, 0, 1, 2, 3],
        )
    }

    #[test]
    fn garbage_between_packets_is_skipped_and_counted() {
        let mut stream = b"boot noise \x00\xff000i".to_vec();
        stream.extend(serial(&manipulate(0x8080_0000)));
        stream.extend(b"\x30\x30\x30");
        stream.extend(serial(&Packet::control(
            PacketType::Acknowledge,
            0x8080_0000,
        )));
        let mut deframer = Deframer::new();
        deframer.push(&stream);
        let events = drain(&mut deframer);
        // "boot noise" contains a 'b', which between packets is a break-in request.
        assert_eq!(events[0], DeframeEvent::BreakIn);
        assert_eq!(events[1], DeframeEvent::Packet(manipulate(0x8080_0000)));
        assert_eq!(
            events[2],
            DeframeEvent::Packet(Packet::control(PacketType::Acknowledge, 0x8080_0000))
        );
        assert_eq!(events.len(), 3);
        assert!(deframer.garbage_bytes() >= 13);
    }

    #[test]
    fn a_bad_checksum_asks_for_a_resend_and_the_stream_recovers() {
        let mut bad = serial(&manipulate(1));
        bad[16] ^= 0x01;
        bad.extend(serial(&manipulate(2)));
        let mut deframer = Deframer::new();
        deframer.push(&bad);
        let events = drain(&mut deframer);
        assert!(matches!(
            events[0],
            DeframeEvent::Resend(Error::BadChecksum { .. })
        ));
        assert_eq!(events[1], DeframeEvent::Packet(manipulate(2)));
    }

    #[test]
    fn a_missing_trailer_asks_for_a_resend() {
        let mut bad = serial(&manipulate(1));
        *bad.last_mut().unwrap() = 0x00;
        let mut deframer = Deframer::new();
        deframer.push(&bad);
        assert_eq!(
            drain(&mut deframer),
            vec![DeframeEvent::Resend(Error::BadTrailer(0))]
        );
    }

    #[test]
    fn an_oversize_byte_count_asks_for_a_resend_without_buffering_it() {
        let mut header = serial(&manipulate(1))[..16].to_vec();
        header[6..8].copy_from_slice(&4001u16.to_le_bytes());
        let mut deframer = Deframer::new();
        deframer.push(&header);
        assert_eq!(
            drain(&mut deframer),
            vec![DeframeEvent::Resend(Error::Oversize(4001))]
        );
        assert!(!deframer.is_mid_packet());
    }

    #[test]
    fn a_configured_limit_below_4000_is_enforced() {
        let big = Packet::data(PacketType::StateManipulate, 1, vec![0u8; 2000]);
        let mut deframer = Deframer::with_max_payload(1000);
        deframer.push(&serial(&big));
        assert_eq!(
            deframer.poll(),
            Some(DeframeEvent::Resend(Error::Oversize(2000)))
        );
    }

    #[test]
    fn an_unknown_control_type_is_ignored() {
        let mut raw = serial(&Packet::control(PacketType::Acknowledge, 0));
        raw[4] = 9;
        let mut deframer = Deframer::new();
        deframer.push(&raw);
        assert_eq!(
            drain(&mut deframer),
            vec![DeframeEvent::Ignored(Error::UnknownControlType(9))]
        );
    }

    #[test]
    fn a_break_in_byte_inside_a_packet_is_data() {
        let packet = Packet::data(PacketType::DebugIo, 7, b"bbbb".to_vec());
        let mut deframer = Deframer::new();
        deframer.push(&serial(&packet));
        assert_eq!(drain(&mut deframer), vec![DeframeEvent::Packet(packet)]);
    }

    #[test]
    fn abandoning_a_partial_packet_resumes_scanning() {
        let raw = serial(&manipulate(3));
        let mut deframer = Deframer::new();
        deframer.push(&raw[..20]);
        assert_eq!(deframer.poll(), None);
        assert!(deframer.is_mid_packet());
        deframer.abandon_partial();
        deframer.push(&raw);
        // The 20 stale bytes are scanned as garbage, then the whole packet is found.
        let events = drain(&mut deframer);
        assert_eq!(events.last(), Some(&DeframeEvent::Packet(manipulate(3))));
    }
}
