//! Binary caches: sharing store objects between machines (docs/cache.md for users,
//! docs/cache-format.md for the layout).
//!
//! Data flow: `push` packs store objects into archives and uploads them with signed
//! realisations to a [`remote::Remote`]; `substitute` asks remotes which derivations they have
//! (batched), checks each realisation's signature against the trusted keys, downloads and
//! unpacks the archive safely, and registers it only if it hashes to the signed out hash;
//! `serve` answers HTTP requests for a store. Owner of the `forge-cache-v1` format.

pub mod archive;
pub mod config;
pub mod format;
pub mod keys;
pub mod push;
pub mod remote;
pub mod serve;
pub mod substitute;
pub mod verify;


pub use config::Config;
pub use keys::{PublicKey, SecretKey, Trust};
pub use remote::Remote;

/// What can go wrong with a cache. `Unavailable` and `Garbage` make a substituter be skipped
/// (the build goes on locally); `Refused` means content failed a check and was not used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{0}")]
    BadKey(String),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    BadUrl(String),
    #[error("cache unavailable: {0}")]
    Unavailable(String),
    #[error("cache returned garbage: {0}")]
    Garbage(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Check (and with `create`, write) the cache's `forge-cache.json`. A cache without one is
/// empty as far as readers are concerned (`Ok(false)`).
pub fn check_format(remote: &dyn Remote, create: bool) -> Result<bool, CacheError> {
    match remote.get(format::INFO_FILE)? {
        Some(bytes) => {
            let info: format::CacheInfo = serde_json::from_slice(&bytes).map_err(|e| {
                CacheError::Garbage(format!("{}: {} is not valid JSON: {e}", remote.url(), format::INFO_FILE))
            })?;
            if info.format != format::FORMAT {
                return Err(CacheError::Garbage(format!(
                    "{}: cache format {:?}; this forge reads {:?} only",
                    remote.url(),
                    info.format,
                    format::FORMAT
                )));
            }
            Ok(true)
        }
        None if create => {
            let info = format::CacheInfo { format: format::FORMAT.to_string() };
            remote.put_bytes(format::INFO_FILE, &to_json(&info))?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Pretty JSON with a trailing newline: the one serialisation of every cache document.
pub fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("cache documents serialise");
    bytes.push(b'\n');
    bytes
}
