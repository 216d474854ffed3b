//! Substitution: fetch instead of build whenever a trusted cache has the output.
//!
//! 1. [`query`]: for the derivations not realised locally, ask each substituter in turn, in one
//!    batch per substituter, for realisations signed by the trusted keys; then, in a second
//!    batch, for the object infos they point to. Negative answers are remembered in the store
//!    for a short time. A substituter that fails or answers garbage is skipped with a warning.
//! 2. [`fetch`]: download the archive and blobs (reusing big files the store already has in
//!    earlier versions of the same package), unpack them safely, and register the tree only if
//!    it hashes to the signed out hash.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::archive::Unpacker;
use super::format::{self, ObjectInfo, RealisationDoc};
use super::keys::Trust;
use super::{check_format, CacheError, Remote};
use crate::hash::Digest;
use crate::store::{Origin, Realisation, Registration, Store};

/// A trusted realisation and the object it names, available from one substituter.
#[derive(Debug, Clone)]
pub struct Offer {
    /// Index into the substituters passed to [`query`].
    pub substituter: usize,
    pub doc: RealisationDoc,
    pub info: ObjectInfo,
}

/// Ask `substituters` (in order of preference) about `wanted` derivations. Returns the offers
/// found by drv hash; `warn` receives one line per problem (a cache down, a bad signature...).
pub fn query(
    store: &Store,
    substituters: &[Box<dyn Remote>],
    trust: &Trust,
    wanted: &[Digest],
    negative_ttl: u64,
    warn: &mut dyn FnMut(String),
) -> Result<HashMap<Digest, Offer>, CacheError> {
    let mut offers: HashMap<Digest, Offer> = HashMap::new();
    if trust.is_empty() || wanted.is_empty() {
        return Ok(offers);
    }
    for (index, remote) in substituters.iter().enumerate() {
        let mut ask: Vec<Digest> = Vec::new();
        for drv in wanted {
            if !offers.contains_key(drv) && !store.recent_cache_miss(remote.url(), drv, negative_ttl)? {
                ask.push(*drv);
            }
        }
        if ask.is_empty() {
            continue;
        }
        match query_one(remote.as_ref(), trust, &ask, warn) {
            Ok(found) => {
                let misses: Vec<Digest> = ask.iter().filter(|d| !found.contains_key(*d)).copied().collect();
                store.record_cache_misses(remote.url(), &misses)?;
                for (drv, (doc, info)) in found {
                    offers.insert(drv, Offer { substituter: index, doc, info });
                }
            }
            Err(e) => warn(format!("substituter {} skipped: {e}", remote.url())),
        }
    }
    Ok(offers)
}

/// One substituter: signed realisations for `ask`, then the infos of their objects.
fn query_one(
    remote: &dyn Remote,
    trust: &Trust,
    ask: &[Digest],
    warn: &mut dyn FnMut(String),
) -> Result<BTreeMap<Digest, (RealisationDoc, ObjectInfo)>, CacheError> {
    if !check_format(remote, false)? {
        return Ok(BTreeMap::new());
    }
    let signers: Vec<&str> = trust.names().collect();
    let paths: Vec<String> = ask.iter().flat_map(|d| signers.iter().map(move |s| format::realisation_path(d, s))).collect();
    let answers = remote.get_many(&paths)?;
    let mut docs: BTreeMap<Digest, RealisationDoc> = BTreeMap::new();
    for ((path, answer), drv) in paths.iter().zip(answers).zip(ask.iter().flat_map(|d| signers.iter().map(move |_| d))) {
        let Some(bytes) = answer else { continue };
        if docs.contains_key(drv) {
            continue;
        }
        match check_realisation(&bytes, drv, trust) {
            Ok(doc) => {
                docs.insert(*drv, doc);
            }
            Err(why) => warn(format!("{}: {path} refused: {why}", remote.url())),
        }
    }
    let info_paths: Vec<String> = docs.values().map(|d| format::object_info_path(&d.out)).collect();
    let infos = remote.get_many(&info_paths)?;
    let mut found = BTreeMap::new();
    for ((drv, doc), (path, info)) in docs.into_iter().zip(info_paths.iter().zip(infos)) {
        let Some(bytes) = info else {
            warn(format!("{}: {} is signed but its object info {path} is missing", remote.url(), doc.name));
            continue;
        };
        match serde_json::from_slice::<ObjectInfo>(&bytes) {
            Ok(info) if info.out == doc.out && info.format == format::OBJECT_FORMAT && info.compression == "zstd" => {
                found.insert(drv, (doc, info));
            }
            Ok(_) => warn(format!("{}: {path} does not describe object {} in format {}", remote.url(), doc.out, format::OBJECT_FORMAT)),
            Err(e) => warn(format!("{}: {path} is not valid object info: {e}", remote.url())),
        }
    }
    Ok(found)
}

/// Parse a realisation document and check it is about `drv` and signed by a trusted key.
pub fn check_realisation(bytes: &[u8], drv: &Digest, trust: &Trust) -> Result<RealisationDoc, String> {
    let doc: RealisationDoc = serde_json::from_slice(bytes).map_err(|e| format!("not a valid realisation document: {e}"))?;
    if doc.format != format::REALISATION_FORMAT {
        return Err(format!("format {:?}, expected {:?}", doc.format, format::REALISATION_FORMAT));
    }
    if doc.drv != *drv {
        return Err(format!("it is about derivation {}, not {drv}", doc.drv));
    }
    let key = trust.get(&doc.signer).ok_or_else(|| format!("signed by {:?}, which is not a trusted key", doc.signer))?;
    if !key.verifies(&doc.claim(), &doc.signature) {
        return Err(format!("the signature by {:?} does not match its content (forged or tampered with)", doc.signer));
    }
    Ok(doc)
}

/// Download, check and register one offered object. Returns its out hash.
pub fn fetch(store: &Store, remote: &dyn Remote, offer: &Offer) -> Result<Digest, CacheError> {
    let started = Instant::now();
    let (doc, info) = (&offer.doc, &offer.info);
    if store.has_object(&doc.out)? {
        // The same output is already here (another derivation produced it): only the
        // signed fact "this derivation gives that output" is new; nothing is downloaded.
        store.add_realisation(&Realisation {
            drv_hash: doc.drv,
            resolved_key: doc.resolved,
            out_hash: doc.out,
            name: doc.name.clone(),
            origin: Origin::Substituted,
            created_at: crate::store::now_secs(),
            duration_ms: 0,
        })?;
        return Ok(doc.out);
    }
    let what = format!("{} from {}", doc.name, remote.url());
    let scratch = store.scratch_dir(&format!("substitute-{}", doc.name))?;
    let root = scratch.path().join("out");
    let local = if info.blobs.is_empty() { HashMap::new() } else { local_big_files(store, &doc.name, info)? };
    unpack_object(remote, info, &root, &what, &local)?;
    let registration = Registration {
        drv_hash: doc.drv,
        resolved_key: doc.resolved,
        name: doc.name.clone(),
        origin: Origin::Substituted,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    Ok(store.register_expected(&root, &registration, &doc.out)?)
}

/// Unpack the object `info` describes into `root` (which must not exist), checking the
/// archive and every blob against their hashes; blobs found in `local` (by content hash) are
/// copied from there instead of downloaded. The caller checks the tree against the out hash.
pub fn unpack_object(
    remote: &dyn Remote,
    info: &ObjectInfo,
    root: &Path,
    what: &str,
    local: &HashMap<Digest, PathBuf>,
) -> Result<(), CacheError> {
    let mut unpacker = Unpacker::new(root)?;
    let archive_path = format::archive_path(&info.archive.blake3);
    let stream = remote.open(&archive_path)?.ok_or_else(|| CacheError::Refused(format!("{what}: {archive_path} is missing")))?;
    let (hash, size) = unpacker.archive(stream, what)?;
    if hash != info.archive.blake3 || size != info.archive.size {
        return Err(CacheError::Refused(format!(
            "{what}: {archive_path} hashes to {hash} ({size} bytes), expected {} ({} bytes); nothing was registered",
            info.archive.blake3, info.archive.size
        )));
    }
    for blob in &info.blobs {
        if let Some(path) = local.get(&blob.blake3) {
            let file = std::fs::File::open(path).map_err(|e| CacheError::Io(format!("cannot open {}: {e}", path.display())))?;
            unpacker.blob_plain(blob, std::io::BufReader::new(file), what)?;
            continue;
        }
        let blob_path = format::blob_path(&blob.blake3);
        let stream = remote.open(&blob_path)?.ok_or_else(|| CacheError::Refused(format!("{what}: {blob_path} is missing")))?;
        unpacker.blob(blob, stream, what)?;
    }
    Ok(())
}

/// Big files of earlier objects of the same package, by content hash, limited to the sizes
/// `info` needs (so only candidates are hashed).
fn local_big_files(store: &Store, name: &str, info: &ObjectInfo) -> Result<HashMap<Digest, PathBuf>, CacheError> {
    let sizes: std::collections::HashSet<u64> = info.blobs.iter().map(|b| b.size).collect();
    let mut found = HashMap::new();
    for out in store.present_outs_by_name(name, 3)? {
        for entry in walkdir::WalkDir::new(store.object_path(&out)).into_iter().filter_map(Result::ok) {
            let is_candidate = entry.file_type().is_file() && entry.metadata().is_ok_and(|m| sizes.contains(&m.len()));
            if is_candidate {
                if let Ok(digest) = super::archive::hash_file(entry.path()) {
                    found.entry(digest).or_insert_with(|| entry.path().to_path_buf());
                }
            }
        }
    }
    Ok(found)
}
