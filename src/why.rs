//! `forge why`: why a package is (or would be) rebuilt. The derivation now is compared field by
//! field with the one behind its last realisation, read back from the store's database (so it
//! works after `forge gc` and in a new session). An input whose derivation changed is
//! explained the same way, recursively, against the derivation the last build actually used:
//! packages changed in their own fields are *root causes*, the rest is the *cascade*.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::derivation::{Builder, Derivation, InputId, Plan};
use crate::executor::Status;
use crate::graph::{Graph, NodeId};
use crate::hash::Digest;
use crate::store::{Store, StoreError};

/// One field that differs between the previous derivation and the current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "field", rename_all = "kebab-case")]
pub enum FieldChange {
    Version { from: String, to: String },
    System { from: String, to: String },
    /// The builder changed kind (script/import) or import options.
    Builder { from: String, to: String },
    Shell { from: Vec<String>, to: Vec<String> },
    /// The build script, as a unified diff.
    Script { diff: String },
    /// An environment variable added (`from` null), removed (`to` null) or changed.
    Env { key: String, from: Option<String>, to: Option<String> },
    /// A source added, removed or with another checksum (by file name).
    Source { filename: String, from: Option<String>, to: Option<String> },
    /// A dependency added or removed, or placed elsewhere in the sandbox.
    Input { name: String, from: Option<String>, to: Option<String> },
}

/// Why one package is or is not rebuilt.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub name: String,
    pub drv: Digest,
    pub verdict: Verdict,
    /// Its own fields that changed (empty for a pure cascade).
    pub own: Vec<FieldChange>,
    /// Inputs whose derivation changed, each explained in turn.
    pub inputs: Vec<Explanation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// This very derivation is realised: nothing to rebuild.
    Realised { out: Digest },
    /// A changed derivation whose inputs are unchanged in content: not rebuilt (early cutoff).
    Cutoff { out: Digest },
    /// Rebuilt because of changes against `previous`, the derivation last realised (for an
    /// input: the one its dependent's last build used).
    Changed { previous: Digest },
    /// No derivation of this package was ever realised here.
    NeverBuilt,
    /// The last realisation's derivation is not in the database (built by an older forge).
    PreviousUnknown { previous: Digest },
    /// This derivation was realised, but its output is no longer in the store (`forge gc`).
    OutputGone { out: Digest },
    /// Only a build input of outputs already present: not realised at all.
    NotNeeded,
}

impl Explanation {
    /// The packages that changed by themselves (or are new), depth first, each once.
    pub fn root_causes(&self) -> Vec<&Explanation> {
        let mut found: Vec<&Explanation> = Vec::new();
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            if e.is_root_cause() && !found.iter().any(|f| f.name == e.name) {
                found.push(e);
            }
            stack.extend(e.inputs.iter().rev());
        }
        found
    }

    /// Changed by itself (or new, or not comparable), not only because an input changed.
    pub fn is_root_cause(&self) -> bool {
        !self.own.is_empty() || matches!(self.verdict, Verdict::NeverBuilt | Verdict::PreviousUnknown { .. })
    }

    pub fn rebuilt(&self) -> bool {
        !matches!(self.verdict, Verdict::Realised { .. } | Verdict::Cutoff { .. } | Verdict::NotNeeded)
    }
}

/// Explain node `id` of the planned graph, given `status` from [`crate::executor::assess`].
/// The plan's derivations must be in the store ([`Store::put_derivations`]).
pub fn explain(store: &Store, graph: &Graph, plan: &Plan, id: NodeId, status: &[Status]) -> Result<Explanation, StoreError> {
    let name = graph.nodes[id].recipe.name.clone();
    let drv = plan.drv_hashes[id];
    let previous = store.latest_realisation_by_name(&name)?;
    let quick = |verdict| Ok(Explanation { name: name.clone(), drv, verdict, own: Vec::new(), inputs: Vec::new() });
    let cutoff = match (&status[id], &previous) {
        (Status::Realised(out), _) => return quick(Verdict::Realised { out: *out }),
        (Status::NotNeeded, _) => return quick(Verdict::NotNeeded),
        (_, None) => return quick(Verdict::NeverBuilt),
        (Status::ToBuild(_), Some(p)) if p.drv_hash == drv => return quick(Verdict::OutputGone { out: p.out_hash }),
        (Status::Cutoff(out), _) => Some(*out),
        (Status::ToBuild(_), Some(_)) => None,
    };
    let previous = previous.expect("matched above");
    let mut explanation = compare(store, &name, previous.drv_hash, drv, &mut HashMap::new())?;
    if let Some(out) = cutoff {
        explanation.verdict = Verdict::Cutoff { out };
    }
    Ok(explanation)
}

/// Why the newest realisation of `name` was built: its derivation against the one realised
/// before it (`None` when only one derivation of `name` was ever realised).
pub fn explain_last(store: &Store, name: &str) -> Result<Option<Explanation>, StoreError> {
    let history = store.realisations_by_name(name)?;
    let Some(newest) = history.first() else { return Ok(None) };
    let Some(before) = history.iter().find(|r| r.drv_hash != newest.drv_hash) else { return Ok(None) };
    compare(store, name, before.drv_hash, newest.drv_hash, &mut HashMap::new()).map(Some)
}

/// Derivation `now` of package `name` against `before`, both read from the store; inputs
/// whose derivation differs are compared recursively, by name.
fn compare(store: &Store, name: &str, before: Digest, now: Digest, memo: &mut HashMap<(Digest, Digest), Explanation>) -> Result<Explanation, StoreError> {
    if let Some(done) = memo.get(&(before, now)) {
        return Ok(done.clone());
    }
    let load = |d: &Digest| -> Result<Option<Derivation>, StoreError> {
        Ok(store.derivation(d)?.and_then(|bytes| Derivation::from_canonical(&bytes).ok()))
    };
    let (Some(old), Some(new)) = (load(&before)?, load(&now)?) else {
        let verdict = Verdict::PreviousUnknown { previous: before };
        return Ok(Explanation { name: name.to_string(), drv: now, verdict, own: Vec::new(), inputs: Vec::new() });
    };
    let by_name = |d: &Derivation| -> BTreeMap<String, Digest> {
        d.inputs.iter().filter_map(|i| match i.id {
            InputId::Drv(h) => Some((i.name.clone(), h)),
            InputId::Out(_) => None,
        }).collect()
    };
    let (old_inputs, new_inputs) = (by_name(&old), by_name(&new));
    let mut inputs = Vec::new();
    for (input, then) in &old_inputs {
        match new_inputs.get(input) {
            Some(current) if current != then => inputs.push(compare(store, input, *then, *current, memo)?),
            _ => {}
        }
    }
    let e = Explanation { name: name.to_string(), drv: now, verdict: Verdict::Changed { previous: before }, own: own_changes(&old, &new), inputs };
    memo.insert((before, now), e.clone());
    Ok(e)
}

/// The fields of `now` that differ from `old`, inputs' identities excepted (those are the
/// cascade, explained separately).
pub fn own_changes(old: &Derivation, now: &Derivation) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    if old.version != now.version {
        changes.push(FieldChange::Version { from: old.version.clone(), to: now.version.clone() });
    }
    if old.system != now.system {
        changes.push(FieldChange::System { from: old.system.clone(), to: now.system.clone() });
    }
    match (&old.builder, &now.builder) {
        (Builder::Script { shell: s1, script: t1 }, Builder::Script { shell: s2, script: t2 }) => {
            if s1 != s2 {
                changes.push(FieldChange::Shell { from: s1.clone(), to: s2.clone() });
            }
            if t1 != t2 {
                let diff = similar::TextDiff::from_lines(t1, t2).unified_diff().context_radius(2).header("before", "now").to_string();
                changes.push(FieldChange::Script { diff });
            }
        }
        (a, b) if a != b => changes.push(FieldChange::Builder { from: builder_kind(a), to: builder_kind(b) }),
        _ => {}
    }
    for (key, from, to) in map_diff(&old.env, &now.env) {
        changes.push(FieldChange::Env { key, from, to });
    }
    let sources = |d: &Derivation| -> BTreeMap<String, String> {
        d.sources.iter().map(|s| (s.filename.clone(), s.checksum.to_string())).collect()
    };
    for (filename, from, to) in map_diff(&sources(old), &sources(now)) {
        changes.push(FieldChange::Source { filename, from, to });
    }
    let placements = |d: &Derivation| -> BTreeMap<String, String> {
        d.inputs.iter().map(|i| (i.name.clone(), i.at.display().to_string())).collect()
    };
    for (name, from, to) in map_diff(&placements(old), &placements(now)) {
        let at = |p: Option<String>| p.map(|p| format!("at {p}"));
        changes.push(FieldChange::Input { name, from: at(from), to: at(to) });
    }
    changes
}

fn builder_kind(b: &Builder) -> String {
    match b {
        Builder::Script { .. } => "script".into(),
        Builder::Import { unpack } => format!("import (unpack = {unpack})"),
    }
}

/// Keys added, removed or changed between two maps, in key order.
fn map_diff(old: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<(String, Option<String>, Option<String>)> {
    let mut keys: Vec<&String> = old.keys().chain(now.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old.get(*k) != now.get(*k))
        .map(|k| (k.clone(), old.get(k).cloned(), now.get(k).cloned()))
        .collect()
}
