//! The target's software breakpoint table (kd.md §3.10): 32 slots, handle = index + 1.

use super::memory::SimMemory;

/// Slots in the table; ntoseye sweeps handles 1..=32 (kd.md §2.6).
pub const BREAKPOINT_SLOTS: usize = 32;
/// The `int3` opcode written over the original byte.
pub const INT3: u8 = 0xCC;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breakpoint {
    pub address: u64,
    pub original: u8,
}

#[derive(Debug, Clone, Default)]
pub struct BreakpointTable {
    slots: [Option<Breakpoint>; BREAKPOINT_SLOTS],
}

impl BreakpointTable {
    /// Saves the byte at `address`, writes 0xCC, returns the handle. `None` when the address is
    /// unmapped or the table is full.
    pub fn write(&mut self, memory: &mut SimMemory, address: u64) -> Option<u32> {
        let index = self.slots.iter().position(Option::is_none)?;
        let (bytes, true) = memory.read(address, 1) else {
            return None;
        };
        if memory.write(address, &[INT3]) != 1 {
            return None;
        }
        self.slots[index] = Some(Breakpoint {
            address,
            original: bytes[0],
        });
        Some(index as u32 + 1)
    }

    /// Puts the original byte back and frees the slot; false for an empty or invalid handle.
    pub fn restore(&mut self, memory: &mut SimMemory, handle: u32) -> bool {
        let Some(slot) = handle
            .checked_sub(1)
            .and_then(|i| self.slots.get_mut(i as usize))
        else {
            return false;
        };
        let Some(bp) = slot.take() else {
            return false;
        };
        memory.write(bp.address, &[bp.original]);
        true
    }

    /// Replaces breakpoint bytes inside `bytes` (read from `address`) by the saved originals, as
    /// the control report's instruction stream shows them (kd.md §3.1).
    pub fn hide_in(&self, address: u64, bytes: &mut [u8]) {
        for bp in self.slots.iter().flatten() {
            if let Some(offset) = bp.address.checked_sub(address) {
                if let Some(byte) = bytes.get_mut(offset as usize) {
                    *byte = bp.original;
                }
            }
        }
    }

    pub fn active(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_restore_and_empty_slots() {
        let mut memory = SimMemory::new();
        memory.map(0x1000, &[0x90, 0x91]);
        let mut table = BreakpointTable::default();
        assert!(!table.restore(&mut memory, 1));
        assert!(!table.restore(&mut memory, 0));
        assert!(!table.restore(&mut memory, 33));
        assert_eq!(table.write(&mut memory, 0x1001), Some(1));
        assert_eq!(memory.read(0x1000, 2).0, vec![0x90, INT3]);
        let mut stream = [0x90, INT3];
        table.hide_in(0x1000, &mut stream);
        assert_eq!(stream, [0x90, 0x91]);
        assert_eq!(table.write(&mut memory, 0x9000), None);
        assert!(table.restore(&mut memory, 1));
        assert_eq!(memory.read(0x1000, 2).0, vec![0x90, 0x91]);
        assert_eq!(table.active(), 0);
    }
}
