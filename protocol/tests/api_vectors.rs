//! Known-answer tests for the DbgKd API layer (`kdproto::api`): the worked bytes of kd.md §1.6,
//! the real SYZ Windows 10 state change (kd.md §1.6/§3.1), and the decrypted KD payloads of the
//! Windows 8.1 (LIB) and Windows 10 boot-debugger KDNET captures in
//! `captures/kdnet/derived-vectors.txt` §2/§3.

use std::fs;
use std::path::PathBuf;

use bytes::Bytes;
use kdproto::api::{
    context, ApiNumber, ContextExParams, ControlReport, CreateFileParams, DebugIo, DebugIoParams,
    Exception, FileIo, FileIoParams, Manipulate, ManipulateParams, MemoryParams, Message,
    StateChange, StateEvent, Version, DBGKD_VERS_FLAG_DATA, DBGKD_VERS_FLAG_MP,
    DBGKD_VERS_FLAG_PTR64, DBG_CONTINUE, IMAGE_FILE_MACHINE_AMD64, REPORT_INCLUDES_SEGS,
    REPORT_STANDARD_CS, STATUS_BREAKPOINT, STATUS_NO_SUCH_FILE, STATUS_SUCCESS,
    STATUS_UNSUCCESSFUL,
};
use kdproto::kd::{checksum, Framing, Packet, PacketType};
use kdproto::Error;

// ---- Capture helpers ------------------------------------------------------------------------------

fn capture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../captures/kdnet")
        .join(name)
}

/// The KD packet inside the named plaintext of derived-vectors.txt: it starts at plaintext offset
/// 8; its length comes from ByteCount (KDNET padding follows). Checked by `Packet::parse`.
fn derived_packet(name: &str) -> Packet {
    let text = fs::read_to_string(capture("derived-vectors.txt")).expect("derived-vectors.txt");
    let header = format!("[{name}]");
    let mut lines = text.lines().skip_while(|l| !l.starts_with(&header));
    assert!(lines.next().is_some(), "no vector {name}");
    let plain = lines
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| l.trim().strip_prefix("plaintext = "))
        .unwrap_or_else(|| panic!("{name}: no plaintext"));
    kd_packet(&hex::decode(plain).unwrap()[8..])
}

/// One KD packet (header + payload, no trailer) at the start of `bytes`.
fn kd_packet(bytes: &[u8]) -> Packet {
    let byte_count = usize::from(u16::from_le_bytes([bytes[6], bytes[7]]));
    Packet::parse(&bytes[..16 + byte_count], Framing::Datagram).expect("valid KD packet")
}

fn parse(packet: &Packet) -> Message {
    let message = Message::parse(packet.packet_type, &packet.payload).expect("parses");
    assert_eq!(
        message.encode(),
        packet.payload,
        "encode(parse(x)) must reproduce the captured payload byte for byte"
    );
    assert_eq!(message.packet_type(), packet.packet_type);
    message
}

fn manipulate(packet: &Packet) -> Manipulate {
    match parse(packet) {
        Message::Manipulate(m) => m,
        other => panic!("not a manipulate: {other:?}"),
    }
}

fn state_change(packet: &Packet) -> StateChange {
    match parse(packet) {
        Message::StateChange(m) => *m,
        other => panic!("not a state change: {other:?}"),
    }
}

fn hex_lines(lines: &[&str]) -> Vec<u8> {
    hex::decode(lines.concat()).unwrap()
}

// ---- kd.md §1.6 worked bytes ----------------------------------------------------------------------

#[test]
fn worked_get_version_request() {
    let payload = Manipulate::get_version().encode();
    let mut expected = vec![0x46, 0x31, 0, 0];
    expected.resize(56, 0);
    assert_eq!(payload.as_ref(), expected.as_slice());
    assert_eq!(checksum(&payload), 0x77);

    let wire = Packet::data(PacketType::StateManipulate, 0x8080_0000, payload)
        .to_bytes(Framing::Serial)
        .unwrap();
    let mut expected_wire = hex::decode("30303030020038000000808077000000").unwrap();
    expected_wire.extend_from_slice(&expected);
    expected_wire.push(0xAA);
    assert_eq!(wire.len(), 73);
    assert_eq!(wire.as_ref(), expected_wire.as_slice());
}

#[test]
fn worked_read_virtual_memory_request() {
    let request = Manipulate::read_virtual_memory(0xFFFF_F800_0000_0000, 0x800);
    let payload = request.encode();
    let mut expected = vec![0x30, 0x31, 0, 0];
    expected.extend_from_slice(&[0; 12]);
    expected.extend_from_slice(&[0, 0, 0, 0, 0, 0xF8, 0xFF, 0xFF]);
    expected.extend_from_slice(&[0x00, 0x08, 0, 0]);
    expected.extend_from_slice(&[0; 28]);
    assert_eq!(payload.as_ref(), expected.as_slice());
    assert_eq!(checksum(&payload), 0x35F);

    let wire = Packet::data(PacketType::StateManipulate, 0x8080_0001, payload)
        .to_bytes(Framing::Serial)
        .unwrap();
    assert_eq!(
        &wire[..16],
        hex::decode("303030300200380001008080 5f030000".replace(' ', "")).unwrap()
    );
    assert_eq!(
        request.summary(false),
        "DbgKdReadVirtualMemoryApi request addr=fffff80000000000 len=0x800"
    );

    // "The reply is a type-2 packet with ByteCount 56 + 0x800 = 0x838."
    let reply = Manipulate::reply_to(&request, STATUS_SUCCESS, vec![0u8; 0x800]);
    assert_eq!(reply.encode().len(), 0x838);
    assert_eq!(reply.memory().unwrap().actual_bytes, 0x800);
}

#[test]
fn worked_continue2() {
    let payload = Manipulate::continue2(DBG_CONTINUE, 0x400).encode();
    let mut union =
        hex::decode("02000100 00000000 0004000000000000 0100000000000000".replace(' ', ""))
            .unwrap();
    union.resize(40, 0);
    assert_eq!(&payload[..4], &[0x3C, 0x31, 0, 0]);
    assert_eq!(&payload[0x10..], union.as_slice());
    assert_eq!(checksum(&payload), 0x75);
    // Pitfall 5 (kd.md §8): the AMD64 control set starts at 0x14, Dr7 at 0x18.
    assert_eq!(&payload[0x18..0x20], &0x400u64.to_le_bytes());
}

// ---- SYZ: the real Windows 10 x64 break-in state change (kd.md §1.6, §3.1) -------------------------

/// google/syzkaller `pkg/kd/kd_test.go` `exceptionPacket`: one KDCOM data packet without its
/// trailer, as captured from Windows 10 x64 (packet bytes only).
const SYZ_PACKET: &[&str] = &[
    "303030300700f00000088080e61f0000",
    "30300000060001000200000000000000009822bc858cffff80335ec502f8ffff",
    "0300008000000000000000000000000080335ec502f8ffff0100000000000000",
    "00000000000000004000000000000000e05946c502f8ffff0000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000100000000000000",
    "f00ffeff0000000000040000000000008600000010000300ccc3cccccccccccc",
    "0f1f84000000000010002b002b005300",
];

fn syz_packet() -> Packet {
    let bytes = hex_lines(SYZ_PACKET);
    assert_eq!(bytes.len(), 16 + 240);
    kd_packet(&bytes)
}

fn syz_control_report() -> ControlReport {
    ControlReport {
        dr6: 0xFFFE_0FF0,
        dr7: 0x400,
        eflags: 0x86,
        instruction_count: 16,
        report_flags: REPORT_INCLUDES_SEGS | REPORT_STANDARD_CS,
        instruction_stream: [
            0xCC, 0xC3, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC, 0x0F, 0x1F, 0x84, 0x00, 0x00, 0x00,
            0x00, 0x00,
        ],
        cs: 0x10,
        ds: 0x2B,
        es: 0x2B,
        fs: 0x53,
    }
}

#[test]
fn syz_state_change_fields() {
    let packet = syz_packet();
    assert_eq!(packet.id, 0x8080_0800);
    assert_eq!(checksum(&packet.payload), 0x1FE6);
    let sc = state_change(&packet);
    assert_eq!(sc.new_state, ApiNumber::EXCEPTION_STATE_CHANGE);
    assert_eq!((sc.processor_level, sc.processor), (6, 1));
    assert_eq!(sc.number_processors, 2);
    assert_eq!(sc.thread, 0xFFFF_8C85_BC22_9800);
    assert_eq!(sc.program_counter, 0xFFFF_F802_C55E_3380);
    let exception = sc.exception_info().unwrap();
    assert_eq!(exception.code, STATUS_BREAKPOINT);
    assert_eq!(exception.address, sc.program_counter);
    assert_eq!(exception.parameters, vec![0]);
    assert_eq!(exception.first_chance, 1);
    assert_eq!(sc.control_report, syz_control_report());
    // The junk past NumberParameters (kd.md §3.1): 0x40 and a kernel pointer, kept as slack.
    assert_eq!(&sc.union_slack[0x28..0x30], &0x40u64.to_le_bytes());
    assert_eq!(
        &sc.union_slack[0x30..0x38],
        &0xFFFF_F802_C546_59E0u64.to_le_bytes()
    );
    assert_eq!(
        sc.to_string(),
        "StateChange Exception code=0x80000003 pc=fffff802c55e3380 cpu=1/2 first_chance=1 params=1"
    );
}

/// What can be built from kd.md alone (the table values, no junk) lands at the documented
/// offsets and differs from the capture only in the two junk parameter slots.
#[test]
fn syz_state_change_from_documented_fields() {
    let mut sc = StateChange::exception(Exception::breakpoint(0xFFFF_F802_C55E_3380));
    sc.processor_level = 6;
    sc.processor = 1;
    sc.number_processors = 2;
    sc.thread = 0xFFFF_8C85_BC22_9800;
    sc.control_report = syz_control_report();
    let built = sc.encode();
    assert_eq!(built.len(), 240);
    let u32_at = |at: usize| u32::from_le_bytes(built[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(built[at..at + 8].try_into().unwrap());
    assert_eq!(u32_at(0x00), 0x3030);
    assert_eq!(u64_at(0x10), 0xFFFF_8C85_BC22_9800);
    assert_eq!(u64_at(0x18), 0xFFFF_F802_C55E_3380);
    assert_eq!(u32_at(0x20), 0x8000_0003);
    assert_eq!(u64_at(0x30), 0xFFFF_F802_C55E_3380);
    assert_eq!(u32_at(0x38), 1);
    assert_eq!(u32_at(0xB8), 1);
    assert_eq!(u64_at(0xC0), 0xFFFE_0FF0);
    assert_eq!(u64_at(0xC8), 0x400);
    assert_eq!(u32_at(0xD0), 0x86);
    assert_eq!(&built[0xE8..0xF0], &[0x10, 0, 0x2B, 0, 0x2B, 0, 0x53, 0]);

    let real = syz_packet().payload;
    let differing: Vec<usize> = (0..240).filter(|&i| built[i] != real[i]).collect();
    assert!(
        differing.iter().all(|i| (0x48..0x58).contains(i)),
        "{differing:x?}"
    );

    // With the capture's junk as slack, the bytes are identical.
    let mut raw = [0u8; 0xA0];
    raw.copy_from_slice(&real[0x20..0xC0]);
    sc.set_union_slack(raw);
    assert_eq!(sc.encode(), real);
}

// ---- LIB: Windows 8.1 build 9600 over KDNET (derived-vectors.txt §2) -------------------------------

#[test]
fn lib_get_version_reply() {
    let request = manipulate(&derived_packet("get_version_api_req"));
    assert_eq!(request.api, ApiNumber::GET_VERSION);
    let reply = manipulate(&derived_packet("get_version_api_resp"));
    assert_eq!(reply.return_status, STATUS_SUCCESS);
    let v = *reply.version().unwrap();
    assert_eq!(v.major_version, 0x000F);
    assert_eq!(v.build(), 9600);
    assert_eq!(v.protocol_version, 6);
    assert_eq!(v.kd_secondary_version, 2);
    assert_eq!(
        v.flags,
        DBGKD_VERS_FLAG_MP | DBGKD_VERS_FLAG_DATA | DBGKD_VERS_FLAG_PTR64
    );
    assert_eq!(v.machine_type, IMAGE_FILE_MACHINE_AMD64);
    assert_eq!(v.max_packet_type, 0x0C);
    assert_eq!(v.max_state_change, 3);
    assert_eq!(v.max_manipulate, 0x31);
    assert_eq!(v.simulation, 0);
    assert_eq!(v.kern_base, 0xFFFF_F802_6BC1_8000);
    assert_eq!(v.ps_loaded_module_list, 0xFFFF_F802_6BEE_22D0);
    assert_eq!(v.debugger_data_list, 0xFFFF_F802_6BEF_91F0);
    assert!(!v.is_checked_build());
    assert_eq!(reply.union_slack, [0; 40]);

    // A simulated target answering the real request produces the real reply.
    assert_eq!(Manipulate::get_version_reply(&request, v), reply);
    assert!(reply
        .summary(true)
        .starts_with("DbgKdGetVersionApi reply build 9600 machine 0x8664"));
}

#[test]
fn lib_wait_state() {
    for name in ["wait_state", "wait_state2"] {
        let packet = derived_packet(name);
        assert_eq!(packet.packet_type, PacketType::StateChange64);
        let sc = state_change(&packet);
        let exception = sc.exception_info().unwrap();
        assert_eq!(exception.code, STATUS_BREAKPOINT);
        assert_eq!(exception.parameters.len(), 1);
        assert_eq!(exception.address, sc.program_counter);
        assert_eq!(sc.program_counter, 0xFFFF_F802_6BD7_2B90);
        assert_eq!(sc.control_report.dr7, 0x400);
        assert_eq!(sc.number_processors, 1);
        // Stale ExceptionInformation entries are real: the slack is not all zero.
        assert!(sc.union_slack.iter().any(|&b| b != 0));
    }
}

#[test]
fn lib_read_virtual_memory() {
    let request = manipulate(&derived_packet("read_virtual_memory_api_req"));
    assert_eq!(
        request.params,
        ManipulateParams::Memory(MemoryParams {
            target_base_address: 0xFFFF_F802_6BC1_9C10,
            transfer_count: 0x105,
            actual_bytes: 0,
        })
    );
    // WinDbg's junk: ProcessorLevel/Processor, ReturnStatus and the union tail.
    assert_ne!(request.return_status, 0);
    assert!(request.union_slack.iter().any(|&b| b != 0));

    let reply = manipulate(&derived_packet("read_virtual_memory_api_resp"));
    assert_eq!(reply.memory().unwrap().actual_bytes, 0x105);
    assert_eq!(reply.data.len(), 0x105);
    assert!(reply
        .data
        .starts_with(b"9600.17085.amd64fre.winblue_gdr.140330-1035"));
    // Windows echoes the request, junk included, and fills in ActualBytesRead.
    assert_eq!(
        Manipulate::reply_to(&request, STATUS_SUCCESS, reply.data.clone()),
        reply
    );
}

/// The two LIB packets not decrypted in derived-vectors.txt (`next`, `get_register_resp` of
/// `libkdnet-test_pkt.hex`), decrypted with its data key: KD header + payload.
const LIB_NEXT: &str = "303030300200b800380a0000ae1a0000303100000000000000000000000000001400000080f7ffff80000000800000006d2f11fffe070000000000000000000000000000000000004f5f67632fa5cf012fa5cf010030773cefffffffefffffff6486648643003a005c00570069006e0064006f00770073000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";
const LIB_GET_REGISTER_RESP: &[&str] = &[
    "30303030020008056e0a0000ff5201005f31000000000000000000000000000000000000d0040000d004000000000000",
    "5f31000000000000030100000000000000000000d0040000000000000000000088edd56b02f8ffff0000000000000000",
    "0000000000000000000000000000000000000000000000001f001000801f000010002b002b0053002b00180002020000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "01de0200000000000100000000000000000000008787000030dd314e01e0ffff68da6e6d02f8ffff8056344e01e0ffff",
    "90dd314e01e0ffffa0dd314e01e0ffff0000094d01e0ffff0f00000000000000000000000000000060d96e6d02f8ffff",
    "0000000000000000000000000000000080ba234e01e0ffff0100000000000000902bd76b02f8ffff0100000000000000",
    "00b2eb6b02f8ffff80e1ef6b02f8ffff801f00000000000001000000000000000c0000000000000002e1ef6b02f8ffff",
    "00000000000000000c0000000000000080e1ef6b02f8ffff80e1ef6b02f8ffff00b2eb6b02f8ffff0200000000000000",
    "ef96cb6b02f8ffff0c4ee2a00000000010452e4e01e0ffff7876d3b1fe1f0000020000000000000080892c4e01e0ffff",
    "0c4ee2a00000000000000000000000000000000000000000000000000000000001000000aa0000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000002050454e01e0ffff497189a001f8ffff0000000000000000",
    "00000000fe1f000000c0070001e0ffff0000000000000000b374254f01e0ffff00ffffff00000000b8937c4f01e0ffff",
    "0000000000000000200000000000000001000000000000000800000000000000d086814e01e0ffff80892c4e01e0ffff",
    "1ecccc6b02f8ffff0000000002f8ffff6822606c02f8ffff0000000000000000010000000000000040b3344d01e0ffff",
    "9ed5ea6b02f8ffff00a0a46b02f8ffffe0d46e6d02f8ffffd0d46e6d02f8ffffe032606c02f8ffff4863626c02f8ffff",
    "0000000000000000f0caa46b02f8ffff0048aa6b02f8ffff010000000000000001000000000000000801000000000000",
    "7a3b606c02f8ffff6096626c02f8ffffaf000000000000004863626c02f8ffffb0d46e6d02f8ffff00a0a46b02f8ffff",
    "50d96e6d02f8ffff500000000000000000a8a46b02f8ffff54d96e6d02f8ffff7a30606c02f8ffffb0d46e6d02f8ffff",
    "90d56e6d02f8ffff58d96e6d02f8ffff50d96e6d02f8ffff6096626c02f8ffffbf31606c02f8ffff6096626c02f8ffff",
    "90d56e6d02f8ffff58d96e6d02f8ffffa0d56e6d02f8ffffb50000c000000000b119606c02f8ffffb50000c000000000",
    "b119606c02f8ffffe0d66e6d02f8ffff6822606c02f8ffff1100000010005000d0d46e6d02f8ffffe0d46e6d02f8ffff",
    "8b55ca6b02f8ffff00a8a46b02f8ffff0008000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000",];

#[test]
fn lib_kuser_shared_data_read_reply() {
    let reply = manipulate(&kd_packet(&hex::decode(LIB_NEXT).unwrap()));
    let memory = reply.memory().unwrap();
    assert_eq!(memory.target_base_address, 0xFFFF_F780_0000_0014);
    assert_eq!((memory.transfer_count, memory.actual_bytes), (0x80, 0x80));
    assert_eq!(reply.data.len(), 0x80);
}

#[test]
fn lib_get_context_ex_reply() {
    let reply = manipulate(&kd_packet(&hex_lines(LIB_GET_REGISTER_RESP)));
    assert_eq!(reply.api, ApiNumber::GET_CONTEXT_EX);
    assert_eq!(
        reply.params,
        ManipulateParams::ContextEx(ContextExParams {
            offset: 0,
            byte_count: context::SIZE as u32,
            bytes_copied: context::SIZE as u32,
        })
    );
    assert_eq!(reply.data.len(), context::SIZE);
    // 56 + 1232 = 1288, KDNET's largest datagram payload (kd.md §3.7).
    assert_eq!(reply.encode().len(), 1288);
    let flags = u32::from_le_bytes(
        reply.data[context::CONTEXT_FLAGS..context::CONTEXT_FLAGS + 4]
            .try_into()
            .unwrap(),
    );
    assert_eq!(flags & context::CONTEXT_AMD64, context::CONTEXT_AMD64);
    let rip = u64::from_le_bytes(
        reply.data[context::RIP..context::RIP + 8]
            .try_into()
            .unwrap(),
    );
    assert_eq!(
        rip, 0xFFFF_F802_6BD7_2B90,
        "Rip = the breakpoint PC of wait_state"
    );
}

/// `unciphered_go` of libkdnet-test_pkt.hex: a plaintext SetContext request with a full CONTEXT.
#[test]
fn lib_set_context_request() {
    let text = fs::read_to_string(capture("libkdnet-test_pkt.hex")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("unciphered_go "))
        .expect("unciphered_go");
    let plain = hex::decode(line.split_whitespace().nth(2).unwrap()).unwrap();
    let request = manipulate(&kd_packet(&plain[8..]));
    assert_eq!(request.api, ApiNumber::SET_CONTEXT);
    assert!(matches!(
        request.params,
        ManipulateParams::SetContext { .. }
    ));
    assert_eq!(request.data.len(), context::SIZE);
}

// ---- Windows 10 build 10586 boot debugger (derived-vectors.txt §3) -----------------------------------

#[test]
fn win10_boot_debugger_print_string() {
    for name in ["pkt4", "pkt6"] {
        let packet = derived_packet(name);
        let Message::DebugIo(io) = parse(&packet) else {
            panic!("not DEBUG_IO")
        };
        assert_eq!(io.api, ApiNumber::PRINT_STRING);
        assert_eq!(io.text(), b"BD: Boot Debugger Initialized\n");
        assert_eq!(
            io.params,
            DebugIoParams::PrintString {
                length_of_string: 30
            }
        );
        assert_eq!(io.union_slack[4..], 0x7FFu32.to_le_bytes(), "junk kept");
        assert_eq!(
            Message::DebugIo(io).to_string(),
            r#"PrintString "BD: Boot Debugger Initialized\n""#
        );
    }
}

#[test]
fn win10_boot_debugger_load_symbols() {
    let sc = state_change(&derived_packet("pkt8"));
    assert_eq!(sc.new_state, ApiNumber::LOAD_SYMBOLS_STATE_CHANGE);
    let StateEvent::LoadSymbols(info) = sc.event else {
        panic!("not LoadSymbols")
    };
    assert_eq!(info.path_name_length, 12);
    assert_eq!(info.base_of_dll, 0x96_F000);
    assert_eq!(info.process_id, u64::MAX);
    assert_eq!(info.unload, 0);
    assert_eq!(sc.load_symbols_path(), Some(&b"winload.efi"[..]));
    assert_eq!(sc.data.len(), 12);
    assert!(sc.to_string().contains("path=\"winload.efi\""));

    let mut built = StateChange::load_symbols(info, b"winload.efi");
    assert_eq!(built.data, sc.data);
    built.set_union_slack(sc.union_bytes());
    assert_eq!(built.union_bytes(), sc.union_bytes());
}

#[test]
fn win10_boot_debugger_get_version() {
    let request = manipulate(&derived_packet("pkt10"));
    assert_eq!(request.api, ApiNumber::GET_VERSION);
    let reply = manipulate(&derived_packet("pkt12"));
    let v = *reply.version().unwrap();
    assert_eq!(v.build(), 10586);
    assert_eq!(v.protocol_version, 6);
    assert_eq!(v.machine_type, IMAGE_FILE_MACHINE_AMD64);
    // The junk header of WinDbg's request (Processor 0xFFFF, pad 0x25) comes back in the reply.
    assert_eq!(reply.processor, 0xFFFF);
    assert_eq!(reply.header_pad, request.header_pad);
    assert_eq!(Manipulate::get_version_reply(&request, v), reply);

    let read = manipulate(&derived_packet("pkt14"));
    assert_eq!(read.api, ApiNumber::READ_VIRTUAL_MEMORY);
}

/// Every KD data packet of both captures survives parse → encode unchanged.
#[test]
fn every_captured_data_packet_round_trips() {
    let text = fs::read_to_string(capture("derived-vectors.txt")).unwrap();
    let mut seen = 0;
    for name in text
        .lines()
        .filter_map(|l| l.strip_prefix('['))
        .filter_map(|l| l.split(']').next())
    {
        let line = text
            .lines()
            .skip_while(|l| !l.starts_with(&format!("[{name}]")))
            .find_map(|l| l.trim().strip_prefix("plaintext = "))
            .unwrap();
        let plain = hex::decode(line).unwrap();
        if plain.len() < 24 || &plain[8..12] != b"0000" {
            continue;
        }
        let packet = derived_packet(name);
        let message = parse(&packet);
        assert!(!message.to_string().is_empty());
        seen += 1;
    }
    assert!(seen >= 12, "only {seen} data packets");
}

// ---- Constructors, replies and errors ----------------------------------------------------------------

#[test]
fn request_constructors_use_documented_offsets() {
    let p = Manipulate::read_control_space(2, 0xA8)
        .on_processor(3)
        .encode();
    assert_eq!(&p[0..4], &0x3137u32.to_le_bytes());
    assert_eq!(&p[6..8], &3u16.to_le_bytes());
    assert_eq!(&p[0x10..0x18], &2u64.to_le_bytes());
    assert_eq!(&p[0x18..0x1C], &0xA8u32.to_le_bytes());

    let p = Manipulate::set_context_ex(0x200, 0x4D0, vec![1u8; 0x200]).encode();
    assert_eq!(&p[0x10..0x1C], &[0, 2, 0, 0, 0, 2, 0, 0, 0xD0, 4, 0, 0]);
    assert_eq!(p.len(), 56 + 0x200);

    let p = Manipulate::write_msr(0xC000_0082, 0x1122_3344_5566_7788).encode();
    assert_eq!(
        &p[0x10..0x1C],
        &[0x82, 0, 0, 0xC0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]
    );
    let msr = Manipulate::parse(&p).unwrap();
    let ManipulateParams::Msr(m) = msr.params else {
        panic!()
    };
    assert_eq!(m.value(), 0x1122_3344_5566_7788);

    let p = Manipulate::query_memory(0xFFFF_F800_0000_1000).encode();
    assert_eq!(&p[0..4], &0x315Cu32.to_le_bytes());
    assert_eq!(&p[0x10..0x18], &0xFFFF_F800_0000_1000u64.to_le_bytes());

    let p = Manipulate::switch_processor(1).encode();
    assert_eq!(&p[0..8], &[0x50, 0x31, 0, 0, 0, 0, 1, 0]);

    let p = Manipulate::restore_breakpoint(7).encode();
    assert_eq!(&p[0x10..0x14], &7u32.to_le_bytes());

    let p = Manipulate::get_context_ex(0, 0x4D0).encode();
    assert_eq!(&p[0..4], &0x315Fu32.to_le_bytes());
    assert_eq!(&p[0x14..0x18], &0x4D0u32.to_le_bytes());

    let p = Manipulate::single_step(DBG_CONTINUE, 0).encode();
    assert_eq!(&p[0x14..0x18], &1u32.to_le_bytes());
}

#[test]
fn unknown_api_is_kept_and_refused() {
    let mut payload = vec![0u8; 64];
    payload[..4].copy_from_slice(&0x3199u32.to_le_bytes());
    payload[0x10] = 0xAB;
    payload[60] = 0xCD;
    let request = Manipulate::parse(&payload).unwrap();
    assert_eq!(request.api, ApiNumber(0x3199));
    assert_eq!(request.api.name(), "DbgKdUnknownApi");
    assert!(matches!(request.params, ManipulateParams::Other(u) if u[0] == 0xAB));
    assert_eq!(request.encode().as_ref(), payload.as_slice());
    let reply = Manipulate::unsupported_reply(&request);
    assert_eq!(reply.return_status, STATUS_UNSUCCESSFUL);
    assert!(reply.data.is_empty());
    assert_eq!(reply.union_bytes(), request.union_bytes());
}

#[test]
fn file_io_create_file_is_refused() {
    let params = CreateFileParams {
        desired_access: 0x8012_0089,
        create_disposition: 1,
        ..CreateFileParams::default()
    };
    let request = FileIo::create_file(params, r"\SystemRoot\system32\drivers\kdleak.sys");
    let parsed = match Message::parse(PacketType::FileIo, &request.encode()).unwrap() {
        Message::FileIo(f) => f,
        other => panic!("{other:?}"),
    };
    assert_eq!(parsed, request);
    assert_eq!(
        parsed.file_name().as_deref(),
        Some(r"\SystemRoot\system32\drivers\kdleak.sys")
    );
    let refusal = FileIo::refuse(&parsed);
    let bytes = refusal.encode();
    assert_eq!(bytes.len(), 64);
    assert_eq!(&bytes[0..4], &0x3430u32.to_le_bytes());
    assert_eq!(&bytes[4..8], &STATUS_NO_SUCH_FILE.to_le_bytes());
    assert!(matches!(refusal.params, FileIoParams::CreateFile(p) if p == params));
}

#[test]
fn debug_io_get_string_round_trip() {
    let prompt = DebugIo::get_string(&b"kd> "[..], 16);
    let answer = DebugIo::get_string_reply(&prompt, Bytes::from_static(b"g\n this is too long"));
    assert_eq!(answer.input(), Some(&b"g\n this is too l"[..]));
    let DebugIoParams::GetString {
        length_of_string_read,
        ..
    } = answer.params
    else {
        panic!()
    };
    assert_eq!(length_of_string_read, 16);
    assert_eq!(DebugIo::parse(&answer.encode()).unwrap(), answer);
    assert_eq!(prompt.prompt(), Some(&b"kd> "[..]));
}

#[test]
fn malformed_payloads_are_typed_errors() {
    assert_eq!(
        Message::parse(PacketType::StateManipulate, &[0u8; 40]),
        Err(Error::Truncated {
            what: "DBGKD_MANIPULATE_STATE64",
            needed: 56,
            available: 40
        })
    );
    assert!(matches!(
        Message::parse(PacketType::StateChange64, &[0u8; 239]),
        Err(Error::Truncated { needed: 240, .. })
    ));
    assert!(matches!(
        Message::parse(PacketType::DebugIo, &[0u8; 15]),
        Err(Error::Truncated { needed: 16, .. })
    ));
    assert!(matches!(
        Message::parse(PacketType::FileIo, &[0u8; 63]),
        Err(Error::Truncated { needed: 64, .. })
    ));
    assert_eq!(
        Message::parse(PacketType::StateManipulate, &[0u8; 4001]),
        Err(Error::Oversize(4001))
    );

    let mut sc = syz_packet().payload.to_vec();
    sc[0x38] = 16;
    assert_eq!(
        Message::parse(PacketType::StateChange64, &sc),
        Err(Error::InvalidField {
            field: "ExceptionRecord.NumberParameters",
            value: 16
        })
    );
    sc[0x38] = 15;
    let Message::StateChange(parsed) = Message::parse(PacketType::StateChange64, &sc).unwrap()
    else {
        panic!()
    };
    assert_eq!(parsed.exception_info().unwrap().parameters.len(), 15);
    assert_eq!(parsed.encode().as_ref(), sc.as_slice());
}

#[test]
fn other_packet_types_are_kept() {
    let message = Message::parse(PacketType::ControlRequest, &[0, 0x43, 0, 0, 1, 0, 0, 0]).unwrap();
    assert_eq!(message.packet_type(), PacketType::ControlRequest);
    assert_eq!(message.encode().as_ref(), &[0, 0x43, 0, 0, 1, 0, 0, 0]);
    assert_eq!(message.to_string(), "CONTROL_REQUEST (type 10) len=0x8");
}

#[test]
fn api_numbers_have_names_and_reply_rules() {
    assert_eq!(
        ApiNumber::READ_VIRTUAL_MEMORY.name(),
        "DbgKdReadVirtualMemoryApi"
    );
    assert_eq!(ApiNumber(0x315E).name(), "DbgKdMidoriApi");
    assert_eq!(ApiNumber(0x3161).name(), "DbgKdWriteCustomBreakpointApi");
    assert_eq!(ApiNumber(0x3162).name(), "DbgKdReadPhysicalMemoryLongApi");
    assert_eq!(ApiNumber(0x3433).name(), "DbgKdCloseFileApi");
    assert_eq!(ApiNumber(0x4301).name(), "DbgKdReleaseHardwareBp");
    assert_eq!(ApiNumber(0x314A).to_string(), "DbgKdUnknownApi(0x314a)");
    // kd.md §2.8: exactly these manipulate APIs get no reply.
    let no_reply: Vec<u32> = ApiNumber::ALL
        .iter()
        .filter(|a| (0x3130..0x3200).contains(&a.0) && !a.has_reply())
        .map(|a| a.0)
        .collect();
    assert_eq!(
        no_reply,
        vec![0x3136, 0x313B, 0x313C, 0x3140, 0x3141, 0x3142, 0x3149, 0x3150, 0x315A]
    );
    assert!(!ApiNumber::PRINT_STRING.has_reply());
    assert!(ApiNumber::GET_STRING.has_reply());
    assert!(ApiNumber::CREATE_FILE.has_reply());
    assert!(ApiNumber(0x31FF).has_reply());
    // Every number of kd.md §3.3 from 0x3130 to 0x3162, except the unused 0x314A–0x314F.
    for n in (0x3130..=0x3162).filter(|n| !(0x314A..=0x314F).contains(n)) {
        assert!(ApiNumber(n).is_known(), "{n:#x}");
    }
}

#[test]
fn version_reply_for_a_simulated_target() {
    let version = Version {
        major_version: 0x000F,
        minor_version: 19041,
        protocol_version: 6,
        kd_secondary_version: 2,
        flags: DBGKD_VERS_FLAG_MP | DBGKD_VERS_FLAG_DATA | DBGKD_VERS_FLAG_PTR64,
        machine_type: IMAGE_FILE_MACHINE_AMD64,
        max_packet_type: 0x0C,
        max_state_change: 3,
        max_manipulate: 0x33,
        kern_base: 0xFFFF_F800_1000_0000,
        ps_loaded_module_list: 0xFFFF_F800_1020_0000,
        debugger_data_list: 0xFFFF_F800_1030_0000,
        ..Version::default()
    };
    let reply = Manipulate::get_version_reply(&Manipulate::get_version(), version);
    let bytes = reply.encode();
    assert_eq!(bytes.len(), 56);
    assert_eq!(&bytes[0x18..0x1A], &0x8664u16.to_le_bytes());
    assert_eq!(&bytes[0x20..0x28], &0xFFFF_F800_1000_0000u64.to_le_bytes());
    assert_eq!(Manipulate::parse(&bytes).unwrap(), reply);
}
