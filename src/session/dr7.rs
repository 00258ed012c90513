//! The Dr7 a resume sends back. Continue2's Dr7 is written into every processor's KernelDr7
//! (kd.md §3.6), and in 64-bit mode loading DR7 with any of bits 63:32 set raises #GP, so the host
//! echoes only the bits the architecture defines — whatever the stop reported. Targets that are
//! not Windows' own stub can report junk there (Xen's kdd sends an x86 control report for x64
//! guests, kd.md §3.1).
//!
//! DR7 (Intel 64 and IA-32 Architectures Software Developer's Manual, Vol. 3B, §17.2.4 "Debug
//! Control Register (DR7)", Figure 17-1; AMD64 Architecture Programmer's Manual Vol. 2 §13.1.1.5):
//!
//! | bits | field |
//! |---|---|
//! | 0–7 | L0, G0, L1, G1, L2, G2, L3, G3 (local/global breakpoint enables) |
//! | 8, 9 | LE, GE (exact breakpoint enables) |
//! | 10 | reserved, reads as 1 |
//! | 11 | RTM (advanced debugging of RTM regions; reserved 0 before TSX) |
//! | 12 | reserved, 0 |
//! | 13 | GD (general detect) |
//! | 14, 15 | reserved, 0 |
//! | 16–31 | R/W0, LEN0, R/W1, LEN1, R/W2, LEN2, R/W3, LEN3 |
//! | 32–63 | reserved, must be 0 (MOV to DR7 with any set raises #GP) |

/// Every bit of DR7 the architecture gives a meaning: 0–9, 11, 13 and 16–31.
pub const DR7_DEFINED: u64 = 0xFFFF_2BFF;
/// Bit 10: reserved, always 1.
pub const DR7_RESERVED_ONE: u64 = 0x400;

/// The Dr7 to resume with after a stop that reported `reported`: its defined bits, with the
/// always-one bit 10 set.
pub fn continue_dr7(reported: u64) -> u64 {
    (reported & DR7_DEFINED) | DR7_RESERVED_ONE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_value_goes_back_unchanged() {
        assert_eq!(continue_dr7(0x400), 0x400);
    }

    #[test]
    fn breakpoint_enables_conditions_rtm_and_gd_are_kept() {
        // L0|G0, R/W0 = write, LEN0 = 4 bytes; L3|G3, R/W3 = read/write, LEN3 = 8 bytes.
        let hardware = 0x0000_0003 | 0x0000_00C0 | 0x000D_0000 | 0xB000_0000;
        assert_eq!(continue_dr7(hardware | 0x400), hardware | 0x400);
        // LE, GE, RTM, GD.
        for bit in [8, 9, 11, 13] {
            assert_eq!(
                continue_dr7(0x400 | 1 << bit),
                0x400 | 1 << bit,
                "bit {bit}"
            );
        }
        assert_eq!(continue_dr7(0xFFFF_FFFF), 0xFFFF_2FFF);
    }

    #[test]
    fn reserved_bits_are_dropped_and_bit_10_set() {
        for bit in [12, 14, 15] {
            assert_eq!(continue_dr7(0x400 | 1 << bit), 0x400, "bit {bit}");
        }
        for bit in 32..64 {
            assert_eq!(continue_dr7(0x401 | 1 << bit), 0x401, "bit {bit}");
        }
        assert_eq!(continue_dr7(0), 0x400);
        // Junk from another architecture's control report.
        assert_eq!(continue_dr7(0xdead_beef_cafe_f00d), 0xcafe_240d);
    }
}
