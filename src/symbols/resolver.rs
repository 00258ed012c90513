//! [`Symbols`]: from a module's RSDS record to a parsed PDB, through the symbol path. Every PDB
//! loaded stays cached for the life of the process (watch mode polls many times), keyed by its
//! store key; a file is only parsed when first used.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::cache_dir::default_cache_dir;
use super::error::{Result, SymbolError};
use super::http::{Fetched, Http};
use super::identity::{check, read_pdb_id, PdbId};
use super::pdbfile::Pdb;
use super::safe_name;
use super::store::{self, Found, TempFile};
use super::sympath::{Element, SymbolPath, Upstream};
use crate::kernel::PdbInfo;

/// The default [`SymbolOptions::max_download`]: 1 GiB, many times the largest kernel PDB
/// (Windows 11's ntkrnlmp.pdb is about 10 MB, its CAB smaller) and above the private PDBs of
/// large drivers.
pub const DEFAULT_MAX_DOWNLOAD: u64 = 1 << 30;

/// How symbols are found.
#[derive(Debug, Clone)]
pub struct SymbolOptions {
    pub path: SymbolPath,
    /// No network: symbol servers are skipped; local stores and caches still work.
    pub offline: bool,
    /// Use a PDB whose GUID/age do not match the module (`--force-symbols`).
    pub force: bool,
    /// Connect and response-head timeout.
    pub timeout: Duration,
    /// Limit for one whole download.
    pub transfer_timeout: Duration,
    /// Show a progress bar on a terminal while downloading.
    pub progress: bool,
    /// Largest file downloaded, copied or expanded from a CAB into a cache, in bytes.
    pub max_download: u64,
    /// Where compressed files from read-only stores are expanded and the default downstream
    /// store of `srv*URL`.
    pub cache_dir: PathBuf,
    /// ISF symbol packs (directories or zip files, searched in order) for a module whose PDB
    /// the symbol path does not have (README "Air-gapped labs"): `--isf`, then Volatility 3's
    /// symbol directories ([`super::isfpack::default_locations`]).
    pub isf: Vec<PathBuf>,
}

impl SymbolOptions {
    /// Options for `path` (`--sympath`, else `_NT_ALT_SYMBOL_PATH;_NT_SYMBOL_PATH`) with the
    /// default cache and timeouts (30 s to connect/answer, 10 min per download).
    pub fn new(sympath: Option<&str>) -> Result<Self> {
        let cache_dir = default_cache_dir();
        Ok(Self {
            path: SymbolPath::from_env_or(sympath, &cache_dir)?,
            offline: false,
            force: false,
            timeout: Duration::from_secs(30),
            transfer_timeout: Duration::from_secs(600),
            progress: true,
            max_download: DEFAULT_MAX_DOWNLOAD,
            cache_dir,
            isf: super::isfpack::default_locations(),
        })
    }
}

/// The process-wide symbol loader and PDB cache.
pub struct Symbols {
    opts: SymbolOptions,
    http: OnceLock<Http>,
    loaded: Mutex<HashMap<String, Arc<Pdb>>>,
    /// ISF tables loaded for modules without a PDB ([`Symbols::load_module`]).
    pub(super) tables: Mutex<HashMap<String, Arc<super::isf::IsfSymbols>>>,
    /// Every module identity asked for, in order, with what answered (`kdleak symbols
    /// manifest`).
    pub(super) requested: Mutex<Vec<super::module::Requested>>,
}

/// Says once per process, before the first request to it, that the symbol path is WinDbg's
/// `.symfix` default (no `--sympath`, `_NT_SYMBOL_PATH` or `_NT_ALT_SYMBOL_PATH` given).
fn announce_symfix(cache: &Path, server: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        eprintln!(
            "kdleak: no symbol path given (--sympath, _NT_SYMBOL_PATH): using srv*{}*{server}, \
             as WinDbg's .symfix",
            cache.display()
        );
    });
}

/// Whether a search may ask symbol servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Network {
    Allowed,
    Skipped,
}

/// What one search saw, for the error message.
#[derive(Default)]
struct Search {
    tried: Vec<String>,
    mismatch: Option<(PathBuf, PdbId)>,
}

pub(super) fn cache_key(id: &PdbId) -> String {
    format!("{}/{}", id.name.to_ascii_lowercase(), id.store_key())
}

impl Symbols {
    pub fn new(opts: SymbolOptions) -> Self {
        Self {
            opts,
            http: OnceLock::new(),
            loaded: Mutex::new(HashMap::new()),
            tables: Mutex::new(HashMap::new()),
            requested: Mutex::new(Vec::new()),
        }
    }

    pub fn options(&self) -> &SymbolOptions {
        &self.opts
    }

    /// HTTP requests made so far.
    pub fn http_requests(&self) -> usize {
        self.http.get().map_or(0, Http::requests)
    }

    fn http(&self) -> &Http {
        self.http.get_or_init(|| {
            Http::new(
                self.opts.timeout,
                self.opts.transfer_timeout,
                self.opts.progress,
            )
        })
    }

    /// The PDB for a module's RSDS record (read from target memory by `kernel::pe`).
    pub fn load(&self, rsds: &PdbInfo) -> Result<Arc<Pdb>> {
        self.load_id(&PdbId::from_rsds(rsds))
    }

    /// The PDB for `id`, from the process cache or the symbol path.
    pub fn load_id(&self, id: &PdbId) -> Result<Arc<Pdb>> {
        self.load_from(id, Network::Allowed)
    }

    /// The PDB for a module's RSDS record if it can be had without a symbol server (the process
    /// cache, directories, stores, caches); `Ok(None)` when only a server on the symbol path
    /// may have it. Cheap enough to ask while the target is stopped: no request leaves the host.
    pub fn load_without_network(&self, rsds: &PdbInfo) -> Result<Option<Arc<Pdb>>> {
        let id = PdbId::from_rsds(rsds);
        if !self.has_server() {
            return self.load_from(&id, Network::Allowed).map(Some);
        }
        match self.load_from(&id, Network::Skipped) {
            Ok(pdb) => Ok(Some(pdb)),
            // A server may have the right file where the local ones are missing or mismatched.
            Err(SymbolError::NotFound { .. } | SymbolError::Mismatch { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether a search may ask a symbol server (`--offline` or a path of directories and
    /// stores only: never).
    fn has_server(&self) -> bool {
        !self.opts.offline
            && self.opts.path.elements.iter().any(|e| {
                matches!(
                    e,
                    Element::Server {
                        upstream: Upstream::Url(_),
                        ..
                    }
                )
            })
    }

    fn load_from(&self, id: &PdbId, network: Network) -> Result<Arc<Pdb>> {
        let key = cache_key(id);
        if let Some(pdb) = self.loaded.lock().expect("symbol cache lock").get(&key) {
            return Ok(pdb.clone());
        }
        let path = self.locate_with(id, network)?;
        let pdb = Arc::new(Pdb::open(&path)?);
        check(&path, id, pdb.id(), self.opts.force)?;
        let mut loaded = self.loaded.lock().expect("symbol cache lock");
        Ok(loaded.entry(key).or_insert(pdb).clone())
    }

    /// Opens a PDB file directly (e.g. `--pdb FILE`), checked against `expected` when given.
    pub fn open_file(&self, path: &Path, expected: Option<&PdbId>) -> Result<Arc<Pdb>> {
        let pdb = Arc::new(Pdb::open(path)?);
        if let Some(expected) = expected {
            check(path, expected, pdb.id(), self.opts.force)?;
            let mut loaded = self.loaded.lock().expect("symbol cache lock");
            return Ok(loaded.entry(cache_key(expected)).or_insert(pdb).clone());
        }
        Ok(pdb)
    }

    /// Finds the file for `id` without parsing it beyond its identity.
    pub fn locate(&self, id: &PdbId) -> Result<PathBuf> {
        self.locate_with(id, Network::Allowed)
    }

    fn locate_with(&self, id: &PdbId, network: Network) -> Result<PathBuf> {
        // The name comes from target memory and becomes cache paths and URLs.
        if let Some(reason) = safe_name::problem(&id.name) {
            return Err(SymbolError::UnsafeName {
                name: safe_name::printable(&id.name, 64),
                reason,
            });
        }
        let mut search = Search::default();
        for element in &self.opts.path.elements {
            let found = match element {
                Element::Dir(dir) => self.search_dir(dir, id, &mut search)?,
                Element::Server {
                    downstream,
                    upstream,
                } => self.search_server(downstream, upstream, id, network, &mut search)?,
            };
            if let Some(path) = found {
                return Ok(path);
            }
        }
        match search.mismatch {
            Some((path, _)) if self.opts.force => {
                tracing::warn!(pdb = %path.display(), wanted = %id, "using a mismatched PDB (forced)");
                Ok(path)
            }
            Some((path, found)) => Err(SymbolError::Mismatch {
                pdb: path,
                expected: id.to_string(),
                found: found.to_string(),
            }),
            None => Err(SymbolError::NotFound {
                name: id.name.clone(),
                key: id.store_key(),
                tried: if search.tried.is_empty() {
                    vec!["the symbol path is empty (--sympath or _NT_SYMBOL_PATH)".into()]
                } else {
                    search.tried
                },
            }),
        }
    }

    /// Accepts `path` if its GUID/age match; remembers the first mismatch.
    fn accept(&self, path: &Path, id: &PdbId, search: &mut Search) -> Option<PathBuf> {
        search.tried.push(path.display().to_string());
        match read_pdb_id(path) {
            Ok(found) if found.same_build(id) => Some(path.to_path_buf()),
            Ok(found) => {
                tracing::debug!(pdb = %path.display(), %found, wanted = %id, "PDB mismatch");
                search.mismatch.get_or_insert((path.to_path_buf(), found));
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "unreadable PDB candidate");
                search.tried.push(format!("{} ({e})", path.display()));
                None
            }
        }
    }

    /// Persists `temp` (a download, an expanded CAB, a copy) as `dest` if it is the PDB `id`
    /// asks for. Anything else is refused, recorded as what `origin` gave, and deleted: a
    /// server that sends another build never puts it in the cache under the requested key.
    fn verify_and_keep(
        &self,
        temp: TempFile,
        dest: &Path,
        id: &PdbId,
        origin: &str,
        search: &mut Search,
    ) -> Result<Option<PathBuf>> {
        match read_pdb_id(temp.path()) {
            Ok(found) if found.same_build(id) => {
                temp.persist(dest)?;
                Ok(Some(dest.to_path_buf()))
            }
            Ok(found) => {
                search.tried.push(format!(
                    "{origin}: is {{{}}} age {}, not the requested build: refused, not cached",
                    found.guid, found.age
                ));
                Ok(None)
            }
            Err(e) => {
                let reason = match &e {
                    SymbolError::Malformed { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                search
                    .tried
                    .push(format!("{origin}: not a usable PDB ({reason}): not cached"));
                Ok(None)
            }
        }
    }

    /// Turns a store hit into a usable file, expanding CABs into `expand_to` (a cache) after
    /// checking what they hold.
    fn materialize(
        &self,
        found: Found,
        id: &PdbId,
        expand_to: &Path,
        search: &mut Search,
    ) -> Result<Option<PathBuf>> {
        match found {
            Found::File(p) => Ok(self.accept(&p, id, search)),
            Found::Compressed(cab) => {
                let dest = store::cache_path(expand_to, id);
                if dest.is_file() {
                    return Ok(self.accept(&dest, id, search));
                }
                match store::expand_cab(&cab, &dest, self.opts.max_download) {
                    Ok(temp) => {
                        let origin = cab.display().to_string();
                        self.verify_and_keep(temp, &dest, id, &origin, search)
                    }
                    Err(e) => {
                        search.tried.push(e.to_string());
                        Ok(None)
                    }
                }
            }
        }
    }

    fn search_dir(&self, dir: &Path, id: &PdbId, search: &mut Search) -> Result<Option<PathBuf>> {
        let hits = store::probe_plain_dir(dir, id);
        if hits.is_empty() {
            search.tried.push(format!("{} (nothing)", dir.display()));
        }
        for hit in hits {
            if let Some(p) = self.materialize(hit, id, &self.opts.cache_dir, search)? {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// Copies a found file into every downstream store before `upto` (WinDbg fills the chain).
    fn fill(&self, src: &Path, downstream: &[PathBuf], id: &PdbId) -> Result<PathBuf> {
        let mut first = None;
        for ds in downstream {
            let dest = store::cache_path(ds, id);
            store::install_copy(src, &dest, self.opts.max_download)?;
            first.get_or_insert(dest);
        }
        Ok(first.unwrap_or_else(|| src.to_path_buf()))
    }

    fn search_server(
        &self,
        downstream: &[PathBuf],
        upstream: &Upstream,
        id: &PdbId,
        network: Network,
        search: &mut Search,
    ) -> Result<Option<PathBuf>> {
        // 1. the downstream stores, left first
        for (i, ds) in downstream.iter().enumerate() {
            match store::probe_store(ds, id) {
                Some(hit) => {
                    if let Some(p) = self.materialize(hit, id, ds, search)? {
                        return self
                            .fill(&p, &downstream[..i], id)
                            .map(|first| Some(if i == 0 { p } else { first }));
                    }
                }
                None => search
                    .tried
                    .push(format!("{} (nothing)", store::cache_path(ds, id).display())),
            }
        }
        let expand_to = downstream.first().unwrap_or(&self.opts.cache_dir).clone();
        match upstream {
            Upstream::Store(dir) => {
                let Some(hit) = store::probe_store(dir, id) else {
                    search.tried.push(format!(
                        "{} (nothing)",
                        store::cache_path(dir, id).display()
                    ));
                    return Ok(None);
                };
                match self.materialize(hit, id, &expand_to, search)? {
                    Some(p) => self.fill(&p, downstream, id).map(Some),
                    None => Ok(None),
                }
            }
            Upstream::Url(base) => {
                if self.opts.offline || network == Network::Skipped {
                    search.tried.push(format!("{base} (skipped: offline)"));
                    return Ok(None);
                }
                if self.opts.path.symfix {
                    announce_symfix(&expand_to, base);
                }
                let Some(path) = self.download(base, id, &expand_to, search)? else {
                    return Ok(None);
                };
                self.fill(&path, &downstream[1.min(downstream.len())..], id)
                    .map(|_| Some(path))
            }
        }
    }

    /// Tries `name`, then `name.pd_`, then `file.ptr` under `base/name/KEY/` (WinDbg's order);
    /// stores what matches (expanded) as `cache/name/KEY/name`. Processes sharing the cache take
    /// turns per key directory, so a PDB is fetched once and the others find it.
    fn download(
        &self,
        base: &str,
        id: &PdbId,
        cache: &Path,
        search: &mut Search,
    ) -> Result<Option<PathBuf>> {
        let dest = store::cache_path(cache, id);
        let key_dir = dest.parent().unwrap_or(cache).to_path_buf();
        std::fs::create_dir_all(&key_dir).map_err(|e| SymbolError::io(&key_dir, e))?;
        let _turn = store::KeyLock::acquire(&key_dir, self.opts.transfer_timeout);
        if dest.is_file() {
            // Another process fetched it while this one waited.
            if let Some(p) = self.accept(&dest, id, search) {
                return Ok(Some(p));
            }
        }
        let dir_url = format!(
            "{base}/{}/{}",
            safe_name::url_segment(&id.name),
            safe_name::url_segment(&id.store_key())
        );
        let http = self.http();
        let limit = self.opts.max_download;
        let url = format!("{dir_url}/{}", safe_name::url_segment(&id.name));
        match http.fetch(&url, &dest, limit)? {
            Fetched::Body(temp) => return self.verify_and_keep(temp, &dest, id, &url, search),
            Fetched::Failed(reason) => return Ok(self.failed(&url, reason, search)),
            Fetched::Missing => search.tried.push(format!("{url} (404)")),
        }
        let packed_name = store::compressed_name(&id.name);
        let url = format!("{dir_url}/{}", safe_name::url_segment(&packed_name));
        match http.fetch(&url, &dest.with_file_name(&packed_name), limit)? {
            Fetched::Body(packed) => {
                return match store::expand_cab(packed.path(), &dest, limit) {
                    Ok(temp) => self.verify_and_keep(temp, &dest, id, &url, search),
                    Err(e) => {
                        search.tried.push(format!("{url}: {e}"));
                        Ok(None)
                    }
                }
            }
            Fetched::Failed(reason) => return Ok(self.failed(&url, reason, search)),
            Fetched::Missing => search.tried.push(format!("{url} (404)")),
        }
        let url = format!("{dir_url}/file.ptr");
        let pointer = match http.fetch(
            &url,
            &dest.with_file_name("file.ptr"),
            store::MAX_POINTER_BYTES,
        )? {
            Fetched::Body(pointer) => pointer,
            Fetched::Failed(reason) => return Ok(self.failed(&url, reason, search)),
            Fetched::Missing => {
                search.tried.push(format!("{url} (404)"));
                return Ok(None);
            }
        };
        let Some(target) = store::read_ptr(pointer.path()) else {
            search.tried.push(format!("{url}: points nowhere"));
            return Ok(None);
        };
        drop(pointer);
        let hit = if target.is_dir() {
            store::probe_key_dir(&target, &id.name)
        } else {
            target.is_file().then(|| store::classify(target.clone()))
        };
        let origin = format!("{url} -> {}", target.display());
        match hit {
            Some(Found::File(file)) => match store::copy_to_temp(&file, &dest, limit) {
                Ok(temp) => self.verify_and_keep(temp, &dest, id, &origin, search),
                Err(e) => {
                    search.tried.push(format!("{origin}: {e}"));
                    Ok(None)
                }
            },
            Some(Found::Compressed(cab)) => match store::expand_cab(&cab, &dest, limit) {
                Ok(temp) => self.verify_and_keep(temp, &dest, id, &origin, search),
                Err(e) => {
                    search.tried.push(format!("{origin}: {e}"));
                    Ok(None)
                }
            },
            None => {
                search.tried.push(format!("{origin} (nothing there)"));
                Ok(None)
            }
        }
    }

    /// Records a server that could not be used; the search goes on with the next element.
    fn failed(&self, url: &str, reason: String, search: &mut Search) -> Option<PathBuf> {
        tracing::warn!(url, %reason, "symbol server");
        search.tried.push(format!("{url}: {reason}"));
        None
    }
}
