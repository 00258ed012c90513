//! A loopback symbol server for tests: HTTP/1.1, one request per connection, each connection on
//! its own thread; what it answers is up to the test (files, statuses, redirects, a body that
//! trickles); every request path is logged. Optionally over TLS (rustls) with a certificate the
//! test made (rcgen), for the HTTPS tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One answer.
pub enum Reply {
    File(Vec<u8>),
    Status(u16),
    Redirect(String),
    /// 200 with a Content-Length of the whole body, then one byte every `every`.
    Trickle {
        body: Vec<u8>,
        every: Duration,
    },
    /// Another reply, after a pause.
    Delayed(Box<Reply>, Duration),
}

pub struct Server {
    pub port: u16,
    pub paths: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn requests(&self) -> usize {
        self.paths.lock().unwrap().len()
    }

    /// How many requests asked for `path`.
    pub fn count(&self, path: &str) -> usize {
        self.paths
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.as_str() == path)
            .count()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

type Handler = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// Files under `root` by request path; 404 for anything else.
pub fn serve(root: PathBuf) -> Server {
    serve_with(move |path| files(&root, path))
}

/// The reply `serve` gives for `path`.
pub fn files(root: &std::path::Path, path: &str) -> Reply {
    let file = root.join(path.trim_start_matches('/'));
    match std::fs::read(&file) {
        Ok(body) if file.is_file() => Reply::File(body),
        _ => Reply::Status(404),
    }
}

pub fn serve_with(handler: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Server {
    start(Arc::new(handler), None)
}

/// Over TLS with `config` (the certificate chain the test made).
pub fn serve_tls(
    config: Arc<rustls::ServerConfig>,
    handler: impl Fn(&str) -> Reply + Send + Sync + 'static,
) -> Server {
    start(Arc::new(handler), Some(config))
}

fn start(handler: Handler, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let paths = Arc::new(Mutex::new(Vec::new()));
    let log = paths.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (handler, log, tls) = (handler.clone(), log.clone(), tls.clone());
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                match tls {
                    None => answer(stream, &handler, &log),
                    Some(config) => {
                        let Ok(connection) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        answer(rustls::StreamOwned::new(connection, stream), &handler, &log)
                    }
                }
            });
        }
    });
    Server { port, paths }
}

fn answer<S: Read + Write>(stream: S, handler: &Handler, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return; // e.g. a TLS handshake the client refused
    }
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    log.lock().unwrap().push(path.clone());
    let mut reply = handler(&path);
    while let Reply::Delayed(inner, pause) = reply {
        std::thread::sleep(pause);
        reply = *inner;
    }
    let stream = reader.get_mut();
    let _ = match reply {
        Reply::File(body) => {
            let mut r = head(200, "OK", body.len(), "");
            r.extend_from_slice(&body);
            stream.write_all(&r)
        }
        Reply::Status(code) => stream.write_all(&head(code, reason(code), 0, "")),
        Reply::Redirect(to) => {
            stream.write_all(&head(302, "Found", 0, &format!("Location: {to}\r\n")))
        }
        Reply::Trickle { body, every } => {
            let mut result = stream.write_all(&head(200, "OK", body.len(), ""));
            for byte in body {
                if result.is_err() {
                    break;
                }
                std::thread::sleep(every);
                result = stream.write_all(&[byte]).and_then(|()| stream.flush());
            }
            result
        }
        Reply::Delayed(..) => unreachable!("unwrapped above"),
    };
    let _ = stream.flush();
}

fn reason(code: u16) -> &'static str {
    match code {
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn head(code: u16, reason: &str, len: usize, extra: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\n{extra}Connection: close\r\n\r\n"
    )
    .into_bytes()
}

/// A test CA and a server certificate it signed for `names` (DNS names or IP addresses).
pub struct TestPki {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

pub fn test_pki(names: &[&str]) -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("kdleak test CA for {}", names.join(" ")),
    );
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    TestPki {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
    }
}
