//! `forge push`: upload objects and signed realisations that a cache lacks.
//!
//! Order makes partial pushes harmless: an object's blobs and archive are uploaded before its
//! info, and its info before any realisation pointing to it, so a reader never finds a
//! realisation whose object is incomplete. Every name is content-addressed (or, for a
//! realisation, per signer), so two machines pushing at once write identical or independent
//! files, and each file appears atomically (rename, or the server's PUT).

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use rayon::prelude::*;

use super::archive::{self, Packed};
use super::format::{self, ObjectInfo, RealisationDoc};
use super::keys::{Claim, SecretKey};
use super::{check_format, to_json, CacheError, Remote};
use crate::hash::Digest;
use crate::store::{Realisation, Store};

/// What was pushed.
#[derive(Debug, Default, Clone)]
pub struct PushReport {
    pub objects_uploaded: u64,
    pub objects_present: u64,
    pub realisations_uploaded: u64,
    /// Compressed bytes sent.
    pub bytes_uploaded: u64,
    /// Uncompressed bytes of big files the cache already had (not sent).
    pub blob_bytes_skipped: u64,
    pub blobs_uploaded: u64,
    pub blobs_skipped: u64,
    /// Partial uploads of killed pushers deleted.
    pub stale_uploads_removed: u64,
    /// Objects that could not be uploaded (package, out hash, why); their realisations were
    /// not pushed, everything else was.
    pub failed: Vec<(String, Digest, String)>,
}

/// Progress callback, once per object uploaded: (package name, out hash, compressed bytes sent).
pub type Progress<'a> = &'a (dyn Fn(&str, &Digest, u64) + Sync);

/// Upload every realisation in `items` (and its object) that the cache lacks, `jobs` at a time.
pub fn push(
    store: &Store,
    remote: &dyn Remote,
    key: &SecretKey,
    items: &[Realisation],
    jobs: usize,
    progress: Progress<'_>,
) -> Result<PushReport, CacheError> {
    check_format(remote, true)?;
    let stale_uploads_removed = remote.remove_stale_uploads()?;
    // One question for all realisations and one for all objects.
    let doc_paths: Vec<String> = items.iter().map(|r| format::realisation_path(&r.drv_hash, &key.name)).collect();
    let have_doc = remote.exists_many(&doc_paths)?;
    let mut outs: BTreeMap<Digest, &str> = BTreeMap::new();
    for (r, have) in items.iter().zip(&have_doc) {
        if !have {
            outs.entry(r.out_hash).or_insert(&r.name);
        }
    }
    let outs: Vec<(Digest, &str)> = outs.into_iter().collect();
    let info_paths: Vec<String> = outs.iter().map(|(o, _)| format::object_info_path(o)).collect();
    let have_info = remote.exists_many(&info_paths)?;

    let report = Mutex::new(PushReport { stale_uploads_removed, ..PushReport::default() });
    let missing: Vec<&(Digest, &str)> = outs.iter().zip(&have_info).filter(|(_, h)| !**h).map(|(o, _)| o).collect();
    report.lock().expect("report").objects_present = (outs.len() - missing.len()) as u64;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build()
        .map_err(|e| CacheError::Io(format!("cannot start push threads: {e}")))?;
    // One object that cannot be uploaded costs its own realisations, never the others'.
    pool.install(|| {
        missing.par_iter().for_each(|(out, name)| {
            let uploaded = upload_object(store, remote, out);
            let mut r = report.lock().expect("report");
            match uploaded {
                Ok(moved) => {
                    progress(name, out, moved.bytes_uploaded);
                    r.objects_uploaded += 1;
                    r.bytes_uploaded += moved.bytes_uploaded;
                    r.blobs_uploaded += moved.blobs_uploaded;
                    r.blobs_skipped += moved.blobs_skipped;
                    r.blob_bytes_skipped += moved.blob_bytes_skipped;
                }
                Err(e) => r.failed.push((name.to_string(), *out, e.to_string())),
            }
        })
    });
    // Realisations last: their objects are complete by now.
    let mut report = report.into_inner().expect("report");
    let failed: HashSet<Digest> = report.failed.iter().map(|(_, out, _)| *out).collect();
    for (r, (path, have)) in items.iter().zip(doc_paths.iter().zip(&have_doc)) {
        if *have || failed.contains(&r.out_hash) {
            continue;
        }
        let doc = sign(key, r);
        remote.put_bytes(path, &to_json(&doc))?;
        report.realisations_uploaded += 1;
    }
    Ok(report)
}

/// The signed document for a realisation.
pub fn sign(key: &SecretKey, r: &Realisation) -> RealisationDoc {
    let claim = Claim { drv: r.drv_hash, resolved: r.resolved_key, out: r.out_hash, name: r.name.clone() };
    RealisationDoc {
        format: format::REALISATION_FORMAT.to_string(),
        drv: r.drv_hash,
        resolved: r.resolved_key,
        out: r.out_hash,
        name: r.name.clone(),
        signer: key.name.clone(),
        signature: key.sign_realisation(&claim),
    }
}

/// What uploading one object moved.
#[derive(Debug, Default)]
pub struct Moved {
    pub bytes_uploaded: u64,
    pub blobs_uploaded: u64,
    pub blobs_skipped: u64,
    pub blob_bytes_skipped: u64,
}

/// Pack store object `out` and upload what the cache lacks of it: its big-file blobs, its
/// archive, then its info.
pub fn upload_object(store: &Store, remote: &dyn Remote, out: &Digest) -> Result<Moved, CacheError> {
    let scratch = store.scratch_dir("push")?;
    let packed = archive::pack(&store.object_path(out), &scratch.path().join("archive.tar.zst"))?;
    let mut moved = Moved::default();

    let mut unique = HashSet::new();
    let blobs: Vec<_> = packed.blobs.iter().filter(|(b, _)| unique.insert(b.blake3)).collect();
    let blob_paths: Vec<String> = blobs.iter().map(|(b, _)| format::blob_path(&b.blake3)).collect();
    let have = remote.exists_many(&blob_paths)?;
    for (((blob, file), path), have) in blobs.iter().zip(&blob_paths).zip(have) {
        if have {
            moved.blobs_skipped += 1;
            moved.blob_bytes_skipped += blob.size;
            continue;
        }
        let compressed = scratch.path().join(format!("blob-{}", blob.blake3.to_hex()));
        moved.bytes_uploaded += archive::compress_blob(file, &compressed)?;
        remote.put_file(path, &compressed)?;
        std::fs::remove_file(&compressed).ok();
        moved.blobs_uploaded += 1;
    }
    let archive_path = format::archive_path(&packed.archive_hash);
    if !remote.exists(&archive_path)? {
        remote.put_file(&archive_path, &packed.archive)?;
        moved.bytes_uploaded += packed.archive_size;
    }
    remote.put_bytes(&format::object_info_path(out), &to_json(&object_info(out, &packed)))?;
    Ok(moved)
}

pub fn object_info(out: &Digest, packed: &Packed) -> ObjectInfo {
    ObjectInfo {
        format: format::OBJECT_FORMAT.to_string(),
        out: *out,
        files: packed.files,
        size: packed.size,
        compression: "zstd".to_string(),
        archive: format::ArchiveRef { blake3: packed.archive_hash, size: packed.archive_size },
        blobs: packed.blobs.iter().map(|(b, _)| b.clone()).collect(),
    }
}
