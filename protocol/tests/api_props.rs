//! Property tests for the DbgKd API layer: typed values survive encode → parse, well-formed
//! payloads survive parse → encode byte for byte, and no input makes a parser panic.

use bytes::Bytes;
use kdproto::api::*;
use kdproto::kd::PacketType;
use proptest::collection::vec;
use proptest::prelude::*;

type A = ApiNumber;

fn data() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

/// Every manipulate number of kd.md §3.3 plus a few unknown ones.
fn manipulate_api() -> impl Strategy<Value = ApiNumber> {
    let known: Vec<ApiNumber> = ApiNumber::ALL
        .iter()
        .copied()
        .filter(|a| (0x3130..0x3200).contains(&a.0))
        .collect();
    prop_oneof![
        4 => proptest::sample::select(known),
        1 => any::<u32>().prop_map(ApiNumber),
    ]
}

/// The typed union view for `api`, built field by field (independently of the parser).
fn manipulate_params(api: ApiNumber) -> BoxedStrategy<ManipulateParams> {
    use ManipulateParams as P;
    match api {
        A::READ_VIRTUAL_MEMORY
        | A::WRITE_VIRTUAL_MEMORY
        | A::READ_PHYSICAL_MEMORY
        | A::WRITE_PHYSICAL_MEMORY
        | A::READ_CONTROL_SPACE
        | A::WRITE_CONTROL_SPACE => any::<(u64, u32, u32)>()
            .prop_map(|(target_base_address, transfer_count, actual_bytes)| {
                P::Memory(MemoryParams {
                    target_base_address,
                    transfer_count,
                    actual_bytes,
                })
            })
            .boxed(),
        A::SET_CONTEXT => any::<u32>()
            .prop_map(|context_flags| P::SetContext { context_flags })
            .boxed(),
        A::WRITE_BREAKPOINT => any::<(u64, u32)>()
            .prop_map(|(address, handle)| {
                P::WriteBreakPoint(WriteBreakPointParams { address, handle })
            })
            .boxed(),
        A::RESTORE_BREAKPOINT => any::<u32>()
            .prop_map(|handle| P::RestoreBreakPoint { handle })
            .boxed(),
        A::CONTINUE => any::<u32>()
            .prop_map(|status| P::Continue { status })
            .boxed(),
        A::CONTINUE2 => any::<(u32, u32, u64, u64, u64)>()
            .prop_map(|(status, trace_flag, dr7, symbol_start, symbol_end)| {
                P::Continue2(Continue2Params {
                    status,
                    trace_flag,
                    dr7,
                    symbol_start,
                    symbol_end,
                })
            })
            .boxed(),
        A::READ_IO_SPACE | A::WRITE_IO_SPACE => any::<(u64, u32, u32)>()
            .prop_map(|(io_address, data_size, data_value)| {
                P::Io(IoParams {
                    io_address,
                    data_size,
                    data_value,
                })
            })
            .boxed(),
        A::READ_IO_SPACE_EXTENDED | A::WRITE_IO_SPACE_EXTENDED => {
            any::<(u32, u32, u32, u32, u64, u32)>()
                .prop_map(|(a, b, c, d, e, f)| {
                    P::IoExtended(IoExtendedParams {
                        data_size: a,
                        interface_type: b,
                        bus_number: c,
                        address_space: d,
                        io_address: e,
                        data_value: f,
                    })
                })
                .boxed()
        }
        A::QUERY_SPECIAL_CALLS => any::<u32>()
            .prop_map(|number_of_special_calls| P::QuerySpecialCalls {
                number_of_special_calls,
            })
            .boxed(),
        A::SET_SPECIAL_CALL => any::<u64>()
            .prop_map(|special_call| P::SetSpecialCall { special_call })
            .boxed(),
        A::SET_INTERNAL_BREAKPOINT => any::<(u64, u32)>()
            .prop_map(|(address, flags)| P::SetInternalBreakPoint { address, flags })
            .boxed(),
        A::GET_INTERNAL_BREAKPOINT => any::<(u64, [u32; 6])>()
            .prop_map(|(address, f)| {
                P::GetInternalBreakPoint(InternalBreakPointParams {
                    address,
                    flags: f[0],
                    calls: f[1],
                    max_calls_per_period: f[2],
                    min_instructions: f[3],
                    max_instructions: f[4],
                    total_instructions: f[5],
                })
            })
            .boxed(),
        A::GET_VERSION => any::<(
            (u16, u16, u8, u8, u16, u16),
            (u8, u8, u8, u8, u16),
            [u64; 3],
        )>()
        .prop_map(|((a, b, c, d, e, f), (g, h, i, j, k), addrs)| {
            P::GetVersion(Version {
                major_version: a,
                minor_version: b,
                protocol_version: c,
                kd_secondary_version: d,
                flags: e,
                machine_type: f,
                max_packet_type: g,
                max_state_change: h,
                max_manipulate: i,
                simulation: j,
                unused: k,
                kern_base: addrs[0],
                ps_loaded_module_list: addrs[1],
                debugger_data_list: addrs[2],
            })
        })
        .boxed(),
        A::WRITE_BREAKPOINT_EX | A::RESTORE_BREAKPOINT_EX => any::<(u32, u32)>()
            .prop_map(|(break_point_count, continue_status)| P::BreakPointEx {
                break_point_count,
                continue_status,
            })
            .boxed(),
        A::READ_MSR | A::WRITE_MSR => any::<(u32, u32, u32)>()
            .prop_map(|(msr, low, high)| P::Msr(MsrParams { msr, low, high }))
            .boxed(),
        A::SEARCH_MEMORY => any::<(u64, u64, u32)>()
            .prop_map(|(address, search_length, pattern_length)| {
                P::SearchMemory(SearchMemoryParams {
                    address,
                    search_length,
                    pattern_length,
                })
            })
            .boxed(),
        A::GET_BUS_DATA | A::SET_BUS_DATA => any::<[u32; 5]>()
            .prop_map(|f| {
                P::BusData(BusDataParams {
                    bus_data_type: f[0],
                    bus_number: f[1],
                    slot_number: f[2],
                    offset: f[3],
                    length: f[4],
                })
            })
            .boxed(),
        A::FILL_MEMORY => any::<(u64, u32, u16, u16)>()
            .prop_map(|(address, length, flags, pattern_length)| {
                P::FillMemory(FillMemoryParams {
                    address,
                    length,
                    flags,
                    pattern_length,
                })
            })
            .boxed(),
        A::QUERY_MEMORY => any::<(u64, u64, u32, u32)>()
            .prop_map(|(address, reserved, address_space, flags)| {
                P::QueryMemory(QueryMemoryParams {
                    address,
                    reserved,
                    address_space,
                    flags,
                })
            })
            .boxed(),
        A::SWITCH_PARTITION => any::<u32>()
            .prop_map(|partition| P::SwitchPartition { partition })
            .boxed(),
        A::WRITE_CUSTOM_BREAKPOINT => any::<(u64, u64, u32, u8, u8)>()
            .prop_map(|(address, instruction, handle, size, alignment)| {
                P::WriteCustomBreakPoint(CustomBreakPointParams {
                    address,
                    instruction,
                    handle,
                    instruction_size: size,
                    instruction_alignment: alignment,
                })
            })
            .boxed(),
        A::GET_CONTEXT_EX | A::SET_CONTEXT_EX => any::<(u32, u32, u32)>()
            .prop_map(|(offset, byte_count, bytes_copied)| {
                P::ContextEx(ContextExParams {
                    offset,
                    byte_count,
                    bytes_copied,
                })
            })
            .boxed(),
        A::GET_CONTEXT
        | A::SWITCH_PROCESSOR
        | A::REBOOT
        | A::CAUSE_BUGCHECK
        | A::CLEAR_SPECIAL_CALLS
        | A::CLEAR_ALL_INTERNAL_BREAKPOINTS => Just(P::Unused).boxed(),
        _ => any::<ManipulateUnion>().prop_map(P::Other).boxed(),
    }
}

fn manipulate() -> impl Strategy<Value = Manipulate> {
    manipulate_api()
        .prop_flat_map(|api| {
            (
                Just(api),
                manipulate_params(api),
                any::<(u16, u16, u32, u32)>(),
                any::<ManipulateUnion>(),
                data(),
            )
        })
        .prop_map(
            |(api, params, (level, processor, status, pad), junk, data)| {
                let mut m = Manipulate::new(api, params)
                    .on_processor(processor)
                    .with_data(data);
                m.processor_level = level;
                m.return_status = status;
                m.header_pad = pad;
                m.set_union_slack(junk);
                m
            },
        )
}

fn exception() -> impl Strategy<Value = Exception> {
    (
        any::<(u32, u32, u64, u64, u32)>(),
        vec(any::<u64>(), 0..=EXCEPTION_MAXIMUM_PARAMETERS),
    )
        .prop_map(
            |((code, flags, record, address, first_chance), parameters)| Exception {
                code,
                flags,
                record,
                address,
                parameters,
                first_chance,
            },
        )
}

fn state_event() -> impl Strategy<Value = (ApiNumber, StateEvent)> {
    let alternate = any::<bool>().prop_map(|alt| {
        if alt {
            ApiNumber::ALTERNATE_STATE_CHANGE_FLAG
        } else {
            0
        }
    });
    let typed = prop_oneof![
        exception().prop_map(StateEvent::Exception),
        any::<(u32, u64, u64, u32, u32, u8)>().prop_map(|(a, b, c, d, e, f)| {
            StateEvent::LoadSymbols(LoadSymbols {
                path_name_length: a,
                base_of_dll: b,
                process_id: c,
                checksum: d,
                size_of_image: e,
                unload: f,
            })
        }),
        any::<u32>().prop_map(|flags| StateEvent::CommandString { flags }),
    ];
    prop_oneof![
        3 => (typed, alternate).prop_map(|(event, flag)| {
            (ApiNumber(event.new_state().unwrap().0 | flag), event)
        }),
        1 => (
            any::<u32>().prop_filter("not a typed NewState", |v| {
                !(0x3030..=0x3032).contains(&(v & !ApiNumber::ALTERNATE_STATE_CHANGE_FLAG))
            }),
            any::<StateChangeUnion>(),
        )
            .prop_map(|(state, raw)| (ApiNumber(state), StateEvent::Other(raw))),
    ]
}

fn control_report() -> impl Strategy<Value = ControlReport> {
    any::<((u64, u64, u32, u16, u16), [u8; 16], [u16; 4])>().prop_map(
        |((dr6, dr7, eflags, count, flags), stream, seg)| ControlReport {
            dr6,
            dr7,
            eflags,
            instruction_count: count,
            report_flags: flags,
            instruction_stream: stream,
            cs: seg[0],
            ds: seg[1],
            es: seg[2],
            fs: seg[3],
        },
    )
}

fn state_change() -> impl Strategy<Value = StateChange> {
    (
        state_event(),
        any::<(u16, u16, u32, u32, u64, u64)>(),
        any::<StateChangeUnion>(),
        control_report(),
        data(),
    )
        .prop_map(
            |((new_state, event), (level, cpu, n, pad, thread, pc), junk, report, data)| {
                let mut sc = StateChange::new(event);
                sc.new_state = new_state;
                sc.processor_level = level;
                sc.processor = cpu;
                sc.number_processors = n;
                sc.header_pad = pad;
                sc.thread = thread;
                sc.program_counter = pc;
                sc.control_report = report;
                sc.data = data;
                sc.set_union_slack(junk);
                sc
            },
        )
}

fn debug_io() -> impl Strategy<Value = DebugIo> {
    let params = prop_oneof![
        any::<u32>().prop_map(|n| (
            A::PRINT_STRING,
            DebugIoParams::PrintString {
                length_of_string: n
            }
        )),
        any::<(u32, u32)>().prop_map(|(p, r)| (
            A::GET_STRING,
            DebugIoParams::GetString {
                length_of_prompt_string: p,
                length_of_string_read: r
            }
        )),
        (
            any::<u32>().prop_filter("unknown", |v| *v != 0x3230 && *v != 0x3231),
            any::<DebugIoUnion>()
        )
            .prop_map(|(api, raw)| (ApiNumber(api), DebugIoParams::Other(raw))),
    ];
    (params, any::<(u16, u16)>(), any::<DebugIoUnion>(), data()).prop_map(
        |((api, params), (level, cpu), junk, data)| {
            let mut io = DebugIo::print_string(data);
            io.api = api;
            io.params = params;
            io.processor_level = level;
            io.processor = cpu;
            io.set_union_slack(junk);
            io
        },
    )
}

fn file_io() -> impl Strategy<Value = FileIo> {
    let transfer =
        any::<(u64, u64, u32)>().prop_map(|(handle, offset, length)| FileTransferParams {
            handle,
            offset,
            length,
        });
    let params = prop_oneof![
        any::<([u32; 5], u64, u64)>().prop_map(|(f, handle, length)| (
            A::CREATE_FILE,
            FileIoParams::CreateFile(CreateFileParams {
                desired_access: f[0],
                file_attributes: f[1],
                share_access: f[2],
                create_disposition: f[3],
                create_options: f[4],
                handle,
                length,
            })
        )),
        transfer
            .clone()
            .prop_map(|t| (A::READ_FILE, FileIoParams::ReadFile(t))),
        transfer.prop_map(|t| (A::WRITE_FILE, FileIoParams::WriteFile(t))),
        any::<u64>().prop_map(|handle| (A::CLOSE_FILE, FileIoParams::CloseFile { handle })),
        (
            any::<u32>().prop_filter("unknown", |v| !(0x3430..=0x3433).contains(v)),
            any::<FileIoUnion>()
        )
            .prop_map(|(api, raw)| (ApiNumber(api), FileIoParams::Other(raw))),
    ];
    (params, any::<u32>(), any::<FileIoUnion>(), data()).prop_map(
        |((api, params), status, junk, data)| {
            let mut io = FileIo::new(api, params);
            io.status = status;
            io.data = data;
            io.set_union_slack(junk);
            io
        },
    )
}

fn trace_io() -> impl Strategy<Value = TraceIo> {
    (
        prop_oneof![
            any::<u32>().prop_map(|n| (
                A::PRINT_TRACE,
                TraceIoParams::PrintTrace { length_of_data: n }
            )),
            (
                any::<u32>().prop_filter("unknown", |v| *v != 0x3330),
                any::<TraceIoUnion>()
            )
                .prop_map(|(api, raw)| (ApiNumber(api), TraceIoParams::Other(raw))),
        ],
        any::<(u16, u16)>(),
        any::<TraceIoUnion>(),
        data(),
    )
        .prop_map(|((api, params), (level, cpu), junk, data)| {
            let mut io = TraceIo::print_trace(data);
            io.api = api;
            io.params = params;
            io.processor_level = level;
            io.processor = cpu;
            io.set_union_slack(junk);
            io
        })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        state_change().prop_map(Message::from),
        manipulate().prop_map(Message::from),
        debug_io().prop_map(Message::from),
        file_io().prop_map(Message::from),
        trace_io().prop_map(Message::from),
        (
            prop_oneof![
                Just(PacketType::StateChange32),
                Just(PacketType::ControlRequest),
                any::<u16>().prop_map(|v| PacketType::Other(v.max(12)))
            ],
            data()
        )
            .prop_map(|(packet_type, payload)| Message::Other {
                packet_type,
                payload
            }),
    ]
}

/// A payload of `fixed` + up to 300 random bytes that starts with `api`.
fn payload_with_api(
    fixed: usize,
    api: impl Strategy<Value = u32>,
) -> impl Strategy<Value = Vec<u8>> {
    (api, vec(any::<u8>(), fixed..fixed + 300)).prop_map(|(api, mut bytes)| {
        bytes[..4].copy_from_slice(&api.to_le_bytes());
        bytes
    })
}

fn known_api_in(range: std::ops::Range<u32>) -> impl Strategy<Value = u32> {
    let known: Vec<u32> = ApiNumber::ALL
        .iter()
        .map(|a| a.0)
        .filter(|v| range.contains(v))
        .collect();
    prop_oneof![4 => proptest::sample::select(known), 1 => any::<u32>()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn typed_messages_round_trip(message in message()) {
        let bytes = message.encode();
        let parsed = Message::parse(message.packet_type(), &bytes).unwrap();
        prop_assert_eq!(&parsed, &message);
        prop_assert_eq!(parsed.encode(), bytes);
        prop_assert!(!message.to_string().is_empty());
        if let Message::Manipulate(m) = &message {
            prop_assert!(!m.summary(true).is_empty() && !m.summary(false).is_empty());
        }
    }

    #[test]
    fn manipulate_payloads_round_trip(bytes in payload_with_api(56, known_api_in(0x3130..0x3200))) {
        let m = Manipulate::parse(&bytes).unwrap();
        prop_assert_eq!(m.encode().to_vec(), bytes.to_vec());
        // The slack never overlaps the typed view.
        let mut again = m.clone();
        again.set_union_slack(m.union_bytes());
        prop_assert_eq!(again, m);
    }

    #[test]
    fn state_change_payloads_round_trip(
        bytes in payload_with_api(240, known_api_in(0x3030..0x3040)),
        n in 0u32..=15,
    ) {
        let mut bytes = bytes;
        bytes[0x38..0x3C].copy_from_slice(&n.to_le_bytes());
        let m = Message::parse(PacketType::StateChange64, &bytes).unwrap();
        prop_assert_eq!(m.encode().to_vec(), bytes.to_vec());
    }

    #[test]
    fn io_payloads_round_trip(
        debug in payload_with_api(16, known_api_in(0x3230..0x3240)),
        file in payload_with_api(64, known_api_in(0x3430..0x3440)),
        trace in payload_with_api(64, known_api_in(0x3330..0x3340)),
    ) {
        for (packet_type, bytes) in [
            (PacketType::DebugIo, &debug),
            (PacketType::FileIo, &file),
            (PacketType::TraceIo, &trace),
        ] {
            let m = Message::parse(packet_type, bytes).unwrap();
            prop_assert_eq!(m.encode().to_vec(), bytes.to_vec());
        }
    }

    #[test]
    fn parse_never_panics(packet_type in any::<u16>(), bytes in vec(any::<u8>(), 0..4100)) {
        let packet_type = PacketType::from_u16(packet_type % 16);
        if let Ok(message) = Message::parse(packet_type, &bytes) {
            prop_assert_eq!(message.encode().to_vec(), bytes.to_vec());
            let _ = message.to_string();
            if let Message::StateChange(sc) = &message {
                let _ = (sc.load_symbols_path(), sc.command_strings());
            }
            if let Message::DebugIo(io) = &message {
                let _ = (io.text(), io.prompt(), io.input());
            }
            if let Message::FileIo(io) = &message {
                let _ = io.file_name();
            }
        }
    }
}
