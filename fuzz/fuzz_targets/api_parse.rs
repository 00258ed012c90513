//! DbgKd message parsing on arbitrary payloads: no panic, and whatever parses re-encodes to the
//! same bytes.
#![no_main]

use kdproto::api::Message;
use kdproto::kd::PacketType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let packet_type = PacketType::from_u16(u16::from(selector % 13));
    if let Ok(message) = Message::parse(packet_type, payload) {
        assert_eq!(message.encode(), payload);
        let _ = message.to_string();
    }
});
