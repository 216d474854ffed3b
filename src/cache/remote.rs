//! Where a cache lives: a directory (`file:///path`) or an HTTP server (`http(s)://`) that
//! answers GET and, for pushes, PUT (nginx with WebDAV, `forge serve --token`).
//!
//! Reads of small documents go through [`Remote::get_many`]: `forge serve` answers a whole
//! list in one request (`POST _forge/batch`); a static server is asked with parallel GETs on
//! kept-alive connections. Every HTTP request has a timeout, so a slow cache costs seconds.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::CacheError;

/// Parallel GETs when a server has no batch endpoint.
const PARALLEL_GETS: usize = 16;
/// The batch endpoint of `forge serve`, relative to the cache root.
pub const BATCH_PATH: &str = "_forge/batch";

/// The largest document (realisation, object info, batch answer) read from a cache.
const MAX_DOCUMENT: u64 = 64 << 20;

pub trait Remote: Send + Sync {
    /// The cache's URL, for messages.
    fn url(&self) -> &str;
    /// A file's content, or `None` if the cache does not have it.
    fn get(&self, path: &str) -> Result<Option<Vec<u8>>, CacheError>;
    /// A file as a stream, or `None`.
    fn open(&self, path: &str) -> Result<Option<Box<dyn Read + Send>>, CacheError>;
    /// Does the cache have this file?
    fn exists(&self, path: &str) -> Result<bool, CacheError>;
    /// Store `file` at `path`; readers see either nothing or the whole file.
    fn put_file(&self, path: &str, file: &Path) -> Result<(), CacheError>;
    fn put_bytes(&self, path: &str, bytes: &[u8]) -> Result<(), CacheError>;
    /// Many small files at once, in order. The default asks for each one.
    fn get_many(&self, paths: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        paths.iter().map(|p| self.get(p)).collect()
    }
    /// Many existence checks at once.
    fn exists_many(&self, paths: &[String]) -> Result<Vec<bool>, CacheError> {
        paths.iter().map(|p| self.exists(p)).collect()
    }
    /// Delete what killed pushers left half-written, untouched for [`PARTIAL_UPLOAD_GRACE`];
    /// returns how many. Only a cache this process writes files into itself has any.
    fn remove_stale_uploads(&self) -> Result<u64, CacheError> {
        Ok(0)
    }
}

/// A partial upload (`.tmp-*`) not written to for this long belongs to a dead pusher: a live
/// one keeps changing its mtime.
pub const PARTIAL_UPLOAD_GRACE: Duration = Duration::from_secs(3600);

/// Open `url`: `file:///abs/path`, a plain absolute path, or `http(s)://host[:port]/prefix`.
pub fn open(url: &str, token: Option<&str>) -> Result<Box<dyn Remote>, CacheError> {
    if let Some(path) = url.strip_prefix("file://") {
        return Ok(Box::new(DirRemote::new(url, Path::new(path))?));
    }
    if url.starts_with('/') {
        return Ok(Box::new(DirRemote::new(url, Path::new(url))?));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(Box::new(HttpRemote::new(url, token)));
    }
    Err(CacheError::BadUrl(format!(
        "{url:?}: a cache is file:///absolute/path, /absolute/path, http://host/path or https://host/path"
    )))
}

/// Is `path` one a cache may contain? (Guards `forge serve` and directory caches against
/// `..` and absolute paths coming from a URL.)
pub fn valid_cache_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && !c.starts_with(".tmp"))
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
}

fn check_path(url: &str, path: &str) -> Result<(), CacheError> {
    if valid_cache_path(path) {
        Ok(())
    } else {
        Err(CacheError::BadUrl(format!("{url}: invalid cache path {path:?}")))
    }
}

// ---- directories ----------------------------------------------------------------------------

/// A cache in a local directory. Writes go to a temporary name in the same directory and
/// are renamed into place, so concurrent pushers and readers never see partial files.
pub struct DirRemote {
    url: String,
    root: PathBuf,
}

impl DirRemote {
    pub fn new(url: &str, root: &Path) -> Result<DirRemote, CacheError> {
        if !root.is_absolute() {
            return Err(CacheError::BadUrl(format!("{url}: a file cache needs an absolute path")));
        }
        Ok(DirRemote { url: url.to_string(), root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, rel: &str) -> Result<PathBuf, CacheError> {
        check_path(&self.url, rel)?;
        Ok(self.root.join(rel))
    }

    fn io(&self, op: &str, rel: &str, e: io::Error) -> CacheError {
        CacheError::Unavailable(format!("{}: cannot {op} {rel}: {e}", self.url))
    }

    /// The `.tmp-*` files under the cache older than `grace` (by mtime), removed.
    pub fn remove_partials_older_than(&self, grace: Duration) -> Result<u64, CacheError> {
        let mut removed = 0;
        // Uploads land at most three levels down (realisations/DRV/SIGNER.json).
        for entry in walkdir::WalkDir::new(&self.root).max_depth(3).into_iter().filter_map(Result::ok) {
            let partial = entry.file_type().is_file() && entry.file_name().to_string_lossy().starts_with(".tmp-");
            let stale = || entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok()).is_some_and(|age| age > grace);
            if partial && stale() {
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(CacheError::Io(format!("cannot remove {}: {e}", entry.path().display()))),
                }
            }
        }
        Ok(removed)
    }

    /// Write via a temporary file in the destination directory, then rename.
    fn put_with(&self, rel: &str, write: impl FnOnce(&Path) -> io::Result<()>) -> Result<(), CacheError> {
        let dest = self.path(rel)?;
        let dir = dest.parent().expect("cache paths have a parent");
        fs::create_dir_all(dir).map_err(|e| self.io("create the directory of", rel, e))?;
        let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), unique()));
        let result = write(&tmp).and_then(|_| fs::File::open(&tmp)?.sync_all()).and_then(|_| fs::rename(&tmp, &dest));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|e| self.io("write", rel, e))
    }
}

/// A process-unique counter for temporary names.
fn unique() -> u64 {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Remote for DirRemote {
    fn url(&self) -> &str {
        &self.url
    }
    fn remove_stale_uploads(&self) -> Result<u64, CacheError> {
        self.remove_partials_older_than(PARTIAL_UPLOAD_GRACE)
    }
    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let file = match fs::File::open(self.path(rel)?) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("read", rel, e)),
        };
        // A document (realisation, object info) is small; a cache's file is never read whole
        // into memory past MAX_DOCUMENT, whatever it is (a device, a huge file).
        let mut bytes = Vec::new();
        file.take(MAX_DOCUMENT + 1).read_to_end(&mut bytes).map_err(|e| self.io("read", rel, e))?;
        if bytes.len() as u64 > MAX_DOCUMENT {
            return Err(CacheError::Garbage(format!("{}: {rel} is larger than {MAX_DOCUMENT} bytes, which no cache document is", self.url)));
        }
        Ok(Some(bytes))
    }
    fn open(&self, rel: &str) -> Result<Option<Box<dyn Read + Send>>, CacheError> {
        match fs::File::open(self.path(rel)?) {
            Ok(f) => Ok(Some(Box::new(io::BufReader::with_capacity(1 << 20, f)))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("open", rel, e)),
        }
    }
    fn exists(&self, rel: &str) -> Result<bool, CacheError> {
        Ok(self.path(rel)?.is_file())
    }
    fn put_file(&self, rel: &str, file: &Path) -> Result<(), CacheError> {
        self.put_with(rel, |tmp| fs::copy(file, tmp).map(drop))
    }
    fn put_bytes(&self, rel: &str, bytes: &[u8]) -> Result<(), CacheError> {
        self.put_with(rel, |tmp| fs::write(tmp, bytes))
    }
}

// ---- HTTP -----------------------------------------------------------------------------------

pub struct HttpRemote {
    url: String,
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
    /// Cleared after the server answered the batch endpoint with 404/405/501 once.
    batch: AtomicBool,
}

impl HttpRemote {
    pub fn new(url: &str, token: Option<&str>) -> HttpRemote {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout_read(Duration::from_secs(30))
            .timeout_write(Duration::from_secs(60))
            .max_idle_connections_per_host(PARALLEL_GETS * 2)
            .build();
        let base = url.trim_end_matches('/').to_string();
        HttpRemote { url: url.to_string(), base, agent, token: token.map(str::to_string), batch: AtomicBool::new(true) }
    }

    fn request(&self, method: &str, rel: &str) -> Result<ureq::Request, CacheError> {
        if rel != BATCH_PATH {
            check_path(&self.url, rel)?;
        }
        let mut req = self.agent.request(method, &format!("{}/{rel}", self.base));
        if let Some(token) = &self.token {
            req = req.set("Authorization", &format!("Bearer {token}"));
        }
        Ok(req)
    }

    fn fail(&self, op: &str, rel: &str, e: ureq::Error) -> CacheError {
        match e {
            ureq::Error::Status(code, resp) => {
                let hint = match code {
                    401 | 403 => " (pushing needs the server's token: --token or $FORGE_CACHE_TOKEN)",
                    405 => " (the server does not accept this method; for PUT, enable WebDAV or start forge serve with --token)",
                    _ => "",
                };
                CacheError::Unavailable(format!("{}: {op} {rel}: HTTP {code} {}{hint}", self.url, resp.status_text()))
            }
            ureq::Error::Transport(t) => CacheError::Unavailable(format!("{}: {op} {rel}: {t}", self.url)),
        }
    }

    /// GET that maps 404 (and 410) to `None`.
    fn get_response(&self, rel: &str) -> Result<Option<ureq::Response>, CacheError> {
        match self.request("GET", rel)?.call() {
            Ok(resp) => Ok(Some(resp)),
            Err(ureq::Error::Status(404 | 410, _)) => Ok(None),
            Err(e) => Err(self.fail("GET", rel, e)),
        }
    }

    fn try_batch(&self, paths: &[String]) -> Result<Option<Vec<Option<Vec<u8>>>>, CacheError> {
        if !self.batch.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let body = serde_json::json!({ "paths": paths }).to_string();
        let resp = match self.request("POST", BATCH_PATH)?.set("Content-Type", "application/json").send_string(&body) {
            Ok(resp) => resp,
            Err(ureq::Error::Status(404 | 405 | 501 | 403 | 400, _)) => {
                self.batch.store(false, Ordering::Relaxed);
                return Ok(None);
            }
            Err(e) => return Err(self.fail("POST", BATCH_PATH, e)),
        };
        let mut body = Vec::new();
        resp.into_reader()
            .take(MAX_DOCUMENT)
            .read_to_end(&mut body)
            .map_err(|e| CacheError::Unavailable(format!("{}: POST {BATCH_PATH}: {e}", self.url)))?;
        let answer: BatchAnswer = serde_json::from_slice(&body)
            .map_err(|e| CacheError::Garbage(format!("{}: batch answer is not valid JSON: {e}", self.url)))?;
        if answer.found.len() != paths.len() {
            return Err(CacheError::Garbage(format!("{}: batch answer has {} entries for {} paths", self.url, answer.found.len(), paths.len())));
        }
        Ok(Some(answer.found.into_iter().map(|f| f.map(String::into_bytes)).collect()))
    }
}

/// The batch protocol: request `{"paths": [...]}`, answer `{"found": [content or null, ...]}`
/// in the same order (documents are JSON text, so they travel as strings).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct BatchAnswer {
    pub found: Vec<Option<String>>,
}

#[derive(serde::Deserialize)]
pub struct BatchRequest {
    pub paths: Vec<String>,
}

impl Remote for HttpRemote {
    fn url(&self) -> &str {
        &self.url
    }
    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let Some(resp) = self.get_response(rel)? else { return Ok(None) };
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(MAX_DOCUMENT)
            .read_to_end(&mut bytes)
            .map_err(|e| CacheError::Unavailable(format!("{}: GET {rel}: {e}", self.url)))?;
        Ok(Some(bytes))
    }
    fn open(&self, rel: &str) -> Result<Option<Box<dyn Read + Send>>, CacheError> {
        Ok(self.get_response(rel)?.map(|r| Box::new(r.into_reader()) as Box<dyn Read + Send>))
    }
    fn exists(&self, rel: &str) -> Result<bool, CacheError> {
        match self.request("HEAD", rel)?.call() {
            Ok(_) => Ok(true),
            Err(ureq::Error::Status(404 | 410, _)) => Ok(false),
            Err(e) => Err(self.fail("HEAD", rel, e)),
        }
    }
    fn put_file(&self, rel: &str, file: &Path) -> Result<(), CacheError> {
        let f = fs::File::open(file).map_err(|e| CacheError::Io(format!("cannot open {}: {e}", file.display())))?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        self.request("PUT", rel)?
            .set("Content-Length", &len.to_string())
            .send(io::BufReader::with_capacity(1 << 20, f))
            .map(drop)
            .map_err(|e| self.fail("PUT", rel, e))
    }
    fn put_bytes(&self, rel: &str, bytes: &[u8]) -> Result<(), CacheError> {
        self.request("PUT", rel)?.send_bytes(bytes).map(drop).map_err(|e| self.fail("PUT", rel, e))
    }
    fn get_many(&self, paths: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(found) = self.try_batch(paths)? {
            return Ok(found);
        }
        parallel(paths, |p| self.get(p))
    }
    fn exists_many(&self, paths: &[String]) -> Result<Vec<bool>, CacheError> {
        parallel(paths, |p| self.exists(p))
    }
}

/// Run `f` over `items` on up to [`PARALLEL_GETS`] threads, keeping the order; the first
/// error wins.
fn parallel<T: Send>(items: &[String], f: impl Fn(&str) -> Result<T, CacheError> + Sync) -> Result<Vec<T>, CacheError> {
    let chunk = items.len().div_ceil(PARALLEL_GETS).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items.chunks(chunk).map(|c| s.spawn(|| c.iter().map(|p| f(p)).collect::<Result<Vec<T>, _>>())).collect();
        let mut out = Vec::with_capacity(items.len());
        for h in handles {
            out.extend(h.join().map_err(|_| CacheError::Io("a query thread panicked".into()))??);
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_paths_cannot_escape_the_cache() {
        for ok in ["objects/ab.json", "realisations/ab/ci-1.json", "forge-cache.json"] {
            assert!(valid_cache_path(ok), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "a/./b", "a/.tmp-1", "a b", "a\0b", "objects/"] {
            assert!(!valid_cache_path(bad), "{bad:?}");
        }
    }
}
