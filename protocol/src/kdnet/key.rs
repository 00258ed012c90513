//! The KDNET key string and the three keys derived from it (kdnet.md §2.1–§2.3).
//!
//! Every key type here prints as `<redacted>` in `Debug`: key material must never reach a log,
//! and `Debug` is what `tracing` and `{:?}` use.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Number of dot-separated parts in a key string (kdnet.md §2.1: "four 64-bit values").
pub const KEY_PARTS: usize = 4;
/// Longest base-36 part (kdnet.md §2.1: "up to 13 characters").
pub const MAX_PART_LEN: usize = 13;
/// Longest part text an error message repeats, so a pasted blob does not flood the terminal.
const MAX_SHOWN_PART: usize = 24;

/// The 256-bit control key K: AES key of the control channel (kdnet.md §2.3) and the root of the
/// HMAC key and the data key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 32]);

/// The HMAC-SHA256 key ~K, used on both channels for the whole session (kdnet.md §2.2).
#[derive(Clone, PartialEq, Eq)]
pub struct HmacKey([u8; 32]);

/// The data-channel AES key DK = SHA-256(K ‖ Response body), fixed by each handshake (kdnet.md §2.3).
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey([u8; 32]);

/// Why a key string is not a KDNET key. Parts are numbered from 1, as a user counts them; only the
/// offending part is repeated, never the rest of the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not exactly four dot-separated parts.
    #[error(
        "KDNET key has {parts} part{}; it needs four dot-separated base-36 parts like 1.2.3.4",
        if *parts == 1 { "" } else { "s" }
    )]
    PartCount { parts: usize },
    /// Two dots in a row, or a dot at either end.
    #[error(
        "KDNET key part {part} of 4 is empty; each part needs 1 to 13 characters of 0-9 and a-z"
    )]
    EmptyPart { part: usize },
    /// A character that is not a base-36 digit.
    #[error("KDNET key part {part} of 4 ('{text}') has a character outside 0-9 and a-z: {bad:?}")]
    BadCharacter {
        part: usize,
        text: String,
        bad: char,
    },
    /// More than 13 digits.
    #[error("KDNET key part {part} of 4 ('{text}') has {len} characters; at most 13 are allowed")]
    PartTooLong {
        part: usize,
        text: String,
        len: usize,
    },
    /// 13 digits whose value does not fit in 64 bits.
    #[error("KDNET key part {part} of 4 ('{text}') does not fit in 64 bits (the largest is 3w5e11264sgsf)")]
    PartOverflow { part: usize, text: String },
}

/// The part as an error message shows it: escaped and shortened.
fn shown(part: &str) -> String {
    let mut text: String = part.chars().take(MAX_SHOWN_PART).collect();
    if part.chars().count() > MAX_SHOWN_PART {
        text.push('…');
    }
    text.escape_debug().to_string()
}

/// One base-36 part (kdnet.md §2.1). `part` is 1-based, for the message.
fn parse_part(part: usize, text: &str) -> Result<u64, KeyError> {
    if text.is_empty() {
        return Err(KeyError::EmptyPart { part });
    }
    let mut digits = Vec::with_capacity(text.len());
    for c in text.chars() {
        // to_digit(36) accepts A-Z too: case-insensitive, as ntoseye is (kdnet.md §2.1).
        match c.to_digit(36) {
            Some(d) => digits.push(u64::from(d)),
            None => {
                return Err(KeyError::BadCharacter {
                    part,
                    text: shown(text),
                    bad: c,
                })
            }
        }
    }
    if digits.len() > MAX_PART_LEN {
        return Err(KeyError::PartTooLong {
            part,
            text: shown(text),
            len: digits.len(),
        });
    }
    digits.iter().try_fold(0u64, |value, &d| {
        value
            .checked_mul(36)
            .and_then(|v| v.checked_add(d))
            .ok_or_else(|| KeyError::PartOverflow {
                part,
                text: shown(text),
            })
    })
}

impl Key {
    /// Parses `p0.p1.p2.p3` into K = LE64(p0) ‖ LE64(p1) ‖ LE64(p2) ‖ LE64(p3) (kdnet.md §2.1).
    /// Surrounding whitespace is ignored, so a key read from a file with a final newline works.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let parts: Vec<&str> = text.trim().split('.').collect();
        if parts.len() != KEY_PARTS {
            return Err(KeyError::PartCount { parts: parts.len() });
        }
        let mut key = [0u8; 32];
        for (i, part) in parts.iter().enumerate() {
            let value = parse_part(i + 1, part)?;
            key[i * 8..i * 8 + 8].copy_from_slice(&value.to_le_bytes());
        }
        Ok(Self(key))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// ~K: every byte XOR 0xFF (kdnet.md §2.2).
    pub fn hmac_key(&self) -> HmacKey {
        HmacKey(self.0.map(|b| b ^ 0xFF))
    }

    /// DK = SHA-256(K ‖ body of the host's poke Response) (kdnet.md §2.3). The whole body is hashed,
    /// whatever its length, so a future Response size still agrees with the peer (kdnet.md §6.6).
    pub fn data_key(&self, response_body: &[u8]) -> DataKey {
        let mut hash = Sha256::new();
        hash.update(self.0);
        hash.update(response_body);
        DataKey(hash.finalize().into())
    }
}

impl FromStr for Key {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        Self::parse(text)
    }
}

impl HmacKey {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl DataKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacKey(<redacted>)")
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> KeyError {
        Key::parse(text).unwrap_err()
    }

    #[test]
    fn parses_single_digit_parts_little_endian() {
        let key = Key::parse("1.2.3.z").unwrap();
        let mut expected = [0u8; 32];
        expected[0] = 1;
        expected[8] = 2;
        expected[16] = 3;
        expected[24] = 35;
        assert_eq!(key.as_bytes(), &expected);
    }

    #[test]
    fn uppercase_is_case_insensitive() {
        assert_eq!(
            Key::parse("MAKE.WinXP.great.AGAIN").unwrap(),
            Key::parse("make.winxp.great.again").unwrap()
        );
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        assert_eq!(
            Key::parse(" 1.1.1.1\n").unwrap(),
            Key::parse("1.1.1.1").unwrap()
        );
    }

    #[test]
    fn largest_part_is_u64_max() {
        let key = Key::parse("3w5e11264sgsf.0.0.0").unwrap();
        assert_eq!(&key.as_bytes()[..8], &u64::MAX.to_le_bytes());
        assert_eq!(
            err("3w5e11264sgsg.0.0.0"),
            KeyError::PartOverflow {
                part: 1,
                text: "3w5e11264sgsg".into()
            }
        );
    }

    #[test]
    fn wrong_part_count_says_how_many() {
        assert_eq!(
            err("1.2.3").to_string(),
            "KDNET key has 3 parts; it needs four dot-separated base-36 parts like 1.2.3.4"
        );
        assert_eq!(
            err("").to_string().split(';').next().unwrap(),
            "KDNET key has 1 part"
        );
        assert_eq!(err("1.2.3.4.5"), KeyError::PartCount { parts: 5 });
    }

    #[test]
    fn errors_name_the_bad_part() {
        assert_eq!(
            err("1.2.xyz!.4").to_string(),
            "KDNET key part 3 of 4 ('xyz!') has a character outside 0-9 and a-z: '!'"
        );
        assert_eq!(err("1..3.4"), KeyError::EmptyPart { part: 2 });
        assert_eq!(
            err("1.2.3.").to_string(),
            "KDNET key part 4 of 4 is empty; each part needs 1 to 13 characters of 0-9 and a-z"
        );
        assert_eq!(
            err("12345678901234.2.3.4").to_string(),
            "KDNET key part 1 of 4 ('12345678901234') has 14 characters; at most 13 are allowed"
        );
        assert_eq!(
            err("1.2.3.zzzzzzzzzzzzz").to_string(),
            "KDNET key part 4 of 4 ('zzzzzzzzzzzzz') does not fit in 64 bits (the largest is 3w5e11264sgsf)"
        );
        assert!(matches!(
            err("1.2.-3.4"),
            KeyError::BadCharacter {
                part: 3,
                bad: '-',
                ..
            }
        ));
        // Non-ASCII digits are not base-36 digits.
        assert!(matches!(
            err("1.2.3.٣"),
            KeyError::BadCharacter { part: 4, .. }
        ));
    }

    #[test]
    fn error_shows_only_the_bad_part() {
        let message = err("secret1.secret2.bad!.secret4").to_string();
        assert!(message.contains("bad!"));
        assert!(!message.contains("secret"));
    }

    #[test]
    fn long_parts_are_shortened_in_messages() {
        let long = "x".repeat(200);
        let message = err(&format!("1.2.3.{long}")).to_string();
        assert!(message.len() < 120, "{message}");
    }

    #[test]
    fn debug_never_prints_key_material() {
        let key = Key::parse("1m770ts6ru0p.3671pemyie4i.2b8djy3wt5et.1p99ir125v4q").unwrap();
        let texts = [
            format!("{key:?}"),
            format!("{:?}", key.hmac_key()),
            format!("{:?}", key.data_key(b"body")),
            format!("{key:#?}"),
        ];
        for text in texts {
            assert!(text.contains("<redacted>"), "{text}");
            assert!(!text.contains("b9"), "{text}");
            assert!(!text.contains("185"), "{text}"); // 0xb9 in decimal
        }
    }

    #[test]
    fn hmac_key_inverts_every_byte() {
        let key = Key::from_bytes([0x0F; 32]);
        assert_eq!(key.hmac_key().as_bytes(), &[0xF0; 32]);
    }

    #[test]
    fn data_key_hashes_key_then_body() {
        let key = Key::from_bytes([1; 32]);
        let mut input = vec![1u8; 32];
        input.extend_from_slice(b"abc");
        let expected: [u8; 32] = Sha256::digest(&input).into();
        assert_eq!(key.data_key(b"abc").as_bytes(), &expected);
    }
}
