//! Issue 16: symbol downloads through a real HTTP proxy (Debian's tinyproxy, on loopback, in
//! front of the loopback symbol server), `NO_PROXY`, a dead proxy, and WinDbg's `.symfix`
//! default (Microsoft's server behind the default cache) when no symbol path is given — seen in
//! the proxy's log, so no test needs the internet.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;
use common::*;
mod symbol_server;

const FIXTURE: &str = "win10-19041";
const PDBS: [&str; 2] = ["myfault.pdb", "leaky.pdb"];

fn fixture_pdb(name: &str) -> PathBuf {
    root().join("captures/fixtures").join(FIXTURE).join(name)
}

fn id(name: &str) -> kdleak::symbols::PdbId {
    kdleak::symbols::Pdb::open(&fixture_pdb(name))
        .unwrap()
        .id()
        .clone()
}

/// A symbol store holding the two fixture PDBs, and a manifest naming them.
fn store_and_manifest(dir: &Path) -> (PathBuf, PathBuf) {
    let served = dir.join("served");
    let mut lines = String::new();
    for name in PDBS {
        let id = id(name);
        let key_dir = served.join(name).join(id.store_key());
        std::fs::create_dir_all(&key_dir).unwrap();
        std::fs::copy(fixture_pdb(name), key_dir.join(name)).unwrap();
        lines.push_str(&kdleak::symbols::manifest::line(&id));
        lines.push('\n');
    }
    let manifest = dir.join("manifest.txt");
    std::fs::write(&manifest, lines).unwrap();
    (served, manifest)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// tinyproxy in the foreground on a loopback port, logging every connection to `log`.
struct Tinyproxy {
    port: u16,
    log: PathBuf,
    _process: Running,
}

impl Tinyproxy {
    fn start(dir: &Path) -> Tinyproxy {
        let port = free_port();
        let log = dir.join("tinyproxy.log");
        let conf = dir.join("tinyproxy.conf");
        // No ConnectPort line: CONNECT to any port (the loopback server's is not 443).
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Info\n\
                 MaxClients 20\nAllow 127.0.0.1\nDisableViaHeader Yes\n",
                log.display()
            ),
        )
        .unwrap();
        if let Err(e) = Command::new("tinyproxy").arg("-v").output() {
            panic!(
                "cannot run tinyproxy ({e}): install the Debian package `tinyproxy` \
                 (scripts/test-system-packages.txt; scripts/test names what is missing)"
            );
        }
        let mut command = Command::new("tinyproxy");
        command.arg("-d").arg("-c").arg(&conf);
        let process = spawn(command);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tinyproxy did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Tinyproxy {
            port,
            log,
            _process: process,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The requests tinyproxy logged (`CONNECT host:port HTTP/1.1`, `GET http://…`).
    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once("): ").filter(|_| l.contains("Request (")))
            .map(|(_, request)| request.to_string())
            .collect()
    }
}

/// `kdleak symbols fetch MANIFEST ARGS…` with a fresh HOME and only `vars` of the proxy and
/// symbol-path variables.
fn fetch(manifest: &Path, home: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = kdleak();
    command
        .env_remove("_NT_SYMBOL_PATH")
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env_remove("KDLEAK_SYMBOL_CACHE");
    for name in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ] {
        command.env_remove(name);
    }
    command
        .args(["symbols", "fetch"])
        .arg(manifest)
        .args(args)
        .envs(vars.iter().copied());
    finish(spawn(command), Duration::from_secs(120))
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn in_store(store: &Path, name: &str) -> bool {
    let id = id(name);
    store.join(name).join(id.store_key()).join(name).is_file()
}

#[test]
fn symbols_come_through_the_proxy_unless_no_proxy_says_otherwise_and_a_dead_proxy_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (served, manifest) = store_and_manifest(dir.path());
    let server = symbol_server::serve(served);
    let proxy = Tinyproxy::start(dir.path());
    let sympath = |store: &Path| format!("srv*{}*{}", store.display(), server.url());

    // 1. HTTP_PROXY: both PDBs fetched, each request a CONNECT through tinyproxy.
    let store = dir.path().join("store-proxied");
    let out = fetch(
        &manifest,
        home.path(),
        &["--sympath", &sympath(&store)],
        &[("HTTP_PROXY", &proxy.url())],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(PDBS.iter().all(|n| in_store(&store, n)), "{stdout}");
    assert_eq!(server.requests(), 2, "{:?}", server.paths.lock().unwrap());
    let through = proxy.requests();
    let to_server = format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.port);
    assert_eq!(
        through.iter().filter(|r| r.starts_with(&to_server)).count(),
        2,
        "the proxy's log: {through:?}"
    );

    // 2. Lower-case http_proxy with NO_PROXY naming the server's host: straight to the server,
    //    the proxy's log unchanged.
    let store = dir.path().join("store-direct");
    let out = fetch(
        &manifest,
        home.path(),
        &["--sympath", &sympath(&store)],
        &[
            ("http_proxy", &proxy.url()),
            ("no_proxy", "localhost,127.0.0.1"),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(PDBS.iter().all(|n| in_store(&store, n)), "{stdout}");
    assert_eq!(server.requests(), 4);
    assert_eq!(proxy.requests(), through, "NO_PROXY bypasses the proxy");

    // 3. A dead proxy: nothing fetched, and the error names the variable and the proxy.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let store = dir.path().join("store-dead");
    let out = fetch(
        &manifest,
        home.path(),
        &["--sympath", &sympath(&store)],
        &[("HTTP_PROXY", &dead)],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(4), "{stdout}\n{stderr}");
    assert!(!PDBS.iter().any(|n| in_store(&store, n)));
    assert_eq!(server.requests(), 4, "nothing reached the server");
    assert!(
        stdout.contains(&format!(
            "through the proxy {dead} from HTTP_PROXY: check HTTP_PROXY"
        )),
        "{stdout}"
    );
}

#[test]
fn https_goes_through_the_https_proxy_with_tls_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (served, manifest) = store_and_manifest(dir.path());
    let pki = symbol_server::test_pki(&["127.0.0.1"]);
    let ca = dir.path().join("lab-ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let server = symbol_server::serve_tls(pki.server.clone(), move |p| {
        symbol_server::files(&served, p)
    });
    let proxy = Tinyproxy::start(dir.path());
    let store = dir.path().join("store");
    let sympath = format!("srv*{}*https://127.0.0.1:{}", store.display(), server.port);
    // HTTPS_PROXY is the one for https:// (HTTP_PROXY, dead here, is not consulted); the
    // certificate is checked against the lab CA, so the proxy only relayed the TLS stream.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let out = fetch(
        &manifest,
        home.path(),
        &["--sympath", &sympath],
        &[
            ("HTTPS_PROXY", proxy.url().as_str()),
            ("HTTP_PROXY", &dead),
            ("SSL_CERT_FILE", ca.to_str().unwrap()),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(PDBS.iter().all(|n| in_store(&store, n)), "{stdout}");
    assert_eq!(server.requests(), 2);
    let to_server = format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.port);
    let through = proxy.requests();
    assert_eq!(
        through.iter().filter(|r| r.starts_with(&to_server)).count(),
        2,
        "the proxy's log: {through:?}"
    );
}

#[test]
fn with_no_symbol_path_the_symfix_default_is_announced_once_and_used_unless_offline() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (_, manifest) = store_and_manifest(dir.path());
    let proxy = Tinyproxy::start(dir.path());
    let cache = home.path().join(".cache/kdleak/symbols");
    let announcement = format!(
        "kdleak: no symbol path given (--sympath, _NT_SYMBOL_PATH): using srv*{}*https://msdl.microsoft.com/download/symbols, as WinDbg's .symfix",
        cache.display()
    );

    // --offline: the default path's cache is searched, the server never asked.
    let out = fetch(
        &manifest,
        home.path(),
        &["--offline"],
        &[("https_proxy", &proxy.url())],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(4), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("https://msdl.microsoft.com/download/symbols (skipped: offline)"),
        "{stdout}"
    );
    assert!(!stderr.contains("WinDbg's .symfix"), "{stderr}");
    assert_eq!(proxy.requests(), Vec::<String>::new());

    // Online: Microsoft's server, through the proxy (which cannot reach it here; with the
    // internet it would answer 404 for these made-up PDBs). One line says so, for two PDBs.
    let out = fetch(
        &manifest,
        home.path(),
        &[],
        &[("https_proxy", &proxy.url())],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(4), "{stdout}\n{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| *l == announcement).count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .all(|l| l == announcement || !l.contains(".symfix")),
        "{stderr}"
    );
    let through = proxy.requests();
    assert!(
        through
            .iter()
            .any(|r| r.starts_with("CONNECT msdl.microsoft.com:443 ")),
        "the proxy's log: {through:?}"
    );

    // An empty _NT_SYMBOL_PATH is a choice: no default, no request.
    let before = proxy.requests().len();
    let out = fetch(
        &manifest,
        home.path(),
        &[],
        &[("https_proxy", &proxy.url()), ("_NT_SYMBOL_PATH", "")],
    );
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("no symbol path to fetch into"), "{stderr}");
    assert_eq!(proxy.requests().len(), before);
}
