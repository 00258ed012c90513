//! The KDNET datagram: "MDBG" header, AES-256-CBC ciphertext, truncated HMAC-SHA256 tag
//! (kdnet.md §1.2, §1.3, §2.4, §2.5).
//!
//! Encryption is deterministic (the tag is the IV), so [`seal`] of an [`open`]ed datagram gives
//! back the captured bytes exactly; the test vectors rely on that.

use bytes::{BufMut, Bytes, BytesMut};
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::key::{DataKey, HmacKey, Key};
use crate::{Error, Result};

/// ASCII "MDBG" at offset 0 (kdnet.md §1.2).
pub const MAGIC: [u8; 4] = *b"MDBG";
/// Plaintext header: magic, version, channel (kdnet.md §1.2).
pub const HEADER_LEN: usize = 6;
/// Truncated HMAC-SHA256, also the CBC IV (kdnet.md §1.2, §2.3).
pub const TAG_LEN: usize = 16;
/// AES block: the ciphertext is 16·k bytes (kdnet.md §1.2).
pub const BLOCK_LEN: usize = 16;
/// Encrypted header: 7-byte big-endian seq + flags byte (kdnet.md §1.3).
pub const SEQ_HEADER_LEN: usize = 8;
/// Smallest datagram: header + one block + tag (kdnet.md §2.5).
pub const MIN_DATAGRAM_LEN: usize = HEADER_LEN + BLOCK_LEN + TAG_LEN;
/// The seq field is 56 bits wide (kdnet.md §1.3).
pub const MAX_SEQ: u64 = (1 << 56) - 1;
/// Flags bit 7: 1 = host→target (kdnet.md §1.3).
pub const DIRECTION_BIT: u8 = 0x80;
/// Flags bits 0..6: pad count; read with all 7 bits, written as 0..15 (kdnet.md §6.2).
pub const PAD_MASK: u8 = 0x7F;

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type HmacSha256 = Hmac<Sha256>;

/// Which side sent a datagram (kdnet.md §1.3: flag bit 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    TargetToHost,
    HostToTarget,
}

impl Direction {
    pub fn opposite(self) -> Self {
        match self {
            Self::TargetToHost => Self::HostToTarget,
            Self::HostToTarget => Self::TargetToHost,
        }
    }

    fn from_flags(flags: u8) -> Self {
        if flags & DIRECTION_BIT != 0 {
            Self::HostToTarget
        } else {
            Self::TargetToHost
        }
    }

    fn flag_bit(self) -> u8 {
        match self {
            Self::TargetToHost => 0,
            Self::HostToTarget => DIRECTION_BIT,
        }
    }
}

/// The channel byte at offset 5 (kdnet.md §1.2). It also picks the AES key (kdnet.md §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Channel {
    /// KD packets, ping, break-in; encrypted with the data key.
    Data = 0,
    /// Poke and Response; encrypted with the control key.
    Control = 1,
}

impl Channel {
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::Data),
            1 => Some(Self::Control),
            _ => None,
        }
    }
}

/// One decrypted, authenticated KDNET datagram. `body` excludes the seq header and the padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Protocol version byte; any value is accepted and echoed (kdnet.md §6.7).
    pub version: u8,
    pub channel: Channel,
    pub direction: Direction,
    /// 56-bit sequence number (kdnet.md §1.3, §4.1).
    pub seq: u64,
    pub body: Bytes,
}

/// The keys a datagram needs: K for the control channel, ~K for every tag, and DK once a
/// handshake has happened (kdnet.md §2.2, §2.3).
///
/// The AES key schedules and the keyed HMAC state are derived once, when a key is set, not per
/// datagram: a pull seals and opens four datagrams per request, and expanding two AES-256 keys
/// and hashing the HMAC key's two pad blocks each time was work that never changes.
#[derive(Clone)]
pub struct Keys {
    control: Key,
    hmac: HmacKey,
    data: Option<DataKey>,
    control_cipher: aes::Aes256,
    data_cipher: Option<aes::Aes256>,
    /// HMAC-SHA256 keyed with ~K, before any message byte: cloned for each tag.
    keyed_mac: HmacSha256,
}

impl PartialEq for Keys {
    /// The key material decides; the schedules are derived from it.
    fn eq(&self, other: &Self) -> bool {
        self.control == other.control && self.hmac == other.hmac && self.data == other.data
    }
}

impl Eq for Keys {}

impl std::fmt::Debug for Keys {
    /// Key types print redacted; the schedules are not printed at all.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("control", &self.control)
            .field("hmac", &self.hmac)
            .field("data", &self.data)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Keys before any handshake: the data channel is closed until [`Keys::set_data_key`].
    pub fn new(control: Key) -> Self {
        let hmac = control.hmac_key();
        let control_cipher = aes::Aes256::new(control.as_bytes().into());
        let keyed_mac = <HmacSha256 as Mac>::new_from_slice(hmac.as_bytes())
            .expect("HMAC takes keys of any length");
        Self {
            control,
            hmac,
            data: None,
            control_cipher,
            data_cipher: None,
            keyed_mac,
        }
    }

    pub fn with_data_key(mut self, data: DataKey) -> Self {
        self.set_data_key(data);
        self
    }

    pub fn set_data_key(&mut self, data: DataKey) {
        self.data_cipher = Some(aes::Aes256::new(data.as_bytes().into()));
        self.data = Some(data);
    }

    pub fn clear_data_key(&mut self) {
        self.data = None;
        self.data_cipher = None;
    }

    pub fn control(&self) -> &Key {
        &self.control
    }

    pub fn hmac(&self) -> &HmacKey {
        &self.hmac
    }

    pub fn data(&self) -> Option<&DataKey> {
        self.data.as_ref()
    }

    /// The AES key schedule for a channel (kdnet.md §2.3: K on control, DK on data).
    fn cipher(&self, channel: Channel) -> Result<&aes::Aes256> {
        match channel {
            Channel::Control => Ok(&self.control_cipher),
            Channel::Data => self.data_cipher.as_ref().ok_or(Error::NoDataKey),
        }
    }
}

/// Zero bytes needed after an `len`-byte body: (−(8+L)) mod 16 (kdnet.md §1.3).
pub fn pad_len(body_len: usize) -> usize {
    (BLOCK_LEN - (SEQ_HEADER_LEN + body_len) % BLOCK_LEN) % BLOCK_LEN
}

/// Size on the wire of a datagram with an `len`-byte body.
pub fn sealed_len(body_len: usize) -> usize {
    HEADER_LEN + SEQ_HEADER_LEN + body_len + pad_len(body_len) + TAG_LEN
}

impl Datagram {
    /// Number of padding bytes [`seal`] adds.
    pub fn pad(&self) -> u8 {
        pad_len(self.body.len()) as u8
    }

    /// The plaintext [`seal`] encrypts: BE56(seq) ‖ flags ‖ body ‖ zero padding (kdnet.md §2.4).
    /// Decoders show it; the seal path uses it too.
    pub fn plaintext(&self) -> Result<Vec<u8>> {
        if self.seq > MAX_SEQ {
            return Err(Error::InvalidField {
                field: "KDNET seq (56 bits)",
                value: self.seq,
            });
        }
        let pad = pad_len(self.body.len());
        let mut plaintext = Vec::with_capacity(SEQ_HEADER_LEN + self.body.len() + pad);
        plaintext.extend_from_slice(&self.seq.to_be_bytes()[1..]);
        plaintext.push(self.direction.flag_bit() | pad as u8);
        plaintext.extend_from_slice(&self.body);
        plaintext.resize(plaintext.len() + pad, 0);
        Ok(plaintext)
    }
}

/// Encrypts and authenticates a datagram (kdnet.md §2.4).
pub fn seal(datagram: &Datagram, keys: &Keys) -> Result<Bytes> {
    let plaintext = datagram.plaintext()?;
    seal_plaintext(datagram.version, datagram.channel, plaintext, keys)
}

/// Steps 3–6 of kdnet.md §2.4 on a ready plaintext (a multiple of 16 bytes).
fn seal_plaintext(
    version: u8,
    channel: Channel,
    mut plaintext: Vec<u8>,
    keys: &Keys,
) -> Result<Bytes> {
    debug_assert!(!plaintext.is_empty() && plaintext.len() % BLOCK_LEN == 0);
    let header = header(version, channel);
    let cipher = keys.cipher(channel)?;
    let tag = tag(keys, &header, &plaintext);
    let len = plaintext.len();
    Aes256CbcEnc::inner_iv_init(cipher.clone(), (&tag).into())
        .encrypt_padded_mut::<NoPadding>(&mut plaintext, len)
        .expect("plaintext is whole blocks");
    let mut out = BytesMut::with_capacity(HEADER_LEN + len + TAG_LEN);
    out.put_slice(&header);
    out.put_slice(&plaintext);
    out.put_slice(&tag);
    Ok(out.freeze())
}

fn header(version: u8, channel: Channel) -> [u8; HEADER_LEN] {
    [
        MAGIC[0],
        MAGIC[1],
        MAGIC[2],
        MAGIC[3],
        version,
        channel as u8,
    ]
}

/// The HMAC-SHA256 state over header ‖ plaintext, keyed with ~K (kdnet.md §2.3).
fn mac(keys: &Keys, header: &[u8], plaintext: &[u8]) -> HmacSha256 {
    let mut mac = keys.keyed_mac.clone();
    mac.update(header);
    mac.update(plaintext);
    mac
}

fn tag(keys: &Keys, header: &[u8], plaintext: &[u8]) -> [u8; TAG_LEN] {
    let full = mac(keys, header, plaintext).finalize().into_bytes();
    full[..TAG_LEN].try_into().expect("SHA-256 is 32 bytes")
}

/// Reads what is readable without a key: the version and channel bytes, after the length, magic
/// and channel checks of kdnet.md §2.5 step 1. Nothing here is authenticated.
pub fn peek(bytes: &[u8]) -> Result<(u8, Channel)> {
    let len = bytes.len();
    if len < MIN_DATAGRAM_LEN || (len - HEADER_LEN - TAG_LEN) % BLOCK_LEN != 0 {
        return Err(Error::BadDatagramLength(len));
    }
    let magic: [u8; 4] = bytes[..4].try_into().expect("length checked");
    if magic != MAGIC {
        return Err(Error::BadMagic(magic));
    }
    let channel = Channel::from_u8(bytes[5]).ok_or(Error::UnknownChannel(bytes[5]))?;
    Ok((bytes[4], channel))
}

/// Decrypts and authenticates a datagram (kdnet.md §2.5). The tag is checked before any byte of
/// the plaintext is interpreted, so a wrong key is always [`Error::AuthenticationFailed`].
/// The direction is reported, not judged: that depends on the reader's role (see `Endpoint`).
pub fn open(bytes: &[u8], keys: &Keys) -> Result<Datagram> {
    let (version, channel) = peek(bytes)?;
    let cipher = keys.cipher(channel)?;
    let (header, rest) = bytes.split_at(HEADER_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let iv: &[u8; TAG_LEN] = tag.try_into().expect("split at TAG_LEN");

    let mut plaintext = ciphertext.to_vec();
    Aes256CbcDec::inner_iv_init(cipher.clone(), iv.into())
        .decrypt_padded_mut::<NoPadding>(&mut plaintext)
        .expect("ciphertext is whole blocks");
    mac(keys, header, &plaintext)
        .verify_truncated_left(tag)
        .map_err(|_| Error::AuthenticationFailed)?;

    let len = plaintext.len();
    let flags = plaintext[SEQ_HEADER_LEN - 1];
    let pad = flags & PAD_MASK;
    let body_end = len
        .checked_sub(SEQ_HEADER_LEN + usize::from(pad))
        .map(|body_len| SEQ_HEADER_LEN + body_len)
        .ok_or(Error::BadPadding { pad, len })?;
    if plaintext[body_end..].iter().any(|&b| b != 0) {
        return Err(Error::BadPadding { pad, len });
    }
    let mut seq = [0u8; 8];
    seq[1..].copy_from_slice(&plaintext[..SEQ_HEADER_LEN - 1]);
    Ok(Datagram {
        version,
        channel,
        direction: Direction::from_flags(flags),
        seq: u64::from_be_bytes(seq),
        body: Bytes::from(plaintext).slice(SEQ_HEADER_LEN..body_end),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys() -> Keys {
        let key = Key::parse("1.1.1.1").unwrap();
        let dk = key.data_key(b"response");
        Keys::new(key).with_data_key(dk)
    }

    fn datagram(channel: Channel, body: &[u8]) -> Datagram {
        Datagram {
            version: 4,
            channel,
            direction: Direction::HostToTarget,
            seq: 7,
            body: Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn pad_makes_whole_blocks() {
        assert_eq!(pad_len(0), 8);
        assert_eq!(pad_len(1), 7);
        assert_eq!(pad_len(8), 0);
        assert_eq!(pad_len(12), 12);
        assert_eq!(pad_len(322), 6);
        assert_eq!(pad_len(344), 0);
        assert_eq!(sealed_len(1), 38);
        assert_eq!(sealed_len(344), 374);
        assert_eq!(sealed_len(322), 358);
    }

    #[test]
    fn plaintext_layout() {
        let mut d = datagram(Channel::Data, &[0x62]);
        d.seq = 0x0001_0203_0405_0607;
        assert_eq!(
            d.plaintext().unwrap(),
            [1, 2, 3, 4, 5, 6, 7, 0x87, 0x62, 0, 0, 0, 0, 0, 0, 0]
        );
        d.direction = Direction::TargetToHost;
        assert_eq!(d.plaintext().unwrap()[7], 0x07);
    }

    #[test]
    fn seq_above_56_bits_is_refused() {
        let mut d = datagram(Channel::Data, b"x");
        d.seq = MAX_SEQ;
        assert_eq!(
            open(&seal(&d, &keys()).unwrap(), &keys()).unwrap().seq,
            MAX_SEQ
        );
        d.seq = MAX_SEQ + 1;
        assert!(matches!(seal(&d, &keys()), Err(Error::InvalidField { .. })));
    }

    #[test]
    fn flipped_bits_fail_authentication() {
        let sealed = seal(&datagram(Channel::Data, &[0x55; 40]), &keys()).unwrap();
        // Version, channel, every ciphertext byte, every tag byte: all authenticated.
        for at in 4..sealed.len() {
            let mut bad = sealed.to_vec();
            bad[at] ^= 0x01;
            assert_eq!(
                open(&bad, &keys()),
                Err(Error::AuthenticationFailed),
                "byte {at}"
            );
        }
    }

    #[test]
    fn wrong_key_fails_authentication() {
        let sealed = seal(&datagram(Channel::Control, b"poke"), &keys()).unwrap();
        let other = Keys::new(Key::parse("8.8.8.8").unwrap());
        assert_eq!(open(&sealed, &other), Err(Error::AuthenticationFailed));
    }

    #[test]
    fn wrong_data_key_fails_authentication() {
        // The tag does not cover DK, but a wrong DK garbles the plaintext the tag covers.
        let sealed = seal(&datagram(Channel::Data, b"kd"), &keys()).unwrap();
        let key = Key::parse("1.1.1.1").unwrap();
        let stale = Keys::new(key.clone()).with_data_key(key.data_key(b"older response"));
        assert_eq!(open(&sealed, &stale), Err(Error::AuthenticationFailed));
    }

    #[test]
    fn length_rules() {
        for len in [0, 5, 6, 21, 22, 37, 39, 53, 55, 71, 373] {
            let mut bytes = vec![0u8; len];
            bytes[..len.min(4)].copy_from_slice(&MAGIC[..len.min(4)]);
            assert_eq!(open(&bytes, &keys()), Err(Error::BadDatagramLength(len)));
            assert_eq!(peek(&bytes), Err(Error::BadDatagramLength(len)));
        }
    }

    #[test]
    fn magic_and_channel_rules() {
        let mut sealed = seal(&datagram(Channel::Control, b""), &keys())
            .unwrap()
            .to_vec();
        assert_eq!(peek(&sealed), Ok((4, Channel::Control)));
        sealed[5] = 2;
        assert_eq!(open(&sealed, &keys()), Err(Error::UnknownChannel(2)));
        sealed[0] = b'X';
        assert_eq!(open(&sealed, &keys()), Err(Error::BadMagic(*b"XDBG")));
    }

    #[test]
    fn data_channel_needs_the_data_key() {
        let no_dk = Keys::new(Key::parse("1.1.1.1").unwrap());
        let d = datagram(Channel::Data, b"x");
        assert_eq!(seal(&d, &no_dk), Err(Error::NoDataKey));
        let sealed = seal(&d, &keys()).unwrap();
        assert_eq!(open(&sealed, &no_dk), Err(Error::NoDataKey));
        // The control channel works without it.
        let c = datagram(Channel::Control, b"x");
        assert_eq!(open(&seal(&c, &no_dk).unwrap(), &no_dk).unwrap(), c);
    }

    #[test]
    fn pad_larger_than_the_plaintext_is_refused() {
        let mut plaintext = vec![0u8; 16];
        plaintext[7] = 9; // 16 − 8 = 8 bytes available
        let sealed = seal_plaintext(2, Channel::Control, plaintext, &keys()).unwrap();
        assert_eq!(
            open(&sealed, &keys()),
            Err(Error::BadPadding { pad: 9, len: 16 })
        );
    }

    #[test]
    fn nonzero_padding_is_refused() {
        let mut plaintext = vec![0u8; 16];
        plaintext[7] = 0x80 | 3;
        plaintext[14] = 1;
        let sealed = seal_plaintext(2, Channel::Control, plaintext, &keys()).unwrap();
        assert_eq!(
            open(&sealed, &keys()),
            Err(Error::BadPadding { pad: 3, len: 16 })
        );
    }

    #[test]
    fn pad_is_read_with_seven_bits() {
        // Pad 24 is never emitted but is legal on reception (kdnet.md §6.2).
        let mut plaintext = vec![0u8; 48];
        plaintext[7] = 24;
        plaintext[8..24].fill(0xAB);
        let sealed = seal_plaintext(2, Channel::Control, plaintext, &keys()).unwrap();
        let d = open(&sealed, &keys()).unwrap();
        assert_eq!(d.body.as_ref(), &[0xAB; 16]);
        assert_eq!(d.direction, Direction::TargetToHost);
    }

    #[test]
    fn direction_round_trips() {
        for direction in [Direction::HostToTarget, Direction::TargetToHost] {
            let mut d = datagram(Channel::Data, b"abc");
            d.direction = direction;
            assert_eq!(open(&seal(&d, &keys()).unwrap(), &keys()).unwrap(), d);
            assert_eq!(direction.opposite().opposite(), direction);
        }
    }

    proptest! {
        #[test]
        fn seal_then_open_is_identity(
            key in any::<[u8; 32]>(),
            dk in any::<[u8; 32]>(),
            version in any::<u8>(),
            control in any::<bool>(),
            to_target in any::<bool>(),
            seq in 0..=MAX_SEQ,
            body in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let keys = Keys::new(Key::from_bytes(key)).with_data_key(DataKey::from_bytes(dk));
            let d = Datagram {
                version,
                channel: if control { Channel::Control } else { Channel::Data },
                direction: if to_target { Direction::HostToTarget } else { Direction::TargetToHost },
                seq,
                body: Bytes::from(body),
            };
            let sealed = seal(&d, &keys).unwrap();
            prop_assert_eq!(sealed.len(), sealed_len(d.body.len()));
            prop_assert_eq!(peek(&sealed).unwrap(), (version, d.channel));
            let opened = open(&sealed, &keys).unwrap();
            prop_assert_eq!(&opened, &d);
            prop_assert_eq!(seal(&opened, &keys).unwrap(), sealed);
        }

        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = open(&bytes, &keys());
            let mut framed = bytes;
            if framed.len() >= 6 {
                framed[..4].copy_from_slice(&MAGIC);
                framed[5] &= 1;
            }
            let _ = open(&framed, &keys());
        }
    }
}
