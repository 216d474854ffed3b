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
use crate::store::{Evidence, Origin, Realisation, Registration, Source, Store};

/// A trusted realisation and the object it names, available from one substituter.
#[derive(Debug, Clone)]
pub struct Offer {
    /// Index into the substituters passed to [`query`].
    pub substituter: usize,
    pub doc: RealisationDoc,
    pub info: ObjectInfo,
}

/// What substitution requires of the caches.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Seconds a cache's "I do not have it" is believed (0: ask again).
    pub negative_ttl: u64,
    /// How many distinct trusted keys must sign the same out hash (`--require-agreement`).
    pub require_agreement: usize,
}

/// Ask `substituters` (in order of preference) about `wanted` derivations. Returns the offers
/// found by drv hash: an out hash signed by at least `policy.require_agreement` distinct
/// trusted keys (across all substituters), available from the first substituter that has its
/// object. Every signed realisation seen is recorded as an attestation, so that trusted keys
/// that disagree land in the divergence ledger. `warn` receives one line per problem.
pub fn query(
    store: &Store,
    substituters: &[Box<dyn Remote>],
    trust: &Trust,
    wanted: &[Digest],
    policy: &Policy,
    warn: &mut dyn FnMut(String),
) -> Result<HashMap<Digest, Offer>, CacheError> {
    let mut seen: HashMap<Digest, Vec<Seen>> = HashMap::new();
    if trust.is_empty() || wanted.is_empty() {
        return Ok(HashMap::new());
    }
    let settled = |seen: &HashMap<Digest, Vec<Seen>>, drv: &Digest| {
        seen.get(drv).is_some_and(|s| agreed(s, policy.require_agreement).is_some())
    };
    for (index, remote) in substituters.iter().enumerate() {
        let mut ask: Vec<Digest> = Vec::new();
        for drv in wanted {
            if !settled(&seen, drv) && !store.recent_cache_miss(remote.url(), drv, policy.negative_ttl)? {
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
                for (drv, docs) in found {
                    seen.entry(drv).or_default().extend(docs.into_iter().map(|(doc, info)| Seen { substituter: index, doc, info }));
                }
            }
            Err(e) => warn(format!("substituter {} skipped: {e}", remote.url())),
        }
    }
    let evidence: Vec<Evidence> = seen
        .values()
        .flatten()
        .map(|s| cache_evidence(&s.doc, substituters[s.substituter].url()))
        .collect();
    store.attest(&evidence)?;
    let mut offers = HashMap::new();
    for (drv, seen) in seen {
        let outs: std::collections::BTreeSet<Digest> = seen.iter().map(|s| s.doc.out).collect();
        if outs.len() > 1 {
            let who: Vec<String> = seen.iter().map(|s| format!("{} by {:?}", s.doc.out.short(), s.doc.signer)).collect();
            warn(format!("{}: trusted keys disagree about derivation {} ({}): recorded as non-deterministic", seen[0].doc.name, drv.short(), who.join(", ")));
        }
        match agreed(&seen, policy.require_agreement) {
            Some(offer) => {
                offers.insert(drv, offer);
            }
            None if policy.require_agreement > 1 => warn(format!(
                "{}: fewer than {} trusted keys agree on an output of derivation {}; it will be built locally",
                seen[0].doc.name,
                policy.require_agreement,
                drv.short()
            )),
            None => {}
        }
    }
    Ok(offers)
}

/// A trusted realisation seen on a substituter, with its object info if the cache has one.
struct Seen {
    substituter: usize,
    doc: RealisationDoc,
    info: Option<ObjectInfo>,
}

/// The out hash signed by the most distinct keys, if at least `require` of them, and where to
/// get its object (the first substituter that has it).
fn agreed(seen: &[Seen], require: usize) -> Option<Offer> {
    let mut signers: BTreeMap<Digest, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for s in seen {
        signers.entry(s.doc.out).or_default().insert(&s.doc.signer);
    }
    // Most signers first; among equals, the out hash seen first (preferred substituter).
    let first_seen = |out: &Digest| seen.iter().position(|s| s.doc.out == *out);
    let best = signers.iter().max_by(|a, b| a.1.len().cmp(&b.1.len()).then(first_seen(b.0).cmp(&first_seen(a.0))))?;
    if best.1.len() < require.max(1) {
        return None;
    }
    let s = seen.iter().find(|s| s.doc.out == *best.0 && s.info.is_some())?;
    Some(Offer { substituter: s.substituter, doc: s.doc.clone(), info: s.info.clone()? })
}

/// A cache's signed realisation as evidence for the store's ledger.
pub fn cache_evidence(doc: &RealisationDoc, url: &str) -> Evidence {
    Evidence {
        drv_hash: doc.drv,
        name: doc.name.clone(),
        out_hash: doc.out,
        source: Source::Cache,
        witness: doc.signer.clone(),
        detail: url.to_string(),
    }
}

/// Per derivation, the trusted realisations found and the info of each one's object.
type SignedWithInfos = BTreeMap<Digest, Vec<(RealisationDoc, Option<ObjectInfo>)>>;

/// One substituter: every trusted realisation of `ask`, then the infos of their objects.
fn query_one(
    remote: &dyn Remote,
    trust: &Trust,
    ask: &[Digest],
    warn: &mut dyn FnMut(String),
) -> Result<SignedWithInfos, CacheError> {
    let docs = signed_realisations(remote, trust, ask, warn)?;
    let outs: std::collections::BTreeSet<Digest> = docs.values().flatten().map(|d| d.out).collect();
    let outs: Vec<Digest> = outs.into_iter().collect();
    let info_paths: Vec<String> = outs.iter().map(format::object_info_path).collect();
    let answers = remote.get_many(&info_paths)?;
    let mut infos: HashMap<Digest, ObjectInfo> = HashMap::new();
    for ((out, path), answer) in outs.iter().zip(&info_paths).zip(answers) {
        let Some(bytes) = answer else { continue };
        match ObjectInfo::parse(&bytes, out) {
            Ok(info) => {
                infos.insert(*out, info);
            }
            Err(why) => warn(format!("{}: {path} {why}", remote.url())),
        }
    }
    let mut found = BTreeMap::new();
    for (drv, docs) in docs {
        let with_infos: Vec<_> = docs
            .into_iter()
            .map(|doc| {
                let info = infos.get(&doc.out).cloned();
                if info.is_none() {
                    warn(format!("{}: {} is signed but the info of its object {} is missing", remote.url(), doc.name, doc.out.short()));
                }
                (doc, info)
            })
            .collect();
        found.insert(drv, with_infos);
    }
    Ok(found)
}

/// Every realisation of `ask` on `remote` signed by a trusted key (one batch: every drv times
/// every trusted key name), checked; refused documents are reported through `warn`.
pub fn signed_realisations(
    remote: &dyn Remote,
    trust: &Trust,
    ask: &[Digest],
    warn: &mut dyn FnMut(String),
) -> Result<BTreeMap<Digest, Vec<RealisationDoc>>, CacheError> {
    let mut docs: BTreeMap<Digest, Vec<RealisationDoc>> = BTreeMap::new();
    if !check_format(remote, false)? {
        return Ok(docs);
    }
    let signers: Vec<&str> = trust.names().collect();
    let pairs: Vec<(&Digest, &str)> = ask.iter().flat_map(|d| signers.iter().map(move |s| (d, *s))).collect();
    let paths: Vec<String> = pairs.iter().map(|(d, s)| format::realisation_path(d, s)).collect();
    let answers = remote.get_many(&paths)?;
    for (((drv, _), path), answer) in pairs.iter().zip(&paths).zip(answers) {
        let Some(bytes) = answer else { continue };
        match check_realisation(&bytes, drv, trust) {
            Ok(doc) => docs.entry(**drv).or_default().push(doc),
            Err(why) => warn(format!("{}: {path} refused: {why}", remote.url())),
        }
    }
    Ok(docs)
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

/// Download a cache's object that this store does not take as a realisation (`forge audit`
/// fetching the other side of a mismatch): checked like [`fetch`], registered unclaimed.
pub fn fetch_unclaimed(store: &Store, remote: &dyn Remote, doc: &RealisationDoc) -> Result<Digest, CacheError> {
    if store.has_object(&doc.out)? {
        return Ok(doc.out);
    }
    let path = format::object_info_path(&doc.out);
    let bytes = remote.get(&path)?.ok_or_else(|| CacheError::Refused(format!("{path} is missing")))?;
    let info = ObjectInfo::parse(&bytes, &doc.out).map_err(|why| CacheError::Refused(format!("{path} {why}")))?;
    let what = format!("{} ({}) from {}", doc.name, doc.out.short(), remote.url());
    let scratch = store.scratch_dir(&format!("audit-{}", doc.name))?;
    let root = scratch.path().join("out");
    unpack_object(remote, &info, &root, &what, &HashMap::new())?;
    Ok(store.register_unclaimed(&root, Some(&doc.out))?)
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
    check_room_for(root, info, what)?;
    let mut unpacker = Unpacker::new(root, super::archive::Declared::of(info))?;
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

/// Refuse before downloading an object whose declared size does not fit on the store's file
/// system (what is written is bounded by that size, see [`Unpacker`]).
fn check_room_for(root: &Path, info: &ObjectInfo, what: &str) -> Result<(), CacheError> {
    let Some(dir) = root.parent() else { return Ok(()) };
    let stat = nix::sys::statvfs::statvfs(dir).map_err(|e| CacheError::Io(format!("cannot stat {}: {e}", dir.display())))?;
    let free = (stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64);
    if info.size > free {
        return Err(CacheError::Refused(format!(
            "{what}: the object is {} bytes but {} has {free} bytes free; nothing was downloaded",
            info.size,
            dir.display()
        )));
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
