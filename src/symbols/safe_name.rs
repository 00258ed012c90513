//! PDB names from the target's memory stay names. The RSDS record's path is the target's to
//! choose; its file name (the part after the last `\` or `/`, as WinDbg takes it, symbols.md
//! §2.1) becomes a directory and a file of the cache, `name/KEY/name`, and a URL path under each
//! symbol server. A name that could leave the cache, alias another file on Windows or mean
//! something else in a URL is refused: the module's symbols are skipped and the report says so.

/// The longest name accepted, in bytes: room for the cache's temporary names
/// (`.NAME.PID.N.tmp`) within the 255 bytes most file systems allow for one name.
pub const MAX_NAME_BYTES: usize = 200;

/// Windows device names, which name a device in any directory and with any extension
/// (learn.microsoft.com/windows/win32/fileio/naming-a-file).
const DEVICES: [&str; 6] = ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"];

/// Why `name` cannot be a PDB name in a cache or store, or `None` when it can.
pub fn problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("the name is empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Some(format!(
            "the name is {} bytes long (at most {MAX_NAME_BYTES})",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Some("the name is a directory reference".into());
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Some(format!(
            "the name holds the control character {:#04x}",
            c as u32
        ));
    }
    if name.contains('\u{fffd}') {
        return Some("the name is not valid UTF-8".into());
    }
    if let Some(c) = name.chars().find(|c| "\\/:*?\"<>|".contains(*c)) {
        return Some(format!(
            "the name holds `{c}`, which no Windows file name may"
        ));
    }
    if name.ends_with('.') || name.ends_with(' ') || name.starts_with(' ') {
        return Some("the name starts with a space or ends in a dot or space".into());
    }
    let stem = name.split('.').next().unwrap_or(name).trim_end();
    let upper = stem.to_ascii_uppercase();
    let numbered = |prefix: &str| {
        upper
            .strip_prefix(prefix)
            .is_some_and(|n| n.len() == 1 && n.as_bytes()[0].is_ascii_digit())
            || upper
                .strip_prefix(prefix)
                .is_some_and(|n| ["¹", "²", "³"].contains(&n))
    };
    if DEVICES.contains(&upper.as_str()) || numbered("COM") || numbered("LPT") {
        return Some(format!("`{stem}` is a Windows device name"));
    }
    None
}

/// `text` for messages and reports: control characters written as `<1b>` (a name from the
/// target never reaches a terminal raw; `kernel::escape_controls`), and cut after `max`
/// characters with the full length said.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push_str(&format!("… ({} bytes)", text.len()));
            break;
        }
        if c.is_control() {
            out.push_str(&format!("<{:02x}>", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `segment` for a URL path: RFC 3986's unreserved characters as they are, every other byte
/// percent-encoded (a checked name holds no `/`, `?` or `#` anyway; `%` and spaces do occur).
pub fn url_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for &b in segment.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass() {
        for name in [
            "ntkrnlmp.pdb",
            "ShowSSEConfig.pdb",
            "dump_syms_regtest64.pdb",
            "my driver (x64).pdb",
            "wdf01000.pdb",
            "console.pdb",
            "COM10.pdb",
            "nul-filter.pdb",
            "café.pdb",
        ] {
            assert_eq!(problem(name), None, "{name}");
        }
    }

    #[test]
    fn hostile_names_are_refused() {
        for name in [
            "",
            ".",
            "..",
            "a\0b.pdb",
            "tab\t.pdb",
            "esc\u{1b}[31m.pdb",
            "C:evil.pdb",
            "a/b.pdb",
            "a\\b.pdb",
            "what?.pdb",
            "x.pdb.",
            "x.pdb ",
            "CON",
            "con.pdb",
            "Aux.pdb",
            "NUL.tar.pdb",
            "COM1.pdb",
            "lpt9.pdb",
            "COM¹.pdb",
            "CONIN$.pdb",
            "bad\u{fffd}.pdb",
        ] {
            assert!(problem(name).is_some(), "{name:?} passed");
        }
        assert!(problem(&"a".repeat(5000)).unwrap().contains("5000 bytes"));
    }

    #[test]
    fn printable_escapes_and_cuts() {
        assert_eq!(printable("a\u{1b}[31mb", 80), "a<1b>[31mb");
        assert_eq!(printable(&"x".repeat(300), 4), "xxxx… (300 bytes)");
    }

    #[test]
    fn url_segments_are_percent_encoded() {
        assert_eq!(url_segment("ntkrnlmp.pdb"), "ntkrnlmp.pdb");
        assert_eq!(url_segment("my driver%.pdb"), "my%20driver%25.pdb");
        assert_eq!(url_segment("café"), "caf%C3%A9");
    }
}
