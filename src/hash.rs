//! Digest newtypes with one display form each (lowercase hex), validated on parse.

use std::fmt;
use std::str::FromStr;

/// A BLAKE3 digest: drv hashes, resolved keys, out hashes and file hashes.
///
/// Its one display form is 64 lowercase hex digits, and parsing accepts only that:
///
/// ```
/// use forge::hash::Digest;
/// let d = Digest::of(b"forge");
/// assert_eq!(d.to_string().len(), 64);
/// assert_eq!(d.to_string().parse::<Digest>(), Ok(d));
/// assert!(d.to_string().to_uppercase().parse::<Digest>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
    /// The first 12 hex digits, for human-facing output only.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl From<blake3::Hash> for Digest {
    fn from(h: blake3::Hash) -> Self {
        Digest(*h.as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

/// In JSON (cache documents, `--json` output) a digest is its hex string.
impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid digest {input:?}: expected {expected} lowercase hex digits")]
pub struct ParseDigestError {
    pub input: String,
    pub expected: usize,
}

impl FromStr for Digest {
    type Err = ParseDigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = parse_hex(s, 32)?;
        let mut out = [0u8; 32];
        out.copy_from_slice(&bytes);
        Ok(Digest(out))
    }
}

/// A checksum that pins a source's bytes. Display form: `ALGO:HEX`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Checksum {
    Sha256([u8; 32]),
    /// Accepted (with a warning) because the LFS book publishes MD5; pin sha256 instead.
    Md5([u8; 16]),
    /// BLAKE3 tree hash (see [`crate::tree`]) of a local `file` source: a file or directory.
    Blake3(Digest),
}

impl Checksum {
    pub fn algorithm(&self) -> &'static str {
        match self {
            Checksum::Sha256(_) => "sha256",
            Checksum::Md5(_) => "md5",
            Checksum::Blake3(_) => "blake3",
        }
    }
    pub fn hex(&self) -> String {
        match self {
            Checksum::Sha256(b) => hex(b),
            Checksum::Md5(b) => hex(b),
            Checksum::Blake3(d) => d.to_hex(),
        }
    }
    /// Parse the value of a recipe key `sha256`, `md5` or `blake3`.
    pub fn parse(algorithm: &str, value: &str) -> Result<Checksum, ParseDigestError> {
        Ok(match algorithm {
            "sha256" => Checksum::Sha256(parse_hex(value, 32)?.try_into().expect("length checked")),
            "md5" => Checksum::Md5(parse_hex(value, 16)?.try_into().expect("length checked")),
            _ => Checksum::Blake3(value.parse()?),
        })
    }
    /// Compute a checksum of the same algorithm over `bytes` (for verification messages).
    pub fn compute_like(&self, bytes: &[u8]) -> Checksum {
        use md5::Digest as _;
        match self {
            Checksum::Sha256(_) => Checksum::Sha256(sha2::Sha256::digest(bytes).into()),
            Checksum::Md5(_) => Checksum::Md5(md5::Md5::digest(bytes).into()),
            Checksum::Blake3(_) => Checksum::Blake3(Digest::of(bytes)),
        }
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm(), self.hex())
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn parse_hex(s: &str, len: usize) -> Result<Vec<u8>, ParseDigestError> {
    let err = || ParseDigestError { input: s.to_string(), expected: len * 2 };
    if s.len() != len * 2 || !s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return Err(err());
    }
    (0..len)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| err()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trips_through_hex() {
        let d = Digest::of(b"forge");
        assert_eq!(d.to_hex().parse::<Digest>().unwrap(), d);
        assert_eq!(d.to_hex(), blake3::hash(b"forge").to_hex().as_str());
    }

    #[test]
    fn rejects_uppercase_and_wrong_length() {
        let d = Digest::of(b"x").to_hex();
        assert!(d.to_uppercase().parse::<Digest>().is_err());
        assert!(d[1..].parse::<Digest>().is_err());
    }

    #[test]
    fn checksum_computes_known_sha256() {
        let c = Checksum::Sha256([0; 32]).compute_like(b"abc");
        assert_eq!(c.hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
