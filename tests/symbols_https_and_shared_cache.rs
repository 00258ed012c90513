//! HTTPS symbol servers (issue 17): certificates checked against the system store, or a lab CA
//! given with `SSL_CERT_FILE`, a certificate for another host refused; and one cache shared by
//! eight `kdleak` processes started together on a cold cache: all succeed, each file is fetched
//! once, and the cache holds exactly WinDbg's layout. Both through the `kdleak types` command.

mod common;
mod symbol_server;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use symbol_server::{files, serve_tls, serve_with, test_pki, Reply};

const KEY: &str = "A62592418D7807494C4C44205044422E1";
const GUID: &str = "A6259241-8D78-0749-4C4C-44205044422E";

fn real_pdb() -> PathBuf {
    common::root()
        .join("captures/pdb/symstore/ShowSSEConfig.pdb")
        .join(KEY)
        .join("ShowSSEConfig.pdb")
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

/// `kdleak types MODULE!PATTERN --guid G --age A --sympath SYMPATH`, with `ca` as SSL_CERT_FILE.
fn types(module_pattern: &str, guid: &str, age: u32, sympath: &str, ca: Option<&Path>) -> Output {
    let mut command = common::kdleak();
    command
        .args([
            "types",
            module_pattern,
            "--guid",
            guid,
            "--age",
            &age.to_string(),
        ])
        .args(["--sympath", sympath, "--symbol-timeout", "10"])
        .env_remove("SSL_CERT_DIR")
        .env_remove("SSL_CERT_FILE");
    if let Some(ca) = ca {
        command.env("SSL_CERT_FILE", ca);
    }
    common::finish(common::spawn(command), Duration::from_secs(120))
}

fn served(path: &str) -> Reply {
    match path {
        p if p == format!("/ShowSSEConfig.pdb/{KEY}/ShowSSEConfig.pdb") => {
            Reply::File(std::fs::read(real_pdb()).unwrap())
        }
        _ => Reply::Status(404),
    }
}

#[test]
fn https_with_a_lab_ca_in_ssl_cert_file() {
    let pki = test_pki(&["127.0.0.1", "localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("lab-ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let server = serve_tls(pki.server.clone(), served);
    for host in ["127.0.0.1", "localhost"] {
        let cache = dir.path().join(format!("cache-{host}"));
        let sympath = format!("srv*{}*https://{host}:{}", cache.display(), server.port);
        let out = types("ShowSSEConfig!*", GUID, 1, &sympath, Some(&ca));
        assert!(
            out.status.success(),
            "{host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("_TypeDescriptor"));
        assert_eq!(
            files_under(&cache),
            vec![format!("ShowSSEConfig.pdb/{KEY}/ShowSSEConfig.pdb")]
        );
    }
}

#[test]
fn https_refuses_a_certificate_for_another_host_or_from_an_unknown_ca() {
    let dir = tempfile::tempdir().unwrap();
    // Signed by the trusted lab CA, but for another name.
    let wrong_host = test_pki(&["wrong.example"]);
    let ca = dir.path().join("lab-ca.pem");
    std::fs::write(&ca, &wrong_host.ca_pem).unwrap();
    // Right name, but signed by a CA nobody trusts.
    let unknown = test_pki(&["127.0.0.1"]);
    for (what, config, expect) in [
        (
            "wrong host",
            wrong_host.server.clone(),
            "not valid for name",
        ),
        ("unknown CA", unknown.server.clone(), "UnknownIssuer"),
    ] {
        let server = serve_tls(config, served);
        let cache = dir.path().join(format!("cache-{}", what.replace(' ', "-")));
        let sympath = format!("srv*{}*https://127.0.0.1:{}", cache.display(), server.port);
        let out = types("ShowSSEConfig!*", GUID, 1, &sympath, Some(&ca));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{what}: {stderr}");
        assert!(stderr.contains(expect), "{what}: {stderr}");
        assert!(
            stderr.contains(&format!("127.0.0.1:{}", server.port)),
            "{what}: {stderr}"
        );
        // The handshake failed before any request: nothing was served or cached.
        assert_eq!(server.requests(), 0, "{what}");
        assert_eq!(files_under(&cache), Vec::<String>::new(), "{what}");
    }
}

#[test]
fn eight_processes_share_one_cold_cache() {
    let nt = common::root().join("captures/fixtures/win10-19041/ntkrnlmp.pdb");
    let nt_id = kdleak::symbols::read_pdb_id(&nt).unwrap();
    let nt_url = format!("/ntkrnlmp.pdb/{}/ntkrnlmp.pdb", nt_id.store_key());
    // The upstream: ntkrnlmp.pdb plain, ShowSSEConfig only as a CAB (expanded by each client).
    let upstream = tempfile::tempdir().unwrap();
    let nt_dir = upstream.path().join("ntkrnlmp.pdb").join(nt_id.store_key());
    std::fs::create_dir_all(&nt_dir).unwrap();
    std::fs::copy(&nt, nt_dir.join("ntkrnlmp.pdb")).unwrap();
    let cab_dir = upstream.path().join("ShowSSEConfig.pdb").join(KEY);
    std::fs::create_dir_all(&cab_dir).unwrap();
    std::fs::copy(
        common::root()
            .join("captures/pdb/symstore/ShowSSEConfig.pdb")
            .join(KEY)
            .join("ShowSSEConfig.pd_"),
        cab_dir.join("ShowSSEConfig.pd_"),
    )
    .unwrap();
    let root = upstream.path().to_path_buf();
    // Slow answers, so the processes overlap.
    let server = serve_with(move |path| {
        Reply::Delayed(Box::new(files(&root, path)), Duration::from_millis(300))
    });
    let cache = tempfile::tempdir().unwrap();
    let sympath = format!("srv*{}*{}", cache.path().display(), server.url());
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (sympath, guid, age) = (sympath.clone(), nt_id.guid.clone(), nt_id.age);
            std::thread::spawn(move || {
                let first = types("nt!_VF_AVL_TREE", &guid, age, &sympath, None);
                let second = types("ShowSSEConfig!*", GUID, 1, &sympath, None);
                (first, second)
            })
        })
        .collect();
    for worker in workers {
        let (first, second) = worker.join().unwrap();
        for out in [first, second] {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let cab_pdb_url = format!("/ShowSSEConfig.pdb/{KEY}/ShowSSEConfig.pdb");
    let cab_url = format!("/ShowSSEConfig.pdb/{KEY}/ShowSSEConfig.pd_");
    assert_eq!(
        server.count(&nt_url),
        1,
        "{:?}",
        server.paths.lock().unwrap()
    );
    assert_eq!(
        server.count(&cab_pdb_url),
        1,
        "{:?}",
        server.paths.lock().unwrap()
    );
    assert_eq!(
        server.count(&cab_url),
        1,
        "{:?}",
        server.paths.lock().unwrap()
    );
    assert_eq!(server.requests(), 3);
    assert_eq!(
        files_under(cache.path()),
        vec![
            format!("ShowSSEConfig.pdb/{KEY}/ShowSSEConfig.pdb"),
            format!("ntkrnlmp.pdb/{}/ntkrnlmp.pdb", nt_id.store_key()),
        ]
    );
}

#[test]
fn a_killed_download_leaves_no_pdb_where_the_cache_expects_one() {
    let body = std::fs::read(real_pdb()).unwrap();
    let key_url = format!("/ShowSSEConfig.pdb/{KEY}/ShowSSEConfig.pdb");
    let server = serve_with(move |path| {
        if path == key_url {
            Reply::Trickle {
                body: body.clone(),
                every: Duration::from_millis(5),
            }
        } else {
            Reply::Status(404)
        }
    });
    let cache = tempfile::tempdir().unwrap();
    let sympath = format!("srv*{}*{}", cache.path().display(), server.url());
    let key_dir = cache.path().join("ShowSSEConfig.pdb").join(KEY);
    let mut command = common::kdleak();
    command.args([
        "types",
        "ShowSSEConfig!*",
        "--guid",
        GUID,
        "--age",
        "1",
        "--sympath",
        &sympath,
    ]);
    let running = common::spawn(command);
    // Mid-download: the temporary file exists and grows.
    common::wait_for("a partial download", Duration::from_secs(60), || {
        files_under(&key_dir)
            .iter()
            .any(|f| f.starts_with('.') && f.ends_with(".partial"))
    });
    drop(running); // SIGKILL
    assert!(!key_dir.join("ShowSSEConfig.pdb").exists());
    assert!(files_under(&key_dir).iter().all(|f| f.starts_with('.')));
    // The next run fetches it whole (from a server that answers at once).
    let server = serve_with(served);
    let sympath = format!("srv*{}*{}", cache.path().display(), server.url());
    let out = types("ShowSSEConfig!*", GUID, 1, &sympath, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(key_dir.join("ShowSSEConfig.pdb")).unwrap(),
        std::fs::read(real_pdb()).unwrap()
    );
}

#[test]
fn a_full_disk_leaves_no_file_behind() {
    use std::os::unix::process::CommandExt;
    let server = serve_with(served);
    let cache = tempfile::tempdir().unwrap();
    let sympath = format!("srv*{}*{}", cache.path().display(), server.url());
    let mut command = common::kdleak();
    command.args([
        "types",
        "ShowSSEConfig!*",
        "--guid",
        GUID,
        "--age",
        "1",
        "--sympath",
        &sympath,
    ]);
    // Files may grow to 64 KiB only (the PDB is 372 KiB): writes past that fail with EFBIG, as
    // on a full disk (ENOSPC) — the same error path.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 64 * 1024,
                rlim_max: 64 * 1024,
            };
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = common::finish(common::spawn(command), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("File too large") || stderr.contains("too large"),
        "{stderr}"
    );
    assert_eq!(files_under(cache.path()), Vec::<String>::new());
}
