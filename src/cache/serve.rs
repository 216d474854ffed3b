//! `forge serve`: a store, seen over HTTP as a `forge-cache-v1` cache.
//!
//! Realisations are signed on the fly with the server's key (`--key`); objects are packed into
//! `STORE/cache/` the first time they are asked for, and served from there afterwards.
//! Uploads (PUT, with the token given at start) land in `STORE/cache/` too, so the server is
//! also a cache that teams push to. `POST /_forge/batch` answers many small documents at once.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use tiny_http::{Header, Method, Request, Response, Server};

use super::format::{self, CacheInfo};
use super::keys::SecretKey;
use super::remote::{valid_cache_path, BatchAnswer, BatchRequest, DirRemote, BATCH_PATH};
use super::{push, to_json, CacheError, Remote};
use crate::hash::Digest;
use crate::store::Store;

/// Where a served store keeps packed objects and uploads.
pub const CACHE_DIR: &str = "cache";
/// Largest upload accepted (one archive or blob).
const MAX_UPLOAD: u64 = 16 << 30;
/// Largest batch request body.
const MAX_BATCH: u64 = 4 << 20;

pub struct ServeOptions {
    /// Uploads need `Authorization: Bearer TOKEN`; without a token the server is read-only.
    pub token: Option<String>,
    /// Signs the store's own realisations.
    pub key: Option<SecretKey>,
    pub threads: usize,
}

/// What every request handler thread shares.
struct Handler<'a> {
    store: &'a Store,
    cache: DirRemote,
    opts: ServeOptions,
    /// One packing per object at a time.
    packing: Mutex<HashMap<Digest, Arc<Mutex<()>>>>,
    log: &'a (dyn Fn(String) + Sync),
}

/// Bind `listen` (e.g. `127.0.0.1:8080`, port 0 for any) and serve until the process ends.
/// `ready` receives the bound address once requests are accepted.
pub fn serve(
    store: &Store,
    listen: &str,
    opts: ServeOptions,
    ready: impl FnOnce(std::net::SocketAddr),
    log: &(dyn Fn(String) + Sync),
) -> Result<(), CacheError> {
    let server = Server::http(listen).map_err(|e| CacheError::BadUrl(format!("cannot listen on {listen}: {e}")))?;
    let addr = server.server_addr().to_ip().ok_or_else(|| CacheError::BadUrl(format!("{listen} is not an IP address")))?;
    let cache_root = store.dir().join(CACHE_DIR);
    std::fs::create_dir_all(&cache_root).map_err(|e| CacheError::Io(format!("cannot create {}: {e}", cache_root.display())))?;
    let threads = opts.threads.max(1);
    let state = Handler {
        store,
        cache: DirRemote::new(&format!("file://{}", cache_root.display()), &cache_root)?,
        opts,
        packing: Mutex::new(HashMap::new()),
        log,
    };
    ready(addr);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while let Ok(request) = server.recv() {
                    state.handle(request);
                }
            });
        }
    });
    Ok(())
}

enum Body {
    Bytes(Vec<u8>),
    File(std::fs::File),
}

type Answer = Result<Body, (u16, String)>;

impl Handler<'_> {
    fn handle(&self, mut request: Request) {
        let path = request.url().split('?').next().unwrap_or("").trim_start_matches('/').to_string();
        let method = request.method().clone();
        let answer = match method {
            Method::Get | Method::Head => self.get(&path),
            Method::Put => self.put(&path, &mut request),
            Method::Post if path == BATCH_PATH => self.batch(&mut request),
            _ => Err((405, "method not allowed".into())),
        };
        if let Err((code, why)) = &answer {
            if *code >= 500 || method == Method::Put {
                (self.log)(format!("{method} /{path}: {code} {why}"));
            }
        }
        let head = method == Method::Head;
        let _ = match answer {
            Ok(Body::Bytes(b)) if head => request.respond(Response::empty(200).with_header(length(b.len() as u64))),
            Ok(Body::File(f)) if head => {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                request.respond(Response::empty(200).with_header(length(len)))
            }
            Ok(Body::Bytes(b)) => request.respond(Response::from_data(b)),
            Ok(Body::File(f)) => request.respond(Response::from_file(f)),
            Err((code, why)) => request.respond(Response::from_string(format!("{why}\n")).with_status_code(code)),
        };
    }

    fn get(&self, path: &str) -> Answer {
        if !valid_cache_path(path) {
            return Err((404, "not found".into()));
        }
        if path == format::INFO_FILE {
            return Ok(Body::Bytes(to_json(&CacheInfo { format: format::FORMAT.into() })));
        }
        if let Some(body) = self.cached_file(path)? {
            return Ok(body);
        }
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["realisations", drv, signer] => self.sign_realisation(drv, signer.strip_suffix(".json").unwrap_or("")),
            ["objects", file] => self.pack_object(file.strip_suffix(".json").unwrap_or("")),
            _ => Err((404, "not found".into())),
        }
    }

    fn cached_file(&self, path: &str) -> Result<Option<Body>, (u16, String)> {
        match std::fs::File::open(self.cache.root().join(path)) {
            Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => Ok(Some(Body::File(f))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err((500, e.to_string())),
        }
    }

    /// The store's own realisation of `drv`, signed now with the server's key.
    fn sign_realisation(&self, drv: &str, signer: &str) -> Answer {
        let not_found = || (404, "not found".to_string());
        let key = self.opts.key.as_ref().filter(|k| k.name == signer).ok_or_else(not_found)?;
        let drv: Digest = drv.parse().map_err(|_| not_found())?;
        let r = self.store.realisation_by_drv(&drv).map_err(|e| (500, e.to_string()))?.ok_or_else(not_found)?;
        Ok(Body::Bytes(to_json(&push::sign(key, &r))))
    }

    /// Pack store object `out` into the cache dir (once), then serve its info.
    fn pack_object(&self, out: &str) -> Answer {
        let not_found = || (404, "not found".to_string());
        let out: Digest = out.parse().map_err(|_| not_found())?;
        if !self.store.has_object(&out).map_err(|e| (500, e.to_string()))? {
            return Err(not_found());
        }
        let lock = self.packing.lock().expect("packing").entry(out).or_default().clone();
        let _guard = lock.lock().expect("pack lock");
        let info_path = format::object_info_path(&out);
        if let Some(body) = self.cached_file(&info_path)? {
            return Ok(body);
        }
        push::upload_object(self.store, &self.cache, &out).map_err(|e| (500, e.to_string()))?;
        self.cached_file(&info_path)?.ok_or((500, "packed object vanished".into()))
    }

    fn put(&self, path: &str, request: &mut Request) -> Answer {
        let Some(token) = &self.opts.token else {
            return Err((403, "this server is read-only (start forge serve with --token to accept uploads)".into()));
        };
        let expected = format!("Bearer {token}");
        let authorized = request
            .headers()
            .iter()
            .any(|h| h.field.equiv("Authorization") && constant_time_eq(h.value.as_str().as_bytes(), expected.as_bytes()));
        if !authorized {
            return Err((401, "missing or wrong token".into()));
        }
        if !valid_cache_path(path) {
            return Err((400, format!("invalid cache path {path:?}")));
        }
        let declared = declared_length(request)?;
        let scratch = self.store.scratch_dir("upload").map_err(|e| (500, e.to_string()))?;
        let tmp = scratch.path().join("body");
        let mut file = std::fs::File::create(&tmp).map_err(|e| (500, e.to_string()))?;
        let limit = declared.unwrap_or(MAX_UPLOAD);
        let copied = std::io::copy(&mut request.as_reader().take(limit + 1), &mut file).map_err(|e| (400, e.to_string()))?;
        if copied > MAX_UPLOAD {
            return Err((413, "upload too large".into()));
        }
        if let Some(declared) = declared.filter(|&n| n != copied) {
            return Err((400, format!("the body has {copied} bytes but Content-Length says {declared}")));
        }
        check_upload(path, &tmp).map_err(|why| (400, format!("{path}: {why}; nothing was stored")))?;
        self.cache.put_file(path, &tmp).map_err(|e| (500, e.to_string()))?;
        Ok(Body::Bytes(Vec::new()))
    }

    fn batch(&self, request: &mut Request) -> Answer {
        let mut body = Vec::new();
        request.as_reader().take(MAX_BATCH).read_to_end(&mut body).map_err(|e| (400, e.to_string()))?;
        let asked: BatchRequest = serde_json::from_slice(&body).map_err(|e| (400, format!("bad batch request: {e}")))?;
        let mut found = Vec::with_capacity(asked.paths.len());
        for path in &asked.paths {
            // Small documents only: big files are fetched one by one.
            let small = path == format::INFO_FILE || path.starts_with("realisations/") || path.starts_with("objects/");
            let content = match small.then(|| self.get(path)) {
                Some(Ok(Body::Bytes(b))) => String::from_utf8(b).ok(),
                Some(Ok(Body::File(mut f))) => {
                    let mut s = String::new();
                    f.read_to_string(&mut s).ok().map(|_| s)
                }
                _ => None,
            };
            found.push(content);
        }
        Ok(Body::Bytes(serde_json::to_vec(&BatchAnswer { found }).expect("serialisable")))
    }
}

/// The upload's length from its `Content-Length`: plain decimal digits, one value, at most
/// [`MAX_UPLOAD`]. `None` for a chunked body (bounded while read). Anything else (`-1`, a
/// number that overflows, two different lengths, no length at all) is refused: a malformed
/// request must never become an empty object in the cache.
fn declared_length(request: &Request) -> Result<Option<u64>, (u16, String)> {
    fn header<'r>(request: &'r Request, name: &'static str) -> impl Iterator<Item = &'r str> {
        request.headers().iter().filter(move |h| h.field.equiv(name)).map(|h| h.value.as_str().trim())
    }
    let mut lengths = header(request, "Content-Length");
    let Some(first) = lengths.next() else {
        if header(request, "Transfer-Encoding").any(|v| v.eq_ignore_ascii_case("chunked")) {
            return Ok(None);
        }
        return Err((411, "a PUT needs a Content-Length".into()));
    };
    if lengths.any(|other| other != first) {
        return Err((400, "conflicting Content-Length headers".into()));
    }
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return Err((400, format!("Content-Length {first:?} is not a number of bytes")));
    }
    match first.parse::<u64>() {
        Ok(n) if n <= MAX_UPLOAD => Ok(Some(n)),
        Ok(_) | Err(_) => Err((413, format!("Content-Length {first} exceeds the {MAX_UPLOAD}-byte limit"))),
    }
}

/// An upload must be what its path says: an archive or blob whose content hashes to its
/// name, an object info describing the object it is named after, a realisation of the
/// derivation and signer it is filed under (signatures are checked by whoever trusts the
/// key, not here), the cache's format file.
fn check_upload(path: &str, body: &std::path::Path) -> Result<(), String> {
    let digest_in = |name: &str, suffix: &str| -> Result<Digest, String> {
        name.strip_suffix(suffix).and_then(|hex| hex.parse().ok()).ok_or_else(|| "is not a valid cache path".to_string())
    };
    let read_document = || -> Result<Vec<u8>, String> {
        let mut bytes = Vec::new();
        std::fs::File::open(body)
            .and_then(|f| f.take(MAX_BATCH + 1).read_to_end(&mut bytes))
            .map_err(|e| e.to_string())?;
        if bytes.len() as u64 > MAX_BATCH {
            return Err(format!("a document larger than {MAX_BATCH} bytes"));
        }
        Ok(bytes)
    };
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["archives", name] => {
            let expected = digest_in(name, ".tar.zst")?;
            let actual = super::archive::hash_file(body).map_err(|e| e.to_string())?;
            (actual == expected).then_some(()).ok_or(format!("the body hashes to {actual}"))
        }
        ["blobs", name] => {
            let expected = digest_in(name, ".zst")?;
            let file = std::fs::File::open(body).map_err(|e| e.to_string())?;
            let mut decoder = zstd::Decoder::new(file).map_err(|e| e.to_string())?;
            let mut hasher = blake3::Hasher::new();
            std::io::copy(&mut (&mut decoder).take(MAX_UPLOAD + 1), &mut hasher).map_err(|e| format!("not zstd: {e}"))?;
            let actual: Digest = hasher.finalize().into();
            (actual == expected).then_some(()).ok_or(format!("the body decompresses to content hashing to {actual}"))
        }
        ["objects", name] => {
            let out = digest_in(name, ".json")?;
            format::ObjectInfo::parse(&read_document()?, &out).map(drop)
        }
        ["realisations", drv, file] => {
            let drv = digest_in(drv, "")?;
            let signer = file.strip_suffix(".json").ok_or("is not a valid cache path")?;
            let doc: format::RealisationDoc =
                serde_json::from_slice(&read_document()?).map_err(|e| format!("is not a realisation: {e}"))?;
            (doc.drv == drv && doc.signer == signer && doc.format == format::REALISATION_FORMAT)
                .then_some(())
                .ok_or(format!("is a realisation of {} by {:?}, not of this path", doc.drv, doc.signer))
        }
        [format::INFO_FILE] => serde_json::from_slice::<CacheInfo>(&read_document()?).map(drop).map_err(|e| e.to_string()),
        _ => Err("is not a path of the cache format".into()),
    }
}

fn length(n: u64) -> Header {
    Header::from_bytes(&b"Content-Length"[..], n.to_string().as_bytes()).expect("valid header")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
