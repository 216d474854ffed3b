//! Signing keys and trust: ed25519 key pairs named like Nix's (`NAME:BASE64`), and the
//! signed statement a cache publishes, "derivation D (resolved key R) produced out hash O".
//!
//! Key files: the secret key is `NAME:base64(seed ‖ public key)` (64 bytes), the public key
//! `NAME:base64(public key)` (32 bytes). The name travels with every signature, so a client
//! looks up only the signatures of names it trusts.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use super::CacheError;
use crate::hash::Digest;

/// What a realisation signature covers, in this order, NUL-separated (the format tag first,
/// so a signature can never be replayed as another kind of statement).
const REALISATION_TAG: &str = "forge-realisation-v1";

/// A key name: what a cache path and a trust entry call the key.
pub fn check_key_name(name: &str) -> Result<(), CacheError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(CacheError::BadKey(format!(
            "key name {name:?}: use 1-64 characters from A-Z a-z 0-9 . _ - (not starting with '.')"
        )))
    }
}

/// A secret key, able to sign realisations.
pub struct SecretKey {
    pub name: String,
    key: SigningKey,
}

/// A trusted public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub name: String,
    key: VerifyingKey,
}

impl SecretKey {
    /// A fresh key pair from the kernel's random number generator.
    pub fn generate(name: &str) -> Result<SecretKey, CacheError> {
        check_key_name(name)?;
        let mut seed = [0u8; 32];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut seed))
            .map_err(|e| CacheError::BadKey(format!("cannot read /dev/urandom: {e}")))?;
        Ok(SecretKey { name: name.to_string(), key: SigningKey::from_bytes(&seed) })
    }

    /// Parse `NAME:base64(seed ‖ public)`; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<SecretKey, CacheError> {
        let bad = |why: &str| CacheError::BadKey(format!("{origin}: not a forge secret key ({why})"));
        let (name, b64) = text.trim().split_once(':').ok_or_else(|| bad("expected NAME:BASE64"))?;
        check_key_name(name)?;
        let bytes = BASE64.decode(b64).map_err(|_| bad("invalid base64"))?;
        let bytes: [u8; 64] = bytes.try_into().map_err(|_| bad("expected 64 bytes"))?;
        let seed: [u8; 32] = bytes[..32].try_into().expect("32 bytes");
        let key = SigningKey::from_bytes(&seed);
        if key.verifying_key().as_bytes()[..] != bytes[32..] {
            return Err(bad("its public half does not match its seed"));
        }
        Ok(SecretKey { name: name.to_string(), key })
    }

    pub fn load(path: &Path) -> Result<SecretKey, CacheError> {
        let text = fs::read_to_string(path).map_err(|e| CacheError::BadKey(format!("cannot read secret key {}: {e}", path.display())))?;
        SecretKey::parse(&text, &path.display().to_string())
    }

    pub fn to_text(&self) -> String {
        let mut bytes = self.key.to_bytes().to_vec();
        bytes.extend_from_slice(self.key.verifying_key().as_bytes());
        format!("{}:{}", self.name, BASE64.encode(bytes))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey { name: self.name.clone(), key: self.key.verifying_key() }
    }

    /// Sign "drv (resolved key) produced out" for package `name`.
    pub fn sign_realisation(&self, claim: &Claim) -> String {
        BASE64.encode(self.key.sign(&claim.signed_bytes()).to_bytes())
    }

    /// Write `DIR/NAME.secret` (mode 0600, never overwritten) and `DIR/NAME.public`.
    pub fn write_pair(&self, dir: &Path) -> Result<(PathBuf, PathBuf), CacheError> {
        fs::create_dir_all(dir).map_err(|e| CacheError::BadKey(format!("cannot create {}: {e}", dir.display())))?;
        let secret = dir.join(format!("{}.secret", self.name));
        let public = dir.join(format!("{}.public", self.name));
        let io = |p: &Path, e: std::io::Error| CacheError::BadKey(format!("cannot write {}: {e}", p.display()));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&secret)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => CacheError::BadKey(format!(
                    "{} already exists; pick another name or delete it first (forge never overwrites a key)",
                    secret.display()
                )),
                _ => io(&secret, e),
            })?;
        file.write_all(format!("{}\n", self.to_text()).as_bytes()).map_err(|e| io(&secret, e))?;
        fs::write(&public, format!("{}\n", self.public().to_text())).map_err(|e| io(&public, e))?;
        Ok((secret, public))
    }
}

impl PublicKey {
    /// Parse `NAME:base64(public key)`.
    pub fn parse(text: &str) -> Result<PublicKey, CacheError> {
        let bad = |why: &str| CacheError::BadKey(format!("trusted key {text:?}: {why}; expected NAME:BASE64 as `forge key generate` prints"));
        let (name, b64) = text.trim().split_once(':').ok_or_else(|| bad("no ':'"))?;
        check_key_name(name)?;
        let bytes = BASE64.decode(b64).map_err(|_| bad("invalid base64"))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad("expected 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad("not a valid ed25519 point"))?;
        Ok(PublicKey { name: name.to_string(), key })
    }

    pub fn to_text(&self) -> String {
        format!("{}:{}", self.name, BASE64.encode(self.key.as_bytes()))
    }

    /// Does `signature` (base64) sign `claim` with this key?
    pub fn verifies(&self, claim: &Claim, signature: &str) -> bool {
        let Ok(bytes) = BASE64.decode(signature) else { return false };
        let Ok(bytes) = <[u8; 64]>::try_from(bytes) else { return false };
        let sig = ed25519_dalek::Signature::from_bytes(&bytes);
        self.key.verify_strict(&claim.signed_bytes(), &sig).is_ok()
    }
}

/// The set of trusted public keys, by name.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    keys: BTreeMap<String, PublicKey>,
}

impl Trust {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Trust {
        Trust { keys: keys.into_iter().map(|k| (k.name.clone(), k)).collect() }
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
    pub fn get(&self, name: &str) -> Option<&PublicKey> {
        self.keys.get(name)
    }
}

/// The statement a realisation signature covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub drv: Digest,
    pub resolved: Digest,
    pub out: Digest,
    pub name: String,
}

impl Claim {
    fn signed_bytes(&self) -> Vec<u8> {
        let fields = [REALISATION_TAG.to_string(), self.drv.to_hex(), self.resolved.to_hex(), self.out.to_hex(), self.name.clone()];
        fields.join("\0").into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> Claim {
        Claim { drv: Digest::of(b"drv"), resolved: Digest::of(b"res"), out: Digest::of(b"out"), name: "hello".into() }
    }

    #[test]
    fn keys_round_trip_through_their_text_form_and_sign() {
        let secret = SecretKey::generate("ci-1").unwrap();
        let again = SecretKey::parse(&secret.to_text(), "test").unwrap();
        let public = PublicKey::parse(&again.public().to_text()).unwrap();
        assert_eq!(public, secret.public());
        let sig = secret.sign_realisation(&claim());
        assert!(public.verifies(&claim(), &sig));
    }

    #[test]
    fn a_signature_covers_every_field_and_only_its_key() {
        let secret = SecretKey::generate("a").unwrap();
        let other = SecretKey::generate("a").unwrap();
        let sig = secret.sign_realisation(&claim());
        assert!(!other.public().verifies(&claim(), &sig), "another key with the same name");
        for tamper in [
            Claim { out: Digest::of(b"evil"), ..claim() },
            Claim { drv: Digest::of(b"evil"), ..claim() },
            Claim { resolved: Digest::of(b"evil"), ..claim() },
            Claim { name: "hellp".into(), ..claim() },
        ] {
            assert!(!secret.public().verifies(&tamper, &sig), "{tamper:?}");
        }
        assert!(!secret.public().verifies(&claim(), "not base64!"));
        assert!(!secret.public().verifies(&claim(), &BASE64.encode([0u8; 64])));
    }

    #[test]
    fn bad_key_text_is_refused_with_a_reason() {
        for text in ["nocolon", "a:!!!", "a:AAAA", "../x:AAAA", ""] {
            assert!(PublicKey::parse(text).is_err(), "{text}");
        }
        let secret = SecretKey::generate("k").unwrap();
        let mut text = secret.to_text();
        text.replace_range(text.len() - 4.., "AAA=");
        assert!(SecretKey::parse(&text, "f").is_err());
    }
}
