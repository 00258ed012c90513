//! The KD reliability layer as a sans-IO state machine (kd.md §1.4, §2; kdnet.md §4.3).
//!
//! One [`Link`] type serves host and target. The caller feeds it what arrived
//! ([`Link::receive`]), sends what it asks for ([`Link::poll_transmit`]), reads what happened
//! ([`Link::poll_event`]), and tells it when its deadline ([`Link::poll_timeout`]) has passed
//! ([`Link::handle_timeout`]). It never reads a clock: every instant is an argument, so tests drive
//! two links against each other with loss and reordering and no sleeps.
//!
//! KD is stop-and-wait: one data packet is in flight until its ACK arrives; later sends queue.

mod ids;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use crate::Role;
pub use ids::{Dialect, KDNET_HOST_FIRST_ID};
use ids::{IdCounter, RemoteIds, Verdict};

use crate::kd::{DeframeEvent, Deframer, Framing, Packet, PacketType, BREAKIN_BYTE, MAX_PAYLOAD};
use crate::{Error, Result};

/// How a link behaves. Build with [`LinkConfig::host`] or [`LinkConfig::target`] and adjust.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub role: Role,
    pub dialect: Dialect,
    pub framing: Framing,
    /// Wait this long for an ACK before sending the packet again. WinDbg re-sends after ~0.5 s
    /// (kdnet.md §4.5).
    pub retransmit_timeout: Duration,
    /// Give up on a packet after this many transmissions; `None` retries forever, as a real target
    /// does for state changes and replies (kd.md §2.5).
    pub max_attempts: Option<u32>,
    /// Reject data packets whose id is not the next one the dialect allows, as a real KDCOM
    /// target does (kd.md §1.4 rule 4). Tolerant mode accepts either dialect's numbering.
    pub strict: bool,
    /// Largest payload accepted from the peer (at most 4000).
    pub max_payload: usize,
}

impl LinkConfig {
    /// The debugger side: ~0.5 s retransmits, bounded attempts, tolerant of either id scheme.
    pub fn host(dialect: Dialect, framing: Framing) -> Self {
        Self {
            role: Role::Host,
            dialect,
            framing,
            retransmit_timeout: Duration::from_millis(500),
            // ntoseye: 5 attempts on KDCOM, 24 on KDNET (kd.md §2.4, kdnet.md §4.3).
            max_attempts: Some(match dialect {
                Dialect::Kdcom => 10,
                Dialect::Kdnet => 24,
            }),
            strict: false,
            max_payload: MAX_PAYLOAD,
        }
    }

    /// The debuggee side: retries forever and checks ids strictly.
    pub fn target(dialect: Dialect, framing: Framing) -> Self {
        Self {
            role: Role::Target,
            max_attempts: None,
            strict: true,
            ..Self::host(dialect, framing)
        }
    }
}

/// Something to put on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    Packet(Packet),
    /// The host's break-in request: one 0x62 byte (a one-byte datagram body over KDNET).
    BreakIn,
}

impl Transmit {
    /// The bytes for a stream, or the body of a KDNET data datagram.
    pub fn to_bytes(&self, framing: Framing) -> Result<Bytes> {
        match self {
            Self::Packet(packet) => packet.to_bytes(framing),
            Self::BreakIn => Ok(Bytes::from_static(&[BREAKIN_BYTE])),
        }
    }
}

/// What the link reports to the layer above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A new data packet from the peer (already ACKed; duplicates are never reported twice).
    Received(Packet),
    /// Our data packet with this id was acknowledged.
    Acknowledged { id: u32, packet_type: PacketType },
    /// The host asked the target to stop (serial break-in byte).
    BreakIn,
    /// The peer sent RESET; ids are resynchronised and any pending packet is being re-sent.
    PeerReset,
    /// The peer restarted its numbering (SYNC id): a rebooted target or a new debugger.
    PeerRestarted,
    /// The peer asked for a resend while nothing was in flight (a target re-sends its state
    /// change then; a host sees this as the answer to a KDNET ping).
    ResendRequested,
    /// A data packet was sent `attempts` times without an ACK and was dropped.
    SendFailed { packet: Packet, attempts: u32 },
    /// Input that broke a rule; counted, and answered with RESEND where the protocol says so.
    Rejected(Error),
}

/// Counters for summaries and strict-mode reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct LinkStats {
    pub data_received: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub acks_sent: u64,
    pub acks_received: u64,
    pub stray_acks: u64,
    pub resends_sent: u64,
    pub resends_received: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    pub retransmits: u64,
    pub send_failures: u64,
    pub rejected: u64,
    pub break_ins: u64,
}

#[derive(Debug)]
struct InFlight {
    packet: Packet,
    attempts: u32,
    deadline: Option<Instant>,
}

/// The reliability state machine. See the module documentation.
#[derive(Debug)]
pub struct Link {
    config: LinkConfig,
    send_ids: IdCounter,
    remote: RemoteIds,
    deframer: Deframer,
    in_flight: Option<InFlight>,
    queue: VecDeque<(PacketType, Bytes)>,
    outbox: VecDeque<Transmit>,
    events: VecDeque<LinkEvent>,
    awaiting_reset_reply: bool,
    stats: LinkStats,
}

impl Link {
    pub fn new(config: LinkConfig) -> Self {
        Self {
            send_ids: IdCounter::new(config.dialect, config.role),
            remote: RemoteIds::new(),
            deframer: Deframer::with_max_payload(config.max_payload),
            in_flight: None,
            queue: VecDeque::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            awaiting_reset_reply: false,
            stats: LinkStats::default(),
            config,
        }
    }

    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// The id the next new data packet will carry.
    pub fn next_packet_id(&self) -> u32 {
        self.send_ids.current()
    }

    /// True when no data packet is in flight or queued.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_none() && self.queue.is_empty()
    }

    /// Queues a data packet. It goes out now if nothing else is in flight.
    pub fn send(&mut self, packet_type: PacketType, payload: Bytes, now: Instant) -> Result<()> {
        if packet_type.is_control() {
            return Err(Error::InvalidField {
                field: "data packet type",
                value: u64::from(packet_type.to_u16()),
            });
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(Error::Oversize(payload.len()));
        }
        self.queue.push_back((packet_type, payload));
        self.start_next(now);
        Ok(())
    }

    /// Sends RESET and restarts numbering; the peer answers with its own RESET (kd.md §1.4 rule 6).
    pub fn send_reset(&mut self, now: Instant) {
        self.queue_reset();
        self.resynchronise();
        self.awaiting_reset_reply = true;
        self.restamp_in_flight(now);
    }

    /// Host only: ask a running target to stop.
    pub fn send_break_in(&mut self) {
        self.outbox.push_back(Transmit::BreakIn);
    }

    /// Forgets everything in flight and starts numbering afresh, as after a new KDNET handshake
    /// or a reconnected stream. A KDNET target keeps its counter (kdnet.md §4.3).
    pub fn restart(&mut self) {
        self.in_flight = None;
        self.queue.clear();
        self.outbox.clear();
        self.awaiting_reset_reply = false;
        self.remote.reset();
        self.deframer = Deframer::with_max_payload(self.config.max_payload);
        if !(self.config.dialect == Dialect::Kdnet && self.config.role == Role::Target) {
            self.send_ids = IdCounter::new(self.config.dialect, self.config.role);
        }
    }

    /// Feeds received bytes: a chunk of the stream (serial framing) or the KD packet carried by
    /// one KDNET data datagram (datagram framing).
    pub fn receive(&mut self, bytes: &[u8], now: Instant) {
        match self.config.framing {
            Framing::Serial => {
                self.deframer.push(bytes);
                while let Some(event) = self.deframer.poll() {
                    self.handle_deframed(event, now);
                }
            }
            Framing::Datagram => match Packet::parse(bytes, Framing::Datagram) {
                Ok(packet) => self.handle_packet(packet, now),
                Err(error @ (Error::BadLeader(_) | Error::UnknownControlType(_))) => {
                    self.reject(error)
                }
                Err(error) => self.request_resend(error),
            },
        }
    }

    /// Feeds a KDNET break-in datagram (the one-byte body), which bypasses the packet layer.
    pub fn receive_break_in(&mut self) {
        self.stats.break_ins += 1;
        if self.config.role == Role::Target {
            self.events.push_back(LinkEvent::BreakIn);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// When [`Link::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.as_ref().and_then(|f| f.deadline)
    }

    /// Retransmits the in-flight packet whose ACK is overdue, or gives up on it.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(flight) = self.in_flight.as_mut() else {
            return;
        };
        if flight.deadline.is_none_or(|deadline| now < deadline) {
            return;
        }
        if self
            .config
            .max_attempts
            .is_some_and(|max| flight.attempts >= max)
        {
            let flight = self.in_flight.take().expect("checked above");
            self.stats.send_failures += 1;
            self.events.push_back(LinkEvent::SendFailed {
                packet: flight.packet,
                attempts: flight.attempts,
            });
            self.start_next(now);
            return;
        }
        self.retransmit(now);
    }

    fn handle_deframed(&mut self, event: DeframeEvent, now: Instant) {
        match event {
            DeframeEvent::Packet(packet) => self.handle_packet(packet, now),
            DeframeEvent::BreakIn => self.receive_break_in(),
            DeframeEvent::Resend(error) => self.request_resend(error),
            DeframeEvent::Ignored(error) => self.reject(error),
        }
    }

    fn handle_packet(&mut self, packet: Packet, now: Instant) {
        match packet.packet_type {
            PacketType::Acknowledge => self.handle_ack(packet.id, now),
            PacketType::Resend => {
                self.stats.resends_received += 1;
                if self.in_flight.is_some() {
                    self.retransmit(now);
                } else {
                    self.events.push_back(LinkEvent::ResendRequested);
                }
            }
            PacketType::Reset => self.handle_reset(now),
            _ => self.handle_data(packet, now),
        }
    }

    fn handle_ack(&mut self, id: u32, now: Instant) {
        let acknowledged = self
            .in_flight
            .as_ref()
            .is_some_and(|f| IdCounter::acknowledges(self.config.dialect, id, f.packet.id));
        if !acknowledged {
            self.stats.stray_acks += 1;
            return;
        }
        self.stats.acks_received += 1;
        let flight = self.in_flight.take().expect("checked above");
        self.send_ids.advance();
        self.events.push_back(LinkEvent::Acknowledged {
            id: flight.packet.id,
            packet_type: flight.packet.packet_type,
        });
        self.start_next(now);
    }

    fn handle_reset(&mut self, now: Instant) {
        self.stats.resets_received += 1;
        if self.awaiting_reset_reply {
            self.awaiting_reset_reply = false;
        } else {
            self.resynchronise();
            self.queue_reset();
        }
        self.events.push_back(LinkEvent::PeerReset);
        if self.in_flight.is_some() {
            self.restamp_in_flight(now);
            self.retransmit(now);
        }
    }

    fn handle_data(&mut self, packet: Packet, now: Instant) {
        self.stats.acks_sent += 1;
        let ack_id = IdCounter::ack_id(self.config.dialect, packet.id);
        self.outbox.push_back(Transmit::Packet(Packet::control(
            PacketType::Acknowledge,
            ack_id,
        )));
        match self.remote.judge(
            self.config.dialect,
            packet.id,
            &packet.payload,
            self.config.strict,
        ) {
            Verdict::Duplicate => self.stats.duplicates += 1,
            Verdict::OutOfOrder => {
                self.stats.out_of_order += 1;
                self.reject(Error::InvalidField {
                    field: "packet id (out of order)",
                    value: u64::from(packet.id),
                });
            }
            verdict @ (Verdict::New | Verdict::PeerRestarted) => {
                if verdict == Verdict::PeerRestarted {
                    self.events.push_back(LinkEvent::PeerRestarted);
                    if self.config.role == Role::Host {
                        // A restarted target expects INITIAL from us again (kd.md §1.4 rule 5).
                        self.send_ids = IdCounter::new(self.config.dialect, Role::Host);
                        self.restamp_in_flight(now);
                    }
                }
                self.stats.data_received += 1;
                self.events.push_back(LinkEvent::Received(packet));
            }
        }
    }

    /// KDCOM control packets carry id 0; over KDNET, WinDbg's RESET and the target's answer both
    /// carry the sender's next id (kdnet.md §4.3). A KDNET RESET never changes that id.
    fn queue_reset(&mut self) {
        let id = match self.config.dialect {
            Dialect::Kdcom => 0,
            Dialect::Kdnet => self.send_ids.current(),
        };
        self.stats.resets_sent += 1;
        self.outbox
            .push_back(Transmit::Packet(Packet::control(PacketType::Reset, id)));
    }

    fn request_resend(&mut self, error: Error) {
        self.stats.resends_sent += 1;
        self.outbox
            .push_back(Transmit::Packet(Packet::control(PacketType::Resend, 0)));
        self.reject(error);
    }

    fn reject(&mut self, error: Error) {
        self.stats.rejected += 1;
        self.events.push_back(LinkEvent::Rejected(error));
    }

    fn resynchronise(&mut self) {
        self.send_ids.reset();
        self.remote.reset();
    }

    /// Gives the in-flight packet the current id after numbering changed under it.
    fn restamp_in_flight(&mut self, now: Instant) {
        let id = self.send_ids.current();
        if let Some(flight) = self.in_flight.as_mut() {
            flight.packet.id = id;
            flight.attempts = 0;
            flight.deadline = Some(now + self.config.retransmit_timeout);
        }
    }

    fn start_next(&mut self, now: Instant) {
        if self.in_flight.is_some() {
            return;
        }
        let Some((packet_type, payload)) = self.queue.pop_front() else {
            return;
        };
        let packet = Packet::data(packet_type, self.send_ids.current(), payload);
        self.in_flight = Some(InFlight {
            packet,
            attempts: 0,
            deadline: None,
        });
        self.transmit_in_flight(now);
    }

    fn retransmit(&mut self, now: Instant) {
        self.stats.retransmits += 1;
        self.transmit_in_flight(now);
    }

    fn transmit_in_flight(&mut self, now: Instant) {
        if let Some(flight) = self.in_flight.as_mut() {
            flight.attempts += 1;
            flight.deadline = Some(now + self.config.retransmit_timeout);
            self.outbox
                .push_back(Transmit::Packet(flight.packet.clone()));
        }
    }
}
