//! The JSON output (documented in the README, "JSON output"; versioned by `schema_version`).

use crate::verifier::model::LeakReport;

/// The report as pretty-printed JSON, with a final newline, written into `out`: the JSON of a
/// large pull (45,000 allocations with 50-frame stacks) is over 100 MB, which need not be in
/// memory at once.
pub fn write(report: &LeakReport, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    out.write_all(b"\n")
}

/// [`write`] into a string.
pub fn render(report: &LeakReport) -> String {
    let mut bytes = Vec::new();
    write(report, &mut bytes).expect("a LeakReport always serialises (string keys, no floats)");
    String::from_utf8(bytes).expect("serde_json writes UTF-8")
}
