//! Downloads from HTTP(S) symbol servers (blocking `ureq` with rustls), with a progress bar on a
//! terminal, connect/response timeouts and an overall transfer limit. Counts requests so tests
//! can prove that a cached PDB makes none.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::error::{Result, SymbolError};
use super::store::{commit, temp_beside};

pub struct Http {
    agent: ureq::Agent,
    progress: bool,
    requests: AtomicUsize,
}

impl Http {
    /// `timeout` bounds connecting and waiting for the response head; `transfer` the whole
    /// request including the body.
    pub fn new(timeout: Duration, transfer: Duration, progress: bool) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
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

    /// GETs `url` into `dest` (atomically). `Ok(false)`: the server does not have it (404/410).
    pub fn fetch(&self, url: &str, dest: &Path) -> Result<bool> {
        let err = |reason: String| SymbolError::Http {
            url: url.to_string(),
            reason,
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(url, "symbol server request");
        let mut response = self.agent.get(url).call().map_err(|e| err(e.to_string()))?;
        let status = response.status().as_u16();
        if status == 404 || status == 410 {
            return Ok(false);
        }
        if status != 200 {
            return Err(err(format!("HTTP status {status}")));
        }
        let length = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
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
        let (mut out, tmp) = temp_beside(dest)?;
        let mut reader = response.body_mut().as_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    bar.abandon();
                    return Err(err(format!("download failed: {e}")));
                }
            };
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])
                .map_err(|e| SymbolError::io(&tmp, e))?;
            total += n as u64;
            bar.set_position(total);
        }
        drop(out);
        bar.finish_and_clear();
        if let Some(expected) = length {
            if expected != total {
                let _ = std::fs::remove_file(&tmp);
                return Err(err(format!("short body: {total} of {expected} bytes")));
            }
        }
        commit(&tmp, dest)?;
        Ok(true)
    }
}
