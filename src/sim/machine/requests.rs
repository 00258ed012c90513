//! Answers to manipulate requests in the stop loop (kd.md §2.8, §3.4–§3.10), without I/O.

use bytes::Bytes;
use kdproto::api::{
    context, ApiNumber, ContextExParams, Manipulate, ManipulateParams, MsrParams,
    QueryMemoryParams, WriteBreakPointParams, AMD64_DEBUG_CONTROL_SPACE_KPCR,
    AMD64_DEBUG_CONTROL_SPACE_KPRCB, AMD64_DEBUG_CONTROL_SPACE_KSPECIAL,
    AMD64_DEBUG_CONTROL_SPACE_KTHREAD, DBGKD_QUERY_MEMORY_EXECUTE, DBGKD_QUERY_MEMORY_KERNEL,
    DBGKD_QUERY_MEMORY_READ, DBGKD_QUERY_MEMORY_WRITE, STATUS_INVALID_PARAMETER, STATUS_SUCCESS,
    STATUS_UNSUCCESSFUL,
};

use super::set_context::{ContextStager, StageOutcome};
use super::Machine;

/// What the stop loop does after a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send this reply and stay stopped.
    Reply(Manipulate),
    /// Continue / Continue2: resume, no reply.
    Resume,
    /// SwitchProcessor: that CPU reports a fresh state change, no reply.
    SwitchProcessor(u16),
    /// A no-reply API consumed silently (SetSpecialCall, …) or one not simulated (Reboot).
    Silent,
    /// An API the simulator does not implement: the unsupported echo was built.
    Unsupported(Manipulate),
    /// A memory read larger than `--quirks unanswered_reads_over` allows: acknowledged, never
    /// answered.
    Unanswered,
}

/// Per-stop state: `KdpContextSent` and the SetContextEx staging buffer (kd.md §3.7).
#[derive(Debug, Clone, Default)]
pub struct StopState {
    pub context_sent: bool,
    pub stager: ContextStager,
}

impl StopState {
    /// Cleared at the start of every stop (kd.md §2.6).
    pub fn reset(&mut self) {
        self.context_sent = false;
        self.stager.clear();
    }
}

/// Answers `request`. `max_read` caps the data of one memory/context-window reply.
pub fn answer(
    machine: &mut Machine,
    stop: &mut StopState,
    request: &Manipulate,
    max_read: usize,
) -> Outcome {
    use Outcome::Reply;
    let is_read = matches!(
        request.api,
        ApiNumber::READ_VIRTUAL_MEMORY | ApiNumber::READ_PHYSICAL_MEMORY
    );
    if is_read
        && request.memory().is_some_and(|m| {
            machine
                .quirks
                .leaves_read_unanswered(m.transfer_count as usize)
        })
    {
        return Outcome::Unanswered;
    }
    match request.api {
        ApiNumber::GET_VERSION => Reply(Manipulate::get_version_reply(request, machine.version())),
        ApiNumber::READ_VIRTUAL_MEMORY => Reply(read_virtual(machine, request, max_read)),
        ApiNumber::WRITE_VIRTUAL_MEMORY => Reply(write_virtual(machine, request)),
        ApiNumber::READ_PHYSICAL_MEMORY => Reply(read_physical(machine, request, max_read)),
        ApiNumber::READ_CONTROL_SPACE => Reply(read_control(machine, request)),
        ApiNumber::WRITE_CONTROL_SPACE => Reply(write_control(machine, request)),
        ApiNumber::GET_CONTEXT => Reply(get_context(machine, stop, request)),
        ApiNumber::SET_CONTEXT => Reply(set_context(machine, stop, request)),
        ApiNumber::GET_CONTEXT_EX => Reply(get_context_ex(machine, stop, request, max_read)),
        ApiNumber::SET_CONTEXT_EX => Reply(set_context_ex(machine, stop, request)),
        ApiNumber::WRITE_BREAKPOINT => Reply(write_breakpoint(machine, request)),
        ApiNumber::RESTORE_BREAKPOINT => Reply(restore_breakpoint(machine, request)),
        ApiNumber::READ_MSR => Reply(read_msr(machine, request)),
        ApiNumber::WRITE_MSR => Reply(write_msr(machine, request)),
        ApiNumber::QUERY_MEMORY => Reply(query_memory(request)),
        ApiNumber::CONTINUE | ApiNumber::CONTINUE2 => Outcome::Resume,
        ApiNumber::SWITCH_PROCESSOR => Outcome::SwitchProcessor(request.processor),
        api if !api.has_reply() => Outcome::Silent,
        _ => Outcome::Unsupported(Manipulate::unsupported_reply(request)),
    }
}

fn status(ok: bool) -> u32 {
    if ok {
        STATUS_SUCCESS
    } else {
        STATUS_UNSUCCESSFUL
    }
}

fn read_virtual(machine: &mut Machine, request: &Manipulate, max_read: usize) -> Manipulate {
    let Some(m) = request.memory().copied() else {
        return Manipulate::unsupported_reply(request);
    };
    let len = (m.transfer_count as usize).min(max_read);
    let (bytes, complete) = machine.read_virtual(m.target_base_address, len);
    Manipulate::reply_to(request, status(complete), bytes)
}

/// Same clamp and partial-read rule as virtual reads (kd.md §3.10), over the machine's physical
/// view (RAM frames and page tables). The caching type in the request's ActualBytes (kd.md §3.4)
/// changes nothing for simulated RAM.
fn read_physical(machine: &mut Machine, request: &Manipulate, max_read: usize) -> Manipulate {
    let Some(m) = request.memory().copied() else {
        return Manipulate::unsupported_reply(request);
    };
    let len = (m.transfer_count as usize).min(max_read);
    let physical = machine.physical();
    let (bytes, complete) = physical.read(&machine.memory, m.target_base_address, len);
    Manipulate::reply_to(request, status(complete), bytes)
}

fn write_virtual(machine: &mut Machine, request: &Manipulate) -> Manipulate {
    let Some(m) = request.memory().copied() else {
        return Manipulate::unsupported_reply(request);
    };
    let len = (m.transfer_count as usize).min(request.data.len());
    let written = machine
        .memory
        .write(m.target_base_address, &request.data[..len]);
    let mut reply = Manipulate::reply_to(
        request,
        status(written == m.transfer_count as usize),
        Bytes::new(),
    );
    if let ManipulateParams::Memory(p) = &mut reply.params {
        p.actual_bytes = written as u32;
    }
    reply
}

/// Control space selectors 0–3 (kd.md §3.8); Processor picks the CPU.
fn read_control(machine: &Machine, request: &Manipulate) -> Manipulate {
    let (Some(m), Some(cpu)) = (request.memory(), machine.cpu(request.processor)) else {
        return Manipulate::reply_to(request, STATUS_UNSUCCESSFUL, Bytes::new());
    };
    let len = m.transfer_count as usize;
    let pointer = |value: u64| {
        if len >= 8 {
            Manipulate::reply_to(request, STATUS_SUCCESS, value.to_le_bytes().to_vec())
        } else {
            Manipulate::reply_to(request, STATUS_UNSUCCESSFUL, Bytes::new())
        }
    };
    match m.target_base_address {
        AMD64_DEBUG_CONTROL_SPACE_KPCR => pointer(cpu.kpcr),
        AMD64_DEBUG_CONTROL_SPACE_KPRCB => pointer(cpu.kprcb),
        AMD64_DEBUG_CONTROL_SPACE_KTHREAD => pointer(cpu.kthread),
        AMD64_DEBUG_CONTROL_SPACE_KSPECIAL => {
            let n = len.min(cpu.special.len());
            Manipulate::reply_to(request, STATUS_SUCCESS, cpu.special[..n].to_vec())
        }
        _ => Manipulate::reply_to(request, STATUS_UNSUCCESSFUL, Bytes::new()),
    }
}

/// Only KSPECIAL_REGISTERS (selector 2) is writable.
fn write_control(machine: &mut Machine, request: &Manipulate) -> Manipulate {
    let processor = request.processor;
    let (Some(m), Some(cpu)) = (request.memory().copied(), machine.cpu_mut(processor)) else {
        return Manipulate::reply_to(request, STATUS_UNSUCCESSFUL, Bytes::new());
    };
    let mut written = 0;
    let ok = if m.target_base_address == AMD64_DEBUG_CONTROL_SPACE_KSPECIAL {
        let n = (m.transfer_count as usize)
            .min(request.data.len())
            .min(cpu.special.len());
        cpu.special[..n].copy_from_slice(&request.data[..n]);
        written = n;
        true
    } else {
        false
    };
    let mut reply = Manipulate::reply_to(request, status(ok), Bytes::new());
    if let ManipulateParams::Memory(p) = &mut reply.params {
        p.actual_bytes = written as u32;
    }
    reply
}

fn get_context(machine: &Machine, stop: &mut StopState, request: &Manipulate) -> Manipulate {
    match machine.cpu(request.processor) {
        Some(cpu) => {
            stop.context_sent = true;
            Manipulate::reply_to(request, STATUS_SUCCESS, cpu.context.clone())
        }
        None => Manipulate::reply_to(request, STATUS_UNSUCCESSFUL, Bytes::new()),
    }
}

fn set_context(machine: &mut Machine, stop: &StopState, request: &Manipulate) -> Manipulate {
    let processor = request.processor;
    match machine.cpu_mut(processor) {
        Some(cpu) if stop.context_sent => {
            let n = request.data.len().min(context::SIZE);
            cpu.context[..n].copy_from_slice(&request.data[..n]);
            Manipulate::reply_to(request, STATUS_SUCCESS, Bytes::new())
        }
        _ => Manipulate::reply_to(request, STATUS_UNSUCCESSFUL, Bytes::new()),
    }
}

/// Windows semantics: clamp the window; ByteCount = full size; BytesCopied = returned bytes;
/// KdpContextSent only when the window reaches the end (kd.md §3.7).
fn get_context_ex(
    machine: &Machine,
    stop: &mut StopState,
    request: &Manipulate,
    max_read: usize,
) -> Manipulate {
    let (ManipulateParams::ContextEx(params), Some(cpu)) =
        (&request.params, machine.cpu(request.processor))
    else {
        return Manipulate::reply_to(request, STATUS_UNSUCCESSFUL, Bytes::new());
    };
    let size = cpu.context.len();
    let offset = (params.offset as usize).min(size);
    let count = (params.byte_count as usize)
        .min(size - offset)
        .min(max_read);
    if offset + count == size {
        stop.context_sent = true;
    }
    let mut reply = Manipulate::reply_to(
        request,
        STATUS_SUCCESS,
        cpu.context[offset..offset + count].to_vec(),
    );
    reply.params = ManipulateParams::ContextEx(ContextExParams {
        offset: offset as u32,
        byte_count: size as u32,
        bytes_copied: count as u32,
    });
    reply
}

/// Request BytesCopied = the total staged size; reply BytesCopied = ByteCount (kd.md §3.7).
fn set_context_ex(machine: &mut Machine, stop: &mut StopState, request: &Manipulate) -> Manipulate {
    let processor = request.processor;
    let (ManipulateParams::ContextEx(params), Some(cpu)) =
        (request.params.clone(), machine.cpu_mut(processor))
    else {
        return Manipulate::reply_to(request, STATUS_UNSUCCESSFUL, Bytes::new());
    };
    let result = stop.stager.stage(
        stop.context_sent,
        params.offset,
        params.byte_count,
        params.bytes_copied,
        &request.data,
    );
    let status = match result {
        Ok(StageOutcome::Staged) => STATUS_SUCCESS,
        Ok(StageOutcome::Complete(whole)) => {
            let n = whole.len().min(cpu.context.len());
            cpu.context[..n].copy_from_slice(&whole[..n]);
            STATUS_SUCCESS
        }
        Err(status) => status,
    };
    let mut reply = Manipulate::reply_to(request, status, Bytes::new());
    reply.params = ManipulateParams::ContextEx(ContextExParams {
        bytes_copied: if status == STATUS_SUCCESS {
            params.byte_count
        } else {
            0
        },
        ..params
    });
    reply
}

fn write_breakpoint(machine: &mut Machine, request: &Manipulate) -> Manipulate {
    let ManipulateParams::WriteBreakPoint(params) = request.params else {
        return Manipulate::unsupported_reply(request);
    };
    let handle = machine
        .breakpoints
        .write(&mut machine.memory, params.address);
    let mut reply = Manipulate::reply_to(request, status(handle.is_some()), Bytes::new());
    reply.params = ManipulateParams::WriteBreakPoint(WriteBreakPointParams {
        address: params.address,
        handle: handle.unwrap_or(0),
    });
    reply
}

/// An empty slot answers 0xC0000001 (kd.md §2.6, §7.3 item 3).
fn restore_breakpoint(machine: &mut Machine, request: &Manipulate) -> Manipulate {
    let ManipulateParams::RestoreBreakPoint { handle } = request.params else {
        return Manipulate::unsupported_reply(request);
    };
    let ok = machine.breakpoints.restore(&mut machine.memory, handle);
    Manipulate::reply_to(request, status(ok), Bytes::new())
}

fn read_msr(machine: &Machine, request: &Manipulate) -> Manipulate {
    let ManipulateParams::Msr(params) = request.params else {
        return Manipulate::unsupported_reply(request);
    };
    let value = machine.msrs.get(&params.msr).copied();
    let mut reply = Manipulate::reply_to(request, status(value.is_some()), Bytes::new());
    reply.params = ManipulateParams::Msr(MsrParams::with_value(params.msr, value.unwrap_or(0)));
    reply
}

fn write_msr(machine: &mut Machine, request: &Manipulate) -> Manipulate {
    let ManipulateParams::Msr(params) = request.params else {
        return Manipulate::unsupported_reply(request);
    };
    machine.msrs.insert(params.msr, params.value());
    Manipulate::reply_to(request, STATUS_SUCCESS, Bytes::new())
}

/// AddressSpace must be 0 on input; the answer is kernel space, read/write/execute (kd.md §3.4).
fn query_memory(request: &Manipulate) -> Manipulate {
    let ManipulateParams::QueryMemory(params) = request.params else {
        return Manipulate::unsupported_reply(request);
    };
    if params.address_space != 0 {
        return Manipulate::reply_to(request, STATUS_INVALID_PARAMETER, Bytes::new());
    }
    let mut reply = Manipulate::reply_to(request, STATUS_SUCCESS, Bytes::new());
    reply.params = ManipulateParams::QueryMemory(QueryMemoryParams {
        address_space: DBGKD_QUERY_MEMORY_KERNEL,
        flags: DBGKD_QUERY_MEMORY_READ | DBGKD_QUERY_MEMORY_WRITE | DBGKD_QUERY_MEMORY_EXECUTE,
        ..params
    });
    reply
}

#[cfg(test)]
mod tests {
    use kdproto::api::kspecial;

    use super::*;

    fn reply(outcome: Outcome) -> Manipulate {
        match outcome {
            Outcome::Reply(reply) | Outcome::Unsupported(reply) => reply,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn setup() -> (Machine, StopState) {
        (Machine::default(), StopState::default())
    }

    #[test]
    fn reads_clamp_and_report_partial_data() {
        let (mut machine, mut stop) = setup();
        let base = machine.kern_base;
        let r = reply(answer(
            &mut machine,
            &mut stop,
            &Manipulate::read_virtual_memory(base, 8000),
            3944,
        ));
        assert_eq!((r.return_status, r.data.len()), (STATUS_SUCCESS, 3944));
        assert_eq!(r.memory().unwrap().actual_bytes, 3944);
        let end = base + 0x3000 - 4;
        let r = reply(answer(
            &mut machine,
            &mut stop,
            &Manipulate::read_virtual_memory(end, 16),
            3944,
        ));
        assert_eq!((r.return_status, r.data.len()), (STATUS_UNSUCCESSFUL, 4));
        let r = reply(answer(
            &mut machine,
            &mut stop,
            &Manipulate::read_virtual_memory(0x1000, 16),
            3944,
        ));
        assert_eq!((r.return_status, r.data.len()), (STATUS_UNSUCCESSFUL, 0));
    }

    /// Reads 8 bytes of physical memory through the API.
    fn physical_u64(machine: &mut Machine, stop: &mut StopState, address: u64) -> u64 {
        let r = reply(answer(
            machine,
            stop,
            &Manipulate::read_physical_memory(address, 8, 0),
            3944,
        ));
        assert_eq!(r.return_status, STATUS_SUCCESS, "{address:#x}");
        u64::from_le_bytes(r.data.as_ref().try_into().unwrap())
    }

    #[test]
    fn physical_reads_walk_from_cr3_to_the_bytes_virtual_reads_give() {
        let (mut machine, mut stop) = setup();
        let r = reply(answer(
            &mut machine,
            &mut stop,
            &Manipulate::read_control_space(2, 0xA8),
            3944,
        ));
        let cr3 = u64::from_le_bytes(r.data[kspecial::CR3..kspecial::CR3 + 8].try_into().unwrap());
        let kthread = machine.cpus[0].kthread;
        for va in [
            machine.kern_base,
            machine.kern_base + 0x1380,
            machine.kdbg + 0x18,
            kthread,
        ] {
            // Hand walk: PML4E, PDPTE, PDE, PTE, each present, 4 KiB pages only.
            let mut table = cr3 & !0xFFF;
            for shift in [39, 30, 21, 12] {
                let entry =
                    physical_u64(&mut machine, &mut stop, table + ((va >> shift) & 0x1FF) * 8);
                assert_eq!(entry & 1, 1, "{va:#x} level {shift}");
                assert_eq!(entry & 0x80, 0, "no large pages");
                table = entry & 0x000F_FFFF_FFFF_F000;
            }
            let pa = table | (va & 0xFFF);
            let physical = reply(answer(
                &mut machine,
                &mut stop,
                &Manipulate::read_physical_memory(pa, 64, 2),
                3944,
            ));
            let virtual_ = reply(answer(
                &mut machine,
                &mut stop,
                &Manipulate::read_virtual_memory(va, 64),
                3944,
            ));
            assert_eq!(physical.return_status, STATUS_SUCCESS);
            assert_eq!(physical.data, virtual_.data, "{va:#x} -> {pa:#x}");
        }
    }

    #[test]
    fn physical_reads_clamp_and_stop_outside_ram() {
        let (mut machine, mut stop) = setup();
        let r = reply(answer(
            &mut machine,
            &mut stop,
            &Manipulate::read_physical_memory(0x10_0000, 8000, 0),
            3944,
        ));
        assert_eq!((r.return_status, r.data.len()), (STATUS_SUCCESS, 3944));
        assert_eq!(r.memory().unwrap().actual_bytes, 3944);
        // 0xA0000 starts the legacy hole: 4 bytes of RAM below it, then nothing.
        let r = reply(answer(
            &mut machine,
            &mut stop,
            &Manipulate::read_physical_memory(0x9_FFFC, 16, 0),
            3944,
        ));
        assert_eq!((r.return_status, r.data.len()), (STATUS_UNSUCCESSFUL, 4));
        let r = reply(answer(
            &mut machine,
            &mut stop,
            &Manipulate::read_physical_memory(1 << 40, 16, 0),
            3944,
        ));
        assert_eq!((r.return_status, r.data.len()), (STATUS_UNSUCCESSFUL, 0));
    }

    #[test]
    fn set_context_needs_get_context_in_this_stop() {
        let (mut machine, mut stop) = setup();
        let context = vec![0x11; context::SIZE];
        let r = reply(answer(
            &mut machine,
            &mut stop,
            &Manipulate::set_context(0x10001F, context.clone()),
            3944,
        ));
        assert_eq!(r.return_status, STATUS_UNSUCCESSFUL);
        let r = reply(answer(
            &mut machine,
            &mut stop,
            &Manipulate::get_context(),
            3944,
        ));
        assert_eq!(r.data.len(), context::SIZE);
        let r = reply(answer(
            &mut machine,
            &mut stop,
            &Manipulate::set_context(0x10001F, context.clone()),
            3944,
        ));
        assert_eq!(r.return_status, STATUS_SUCCESS);
        assert_eq!(machine.cpus[0].context, context);
    }

    #[test]
    fn set_context_ex_chunks_commit_and_reply_byte_count() {
        let (mut machine, mut stop) = setup();
        reply(answer(
            &mut machine,
            &mut stop,
            &Manipulate::get_context(),
            3944,
        ));
        let mut context = machine.cpus[0].context.clone();
        context[context::RIP..context::RIP + 8].copy_from_slice(&0x1234u64.to_le_bytes());
        for (offset, len) in [(0, 0x200), (0x200, 0x200), (0x400, 0xD0)] {
            let request = Manipulate::set_context_ex(
                offset,
                0x4D0,
                context[offset as usize..(offset + len) as usize].to_vec(),
            );
            let r = reply(answer(&mut machine, &mut stop, &request, 3944));
            assert_eq!(r.return_status, STATUS_SUCCESS);
            assert!(matches!(r.params, ManipulateParams::ContextEx(p) if p.bytes_copied == len));
            let committed = machine.cpus[0].rip() == 0x1234;
            assert_eq!(committed, offset == 0x400);
        }
        let bad = Manipulate::set_context_ex(0x4C0, 0x4D0, vec![0; 0x20]);
        assert_eq!(
            reply(answer(&mut machine, &mut stop, &bad, 3944)).return_status,
            STATUS_INVALID_PARAMETER
        );
    }

    #[test]
    fn get_context_ex_reports_the_full_size() {
        let (mut machine, mut stop) = setup();
        let r = reply(answer(
            &mut machine,
            &mut stop,
            &Manipulate::get_context_ex(0x400, 0x1000),
            3944,
        ));
        assert!(matches!(r.params, ManipulateParams::ContextEx(p)
            if p.offset == 0x400 && p.byte_count == 0x4D0 && p.bytes_copied == 0xD0));
        assert_eq!(r.data.len(), 0xD0);
        assert!(stop.context_sent);
    }

    #[test]
    fn control_space_msr_query_breakpoints_unknown() {
        let (mut machine, mut stop) = setup();
        let r = reply(answer(
            &mut machine,
            &mut stop,
            &Manipulate::read_control_space(2, 0xA8),
            3944,
        ));
        assert_eq!(r.data.len(), 0xA8);
        assert_ne!(
            u64::from_le_bytes(r.data[kspecial::CR3..kspecial::CR3 + 8].try_into().unwrap()),
            0
        );
        let r = reply(answer(
            &mut machine,
            &mut stop,
            &Manipulate::read_control_space(3, 8),
            3944,
        ));
        assert_eq!(r.data.as_ref(), machine.cpus[0].kthread.to_le_bytes());
        let r = reply(answer(
            &mut machine,
            &mut stop,
            &Manipulate::read_control_space(9, 8),
            3944,
        ));
        assert_eq!(r.return_status, STATUS_UNSUCCESSFUL);

        let r = reply(answer(
            &mut machine,
            &mut stop,
            &Manipulate::read_msr(0xC000_0080),
            3944,
        ));
        assert!(matches!(r.params, ManipulateParams::Msr(m) if m.value() == 0xD01));

        let mut query = Manipulate::query_memory(machine.kern_base);
        let r = reply(answer(&mut machine, &mut stop, &query, 3944));
        assert!(
            matches!(r.params, ManipulateParams::QueryMemory(q) if q.address_space == 2 && q.flags == 7)
        );
        if let ManipulateParams::QueryMemory(q) = &mut query.params {
            q.address_space = 1;
        }
        assert_eq!(
            reply(answer(&mut machine, &mut stop, &query, 3944)).return_status,
            STATUS_INVALID_PARAMETER
        );

        for handle in 1..=32 {
            let r = reply(answer(
                &mut machine,
                &mut stop,
                &Manipulate::restore_breakpoint(handle),
                3944,
            ));
            assert_eq!(r.return_status, STATUS_UNSUCCESSFUL);
        }
        let pc = machine.break_pc + 1;
        let r = reply(answer(
            &mut machine,
            &mut stop,
            &Manipulate::write_breakpoint(pc),
            3944,
        ));
        assert!(matches!(r.params, ManipulateParams::WriteBreakPoint(b) if b.handle == 1));
        let r = reply(answer(
            &mut machine,
            &mut stop,
            &Manipulate::restore_breakpoint(1),
            3944,
        ));
        assert_eq!(r.return_status, STATUS_SUCCESS);

        let unknown = Manipulate::new(ApiNumber(0x3199), ManipulateParams::Other([7; 40]));
        let r = reply(answer(&mut machine, &mut stop, &unknown, 3944));
        assert_eq!(r.return_status, STATUS_UNSUCCESSFUL);
        assert_eq!(
            answer(
                &mut machine,
                &mut stop,
                &Manipulate::continue2(0x10002, 0x400),
                3944
            ),
            Outcome::Resume
        );
        assert_eq!(
            answer(
                &mut machine,
                &mut stop,
                &Manipulate::switch_processor(1),
                3944
            ),
            Outcome::SwitchProcessor(1)
        );
    }
}
