//! The cache layout `forge-cache-v1` (docs/cache-format.md): where each file lives and the
//! JSON documents. Every path is relative to the cache root, so a cache can be copied or
//! served from anywhere.
//!
//! ```text
//! forge-cache.json                       {"format": "forge-cache-v1"}
//! realisations/<drv>/<signer>.json       a signed claim: drv (resolved key) -> out
//! objects/<out>.json                     object info: sizes, archive, big-file blobs
//! archives/<blake3>.tar.zst              the object minus its big files (name = hash of these bytes)
//! blobs/<blake3>.zst                     one big file (name = hash of the uncompressed content)
//! ```

use serde::{Deserialize, Serialize};

use super::keys::Claim;
use crate::hash::Digest;

pub const FORMAT: &str = "forge-cache-v1";
pub const INFO_FILE: &str = "forge-cache.json";
pub const REALISATION_FORMAT: &str = "forge-realisation-v1";
pub const OBJECT_FORMAT: &str = "forge-object-v1";

/// Files at least this big travel as separate blobs, so that two versions of a package
/// share their unchanged big files (and an incremental push or substitution skips them).
pub const BLOB_MIN_SIZE: u64 = 256 * 1024;

pub fn realisation_path(drv: &Digest, signer: &str) -> String {
    format!("realisations/{}/{signer}.json", drv.to_hex())
}

pub fn object_info_path(out: &Digest) -> String {
    format!("objects/{}.json", out.to_hex())
}

pub fn archive_path(archive_hash: &Digest) -> String {
    format!("archives/{}.tar.zst", archive_hash.to_hex())
}

pub fn blob_path(file_hash: &Digest) -> String {
    format!("blobs/{}.zst", file_hash.to_hex())
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CacheInfo {
    pub format: String,
}

/// `realisations/<drv>/<signer>.json`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RealisationDoc {
    pub format: String,
    pub drv: Digest,
    pub resolved: Digest,
    pub out: Digest,
    pub name: String,
    pub signer: String,
    /// base64 ed25519 signature of the claim (see keys.rs).
    pub signature: String,
}

impl RealisationDoc {
    pub fn claim(&self) -> Claim {
        Claim { drv: self.drv, resolved: self.resolved, out: self.out, name: self.name.clone() }
    }
}

/// `objects/<out>.json`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub format: String,
    pub out: Digest,
    /// Regular files and their total size, as the store counts them.
    pub files: u64,
    pub size: u64,
    pub compression: String,
    pub archive: ArchiveRef,
    /// Files of at least [`BLOB_MIN_SIZE`] bytes, not in the archive.
    pub blobs: Vec<BlobRef>,
}

impl ObjectInfo {
    /// Parse the info document of object `out`: it must describe `out`, in this format, with
    /// zstd compression (what [`super::substitute::unpack_object`] reads). `Err` says why not.
    pub fn parse(bytes: &[u8], out: &Digest) -> Result<ObjectInfo, String> {
        match serde_json::from_slice::<ObjectInfo>(bytes) {
            Ok(info) if info.out == *out && info.format == OBJECT_FORMAT && info.compression == "zstd" => Ok(info),
            Ok(_) => Err(format!("does not describe object {out} in format {OBJECT_FORMAT}")),
            Err(e) => Err(format!("is not valid object info: {e}")),
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ArchiveRef {
    /// BLAKE3 of the compressed archive bytes (its file name).
    pub blake3: Digest,
    pub size: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    /// Path inside the object, '/'-separated, relative.
    pub path: String,
    /// BLAKE3 of the file's content (the tree hash's file digest).
    pub blake3: Digest,
    pub size: u64,
    pub executable: bool,
}
