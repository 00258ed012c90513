//! Golden text reports of the simulated Windows 7, 10 and 11 targets in both WinDbg layouts
//! (`tests/data/golden/<scenario>.<style>.txt`), and a line-shape check that ties each golden
//! line to a public sample: every line of WinDbg's blocks, with addresses, counts, symbols,
//! driver names and tags abstracted (widths kept), must have the shape of a line in
//! `tests/data/windbg_samples/`. So a golden file cannot drift into a layout nobody printed.
//!
//! Regenerate after a deliberate change: `KDLEAK_BLESS=1 cargo test --test windbg_golden`, then
//! read the diff.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kdleak::attach::{self, AttachOptions};
use kdleak::connect::ConnectSpec;
use kdleak::report::text::{self, TextOptions, WindbgStyle};
use kdleak::report::{self, GroupBy};
use kdleak::session::SessionOptions;
use kdleak::stop::StopOptions;
use kdleak::verifier::PullOptions;

fn data(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(dir)
}

/// What a line looks like with its values abstracted: runs of spaces kept exactly, `0x` numbers
/// and bare hex words of pointer or ULONG width as `0x{N}` / `{N}` (other widths `0x*`), words
/// with a `!` as `SYM`, `*.sys` as `DRV`, a driver's state as `(STATE)`, a flag's mark as `[?]`,
/// and a table row's tag as `TAG`.
fn shape(line: &str) -> String {
    let line = line
        .replace("(Loaded and Unloaded)", "(STATE)")
        .replace("(Loaded)", "(STATE)")
        .replace("(Unloaded)", "(STATE)")
        .replace("[X] (", "[?] (")
        .replace("[ ] (", "[?] (");
    let mut out: Vec<String> = Vec::new();
    let mut rest = line.as_str();
    while !rest.is_empty() {
        let spaces = rest.len() - rest.trim_start_matches(' ').len();
        if spaces > 0 {
            out.push(rest[..spaces].to_string());
            rest = &rest[spaces..];
            continue;
        }
        let end = rest.find(' ').unwrap_or(rest.len());
        out.push(word(&rest[..end]));
        rest = &rest[end..];
    }
    // A table row: pointer, length, tag, pointer (today's and the classic layout).
    let words: Vec<usize> = (0..out.len())
        .filter(|&i| !out[i].starts_with(' '))
        .collect();
    if words.len() >= 4 {
        let w = |k: usize| out[words[k]].as_str();
        let pointer = |s: &str| s.contains("{8}") || s.contains("{16}");
        if pointer(w(0)) && w(1) == "0x{8}" && pointer(w(3)) && !w(2).contains('{') {
            out[words[2]] = "TAG".to_string();
        }
    }
    out.concat()
}

fn word(word: &str) -> String {
    if word.contains('!') {
        return "SYM".to_string();
    }
    if word.ends_with(".sys") {
        return "DRV".to_string();
    }
    if word.contains('/') {
        return word
            .split('/')
            .map(self::word)
            .collect::<Vec<_>>()
            .join("/");
    }
    let body = word.trim_end_matches(['.', ',', ':', ')']);
    let tail = &word[body.len()..];
    let hex = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
    let width = |n: usize| match n {
        8 | 16 => format!("{{{n}}}"),
        _ => "*".to_string(),
    };
    if let Some(digits) = body.strip_prefix("0x").filter(|d| hex(d)) {
        return format!("0x{}{tail}", width(digits.len()));
    }
    if hex(body) && matches!(body.len(), 8 | 16) {
        return format!("{}{tail}", width(body.len()));
    }
    word.to_string()
}

/// The shapes of every line of every public sample.
fn sample_shapes() -> BTreeSet<String> {
    let mut shapes = BTreeSet::new();
    for entry in std::fs::read_dir(data("windbg_samples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "txt") {
            let text = std::fs::read_to_string(&path).unwrap();
            shapes.extend(text.lines().map(shape));
        }
    }
    shapes
}

/// kdleak's own lines around and inside the WinDbg blocks (no sample can have them): the
/// command echo, the leak table, the completeness and symbol-source lines, a block without a
/// record.
fn kdleak_line(line: &str) -> bool {
    line.starts_with("0: kd> !verifier 3 ")
        || line.starts_with("0: kd> !verifier 80 ")
        || line.starts_with("Leak table (by ")
        || line.starts_with("Site ")
        || line.starts_with("Complete: ")
        || line.starts_with("INCOMPLETE: ")
        || line.starts_with("Symbols: ")
        || line.starts_with("No allocation record for pool block ")
        || line.starts_with("No allocation stacks: ")
}

/// The leak table's rows: from the line after its header to the blank line.
fn leak_table_rows(text: &str) -> BTreeSet<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut rows = BTreeSet::new();
    if let Some(header) = lines.iter().position(|l| l.starts_with("Leak table (by ")) {
        for (i, line) in lines.iter().enumerate().skip(header + 2) {
            if line.is_empty() {
                break;
            }
            rows.insert(i);
        }
    }
    rows
}

fn options() -> AttachOptions {
    let mut symbols = kdleak::symbols::SymbolOptions::new(Some("")).unwrap();
    symbols.offline = true;
    AttachOptions {
        stop: StopOptions {
            session: SessionOptions {
                handle_signals: false,
                ..SessionOptions::default()
            },
            symbols: Some(symbols),
            ..StopOptions::default()
        },
        pull: PullOptions::default(),
    }
}

/// `kdleak attach sim:<scenario>`'s text, as the CLI renders it: current with the default
/// newest-first log read, classic with the whole log.
async fn text_report(scenario: &str, style: WindbgStyle) -> String {
    let spec: ConnectSpec = format!("sim:{scenario}").parse().unwrap();
    let mut options = options();
    options.pull.history_limit = 8;
    options.pull.until_stacks = style == WindbgStyle::Current;
    let attached = tokio::time::timeout(Duration::from_secs(300), attach::run(&spec, &options))
        .await
        .expect("timed out")
        .unwrap();
    let mut report = attached.report;
    report.sites = report::sites(&report, GroupBy::Caller);
    // The golden files hold what was read, not how long this run's stop took.
    report.target.stops.clear();
    report.target.outside_s = None;
    text::render(
        &report,
        &TextOptions {
            style,
            ..TextOptions::default()
        },
    )
}

fn check_golden(name: &str, text: &str) {
    let path = data("golden").join(name);
    if std::env::var_os("KDLEAK_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (KDLEAK_BLESS=1 cargo test --test windbg_golden writes it)",
            path.display()
        )
    });
    for (i, (got, want)) in text.lines().zip(want.lines()).enumerate() {
        assert_eq!(got, want, "{name}: line {} differs", i + 1);
    }
    assert_eq!(text, want, "{name}: length differs");
}

fn check_shapes(name: &str, text: &str, shapes: &BTreeSet<String>) {
    let rows = leak_table_rows(text);
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() || kdleak_line(line) || rows.contains(&i) {
            continue;
        }
        assert!(
            shapes.contains(&shape(line)),
            "{name}: line {} has a shape no public sample has:\n{line}\n{}",
            i + 1,
            shape(line)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn golden_reports_per_build_and_style_have_the_samples_shapes() {
    let shapes = sample_shapes();
    for scenario in ["win7-myfault", "win10-myfault", "win11-myfault"] {
        for style in [WindbgStyle::Current, WindbgStyle::Classic] {
            let name = format!("{scenario}.{style}.txt");
            let text = text_report(scenario, style).await;
            check_shapes(&name, &text, &shapes);
            check_golden(&name, &text);
        }
    }
    // `verifier /standard` plus the bit 0x100000 of the Windows 10 samples: a RESERVED list.
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("win10-standard-flags.toml");
    let toml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/scenarios/win10-myfault.toml"),
    )
    .unwrap()
    .replace("level = 0x8", "level = 0x1209bb");
    std::fs::write(&scenario, toml).unwrap();
    let text = text_report(scenario.to_str().unwrap(), WindbgStyle::Current).await;
    assert!(text.contains("    [X] (0x00100000) Unused or reserved flag\n"));
    check_shapes("win10-standard-flags.current.txt", &text, &shapes);
    check_golden("win10-standard-flags.current.txt", &text);
}

#[test]
fn shapes_keep_widths_and_spacing() {
    assert_eq!(
        shape("      0xffffcb843b87aff0  0x00000004  ebpf  0xfffff803569c53e1  ebpfcore!x+0x21"),
        "      0x{16}  0x{8}  TAG  0x{16}  SYM"
    );
    assert_eq!(
        shape("      0x86491d10  0x00000070  abcd  0xa05c1047  Sample!DriverEntry+0x27"),
        "      0x{8}  0x{8}  TAG  0x{8}  SYM"
    );
    assert_eq!(
        shape("  Peak nonpaged pool allocations         0x13 for 0004A4A0 bytes"),
        "  Peak nonpaged pool allocations         0x* for {8} bytes"
    );
    assert_eq!(
        shape("Parsed entry 0000000000010000/0000000000010000..."),
        "Parsed entry {16}/{16}..."
    );
    assert_ne!(
        shape("  RaiseIrqls          0x0"),
        shape("  RaiseIrqls           0x0")
    );
    assert_eq!(
        shape("nt!_VF_TARGET_DRIVER 0xa013f2c8: Sample.sys (Loaded and Unloaded)"),
        "SYM 0x{8}: DRV (STATE)"
    );
}
