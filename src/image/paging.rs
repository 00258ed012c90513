//! x64 4-level paging: virtual → physical through the page tables in the dump, as the CPU walks
//! them from CR3 (Intel SDM Vol. 3A §4.5, "4-Level Paging").

/// Bits 51:12 of a page-table entry or CR3: the next table's (or page's) physical address.
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Bits 51:30 and 51:21: the frame of a 1 GiB and a 2 MiB page.
const HUGE_MASK: u64 = 0x000f_ffff_c000_0000;
const LARGE_MASK: u64 = 0x000f_ffff_ffe0_0000;
const PRESENT: u64 = 1;
/// PS: the PDPTE maps a 1 GiB page, the PDE a 2 MiB page.
const PAGE_SIZE_BIT: u64 = 1 << 7;
/// A not-present PTE with Transition set and Prototype clear still names a page in physical
/// memory (on the standby or modified list); WinDbg reads it from a dump too (Windows
/// Internals 7th ed., part 1, ch. 5 "Transition PTEs").
const PROTOTYPE: u64 = 1 << 10;
const TRANSITION: u64 = 1 << 11;

/// Where a virtual address is, or why it has no physical page in the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    Physical(u64),
    /// Not canonical, or an entry on the way is not present.
    NotMapped,
    /// A page table on the way is not in the dump.
    TableMissing(u64),
}

/// Whether bits 63:47 are all equal (x64 canonical form with 48-bit addresses).
fn canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1_ffff
}

/// Translates `va` with the tables under `cr3`; `read_entry(pa)` reads the u64 at physical
/// address `pa`, `None` when the dump does not hold that page.
pub fn translate<E>(
    cr3: u64,
    va: u64,
    mut read_entry: impl FnMut(u64) -> Result<Option<u64>, E>,
) -> Result<Translation, E> {
    if !canonical(va) {
        return Ok(Translation::NotMapped);
    }
    let index = |shift: u32| (va >> shift) & 0x1ff;
    let mut table = cr3 & ADDRESS_MASK;
    for (level, shift) in [(4u8, 39u32), (3, 30), (2, 21), (1, 12)] {
        let slot = table + index(shift) * 8;
        let Some(entry) = read_entry(slot)? else {
            return Ok(Translation::TableMissing(table));
        };
        let present = entry & PRESENT != 0;
        if level == 1 {
            let in_transition = entry & (TRANSITION | PROTOTYPE) == TRANSITION;
            return Ok(if present || in_transition {
                Translation::Physical((entry & ADDRESS_MASK) | (va & 0xfff))
            } else {
                Translation::NotMapped
            });
        }
        if !present {
            return Ok(Translation::NotMapped);
        }
        if entry & PAGE_SIZE_BIT != 0 {
            match level {
                3 => {
                    return Ok(Translation::Physical(
                        (entry & HUGE_MASK) | (va & 0x3fff_ffff),
                    ))
                }
                2 => {
                    return Ok(Translation::Physical(
                        (entry & LARGE_MASK) | (va & 0x1f_ffff),
                    ))
                }
                // PS is reserved in a PML4E: such an entry maps nothing.
                _ => return Ok(Translation::NotMapped),
            }
        }
        table = entry & ADDRESS_MASK;
    }
    Ok(Translation::NotMapped)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Page tables as a map of physical address → entry.
    #[derive(Default)]
    struct Tables(HashMap<u64, u64>);

    impl Tables {
        fn set(&mut self, table: u64, index: u64, entry: u64) {
            self.0.insert(table + index * 8, entry);
        }
        fn walk(&self, cr3: u64, va: u64) -> Translation {
            translate::<()>(cr3, va, |pa| {
                Ok(if pa >> 12 == 0xdead {
                    None
                } else {
                    Some(self.0.get(&pa).copied().unwrap_or(0))
                })
            })
            .unwrap()
        }
    }

    const VA: u64 = 0xfffff800_12345678;

    fn indexes(va: u64) -> [u64; 4] {
        [39, 30, 21, 12].map(|s| (va >> s) & 0x1ff)
    }

    #[test]
    fn a_4k_page_is_found_through_four_tables() {
        let [a, b, c, d] = indexes(VA);
        let mut t = Tables::default();
        t.set(0x1000, a, 0x2000 | 3);
        t.set(0x2000, b, 0x3000 | 3);
        t.set(0x3000, c, 0x4000 | 3);
        t.set(0x4000, d, 0x0008_7654_3000 | 0x8000_0000_0000_0003);
        assert_eq!(t.walk(0x1000, VA), Translation::Physical(0x8_7654_3678));
        // Not present at the last level; then in transition, which is still in memory.
        t.set(0x4000, d, 0x9000);
        assert_eq!(t.walk(0x1000, VA), Translation::NotMapped);
        t.set(0x4000, d, 0x9000 | TRANSITION);
        assert_eq!(t.walk(0x1000, VA), Translation::Physical(0x9678));
        t.set(0x4000, d, 0x9000 | TRANSITION | PROTOTYPE);
        assert_eq!(t.walk(0x1000, VA), Translation::NotMapped);
    }

    #[test]
    fn large_and_huge_pages_keep_the_low_address_bits() {
        let [a, b, c, _] = indexes(VA);
        let mut t = Tables::default();
        t.set(0x1000, a, 0x2000 | 3);
        t.set(0x2000, b, 0x3000 | 3);
        t.set(0x3000, c, 0x4000_0000 | PAGE_SIZE_BIT | 3);
        assert_eq!(
            t.walk(0x1000, VA),
            Translation::Physical(0x4000_0000 | (VA & 0x1f_ffff))
        );
        t.set(0x2000, b, 0x1_4000_0000 | PAGE_SIZE_BIT | 3);
        assert_eq!(
            t.walk(0x1000, VA),
            Translation::Physical(0x1_4000_0000 | (VA & 0x3fff_ffff))
        );
    }

    #[test]
    fn non_canonical_addresses_and_missing_tables_are_not_mapped() {
        let t = Tables::default();
        assert_eq!(
            t.walk(0x1000, 0x0000_8000_0000_0000),
            Translation::NotMapped
        );
        assert_eq!(t.walk(0x1000, VA), Translation::NotMapped);
        assert_eq!(
            t.walk(0x0dea_d000, VA),
            Translation::TableMissing(0x0dea_d000)
        );
    }
}
