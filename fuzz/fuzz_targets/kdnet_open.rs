//! KDNET: opening arbitrary datagrams never panics, and arbitrary plaintext that passes
//! authentication (sealed here with a known key) parses without panicking at every layer.
#![no_main]

use bytes::Bytes;
use kdproto::kd::{Framing, Packet};
use kdproto::kdnet::{self, Channel, ControlMessage, DataBody, Datagram, Direction, Key, Keys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key: Key = "1.2.3.4".parse().unwrap();
    let keys = Keys::new(key.clone()).with_data_key(key.data_key(&[0u8; 322]));
    let _ = kdnet::open(data, &keys);
    let _ = kdnet::peek(data);

    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let datagram = Datagram {
        version: selector >> 2,
        channel: if selector & 1 == 0 {
            Channel::Data
        } else {
            Channel::Control
        },
        direction: if selector & 2 == 0 {
            Direction::TargetToHost
        } else {
            Direction::HostToTarget
        },
        seq: u64::from(selector),
        body: Bytes::copy_from_slice(body),
    };
    let sealed = kdnet::seal(&datagram, &keys).unwrap();
    let opened = kdnet::open(&sealed, &keys).unwrap();
    assert_eq!(opened, datagram);
    match opened.channel {
        Channel::Control => {
            let _ = ControlMessage::parse(opened.body);
        }
        Channel::Data => {
            if let DataBody::Kd(bytes) = DataBody::parse(opened.body) {
                let _ = Packet::parse(&bytes, Framing::Datagram);
            }
        }
    }
});
