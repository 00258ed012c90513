//! The symbol path against inputs nobody here controls (issue 17): a symbol server that lies
//! (another build under the requested key, redirect loops, trickled bytes, 5xx, oversized
//! files and CABs), PDB names from target memory that are paths, device names or control
//! characters, and a target whose modules carry such names (`captures/scenarios/hostile-names.toml`).
//! Servers are loopback ones (`symbol_server`); the real ShowSSEConfig store is the content.

mod common;
mod symbol_server;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kdleak::kernel::PdbInfo;
use kdleak::symbols::{PdbId, SymbolError, SymbolOptions, SymbolPath, Symbols};
use symbol_server::{files, serve, serve_with, Reply};

const KEY: &str = "A62592418D7807494C4C44205044422E1";
const PDB_URL: &str = "/ShowSSEConfig.pdb/A62592418D7807494C4C44205044422E1/ShowSSEConfig.pdb";
const CAB_URL: &str = "/ShowSSEConfig.pdb/A62592418D7807494C4C44205044422E1/ShowSSEConfig.pd_";
const PTR_URL: &str = "/ShowSSEConfig.pdb/A62592418D7807494C4C44205044422E1/file.ptr";

fn store() -> PathBuf {
    common::root().join("captures/pdb/symstore")
}

fn real_pdb() -> PathBuf {
    store()
        .join("ShowSSEConfig.pdb")
        .join(KEY)
        .join("ShowSSEConfig.pdb")
}

fn other_pdb() -> PathBuf {
    common::root().join("captures/pdb/dump_syms_regtest64/dump_syms_regtest64.pdb")
}

fn wanted() -> PdbId {
    PdbId {
        name: "ShowSSEConfig.pdb".into(),
        guid: "A6259241-8D78-0749-4C4C-44205044422E".into(),
        age: 1,
    }
}

fn options(sympath: &str, cache: &Path) -> SymbolOptions {
    SymbolOptions {
        path: SymbolPath::parse(sympath, cache).unwrap(),
        offline: false,
        force: false,
        timeout: Duration::from_secs(5),
        transfer_timeout: Duration::from_secs(30),
        progress: false,
        max_download: kdleak::symbols::resolver::DEFAULT_MAX_DOWNLOAD,
        cache_dir: cache.to_path_buf(),
        isf: Vec::new(),
    }
}

fn server_path(url: &str, cache: &Path) -> String {
    format!("srv*{}*{url}", cache.display())
}

/// Every file under `dir`, relative, sorted (hidden temporary files included).
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// A CAB holding `content` under the name `name`.
fn cab_of(name: &str, content: &[u8]) -> Vec<u8> {
    let mut builder = cab::CabinetBuilder::new();
    builder
        .add_folder(cab::CompressionType::MsZip)
        .add_file(name);
    let mut writer = builder.build(std::io::Cursor::new(Vec::new())).unwrap();
    while let Some(mut file) = writer.next_file().unwrap() {
        std::io::Write::write_all(&mut file, content).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

#[test]
fn a_server_sending_another_build_is_refused_and_nothing_is_cached() {
    let other = std::fs::read(other_pdb()).unwrap();
    for packed in [false, true] {
        let body = if packed {
            cab_of("ShowSSEConfig.pdb", &other)
        } else {
            other.clone()
        };
        let server = serve_with(move |path| match (path, packed) {
            (PDB_URL, false) | (CAB_URL, true) => Reply::File(body.clone()),
            _ => Reply::Status(404),
        });
        let cache = tempfile::tempdir().unwrap();
        let symbols = Symbols::new(options(
            &server_path(&server.url(), cache.path()),
            cache.path(),
        ));
        let err = symbols.load_id(&wanted()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, SymbolError::NotFound { .. }), "{text}");
        assert!(
            text.contains("72E103A8-5CB2-4907-8B76-B2E7C06257B1} age 3")
                && text.contains("not the requested build")
                && text.contains(&format!("127.0.0.1:{}", server.port)),
            "{text}"
        );
        assert_eq!(
            files_under(cache.path()),
            Vec::<String>::new(),
            "packed: {packed}"
        );
        // A second run asks again (nothing wrong was kept to be found).
        let again = Symbols::new(options(
            &server_path(&server.url(), cache.path()),
            cache.path(),
        ));
        assert!(again.load_id(&wanted()).is_err());
        assert!(again.http_requests() >= 1);
    }
}

#[test]
fn windbg_order_pdb_then_pd_then_file_ptr() {
    let target = real_pdb();
    let server = serve_with(move |path| match path {
        PTR_URL => Reply::File(format!("PATH:{}\r\n", target.display()).into_bytes()),
        _ => Reply::Status(404),
    });
    let cache = tempfile::tempdir().unwrap();
    let symbols = Symbols::new(options(
        &server_path(&server.url(), cache.path()),
        cache.path(),
    ));
    let pdb = symbols.load_id(&wanted()).unwrap();
    assert_eq!(pdb.symbol_rva("wmain").unwrap(), 0x1000);
    assert_eq!(
        *server.paths.lock().unwrap(),
        vec![PDB_URL, CAB_URL, PTR_URL]
    );
    // Only the PDB stays, in WinDbg's layout: no file.ptr, no temporary file.
    assert_eq!(
        files_under(cache.path()),
        vec![format!("ShowSSEConfig.pdb/{KEY}/ShowSSEConfig.pdb")]
    );
}

#[test]
fn a_file_ptr_to_a_device_or_elsewhere_is_not_followed_into_the_cache() {
    for pointer in ["PATH:/dev/zero", "PATH:/etc/hostname", "MSG:moved"] {
        let server = serve_with(move |path| match path {
            PTR_URL => Reply::File(pointer.as_bytes().to_vec()),
            _ => Reply::Status(404),
        });
        let cache = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let err = Symbols::new(options(
            &server_path(&server.url(), cache.path()),
            cache.path(),
        ))
        .load_id(&wanted())
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10), "{pointer}");
        assert!(
            matches!(err, SymbolError::NotFound { .. }),
            "{pointer}: {err}"
        );
        assert_eq!(files_under(cache.path()), Vec::<String>::new(), "{pointer}");
    }
}

#[test]
fn redirects_are_followed_to_a_bounded_depth() {
    let root = store();
    // One redirect: followed.
    let server = serve_with(move |path| match path {
        PDB_URL => Reply::Redirect("/elsewhere/ShowSSEConfig.pdb".into()),
        "/elsewhere/ShowSSEConfig.pdb" => files(
            &root,
            &format!("/ShowSSEConfig.pdb/{KEY}/ShowSSEConfig.pdb"),
        ),
        _ => Reply::Status(404),
    });
    let cache = tempfile::tempdir().unwrap();
    Symbols::new(options(
        &server_path(&server.url(), cache.path()),
        cache.path(),
    ))
    .load_id(&wanted())
    .unwrap();
    // A loop: every answer a redirect to the next hop.
    let server = serve_with(|path| Reply::Redirect(format!("{path}x")));
    let cache = tempfile::tempdir().unwrap();
    let err = Symbols::new(options(
        &server_path(&server.url(), cache.path()),
        cache.path(),
    ))
    .load_id(&wanted())
    .unwrap_err();
    assert!(err.to_string().contains("redirects"), "{err}");
    let max = kdleak::symbols::http::MAX_REDIRECTS as usize;
    assert!(
        server.requests() <= max + 1,
        "{} requests",
        server.requests()
    );
    assert_eq!(files_under(cache.path()), Vec::<String>::new());
}

#[test]
fn a_server_that_trickles_hits_the_transfer_timeout() {
    let body = std::fs::read(real_pdb()).unwrap();
    let server = serve_with(move |path| match path {
        PDB_URL => Reply::Trickle {
            body: body.clone(),
            every: Duration::from_millis(100),
        },
        _ => Reply::Status(404),
    });
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(&server_path(&server.url(), cache.path()), cache.path());
    opts.transfer_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = Symbols::new(opts).load_id(&wanted()).unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_eq!(files_under(cache.path()), Vec::<String>::new());
}

#[test]
fn server_errors_get_a_bounded_retry_and_a_message_naming_server_and_status() {
    let server = serve_with(|_| Reply::Status(503));
    let cache = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let err = Symbols::new(options(
        &server_path(&server.url(), cache.path()),
        cache.path(),
    ))
    .load_id(&wanted())
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{}", server.port))
            && text.contains("503")
            && text.contains("3 attempts"),
        "{text}"
    );
    // Three attempts at the PDB, then this server is given up (no .pd_, no file.ptr).
    assert_eq!(server.count(PDB_URL), 3);
    assert_eq!(server.requests(), 3);
    assert!(started.elapsed() < Duration::from_secs(10));

    // A server that recovers within the attempts.
    let failures = std::sync::atomic::AtomicUsize::new(0);
    let root = store();
    let server = serve_with(move |path| {
        if failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
            Reply::Status(502)
        } else {
            files(&root, path)
        }
    });
    let cache = tempfile::tempdir().unwrap();
    Symbols::new(options(
        &server_path(&server.url(), cache.path()),
        cache.path(),
    ))
    .load_id(&wanted())
    .unwrap();
    assert_eq!(server.count(PDB_URL), 3);
}

#[test]
fn downloads_and_cabs_over_the_limit_are_refused() {
    for (packed, limit) in [(false, 100_000u64), (true, 100_000)] {
        let root = store();
        let server = serve_with(move |path| match (path, packed) {
            (PDB_URL, true) => Reply::Status(404),
            _ => files(&root, path),
        });
        let cache = tempfile::tempdir().unwrap();
        let mut opts = options(&server_path(&server.url(), cache.path()), cache.path());
        opts.max_download = limit;
        let err = Symbols::new(opts).load_id(&wanted()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("limit"), "{text}");
        if packed {
            // The CAB itself (53 KB) is under the limit; the PDB it declares (372 KB) is not.
            assert!(text.contains("declares 372736 bytes"), "{text}");
        }
        assert_eq!(files_under(cache.path()), Vec::<String>::new());
    }
}

/// What a target's RSDS record can name, and what becomes of it: `Some(name)` looked up as
/// that file name, `None` refused.
fn hostile_names() -> Vec<(String, Option<&'static str>)> {
    vec![
        (
            "..\\..\\..\\Windows\\ShowSSEConfig.pdb".into(),
            Some("ShowSSEConfig.pdb"),
        ),
        ("/etc/ShowSSEConfig.pdb".into(), Some("ShowSSEConfig.pdb")),
        ("C:ShowSSEConfig.pdb".into(), Some("ShowSSEConfig.pdb")),
        (
            "\\\\server\\share\\..\\ShowSSEConfig.pdb".into(),
            Some("ShowSSEConfig.pdb"),
        ),
        ("C:\\x\\..".into(), None),
        ("C:\\x\\.".into(), None),
        ("C:\\x\\".into(), None),
        ("ShowSSEConfig\u{7}.pdb".into(), None),
        ("ShowSSEConfig\u{1b}[2J.pdb".into(), None),
        ("CON".into(), None),
        ("nul.pdb".into(), None),
        ("LPT1.pdb".into(), None),
        ("x.pdb:stream".into(), None),
        ("what?.pdb".into(), None),
        ("ShowSSEConfig.pdb.".into(), None),
        ("A".repeat(3000), None),
    ]
}

#[test]
fn names_from_the_target_never_leave_the_cache_or_reach_the_server_as_paths() {
    let outside = tempfile::tempdir().unwrap();
    let cache = outside.path().join("cache");
    let server = serve(store());
    let sympath = server_path(&server.url(), &cache);
    for (path, looked_up) in hostile_names() {
        let rsds = PdbInfo {
            guid: "A6259241-8D78-0749-4C4C-44205044422E".into(),
            age: 1,
            path: path.clone(),
        };
        let symbols = Symbols::new(options(&sympath, &cache));
        let result = symbols.load(&rsds);
        match looked_up {
            Some(name) => {
                let pdb = result.unwrap_or_else(|e| panic!("{path:?}: {e}"));
                assert_eq!(
                    pdb.path(),
                    cache.join("ShowSSEConfig.pdb").join(KEY).join(name)
                );
            }
            None => {
                let err = result.err().unwrap_or_else(|| panic!("{path:?} was used"));
                assert!(
                    matches!(err, SymbolError::UnsafeName { .. }),
                    "{path:?}: {err}"
                );
                assert!(!err.to_string().contains('\u{1b}'), "{err}");
                assert_eq!(symbols.http_requests(), 0, "{path:?}");
            }
        }
    }
    // Nothing outside the cache; inside it only WinDbg's layout; every URL a clean store path.
    assert_eq!(
        files_under(outside.path()),
        vec![format!("cache/ShowSSEConfig.pdb/{KEY}/ShowSSEConfig.pdb")]
    );
    for path in server.paths.lock().unwrap().iter() {
        assert_eq!(path, PDB_URL);
    }
    // A name that passes but holds URL-significant bytes is percent-encoded.
    let id = PdbId {
        name: "my driver#1%.pdb".into(),
        ..wanted()
    };
    let _ = Symbols::new(options(&sympath, &cache)).load_id(&id);
    assert!(server
        .paths
        .lock()
        .unwrap()
        .iter()
        .any(|p| p == &format!("/my%20driver%231%25.pdb/{KEY}/my%20driver%231%25.pdb")));
}

#[test]
fn a_target_whose_modules_carry_hostile_names() {
    let outside = tempfile::tempdir().unwrap();
    let cache = outside.path().join("cache");
    let server = serve(store());
    let mut attach = common::kdleak();
    attach.args([
        "attach",
        "sim:captures/scenarios/hostile-names.toml",
        "--format",
        "json",
        "--sympath",
        &server_path(&server.url(), &cache),
    ]);
    let out = common::finish(common::spawn(attach), Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["complete"], true, "{}", report["incomplete_reasons"]);
    let mut skipped: Vec<(String, String)> = report["symbols_skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["module"].as_str().unwrap().to_string(),
                s["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    skipped.sort();
    let modules: Vec<&str> = skipped.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        modules,
        [
            "ctl<1b>[31mred.sys",
            "device.sys",
            "dotdot.sys",
            "long.sys",
            "stream.sys"
        ]
    );
    for (module, reason) in &skipped {
        assert!(reason.contains("refused"), "{module}: {reason}");
        assert!(
            !reason.contains('\u{7}') && !reason.contains('\u{1b}'),
            "{reason:?}"
        );
    }
    // Names that are file names after WinDbg's rule get their symbols; the others module+offset.
    let sites: Vec<&str> = report["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["site"].as_str().unwrap())
        .collect();
    for symbolized in ["evil", "drive", "nul", "absolute"] {
        let site = format!("{symbolized}!LeakyAllocate+0x32");
        assert!(
            sites.iter().any(|s| s.starts_with(&site)),
            "{site} in {sites:?}"
        );
    }
    for raw in ["dotdot", "device", "ctl<1b>[31mred", "long", "stream"] {
        let site = format!("{raw}+0x1152");
        assert!(
            sites.iter().any(|s| s.starts_with(&site)),
            "{site} in {sites:?}"
        );
    }
    // The fixture directory had leaky.pdb: nothing was downloaded, nothing written anywhere.
    assert_eq!(server.requests(), 0);
    assert_eq!(files_under(outside.path()), Vec::<String>::new());
    // The text report says which module's symbols were skipped, with no raw control character.
    let mut text = common::kdleak();
    text.args([
        "attach",
        "sim:captures/scenarios/hostile-names.toml",
        "--sympath",
        &server_path(&server.url(), &cache),
    ]);
    let out = common::finish(common::spawn(text), Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains('\u{1b}') && !stdout.contains('\u{7}'));
    for module in [
        "dotdot.sys",
        "device.sys",
        "ctl<1b>[31mred.sys",
        "long.sys",
        "stream.sys",
    ] {
        assert!(
            stdout.contains(&format!("Symbols skipped for {module} ")),
            "{module} in {stdout}"
        );
    }
}
