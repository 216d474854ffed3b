//! `forge build --check`: rebuild outputs that are already realised, ignoring every cache,
//! vary between rounds what must not matter, and compare each round's out hash with the
//! recorded one (docs/reproducibility.md). A differing output is registered as an unclaimed
//! object and kept under the gc root `check:NAME`, so that `forge diff` can show why.
//! Every round is recorded as evidence (an attestation) in the store.

use std::path::PathBuf;
use std::str::FromStr;

use rayon::prelude::*;
use serde::Serialize;

use crate::derivation::Plan;
use crate::executor::{self, BuildFailure, Observer, Options, Variation};
use crate::graph::{Graph, NodeId};
use crate::hash::Digest;
use crate::store::{BuildOutcome, Evidence, Source, Store, StoreError};

/// Something `--check` rounds vary (`--vary`), as reprotest does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Vary {
    /// The working directory is `/build-check-N` (`/build` links to it): catches outputs
    /// that embed the build path (debug info, `__FILE__`, generated scripts).
    BuildPath,
    /// `$FORGE_JOBS` alternates between 1 and twice the usual: catches races and outputs
    /// whose order depends on parallelism.
    Jobs,
}

impl Vary {
    pub const ALL: [Vary; 2] = [Vary::BuildPath, Vary::Jobs];

    pub fn as_str(self) -> &'static str {
        match self {
            Vary::BuildPath => "build-path",
            Vary::Jobs => "jobs",
        }
    }
}

impl FromStr for Vary {
    type Err = String;
    fn from_str(s: &str) -> Result<Vary, String> {
        Vary::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| {
            format!("unknown variation {s:?}; known: {} (or none)", Vary::ALL.map(Vary::as_str).join(", "))
        })
    }
}

/// Parse `--vary`: a comma-separated list, `all` (the default) or `none`.
pub fn parse_vary(list: &str) -> Result<Vec<Vary>, String> {
    match list.trim() {
        "all" => Ok(Vary::ALL.to_vec()),
        "none" | "" => Ok(Vec::new()),
        list => list.split(',').map(|v| v.trim().parse()).collect(),
    }
}

/// How many rounds, varying what.
#[derive(Clone, Debug)]
pub struct CheckPlan {
    pub rounds: usize,
    pub vary: Vec<Vary>,
}

impl CheckPlan {
    /// What round `round` (1-based) changes, given the usual `$FORGE_JOBS`.
    pub fn variation(&self, round: usize, build_jobs: usize) -> Variation {
        let mut variation = Variation::default();
        if self.vary.contains(&Vary::BuildPath) {
            variation.build_dir = Some(format!("/build-check-{round}"));
        }
        if self.vary.contains(&Vary::Jobs) {
            variation.jobs = Some(if round % 2 == 1 { 1 } else { (build_jobs * 2).max(2) });
        }
        variation
    }
}

/// A human (and attestation) description of a variation: `build dir /build-check-1, FORGE_JOBS=1`.
pub fn describe(variation: &Variation) -> String {
    let mut parts = Vec::new();
    if let Some(dir) = &variation.build_dir {
        parts.push(format!("build dir {dir}"));
    }
    if let Some(jobs) = variation.jobs {
        parts.push(format!("FORGE_JOBS={jobs}"));
    }
    if parts.is_empty() {
        "no variation".into()
    } else {
        parts.join(", ")
    }
}

/// One rebuild of one node.
#[derive(Clone, Debug, Serialize)]
pub struct Round {
    pub round: usize,
    pub variation: String,
    /// The out hash the rebuild produced, or why it failed.
    pub out: Result<Digest, String>,
    pub log: Option<PathBuf>,
}

/// All rounds of one node, against the out hash on record.
#[derive(Clone, Debug, Serialize)]
pub struct NodeCheck {
    #[serde(skip)]
    pub node: NodeId,
    pub name: String,
    pub drv: Digest,
    pub recorded: Digest,
    pub rounds: Vec<Round>,
}

/// The verdict on one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every round gave the recorded out hash.
    Reproducible,
    /// Some round gave another out hash.
    NotReproducible,
    /// No round differed, but some failed to build: undecided.
    Failed,
}

impl NodeCheck {
    pub fn verdict(&self) -> Verdict {
        if self.differing().next().is_some() {
            Verdict::NotReproducible
        } else if self.rounds.iter().any(|r| r.out.is_err()) {
            Verdict::Failed
        } else {
            Verdict::Reproducible
        }
    }

    /// The out hashes of rounds that differ from the recorded one.
    pub fn differing(&self) -> impl Iterator<Item = &Digest> {
        self.rounds.iter().filter_map(|r| r.out.as_ref().ok()).filter(|o| **o != self.recorded)
    }
}

/// What the caller hears while checks run (from worker threads).
pub enum CheckEvent<'a> {
    RoundStarted { name: &'a str, round: usize, rounds: usize, variation: &'a str },
    RoundDone { check: &'a NodeCheck, round: &'a Round },
}

/// Check `nodes` (each with its recorded out hash and its inputs' out hashes), `opts.jobs` at
/// a time, every round of a node in turn. Errors are only the store's own failures.
#[allow(clippy::too_many_arguments)]
pub fn check_all(
    store: &Store,
    graph: &Graph,
    plan: &Plan,
    opts: &Options,
    nodes: &[(NodeId, Digest, Vec<Digest>)],
    check: &CheckPlan,
    observer: &dyn Observer,
    on_event: &(dyn Fn(CheckEvent) + Sync),
) -> Result<Vec<NodeCheck>, StoreError> {
    let _shared = store.build_lock()?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(opts.jobs.max(1)).build().map_err(|e| StoreError::Io {
        op: "start the --check thread pool for",
        path: store.dir().to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let results: Vec<Result<NodeCheck, StoreError>> = pool.install(|| {
        nodes
            .par_iter()
            .map(|(id, recorded, input_outs)| check_node(store, graph, plan, opts, *id, *recorded, input_outs, check, observer, on_event))
            .collect()
    });
    results.into_iter().collect()
}

#[allow(clippy::too_many_arguments)]
fn check_node(
    store: &Store,
    graph: &Graph,
    plan: &Plan,
    opts: &Options,
    id: NodeId,
    recorded: Digest,
    input_outs: &[Digest],
    check: &CheckPlan,
    observer: &dyn Observer,
    on_event: &(dyn Fn(CheckEvent) + Sync),
) -> Result<NodeCheck, StoreError> {
    let recipe = &graph.nodes[id].recipe;
    let drv_hash = plan.drv_hashes[id];
    let mut result = NodeCheck { node: id, name: recipe.name.clone(), drv: drv_hash, recorded, rounds: Vec::new() };
    for round in 1..=check.rounds {
        let variation = check.variation(round, opts.build_jobs);
        let described = describe(&variation);
        on_event(CheckEvent::RoundStarted { name: &recipe.name, round, rounds: check.rounds, variation: &described });
        let record = store.begin_build(&drv_hash, &recipe.name)?;
        let layers = executor::input_layers(store, graph, plan, id, input_outs);
        let built = executor::run_in_scratch(store, recipe, &plan.drvs[id], layers, opts, &variation, observer, id, &record.log_path)
            // Normalized and hashed once, by registration: a tree equal to the recorded one
            // is dropped (that object is there), a differing one is kept for `forge diff`.
            .and_then(|ran| Ok(store.register_unclaimed(&ran.out_dir, None)?));
        let outcome = match &built {
            Ok(out) => BuildOutcome::Succeeded { out: *out },
            Err(BuildFailure { error, .. }) => BuildOutcome::Failed { reason: format!("--check round {round}: {error}") },
        };
        store.finish_build(&record, &outcome)?;
        if let Ok(out) = &built {
            store.attest(&[Evidence {
                drv_hash,
                name: recipe.name.clone(),
                out_hash: *out,
                source: Source::Check,
                witness: store.host().to_string(),
                detail: described.clone(),
            }])?;
        }
        let done = Round { round, variation: described, out: built.map_err(|f| f.error), log: Some(record.log_path.clone()) };
        result.rounds.push(done);
        on_event(CheckEvent::RoundDone { check: &result, round: result.rounds.last().expect("just pushed") });
    }
    let differing: Vec<Digest> = result.differing().copied().collect();
    if !differing.is_empty() {
        store.set_root(&format!("check:{}", recipe.name), &differing)?;
    }
    Ok(result)
}
