//! Downloads from HTTP(S) symbol servers (blocking `ureq` with rustls), with a progress bar on a
//! terminal, connect/response timeouts, an overall transfer limit, a size limit, a bounded number
//! of redirects, and a bounded retry of server errors (5xx). Certificates are checked against the
//! system's store (`SSL_CERT_FILE`/`SSL_CERT_DIR` when set, as OpenSSL and curl read them; see
//! [`tls_roots`]). Counts requests so tests can prove that a cached PDB makes none.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::error::{Result, SymbolError};
use super::store::TempFile;

/// Redirects followed for one request (WinDbg's symsrv follows a few; a loop ends here).
pub const MAX_REDIRECTS: u32 = 5;
/// Attempts for a request the server answers with a 5xx status.
pub const SERVER_ERROR_ATTEMPTS: usize = 3;
/// Pause before the second attempt; doubled before each later one.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// What one GET gave.
#[derive(Debug)]
pub enum Fetched {
    /// 404/410: the server does not have it.
    Missing,
    /// The body, whole, in a temporary file beside the destination (not yet persisted).
    Body(TempFile),
    /// The server could not be used for this request: the reason names the URL's server and
    /// the status or error. The caller goes on with the next element of the symbol path.
    Failed(String),
}

pub struct Http {
    agent: ureq::Agent,
    progress: bool,
    requests: AtomicUsize,
}

/// The root certificates: the system store (rustls-native-certs: the platform's CA bundle, or
/// `SSL_CERT_FILE`/`SSL_CERT_DIR` when set). A system without any falls back to the Mozilla
/// roots built into ureq, so HTTPS still works in a bare container.
pub fn tls_roots() -> ureq::tls::RootCerts {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "reading the system's CA certificates");
    }
    if found.certs.is_empty() {
        tracing::debug!("no system CA certificates: using the built-in Mozilla roots");
        return ureq::tls::RootCerts::WebPki;
    }
    let certs: Vec<ureq::tls::Certificate<'static>> = found
        .certs
        .iter()
        .map(|der| ureq::tls::Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    ureq::tls::RootCerts::new_with_certs(&certs)
}

impl Http {
    /// `timeout` bounds connecting and waiting for the response head; `transfer` the whole
    /// request including the body (a server that trickles bytes hits it).
    pub fn new(timeout: Duration, transfer: Duration, progress: bool) -> Self {
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(tls_roots())
            .build();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(MAX_REDIRECTS)
            .tls_config(tls)
            .timeout_connect(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_global(Some(transfer))
            .user_agent(concat!(
                "kdleak/",
                env!("CARGO_PKG_VERSION"),
                " (symbol client)"
            ))
            .build();
        Self {
            agent: config.into(),
            progress,
            requests: AtomicUsize::new(0),
        }
    }

    /// Requests made so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// GETs `url` into a temporary file beside `dest`, at most `limit` bytes. A 5xx answer is
    /// retried ([`SERVER_ERROR_ATTEMPTS`] in all).
    pub fn fetch(&self, url: &str, dest: &Path, limit: u64) -> Result<Fetched> {
        let mut pause = RETRY_PAUSE;
        for attempt in 1..=SERVER_ERROR_ATTEMPTS {
            self.requests.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(url, attempt, "symbol server request");
            let mut response = match self.agent.get(url).call() {
                Ok(response) => response,
                Err(e) => return Ok(Fetched::Failed(describe(&e))),
            };
            let status = response.status();
            match status.as_u16() {
                200 => return self.receive(&mut response, dest, limit),
                404 | 410 => return Ok(Fetched::Missing),
                500..=599 if attempt < SERVER_ERROR_ATTEMPTS => {
                    tracing::debug!(url, %status, "server error; retrying");
                    std::thread::sleep(pause);
                    pause *= 2;
                }
                _ => {
                    let tries = if status.is_server_error() {
                        format!(" ({attempt} attempts)")
                    } else {
                        String::new()
                    };
                    return Ok(Fetched::Failed(format!("HTTP status {status}{tries}")));
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    fn receive(
        &self,
        response: &mut ureq::http::Response<ureq::Body>,
        dest: &Path,
        limit: u64,
    ) -> Result<Fetched> {
        let length = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(length) = length.filter(|&l| l > limit) {
            return Ok(Fetched::Failed(format!(
                "{length} bytes, more than the limit of {limit} (--symbol-max-download, in MiB)"
            )));
        }
        let bar = if self.progress && std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(length.unwrap_or(0));
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(
                dest.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut temp = TempFile::beside(dest)?;
        // Read with no limit of ureq's own (its default is 10 MB); ours is `limit`.
        let reader = response.body_mut().with_config().limit(u64::MAX).reader();
        let mut reader = bar.wrap_read(reader);
        let received = temp.fill_from(&mut reader, limit, "the download");
        bar.finish_and_clear();
        let total = match received {
            Ok(total) => total,
            Err(SymbolError::Io { source, .. }) => {
                let reason = match source
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<ureq::Error>())
                {
                    Some(e) => describe(e),
                    None => source.to_string(),
                };
                return Ok(Fetched::Failed(format!("download failed: {reason}")));
            }
            Err(other) => return Err(other),
        };
        if let Some(expected) = length.filter(|&l| l != total) {
            return Ok(Fetched::Failed(format!(
                "short body: {total} of {expected} bytes"
            )));
        }
        Ok(Fetched::Body(temp))
    }
}

/// A transport error in words that say what to check.
fn describe(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Timeout(ureq::Timeout::Global) => {
            "timed out: the whole transfer took longer than the transfer timeout".into()
        }
        ureq::Error::Timeout(what) => format!("timed out ({what})"),
        ureq::Error::TooManyRedirects => {
            format!("more than {MAX_REDIRECTS} redirects (a redirect loop?)")
        }
        other => other.to_string(),
    }
}
