//! Describes one KD packet: its header, and the DbgKd message inside with its key fields.

use std::collections::BTreeMap;
use std::fmt;

use kdproto::api::{DebugIoParams, Manipulate, ManipulateParams, Message, StateEvent};
use kdproto::kd::Packet;
use kdproto::kdnet::Direction;
use serde::Serialize;
use serde_json::{json, Value};

/// A KD packet as `kdleak decode` shows it.
#[derive(Debug, Serialize)]
pub struct KdDescription {
    pub packet_type: &'static str,
    /// The packet id, as hex.
    pub id: String,
    pub byte_count: usize,
    /// The DbgKd API or state name, for data packets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<&'static str>,
    /// One line, as in the text output.
    pub summary: String,
    /// Key fields of the message (addresses and codes as hex strings).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<&'static str, Value>,
}

impl fmt::Display for KdDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KD {} id {}", self.packet_type, self.id)?;
        if !self.summary.is_empty() {
            write!(f, ": {}", self.summary)?;
        }
        Ok(())
    }
}

/// Parses the packet's message. Control packets carry none.
pub fn describe(packet: &Packet, direction: Direction) -> kdproto::Result<KdDescription> {
    let mut description = KdDescription {
        packet_type: packet.packet_type.name(),
        id: format!("{:#x}", packet.id),
        byte_count: packet.payload.len(),
        api: None,
        summary: String::new(),
        fields: BTreeMap::new(),
    };
    if packet.is_control() {
        return Ok(description);
    }
    let message = Message::parse(packet.packet_type, &packet.payload)?;
    description.api = message.api().map(|api| api.name());
    let fields = &mut description.fields;
    description.summary = match &message {
        Message::Manipulate(m) => {
            let is_reply = direction == Direction::TargetToHost;
            manipulate_fields(m, is_reply, fields);
            m.summary(is_reply)
        }
        Message::StateChange(s) => {
            fields.insert("processor", json!(s.processor));
            fields.insert("number_processors", json!(s.number_processors));
            fields.insert("pc", hex(s.program_counter));
            fields.insert("thread", hex(s.thread));
            match &s.event {
                StateEvent::Exception(e) => {
                    fields.insert("exception_code", hex(e.code));
                    fields.insert("first_chance", json!(e.first_chance));
                }
                StateEvent::LoadSymbols(l) => {
                    fields.insert("base_of_dll", hex(l.base_of_dll));
                    fields.insert("size_of_image", hex(l.size_of_image));
                    if let Some(path) = s.load_symbols_path() {
                        fields.insert("path", json!(String::from_utf8_lossy(path)));
                    }
                }
                _ => {}
            }
            s.to_string()
        }
        Message::DebugIo(d) => {
            if matches!(d.params, DebugIoParams::PrintString { .. }) {
                fields.insert("text", json!(String::from_utf8_lossy(d.text())));
            }
            d.to_string()
        }
        Message::FileIo(io) => {
            fields.insert("status", hex(io.status));
            if let Some(name) = io.file_name() {
                fields.insert("file_name", json!(name));
            }
            io.to_string()
        }
        other => other.to_string(),
    };
    Ok(description)
}

fn manipulate_fields(m: &Manipulate, is_reply: bool, fields: &mut BTreeMap<&'static str, Value>) {
    fields.insert(
        "direction",
        json!(if is_reply { "reply" } else { "request" }),
    );
    if is_reply {
        fields.insert("return_status", hex(m.return_status));
    }
    match &m.params {
        ManipulateParams::Memory(memory) => {
            fields.insert("address", hex(memory.target_base_address));
            fields.insert("length", hex(memory.transfer_count));
            if is_reply {
                fields.insert("actual", hex(memory.actual_bytes));
            }
        }
        ManipulateParams::GetVersion(v) if is_reply => {
            fields.insert("build", json!(v.build()));
            fields.insert("machine_type", hex(v.machine_type));
            fields.insert("protocol_version", json!(v.protocol_version));
            fields.insert("kern_base", hex(v.kern_base));
            fields.insert("ps_loaded_module_list", hex(v.ps_loaded_module_list));
            fields.insert("debugger_data_list", hex(v.debugger_data_list));
        }
        ManipulateParams::Continue2(c) => {
            fields.insert("continue_status", hex(c.status));
        }
        _ => {}
    }
}

fn hex(value: impl Into<u64>) -> Value {
    json!(format!("{:#x}", value.into()))
}
