//! The classic Windows x64 crash dump, as the target writes it when it crashes: `DUMP_HEADER64`
//! ([`header`]), then the physical pages, in the runs of the header's memory descriptor
//! (DumpType 1, full) or as the set bits of the `SDMP`/`FDMP` bitmap after the header
//! (DumpType 5/6, bitmap) ([`runs`]).

pub mod header;
pub mod runs;

pub use header::{DumpHeader, DumpKind, HEADER_LEN};

use super::error::Result;
use super::format::{Layout, MachineFacts};
use super::Source;

/// Reads a crash dump whose first bytes (at most [`HEADER_LEN`]) are `head`: the header's facts
/// and where each physical page is. Its header check also names what a file is when it is no
/// crash dump (a minidump, a 32-bit dump, not a dump at all).
pub fn read<S: Source + ?Sized>(head: &[u8], src: &S) -> Result<Layout> {
    let header = header::parse(head)?;
    let map = runs::read(header.kind, head, src)?;
    Ok(Layout {
        facts: MachineFacts::from(&header),
        map,
        format: header::describe_dump_type(header.dump_type, header.bug_check_code).into(),
        cr3_candidates: Vec::new(),
    })
}

/// Whether `first4` starts a file the crash dump reader claims (`PAGE`, or a minidump's `MDMP`,
/// which it refuses saying why).
pub fn is_signature(first4: &[u8]) -> bool {
    first4 == b"PAGE" || first4 == b"MDMP"
}

impl From<&DumpHeader> for MachineFacts {
    fn from(header: &DumpHeader) -> Self {
        Self {
            build: header.build,
            checked_build: header.checked_build,
            directory_table_base: header.directory_table_base,
            ps_loaded_module_list: header.ps_loaded_module_list,
            kd_debugger_data_block: header.kd_debugger_data_block,
            kern_base: 0,
            number_processors: header.number_processors,
            bug_check_code: header.bug_check_code,
            bug_check_parameters: header.bug_check_parameters,
            system_time: header.system_time,
        }
    }
}
