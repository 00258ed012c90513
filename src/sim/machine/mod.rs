//! The simulated machine: its memory, its CPUs and the stop loop that answers the host.
//!
//! * [`memory`] — sparse virtual pages with Windows' partial-read rule; [`physical`] — the
//!   frames behind them and real x64 page tables.
//! * [`kernel`] — the built-in tiny kernel and the version block; [`Machine`] (here) — the
//!   kernel state a real target answers from: version block, per-CPU structures, registers,
//!   MSRs, breakpoints and memory.
//! * [`breakpoints`], [`set_context`] — the breakpoint table and SetContextEx staging;
//!   [`quirks`] — how targets that are not Windows' own stub behave.
//! * [`requests`] — each DbgKd API answered from the machine; [`target`] — the sans-IO stop
//!   loop (break-in → state change → requests → Continue) that the wire's transports drive.
//!
//! Dependencies point down that list: target → requests → [`Machine`] → kernel → memory.
//! [`Machine::builder`] makes the built-in tiny kernel ([`self::kernel`]); scenario files and
//! ISF-driven layouts will feed the same builder later.

pub mod breakpoints;
pub mod kernel;
pub mod memory;
pub mod physical;
pub mod quirks;
pub mod requests;
pub mod set_context;
pub mod target;

use std::collections::BTreeMap;
use std::sync::Arc;

use kdproto::api::{context, kspecial, Version};

use self::breakpoints::BreakpointTable;
use self::kernel::{kd_version, KernelLayout};
use self::memory::{put_u16, put_u32, put_u64, SimMemory, PAGE_SIZE};
use self::physical::PhysicalMemory;
use self::quirks::{decode_kdbg_word, encode_kdbg_word, KdbgKeys, Quirks};
use crate::sim::world::scenario::image::RuntimeSites;
use crate::sim::world::scenario::{MemoryImage, Scenario, ScenarioError};
use crate::sim::world::timeline::Timeline;

/// IA32_EFER.
pub const MSR_EFER: u32 = 0xC000_0080;
/// EFER of a running x64 Windows: SCE | LME | LMA | NXE.
pub const EFER_VALUE: u64 = 0xD01;
/// Default kernel base (the address ntoseye printed for the synthetic kernel, kd.md §7.3).
pub const DEFAULT_KERN_BASE: u64 = 0xffff_f803_1240_0000;
/// Default build number (Windows 11 22H2).
pub const DEFAULT_BUILD: u16 = 22621;
/// CR3 of every CPU: the PML4 of the simulated page tables ([`self::physical`]).
pub const DEFAULT_CR3: u64 = self::physical::CR3;
/// Dr7 with only the reserved bit 10 set, as in every captured control report.
pub const DEFAULT_DR7: u64 = 0x400;
/// CONTEXT.FltSave (XMM_SAVE_AREA32 at 0x100): ControlWord @+0, MxCsr @+0x18 (winnt.h).
const FLT_SAVE_CONTROL_WORD: usize = 0x100;
const FLT_SAVE_MX_CSR: usize = 0x118;
/// DBG_STATUS_CONTROL_C: RCX of a break-in stop (kd.md §2.7).
pub const DBG_STATUS_CONTROL_C: u64 = 1;

/// One processor's state.
#[derive(Debug, Clone)]
pub struct Cpu {
    pub kpcr: u64,
    pub kprcb: u64,
    pub kthread: u64,
    /// KSPECIAL_REGISTERS (Windows 11 size, 0xF0).
    pub special: Vec<u8>,
    /// The AMD64 CONTEXT (0x4D0 bytes).
    pub context: Vec<u8>,
}

impl Cpu {
    pub fn rip(&self) -> u64 {
        read_u64(&self.context, context::RIP)
    }

    pub fn context_u64(&self, offset: usize) -> u64 {
        read_u64(&self.context, offset)
    }

    pub fn context_u16(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.context[offset], self.context[offset + 1]])
    }

    pub fn context_u32(&self, offset: usize) -> u32 {
        u32::from_le_bytes(
            self.context[offset..offset + 4]
                .try_into()
                .expect("4 bytes"),
        )
    }

    pub fn special_u64(&self, offset: usize) -> u64 {
        read_u64(&self.special, offset)
    }
}

/// Everything the simulated target knows.
#[derive(Debug, Clone)]
pub struct Machine {
    pub memory: SimMemory,
    pub kern_base: u64,
    pub ps_loaded_module_list: u64,
    /// Address of KdpDebuggerDataListHead (a LIST_ENTRY64 whose Flink is the KDBG block).
    pub debugger_data_list: u64,
    /// The KDDEBUGGER_DATA64 block.
    pub kdbg: u64,
    /// RtlpBreakWithStatusInstruction: the PC of a break-in stop (`CC C3` there).
    pub break_pc: u64,
    pub build: u16,
    pub cpus: Vec<Cpu>,
    pub msrs: BTreeMap<u32, u64>,
    pub breakpoints: BreakpointTable,
    /// Changes applied while the target runs (a scenario's `[[timeline]]`), if any.
    pub timeline: Option<Box<Timeline>>,
    /// How this target departs from Windows' own stub ([`Machine::apply_quirks`]).
    pub quirks: Quirks,
    /// The PML4 slot that maps the page tables ([`self::physical`]).
    pub self_map_slot: u16,
    /// Kernel variables the machine keeps current (processor count, clock).
    runtime: RuntimeSites,
    /// What this machine becomes when it bug-checks on its own (`--faults
    /// bugcheck_after_continues=N`): the scenario's `[bugcheck]` state.
    pub crash: Option<Box<Machine>>,
    /// The physical view of `memory`, rebuilt when pages were mapped or unmapped since.
    physical: Option<Arc<PhysicalMemory>>,
}

impl Machine {
    pub fn builder() -> MachineBuilder {
        MachineBuilder::default()
    }

    /// Physical memory and page tables for the current mapping (kept until pages are mapped or
    /// unmapped, so a stop's physical reads all see one layout).
    pub fn physical(&mut self) -> Arc<PhysicalMemory> {
        match &self.physical {
            Some(view) if view.generation() == self.memory.generation() => view.clone(),
            _ => {
                let view = Arc::new(PhysicalMemory::build(&self.memory, self.self_map_slot));
                self.physical = Some(view.clone());
                view
            }
        }
    }

    pub fn processor_count(&self) -> u16 {
        self.cpus.len() as u16
    }

    pub fn cpu(&self, index: u16) -> Option<&Cpu> {
        self.cpus.get(usize::from(index))
    }

    pub fn cpu_mut(&mut self, index: u16) -> Option<&mut Cpu> {
        self.cpus.get_mut(usize::from(index))
    }

    /// The KdVersionBlock GetVersion copies (kd.md §3.5), with the quirks' replacements; a
    /// scenario's kernel holds the unquirked bytes in `nt!KdVersionBlock`.
    pub fn version(&self) -> Version {
        let mut version = kd_version(
            self.build,
            self.processor_count(),
            self.kern_base,
            self.ps_loaded_module_list,
            self.debugger_data_list,
        );
        let q = &self.quirks;
        version.flags = q.version_flags.unwrap_or(version.flags);
        version.machine_type = q.machine_type.unwrap_or(version.machine_type);
        version.kern_base = q.kern_base.unwrap_or(version.kern_base);
        version.debugger_data_list = q.debugger_data_list.unwrap_or(version.debugger_data_list);
        version
    }

    /// Reads virtual memory the way the processor sees it: mapped pages, and in the self-map
    /// window the paging structures (as reading `nt!MmPteBase`-relative addresses on Windows
    /// does). Stops at the first unreadable byte (kd.md §3.10).
    pub fn read_virtual(&mut self, address: u64, len: usize) -> (Vec<u8>, bool) {
        let slot = self.self_map_slot;
        let window = |va: u64| physical::is_canonical(va) && physical::pml4_slot(va) == slot;
        let last = address.saturating_add((len as u64).saturating_sub(1));
        if !window(address) && !window(last) {
            // A read is far shorter than the 512 GiB window, so it cannot straddle it.
            return self.memory.read(address, len);
        }
        let physical = self.physical();
        let mut out = Vec::with_capacity(len.min(1 << 16));
        let mut cursor = address;
        while out.len() < len {
            let take = (PAGE_SIZE - cursor % PAGE_SIZE).min((len - out.len()) as u64) as usize;
            let (bytes, complete) = if window(cursor) {
                physical.read_virtual(&self.memory, cursor, take)
            } else {
                self.memory.read(cursor, take)
            };
            out.extend_from_slice(&bytes);
            if !complete {
                return (out, false);
            }
            match cursor.checked_add(take as u64) {
                Some(next) => cursor = next,
                None => break,
            }
        }
        let complete = out.len() == len;
        (out, complete)
    }

    /// Sets the kernel's clock (`KUSER_SHARED_DATA.SystemTime`, a FILETIME) where the kernel has
    /// one; false for the built-in kernel, which has no shared data page.
    pub fn set_system_time(&mut self, filetime: u64) -> bool {
        let Some([low, high1, high2]) = self.runtime.system_time else {
            return false;
        };
        // Windows writes High2Time, LowPart, then High1Time; a reader retries until the two high
        // parts agree.
        let high = ((filetime >> 32) as u32).to_le_bytes();
        self.memory.write(high2, &high);
        self.memory.write(low, &(filetime as u32).to_le_bytes());
        self.memory.write(high1, &high);
        true
    }

    /// Sets `KUSER_SHARED_DATA.BootId` where the kernel has it (a reboot counts the boots).
    pub fn set_boot_id(&mut self, boot: u64) -> bool {
        let Some(at) = self.runtime.boot_id else {
            return false;
        };
        let boot = u32::try_from(boot).unwrap_or(u32::MAX);
        self.memory.write(at, &boot.to_le_bytes());
        true
    }
}

impl Machine {
    /// Makes this machine behave as `quirks` say: GetVersion's replacements and unanswered reads
    /// take effect through [`Machine::quirks`]; a quirky Dr7 is written into every processor's
    /// KernelDr7 and CONTEXT.Dr7; `kdbg=encoded` encodes the KDBG block in memory.
    pub fn apply_quirks(&mut self, quirks: Quirks) {
        if let Some(dr7) = quirks.dr7 {
            for cpu in &mut self.cpus {
                put_u64(&mut cpu.special, kspecial::KERNEL_DR7, dr7);
                put_u64(&mut cpu.context, context::DR7, dr7);
            }
        }
        if quirks.encoded_kdbg && !self.quirks.encoded_kdbg {
            let keys = self.kdbg_keys();
            let size = self.kdbg_size();
            for at in (0..size).step_by(8) {
                let address = self.kdbg + at;
                if let Some(plain) = self.memory.read_u64(address) {
                    self.memory
                        .write(address, &encode_kdbg_word(plain, &keys).to_le_bytes());
                }
            }
        }
        self.quirks = quirks;
    }

    /// The simulated boot's KiWaitNever/KiWaitAlways (fixed, so dumps are reproducible) and the
    /// address standing in for `KdpDataBlockEncoded` (the kernel base: the fixtures hold none).
    pub fn kdbg_keys(&self) -> KdbgKeys {
        KdbgKeys {
            wait_never: 0x8642_0975_31fe_dcba,
            wait_always: 0x0f1e_2d3c_4b5a_6978,
            flag_address: self.kern_base,
        }
    }

    /// Bytes of the KDBG block: its header's Size (kd.md §4.2), read before any encoding.
    fn kdbg_size(&self) -> u64 {
        self.memory
            .read(self.kdbg + 0x14, 4)
            .0
            .try_into()
            .map(|b: [u8; 4]| u64::from(u32::from_le_bytes(b)))
            .unwrap_or(0)
            .min(0x1000)
    }

    /// The u64 at `offset` in the KDBG block, decoded if the block is kept encoded: what the
    /// kernel itself knows when it writes a dump header.
    pub fn kdbg_field(&self, offset: u64) -> Option<u64> {
        let raw = self.memory.read_u64(self.kdbg + offset)?;
        Some(if self.quirks.encoded_kdbg {
            decode_kdbg_word(raw, &self.kdbg_keys())
        } else {
            raw
        })
    }
}

impl Machine {
    /// The machine for a scenario name or file ([`Scenario::resolve`]), laid out.
    pub fn for_scenario(name_or_path: &str) -> Result<Machine, ScenarioError> {
        let scenario = Scenario::resolve(name_or_path)?;
        let report = scenario.build_in(crate::sim::world::scenario::default_root()?)?;
        let timeline = Timeline::new(&scenario, &report)?;
        let mut machine = Machine::builder().image(report.image).build();
        machine.timeline = timeline.map(Box::new);
        Ok(machine)
    }

    /// [`Machine::for_scenario`] for a scenario with a `[bugcheck]` that should happen while the
    /// target runs: the machine runs as the loaded-driver equivalent (no bug check, the
    /// unloading drivers loaded) and carries the bug-checked state in [`Machine::crash`].
    pub fn for_scenario_crashing_later(name_or_path: &str) -> Result<Machine, ScenarioError> {
        let scenario = Scenario::resolve(name_or_path)?;
        if scenario.bugcheck.is_none() {
            return Err(ScenarioError::Invalid(format!(
                "bugcheck_after_continues: scenario {} has no [bugcheck]",
                scenario.name
            )));
        }
        let mut before = scenario.clone();
        before.bugcheck = None;
        for driver in &mut before.drivers {
            if driver.state == crate::sim::world::scenario::DriverState::Unloading {
                driver.state = crate::sim::world::scenario::DriverState::Loaded;
            }
        }
        let root = crate::sim::world::scenario::default_root()?;
        let running = before.build_in(&root)?;
        let crashed = scenario.build_in(&root)?;
        let mut machine = Machine::builder().image(running.image).build();
        machine.crash = Some(Box::new(Machine::builder().image(crashed.image).build()));
        Ok(machine)
    }

    /// Compresses the timeline's target time (60: one target minute per wall second).
    pub fn set_time_scale(&mut self, scale: f64) {
        if let Some(timeline) = &mut self.timeline {
            timeline.set_time_scale(scale);
        }
    }

    /// Lets `wall` of running time pass for the timeline (changes fall due and are applied).
    pub fn run_for(&mut self, wall: std::time::Duration) {
        if let Some(timeline) = &mut self.timeline {
            timeline.run_for(&mut self.memory, wall);
        }
    }
}

impl Default for Machine {
    fn default() -> Self {
        Self::builder().build()
    }
}

/// Builds a [`Machine`]: the tiny built-in kernel plus any extra mappings.
#[derive(Debug, Clone)]
pub struct MachineBuilder {
    kern_base: u64,
    build: u16,
    processors: u16,
    extra: Vec<(u64, Vec<u8>)>,
    msrs: BTreeMap<u32, u64>,
    /// A laid-out scenario that replaces the tiny built-in kernel.
    image: Option<MemoryImage>,
}

impl Default for MachineBuilder {
    fn default() -> Self {
        Self {
            kern_base: DEFAULT_KERN_BASE,
            build: DEFAULT_BUILD,
            processors: 1,
            extra: Vec::new(),
            msrs: BTreeMap::from([(MSR_EFER, EFER_VALUE)]),
            image: None,
        }
    }
}

impl MachineBuilder {
    /// Base of the kernel image (page aligned).
    pub fn kern_base(mut self, base: u64) -> Self {
        self.kern_base = base & !0xFFF;
        self
    }

    pub fn build_number(mut self, build: u16) -> Self {
        self.build = build;
        self
    }

    /// Number of CPUs (at least 1).
    pub fn processors(mut self, count: u16) -> Self {
        self.processors = count.max(1);
        self
    }

    /// Maps extra bytes (a driver image, pool contents…) after the kernel is laid out.
    pub fn map(mut self, address: u64, bytes: impl Into<Vec<u8>>) -> Self {
        self.extra.push((address, bytes.into()));
        self
    }

    /// Serves a scenario's memory (fixture kernel and drivers, verifier structures) instead of
    /// the tiny built-in kernel. Its kernel base, module list, debugger data list, break-in PC
    /// and build replace the builder's; CPUs get their own pages beside the kernel.
    pub fn image(mut self, image: MemoryImage) -> Self {
        self.kern_base = image.kern_base;
        self.build = u16::try_from(image.build).unwrap_or(u16::MAX);
        self.image = Some(image);
        self
    }

    pub fn msr(mut self, msr: u32, value: u64) -> Self {
        self.msrs.insert(msr, value);
        self
    }

    pub fn build(self) -> Machine {
        let mut memory = SimMemory::new();
        let layout = KernelLayout::new(self.kern_base, self.processors);
        let mut runtime = RuntimeSites::default();
        let mut self_map_slot = None;
        let anchors = match &self.image {
            None => {
                kernel::map_kernel(&mut memory, &layout, self.build);
                Anchors {
                    ps_loaded_module_list: layout.ps_loaded_module_list(),
                    debugger_data_list: layout.debugger_data_list(),
                    kdbg: layout.kdbg(),
                    break_pc: layout.break_pc(),
                }
            }
            Some(image) => {
                for (address, bytes) in &image.regions {
                    memory.map(*address, bytes);
                }
                let processor_block = image.symbols.get("KiProcessorBlock").copied();
                kernel::map_cpus(&mut memory, &layout, processor_block);
                runtime = image.runtime.clone();
                self_map_slot = Some(image.self_map_slot);
                Anchors {
                    ps_loaded_module_list: image.ps_loaded_module_list,
                    debugger_data_list: image.debugger_data_list,
                    // KdpDebuggerDataListHead.Flink is the block (kd.md §4.1).
                    kdbg: memory.read_u64(image.debugger_data_list).unwrap_or(0),
                    break_pc: image.break_pc,
                }
            }
        };
        let cpus = (0..self.processors)
            .map(|i| self.make_cpu(&layout, i, anchors.break_pc))
            .collect();
        for (address, bytes) in &self.extra {
            memory.map(*address, bytes);
        }
        // The built-in kernel's slot avoids whatever was mapped; a scenario's was chosen by its
        // layout (which wrote MmPteBase from it).
        let self_map_slot = self_map_slot.unwrap_or_else(|| {
            let taken = memory
                .frames()
                .map(|(va, _)| physical::pml4_slot(va))
                .collect();
            physical::default_self_map_slot(u32::from(self.build), &kernel::PDB_GUID, &taken)
                .unwrap_or(physical::FIXED_SELF_MAP_SLOT)
        });
        // What KdInitSystem and the processor start-up leave behind for this many CPUs.
        for &count in &runtime.processor_counts {
            memory.write(count, &u32::from(self.processors).to_le_bytes());
        }
        if let Some(flags) = runtime.version_flags {
            let version = kd_version(
                self.build,
                self.processors,
                self.kern_base,
                anchors.ps_loaded_module_list,
                anchors.debugger_data_list,
            );
            memory.write(flags, &version.flags.to_le_bytes());
        }
        Machine {
            memory,
            kern_base: self.kern_base,
            ps_loaded_module_list: anchors.ps_loaded_module_list,
            debugger_data_list: anchors.debugger_data_list,
            kdbg: anchors.kdbg,
            break_pc: anchors.break_pc,
            build: self.build,
            cpus,
            msrs: self.msrs,
            breakpoints: BreakpointTable::default(),
            timeline: None,
            quirks: Quirks::default(),
            self_map_slot,
            runtime,
            physical: None,
            crash: None,
        }
    }

    fn make_cpu(&self, layout: &KernelLayout, index: u16, break_pc: u64) -> Cpu {
        let mut special = vec![0; kspecial::SIZE_WIN11];
        put_u64(&mut special, kspecial::CR0, 0x8005_0033);
        // The page tables are built from memory on demand; their root never moves.
        put_u64(&mut special, kspecial::CR3, DEFAULT_CR3);
        put_u64(&mut special, kspecial::CR4, 0x0035_0ef8);
        put_u64(&mut special, kspecial::KERNEL_DR6, 0xFFFF_0FF0);
        put_u64(&mut special, kspecial::KERNEL_DR7, DEFAULT_DR7);
        put_u64(&mut special, kspecial::MSR_GS_BASE, layout.kpcr(index));

        let mut ctx = vec![0; context::SIZE];
        put_u32(&mut ctx, context::CONTEXT_FLAGS, 0x0010_001F);
        put_u32(&mut ctx, context::MX_CSR, 0x1F80);
        // The FXSAVE copy (FltSave.MxCsr) equals MxCsr in a real CONTEXT; crash dump readers
        // check it (kdmp-parser's CONTEXT::LooksGood).
        put_u32(&mut ctx, FLT_SAVE_MX_CSR, 0x1F80);
        put_u16(&mut ctx, FLT_SAVE_CONTROL_WORD, 0x027F);
        put_u16(&mut ctx, context::SEG_CS, 0x10);
        put_u16(&mut ctx, context::SEG_DS, 0x2B);
        put_u16(&mut ctx, context::SEG_ES, 0x2B);
        put_u16(&mut ctx, context::SEG_FS, 0x53);
        put_u16(&mut ctx, context::SEG_GS, 0x2B);
        put_u16(&mut ctx, context::SEG_SS, 0x18);
        put_u32(&mut ctx, context::EFLAGS, 0x86);
        put_u64(&mut ctx, context::DR6, 0xFFFF_0FF0);
        put_u64(&mut ctx, context::DR7, DEFAULT_DR7);
        put_u64(&mut ctx, context::RCX, DBG_STATUS_CONTROL_C);
        put_u64(&mut ctx, context::RSP, layout.stack_top(index));
        put_u64(&mut ctx, context::RIP, break_pc);
        Cpu {
            kpcr: layout.kpcr(index),
            kprcb: layout.kprcb(index),
            kthread: layout.kthread(index),
            special,
            context: ctx,
        }
    }
}

/// The addresses GetVersion and the stop loop report, wherever the kernel came from.
struct Anchors {
    ps_loaded_module_list: u64,
    debugger_data_list: u64,
    kdbg: u64,
    break_pc: u64,
}

pub(crate) fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use kdproto::api::DBGKD_VERS_FLAG_MP;

    use super::*;

    #[test]
    fn default_machine_answers_ntoseye_attach_checks() {
        let machine = Machine::default();
        let version = machine.version();
        assert_eq!(version.machine_type, 0x8664);
        assert_ne!(version.kern_base, 0);
        assert_ne!(version.ps_loaded_module_list, 0);
        let cpu = machine.cpu(0).unwrap();
        assert_ne!(cpu.special_u64(kspecial::CR3), 0);
        assert_eq!(cpu.special_u64(kspecial::KERNEL_DR7), 0x400);
        assert_eq!(cpu.rip(), machine.break_pc);
        assert_eq!(machine.memory.read(machine.break_pc, 2).0, vec![0xCC, 0xC3]);
        assert_eq!(machine.msrs.get(&MSR_EFER), Some(&0xD01));
        assert_eq!(cpu.context.len(), 0x4D0);
    }

    #[test]
    fn builder_options() {
        let machine = Machine::builder()
            .processors(4)
            .build_number(19045)
            .map(0xffff_c000_0000_0000, b"pool")
            .build();
        assert_eq!(machine.processor_count(), 4);
        assert_eq!(
            machine.version().flags & DBGKD_VERS_FLAG_MP,
            DBGKD_VERS_FLAG_MP
        );
        assert_eq!(machine.version().minor_version, 19045);
        assert_ne!(
            machine.cpu(0).unwrap().kthread,
            machine.cpu(3).unwrap().kthread
        );
        assert_eq!(machine.memory.read(0xffff_c000_0000_0000, 4).0, b"pool");
    }
}
