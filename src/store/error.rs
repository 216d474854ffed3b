//! The store's error type: every variant names the path, hash or package it is about.

use std::io;
use std::path::PathBuf;

use crate::hash::{Checksum, Digest};
use crate::tree::TreeError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("store database {path}: {context}: {source}")]
    Db {
        path: PathBuf,
        context: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store database {path} is corrupt: {detail}")]
    CorruptDb { path: PathBuf, detail: String },
    #[error("{path} is not a forge store: it is not empty and has no VERSION file")]
    NotAStore { path: PathBuf },
    #[error("store {path} has format {found:?}, this forge understands {expected:?} only")]
    UnknownVersion { path: PathBuf, found: String, expected: &'static str },
    #[error("store database {path} has schema version {found}, newer than this forge knows ({known}); use a newer forge")]
    SchemaTooNew { path: PathBuf, found: i64, known: usize },
    #[error("no store location: set --store, FORGE_STORE, XDG_DATA_HOME or HOME")]
    NoStoreDir,
    #[error("checksum mismatch for {path}: expected {expected}, got {actual}")]
    ChecksumMismatch { path: PathBuf, expected: Checksum, actual: Checksum },
    #[error("cannot register {path}: an output must be a directory")]
    NotADirectory { path: PathBuf },
    #[error("derivation {drv_hash} ({name}) is already stored with different canonical bytes")]
    DerivationConflict { drv_hash: Digest, name: String },
    #[error("cannot record a realisation of {name} to {out}: that object is not in the store")]
    ObjectNotPresent { out: Digest, name: String },
    #[error("{name}: the downloaded object hashes to {actual}, not to the out hash {expected} it was signed for; nothing was registered")]
    OutMismatch { name: String, expected: Digest, actual: Digest },
    #[error("cannot {op}: builds are running on the store (they hold {lock} shared); retry when they have finished")]
    Busy { op: &'static str, lock: PathBuf },
}

impl StoreError {
    /// `map_err` helper: `.map_err(StoreError::io("read", &path))`.
    pub(crate) fn io<'a>(op: &'static str, path: &'a std::path::Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
        move |source| StoreError::Io { op, path: path.to_path_buf(), source }
    }
}
