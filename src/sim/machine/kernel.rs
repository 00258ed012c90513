//! The built-in tiny kernel: a PE header with an RSDS record naming ntkrnlmp.pdb, the break-in
//! instruction, PsLoadedModuleList with one KLDR entry (ntoskrnl.exe), the debugger data list
//! and its KDBG block (kd.md §4), and per-CPU KPCR/KPRCB/KTHREAD/stack pages.

use kdproto::api::{
    Version, DBGKD_64BIT_PROTOCOL_VERSION2, DBGKD_VERS_FLAG_DATA, DBGKD_VERS_FLAG_MP,
    DBGKD_VERS_FLAG_PTR64, IMAGE_FILE_MACHINE_AMD64, KD_SECONDARY_VERSION_AMD64_CONTEXT,
    MAJOR_VERSION_FREE,
};

use super::memory::{put_u16, put_u32, put_u64, SimMemory};

/// SizeOfImage of the tiny kernel: headers, .text, .data.
pub const IMAGE_SIZE: u32 = 0x3000;
/// Link time stamp written into the PE and KLDR entry.
pub const TIME_DATE_STAMP: u32 = 0x6543_2100;
/// PDB name in the RSDS record.
pub const PDB_NAME: &str = "ntkrnlmp.pdb";
/// PDB GUID in the RSDS record (on-disk byte order).
pub const PDB_GUID: [u8; 16] = [
    0x4b, 0x44, 0x4c, 0x45, 0x41, 0x4b, 0x53, 0x49, 0x4d, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66,
];
pub const PDB_AGE: u32 = 1;
/// 'KDBG' as the u32 OwnerTag (kd.md §4.1).
pub const KDBG_OWNER_TAG: u32 = u32::from_le_bytes(*b"KDBG");
/// sizeof(KDDEBUGGER_DATA64), RS5 layout (kd.md §4.2).
pub const KDBG_SIZE: u32 = 0x380;

const E_LFANEW: usize = 0x80;
const DEBUG_DIRECTORY_RVA: u32 = 0x300;
const RSDS_RVA: u32 = 0x320;
const TEXT_RVA: u64 = 0x1000;
const DATA_RVA: u64 = 0x2000;
/// Offset of RtlpBreakWithStatusInstruction in the image.
const BREAK_RVA: u64 = 0x1380;
/// Per-CPU region: KPCR, KPRCB at +0x180, stack pages, KTHREAD at +0x6000.
const PER_CPU_BASE: u64 = 0x0100_0000;
const PER_CPU_STRIDE: u64 = 0x8000;
const KPRCB_IN_KPCR: u64 = 0x180;
const KTHREAD_IN_CPU: u64 = 0x6000;
const STACK_TOP_IN_CPU: u64 = 0x5F00;

/// Where everything of the tiny kernel lives, from its base.
#[derive(Debug, Clone, Copy)]
pub struct KernelLayout {
    pub base: u64,
    pub processors: u16,
}

impl KernelLayout {
    pub fn new(base: u64, processors: u16) -> Self {
        Self { base, processors }
    }

    pub fn break_pc(&self) -> u64 {
        self.base + BREAK_RVA
    }

    pub fn ps_loaded_module_list(&self) -> u64 {
        self.base + DATA_RVA
    }

    pub fn debugger_data_list(&self) -> u64 {
        self.base + DATA_RVA + 0x10
    }

    pub fn nt_build_number(&self) -> u64 {
        self.base + DATA_RVA + 0x20
    }

    pub fn ntoskrnl_entry(&self) -> u64 {
        self.base + DATA_RVA + 0x100
    }

    fn full_name_buffer(&self) -> u64 {
        self.base + DATA_RVA + 0x200
    }

    fn base_name_buffer(&self) -> u64 {
        self.base + DATA_RVA + 0x280
    }

    pub fn ki_processor_block(&self) -> u64 {
        self.base + DATA_RVA + 0x300
    }

    pub fn kdbg(&self) -> u64 {
        self.base + DATA_RVA + 0x400
    }

    pub fn nt_build_lab(&self) -> u64 {
        self.base + DATA_RVA + 0x800
    }

    fn per_cpu(&self, index: u16) -> u64 {
        self.base + PER_CPU_BASE + u64::from(index) * PER_CPU_STRIDE
    }

    pub fn kpcr(&self, index: u16) -> u64 {
        self.per_cpu(index)
    }

    pub fn kprcb(&self, index: u16) -> u64 {
        self.per_cpu(index) + KPRCB_IN_KPCR
    }

    pub fn kthread(&self, index: u16) -> u64 {
        self.per_cpu(index) + KTHREAD_IN_CPU
    }

    pub fn stack_top(&self, index: u16) -> u64 {
        self.per_cpu(index) + STACK_TOP_IN_CPU
    }
}

/// Lays the tiny kernel out in `memory`.
pub fn map_kernel(memory: &mut SimMemory, layout: &KernelLayout, build: u16) {
    memory.map(layout.base, &pe_headers(layout.base));
    memory.map_zeroed(layout.base, u64::from(IMAGE_SIZE));

    // RtlpBreakWithStatusInstruction: int3; ret; then padding (the SYZ capture's stream).
    memory.write(
        layout.break_pc(),
        &[
            0xCC, 0xC3, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC, 0x0F, 0x1F, 0x84, 0x00, 0x00, 0x00,
            0x00, 0x00,
        ],
    );

    // PsLoadedModuleList <-> the ntoskrnl entry.
    let head = layout.ps_loaded_module_list();
    let entry = layout.ntoskrnl_entry();
    write_list_entry(memory, head, entry, entry);
    memory.write(entry, &kldr_entry(layout, head));
    memory.write(
        layout.full_name_buffer(),
        &utf16(r"\SystemRoot\system32\ntoskrnl.exe"),
    );
    memory.write(layout.base_name_buffer(), &utf16("ntoskrnl.exe"));

    // KdpDebuggerDataListHead <-> KDBG.
    let data_list = layout.debugger_data_list();
    write_list_entry(memory, data_list, layout.kdbg(), layout.kdbg());
    memory.write(layout.kdbg(), &kdbg_block(layout, data_list));

    memory.write(
        layout.nt_build_number(),
        &(0xF000_0000 | u32::from(build)).to_le_bytes(),
    );
    memory.write(
        layout.nt_build_lab(),
        format!("{build}.1.amd64fre.kdleak_sim.000000-0000\0").as_bytes(),
    );

    map_cpus(memory, layout, Some(layout.ki_processor_block()));
}

/// Maps each CPU's KPCR, KPRCB, stack and KTHREAD pages, and fills `KiProcessorBlock` (the
/// array of KPRCB pointers) when the kernel has one.
pub fn map_cpus(memory: &mut SimMemory, layout: &KernelLayout, ki_processor_block: Option<u64>) {
    for index in 0..layout.processors {
        memory.map_zeroed(layout.kpcr(index), PER_CPU_STRIDE);
        if let Some(block) = ki_processor_block {
            memory.write(
                block + 8 * u64::from(index),
                &layout.kprcb(index).to_le_bytes(),
            );
        }
        // KPCR.Self @0x18, KPCR.CurrentPrcb @0x20.
        memory.write(layout.kpcr(index) + 0x18, &layout.kpcr(index).to_le_bytes());
        memory.write(
            layout.kpcr(index) + 0x20,
            &layout.kprcb(index).to_le_bytes(),
        );
        // KPRCB.CurrentThread @0x08, KPRCB.Number @0x24.
        memory.write(
            layout.kprcb(index) + 0x08,
            &layout.kthread(index).to_le_bytes(),
        );
        memory.write(layout.kprcb(index) + 0x24, &index.to_le_bytes());
    }
}

fn write_list_entry(memory: &mut SimMemory, at: u64, flink: u64, blink: u64) {
    memory.write(at, &flink.to_le_bytes());
    memory.write(at + 8, &blink.to_le_bytes());
}

fn utf16(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// UNICODE_STRING at `offset`: Length, MaximumLength, pad, Buffer.
fn put_unicode_string(bytes: &mut [u8], offset: usize, text: &str, buffer: u64) {
    let len = (text.encode_utf16().count() * 2) as u16;
    put_u16(bytes, offset, len);
    put_u16(bytes, offset + 2, len + 2);
    put_u64(bytes, offset + 8, buffer);
}

/// KLDR_DATA_TABLE_ENTRY (x64, 0xA0 bytes; kd.md §4.3).
fn kldr_entry(layout: &KernelLayout, head: u64) -> Vec<u8> {
    let mut e = vec![0; 0xA0];
    put_u64(&mut e, 0x00, head);
    put_u64(&mut e, 0x08, head);
    put_u64(&mut e, 0x30, layout.base);
    put_u64(&mut e, 0x38, layout.base + TEXT_RVA);
    put_u32(&mut e, 0x40, IMAGE_SIZE);
    put_unicode_string(
        &mut e,
        0x48,
        r"\SystemRoot\system32\ntoskrnl.exe",
        layout.full_name_buffer(),
    );
    put_unicode_string(&mut e, 0x58, "ntoskrnl.exe", layout.base_name_buffer());
    put_u16(&mut e, 0x6C, 1);
    put_u32(&mut e, 0x98, IMAGE_SIZE);
    put_u32(&mut e, 0x9C, TIME_DATE_STAMP);
    e
}

/// KDDEBUGGER_DATA64 with the fields the sim knows (kd.md §4.2).
fn kdbg_block(layout: &KernelLayout, list_head: u64) -> Vec<u8> {
    let mut k = vec![0; KDBG_SIZE as usize];
    put_u64(&mut k, 0x00, list_head);
    put_u64(&mut k, 0x08, list_head);
    put_u32(&mut k, 0x10, KDBG_OWNER_TAG);
    put_u32(&mut k, 0x14, KDBG_SIZE);
    put_u64(&mut k, 0x18, layout.base);
    put_u64(&mut k, 0x20, layout.break_pc());
    put_u64(&mut k, 0x48, layout.ps_loaded_module_list());
    put_u64(&mut k, 0x208, layout.nt_build_lab());
    put_u64(&mut k, 0x218, layout.ki_processor_block());
    k
}

/// DOS header, PE signature, COFF header, PE32+ optional header, two sections, a debug
/// directory and the RSDS record.
fn pe_headers(image_base: u64) -> Vec<u8> {
    let mut h = vec![0; 0x400];
    h[0..2].copy_from_slice(b"MZ");
    put_u32(&mut h, 0x3C, E_LFANEW as u32);
    h[E_LFANEW..E_LFANEW + 4].copy_from_slice(b"PE\0\0");
    let coff = E_LFANEW + 4;
    put_u16(&mut h, coff, 0x8664);
    put_u16(&mut h, coff + 2, 2);
    put_u32(&mut h, coff + 4, TIME_DATE_STAMP);
    put_u16(&mut h, coff + 16, 0xF0);
    put_u16(&mut h, coff + 18, 0x22);
    let opt = coff + 20;
    put_u16(&mut h, opt, 0x20B);
    put_u32(&mut h, opt + 4, 0x1000);
    put_u32(&mut h, opt + 8, 0x1000);
    put_u32(&mut h, opt + 16, TEXT_RVA as u32);
    put_u32(&mut h, opt + 20, TEXT_RVA as u32);
    put_u64(&mut h, opt + 24, image_base);
    put_u32(&mut h, opt + 32, 0x1000);
    put_u32(&mut h, opt + 36, 0x200);
    put_u16(&mut h, opt + 40, 10);
    put_u16(&mut h, opt + 44, 10);
    put_u16(&mut h, opt + 48, 10);
    put_u32(&mut h, opt + 56, IMAGE_SIZE);
    put_u32(&mut h, opt + 60, 0x400);
    put_u16(&mut h, opt + 68, 1); // IMAGE_SUBSYSTEM_NATIVE
    put_u32(&mut h, opt + 108, 16);
    // Data directory 6: debug.
    put_u32(&mut h, opt + 112 + 6 * 8, DEBUG_DIRECTORY_RVA);
    put_u32(&mut h, opt + 112 + 6 * 8 + 4, 28);
    let sections = opt + 0xF0;
    for (i, (name, rva, characteristics)) in [
        (b".text\0\0\0", TEXT_RVA, 0x6000_0020u32),
        (b".data\0\0\0", DATA_RVA, 0xC000_0040u32),
    ]
    .into_iter()
    .enumerate()
    {
        let s = sections + 40 * i;
        h[s..s + 8].copy_from_slice(name);
        put_u32(&mut h, s + 8, 0x1000);
        put_u32(&mut h, s + 12, rva as u32);
        put_u32(&mut h, s + 16, 0x1000);
        put_u32(&mut h, s + 20, rva as u32);
        put_u32(&mut h, s + 36, characteristics);
    }
    let rsds = rsds_record();
    let d = DEBUG_DIRECTORY_RVA as usize;
    put_u32(&mut h, d + 4, TIME_DATE_STAMP);
    put_u32(&mut h, d + 12, 2); // IMAGE_DEBUG_TYPE_CODEVIEW
    put_u32(&mut h, d + 16, rsds.len() as u32);
    put_u32(&mut h, d + 20, RSDS_RVA);
    put_u32(&mut h, d + 24, RSDS_RVA);
    h[RSDS_RVA as usize..RSDS_RVA as usize + rsds.len()].copy_from_slice(&rsds);
    h
}

fn rsds_record() -> Vec<u8> {
    let mut r = b"RSDS".to_vec();
    r.extend_from_slice(&PDB_GUID);
    r.extend_from_slice(&PDB_AGE.to_le_bytes());
    r.extend_from_slice(PDB_NAME.as_bytes());
    r.push(0);
    r
}

/// The `DBGKD_GET_VERSION64` of a kernel (kd.md §3.5): what GetVersion answers and what
/// `nt!KdVersionBlock` holds.
pub fn kd_version(
    build: u16,
    processors: u16,
    kern_base: u64,
    ps_loaded_module_list: u64,
    debugger_data_list: u64,
) -> Version {
    let mut flags = DBGKD_VERS_FLAG_PTR64 | DBGKD_VERS_FLAG_DATA;
    if processors > 1 {
        flags |= DBGKD_VERS_FLAG_MP;
    }
    Version {
        major_version: MAJOR_VERSION_FREE,
        minor_version: build,
        protocol_version: DBGKD_64BIT_PROTOCOL_VERSION2,
        kd_secondary_version: KD_SECONDARY_VERSION_AMD64_CONTEXT,
        flags,
        machine_type: IMAGE_FILE_MACHINE_AMD64,
        max_packet_type: 0x0C,
        max_state_change: 3,
        // DbgKdMaximumManipulate − DbgKdMinimumManipulate on Windows 10/11 (0x3163 − 0x3130).
        max_manipulate: 0x33,
        simulation: 0,
        unused: 0,
        kern_base,
        ps_loaded_module_list,
        debugger_data_list,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(memory: &SimMemory, addr: u64) -> u32 {
        u32::from_le_bytes(memory.read(addr, 4).0.try_into().unwrap())
    }

    #[test]
    fn pe_header_leads_to_the_rsds_record() {
        let layout = KernelLayout::new(0xffff_f803_1240_0000, 1);
        let mut memory = SimMemory::new();
        map_kernel(&mut memory, &layout, 22621);
        let base = layout.base;
        assert_eq!(memory.read(base, 2).0, b"MZ");
        let pe = base + u64::from(u32_at(&memory, base + 0x3C));
        assert_eq!(memory.read(pe, 4).0, b"PE\0\0");
        let opt = pe + 24;
        assert_eq!(u32_at(&memory, opt + 56), IMAGE_SIZE);
        let debug_rva = u32_at(&memory, opt + 112 + 48);
        let raw = u32_at(&memory, base + u64::from(debug_rva) + 20);
        let record = memory
            .read(base + u64::from(raw), 24 + PDB_NAME.len() + 1)
            .0;
        assert_eq!(&record[..4], b"RSDS");
        assert_eq!(&record[24..24 + PDB_NAME.len()], PDB_NAME.as_bytes());
    }

    #[test]
    fn module_list_and_kdbg_are_walkable() {
        let layout = KernelLayout::new(0xffff_f803_1240_0000, 2);
        let mut memory = SimMemory::new();
        map_kernel(&mut memory, &layout, 22621);
        let head = layout.ps_loaded_module_list();
        let entry = memory.read_u64(head).unwrap();
        assert_eq!(memory.read_u64(entry + 0x30), Some(layout.base));
        let len = memory.read(entry + 0x58, 2).0;
        let buffer = memory.read_u64(entry + 0x60).unwrap();
        let name = memory
            .read(buffer, usize::from(u16::from_le_bytes([len[0], len[1]])))
            .0;
        assert_eq!(name, utf16("ntoskrnl.exe"));
        assert_eq!(memory.read_u64(entry), Some(head));

        let kdbg = memory.read_u64(layout.debugger_data_list()).unwrap();
        assert_eq!(memory.read(kdbg + 0x10, 4).0, b"KDBG");
        assert_eq!(memory.read_u64(kdbg + 0x18), Some(layout.base));
        assert_eq!(memory.read_u64(kdbg + 0x48), Some(head));
        assert_eq!(
            memory.read_u64(layout.kpcr(1) + 0x20),
            Some(layout.kprcb(1))
        );
    }
}
