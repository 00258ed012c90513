//! The async host session: a [`Link`] driven over a [`Transport`] (kd.md §2.3, §2.6, §2.7).
//!
//! * [`Session::attach`] breaks in and waits for the stop.
//! * [`Session::request`] sends one manipulate request and returns its reply.
//! * [`Session::read_virtual`] reads memory in page-safe chunks through a per-stop cache.
//! * [`Session::run_stopped`] runs work while stopped and resumes on every exit path.

mod dr7;
mod error;
mod guard;
mod read;

use std::time::Duration;

use bytes::Bytes;
use kdproto::api::{
    ApiNumber, DebugIo, FileIo, Manipulate, Message, StateChange, StateEvent, Version,
    DBG_CONTINUE, STATUS_UNSUCCESSFUL,
};
use kdproto::kd::{Packet, PacketType};
use kdproto::link::{Dialect, Link, LinkConfig, LinkEvent, Transmit};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, trace, warn, Instrument};

use crate::transport::{Incoming, Transport};
pub use dr7::continue_dr7;
pub use error::{Error, Result};
pub use guard::{shutdown_signal, Interrupt};
use read::{Coverage, ReadCache};
pub use read::{ReadOutcome, MAX_READ};

/// Dr7 a target reports when no hardware breakpoint is set (kd.md §3.6); used for Continue2
/// when the stop carried no control report value.
pub const IDLE_DR7: u64 = 0x400;

/// Session tuning. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Budget for breaking in (default 30 s).
    pub connect_timeout: Duration,
    /// Period of break-in / RESET attempts while attaching (kd.md §2.7: about 1 s).
    pub break_in_interval: Duration,
    /// Link retransmit period when an ACK is overdue (~0.5 s, kdnet.md §4.5).
    pub retransmit: Duration,
    /// Transmissions of one packet before giving up (`None`: the link's default, 10 KDCOM / 24 KDNET).
    pub max_attempts: Option<u32>,
    /// Overall limit for one request, reply included (default 10 s).
    pub request_timeout: Duration,
    /// Limit for the resume (Continue2 and its ACK), default 15 s.
    pub resume_timeout: Duration,
    /// Largest memory read per request; rounded down to a power of two and capped at 0x800.
    /// `None`: the transport's default (0x400 KDNET, 0x800 KDCOM).
    pub read_chunk: Option<usize>,
    /// Leave the target stopped when [`Session::run_stopped`] ends.
    pub stay_broken: bool,
    /// Limit for the work inside [`Session::run_stopped`] (`--timeout`).
    pub overall_timeout: Option<Duration>,
    /// Resume and stop on SIGINT/SIGTERM inside [`Session::run_stopped`].
    pub handle_signals: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(30),
            break_in_interval: Duration::from_secs(1),
            retransmit: Duration::from_millis(500),
            max_attempts: None,
            request_timeout: Duration::from_secs(10),
            resume_timeout: Duration::from_secs(15),
            read_chunk: None,
            stay_broken: false,
            overall_timeout: None,
            handle_signals: true,
        }
    }
}

/// What the target reported when it stopped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StopInfo {
    /// NewState (0x3030 exception, 0x3031 load symbols, 0x3032 command string).
    pub new_state: u32,
    pub processor: u16,
    /// NumberProcessors (0 read as 1, as ntoseye does).
    pub number_processors: u32,
    #[serde(serialize_with = "crate::kernel::serde_hex::u64")]
    pub thread: u64,
    #[serde(serialize_with = "crate::kernel::serde_hex::u64")]
    pub program_counter: u64,
    /// The exception code for exception stops (0x80000003 for a break-in).
    pub exception_code: Option<u32>,
    /// Dr7 from the control report; echoed by the resume so debug registers stay as they were.
    #[serde(serialize_with = "crate::kernel::serde_hex::u64")]
    pub dr7: u64,
}

impl StopInfo {
    fn from_state_change(sc: &StateChange) -> Self {
        Self {
            new_state: sc.new_state.0,
            processor: sc.processor,
            number_processors: sc.number_processors.max(1),
            thread: sc.thread,
            program_counter: sc.program_counter,
            exception_code: match &sc.event {
                StateEvent::Exception(e) => Some(e.code),
                _ => None,
            },
            dr7: sc.control_report.dr7,
        }
    }
}

/// Counters for summaries.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SessionStats {
    pub requests: u64,
    /// Memory bytes the target sent in read replies.
    pub bytes_read: u64,
    /// Memory bytes callers asked for, each byte counted once per stop.
    #[serde(default)]
    pub bytes_needed: u64,
    pub cache_hits: u64,
    pub stale_replies: u64,
    /// Memory reads the target never answered, retried at a smaller size.
    #[serde(default)]
    pub unanswered_reads: u64,
    pub bytes_in: u64,
    /// KD bytes sent (packet headers and payloads, break-in bytes), as framed by the link.
    #[serde(default)]
    pub bytes_out: u64,
}

/// A host session with a target. See the module documentation.
pub struct Session {
    link: Link,
    transport: Transport,
    options: SessionOptions,
    stop: Option<StopInfo>,
    cache: ReadCache,
    /// What this stop's callers asked for (the denominator of read efficiency).
    needed: Coverage,
    /// Bytes per read request: [`MAX_READ`] or `--chunk`, lowered when the target clips.
    read_size: usize,
    /// Where the last read ended: a read starting there is sequential and may read ahead.
    last_read_end: u64,
    /// Where the last read started: a read ending there reads backwards (the log, newest
    /// first) and may read behind its start.
    last_read_start: u64,
    /// [`Session::request_floor`] of the stops before this one.
    floor_before: u64,
    debug_output: Vec<String>,
    restarted: bool,
    stats: SessionStats,
}

fn std_now() -> std::time::Instant {
    std::time::Instant::now()
}

impl Session {
    /// Wraps an open transport without breaking in (for tests and for callers that attach later).
    pub fn new(transport: Transport, options: SessionOptions) -> Self {
        let mut config = LinkConfig::host(transport.dialect(), transport.framing());
        config.retransmit_timeout = options.retransmit;
        if options.max_attempts.is_some() {
            config.max_attempts = options.max_attempts;
        }
        let read_size = options
            .read_chunk
            .unwrap_or(MAX_READ)
            .clamp(read::MIN_READ, MAX_READ);
        Self {
            link: Link::new(config),
            transport,
            cache: ReadCache::default(),
            needed: Coverage::default(),
            read_size,
            last_read_end: 0,
            last_read_start: 0,
            floor_before: 0,
            options,
            stop: None,
            debug_output: Vec::new(),
            restarted: false,
            stats: SessionStats::default(),
        }
    }

    /// Opens a session and breaks in: KDNET sends 'b' every `break_in_interval`; streams
    /// alternate 'b' and RESET (kd.md §2.6) until a STATE_CHANGE64 arrives or
    /// `connect_timeout` passes.
    pub async fn attach(transport: Transport, options: SessionOptions) -> Result<Self> {
        let mut session = Self::new(transport, options);
        session.break_in().await?;
        Ok(session)
    }

    pub fn options(&self) -> &SessionOptions {
        &self.options
    }

    /// The current stop, if the target is stopped.
    pub fn stop(&self) -> Option<&StopInfo> {
        self.stop.as_ref()
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.is_some()
    }

    /// DbgPrint text the target sent (DEBUG_IO PrintString), in order.
    pub fn debug_output(&self) -> &[String] {
        &self.debug_output
    }

    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// The fewest requests that could have read what the callers asked for and nothing else:
    /// each contiguous extent of the asked-for bytes in requests of the read size (a request
    /// reads one contiguous range; at each stop's end its extents are counted at the read size
    /// of the time). `bytes_needed` ÷ read size is lower when the extents are apart (tracker
    /// pages 4 KiB long and scattered through the pool take 4 requests of 1360 bytes each,
    /// not 3.01).
    pub fn request_floor(&self) -> u64 {
        self.floor_before + self.needed.request_floor(self.read_size as u64)
    }

    /// The stop is over: its asked-for extents go into [`Session::request_floor`].
    fn end_coverage(&mut self) {
        self.floor_before += self.needed.request_floor(self.read_size as u64);
        self.needed.clear();
    }

    pub fn link_stats(&self) -> &kdproto::link::LinkStats {
        self.link.stats()
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Bytes per read request now (it drops when the target clips reads).
    pub fn read_chunk(&self) -> usize {
        self.read_size
    }

    /// Breaks in (see [`Session::attach`]). Does nothing if already stopped.
    pub async fn break_in(&mut self) -> Result<()> {
        if self.stop.is_some() {
            return Ok(());
        }
        self.restarted = false;
        let started = Instant::now();
        let deadline = started + self.options.connect_timeout;
        let mut round = 0u32;
        let mut next_kick = started;
        loop {
            let now = Instant::now();
            if now >= next_kick {
                match self.link.config().dialect {
                    Dialect::Kdnet => self.link.send_break_in(),
                    // Round 0: 'b' then RESET (kd.md §2.6 steps 2-3); then alternate.
                    Dialect::Kdcom => {
                        if round % 2 == 0 {
                            self.link.send_break_in();
                        }
                        if round == 0 || round % 2 == 1 {
                            self.link.send_reset(std_now());
                        }
                    }
                }
                debug!(round, "break-in attempt");
                round += 1;
                next_kick = now + self.options.break_in_interval;
            }
            match self.next_event(next_kick.min(deadline)).await? {
                Some(LinkEvent::Received(packet)) => {
                    self.on_packet(packet);
                    if let Some(stop) = &self.stop {
                        info!(
                            processor = stop.processor,
                            pc = format_args!("{:#x}", stop.program_counter),
                            "target stopped"
                        );
                        self.restarted = false;
                        return Ok(());
                    }
                }
                Some(event) => debug!(?event, "link event while attaching"),
                None if Instant::now() >= deadline => {
                    return Err(Error::AttachTimeout(self.attach_timeout_message(round)))
                }
                None => {}
            }
        }
    }

    /// After an attach was abandoned (SIGINT during [`Session::break_in`]): a break-in may
    /// already be on its way, so wait up to `wait` for the stop it causes and resume it, so the
    /// target is not left stopped behind our back.
    pub async fn settle_abandoned_attach(&mut self, wait: Duration) -> Result<()> {
        let deadline = Instant::now() + wait;
        while self.stop.is_none() {
            match self.next_event(deadline).await? {
                Some(LinkEvent::Received(packet)) => {
                    self.on_packet(packet);
                }
                Some(_) => {}
                None => return Ok(()),
            }
        }
        if self.options.stay_broken {
            return Ok(());
        }
        warn!("the target stopped after the attach was abandoned; resuming it");
        self.resume().await
    }

    fn attach_timeout_message(&self, rounds: u32) -> String {
        let secs = self.options.connect_timeout.as_secs_f64();
        let what = self.transport.describe();
        match self.link.config().dialect {
            Dialect::Kdnet => format!(
                "{what} completed the handshake but sent no state change after {rounds} break-in requests in {secs:.1} s: the target may be hung, or another debugger may have taken it over"
            ),
            Dialect::Kdcom if self.stats.bytes_in == 0 => format!(
                "no bytes from {what} in {secs:.1} s ({rounds} break-in/RESET rounds): check that the VM's serial port is connected here, that the target booted with bcdedit /debug on and /dbgsettings serial, and the baud rate"
            ),
            Dialect::Kdcom => format!(
                "{what} sent {} bytes in {secs:.1} s but no KD state change ({rounds} break-in/RESET rounds): check the baud rate and that this port is the target's debug port",
                self.stats.bytes_in
            ),
        }
    }

    /// Sends one manipulate request and waits for the reply with the same ApiNumber (and, for
    /// memory APIs, the same address). Replies with another API are stale and skipped (kd.md
    /// §8.16); DEBUG_IO and FILE_IO arriving meanwhile are handled.
    pub async fn request(&mut self, request: Manipulate) -> Result<Manipulate> {
        let (address, len) = request
            .memory()
            .map(|m| (m.target_base_address, m.transfer_count))
            .unwrap_or_default();
        let span = tracing::debug_span!(
            "kd_request",
            api = request.api.name(),
            address = format_args!("{address:#x}"),
            len
        );
        self.request_inner(request).instrument(span).await
    }

    async fn request_inner(&mut self, request: Manipulate) -> Result<Manipulate> {
        if self.stop.is_none() {
            return Err(Error::NotStopped);
        }
        self.restarted = false;
        let api = request.api;
        if !api.has_reply() {
            self.send_no_reply(request, self.options.request_timeout)
                .await?;
            return Ok(Manipulate::new(api, kdproto::api::ManipulateParams::Unused));
        }
        self.stats.requests += 1;
        let wanted_address = request.memory().map(|m| m.target_base_address);
        self.link
            .send(PacketType::StateManipulate, request.encode(), std_now())?;
        trace!("request queued");
        let deadline = Instant::now() + self.options.request_timeout;
        loop {
            match self.next_event(deadline).await? {
                Some(LinkEvent::Received(packet)) => {
                    if let Some(reply) = self.on_packet(packet) {
                        let same_address = wanted_address.is_none_or(|a| {
                            reply.memory().map(|m| m.target_base_address) == Some(a)
                        });
                        if reply.api == api && same_address {
                            if reply.processor != request.processor {
                                warn!(
                                    asked = request.processor,
                                    got = reply.processor,
                                    "reply for another processor"
                                );
                            }
                            trace!(status = format_args!("{:#x}", reply.return_status), "reply");
                            return Ok(reply);
                        }
                        self.stats.stale_replies += 1;
                        debug!(got = reply.api.name(), "stale reply skipped");
                    }
                }
                Some(LinkEvent::SendFailed { packet, attempts })
                    if packet.packet_type == PacketType::StateManipulate =>
                {
                    return Err(Error::NotAcknowledged { api, attempts })
                }
                Some(event) => trace!(?event, "link event"),
                None => {
                    return Err(Error::RequestTimeout {
                        api,
                        timeout: self.options.request_timeout,
                        detail: String::new(),
                    })
                }
            }
            if self.restarted {
                return Err(Error::TargetRestarted);
            }
        }
    }

    /// Sends a request that gets no reply (kd.md §2.8) and waits for its ACK.
    async fn send_no_reply(&mut self, request: Manipulate, limit: Duration) -> Result<()> {
        let api = request.api;
        self.stats.requests += 1;
        self.link
            .send(PacketType::StateManipulate, request.encode(), std_now())?;
        let deadline = Instant::now() + limit;
        loop {
            match self.next_event(deadline).await? {
                Some(LinkEvent::Acknowledged { packet_type, .. })
                    if packet_type == PacketType::StateManipulate && self.link.is_idle() =>
                {
                    return Ok(())
                }
                Some(LinkEvent::Received(packet)) => {
                    self.on_packet(packet);
                }
                Some(LinkEvent::SendFailed { packet, attempts })
                    if packet.packet_type == PacketType::StateManipulate && self.link.is_idle() =>
                {
                    return Err(Error::NotAcknowledged { api, attempts })
                }
                Some(event) => trace!(?event, "link event"),
                None => {
                    return Err(Error::RequestTimeout {
                        api,
                        timeout: limit,
                        detail: " (no acknowledgement)".into(),
                    })
                }
            }
        }
    }

    /// GetVersion (kd.md §3.5).
    pub async fn get_version(&mut self) -> Result<Version> {
        let reply = self.request(Manipulate::get_version()).await?;
        if reply.return_status & 0x8000_0000 != 0 {
            return Err(Error::Status {
                api: reply.api,
                status: reply.return_status,
            });
        }
        reply
            .version()
            .copied()
            .ok_or_else(|| Error::Protocol("GetVersion reply without a version block".into()))
    }

    /// Resumes the target: Continue2(DBG_CONTINUE) with the Dr7 the stop reported, so the
    /// target's hardware breakpoints stay as they were (kd.md §3.6) — only its architecturally
    /// defined bits ([`continue_dr7`]); no reply, only the ACK.
    pub async fn resume(&mut self) -> Result<()> {
        let Some(stop) = self.stop.as_ref() else {
            return Ok(());
        };
        let dr7 = continue_dr7(stop.dr7);
        if dr7 & !dr7::DR7_RESERVED_ONE != stop.dr7 & !dr7::DR7_RESERVED_ONE {
            warn!(
                reported = format_args!("{:#x}", stop.dr7),
                resuming_with = format_args!("{dr7:#x}"),
                "the stop reported Dr7 bits no x64 processor defines; resuming without them"
            );
        }
        let span = tracing::info_span!("kd_resume", dr7 = format_args!("{dr7:#x}"));
        self.send_no_reply(
            Manipulate::continue2(DBG_CONTINUE, dr7),
            self.options.resume_timeout,
        )
        .instrument(span)
        .await?;
        self.stop = None;
        self.cache.clear();
        self.end_coverage();
        info!("target resumed");
        Ok(())
    }

    /// Handles one data packet; returns it when it is a manipulate reply.
    fn on_packet(&mut self, packet: Packet) -> Option<Manipulate> {
        let message = match Message::parse(packet.packet_type, &packet.payload) {
            Ok(message) => message,
            Err(error) => {
                warn!(%error, packet_type = packet.packet_type.name(), "unparsable packet ignored");
                return None;
            }
        };
        match message {
            Message::Manipulate(reply) => return Some(reply),
            Message::StateChange(sc) => {
                // A later copy replaces the first (kd.md §2.6 step 5).
                debug!(
                    state = sc.new_state.name(),
                    pc = format_args!("{:#x}", sc.program_counter),
                    "state change"
                );
                self.stop = Some(StopInfo::from_state_change(&sc));
                self.cache.clear();
                self.end_coverage();
            }
            Message::DebugIo(io) if io.api == ApiNumber::PRINT_STRING => {
                let text = String::from_utf8_lossy(io.text()).into_owned();
                info!(target: "kdleak::dbgprint", "{}", text.trim_end());
                self.debug_output.push(text);
            }
            Message::DebugIo(io) if io.api == ApiNumber::GET_STRING => {
                // DbgPrompt: answer with an empty line so the target is not left waiting.
                let reply = DebugIo::get_string_reply(&io, Bytes::new());
                self.queue(PacketType::DebugIo, reply.encode());
            }
            Message::FileIo(file) => {
                let reply = if file.api == ApiNumber::CREATE_FILE {
                    debug!(name = ?file.file_name(), "refusing .kdfiles CreateFile");
                    FileIo::refuse(&file)
                } else {
                    FileIo::reply_to(&file, STATUS_UNSUCCESSFUL, Bytes::new())
                };
                self.queue(PacketType::FileIo, reply.encode());
            }
            other => debug!(message = %other, "ignored"),
        }
        None
    }

    fn queue(&mut self, packet_type: PacketType, payload: Bytes) {
        if let Err(error) = self.link.send(packet_type, payload, std_now()) {
            warn!(%error, "could not queue an answer");
        }
    }

    async fn flush(&mut self) -> Result<()> {
        while let Some(transmit) = self.link.poll_transmit() {
            match &transmit {
                Transmit::BreakIn => debug!("-> break-in"),
                Transmit::Packet(p) => debug!(
                    packet_type = p.packet_type.name(),
                    id = format_args!("{:#x}", p.id),
                    len = p.payload.len(),
                    "->"
                ),
            }
            self.stats.bytes_out += match &transmit {
                Transmit::BreakIn => 1,
                Transmit::Packet(p) => (kdproto::kd::HEADER_LEN + p.payload.len()) as u64,
            };
            self.transport.send(&transmit).await?;
        }
        Ok(())
    }

    /// The next link event, or `None` once `until` passes. Sends what the link queued,
    /// feeds what arrives and drives retransmits.
    async fn next_event(&mut self, until: Instant) -> Result<Option<LinkEvent>> {
        loop {
            self.flush().await?;
            if let Some(event) = self.link.poll_event() {
                match &event {
                    LinkEvent::Received(p) => debug!(
                        packet_type = p.packet_type.name(),
                        id = format_args!("{:#x}", p.id),
                        len = p.payload.len(),
                        "<-"
                    ),
                    other => trace!(event = ?other, "link"),
                }
                return Ok(Some(event));
            }
            if Instant::now() >= until {
                return Ok(None);
            }
            let wake = self
                .link
                .poll_timeout()
                .map(|t| Instant::from_std(t).min(until))
                .unwrap_or(until);
            let incoming = tokio::select! {
                incoming = self.transport.recv() => Some(incoming),
                () = sleep_until(wake) => None,
            };
            match incoming {
                Some(incoming) => self.feed(incoming?).await?,
                None => self.link.handle_timeout(std_now()),
            }
        }
    }

    async fn feed(&mut self, incoming: Incoming) -> Result<()> {
        match incoming {
            Incoming::Bytes(bytes) => {
                self.stats.bytes_in += bytes.len() as u64;
                self.link.receive(&bytes, std_now());
            }
            Incoming::Ping => {
                // WinDbg answers the ping with a KD RESEND, id 0 (kdnet.md §7).
                trace!("ping -> RESEND");
                let resend = Transmit::Packet(Packet::control(PacketType::Resend, 0));
                self.transport.send(&resend).await?;
            }
            Incoming::TargetRestarted => {
                self.link.restart();
                self.restarted = true;
                self.stop = None;
                self.cache.clear();
                self.end_coverage();
            }
        }
        Ok(())
    }
}
