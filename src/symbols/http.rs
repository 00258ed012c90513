//! Downloads from HTTP(S) symbol servers (blocking `ureq` with rustls), with a progress bar on a
//! terminal, connect/response timeouts, an overall transfer limit, a size limit, a bounded number
//! of redirects, and a bounded retry of server errors (5xx). Certificates are checked against the
//! system's store (`SSL_CERT_FILE`/`SSL_CERT_DIR` when set, as OpenSSL and curl read them; see
//! [`tls_roots`]). Counts requests so tests can prove that a cached PDB makes none.
//!
//! Proxies come from the environment as curl reads it ([`Proxies::from_env`]): `HTTPS_PROXY`
//! (`https_proxy`) for `https://` URLs, `HTTP_PROXY` (`http_proxy`) for `http://` URLs,
//! `ALL_PROXY` (`all_proxy`) for either, and `NO_PROXY` (`no_proxy`) for the hosts reached
//! directly. A failure through a proxy says which variable named it.

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
    /// Without a proxy (ureq's own reading of the environment is switched off: ours is
    /// [`Proxies`]).
    direct: ureq::Agent,
    /// Through the proxy for `https://` URLs and for `http://` URLs.
    https: Option<Route>,
    http: Option<Route>,
    no_proxy: Vec<String>,
    progress: bool,
    requests: AtomicUsize,
}

/// Requests through one proxy.
struct Route {
    proxy: EnvProxy,
    /// `Err`: the variable does not hold a proxy URL ureq accepts.
    agent: std::result::Result<ureq::Agent, String>,
}

/// A proxy named by an environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvProxy {
    pub variable: &'static str,
    pub url: String,
}

/// The proxy settings of the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    pub https: Option<EnvProxy>,
    pub http: Option<EnvProxy>,
    /// `NO_PROXY` entries, lower-case: `*`, a host name or address (matching it and, for a
    /// name, its subdomains; a leading `.` or `*.` is ignored), with or without `:port`.
    pub no_proxy: Vec<String>,
}

impl Proxies {
    /// Reads `HTTPS_PROXY`/`https_proxy`, `HTTP_PROXY`/`http_proxy`, `ALL_PROXY`/`all_proxy`
    /// and `NO_PROXY`/`no_proxy` through `var` (upper case first; empty values are unset).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let first = |names: &[&'static str]| {
            names.iter().find_map(|&variable| {
                var(variable)
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .map(|url| EnvProxy { variable, url })
            })
        };
        let no_proxy = ["NO_PROXY", "no_proxy"]
            .iter()
            .find_map(|name| var(name))
            .map(|list| {
                list.split(',')
                    .map(|e| e.trim().to_ascii_lowercase())
                    .filter(|e| !e.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Self {
            https: first(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]),
            http: first(&["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]),
            no_proxy,
        }
    }

    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Whether `host` (and `port`) is reached without the proxy.
    pub fn bypass(&self, host: &str, port: Option<u16>) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.no_proxy.iter().any(|entry| {
            if entry == "*" {
                return true;
            }
            // `name:port` applies to that port only (an IPv6 address has several colons).
            let (name, entry_port) = match entry.rsplit_once(':') {
                Some((n, p)) if !n.contains(':') => (n, p.parse::<u16>().ok()),
                _ => (entry.as_str(), None),
            };
            if entry_port.is_some() && entry_port != port {
                return false;
            }
            let name = name
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .trim_start_matches('[')
                .trim_end_matches(']');
            host == name || host.ends_with(&format!(".{name}"))
        })
    }
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
        Self::with_proxies(timeout, transfer, progress, Proxies::from_env())
    }

    /// As [`Http::new`], with these proxy settings instead of the environment's.
    pub fn with_proxies(
        timeout: Duration,
        transfer: Duration,
        progress: bool,
        proxies: Proxies,
    ) -> Self {
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(tls_roots())
            .build();
        let agent = |proxy: Option<ureq::Proxy>| -> ureq::Agent {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(MAX_REDIRECTS)
                .tls_config(tls.clone())
                .proxy(proxy)
                .timeout_connect(Some(timeout))
                .timeout_recv_response(Some(timeout))
                .timeout_global(Some(transfer))
                .user_agent(concat!(
                    "kdleak/",
                    env!("CARGO_PKG_VERSION"),
                    " (symbol client)"
                ))
                .build()
                .into()
        };
        let route = |proxy: Option<EnvProxy>| {
            proxy.map(|proxy| {
                let agent = ureq::Proxy::new(&proxy.url)
                    .map(|p| agent(Some(p)))
                    .map_err(|e| e.to_string());
                Route { proxy, agent }
            })
        };
        Self {
            direct: agent(None),
            https: route(proxies.https),
            http: route(proxies.http),
            no_proxy: proxies.no_proxy,
            progress,
            requests: AtomicUsize::new(0),
        }
    }

    /// The proxy a request for `url` goes through, if any.
    fn route(&self, url: &str) -> Option<&Route> {
        let uri: ureq::http::Uri = url.parse().ok()?;
        let route = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => self.https.as_ref(),
            _ => self.http.as_ref(),
        }?;
        let bypass = Proxies {
            no_proxy: self.no_proxy.clone(),
            ..Proxies::default()
        }
        .bypass(uri.host()?, uri.port_u16());
        (!bypass).then_some(route)
    }

    /// Requests made so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// GETs `url` into a temporary file beside `dest`, at most `limit` bytes. A 5xx answer is
    /// retried ([`SERVER_ERROR_ATTEMPTS`] in all).
    pub fn fetch(&self, url: &str, dest: &Path, limit: u64) -> Result<Fetched> {
        let (agent, route) = match self.route(url) {
            None => (&self.direct, None),
            Some(route) => match &route.agent {
                Ok(agent) => (agent, Some(&route.proxy)),
                Err(e) => {
                    return Ok(Fetched::Failed(format!(
                        "{}={} is not a proxy URL ({e}): write it as http://HOST:PORT",
                        route.proxy.variable, route.proxy.url
                    )))
                }
            },
        };
        let fetched = self.fetch_with(agent, url, dest, limit)?;
        Ok(match (fetched, route) {
            (Fetched::Failed(reason), Some(proxy)) => Fetched::Failed(format!(
                "{reason} (through the proxy {} from {}: check {}, or list the server's host in \
                 NO_PROXY)",
                proxy.url, proxy.variable, proxy.variable
            )),
            (fetched, _) => fetched,
        })
    }

    fn fetch_with(
        &self,
        agent: &ureq::Agent,
        url: &str,
        dest: &Path,
        limit: u64,
    ) -> Result<Fetched> {
        let mut pause = RETRY_PAUSE;
        for attempt in 1..=SERVER_ERROR_ATTEMPTS {
            self.requests.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(url, attempt, "symbol server request");
            let mut response = match agent.get(url).call() {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(vars: &[(&str, &str)]) -> Proxies {
        Proxies::from_vars(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn each_scheme_reads_its_own_variables_upper_case_first() {
        let p = proxies(&[
            ("https_proxy", "http://lower:1"),
            ("HTTPS_PROXY", "http://upper:2"),
            ("http_proxy", "http://plain:3"),
        ]);
        assert_eq!(p.https.as_ref().unwrap().variable, "HTTPS_PROXY");
        assert_eq!(p.https.as_ref().unwrap().url, "http://upper:2");
        assert_eq!(p.http.as_ref().unwrap().variable, "http_proxy");
        let all = proxies(&[("ALL_PROXY", "http://all:4"), ("HTTP_PROXY", "")]);
        assert_eq!(all.https.as_ref().unwrap().variable, "ALL_PROXY");
        assert_eq!(all.http.as_ref().unwrap().variable, "ALL_PROXY");
        assert_eq!(proxies(&[]), Proxies::default());
    }

    #[test]
    fn no_proxy_matches_hosts_subdomains_ports_and_everything() {
        let p = proxies(&[(
            "no_proxy",
            "localhost, .corp.example,127.0.0.1:8080,*.lab.test,[::1]",
        )]);
        assert!(p.bypass("localhost", None));
        assert!(p.bypass("LOCALHOST", Some(80)));
        assert!(p.bypass("sym.corp.example", None));
        assert!(p.bypass("corp.example", None));
        assert!(!p.bypass("notcorp.example", None));
        assert!(p.bypass("127.0.0.1", Some(8080)));
        assert!(!p.bypass("127.0.0.1", Some(8081)));
        assert!(p.bypass("a.lab.test", None));
        assert!(p.bypass("[::1]", Some(1)));
        assert!(!p.bypass("msdl.microsoft.com", None));
        assert!(proxies(&[("NO_PROXY", "*")]).bypass("msdl.microsoft.com", None));
    }
}
