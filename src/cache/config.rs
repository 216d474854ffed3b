//! `~/.config/forge/config.toml`: substituters, trusted keys, the signing key, the negative
//! cache's lifetime. Flags add to or override it (docs/cache.md).
//!
//! ```toml
//! substituters = ["http://cache.lan:8080", "file:///srv/forge-cache"]
//! trusted-public-keys = ["ci-1:2r9k...="]
//! secret-key-file = "/home/me/.config/forge/keys/laptop.secret"
//! negative-ttl = 300
//! require-agreement = 2
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::CacheError;

/// How long (seconds) a "not in this cache" answer is believed, unless the config says otherwise.
pub const DEFAULT_NEGATIVE_TTL: u64 = 300;

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default)]
    pub substituters: Vec<String>,
    #[serde(default)]
    pub trusted_public_keys: Vec<String>,
    pub secret_key_file: Option<PathBuf>,
    pub negative_ttl: Option<u64>,
    /// Substitute only outputs whose out hash this many distinct trusted keys signed.
    pub require_agreement: Option<usize>,
    /// The package whose build time is 1 SBU on this machine (docs/observability.md).
    pub sbu_reference: Option<String>,
}

impl Config {
    /// `$FORGE_CONFIG`, else `$XDG_CONFIG_HOME/forge/config.toml`, else `~/.config/forge/config.toml`.
    pub fn default_path() -> Option<PathBuf> {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(p) = env("FORGE_CONFIG") {
            return Some(p);
        }
        if let Some(x) = env("XDG_CONFIG_HOME").filter(|p| p.is_absolute()) {
            return Some(x.join("forge/config.toml"));
        }
        env("HOME").map(|h| h.join(".config/forge/config.toml"))
    }

    /// Load `path`; a missing default config is an empty one, a missing explicit one an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, CacheError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(Config::default()),
            Err(e) => return Err(CacheError::Config(format!("cannot read {}: {e}", path.display()))),
        };
        toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
            let at = line.map(|l| format!(":{l}")).unwrap_or_default();
            CacheError::Config(format!("{}{at}: {}", path.display(), e.message()))
        })
    }

    /// The SBU reference package: `sbu-reference`, else LFS's choice, binutils pass 1.
    pub fn sbu_reference(&self) -> &str {
        self.sbu_reference.as_deref().unwrap_or("binutils-pass1")
    }

    pub fn negative_ttl(&self) -> u64 {
        self.negative_ttl.unwrap_or(DEFAULT_NEGATIVE_TTL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_and_unknown_keys_are_named_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "substituters = [\"file:///c\"]\ntrusted-public-keys = [\"a:b\"]\nnegative-ttl = 5\nrequire-agreement = 2\n").unwrap();
        let c = Config::load(&p, true).unwrap();
        assert_eq!(c.substituters, ["file:///c"]);
        assert_eq!(c.negative_ttl(), 5);
        assert_eq!(c.require_agreement, Some(2));
        std::fs::write(&p, "substituters = []\nsubstituter = \"x\"\n").unwrap();
        let e = Config::load(&p, true).unwrap_err().to_string();
        assert!(e.contains("config.toml:2") && e.contains("substituter"), "{e}");
        assert!(Config::load(&dir.path().join("none.toml"), false).is_ok());
        assert!(Config::load(&dir.path().join("none.toml"), true).is_err());
    }
}
