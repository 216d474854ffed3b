//! `forge audit`: compare this store's realisation of every node with the realisations that
//! caches hold for the same derivation, signed by trusted keys (like `guix challenge`), and
//! keep what was seen as evidence in the store (docs/reproducibility.md).

use serde::Serialize;

use crate::cache::format::RealisationDoc;
use crate::cache::substitute::{cache_evidence, fetch_unclaimed, signed_realisations};
use crate::cache::{Remote, Trust};
use crate::derivation::Plan;
use crate::graph::Graph;
use crate::hash::Digest;
use crate::store::{Attestation, Dependent, Store, StoreError};

/// How one side compares with the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Some trusted signature names another out hash.
    Mismatch,
    /// Every trusted signature names the local out hash.
    Match,
    /// Not realised locally, so nothing to compare.
    UnknownLocal,
    /// The cache has no trusted realisation (or could not be asked).
    UnknownRemote,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Match => "match",
            Verdict::Mismatch => "mismatch",
            Verdict::UnknownLocal => "unknown (not built here)",
            Verdict::UnknownRemote => "unknown (not in cache)",
        }
    }
}

/// What one cache says about one derivation.
#[derive(Debug, Clone, Serialize)]
pub struct CacheAnswer {
    pub url: String,
    pub verdict: Verdict,
    /// Each trusted signature found: (out hash, key name).
    pub signed: Vec<(Digest, String)>,
}

/// One node's audit.
#[derive(Debug, Clone, Serialize)]
pub struct PackageAudit {
    pub name: String,
    pub version: String,
    pub drv: Digest,
    /// This store's out hash, if realised.
    pub local: Option<Digest>,
    pub caches: Vec<CacheAnswer>,
    /// Every out hash ever recorded for this derivation, and by whom (oldest first).
    pub history: Vec<Attestation>,
    /// Disputed outputs downloaded into this store for `forge diff` (kept under `audit:NAME`).
    pub fetched: Vec<Digest>,
    /// For a non-deterministic package: each of its outputs and the local builds that used it.
    pub used_by: Vec<OutputUse>,
}

/// One output of a derivation and the local builds that were built against it.
#[derive(Debug, Clone, Serialize)]
pub struct OutputUse {
    pub out: Digest,
    pub dependents: Vec<Dependent>,
}

impl PackageAudit {
    /// Mismatch if any cache disagrees; match if some cache agrees; else the first unknown.
    pub fn verdict(&self) -> Verdict {
        let verdicts = self.caches.iter().map(|c| c.verdict);
        if self.local.is_none() {
            return Verdict::UnknownLocal;
        }
        verdicts.min().unwrap_or(Verdict::UnknownRemote)
    }

    /// More than one out hash was ever seen for this derivation.
    pub fn nondeterministic(&self) -> bool {
        distinct_outs(&self.history).len() > 1
    }
}

/// The out hashes in `history`, each once, sorted.
fn distinct_outs(history: &[Attestation]) -> Vec<Digest> {
    let mut outs: Vec<Digest> = history.iter().map(|a| a.evidence.out_hash).collect();
    outs.sort_unstable();
    outs.dedup();
    outs
}

/// Audit every node of `graph` against `caches`. With `fetch`, the objects of mismatching
/// realisations are downloaded (checked against their signed out hash) so `forge diff` can
/// compare them. `warn` receives problems with caches; a cache that cannot be asked makes its
/// answers unknown, never an error.
pub fn audit(
    store: &Store,
    graph: &Graph,
    plan: &Plan,
    caches: &[Box<dyn Remote>],
    trust: &Trust,
    fetch: bool,
    warn: &mut dyn FnMut(String),
) -> Result<Vec<PackageAudit>, StoreError> {
    let drvs = &plan.drv_hashes;
    let mut local = Vec::with_capacity(drvs.len());
    let mut evidence = Vec::new();
    for drv in drvs {
        let realisation = store.realisation_by_drv(drv)?;
        // Built here before attestations were recorded: this makes the history complete.
        evidence.extend(realisation.as_ref().and_then(|r| store.build_evidence(r)));
        local.push(realisation.map(|r| r.out_hash));
    }
    let mut answers: Vec<Vec<CacheAnswer>> = vec![Vec::new(); drvs.len()];
    let mut disputed: Vec<Vec<(usize, RealisationDoc)>> = vec![Vec::new(); drvs.len()];
    for (index, cache) in caches.iter().enumerate() {
        let docs = match signed_realisations(cache.as_ref(), trust, drvs, warn) {
            Ok(docs) => docs,
            Err(e) => {
                warn(format!("cache {} could not be asked: {e}", cache.url()));
                Default::default()
            }
        };
        for (id, drv) in drvs.iter().enumerate() {
            let found = docs.get(drv).map(Vec::as_slice).unwrap_or_default();
            evidence.extend(found.iter().map(|doc| cache_evidence(doc, cache.url())));
            let verdict = match (local[id], found) {
                (None, _) => Verdict::UnknownLocal,
                (Some(_), []) => Verdict::UnknownRemote,
                (Some(out), docs) if docs.iter().all(|d| d.out == out) => Verdict::Match,
                (Some(out), docs) => {
                    disputed[id].extend(docs.iter().filter(|d| d.out != out).map(|d| (index, d.clone())));
                    Verdict::Mismatch
                }
            };
            let signed = found.iter().map(|d| (d.out, d.signer.clone())).collect();
            answers[id].push(CacheAnswer { url: cache.url().to_string(), verdict, signed });
        }
    }
    store.attest(&evidence)?;

    let mut audits = Vec::with_capacity(drvs.len());
    for &id in graph.topo_order() {
        let recipe = &graph.nodes[id].recipe;
        let mut fetched = Vec::new();
        if fetch {
            for (index, doc) in &disputed[id] {
                if fetched.contains(&doc.out) {
                    continue;
                }
                match fetch_unclaimed(store, caches[*index].as_ref(), doc) {
                    Ok(out) => fetched.push(out),
                    Err(e) => warn(format!("{}: cannot fetch the disputed output {} from {}: {e}", recipe.name, doc.out.short(), caches[*index].url())),
                }
            }
            if !fetched.is_empty() {
                store.set_root(&format!("audit:{}", recipe.name), &fetched)?;
            }
        }
        let history = store.attestations(&drvs[id])?;
        let outs = distinct_outs(&history);
        let used_by = if outs.len() > 1 {
            outs.iter().map(|out| Ok(OutputUse { out: *out, dependents: store.built_against(&drvs[id], out)? })).collect::<Result<_, StoreError>>()?
        } else {
            Vec::new()
        };
        audits.push(PackageAudit {
            name: recipe.name.clone(),
            version: recipe.version.clone(),
            drv: drvs[id],
            local: local[id],
            caches: std::mem::take(&mut answers[id]),
            history,
            fetched,
            used_by,
        });
    }
    Ok(audits)
}
