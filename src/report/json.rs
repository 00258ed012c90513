//! The JSON output (documented in the README, "JSON output"; versioned by `schema_version`).

use crate::verifier::model::LeakReport;

/// The report as pretty-printed JSON, with a final newline.
pub fn render(report: &LeakReport) -> String {
    let mut text = serde_json::to_string_pretty(report)
        .expect("a LeakReport always serialises (string keys, no floats)");
    text.push('\n');
    text
}

/// [`render`] straight into `out`: the JSON of a large pull (45,000 allocations with 50-frame
/// stacks) is over 100 MB, which need not be in memory at once.
pub fn write(report: &LeakReport, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    out.write_all(b"\n")
}
