//! The sans-IO simulated target: a [`Link`] in the target role plus the Windows stop loop
//! (kd.md §2.1, §2.5, §2.6, §2.8). Transports feed it bytes and drain [`Transmit`]s.

use std::time::Instant;

use bytes::Bytes;
use kdproto::api::{
    context, kspecial, ControlReport, Exception, Manipulate, Message, StateChange, DBGKD_MAXSTREAM,
    MANIPULATE_LEN, MAX_MANIPULATE_DATA, REPORT_INCLUDES_SEGS, REPORT_STANDARD_CS,
};
use kdproto::kd::{Framing, PacketType, HEADER_LEN};
use kdproto::kdnet::sealed_len;
use kdproto::link::{Dialect, Link, LinkConfig, LinkEvent, Transmit};

use super::requests::{self, Outcome, StopState};
use super::Machine;
use crate::sim::status::stats::{reason_of, SimState, SimStats};

/// Largest UDP payload of a 1500-byte-MTU IPv4 datagram (1500 − 20 IP − 8 UDP).
pub const KDNET_MAX_DATAGRAM: usize = 1500 - 20 - 8;

/// Most memory bytes one reply carries over KDCOM: 4000 − 56 = 3944 (kd.md §3.10).
pub const KDCOM_MAX_READ: usize = MAX_MANIPULATE_DATA;

/// Most memory bytes one reply carries so that the sealed KDNET datagram fits
/// [`KDNET_MAX_DATAGRAM`] (1360 with the AES block and tag overhead).
pub fn kdnet_max_read() -> usize {
    kdnet_max_read_for(KDNET_MAX_DATAGRAM)
}

/// Most memory bytes one reply carries when a sealed datagram may hold `max_datagram` bytes of
/// UDP payload (kdnet.md §4.6: a real kdnet target has its own small UDP stack and no IP
/// fragmentation is known).
pub fn kdnet_max_read_for(max_datagram: usize) -> usize {
    (0..=MAX_MANIPULATE_DATA)
        .rev()
        .find(|n| sealed_len(HEADER_LEN + MANIPULATE_LEN + n) <= max_datagram)
        .unwrap_or(0)
}

/// How a [`TargetCore`] talks.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub link: LinkConfig,
    /// Cap on the data of one ReadVirtualMemory / GetContextEx reply.
    pub max_read: usize,
}

impl TargetConfig {
    /// KDCOM (serial framing): 3944-byte reads.
    pub fn kdcom() -> Self {
        Self {
            link: LinkConfig::target(Dialect::Kdcom, Framing::Serial),
            max_read: KDCOM_MAX_READ,
        }
    }

    /// KDNET (datagram framing): reads that fit one 1500-byte-MTU datagram.
    pub fn kdnet() -> Self {
        Self {
            link: LinkConfig::target(Dialect::Kdnet, Framing::Datagram),
            max_read: kdnet_max_read(),
        }
    }

    /// KDNET with a different MTU (IP packet size), to explore hosts' chunking.
    pub fn kdnet_with_mtu(mtu: usize) -> Self {
        Self {
            max_read: kdnet_max_read_for(mtu.saturating_sub(20 + 8)),
            ..Self::kdnet()
        }
    }

    /// KDCOM with a packet limit below PACKET_MAX_SIZE (4000), as some targets use.
    pub fn kdcom_with_max_packet(max_packet: usize) -> Self {
        let mut config = Self::kdcom();
        config.link.max_payload = max_packet.min(config.link.max_payload);
        config.max_read = config.link.max_payload.saturating_sub(MANIPULATE_LEN);
        config
    }
}

/// The simulated Windows target, without I/O. See the module documentation.
#[derive(Debug)]
pub struct TargetCore {
    link: Link,
    machine: Machine,
    max_read: usize,
    state: SimState,
    /// The CPU that reported the current stop.
    current_cpu: u16,
    stop: StopState,
    stats: SimStats,
    /// Since when the target runs (its timeline's clock advances only while it runs).
    running_since: Option<Instant>,
    /// Since when the target is stopped (for [`SimStats::stopped_us`]).
    stopped_since: Option<Instant>,
    /// Stopped in a bug check it made on its own ([`TargetCore::bug_check`]): resumed, it
    /// continues the crash.
    bug_checked: bool,
}

impl TargetCore {
    pub fn new(machine: Machine, config: TargetConfig) -> Self {
        Self {
            link: Link::new(config.link),
            machine,
            max_read: config.max_read,
            state: SimState::Running,
            current_cpu: 0,
            stop: StopState::default(),
            stats: SimStats::default(),
            running_since: Some(Instant::now()),
            stopped_since: None,
            bug_checked: false,
        }
    }

    /// Ends the current stop's clock (at a Continue or a reboot).
    fn end_stop(&mut self, now: Instant) {
        if let Some(since) = self.stopped_since.take() {
            let stopped = now.saturating_duration_since(since).as_micros();
            self.stats.stopped_us = self
                .stats
                .stopped_us
                .saturating_add(u64::try_from(stopped).unwrap_or(u64::MAX));
        }
    }

    /// Lets the machine's timeline catch up with the time it ran until `now`.
    fn run_until(&mut self, now: Instant) {
        if let Some(since) = self.running_since {
            self.machine.run_for(now.saturating_duration_since(since));
            self.running_since = Some(now.max(since));
        }
    }

    pub fn state(&self) -> SimState {
        self.state
    }

    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    pub fn machine_mut(&mut self) -> &mut Machine {
        &mut self.machine
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    pub fn max_read(&self) -> usize {
        self.max_read
    }

    /// Counters, with the link's own merged in.
    pub fn stats(&self) -> SimStats {
        let mut stats = self.stats.clone();
        stats.state = self.state;
        stats.link = self.link.stats().clone();
        stats
    }

    /// Transport-level counters (pokes, handshakes, KDNET rejections) live here too.
    pub fn stats_mut(&mut self) -> &mut SimStats {
        &mut self.stats
    }

    /// Bytes from the host: a serial stream chunk, or one KDNET data datagram's KD packet.
    pub fn receive(&mut self, bytes: &[u8], now: Instant) {
        self.link.receive(bytes, now);
        self.process_events(now);
    }

    /// A KDNET break-in datagram.
    pub fn receive_break_in(&mut self, now: Instant) {
        self.link.receive_break_in();
        self.process_events(now);
    }

    /// Stops a running target as a break-in would, without a host asking (a scripted stop).
    pub fn break_in(&mut self, now: Instant) {
        if self.state == SimState::Running {
            self.stats.break_ins += 1;
            self.enter_stop(self.current_cpu, now);
        }
    }

    /// The running target bug-checks on its own (its [`Machine::crash`] state): memory as the
    /// crash leaves it, same boot, and a stop reported to the host unasked, as Windows reports
    /// `KeBugCheckEx`'s breakpoint to an attached debugger. False without a crash state.
    pub fn bug_check(&mut self, now: Instant) -> bool {
        if self.state != SimState::Running {
            return false;
        }
        let Some(crash) = self.machine.crash.take() else {
            return false;
        };
        let mut crash = *crash;
        crash.set_boot_id(1 + self.stats.reboots);
        self.machine = crash;
        self.stats.bug_checks += 1;
        self.bug_checked = true;
        self.enter_stop(0, now);
        true
    }

    /// A target resumed after its own bug check continues the crash: the dump is written and
    /// the machine restarts. True once the host has resumed it (the wire loop then reboots it).
    pub fn crash_continued(&self) -> bool {
        self.bug_checked && self.state == SimState::Running
    }

    /// A new KDNET session or stream client: forget what was in flight. A stopped target's
    /// state change goes out again when the new host sends RESET (kd.md §2.6).
    pub fn restart_link(&mut self) {
        self.link.restart();
    }

    /// A new boot: memory reloaded from `machine`, running, and a link that numbers its packets
    /// from scratch as a freshly booted kernel does (KDCOM: INITIAL|SYNC; KDNET: from 0).
    /// Counters survive so the summary covers every boot; `KUSER_SHARED_DATA.BootId` counts
    /// the boot, as Windows' does.
    pub fn reboot(&mut self, machine: Machine) {
        self.end_stop(Instant::now());
        self.link = Link::new(self.link.config().clone());
        self.machine = machine;
        self.state = SimState::Running;
        self.current_cpu = 0;
        self.stop = StopState::default();
        self.stats.reboots += 1;
        self.bug_checked = false;
        self.machine.set_boot_id(1 + self.stats.reboots);
        self.running_since = Some(Instant::now());
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.link.poll_transmit()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.link.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.link.handle_timeout(now);
        self.process_events(now);
    }

    fn process_events(&mut self, now: Instant) {
        while let Some(event) = self.link.poll_event() {
            match event {
                LinkEvent::Received(packet) => {
                    self.handle_packet(packet.packet_type, &packet.payload, now)
                }
                LinkEvent::BreakIn => {
                    if self.state == SimState::Running {
                        self.break_in(now);
                    } else {
                        self.stats.break_ins_while_stopped += 1;
                    }
                }
                LinkEvent::PeerReset | LinkEvent::ResendRequested => self.resend_state_change(now),
                LinkEvent::Rejected(error) => {
                    *self
                        .stats
                        .rejected_by_reason
                        .entry(reason_of("kd", &error))
                        .or_default() += 1;
                    self.stats.rejected += 1;
                }
                LinkEvent::Acknowledged { .. }
                | LinkEvent::PeerRestarted
                | LinkEvent::SendFailed { .. } => {}
            }
        }
    }

    /// kd.md §2.6: while stopped, a RESET or RESEND makes the target send its state change again
    /// — unless a packet is still in flight, which the link is already re-sending.
    fn resend_state_change(&mut self, now: Instant) {
        if self.state == SimState::Stopped && self.link.is_idle() {
            self.stats.state_change_resends += 1;
            self.send_state_change(now);
        }
    }

    fn enter_stop(&mut self, cpu: u16, now: Instant) {
        self.run_until(now);
        self.running_since = None;
        self.stopped_since.get_or_insert(now);
        self.state = SimState::Stopped;
        self.current_cpu = cpu;
        self.stop.reset();
        self.send_state_change(now);
    }

    fn send_state_change(&mut self, now: Instant) {
        let payload = Message::from(self.state_change()).encode();
        self.stats.state_changes += 1;
        self.send(PacketType::StateChange64, payload, now);
    }

    fn send(&mut self, packet_type: PacketType, payload: Bytes, now: Instant) {
        if let Err(error) = self.link.send(packet_type, payload, now) {
            tracing::warn!("sim: cannot send {packet_type:?}: {error}");
        }
    }

    /// STATE_CHANGE64 Exception 0x80000003 from the current CPU (kd.md §2.7, §3.1).
    pub fn state_change(&self) -> StateChange {
        let cpu = self
            .machine
            .cpu(self.current_cpu)
            .or_else(|| self.machine.cpu(0))
            .expect("a machine has at least one CPU");
        let pc = cpu.rip();
        let mut stream = [0u8; DBGKD_MAXSTREAM];
        let (bytes, _) = self.machine.memory.read(pc, DBGKD_MAXSTREAM);
        stream[..bytes.len()].copy_from_slice(&bytes);
        self.machine
            .breakpoints
            .hide_in(pc, &mut stream[..bytes.len()]);
        let mut change = StateChange::exception(Exception::breakpoint(pc));
        change.processor = self.current_cpu;
        change.number_processors = u32::from(self.machine.processor_count());
        change.thread = cpu.kthread;
        change.control_report = ControlReport {
            dr6: cpu.special_u64(kspecial::KERNEL_DR6),
            dr7: cpu.special_u64(kspecial::KERNEL_DR7),
            eflags: cpu.context_u32(context::EFLAGS),
            instruction_count: bytes.len() as u16,
            report_flags: REPORT_INCLUDES_SEGS | REPORT_STANDARD_CS,
            instruction_stream: stream,
            cs: cpu.context_u16(context::SEG_CS),
            ds: cpu.context_u16(context::SEG_DS),
            es: cpu.context_u16(context::SEG_ES),
            fs: cpu.context_u16(context::SEG_FS),
        };
        change
    }

    fn handle_packet(&mut self, packet_type: PacketType, payload: &[u8], now: Instant) {
        if self.state != SimState::Stopped || packet_type != PacketType::StateManipulate {
            self.stats.ignored_packets += 1;
            return;
        }
        let request = match Manipulate::parse(payload) {
            Ok(request) => request,
            Err(error) => {
                self.stats.reject(reason_of("api", &error));
                return;
            }
        };
        self.stats.count_request(request.api.to_string());
        match requests::answer(&mut self.machine, &mut self.stop, &request, self.max_read) {
            Outcome::Reply(reply) => self.send(PacketType::StateManipulate, reply.encode(), now),
            Outcome::Unsupported(reply) => {
                self.stats.unsupported += 1;
                self.send(PacketType::StateManipulate, reply.encode(), now);
            }
            Outcome::Resume => {
                self.stats.continues += 1;
                if let kdproto::api::ManipulateParams::Continue2(params) = &request.params {
                    self.stats.last_continue_dr7 = Some(params.dr7);
                }
                self.state = SimState::Running;
                self.running_since = Some(now);
                self.end_stop(now);
                self.stop.reset();
            }
            Outcome::SwitchProcessor(cpu) if cpu < self.machine.processor_count() => {
                self.enter_stop(cpu, now)
            }
            Outcome::Unanswered => self.stats.unanswered_reads += 1,
            Outcome::SwitchProcessor(_) | Outcome::Silent => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kdproto::api::{ApiNumber, StateEvent, STATUS_BREAKPOINT};
    use kdproto::kd::Packet;
    use kdproto::link::Role;

    use super::*;

    /// A host link wired to a core in memory (no I/O).
    struct Pair {
        host: Link,
        target: TargetCore,
        now: Instant,
    }

    impl Pair {
        fn new() -> Self {
            Self::with(TargetConfig::kdcom())
        }

        fn with(config: TargetConfig) -> Self {
            Self {
                host: Link::new(LinkConfig::host(Dialect::Kdcom, Framing::Serial)),
                target: TargetCore::new(Machine::builder().processors(2).build(), config),
                now: Instant::now(),
            }
        }

        /// Moves bytes both ways until quiet; returns the messages the host received.
        fn pump(&mut self) -> Vec<Message> {
            let mut got = Vec::new();
            for _ in 0..50 {
                let mut moved = false;
                while let Some(t) = self.host.poll_transmit() {
                    moved = true;
                    let bytes = t.to_bytes(Framing::Serial).unwrap();
                    self.target.receive(&bytes, self.now);
                }
                while let Some(t) = self.target.poll_transmit() {
                    moved = true;
                    let bytes = t.to_bytes(Framing::Serial).unwrap();
                    self.host.receive(&bytes, self.now);
                }
                while let Some(event) = self.host.poll_event() {
                    if let LinkEvent::Received(Packet {
                        packet_type,
                        payload,
                        ..
                    }) = event
                    {
                        got.push(Message::parse(packet_type, &payload).unwrap());
                    }
                }
                if !moved {
                    break;
                }
            }
            got
        }

        fn request(&mut self, request: Manipulate) -> Vec<Message> {
            self.host
                .send(
                    PacketType::StateManipulate,
                    Message::from(request).encode(),
                    self.now,
                )
                .unwrap();
            self.pump()
        }
    }

    fn exception(message: &Message) -> (u16, u64, u32) {
        let Message::StateChange(change) = message else {
            panic!("expected a state change, got {message}");
        };
        let StateEvent::Exception(e) = &change.event else {
            panic!("not an exception");
        };
        (change.processor, change.program_counter, e.code)
    }

    #[test]
    fn kdnet_read_cap_fits_the_mtu() {
        let n = kdnet_max_read();
        assert!(sealed_len(HEADER_LEN + MANIPULATE_LEN + n) <= KDNET_MAX_DATAGRAM);
        assert!(sealed_len(HEADER_LEN + MANIPULATE_LEN + n + 16) > KDNET_MAX_DATAGRAM);
        assert_eq!(n, 1360);
    }

    #[test]
    fn a_smaller_mtu_gives_smaller_reads() {
        assert_eq!(TargetConfig::kdnet_with_mtu(1500).max_read, 1360);
        let small = TargetConfig::kdnet_with_mtu(576).max_read;
        assert!(sealed_len(HEADER_LEN + MANIPULATE_LEN + small) <= 576 - 28);
        assert!(sealed_len(HEADER_LEN + MANIPULATE_LEN + small + 16) > 576 - 28);
    }

    #[test]
    fn a_lower_packet_limit_shortens_reads_and_refuses_bigger_packets() {
        let mut pair = Pair::with(TargetConfig::kdcom_with_max_packet(1000));
        pair.host.send_break_in();
        pair.pump();
        let base = pair.target.machine().kern_base;
        let got = pair.request(Manipulate::read_virtual_memory(base, 0x2000));
        let Message::Manipulate(reply) = &got[0] else {
            panic!("expected a reply");
        };
        assert_eq!(reply.data.len(), 1000 - MANIPULATE_LEN);
        // A request bigger than the limit is answered with RESEND, never taken.
        pair.host
            .send(
                PacketType::StateManipulate,
                Message::from(Manipulate::write_virtual_memory(base, vec![0; 1200])).encode(),
                pair.now,
            )
            .unwrap();
        assert!(pair.pump().is_empty());
        assert!(pair.target.stats().link.resends_sent >= 1);
    }

    #[test]
    fn break_in_stop_loop_and_continue() {
        let mut pair = Pair::new();
        pair.host.send_break_in();
        let got = pair.pump();
        assert_eq!(got.len(), 1);
        let (cpu, pc, code) = exception(&got[0]);
        assert_eq!(
            (cpu, pc, code),
            (0, pair.target.machine().break_pc, STATUS_BREAKPOINT)
        );
        let Message::StateChange(change) = &got[0] else {
            unreachable!()
        };
        assert_eq!(change.control_report.instructions()[..2], [0xCC, 0xC3]);
        assert_eq!(change.control_report.report_flags, 3);
        assert_eq!(change.control_report.dr7, 0x400);
        assert_eq!(change.number_processors, 2);
        assert_eq!(pair.target.state(), SimState::Stopped);

        // RESET while stopped: the state change comes again (kd.md §2.6).
        pair.host.send_reset(pair.now);
        let got = pair.pump();
        assert_eq!(got.len(), 1);
        assert_eq!(exception(&got[0]).2, STATUS_BREAKPOINT);
        assert_eq!(pair.target.stats().state_change_resends, 1);

        let got = pair.request(Manipulate::get_version());
        let Message::Manipulate(reply) = &got[0] else {
            panic!()
        };
        assert_eq!(reply.version().unwrap().machine_type, 0x8664);

        // SwitchProcessor: no reply, a state change from CPU 1.
        let got = pair.request(Manipulate::switch_processor(1));
        assert_eq!(exception(&got[0]).0, 1);

        let got = pair.request(Manipulate::new(
            ApiNumber(0x3177),
            kdproto::api::ManipulateParams::Other([0; 40]),
        ));
        let Message::Manipulate(reply) = &got[0] else {
            panic!()
        };
        assert_eq!(reply.return_status, 0xC000_0001);

        let got = pair.request(Manipulate::continue2(0x10002, 0x400));
        assert!(got.is_empty());
        assert_eq!(pair.target.state(), SimState::Running);
        let stats = pair.target.stats();
        assert_eq!(
            (stats.break_ins, stats.continues, stats.unsupported),
            (1, 1, 1)
        );
        assert_eq!(stats.requests["DbgKdGetVersionApi"], 1);

        // Requests while running are ACKed but not answered.
        let got = pair.request(Manipulate::get_version());
        assert!(got.is_empty());
        assert_eq!(pair.target.stats().ignored_packets, 1);
    }

    #[test]
    fn unacknowledged_state_change_is_retransmitted() {
        let mut core = TargetCore::new(Machine::default(), TargetConfig::kdcom());
        let now = Instant::now();
        core.break_in(now);
        assert!(
            matches!(core.poll_transmit(), Some(Transmit::Packet(p)) if p.packet_type == PacketType::StateChange64)
        );
        let deadline = core.poll_timeout().unwrap();
        core.handle_timeout(deadline + Duration::from_millis(1));
        assert!(
            matches!(core.poll_transmit(), Some(Transmit::Packet(p)) if p.packet_type == PacketType::StateChange64)
        );
        assert_eq!(core.link().config().role, Role::Target);
    }
}
