//! `LF_FIELDLIST` records, parsed here rather than by `pdb2`: its parser recurses into any
//! sub-record, a field list nested in a field list included, so one 64 KiB record can nest
//! ~32,000 deep and overflow the stack; and an `LF_ARGLIST` sub-record makes it reserve room for
//! as many as 2^32 entries its count claims. Here, sub-records are walked in a loop, only the
//! kinds a field list may hold are accepted, and nothing is sized from a count.
//!
//! Layouts from cvinfo.h (github.com/microsoft/microsoft-pdb, `include/cvinfo.h`, `lfMember`,
//! `lfBClass`, `lfVBClass`, `lfIndex`, `lfOneMethod`, …), the same `pdb2` 0.11 follows.

/// One data member: `LF_MEMBER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMember {
    pub name: String,
    pub offset: u64,
    pub ty: u32,
}

/// What a field list record holds for layouts: its data members and its continuation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawFieldList {
    pub members: Vec<RawMember>,
    pub continuation: Option<u32>,
}

const LF_BCLASS: u16 = 0x1400;
const LF_VBCLASS: u16 = 0x1401;
const LF_IVBCLASS: u16 = 0x1402;
const LF_FRIENDFCN_ST: u16 = 0x1403;
const LF_INDEX: u16 = 0x1404;
const LF_MEMBER_ST: u16 = 0x1405;
const LF_STMEMBER_ST: u16 = 0x1406;
const LF_METHOD_ST: u16 = 0x1407;
const LF_NESTTYPE_ST: u16 = 0x1408;
const LF_VFUNCTAB: u16 = 0x1409;
const LF_FRIENDCLS: u16 = 0x140a;
const LF_ONEMETHOD_ST: u16 = 0x140b;
const LF_VFUNCOFF: u16 = 0x140c;
const LF_NESTTYPEEX_ST: u16 = 0x140d;
const LF_MEMBERMODIFY_ST: u16 = 0x140e;
const LF_ENUMERATE_ST: u16 = 0x0403;
const LF_ENUMERATE: u16 = 0x1502;
const LF_FRIENDFCN: u16 = 0x150c;
const LF_MEMBER: u16 = 0x150d;
const LF_STMEMBER: u16 = 0x150e;
const LF_METHOD: u16 = 0x150f;
const LF_NESTTYPE: u16 = 0x1510;
const LF_ONEMETHOD: u16 = 0x1511;
const LF_NESTTYPEEX: u16 = 0x1512;
const LF_MEMBERMODIFY: u16 = 0x1513;
const LF_BINTERFACE: u16 = 0x151a;
/// Leaves up to this one name things with a length-prefixed ("ST") string.
const LF_ST_MAX: u16 = 0x1500;

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

type Parse<T> = Result<T, String>;

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Parse<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Parse<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Parse<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Parse<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Parse<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    /// A numeric leaf (cvinfo.h `LF_NUMERIC` and after): the value when it is an integer that
    /// fits a `u64` and is not negative, `None` for other kinds (reals, negative numbers), which
    /// are still skipped correctly.
    fn numeric(&mut self) -> Parse<Option<u64>> {
        let leaf = self.u16()?;
        if leaf < 0x8000 {
            return Ok(Some(u64::from(leaf)));
        }
        let signed = |v: i64| u64::try_from(v).ok();
        Ok(match leaf {
            0x8000 => signed(i64::from(self.u8()? as i8)), // LF_CHAR
            0x8001 => signed(i64::from(self.u16()? as i16)), // LF_SHORT
            0x8002 => Some(u64::from(self.u16()?)),        // LF_USHORT
            0x8003 => signed(i64::from(self.u32()? as i32)), // LF_LONG
            0x8004 => Some(u64::from(self.u32()?)),        // LF_ULONG
            0x8009 => signed(self.u64()? as i64),          // LF_QUADWORD
            0x800a => Some(self.u64()?),                   // LF_UQUADWORD
            _ => {
                let len = match leaf {
                    0x8005 => 4,                             // LF_REAL32
                    0x8006 | 0x800c | 0x801a => 8,           // LF_REAL64, LF_COMPLEX32, LF_DATE
                    0x8007 => 10,                            // LF_REAL80
                    0x8008 | 0x800d | 0x8017..=0x8019 => 16, // REAL128, COMPLEX64, (U)OCTWORD, DECIMAL
                    0x800b => 6,                             // LF_REAL48
                    0x800e => 20,                            // LF_COMPLEX80
                    0x800f => 32,                            // LF_COMPLEX128
                    0x801c => 2,                             // LF_REAL16
                    0x8010 => usize::from(self.u16()?),      // LF_VARSTRING
                    other => return Err(format!("unknown numeric leaf {other:#x}")),
                };
                self.take(len)?;
                None
            }
        })
    }

    /// A name: NUL-terminated, or length-prefixed for the "ST" leaves.
    fn name(&mut self, leaf: u16) -> Parse<String> {
        let bytes = if leaf > LF_ST_MAX {
            let rest = &self.bytes[self.at.min(self.bytes.len())..];
            let len = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or("a name without its NUL")?;
            let name = self.take(len)?;
            self.take(1)?;
            name
        } else {
            let len = usize::from(self.u8()?);
            self.take(len)?
        };
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    /// `LF_PAD0`..`LF_PAD15` between sub-records.
    fn padding(&mut self) -> Parse<()> {
        while let Some(&b) = self.bytes.get(self.at) {
            if b < 0xf0 {
                break;
            }
            let skip = usize::from(b & 0x0f).max(1);
            self.take(skip.min(self.bytes.len() - self.at))?;
        }
        Ok(())
    }
}

/// Parses the body of an `LF_FIELDLIST` record (the bytes after its leaf kind). Any sub-record
/// that is not one a field list may hold makes the whole record malformed.
pub fn parse(body: &[u8]) -> Result<RawFieldList, String> {
    let mut c = Cursor { bytes: body, at: 0 };
    let mut list = RawFieldList::default();
    while !c.done() {
        let at = c.at;
        let leaf = c.u16()?;
        match leaf {
            LF_MEMBER | LF_MEMBER_ST => {
                c.u16()?; // attributes
                let ty = c.u32()?;
                let offset = c.numeric()?.ok_or_else(|| {
                    format!("member at byte {at}: offset is not an unsigned integer")
                })?;
                let name = c.name(leaf)?;
                list.members.push(RawMember { name, offset, ty });
            }
            LF_INDEX => {
                c.u16()?; // padding
                list.continuation = Some(c.u32()?);
            }
            LF_BCLASS | LF_BINTERFACE => {
                c.take(6)?; // attributes, base class
                c.numeric()?;
            }
            LF_VBCLASS | LF_IVBCLASS => {
                c.take(10)?; // attributes, base class, virtual base pointer
                c.numeric()?;
                c.numeric()?;
            }
            LF_ONEMETHOD | LF_ONEMETHOD_ST => {
                let attributes = c.u16()?;
                c.u32()?;
                // An introducing (pure) virtual method carries its vtable offset (mprop 4, 6).
                if matches!((attributes >> 2) & 7, 4 | 6) {
                    c.u32()?;
                }
                c.name(leaf)?;
            }
            LF_METHOD | LF_METHOD_ST => {
                c.take(6)?; // count, method list
                c.name(leaf)?;
            }
            LF_NESTTYPE | LF_NESTTYPE_ST | LF_NESTTYPEEX | LF_NESTTYPEEX_ST | LF_STMEMBER
            | LF_STMEMBER_ST | LF_FRIENDFCN | LF_FRIENDFCN_ST | LF_MEMBERMODIFY
            | LF_MEMBERMODIFY_ST => {
                c.take(6)?; // attributes or padding, type
                c.name(leaf)?;
            }
            LF_VFUNCTAB | LF_FRIENDCLS => {
                c.take(6)?;
            }
            LF_VFUNCOFF => {
                c.take(10)?;
            }
            LF_ENUMERATE | LF_ENUMERATE_ST => {
                c.u16()?;
                c.numeric()?;
                c.name(leaf)?;
            }
            other => {
                return Err(format!(
                    "sub-record {other:#x} at byte {at} does not belong in a field list"
                ))
            }
        }
        c.padding()?;
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(offset: &[u8], name: &str) -> Vec<u8> {
        let mut r = LF_MEMBER.to_le_bytes().to_vec();
        r.extend(3u16.to_le_bytes());
        r.extend(0x1234u32.to_le_bytes());
        r.extend(offset);
        r.extend(name.as_bytes());
        r.push(0);
        r
    }

    #[test]
    fn members_continuations_and_other_sub_records() {
        let mut body = member(&8u16.to_le_bytes(), "Links");
        body.extend([0xf2, 0xf1]);
        // LF_ULONG offset
        let mut big = 0x8004u16.to_le_bytes().to_vec();
        big.extend(0x12345u32.to_le_bytes());
        body.extend(member(&big, "Far"));
        // an enumerate with a negative LF_CHAR value, a one-method (intro virtual), a nested type
        body.extend(LF_ENUMERATE.to_le_bytes());
        body.extend(3u16.to_le_bytes());
        body.extend([0x00, 0x80, 0xff]);
        body.extend(b"E\0");
        body.extend(LF_ONEMETHOD.to_le_bytes());
        body.extend((4u16 << 2).to_le_bytes());
        body.extend(0x1000u32.to_le_bytes());
        body.extend(0x10u32.to_le_bytes());
        body.extend(b"f\0");
        body.extend(LF_NESTTYPE.to_le_bytes());
        body.extend([0, 0]);
        body.extend(0x1001u32.to_le_bytes());
        body.extend(b"N\0");
        body.extend(LF_INDEX.to_le_bytes());
        body.extend([0, 0]);
        body.extend(0x1777u32.to_le_bytes());
        let list = parse(&body).unwrap();
        assert_eq!(
            list.members,
            vec![
                RawMember {
                    name: "Links".into(),
                    offset: 8,
                    ty: 0x1234
                },
                RawMember {
                    name: "Far".into(),
                    offset: 0x12345,
                    ty: 0x1234
                }
            ]
        );
        assert_eq!(list.continuation, Some(0x1777));
    }

    #[test]
    fn nested_lists_argument_lists_and_truncation_are_errors_not_recursion() {
        // 30,000 nested LF_FIELDLIST leaves: one error, no recursion.
        let nested: Vec<u8> = std::iter::repeat_n([0x03u8, 0x12], 30_000)
            .flatten()
            .collect();
        assert!(parse(&nested).unwrap_err().contains("does not belong"));
        // An LF_ARGLIST claiming 2^32 - 1 arguments.
        let mut arglist = 0x1201u16.to_le_bytes().to_vec();
        arglist.extend(u32::MAX.to_le_bytes());
        assert!(parse(&arglist).is_err());
        let mut cut = member(&8u16.to_le_bytes(), "Links");
        cut.truncate(cut.len() - 1);
        assert!(parse(&cut).unwrap_err().contains("NUL"));
        assert!(parse(&member(&0x8005u16.to_le_bytes(), "x")).is_err());
    }
}
