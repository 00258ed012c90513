//! The CSV output: one row per outstanding allocation, RFC 4180 (CRLF line ends; a field is
//! quoted when it holds a comma, a double quote, CR or LF, with quotes doubled).

use super::stack_symbols;
use crate::verifier::model::LeakReport;

/// The header row's fields, in order.
pub const COLUMNS: &[&str] = &[
    "driver",
    "address",
    "size",
    "tag",
    "caller",
    "caller_symbol",
    "requested_size",
    "thread",
    "stack",
];

/// A header row, then one row per allocation of every driver: addresses as `0x` hex, sizes as
/// decimal integers, `requested_size` and `thread` empty when the log did not hold the block,
/// `stack` the frames' symbols joined by `" <- "` (newest first).
pub fn render(report: &LeakReport) -> String {
    let mut out = String::new();
    push_row(&mut out, COLUMNS.iter().map(|c| c.to_string()));
    for driver in &report.drivers {
        for a in &driver.allocations {
            push_row(
                &mut out,
                [
                    driver.name.clone(),
                    format!("{:#x}", a.address),
                    a.size.to_string(),
                    a.tag.clone(),
                    format!("{:#x}", a.caller),
                    a.caller_symbol.clone(),
                    a.requested_size.map(|s| s.to_string()).unwrap_or_default(),
                    a.thread.map(|t| format!("{t:#x}")).unwrap_or_default(),
                    stack_symbols(a),
                ],
            );
        }
    }
    out
}

fn push_row(out: &mut String, fields: impl IntoIterator<Item = String>) {
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&quote(&field));
    }
    out.push_str("\r\n");
}

/// One field, quoted when RFC 4180 requires it.
pub fn quote(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}
