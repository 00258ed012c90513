//! Packet-id rules of the two dialects (kd.md §1.4, kdnet.md §4.3).

use bytes::Bytes;

use crate::kd::{INITIAL_PACKET_ID, SYNC_PACKET_ID};
use crate::Role;

/// How packet ids are numbered and acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// KDCOM: ids toggle bit 0 from 0x80800000, the first target packet carries SYNC, ACKs mask
    /// SYNC (kd.md §1.4).
    Kdcom,
    /// KDNET: the host counts 0x80000000 + 2n, the target an even counter from 0; ACKs echo the
    /// exact id; SYNC means nothing (kdnet.md §4.3).
    Kdnet,
}

/// How far behind the newest id a KDNET packet may be and still count as a late copy.
const KDNET_REORDER_WINDOW: u32 = 0x1000;

/// WinDbg's first KDNET data packet id (kdnet.md §4.3).
pub const KDNET_HOST_FIRST_ID: u32 = 0x8000_0000;

/// The sender's side of the numbering.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdCounter {
    dialect: Dialect,
    next: u32,
}

impl IdCounter {
    pub(crate) fn new(dialect: Dialect, role: Role) -> Self {
        let next = match (dialect, role) {
            (Dialect::Kdcom, Role::Host) => INITIAL_PACKET_ID,
            // The target announces a fresh start with SYNC (kd.md §1.4 rule 5).
            (Dialect::Kdcom, Role::Target) => INITIAL_PACKET_ID | SYNC_PACKET_ID,
            (Dialect::Kdnet, Role::Host) => KDNET_HOST_FIRST_ID,
            (Dialect::Kdnet, Role::Target) => 0,
        };
        Self { dialect, next }
    }

    pub(crate) fn current(&self) -> u32 {
        self.next
    }

    /// Called once the packet carrying `current()` was acknowledged.
    pub(crate) fn advance(&mut self) {
        self.next = match self.dialect {
            Dialect::Kdcom => (self.next ^ 1) & !SYNC_PACKET_ID,
            Dialect::Kdnet => self.next.wrapping_add(2),
        };
    }

    /// RESET: KDCOM restarts at INITIAL on both sides (kd.md §1.4 rule 6); a KDNET target keeps
    /// its counter and re-sends its pending packet with the same id (kdnet.md §4.3).
    pub(crate) fn reset(&mut self) {
        if self.dialect == Dialect::Kdcom {
            self.next = INITIAL_PACKET_ID;
        }
    }

    /// The id an ACK carries for a packet with `id` (kd.md §1.4 rule 2, kdnet.md §4.3).
    pub(crate) fn ack_id(dialect: Dialect, id: u32) -> u32 {
        match dialect {
            Dialect::Kdcom => id & !SYNC_PACKET_ID,
            Dialect::Kdnet => id,
        }
    }

    /// Does an ACK with `ack` acknowledge our packet `id`? KDCOM peers may or may not mask SYNC.
    pub(crate) fn acknowledges(dialect: Dialect, ack: u32, id: u32) -> bool {
        match dialect {
            Dialect::Kdcom => ack & !SYNC_PACKET_ID == id & !SYNC_PACKET_ID,
            Dialect::Kdnet => ack == id,
        }
    }
}

/// The receiver's side: which incoming data packets are new and which are repeats.
#[derive(Debug, Clone)]
pub(crate) struct RemoteIds {
    /// Id (SYNC masked) and payload of the last data packet delivered, if any since the last
    /// reset. A repeat must match both: a rebooted KDCOM target restarts at the same id with new
    /// content, and that first packet must not be mistaken for a retransmission.
    last_delivered: Option<(u32, Bytes)>,
}

/// The receiver's verdict on an incoming data packet id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    New,
    /// SYNC set after earlier traffic: the peer restarted its numbering (a reboot).
    PeerRestarted,
    Duplicate,
    /// Neither the expected id nor a repeat (strict mode only).
    OutOfOrder,
}

impl RemoteIds {
    pub(crate) fn new() -> Self {
        Self {
            last_delivered: None,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.last_delivered = None;
    }

    /// Judges `id`. A retransmission of the last delivered packet (same id, same bytes) is a
    /// duplicate in both dialects. Over KDNET, where datagrams can be reordered, a late copy of an
    /// older packet is recognised by its even serial distance behind the high-water mark
    /// (kdnet.md §4.3); ids one apart (a host using the KDCOM toggle over KDNET) stay distinct.
    /// Strict mode also demands the next id of the dialect, as a real KDCOM target does
    /// (kd.md §1.4 rule 4).
    pub(crate) fn judge(
        &mut self,
        dialect: Dialect,
        id: u32,
        payload: &Bytes,
        strict: bool,
    ) -> Verdict {
        // SYNC is a KDCOM flag; on KDNET bit 11 is just part of the counter (kdnet.md §4.3).
        let masked = match dialect {
            Dialect::Kdcom => id & !SYNC_PACKET_ID,
            Dialect::Kdnet => id,
        };
        let verdict = if self.is_repeat(dialect, masked, payload) {
            Verdict::Duplicate
        } else if dialect == Dialect::Kdcom && id & SYNC_PACKET_ID != 0 {
            // SYNC on the first packet we ever see is just a fresh peer; only SYNC after earlier
            // traffic means the peer restarted and forgot our numbering (kd.md §1.4 rule 5).
            if self.last_delivered.is_some() {
                Verdict::PeerRestarted
            } else {
                Verdict::New
            }
        } else if strict && !self.is_next(dialect, masked) {
            Verdict::OutOfOrder
        } else {
            Verdict::New
        };
        if matches!(verdict, Verdict::New | Verdict::PeerRestarted) {
            self.last_delivered = Some((masked, payload.clone()));
        }
        verdict
    }

    fn is_repeat(&self, dialect: Dialect, masked: u32, payload: &Bytes) -> bool {
        let Some((last, last_payload)) = &self.last_delivered else {
            return false;
        };
        if *last == masked {
            return last_payload == payload;
        }
        let behind = last.wrapping_sub(masked);
        dialect == Dialect::Kdnet && behind % 2 == 0 && behind < KDNET_REORDER_WINDOW
    }

    fn is_next(&self, dialect: Dialect, masked: u32) -> bool {
        match (dialect, &self.last_delivered) {
            (Dialect::Kdcom, None) => masked == INITIAL_PACKET_ID,
            (Dialect::Kdcom, Some((last, _))) => masked == last ^ 1,
            // A KDNET peer may restart its counter on reconnect; only repeats are detectable.
            (Dialect::Kdnet, _) => true,
        }
    }
}
