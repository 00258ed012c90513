//! Builders for synthetic frames and capture files, so each link type, container variant and
//! kind of damage can be tested without a capture of it.

pub(super) const SRC4: [u8; 4] = [10, 0, 0, 1];
pub(super) const DST4: [u8; 4] = [10, 0, 0, 2];
pub(super) const SRC6: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub(super) const DST6: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub(super) const PORT: u16 = 51111;
pub(super) const PAYLOAD: &[u8] = b"MDBG\x06payload";

pub(super) fn udp_segment(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&PORT.to_be_bytes());
    out.extend_from_slice(&(PORT + 1).to_be_bytes());
    out.extend_from_slice(&((payload.len() + 8) as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    out
}

pub(super) fn ipv4(protocol: u8, flags_offset: u16, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0x45, 0];
    out.extend_from_slice(&((body.len() + 20) as u16).to_be_bytes());
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&flags_offset.to_be_bytes());
    out.extend_from_slice(&[64, protocol, 0, 0]);
    out.extend_from_slice(&SRC4);
    out.extend_from_slice(&DST4);
    out.extend_from_slice(body);
    out
}

pub(super) fn udp4(payload: &[u8]) -> Vec<u8> {
    ipv4(17, 0, &udp_segment(payload))
}

pub(super) fn ipv6(next_header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0x60, 0, 0, 0];
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&[next_header, 64]);
    out.extend_from_slice(&SRC6);
    out.extend_from_slice(&DST6);
    out.extend_from_slice(body);
    out
}

pub(super) fn udp6(payload: &[u8]) -> Vec<u8> {
    ipv6(17, &udp_segment(payload))
}

/// Ethernet II with the given VLAN tags (TPID each) before the EtherType.
pub(super) fn ethernet(tags: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    for (vid, tpid) in tags.iter().enumerate() {
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&(vid as u16 + 100).to_be_bytes());
    }
    out.extend_from_slice(&ethertype.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub(super) fn sll(protocol: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    out.extend_from_slice(&protocol.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub(super) fn sll2(protocol: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = protocol.to_be_bytes().to_vec();
    out.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
    out.extend_from_slice(payload);
    out
}

pub(super) fn loopback(family: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = family.to_vec();
    out.extend_from_slice(payload);
    out
}

/// A legacy pcap file writer.
pub(super) struct Pcap {
    pub(super) out: Vec<u8>,
    big_endian: bool,
    modified: bool,
}

impl Pcap {
    /// `magic` as the file's first four bytes decide endianness and variant.
    pub(super) fn new(magic: [u8; 4], link_type: u32) -> Self {
        let big_endian = magic[0] == 0xa1;
        let mut pcap = Pcap {
            out: magic.to_vec(),
            big_endian,
            modified: magic == [0x34, 0xcd, 0xb2, 0xa1],
        };
        pcap.u16(2);
        pcap.u16(4);
        pcap.u32(0);
        pcap.u32(0);
        pcap.u32(65535);
        pcap.u32(link_type);
        pcap
    }

    pub(super) fn record(mut self, seconds: u32, fraction: u32, frame: &[u8]) -> Self {
        self.u32(seconds);
        self.u32(fraction);
        self.u32(frame.len() as u32);
        self.u32(frame.len() as u32);
        if self.modified {
            self.out.extend_from_slice(&[0; 8]);
        }
        self.out.extend_from_slice(frame);
        self
    }

    fn u16(&mut self, value: u16) {
        let bytes = if self.big_endian {
            value.to_be_bytes()
        } else {
            value.to_le_bytes()
        };
        self.out.extend_from_slice(&bytes);
    }

    fn u32(&mut self, value: u32) {
        let bytes = if self.big_endian {
            value.to_be_bytes()
        } else {
            value.to_le_bytes()
        };
        self.out.extend_from_slice(&bytes);
    }
}

/// A pcapng file writer; every method appends one block.
pub(super) struct PcapNg {
    pub(super) out: Vec<u8>,
    big_endian: bool,
}

impl PcapNg {
    /// A file starting with a Section Header Block.
    pub(super) fn new(big_endian: bool) -> Self {
        let mut file = PcapNg {
            out: Vec::new(),
            big_endian,
        };
        file.section();
        file
    }

    pub(super) fn section(&mut self) -> &mut Self {
        let mut body = self.u32(0x1a2b_3c4d);
        body.extend(self.u16(1));
        body.extend(self.u16(0));
        body.extend_from_slice(&[0xff; 8]);
        self.block(0x0a0d_0d0a, &body)
    }

    /// An interface with options given as (code, value).
    pub(super) fn interface(
        &mut self,
        link_type: u16,
        snaplen: u32,
        options: &[(u16, Vec<u8>)],
    ) -> &mut Self {
        let mut body = self.u16(link_type);
        body.extend(self.u16(0));
        body.extend(self.u32(snaplen));
        if !options.is_empty() {
            for (code, value) in options {
                body.extend(self.u16(*code));
                body.extend(self.u16(value.len() as u16));
                body.extend_from_slice(value);
                body.resize(body.len().next_multiple_of(4), 0);
            }
            body.extend_from_slice(&[0; 4]);
        }
        self.block(1, &body)
    }

    pub(super) fn enhanced(&mut self, if_id: u32, ticks: u64, frame: &[u8]) -> &mut Self {
        let mut body = self.u32(if_id);
        body.extend(self.u32((ticks >> 32) as u32));
        body.extend(self.u32(ticks as u32));
        body.extend(self.u32(frame.len() as u32));
        body.extend(self.u32(frame.len() as u32));
        body.extend_from_slice(frame);
        self.block(6, &body)
    }

    pub(super) fn simple(&mut self, frame: &[u8]) -> &mut Self {
        let mut body = self.u32(frame.len() as u32);
        body.extend_from_slice(frame);
        self.block(3, &body)
    }

    pub(super) fn obsolete(&mut self, if_id: u16, ticks: u64, frame: &[u8]) -> &mut Self {
        let mut body = self.u16(if_id);
        body.extend(self.u16(0));
        body.extend(self.u32((ticks >> 32) as u32));
        body.extend(self.u32(ticks as u32));
        body.extend(self.u32(frame.len() as u32));
        body.extend(self.u32(frame.len() as u32));
        body.extend_from_slice(frame);
        self.block(2, &body)
    }

    /// Any block: type, length, body padded to 4 bytes, length again.
    pub(super) fn block(&mut self, block_type: u32, body: &[u8]) -> &mut Self {
        let mut body = body.to_vec();
        body.resize(body.len().next_multiple_of(4), 0);
        let len = body.len() as u32 + 12;
        let (type_bytes, len_bytes) = (self.u32(block_type), self.u32(len));
        self.out.extend_from_slice(&type_bytes);
        self.out.extend_from_slice(&len_bytes);
        self.out.extend_from_slice(&body);
        self.out.extend_from_slice(&len_bytes);
        self
    }

    /// A value in this file's byte order, for option values.
    pub(super) fn u64(&self, value: u64) -> Vec<u8> {
        if self.big_endian {
            value.to_be_bytes().to_vec()
        } else {
            value.to_le_bytes().to_vec()
        }
    }

    fn u16(&self, value: u16) -> Vec<u8> {
        if self.big_endian {
            value.to_be_bytes().to_vec()
        } else {
            value.to_le_bytes().to_vec()
        }
    }

    fn u32(&self, value: u32) -> Vec<u8> {
        if self.big_endian {
            value.to_be_bytes().to_vec()
        } else {
            value.to_le_bytes().to_vec()
        }
    }
}

/// gzip-compresses `data`.
pub(super) fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("gzip to memory");
    encoder.finish().expect("gzip to memory")
}
