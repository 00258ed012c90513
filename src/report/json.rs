//! The JSON output (documented in the README, "JSON output"; versioned by `schema_version`).

use crate::verifier::model::LeakReport;

/// The report as pretty-printed JSON, with a final newline.
pub fn render(report: &LeakReport) -> String {
    let mut text = serde_json::to_string_pretty(report)
        .expect("a LeakReport always serialises (string keys, no floats)");
    text.push('\n');
    text
}
