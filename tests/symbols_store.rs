//! Finding PDBs through WinDbg symbol paths, with the real symbol-store tree
//! `captures/pdb/symstore` (ShowSSEConfig: PDB-stream age 2, DBI/RSDS age 1): a loopback HTTP
//! symbol server (plain `.pdb` and CAB `.pd_`), the cache in WinDbg's layout, local stores,
//! `file.ptr`, plain directories, and GUID/age mismatches.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kdleak::kernel::PdbInfo;
use kdleak::symbols::{PdbId, SymbolError, SymbolOptions, SymbolPath, Symbols};

mod symbol_server;
use symbol_server::serve;

const KEY: &str = "A62592418D7807494C4C44205044422E1";

fn store() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("captures/pdb/symstore")
}

fn key_dir(root: &Path) -> PathBuf {
    root.join("ShowSSEConfig.pdb").join(KEY)
}

/// The RSDS record of the real ShowSSEConfig.exe, found in the file.
fn rsds() -> PdbInfo {
    let exe =
        std::fs::read(store().join("ShowSSEConfig.exe/63E6C7F78000/ShowSSEConfig.exe")).unwrap();
    let at = exe.windows(4).position(|w| w == b"RSDS").unwrap();
    PdbInfo::parse_rsds(&exe[at..at + 0x100]).unwrap()
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

/// A copy of the store's key directory holding only `files`.
fn partial_store(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let dest = key_dir(dir.path());
    std::fs::create_dir_all(&dest).unwrap();
    for f in files {
        std::fs::copy(key_dir(&store()).join(f), dest.join(f)).unwrap();
    }
    dir
}

fn check_showsseconfig(pdb: &kdleak::symbols::Pdb) {
    assert_eq!(pdb.id().guid, "A6259241-8D78-0749-4C4C-44205044422E");
    assert_eq!(pdb.id().age, 1, "DBI age, not the PDB-stream age 2");
    assert_eq!(pdb.symbol_rva("wmain").unwrap(), 0x1000);
    assert_eq!(pdb.symbol_rva("wmainCRTStartup").unwrap(), 0x1480);
    assert_eq!(pdb.symbol_rva("__security_cookie").unwrap(), 0x4010);
}

#[test]
fn the_rsds_key_is_the_store_key() {
    let id = PdbId::from_rsds(&rsds());
    assert_eq!(id.name, "ShowSSEConfig.pdb");
    assert_eq!(id.store_key(), KEY);
}

#[test]
fn http_server_plain_pdb_lands_in_the_cache_and_is_not_fetched_again() {
    let served = partial_store(&["ShowSSEConfig.pdb"]);
    let server = serve(served.path().to_path_buf());
    let cache = tempfile::tempdir().unwrap();
    let sympath = format!(
        "srv*{}*http://127.0.0.1:{}/",
        cache.path().display(),
        server.port
    );
    let symbols = Symbols::new(options(&sympath, cache.path()));
    let pdb = symbols.load(&rsds()).unwrap();
    check_showsseconfig(&pdb);
    assert_eq!(symbols.http_requests(), 1);
    assert_eq!(server.requests(), 1);
    assert_eq!(
        server.paths.lock().unwrap()[0],
        format!("/ShowSSEConfig.pdb/{KEY}/ShowSSEConfig.pdb")
    );
    // WinDbg's layout, byte-identical to what was served.
    let cached = key_dir(cache.path()).join("ShowSSEConfig.pdb");
    assert_eq!(pdb.path(), cached);
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        std::fs::read(key_dir(served.path()).join("ShowSSEConfig.pdb")).unwrap()
    );
    // Same process: the parsed PDB is reused.
    let again = symbols.load(&rsds()).unwrap();
    assert!(Arc::ptr_eq(&pdb, &again));
    // A new process (new loader) finds it in the cache: no HTTP request.
    let fresh = Symbols::new(options(&sympath, cache.path()));
    check_showsseconfig(&fresh.load(&rsds()).unwrap());
    assert_eq!(fresh.http_requests(), 0);
    assert_eq!(server.requests(), 1);
}

#[test]
fn http_server_cab_is_expanded_into_the_cache() {
    let served = partial_store(&["ShowSSEConfig.pd_"]);
    let server = serve(served.path().to_path_buf());
    let cache = tempfile::tempdir().unwrap();
    // srv*URL with a cache* element: the cache is the downstream store.
    let sympath = format!(
        "cache*{};srv*http://127.0.0.1:{}",
        cache.path().display(),
        server.port
    );
    let symbols = Symbols::new(options(&sympath, Path::new("/nonexistent-default")));
    let pdb = symbols.load(&rsds()).unwrap();
    check_showsseconfig(&pdb);
    assert_eq!(
        *server.paths.lock().unwrap(),
        vec![
            format!("/ShowSSEConfig.pdb/{KEY}/ShowSSEConfig.pdb"),
            format!("/ShowSSEConfig.pdb/{KEY}/ShowSSEConfig.pd_"),
        ]
    );
    let dir = key_dir(cache.path());
    assert!(dir.join("ShowSSEConfig.pdb").is_file());
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("ShowSSEConfig.pdb")],
        "only the expanded PDB stays"
    );
    let fresh = Symbols::new(options(&sympath, Path::new("/nonexistent-default")));
    fresh.load(&rsds()).unwrap();
    assert_eq!(fresh.http_requests(), 0);
    assert_eq!(server.requests(), 2);
}

#[test]
fn offline_makes_no_request() {
    let server = serve(store());
    let cache = tempfile::tempdir().unwrap();
    let sympath = format!(
        "srv*{}*http://127.0.0.1:{}",
        cache.path().display(),
        server.port
    );
    let mut opts = options(&sympath, cache.path());
    opts.offline = true;
    let symbols = Symbols::new(opts);
    let err = symbols.load(&rsds()).unwrap_err();
    assert!(matches!(err, SymbolError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("offline"), "{err}");
    assert_eq!(err.exit_code(), 4);
    assert_eq!(server.requests(), 0);
}

#[test]
fn missing_everywhere_names_what_was_tried() {
    let empty = tempfile::tempdir().unwrap();
    let server = serve(empty.path().to_path_buf());
    let cache = tempfile::tempdir().unwrap();
    let sympath = format!(
        "srv*{}*http://127.0.0.1:{}",
        cache.path().display(),
        server.port
    );
    let err = Symbols::new(options(&sympath, cache.path()))
        .load(&rsds())
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("ShowSSEConfig.pdb") && msg.contains(KEY) && msg.contains("404"),
        "{msg}"
    );
    assert_eq!(server.requests(), 3, "pdb, pd_, file.ptr");
}

#[test]
fn local_store_plain_pdb() {
    let cache = tempfile::tempdir().unwrap();
    // srv*STORE: searched in place.
    let symbols = Symbols::new(options(&format!("srv*{}", store().display()), cache.path()));
    let pdb = symbols.load(&rsds()).unwrap();
    check_showsseconfig(&pdb);
    assert_eq!(pdb.path(), key_dir(&store()).join("ShowSSEConfig.pdb"));
    // srv*CACHE*STORE: copied into the downstream store.
    let sympath = format!("srv*{}*{}", cache.path().display(), store().display());
    let pdb = Symbols::new(options(&sympath, cache.path()))
        .load(&rsds())
        .unwrap();
    assert_eq!(pdb.path(), key_dir(cache.path()).join("ShowSSEConfig.pdb"));
}

#[test]
fn local_store_cab_only() {
    let upstream = partial_store(&["ShowSSEConfig.pd_"]);
    let cache = tempfile::tempdir().unwrap();
    let symbols = Symbols::new(options(
        &format!("srv*{}", upstream.path().display()),
        cache.path(),
    ));
    let pdb = symbols.load(&rsds()).unwrap();
    check_showsseconfig(&pdb);
    assert_eq!(pdb.path(), key_dir(cache.path()).join("ShowSSEConfig.pdb"));
}

#[test]
fn local_store_file_ptr_and_two_tier_layout() {
    let upstream = tempfile::tempdir().unwrap();
    let dir = key_dir(upstream.path());
    std::fs::create_dir_all(&dir).unwrap();
    let target = key_dir(&store()).join("ShowSSEConfig.pdb");
    std::fs::write(
        dir.join("file.ptr"),
        format!("PATH:{}\r\n", target.display()),
    )
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let pdb = Symbols::new(options(
        &format!("srv*{}", upstream.path().display()),
        cache.path(),
    ))
    .load(&rsds())
    .unwrap();
    assert_eq!(pdb.path(), target);

    let two_tier = tempfile::tempdir().unwrap();
    std::fs::write(two_tier.path().join("index2.txt"), "").unwrap();
    let dir = key_dir(&two_tier.path().join("Sh"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&target, dir.join("ShowSSEConfig.pdb")).unwrap();
    let pdb = Symbols::new(options(
        &format!("srv*{}", two_tier.path().display()),
        cache.path(),
    ))
    .load(&rsds())
    .unwrap();
    assert_eq!(pdb.path(), dir.join("ShowSSEConfig.pdb"));
}

#[test]
fn plain_directory_and_mismatch_refused_unless_forced() {
    let cache = tempfile::tempdir().unwrap();
    let plain = tempfile::tempdir().unwrap();
    // A different PDB under the wanted name.
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("captures/pdb/dump_syms_regtest64/dump_syms_regtest64.pdb"),
        plain.path().join("ShowSSEConfig.pdb"),
    )
    .unwrap();
    let sympath = plain.path().display().to_string();
    let err = Symbols::new(options(&sympath, cache.path()))
        .load(&rsds())
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SymbolError::Mismatch { .. }), "{msg}");
    assert!(
        msg.contains("A6259241-8D78-0749-4C4C-44205044422E} age 1")
            && msg.contains("72E103A8-5CB2-4907-8B76-B2E7C06257B1} age 3"),
        "{msg}"
    );
    assert_eq!(err.exit_code(), 4);
    let mut opts = options(&sympath, cache.path());
    opts.force = true;
    let pdb = Symbols::new(opts).load(&rsds()).unwrap();
    assert_eq!(pdb.id().age, 3);
    assert_eq!(pdb.symbol_rva("main").unwrap(), 0x1010);
    // A matching file later in the path wins over the mismatch.
    let sympath = format!("{};{}", plain.path().display(), key_dir(&store()).display());
    let pdb = Symbols::new(options(&sympath, cache.path()))
        .load(&rsds())
        .unwrap();
    assert_eq!(pdb.id().age, 1);
}

#[test]
fn environment_variables_alt_first() {
    let cache = tempfile::tempdir().unwrap();
    // The only test in this binary that touches the environment.
    std::env::set_var("_NT_ALT_SYMBOL_PATH", "/alt");
    std::env::set_var("_NT_SYMBOL_PATH", format!("srv*{}", store().display()));
    let opts = SymbolOptions::new(None).unwrap();
    std::env::remove_var("_NT_ALT_SYMBOL_PATH");
    std::env::remove_var("_NT_SYMBOL_PATH");
    assert_eq!(opts.path.elements.len(), 2);
    assert_eq!(
        opts.path.elements[0],
        kdleak::symbols::Element::Dir(PathBuf::from("/alt"))
    );
    let explicit = SymbolOptions::new(Some("srv*/x*https://example.invalid/s")).unwrap();
    assert_eq!(explicit.path.elements.len(), 1);
    let _ = cache;
}

#[test]
fn the_no_network_probe_asks_no_server_and_finds_what_is_cached() {
    let served = partial_store(&["ShowSSEConfig.pdb"]);
    let server = serve(served.path().to_path_buf());
    let cache = tempfile::tempdir().unwrap();
    let sympath = format!(
        "srv*{}*http://127.0.0.1:{}/",
        cache.path().display(),
        server.port
    );
    let symbols = Symbols::new(options(&sympath, cache.path()));
    // Only the server has it: the probe says so without asking it.
    assert!(symbols.load_without_network(&rsds()).unwrap().is_none());
    assert_eq!(server.requests(), 0);
    let downloaded = symbols.load(&rsds()).unwrap();
    assert_eq!(server.requests(), 1);
    // The same loader has it parsed; a new one finds the cached file; neither asks the server.
    let again = symbols.load_without_network(&rsds()).unwrap().unwrap();
    assert!(Arc::ptr_eq(&downloaded, &again));
    let fresh = Symbols::new(options(&sympath, cache.path()));
    check_showsseconfig(&fresh.load_without_network(&rsds()).unwrap().unwrap());
    assert_eq!(server.requests(), 1);
    // Without a server on the path, the probe is the search itself: a missing PDB is an error.
    let local = Symbols::new(options(
        &tempfile::tempdir().unwrap().path().display().to_string(),
        cache.path(),
    ));
    assert!(matches!(
        local.load_without_network(&rsds()),
        Err(SymbolError::NotFound { .. })
    ));
}
