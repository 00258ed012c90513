//! Air-gapped labs, end to end (README "Air-gapped labs"), with `kdleak attach` and `kdleak
//! symbols` (the binary) against `kdleak sim` (the binary) over a Unix socket:
//!
//! * the ISF route: an offline pull with no PDB for nt and an ISF pack present (a directory in
//!   Volatility's layout, or a zipped pack) equals the pull from the kernel PDB, for every
//!   fixture build — every key of the JSON report but the time, the connection and the symbol
//!   sources, which say where each module's symbols came from; a pack without the kernel's
//!   GUID is an error naming the GUID and where kdleak looked, and the target runs afterwards;
//!   Volatility's own symbol directory is found without `--isf`;
//! * the manifest route: `symbols manifest` without any kernel symbols lists the kernel (and
//!   says why only it), with an ISF pack the kernel and the modules the pull needs; `symbols
//!   fetch` fills a store from a loopback symbol server; the store then serves an offline pull
//!   that equals the reference.
//!
//! Every command runs with HOME and XDG_CACHE_HOME in a temporary directory, so no Volatility
//! installation of the machine running the tests takes part unless a test puts one there.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use kdleak::verifier::LeakReport;
use serde_json::Value;

mod common;
use common::*;
mod fixture_isf;
mod symbol_server;

/// (scenario, fixture).
const BUILDS: [(&str, &str); 3] = [
    ("win7-myfault", "win7-7601"),
    ("win10-myfault", "win10-19041"),
    ("win11-myfault", "win11-22000"),
];

fn fixture_dir(fixture: &str) -> PathBuf {
    root().join("captures/fixtures").join(fixture)
}

/// A home without Volatility: its default symbol directories are empty.
fn isolated(command: &mut Command, home: &Path) {
    command
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env_remove("VIRTUAL_ENV")
        .env_remove("APPDATA");
}

/// Serves `scenario` on a Unix socket, runs `kdleak ARGS... com:pipe,port=SOCKET MORE...`,
/// checks the target runs afterwards, and returns the command's output.
fn against_sim(scenario: &str, home: &Path, args: &[&str], more: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kd.sock");
    let state_file = dir.path().join("state.json");
    let mut sim = kdleak();
    sim.args(["sim", "--scenario", scenario, "--pipe"])
        .arg(&socket)
        .arg("--state-file")
        .arg(&state_file);
    let _sim = spawn(sim);
    wait_for("the sim's socket", Duration::from_secs(30), || {
        socket.exists()
    });
    let mut command = kdleak();
    command
        .args(args)
        .arg(format!("com:pipe,port={}", socket.display()))
        .args(more);
    isolated(&mut command, home);
    let out = finish(spawn(command), Duration::from_secs(120));
    wait_for("the target running again", Duration::from_secs(30), || {
        let s = state(&state_file);
        s["state"] == "running" && s["continues"] == 1
    });
    out
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    stderr
}

/// `kdleak attach --format json --offline --sympath SYMPATH MORE...`.
fn pull(scenario: &str, home: &Path, sympath: &Path, more: &[&str]) -> Value {
    let sympath = sympath.to_str().unwrap();
    let mut args = vec!["--offline", "--sympath", sympath, "--format", "json"];
    args.extend(more);
    let out = against_sim(scenario, home, &["attach"], &args);
    ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The report without what differs between two pulls of the same target by nature: when, over
/// which socket, and where the symbols came from.
fn comparable(report: &Value) -> Value {
    let mut report = report.clone();
    let target = report["target"].as_object_mut().unwrap();
    for key in ["time", "connection", "symbol_sources", "stops", "outside_s"] {
        target.remove(key);
    }
    report
}

/// A symbol path with the drivers' PDBs of `fixture` but not the kernel's.
fn drivers_only(fixture: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for pdb in ["myfault.pdb", "leaky.pdb"] {
        std::fs::copy(fixture_dir(fixture).join(pdb), dir.path().join(pdb)).unwrap();
    }
    dir
}

fn sources(report: &Value) -> Vec<(String, String)> {
    report["target"]["symbol_sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["module"].as_str().unwrap().to_string(),
                s["source"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn text(report: &Value) -> String {
    let report: LeakReport = serde_json::from_value(report.clone()).unwrap();
    let mut report = report;
    report.sites = kdleak::report::sites(&report, kdleak::report::GroupBy::Caller);
    kdleak::report::text::render(&report, &kdleak::report::text::TextOptions::default())
}

/// The text without the lines that differ between two pulls by nature: where the symbols came
/// from, and how long the target was frozen.
fn without_symbols_line(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("Symbols: ") && !l.starts_with("Target frozen "))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn an_offline_pull_from_an_isf_pack_equals_the_pdb_pull_for_every_build() {
    let home = tempfile::tempdir().unwrap();
    let packs = tempfile::tempdir().unwrap();
    let directory = packs.path().join("symbols");
    let zipped = packs.path().join("windows.zip");
    for (_, fixture) in BUILDS {
        fixture_isf::write_fixture_isf(fixture, &directory);
    }
    fixture_isf::write_zipped_pack(&BUILDS.map(|(_, f)| f), &zipped);
    for (i, (scenario, fixture)) in BUILDS.into_iter().enumerate() {
        let from_pdb = pull(scenario, home.path(), &fixture_dir(fixture), &[]);
        // One build reads the zipped pack, the others the directory.
        let pack = if i == 0 { &zipped } else { &directory };
        let sympath = drivers_only(fixture);
        let from_isf = pull(
            scenario,
            home.path(),
            sympath.path(),
            &["--isf", pack.to_str().unwrap()],
        );
        assert_eq!(
            comparable(&from_isf),
            comparable(&from_pdb),
            "{fixture}: the ISF pull differs from the PDB pull"
        );
        let frames = from_isf["drivers"][0]["allocations"][0]["stack"]
            .as_array()
            .unwrap();
        assert!(
            frames
                .iter()
                .filter(|f| f["symbol"].as_str().unwrap().starts_with("nt!"))
                .count()
                >= 3,
            "{fixture}: nt frames named from the ISF's symbols: {frames:?}"
        );
        // The report says where each module's symbols came from.
        assert_eq!(
            sources(&from_pdb),
            [
                ("nt".into(), "pdb".into()),
                ("myfault".into(), "pdb".into())
            ]
        );
        assert_eq!(
            sources(&from_isf),
            [
                ("nt".into(), "isf".into()),
                ("myfault".into(), "pdb".into())
            ]
        );
        let nt = &from_isf["target"]["symbol_sources"][0];
        let table = fixture_isf::table_name(fixture);
        assert!(
            nt["location"].as_str().unwrap().ends_with(&format!(
                "{}windows/ntkrnlmp.pdb/{table}",
                if i == 0 { "windows.zip!" } else { "symbols/" }
            )),
            "{nt}"
        );
        assert_eq!(nt["pdb"], "ntkrnlmp.pdb");
        // The text says it too, and is otherwise the same.
        let (pdb_text, isf_text) = (text(&from_pdb), text(&from_isf));
        assert!(
            isf_text.contains(&format!(
                "\nSymbols: nt from the ISF table {table}; myfault from myfault.pdb\n"
            )),
            "{isf_text}"
        );
        assert!(pdb_text.contains("\nSymbols: nt from ntkrnlmp.pdb; myfault from myfault.pdb\n"));
        assert_eq!(
            without_symbols_line(&isf_text),
            without_symbols_line(&pdb_text)
        );
    }
}

#[test]
fn a_pack_without_the_kernels_guid_names_the_guid_and_where_it_looked() {
    let home = tempfile::tempdir().unwrap();
    let pack = tempfile::tempdir().unwrap();
    fixture_isf::write_fixture_isf("win10-19041", pack.path());
    let sympath = drivers_only("win7-7601");
    let out = against_sim(
        "win7-myfault",
        home.path(),
        &["attach"],
        &[
            "--offline",
            "--sympath",
            sympath.path().to_str().unwrap(),
            "--isf",
            pack.path().to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    let wanted = fixture_isf::table_name("win7-7601").replace(".json.xz", "");
    for says in [
        format!("no ISF symbol pack has ntkrnlmp.pdb/{wanted}.json, .json.xz or .json.gz"),
        format!("looked in {}", pack.path().display()),
        "not found in the symbol path".to_string(),
    ] {
        assert!(stderr.contains(&says), "missing {says:?} in {stderr}");
    }
}

#[test]
fn volatilitys_own_symbol_directory_is_found_without_isf() {
    let home = tempfile::tempdir().unwrap();
    // Where Volatility 3 puts what it converts: ~/.cache/volatility3/symbols/windows/…
    fixture_isf::write_fixture_isf(
        "win11-22000",
        &home.path().join(".cache/volatility3/symbols"),
    );
    let manifest = fixture_isf::manifest("win11-22000");
    let kernel = &manifest["files"]["ntoskrnl.exe"];
    let mut types = kdleak();
    types.args([
        "types",
        "nt!_MM_DRIVER_VERIFIER_DATA",
        "--guid",
        kernel["pdb_guid"].as_str().unwrap(),
        "--age",
        "1",
        "--offline",
        "--sympath",
        "",
        "--format",
        "json",
    ]);
    isolated(&mut types, home.path());
    let out = finish(spawn(types), Duration::from_secs(60));
    ok(&out);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["source"], "isf");
    assert_eq!(doc["size"], 0xb0, "sizeof on 22000 (symbols.md §5.5)");
    assert!(doc["pdb"]
        .as_str()
        .unwrap()
        .contains(".cache/volatility3/symbols/windows/ntkrnlmp.pdb/"));
    let allocation_freed = doc["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "AllocationFreed")
        .unwrap();
    assert_eq!(allocation_freed["offset"], 0x30);
}

/// The manifest's lines as (pdb, key) pairs, checking each is `symchk /om`'s `NAME,KEY,1`.
fn manifest_lines(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 3, "{line}");
            assert_eq!(fields[2], "1", "{line}");
            assert!(fields[1][..32]
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
            (fields[0].to_string(), fields[1].to_string())
        })
        .collect()
}

/// `symchk`'s key for a fixture image: GUID, then the age in lower-case hex.
fn key(fixture: &str, image: &str) -> (String, String) {
    let manifest = fixture_isf::manifest(fixture);
    let file = &manifest["files"][image];
    (
        file["pdb"].as_str().unwrap().to_string(),
        format!(
            "{}{:x}",
            file["pdb_guid"].as_str().unwrap(),
            file["pdb_age"].as_u64().unwrap()
        ),
    )
}

#[test]
fn the_manifest_route_through_a_loopback_symbol_server_then_offline() {
    let (scenario, fixture) = ("win10-myfault", "win10-19041");
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // The connected side: a symbol server with every fixture PDB in store layout.
    let served = work.path().join("served");
    for image in ["ntoskrnl.exe", "myfault.sys", "leaky.sys"] {
        let (pdb, key) = key(fixture, image);
        let dir = served.join(&pdb).join(key.to_ascii_uppercase());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(fixture_dir(fixture).join(&pdb), dir.join(&pdb)).unwrap();
    }
    let server = symbol_server::serve(served);
    let store = work.path().join("store");
    let fetch = |manifest: &Path| {
        let mut command = kdleak();
        command.args(["symbols", "fetch"]).arg(manifest).args([
            "--sympath",
            &format!("srv*{}*http://127.0.0.1:{}", store.display(), server.port),
        ]);
        isolated(&mut command, home.path());
        finish(spawn(command), Duration::from_secs(60))
    };
    let empty = work.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();

    // 1. In the lab, nothing: the kernel alone, and why.
    let first = work.path().join("first.txt");
    let out = against_sim(
        scenario,
        home.path(),
        &["symbols", "manifest"],
        &[
            "--offline",
            "--sympath",
            empty.to_str().unwrap(),
            "--out",
            first.to_str().unwrap(),
        ],
    );
    let stderr = ok(&out);
    assert_eq!(manifest_lines(&first), [key(fixture, "ntoskrnl.exe")]);
    assert!(stderr.contains("Only the kernel is listed"), "{stderr}");
    assert!(stderr.contains("missing here"), "{stderr}");
    let out = fetch(&first);
    ok(&out);
    let (pdb, kernel_key) = key(fixture, "ntoskrnl.exe");
    assert!(store
        .join(&pdb)
        .join(kernel_key.to_ascii_uppercase())
        .join(&pdb)
        .is_file());

    // 2. With the kernel's PDB carried in: the kernel and the modules the pull needs.
    let second = work.path().join("second.txt");
    let out = against_sim(
        scenario,
        home.path(),
        &["symbols", "manifest"],
        &[
            "--offline",
            "--sympath",
            store.to_str().unwrap(),
            "--out",
            second.to_str().unwrap(),
        ],
    );
    ok(&out);
    let wanted = [key(fixture, "ntoskrnl.exe"), key(fixture, "myfault.sys")];
    assert_eq!(manifest_lines(&second), wanted);

    // 2'. An ISF pack in the lab lists the same in one round.
    let pack = work.path().join("pack");
    fixture_isf::write_fixture_isf(fixture, &pack);
    let with_pack = work.path().join("with-pack.txt");
    let out = against_sim(
        scenario,
        home.path(),
        &["symbols", "manifest"],
        &[
            "--offline",
            "--sympath",
            empty.to_str().unwrap(),
            "--isf",
            pack.to_str().unwrap(),
            "--out",
            with_pack.to_str().unwrap(),
        ],
    );
    let stderr = ok(&out);
    assert_eq!(manifest_lines(&with_pack), wanted);
    assert!(
        stderr.contains("an ISF pack stands in for its PDB here"),
        "{stderr}"
    );

    // 3. Fetched on the connected side: the kernel is there already, myfault is downloaded.
    let requests = server.requests();
    let out = fetch(&second);
    let stderr = ok(&out);
    assert!(stderr.contains("2 of 2 PDBs in the store"), "{stderr}");
    assert_eq!(
        server.requests(),
        requests + 1,
        "only myfault.pdb is downloaded"
    );

    // 4. Back in the lab, the store alone, offline: the same report as from the fixtures.
    let from_store = pull(scenario, home.path(), &store, &[]);
    let reference = pull(scenario, home.path(), &fixture_dir(fixture), &[]);
    assert_eq!(comparable(&from_store), comparable(&reference));
    assert_eq!(
        sources(&from_store),
        [
            ("nt".into(), "pdb".into()),
            ("myfault".into(), "pdb".into())
        ]
    );
}

#[test]
fn fetch_names_a_bad_manifest_line_and_what_it_could_not_fetch() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let bad = work.path().join("bad.txt");
    std::fs::write(
        &bad,
        "ntkrnlmp.pdb,3844DBB920174967BE7AA4A2C20430FA2,1\nnonsense\n",
    )
    .unwrap();
    let store = work.path().join("store");
    let mut command = kdleak();
    command
        .args(["symbols", "fetch"])
        .arg(&bad)
        .args(["--sympath", store.to_str().unwrap()]);
    isolated(&mut command, home.path());
    let out = finish(spawn(command), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.txt:2: `nonsense`"), "{stderr}");

    let missing = work.path().join("missing.txt");
    std::fs::write(
        &missing,
        "ntkrnlmp.pdb,3844DBB920174967BE7AA4A2C20430FA2,1\n",
    )
    .unwrap();
    let server = symbol_server::serve(work.path().join("nothing"));
    let mut command = kdleak();
    command.args(["symbols", "fetch"]).arg(&missing).args([
        "--sympath",
        &format!("srv*{}*http://127.0.0.1:{}", store.display(), server.port),
    ]);
    isolated(&mut command, home.path());
    let out = finish(spawn(command), Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    assert!(
        stdout.contains("ntkrnlmp.pdb,3844DBB920174967BE7AA4A2C20430FA2,1: not fetched:"),
        "{stdout}"
    );
}

#[test]
fn a_crash_dump_takes_both_routes_too() {
    let (scenario, fixture) = ("win11-myfault", "win11-22000");
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let dump = work.path().join("memory.dmp");
    let mut sim = kdleak();
    sim.args([
        "sim",
        "--scenario",
        scenario,
        "--dump-type",
        "bitmap",
        "--write-dump",
    ])
    .arg(&dump);
    ok(&finish(spawn(sim), Duration::from_secs(60)));
    let pack = work.path().join("pack");
    fixture_isf::write_fixture_isf(fixture, &pack);
    let run = |args: &[&str]| {
        let mut command = kdleak();
        command.args(args);
        isolated(&mut command, home.path());
        finish(spawn(command), Duration::from_secs(120))
    };
    let dump_arg = dump.to_str().unwrap();
    let sympath = drivers_only(fixture);
    let listed = work.path().join("needed.txt");
    let out = run(&[
        "symbols",
        "manifest",
        dump_arg,
        "--offline",
        "--sympath",
        sympath.path().to_str().unwrap(),
        "--isf",
        pack.to_str().unwrap(),
        "--out",
        listed.to_str().unwrap(),
    ]);
    ok(&out);
    assert_eq!(
        manifest_lines(&listed),
        [key(fixture, "ntoskrnl.exe"), key(fixture, "myfault.sys")]
    );
    let analyze = |sympath: &Path, more: &[&str]| {
        let mut args = vec![
            "analyze",
            dump_arg,
            "--offline",
            "--sympath",
            sympath.to_str().unwrap(),
            "--format",
            "json",
        ];
        args.extend(more);
        let out = run(&args);
        ok(&out);
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let from_pdb = analyze(&fixture_dir(fixture), &[]);
    let from_isf = analyze(sympath.path(), &["--isf", pack.to_str().unwrap()]);
    assert_eq!(comparable(&from_isf), comparable(&from_pdb));
    assert_eq!(sources(&from_isf)[0], ("nt".into(), "isf".into()));
}
