//! `forge verify --cache DIR`: check every file of a directory cache, and repair corrupt
//! objects from the local store.
//!
//! An object is checked the way a client would check it, end to end: its archive and blobs
//! must hash to their names and the unpacked tree to the out hash. A realisation must parse,
//! name an object the cache has, and carry a valid signature when its signer is trusted.

use std::path::Path;

use super::format::{self, ObjectInfo, RealisationDoc};
use super::keys::Trust;
use super::remote::DirRemote;
use super::{push, CacheError, Remote};
use crate::hash::Digest;
use crate::store::Store;

#[derive(Debug, Default)]
pub struct CacheReport {
    pub objects_checked: usize,
    pub realisations_checked: usize,
    /// (cache path, problem)
    pub problems: Vec<(String, String)>,
    /// Realisations whose signer is not trusted here (not an error, not checked).
    pub unverified_signers: usize,
    /// Objects re-uploaded from the local store.
    pub repaired: Vec<Digest>,
    /// Corrupt objects the local store could not repair.
    pub unrepaired: Vec<Digest>,
    /// Bad realisation files deleted.
    pub removed: Vec<String>,
    /// Partial uploads of killed pushers deleted.
    pub stale_uploads_removed: u64,
}

impl CacheReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
    pub fn fully_repaired(&self) -> bool {
        self.unrepaired.is_empty()
    }
}

/// Verify the cache in directory `root`. With `repair`, corrupt objects are deleted and
/// re-uploaded from `store` when it has them, and bad realisations are deleted.
pub fn verify(root: &Path, store: &Store, trust: &Trust, repair: bool) -> Result<CacheReport, CacheError> {
    let cache = DirRemote::new(&root.display().to_string(), root)?;
    if !super::check_format(&cache, false)? {
        return Err(CacheError::Garbage(format!("{} is not a forge cache (no {})", root.display(), format::INFO_FILE)));
    }
    let mut report = CacheReport { stale_uploads_removed: cache.remove_stale_uploads()?, ..CacheReport::default() };
    for (rel, out) in list(root, "objects", ".json")? {
        report.objects_checked += 1;
        let Ok(out) = out.parse::<Digest>() else {
            report.problems.push((rel, "not named by an out hash".into()));
            continue;
        };
        if let Err(problem) = check_object(&cache, store, &rel, &out) {
            report.problems.push((rel.clone(), problem));
            if repair {
                if store.has_object(&out)? {
                    remove_object_files(&cache, root, &rel)?;
                    push::upload_object(store, &cache, &out)?;
                    report.repaired.push(out);
                } else {
                    report.unrepaired.push(out);
                }
            }
        }
    }
    for dir in list_dirs(root, "realisations")? {
        for (rel, signer) in list(root, &format!("realisations/{dir}"), ".json")? {
            report.realisations_checked += 1;
            let problem = match check_realisation(&cache, &rel, &dir, &signer, trust) {
                Ok(true) => continue,
                Ok(false) => {
                    report.unverified_signers += 1;
                    continue;
                }
                Err(problem) => problem,
            };
            report.problems.push((rel.clone(), problem));
            if repair {
                std::fs::remove_file(root.join(&rel)).map_err(|e| CacheError::Io(format!("cannot delete {rel}: {e}")))?;
                report.removed.push(rel);
            }
        }
    }
    Ok(report)
}

/// Download (read) and unpack the object as a client would; `Err` says what is wrong.
fn check_object(cache: &DirRemote, store: &Store, rel: &str, out: &Digest) -> Result<(), String> {
    let bytes = cache.get(rel).map_err(|e| e.to_string())?.ok_or("vanished")?;
    let info: ObjectInfo = serde_json::from_slice(&bytes).map_err(|e| format!("not valid object info: {e}"))?;
    if info.out != *out {
        return Err(format!("describes {}, not the object it is named after", info.out));
    }
    let scratch = store.scratch_dir("verify-cache").map_err(|e| e.to_string())?;
    let root = scratch.path().join("out");
    super::substitute::unpack_object(cache, &info, &root, rel, &Default::default()).map_err(|e| e.to_string())?;
    let actual = crate::tree::hash_path(&root).map_err(|e| e.to_string())?.digest;
    if actual != *out {
        return Err(format!("unpacks to a tree hashing to {actual}"));
    }
    Ok(())
}

/// `Ok(true)` verified, `Ok(false)` signer not trusted here, `Err` bad.
fn check_realisation(cache: &DirRemote, rel: &str, drv: &str, signer: &str, trust: &Trust) -> Result<bool, String> {
    let bytes = cache.get(rel).map_err(|e| e.to_string())?.ok_or("vanished")?;
    let doc: RealisationDoc = serde_json::from_slice(&bytes).map_err(|e| format!("not a valid realisation: {e}"))?;
    if doc.drv.to_hex() != drv || doc.signer != signer {
        return Err(format!("says drv {} signer {:?}, but is stored as {drv}/{signer}", doc.drv, doc.signer));
    }
    if !cache.exists(&format::object_info_path(&doc.out)).map_err(|e| e.to_string())? {
        return Err(format!("its object {} is not in the cache", doc.out));
    }
    if trust.get(signer).is_none() {
        return Ok(false);
    }
    super::substitute::check_realisation(&bytes, &doc.drv, trust).map(|_| true)
}

/// Delete an object's info, archive and blobs that fail their hash (shared blobs that are
/// fine are kept), so the upload that follows writes fresh copies.
fn remove_object_files(cache: &DirRemote, root: &Path, rel: &str) -> Result<(), CacheError> {
    let remove = |p: &str| std::fs::remove_file(root.join(p)).or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) });
    let io = |p: &str, e: std::io::Error| CacheError::Io(format!("cannot delete {p}: {e}"));
    if let Some(info) = cache.get(rel)?.and_then(|b| serde_json::from_slice::<ObjectInfo>(&b).ok()) {
        let archive = format::archive_path(&info.archive.blake3);
        if !file_hashes_to(&root.join(&archive), &info.archive.blake3) {
            remove(&archive).map_err(|e| io(&archive, e))?;
        }
        for blob in &info.blobs {
            let path = format::blob_path(&blob.blake3);
            let ok = cache.open(&path).ok().flatten().is_some_and(|s| {
                let mut h = super::archive::HashingReader::new(match zstd::Decoder::new(s) {
                    Ok(d) => d,
                    Err(_) => return false,
                });
                std::io::copy(&mut h, &mut std::io::sink()).is_ok() && h.finish().0 == blob.blake3
            });
            if !ok {
                remove(&path).map_err(|e| io(&path, e))?;
            }
        }
    }
    remove(rel).map_err(|e| io(rel, e))
}

fn file_hashes_to(path: &Path, expected: &Digest) -> bool {
    super::archive::hash_file(path).is_ok_and(|d| d == *expected)
}

/// Files `DIR/*SUFFIX` as (relative path, stem), sorted.
fn list(root: &Path, dir: &str, suffix: &str) -> Result<Vec<(String, String)>, CacheError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(root.join(dir)) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(CacheError::Io(format!("cannot list {dir}: {e}"))),
    };
    for entry in entries {
        let entry = entry.map_err(|e| CacheError::Io(format!("cannot list {dir}: {e}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(suffix).filter(|_| !name.starts_with(".tmp")) {
            out.push((format!("{dir}/{name}"), stem.to_string()));
        }
    }
    out.sort();
    Ok(out)
}

fn list_dirs(root: &Path, dir: &str) -> Result<Vec<String>, CacheError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(root.join(dir)) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(CacheError::Io(format!("cannot list {dir}: {e}"))),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}
