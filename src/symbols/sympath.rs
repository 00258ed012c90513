//! WinDbg symbol paths (`--sympath`, `_NT_SYMBOL_PATH`, `_NT_ALT_SYMBOL_PATH`).
//!
//! `;`-separated elements:
//! * `srv*A*B*…*URL` (also `symsrv*symsrv.dll*…`): a chain of downstream stores, searched left to
//!   right and filled on success, ending in an upstream store — a URL or a directory. An empty
//!   downstream (`srv**URL`) or none (`srv*URL`) means the default downstream store: the current
//!   `cache*` directory, else kdleak's default cache ([`super::cache_dir::default_cache_dir`]).
//!   `srv*DIR` alone searches the store DIR.
//! * `cache*DIR` (`cache*` = the default cache): the downstream store for the elements after it.
//! * anything else: a plain directory, searched as `DIR/name`, `DIR/<ext>/name`,
//!   `DIR/symbols/<ext>/name` and, for convenience, as a store (`DIR/name/KEY/name`).
//!
//! As in WinDbg, `_NT_ALT_SYMBOL_PATH` is searched before `_NT_SYMBOL_PATH` (the debugger docs:
//! "the symbol path is created by appending _NT_SYMBOL_PATH after _NT_ALT_SYMBOL_PATH").
//!
//! With neither variable set and no `--sympath`, the path is what WinDbg's `.symfix` gives:
//! `srv*<default cache>*https://msdl.microsoft.com/download/symbols` ([`SymbolPath::symfix`]).
//! A variable set to the empty string is a choice, not an absence: the path is then empty.

use std::path::PathBuf;

use super::error::{Result, SymbolError};

/// Where a `srv*` chain ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// An HTTP(S) symbol server (base URL without a trailing `/`).
    Url(String),
    /// A symbol store on disk or a share.
    Store(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Element {
    /// A plain directory.
    Dir(PathBuf),
    /// A symbol-server chain.
    Server {
        downstream: Vec<PathBuf>,
        upstream: Upstream,
    },
}

/// Microsoft's public symbol server, the upstream of WinDbg's `.symfix` (the debugger docs,
/// ".symfix (Set Symbol Store Path)": `srv*DownstreamStore*https://msdl.microsoft.com/download/symbols`).
pub const MICROSOFT_SYMBOL_SERVER: &str = "https://msdl.microsoft.com/download/symbols";

/// A parsed symbol path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SymbolPath {
    pub elements: Vec<Element>,
    /// The path is the `.symfix` default, none having been given ([`SymbolPath::from_env_or`]):
    /// the first download from it is announced on stderr.
    pub symfix: bool,
}

fn is_url(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

impl SymbolPath {
    /// Parses `text`; `default_cache` stands for every empty or implicit downstream store.
    pub fn parse(text: &str, default_cache: &std::path::Path) -> Result<Self> {
        let mut elements = Vec::new();
        let mut cache: Option<PathBuf> = None;
        for raw in text.split(';') {
            let element = raw.trim();
            if element.is_empty() {
                continue;
            }
            let parts: Vec<&str> = element.split('*').collect();
            let head = parts[0].to_ascii_lowercase();
            let bad = |reason: &str| SymbolError::BadSymbolPath {
                element: element.to_string(),
                reason: reason.to_string(),
            };
            match head.as_str() {
                "cache" => {
                    let dir = parts.get(1).map(|s| s.trim()).unwrap_or("");
                    if parts.len() > 2 {
                        return Err(bad("cache* takes one directory"));
                    }
                    cache = Some(if dir.is_empty() {
                        default_cache.to_path_buf()
                    } else {
                        PathBuf::from(dir)
                    });
                }
                "srv" | "symsrv" => {
                    let mut rest: Vec<&str> = parts[1..].to_vec();
                    if head == "symsrv" {
                        // symsrv*symsrv.dll*…: the DLL name carries no location.
                        if rest.is_empty() {
                            return Err(bad("symsrv* needs a DLL name and a store"));
                        }
                        rest.remove(0);
                    }
                    let fallback = cache.clone().unwrap_or_else(|| default_cache.to_path_buf());
                    let Some(last) = rest.pop() else {
                        return Err(bad("srv* needs a store or URL"));
                    };
                    let last = last.trim();
                    if last.is_empty() {
                        return Err(bad("srv* ends without a store or URL"));
                    }
                    let mut downstream: Vec<PathBuf> = rest
                        .iter()
                        .map(|d| match d.trim() {
                            "" => fallback.clone(),
                            d => PathBuf::from(d),
                        })
                        .collect();
                    let upstream = if is_url(last) {
                        if downstream.is_empty() {
                            downstream.push(fallback);
                        }
                        Upstream::Url(last.trim_end_matches('/').to_string())
                    } else {
                        Upstream::Store(PathBuf::from(last))
                    };
                    elements.push(Element::Server {
                        downstream,
                        upstream,
                    });
                }
                _ if is_url(element) => {
                    return Err(bad("a URL must be written srv*URL or srv*CACHE*URL"));
                }
                _ => elements.push(Element::Dir(PathBuf::from(element))),
            }
        }
        Ok(Self {
            elements,
            symfix: false,
        })
    }

    /// WinDbg's `.symfix`: Microsoft's public symbol server behind `default_cache`.
    pub fn symfix(default_cache: &std::path::Path) -> Self {
        Self {
            elements: vec![Element::Server {
                downstream: vec![default_cache.to_path_buf()],
                upstream: Upstream::Url(MICROSOFT_SYMBOL_SERVER.into()),
            }],
            symfix: true,
        }
    }

    /// `explicit` if given (`--sympath`), else `_NT_ALT_SYMBOL_PATH` followed by
    /// `_NT_SYMBOL_PATH`; when neither variable is set (an empty one counts as set), the
    /// `.symfix` default ([`SymbolPath::symfix`]).
    pub fn from_env_or(explicit: Option<&str>, default_cache: &std::path::Path) -> Result<Self> {
        if let Some(text) = explicit {
            return Self::parse(text, default_cache);
        }
        if std::env::var_os("_NT_ALT_SYMBOL_PATH").is_none()
            && std::env::var_os("_NT_SYMBOL_PATH").is_none()
        {
            return Ok(Self::symfix(default_cache));
        }
        let text = [
            std::env::var("_NT_ALT_SYMBOL_PATH").ok(),
            std::env::var("_NT_SYMBOL_PATH").ok(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(";");
        Self::parse(&text, default_cache)
    }

    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symfix_is_srv_star_the_default_cache_star_microsoft() {
        let cache = std::path::Path::new("/home/u/.cache/kdleak/symbols");
        let written =
            SymbolPath::parse("srv*https://msdl.microsoft.com/download/symbols", cache).unwrap();
        let symfix = SymbolPath::symfix(cache);
        assert_eq!(symfix.elements, written.elements);
        assert!(symfix.symfix && !written.symfix);
    }
    use std::path::Path;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn windbg_forms() {
        let d = Path::new("/def");
        let sp = SymbolPath::parse(
            "srv*/c*https://msdl.microsoft.com/download/symbols/; /plain ;srv*https://h/s;cache*/k;srv**http://x;srv*/store;symsrv*symsrv.dll*/a*/b",
            d,
        )
        .unwrap();
        assert_eq!(
            sp.elements,
            vec![
                Element::Server {
                    downstream: vec![p("/c")],
                    upstream: Upstream::Url("https://msdl.microsoft.com/download/symbols".into())
                },
                Element::Dir(p("/plain")),
                Element::Server {
                    downstream: vec![p("/def")],
                    upstream: Upstream::Url("https://h/s".into())
                },
                Element::Server {
                    downstream: vec![p("/k")],
                    upstream: Upstream::Url("http://x".into())
                },
                Element::Server {
                    downstream: vec![],
                    upstream: Upstream::Store(p("/store"))
                },
                Element::Server {
                    downstream: vec![p("/a")],
                    upstream: Upstream::Store(p("/b"))
                },
            ]
        );
        assert!(SymbolPath::parse("srv*", d).is_err());
        assert!(SymbolPath::parse("https://bare", d).is_err());
        assert!(SymbolPath::parse(";;", d).unwrap().is_empty());
    }
}
