//! The simulated machine's memory as Windows lays it out, checked field by field through the ISF
//! (the independent reader's view is `tests/volatility_interop.rs`): the page tables map
//! themselves at the scenario's self-map slot and `nt!MmPteBase` / the KDBG's `PteBase` say the
//! same; `KUSER_SHARED_DATA` sits at 0xFFFFF780_00000000 with the build's versions; `nt!KdVersionBlock`
//! holds exactly what GetVersion answers, `KeNumberProcessors` the CPU count; reads through the
//! self-map window return the paging structures.

use kdleak::sim::machine::memory::PAGE_SIZE;
use kdleak::sim::machine::physical::{self, pte_base, CR3, FIXED_SELF_MAP_SLOT, PTE_ADDRESS_MASK};
use kdleak::sim::world::isf::{read_field, Isf};
use kdleak::sim::world::scenario::{
    csd_version, default_root, nt_version, Scenario, BUILTIN, KUSER_SHARED_DATA,
};
use kdleak::sim::Machine;

/// `ty.path` of the structure at `address` in the machine's memory.
fn field(machine: &Machine, isf: &Isf, address: u64, ty: &str, path: &str) -> u64 {
    let info = isf.field(ty, path).unwrap();
    let size = isf.type_size(ty).unwrap() as usize;
    let (bytes, complete) = machine.memory.read(address, size);
    assert!(complete, "{ty} at {address:#x} is mapped");
    read_field(&bytes, &info).unwrap()
}

fn symbol(machine_symbols: &std::collections::BTreeMap<String, u64>, name: &str) -> Option<u64> {
    machine_symbols.get(&format!("nt!{name}")).copied()
}

#[test]
fn page_tables_map_themselves_where_mm_pte_base_says() {
    for name in BUILTIN {
        let scenario = Scenario::from_name(name).unwrap();
        let report = scenario.build_in(default_root().unwrap()).unwrap();
        let symbols = &report.image.symbols;
        let expected_slot = scenario.kernel.self_map_slot.unwrap().0 as u16;
        let mut machine = Machine::builder().image(report.image.clone()).build();
        assert_eq!(machine.self_map_slot, expected_slot, "{name}");
        let build = report.image.build;
        if build < 14393 {
            assert_eq!(expected_slot, FIXED_SELF_MAP_SLOT, "{name}");
        } else {
            assert_ne!(expected_slot, FIXED_SELF_MAP_SLOT, "{name}");
        }
        let base = pte_base(expected_slot);
        match symbol(symbols, "MmPteBase") {
            Some(at) => assert_eq!(machine.memory.read_u64(at), Some(base), "{name}"),
            None => assert!(build < 14393, "{name}: a 1607+ kernel has MmPteBase"),
        }
        let kdbg = machine.kdbg;
        let kdbg_size =
            u32::from_le_bytes(machine.memory.read(kdbg + 0x14, 4).0.try_into().unwrap());
        if kdbg_size >= 0x368 {
            assert_eq!(
                machine.memory.read_u64(kdbg + 0x360),
                Some(base),
                "{name}: KDBG PteBase"
            );
        }

        // Exactly one PML4 entry points back at the PML4 (what dump readers scan for).
        let physical = machine.physical();
        let (pml4, _) = physical.read(&machine.memory, CR3, PAGE_SIZE as usize);
        let self_refs: Vec<usize> = pml4
            .chunks_exact(8)
            .enumerate()
            .filter(|(_, e)| {
                let e = u64::from_le_bytes((*e).try_into().unwrap());
                e & 1 == 1 && e & PTE_ADDRESS_MASK == CR3
            })
            .map(|(i, _)| i)
            .collect();
        assert_eq!(self_refs, [usize::from(expected_slot)], "{name}");

        // The KD view through the window: the PML4 at PXE_BASE, the kernel's PTE at
        // MmPteBase + (va >> 9 & 0x7F_FFFF_FFF8).
        let slot = u64::from(expected_slot);
        let pxe_base = base | slot << 30 | slot << 21 | slot << 12;
        assert_eq!(
            machine.read_virtual(pxe_base, PAGE_SIZE as usize),
            (pml4, true)
        );
        let pte = base + ((machine.kern_base >> 9) & 0x7F_FFFF_FFF8);
        let (bytes, complete) = machine.read_virtual(pte, 8);
        assert!(complete, "{name}");
        let frame = machine.memory.frame_of(machine.kern_base).unwrap();
        assert_eq!(
            u64::from_le_bytes(bytes.try_into().unwrap()) & PTE_ADDRESS_MASK,
            frame * PAGE_SIZE,
            "{name}"
        );
        // Outside the window nothing changed: the same bytes as the page memory.
        assert_eq!(
            machine.read_virtual(machine.kern_base, 0x40),
            machine.memory.read(machine.kern_base, 0x40)
        );
    }
}

#[test]
fn kuser_shared_data_and_the_version_block_are_the_builds() {
    for name in ["win7-myfault", "win10-myfault", "win11-myfault"] {
        let scenario = Scenario::from_name(name).unwrap();
        let report = scenario.build_in(default_root().unwrap()).unwrap();
        let isf = Isf::load_cached(&report.isf_path).unwrap();
        let symbols = report.image.symbols.clone();
        let build = report.image.build;
        let mut machine = Machine::builder().image(report.image.clone()).build();
        let ku = "_KUSER_SHARED_DATA";
        let kuser = |m: &Machine, path: &str| field(m, &isf, KUSER_SHARED_DATA, ku, path);
        let (major, minor) = nt_version(build);
        assert_eq!(
            kuser(&machine, "NtMajorVersion"),
            u64::from(major),
            "{name}"
        );
        assert_eq!(
            kuser(&machine, "NtMinorVersion"),
            u64::from(minor),
            "{name}"
        );
        if isf.has_field(ku, "NtBuildNumber") {
            assert_eq!(kuser(&machine, "NtBuildNumber"), u64::from(build), "{name}");
        }
        assert_eq!(kuser(&machine, "ImageNumberLow"), 0x8664);
        assert_eq!(kuser(&machine, "ImageNumberHigh"), 0x8664);
        assert_eq!(kuser(&machine, "NtProductType"), 1, "NtProductWinNt");
        assert_eq!(kuser(&machine, "ProductTypeIsValid"), 1);
        assert_eq!(kuser(&machine, "ActiveProcessorCount"), 1);
        let root_offset = isf.offset(ku, "NtSystemRoot").unwrap();
        let root = machine.memory.read(KUSER_SHARED_DATA + root_offset, 22).0;
        assert_eq!(
            root,
            "C:\\Windows\0"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect::<Vec<_>>()
        );

        // KdVersionBlock == the GetVersion answer, field by field.
        let at = symbol(&symbols, "KdVersionBlock").expect("the fixture kernel has KdVersionBlock");
        let vt = "_DBGKD_GET_VERSION64";
        let version = machine.version();
        let block = |m: &Machine, path: &str| field(m, &isf, at, vt, path);
        for (path, value) in [
            ("MajorVersion", u64::from(version.major_version)),
            ("MinorVersion", u64::from(version.minor_version)),
            ("ProtocolVersion", u64::from(version.protocol_version)),
            (
                "KdSecondaryVersion",
                u64::from(version.kd_secondary_version),
            ),
            ("Flags", u64::from(version.flags)),
            ("MachineType", u64::from(version.machine_type)),
            ("MaxPacketType", u64::from(version.max_packet_type)),
            ("MaxStateChange", u64::from(version.max_state_change)),
            ("MaxManipulate", u64::from(version.max_manipulate)),
            ("KernBase", version.kern_base),
            ("PsLoadedModuleList", version.ps_loaded_module_list),
            ("DebuggerDataList", version.debugger_data_list),
        ] {
            assert_eq!(
                block(&machine, path),
                value,
                "{name}: KdVersionBlock.{path}"
            );
        }
        assert_eq!(u64::from(version.minor_version), u64::from(build));
        // The debugger data list it names leads to the KDBG.
        assert_eq!(
            machine.memory.read_u64(version.debugger_data_list),
            Some(machine.kdbg)
        );
        let count = symbol(&symbols, "KeNumberProcessors").unwrap();
        assert_eq!(machine.memory.read(count, 4).0, 1u32.to_le_bytes());
        let csd = symbol(&symbols, "CmNtCSDVersion").unwrap();
        assert_eq!(
            machine.memory.read(csd, 4).0,
            (csd_version(build) as u32).to_le_bytes()
        );
        // The KDBG points at NtBuildLab and CmNtCSDVersion, as a real one does.
        assert_eq!(
            machine.memory.read_u64(machine.kdbg + 0x208),
            symbol(&symbols, "NtBuildLab")
        );
        assert_eq!(machine.memory.read_u64(machine.kdbg + 0x268), Some(csd));

        // The clock.
        let filetime = 0x01DB_1234_5678_9ABC;
        assert!(machine.set_system_time(filetime));
        assert_eq!(
            kuser(&machine, "SystemTime.LowPart"),
            filetime & 0xFFFF_FFFF
        );
        assert_eq!(kuser(&machine, "SystemTime.High1Time"), filetime >> 32);
        assert_eq!(kuser(&machine, "SystemTime.High2Time"), filetime >> 32);

        // More CPUs: the builder updates what the boot code would.
        let machine = Machine::builder().processors(3).image(report.image).build();
        let version = machine.version();
        assert_eq!(version.flags & 1, 1, "DBGKD_VERS_FLAG_MP");
        assert_eq!(block(&machine, "Flags"), u64::from(version.flags));
        assert_eq!(machine.memory.read(count, 4).0, 3u32.to_le_bytes());
        assert_eq!(kuser(&machine, "ActiveProcessorCount"), 3);
    }
}

#[test]
fn generated_scenarios_get_a_deterministic_slot_and_bad_slots_are_refused() {
    let spec = "gen:build=19041,drivers=2,allocs=10,log=0,ring=0x100,seed=1";
    let a = Machine::for_scenario(spec).unwrap();
    let b = Machine::for_scenario(spec).unwrap();
    assert_eq!(a.self_map_slot, b.self_map_slot);
    assert!(physical::RANDOMIZED_SELF_MAP_SLOTS.contains(&a.self_map_slot));
    assert_ne!(a.self_map_slot, FIXED_SELF_MAP_SLOT);
    let win7 = Machine::for_scenario("gen:build=7601,drivers=2,allocs=10,log=0,ring=0x100,seed=1")
        .unwrap();
    assert_eq!(win7.self_map_slot, FIXED_SELF_MAP_SLOT);

    let with_slot = |name: &str, slot: &str| {
        let text = std::fs::read_to_string(
            default_root()
                .unwrap()
                .join(format!("captures/scenarios/{name}.toml")),
        )
        .unwrap();
        let text = text
            .lines()
            .map(|line| {
                if line.starts_with("self_map_slot") {
                    format!("self_map_slot = \"{slot}\"")
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        Scenario::from_toml(&text)
            .unwrap()
            .build_in(default_root().unwrap())
    };
    let error = with_slot("win7-myfault", "0x1a3").unwrap_err().to_string();
    assert!(error.contains("0x1ed"), "{error}");
    // 0x1F0 holds the win10 kernel; 0x1FF is the HAL's.
    let error = with_slot("win10-myfault", "0x1f0").unwrap_err().to_string();
    assert!(error.contains("maps memory"), "{error}");
    let error = with_slot("win10-myfault", "0x1ff").unwrap_err().to_string();
    assert!(error.contains("outside"), "{error}");
    assert!(with_slot("win10-myfault", "0x100").is_ok());
}
