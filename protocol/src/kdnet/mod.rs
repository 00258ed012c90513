//! KDNET: Windows kernel debugging over UDP (kdnet.md).
//!
//! * [`Key`] — the dotted base-36 key string and the keys derived from it (§2).
//! * [`seal`] / [`open`] / [`peek`] — the "MDBG" datagram: AES-256-CBC + truncated HMAC (§1, §2).
//! * [`ControlMessage`] — Poke and Response on the control channel (§3).
//! * [`DataBody`] — ping, break-in and KD packets on the data channel (§4).
//! * [`Endpoint`] — one side's keys, version byte and data seq, for the link layer to drive.

mod control;
mod data;
mod datagram;
mod endpoint;
mod key;

pub use crate::Role;
pub use control::{
    ControlMessage, NetAddr, Poke, Response, CONTROL_VERSION, KIND_POKE, KIND_RESPONSE, POKE_LEN,
    RESERVED_LEN, RESPONSE_LEN,
};
pub use data::{DataBody, PING_LEN};
pub use datagram::{
    open, pad_len, peek, seal, sealed_len, Channel, Datagram, Direction, Keys, BLOCK_LEN,
    DIRECTION_BIT, HEADER_LEN, MAGIC, MAX_SEQ, MIN_DATAGRAM_LEN, PAD_MASK, SEQ_HEADER_LEN, TAG_LEN,
};
pub use endpoint::{Endpoint, Opened};
pub use key::{DataKey, HmacKey, Key, KeyError, KEY_PARTS, MAX_PART_LEN};
