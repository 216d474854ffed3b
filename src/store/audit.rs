//! Reproducibility evidence (docs/reproducibility.md): who produced or signed which out hash
//! for a derivation, and which input outputs each local build used. Rows are never deleted:
//! a derivation with two out hashes among its attestations is non-deterministic, and stays
//! on record as such (the divergence ledger).

use rusqlite::params;
use serde::Serialize;

use super::{now_secs, Store, StoreError};
use crate::hash::Digest;

/// Where an out hash for a derivation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Built (or imported) in this store and registered.
    Build,
    /// A `forge build --check` round in this store.
    Check,
    /// A cache's realisation, signed by a trusted key.
    Cache,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Build => "build",
            Source::Check => "check",
            Source::Cache => "cache",
        }
    }

    fn parse(s: &str) -> Option<Source> {
        [Source::Build, Source::Check, Source::Cache].into_iter().find(|k| k.as_str() == s)
    }
}

/// One piece of evidence: `witness` says derivation `drv_hash` gives `out_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub drv_hash: Digest,
    pub name: String,
    pub out_hash: Digest,
    pub source: Source,
    /// Build and check: the host; cache: the name of the key that signed.
    pub witness: String,
    /// Check: the round's variations; cache: its URL; build: empty.
    pub detail: String,
}

/// Evidence as recorded, with when it was first and last seen (Unix seconds).
#[derive(Debug, Clone, Serialize)]
pub struct Attestation {
    #[serde(flatten)]
    pub evidence: Evidence,
    pub first_seen: i64,
    pub last_seen: i64,
}

/// A local build that used a given input output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dependent {
    pub name: String,
    pub drv_hash: Digest,
    pub out_hash: Digest,
}

const COLUMNS: &str = "drv_hash, name, out_hash, source, witness, detail, first_seen, last_seen";

impl Store {
    /// Record evidence now (once per distinct fact; seen again, only `last_seen` moves).
    pub fn attest(&self, evidence: &[Evidence]) -> Result<(), StoreError> {
        let now = now_secs();
        self.db.write("record attestations", |tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO attestations (drv_hash, name, out_hash, source, witness, detail, first_seen, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
                 ON CONFLICT (drv_hash, out_hash, source, witness, detail) DO UPDATE SET last_seen = excluded.last_seen",
            )?;
            for e in evidence {
                stmt.execute(params![
                    e.drv_hash.to_hex(),
                    e.name,
                    e.out_hash.to_hex(),
                    e.source.as_str(),
                    e.witness,
                    e.detail,
                    now
                ])?;
            }
            Ok(())
        })
    }

    /// The evidence a realisation made here gives, if it was built (or imported) here.
    pub fn build_evidence(&self, r: &super::Realisation) -> Option<Evidence> {
        matches!(r.origin, super::Origin::Built | super::Origin::Imported).then(|| Evidence {
            drv_hash: r.drv_hash,
            name: r.name.clone(),
            out_hash: r.out_hash,
            source: Source::Build,
            witness: self.host.clone(),
            detail: String::new(),
        })
    }

    /// Everything recorded about `drv`, oldest first.
    pub fn attestations(&self, drv: &Digest) -> Result<Vec<Attestation>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM attestations WHERE drv_hash = ?1 ORDER BY first_seen, rowid");
        self.query_attestations(&sql, [drv.to_hex()])
    }

    /// Whether more than one out hash was ever recorded for `drv` (it is in the ledger).
    pub fn is_nondeterministic(&self, drv: &Digest) -> Result<bool, StoreError> {
        let outs: i64 = self.db.read("read attestations", |c| {
            c.query_row("SELECT COUNT(DISTINCT out_hash) FROM attestations WHERE drv_hash = ?1", [drv.to_hex()], |r| r.get(0))
        })?;
        Ok(outs > 1)
    }

    fn query_attestations(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<Attestation>, StoreError> {
        type Row = (String, String, String, String, String, String, i64, i64);
        let rows: Vec<Row> = self.db.read("read attestations", |c| {
            let mut stmt = c.prepare_cached(sql)?;
            let rows = stmt.query_map(args, |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
            })?;
            rows.collect()
        })?;
        rows.into_iter()
            .map(|(drv, name, out, source, witness, detail, first_seen, last_seen)| {
                let source = Source::parse(&source).ok_or_else(|| self.db.corrupt(format!("unknown attestation source {source:?}")))?;
                Ok(Attestation {
                    evidence: Evidence {
                        drv_hash: self.db.digest(&drv, "drv_hash")?,
                        name,
                        out_hash: self.db.digest(&out, "out_hash")?,
                        source,
                        witness,
                        detail,
                    },
                    first_seen,
                    last_seen,
                })
            })
            .collect()
    }

    /// Record that output `out` of derivation `drv` was built against these inputs
    /// (name, drv hash, out hash).
    pub fn record_built_against(&self, drv: &Digest, out: &Digest, inputs: &[(String, Digest, Digest)]) -> Result<(), StoreError> {
        self.db.write("record build inputs", |tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO built_against (drv_hash, out_hash, input_name, input_drv, input_out)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (name, input_drv, input_out) in inputs {
                stmt.execute(params![drv.to_hex(), out.to_hex(), name, input_drv.to_hex(), input_out.to_hex()])?;
            }
            Ok(())
        })
    }

    /// The local builds that used output `input_out` of derivation `input_drv`.
    pub fn built_against(&self, input_drv: &Digest, input_out: &Digest) -> Result<Vec<Dependent>, StoreError> {
        let rows: Vec<(String, String, String)> = self.db.read("read build inputs", |c| {
            let mut stmt = c.prepare_cached(
                "SELECT d.name, b.drv_hash, b.out_hash FROM built_against b
                   LEFT JOIN derivations d ON d.drv_hash = b.drv_hash
                 WHERE b.input_drv = ?1 AND b.input_out = ?2 ORDER BY d.name, b.drv_hash",
            )?;
            let rows = stmt.query_map([input_drv.to_hex(), input_out.to_hex()], |r| {
                Ok((r.get::<_, Option<String>>(0)?.unwrap_or_default(), r.get(1)?, r.get(2)?))
            })?;
            rows.collect()
        })?;
        rows.into_iter()
            .map(|(name, drv, out)| {
                Ok(Dependent { name, drv_hash: self.db.digest(&drv, "drv_hash")?, out_hash: self.db.digest(&out, "out_hash")? })
            })
            .collect()
    }

    /// The host name recorded with this store's realisations and attestations.
    pub fn host(&self) -> &str {
        &self.host
    }
}
