//! Issue 16: `kdleak completions SHELL` and `kdleak man`. The bash script is sourced in a real
//! bash and its `_kdleak` function driven as bash's programmable completion drives it
//! (COMP_WORDS, COMP_CWORD, COMP_LINE, COMP_POINT, then `_kdleak CMD CUR PREV`); COMPREPLY is
//! what a user's Tab would offer.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;
use common::*;

fn stdout_of(args: &[&str]) -> String {
    let mut command = kdleak();
    command.args(args);
    let out = finish(spawn(command), Duration::from_secs(60));
    assert!(
        out.status.success(),
        "kdleak {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What bash offers for the command line `words` with the cursor at the end of the last word.
fn complete(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        r#"set -u
source "$1"
complete -p kdleak >/dev/null || {{ echo "no completion registered for kdleak" >&2; exit 3; }}
COMP_WORDS=({words})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
cur="${{COMP_WORDS[COMP_CWORD]}}"
prev="${{COMP_WORDS[COMP_CWORD-1]}}"
_kdleak kdleak "$cur" "$prev"
printf '%s\n' "${{COMPREPLY[@]}}"
"#,
        words = quoted.join(" ")
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program, "bash"])
        .arg(script)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "bash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut offered: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    offered.sort();
    offered
}

#[test]
fn the_bash_completion_offers_subcommands_options_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("kdleak.bash");
    std::fs::write(&script, stdout_of(&["completions", "bash"])).unwrap();

    // kdleak at<TAB>
    assert_eq!(complete(&script, &["kdleak", "at"]), ["attach"]);
    // kdleak <TAB>: every subcommand, these two included.
    let all = complete(&script, &["kdleak", ""]);
    for sub in ["attach", "watch", "sim", "symbols", "completions", "man"] {
        assert!(all.iter().any(|s| s == sub), "{sub} not in {all:?}");
    }
    // kdleak attach --sym<TAB>: attach's symbol options, nothing else.
    let options = complete(&script, &["kdleak", "attach", "--sym"]);
    for option in ["--sympath", "--symbol-timeout", "--symbol-max-download"] {
        assert!(
            options.iter().any(|o| o == option),
            "{option} not in {options:?}"
        );
    }
    assert!(
        options.iter().all(|o| o.starts_with("--sym")),
        "{options:?}"
    );
    // A subcommand's own option that another lacks.
    let watch = complete(&script, &["kdleak", "watch", "--inter"]);
    assert_eq!(watch, ["--interval"]);
    assert!(complete(&script, &["kdleak", "attach", "--inter"]).is_empty());
    // kdleak completions <TAB>: the shells.
    let shells = complete(&script, &["kdleak", "completions", ""]);
    for shell in ["bash", "fish", "powershell", "zsh"] {
        assert!(
            shells.iter().any(|s| s == shell),
            "{shell} not in {shells:?}"
        );
    }
}

#[test]
fn every_shell_gets_a_script_naming_the_subcommands() {
    for (shell, marker) in [
        ("zsh", "#compdef kdleak"),
        ("fish", "complete -c kdleak"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let script = stdout_of(&["completions", shell]);
        assert!(script.contains(marker), "{shell}: no `{marker}`");
        assert!(
            script.contains("attach") && script.contains("--sympath"),
            "{shell}"
        );
    }
    let mut bad = kdleak();
    bad.args(["completions", "cmd.exe"]);
    let out = finish(spawn(bad), Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));
}

#[test]
fn the_man_page_lists_the_subcommands_and_dir_writes_one_per_subcommand() {
    let page = stdout_of(&["man"]);
    assert!(
        page.contains(".TH kdleak 1"),
        "{}",
        &page[..200.min(page.len())]
    );
    for sub in ["attach", "watch", "symbols", "completions"] {
        assert!(page.contains(&format!("kdleak\\-{sub}(1)")), "{sub}");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut command = kdleak();
    command.args(["man", "--dir"]).arg(dir.path());
    let out = finish(spawn(command), Duration::from_secs(60));
    assert!(out.status.success());
    let attach = std::fs::read_to_string(dir.path().join("kdleak-attach.1")).unwrap();
    assert!(attach.contains(".TH kdleak-attach 1"), "{attach}");
    assert!(attach.contains("\\-\\-sympath"), "{attach}");
    assert!(dir.path().join("kdleak-symbols-fetch.1").is_file());
}
