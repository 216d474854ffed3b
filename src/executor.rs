//! The scheduler: realises every node of a [`Graph`] on a rayon pool.
//!
//! For each node, in dependency order: look it up by drv hash; else, once its inputs'
//! out hashes are known, by resolved key (early cutoff); else take the derivation's
//! lock (another forge process may be building it), look again, and build it: stage
//! its sources, run the sandbox (or unpack an `[import]`), register the output.
//! A failure stops only its dependents; without `keep_going` nothing new starts.
//!
//! The executor never prints: it reports [`Event`]s to an [`Observer`] (the CLI).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::derivation::{Builder, Derivation, Plan};
use crate::graph::{Graph, NodeId};
use crate::hash::Digest;
use crate::recipe::{Recipe, SourceKind};
use crate::sandbox::{self, Exit, Layer, SandboxSpec};
use crate::store::{BuildOutcome, Origin, Realisation, Registration, Store, StoredDerivation};
use crate::{import, source};

/// How to run a build.
#[derive(Clone, Debug)]
pub struct Options {
    /// Builds running at once (`-j`).
    pub jobs: usize,
    /// Keep starting independent builds after a failure.
    pub keep_going: bool,
    /// The forge binary, re-executed as the sandbox helper.
    pub helper_exe: PathBuf,
    /// Parallelism granted to each build (`$FORGE_JOBS`).
    pub build_jobs: usize,
    /// Nodes fetched from a binary cache just before this run: reported as substituted.
    pub substituted: std::collections::HashSet<NodeId>,
    /// Nodes `--check` rebuilds after this run: their inputs are needed even when their own
    /// outputs are in the store.
    pub to_check: std::collections::HashSet<NodeId>,
    /// Expected build time of each node in milliseconds (from recorded runs). When given,
    /// ready nodes start longest-remaining-path first (critical path first); when empty, in
    /// topological order.
    pub expected_ms: Vec<u64>,
    /// How long a build whose recipe names no `max-silent-time` may print nothing
    /// (`forge build --max-silent-time`); `None`: silence never ends such a build.
    pub max_silent: Option<Duration>,
    /// Keep a failed build's `/build` and `$FORGE_OUT` under `STORE/failed/` (`--keep-failed`).
    pub keep_failed: bool,
}

impl Options {
    /// How a node found in the store under its drv hash was realised in this run.
    fn found_how(&self, id: NodeId) -> Realised {
        if self.substituted.contains(&id) {
            Realised::Substituted
        } else {
            Realised::Cached
        }
    }
}

/// What a `--check` round changes that must not matter (docs/reproducibility.md); the
/// default, nothing, is an ordinary build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Variation {
    /// The working directory's path instead of `/build` (which then links to it).
    pub build_dir: Option<String>,
    /// `$FORGE_JOBS` instead of [`Options::build_jobs`].
    pub jobs: Option<usize>,
}

/// How a node was realised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Realised {
    /// Built now, in the sandbox (or unpacked, for an `[import]`).
    Built,
    /// Already in the store under this drv hash.
    Cached,
    /// Fetched from a binary cache in this run.
    Substituted,
    /// Already in the store under this resolved key: its inputs' contents did not change
    /// although some input was rebuilt (early cutoff).
    Cutoff,
}

impl Realised {
    pub fn as_str(self) -> &'static str {
        match self {
            Realised::Built => "built",
            Realised::Cached => "cached",
            Realised::Substituted => "substituted",
            Realised::Cutoff => "cached",
        }
    }
}

/// The result of one node.
#[derive(Clone, Debug)]
pub enum NodeResult {
    /// `peak_memory`: bytes, of the largest process of a build run now (when known).
    Done { out: Digest, how: Realised, duration: Duration, peak_memory: Option<u64> },
    Failed { error: String, log: Option<PathBuf>, category: Category },
    /// Not attempted: a dependency failed (named), or the run stopped after a failure.
    Skipped { reason: String },
    /// Not realised because nothing in this run needs it: a build-only input of outputs
    /// already in the store (see [`Graph::needed`]).
    NotNeeded,
}

/// What kind of failure ended a node (docs/observability.md, "Failures").
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// The build script failed: a non-zero exit, a signal, its timeout.
    Build,
    /// A dependency failed, so this was not attempted (see [`NodeResult::Skipped`]).
    Dependency,
    /// The machine or forge could not do its part: sandbox setup, disk space, a source that
    /// cannot be fetched, the store.
    System,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Build => "build failure",
            Category::Dependency => "dependency failure",
            Category::System => "system failure",
        }
    }
}

/// The exit status a build script uses to say "this failure is transient, try again"
/// (EX_TEMPFAIL of sysexits.h); retried when the recipe allows (`[requirements] retries`).
pub const TRANSIENT_EXIT: i32 = 75;

/// Progress reported while building; `node` indexes the graph.
#[derive(Debug)]
pub enum Event<'a> {
    /// Before anything runs: the nodes that will have to be built (needed, not in the store
    /// under their drv hash; some may still be found by resolved key).
    Planned { to_build: &'a [NodeId] },
    /// The node's build starts (it was not found in the store) on pool thread `worker`.
    Started { node: NodeId, name: &'a str, drv: &'a Digest, worker: usize },
    /// Another process holds this derivation's lock; waiting for it.
    Waiting { node: NodeId, name: &'a str },
    /// A source download is in progress.
    Fetching { node: NodeId, name: &'a str, file: &'a str, bytes: u64, total: Option<u64> },
    Finished { node: NodeId, name: &'a str, drv: &'a Digest, result: &'a NodeResult },
}

/// Receives events from worker threads; implementations must be cheap and thread-safe.
pub trait Observer: Sync {
    fn event(&self, event: Event<'_>);
}

/// The outcome of a whole run, indexed by node.
#[derive(Debug)]
pub struct Report {
    pub results: Vec<NodeResult>,
}

impl Report {
    pub fn count(&self, f: impl Fn(&NodeResult) -> bool) -> usize {
        self.results.iter().filter(|r| f(r)).count()
    }
    pub fn failed(&self) -> usize {
        self.count(|r| matches!(r, NodeResult::Failed { .. }))
    }
    pub fn out(&self, node: NodeId) -> Option<Digest> {
        match &self.results[node] {
            NodeResult::Done { out, .. } => Some(*out),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot start the build pool: {0}")]
    Pool(String),
}

/// What the store already knows about a node, without building anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Realised under its drv hash.
    Realised(Digest),
    /// Realised under its resolved key (its inputs are realised and unchanged in content).
    Cutoff(Digest),
    /// Must be built; the reason says why.
    ToBuild(String),
    /// Only a build input of outputs that can be had without building: not realised.
    NotNeeded,
}

/// Decide each node's status from the store alone (for `--dry-run` and `forge show`);
/// `substitutable` nodes count as available when deciding what is needed.
pub fn assess(
    store: &Store,
    graph: &Graph,
    plan: &Plan,
    substitutable: &std::collections::HashSet<NodeId>,
) -> Result<Vec<Status>, ExecError> {
    let found = realised_outs(store, plan)?;
    let mut available: Vec<bool> = found.iter().map(Option::is_some).collect();
    for &n in substitutable {
        available[n] = true;
    }
    let needed = graph.needed(&available);
    let mut status: Vec<Option<Status>> = vec![None; graph.nodes.len()];
    for &n in graph.topo_order() {
        let s = if !needed[n] {
            Status::NotNeeded
        } else if let Some(out) = found[n] {
            Status::Realised(out)
        } else {
            let inputs = &plan.closures[n];
            let outs: Option<Vec<Digest>> = inputs
                .iter()
                .map(|&i| match &status[i] {
                    Some(Status::Realised(o)) | Some(Status::Cutoff(o)) => Some(*o),
                    _ => None,
                })
                .collect();
            match outs {
                Some(outs) => match resolved_key(&plan.drvs[n], &outs)
                    .and_then(|k| store.realisation_by_resolved(&k).ok().flatten())
                {
                    Some(r) => Status::Cutoff(r.out_hash),
                    None => Status::ToBuild(why_build(store, &graph.nodes[n].recipe)?),
                },
                None => {
                    let first = inputs
                        .iter()
                        .find(|&&i| matches!(status[i], Some(Status::ToBuild(_))))
                        .map(|&i| graph.nodes[i].recipe.name.as_str())
                        .unwrap_or("an input");
                    Status::ToBuild(format!(
                        "input {first} will be built (if its output is unchanged, this is skipped)"
                    ))
                }
            }
        };
        status[n] = Some(s);
    }
    Ok(status.into_iter().map(|s| s.unwrap_or(Status::ToBuild(String::new()))).collect())
}

/// Store every derivation of the plan (new ones only), so that `forge why` can later compare
/// with whatever this run realised, however it was realised.
pub fn record_plan(store: &Store, plan: &Plan) -> Result<(), ExecError> {
    let drvs: Vec<StoredDerivation> = plan
        .drvs
        .iter()
        .zip(&plan.drv_hashes)
        .map(|(d, h)| StoredDerivation { drv_hash: *h, name: &d.name, version: &d.version, canonical: d.canonical_bytes() })
        .collect();
    Ok(store.put_derivations(&drvs)?)
}

/// Which nodes the store has under their drv hash.
pub fn realised_by_drv(store: &Store, plan: &Plan) -> Result<Vec<bool>, ExecError> {
    Ok(realised_outs(store, plan)?.iter().map(Option::is_some).collect())
}

/// The out hash of each node the store has under its drv hash.
fn realised_outs(store: &Store, plan: &Plan) -> Result<Vec<Option<Digest>>, ExecError> {
    plan.drv_hashes.iter().map(|drv| Ok(store.realisation_by_drv(drv)?.map(|r| r.out_hash))).collect()
}

fn why_build(store: &Store, recipe: &Recipe) -> Result<String, ExecError> {
    Ok(match store.latest_realisation_by_name(&recipe.name)? {
        Some(_) => "its recipe or an input's content changed since it was last built".to_string(),
        None => "never built in this store".to_string(),
    })
}

fn resolved_key(drv: &Derivation, outs: &[Digest]) -> Option<Digest> {
    drv.resolve(outs).ok().map(|d| d.hash())
}

/// Build every node of `graph`. Returns per-node results; a failed build is a result,
/// not an `Err` (errors are reserved for the store itself failing).
pub fn build(
    store: &Store,
    graph: &Graph,
    plan: &Plan,
    opts: &Options,
    observer: &dyn Observer,
) -> Result<Report, ExecError> {
    let _shared = store.build_lock()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs.max(1))
        .thread_name(|i| format!("forge-build-{i}"))
        .build()
        .map_err(|e| ExecError::Pool(e.to_string()))?;

    let n = graph.nodes.len();
    record_plan(store, plan)?;
    // Outputs in the store at the start: those nodes are done without a worker or a lookup.
    let mut found = realised_outs(store, plan)?;
    for &id in &opts.to_check {
        found[id] = None;
    }
    let available: Vec<bool> = found.iter().map(Option::is_some).collect();
    let needed = graph.needed(&available);
    let mut results: Vec<Option<NodeResult>> = vec![None; n];
    for id in (0..n).filter(|&id| !needed[id]) {
        let result = NodeResult::NotNeeded;
        observer.event(Event::Finished { node: id, name: &graph.nodes[id].recipe.name, drv: &plan.drv_hashes[id], result: &result });
        results[id] = Some(result);
    }
    // Edges between needed nodes only: a needed node with an unneeded dependency is in the
    // store already and waits for nothing but its runtime dependencies.
    let mut waiting_on: Vec<usize> = vec![0; n];
    let mut dependents: Vec<Vec<NodeId>> = vec![Vec::new(); n];
    for (id, node) in graph.nodes.iter().enumerate().filter(|(id, _)| needed[*id]) {
        let mut deps: Vec<NodeId> = node.deps().filter(|&d| needed[d]).collect();
        deps.sort_unstable();
        deps.dedup();
        waiting_on[id] = deps.len();
        for d in deps {
            dependents[d].push(id);
        }
    }
    let to_build: Vec<NodeId> = (0..n).filter(|&id| needed[id] && !available[id]).collect();
    observer.event(Event::Planned { to_build: &to_build });
    let mut ready = ReadyQueue::new(graph, priorities(graph, &needed, &available, &dependents, &opts.expected_ms));
    for id in (0..n).filter(|&i| needed[i] && waiting_on[i] == 0) {
        ready.push(id);
    }

    let memory_budget = total_memory();
    let mut memory_in_use: u64 = 0;
    let mut running = 0usize;
    let mut stopping = false;
    let (tx, rx) = mpsc::channel::<(NodeId, NodeResult)>();

    pool.in_place_scope(|scope| {
        loop {
            // Start whatever is ready and fits.
            let mut deferred = Vec::new();
            while !stopping && running < opts.jobs.max(1) {
                let Some(id) = ready.pop() else { break };
                if let Some(out) = found[id] {
                    running += 1;
                    let _ = tx.send((id, NodeResult::Done { out, how: opts.found_how(id), duration: Duration::ZERO, peak_memory: None }));
                    continue;
                }
                let need = graph.nodes[id].recipe.requirements.memory.unwrap_or(0);
                if running > 0 && memory_in_use + need > memory_budget {
                    deferred.push(id);
                    continue;
                }
                memory_in_use += need;
                running += 1;
                let tx = tx.clone();
                // A node starts only when its deps are done, and each of those waited for its
                // own, so the whole closure has out hashes by now. (A node in the store at the
                // start, whose build inputs may not be needed, was finished above.)
                let outs: Option<Vec<Digest>> = plan.closures[id].iter().map(|&i| done_out(&results[i])).collect();
                scope.spawn(move |_| {
                    let result = match outs {
                        Some(outs) => realise(store, graph, plan, opts, observer, id, &outs),
                        None => NodeResult::Failed {
                            error: "internal error: started before its inputs were realised".into(),
                            log: None,
                            category: Category::System,
                        },
                    };
                    let _ = tx.send((id, result));
                });
            }
            for id in deferred {
                ready.push(id);
            }
            if running == 0 {
                break;
            }
            let Ok((id, result)) = rx.recv() else { break };
            running -= 1;
            if found[id].is_none() {
                memory_in_use -= graph.nodes[id].recipe.requirements.memory.unwrap_or(0);
            }
            let name = graph.nodes[id].recipe.name.as_str();
            observer.event(Event::Finished { node: id, name, drv: &plan.drv_hashes[id], result: &result });
            match &result {
                NodeResult::Done { .. } => {
                    for &d in &dependents[id] {
                        waiting_on[d] -= 1;
                        if waiting_on[d] == 0 && results[d].is_none() {
                            ready.push(d);
                        }
                    }
                }
                _ => {
                    if !opts.keep_going {
                        stopping = true;
                    }
                    skip_dependents(graph, plan, id, &dependents, &mut results, observer);
                }
            }
            results[id] = Some(result);
        }
    });

    // Without --keep-going, what never started is reported too: every node gets an event.
    let results = results
        .into_iter()
        .enumerate()
        .map(|(id, r)| {
            r.unwrap_or_else(|| {
                let result = NodeResult::Skipped { reason: "the run stopped after a failure (use --keep-going)".into() };
                let name = graph.nodes[id].recipe.name.as_str();
                observer.event(Event::Finished { node: id, name, drv: &plan.drv_hashes[id], result: &result });
                result
            })
        })
        .collect();
    Ok(Report { results })
}

/// Each node's priority: the expected time from its start to the end of the longest chain of
/// needed dependents after it (its "bottom level"); nodes already in the store cost nothing.
/// All zero without expected times.
fn priorities(graph: &Graph, needed: &[bool], available: &[bool], dependents: &[Vec<NodeId>], expected_ms: &[u64]) -> Vec<u64> {
    let mut level = vec![0u64; graph.nodes.len()];
    if expected_ms.is_empty() {
        return level;
    }
    for &id in graph.topo_order().iter().rev().filter(|&&id| needed[id]) {
        let own = if available[id] { 0 } else { expected_ms.get(id).copied().unwrap_or(0) };
        level[id] = own + dependents[id].iter().map(|&d| level[d]).max().unwrap_or(0);
    }
    level
}

/// Ready nodes, highest priority first, then in topological order (so that output is stable
/// and, without priorities, roughly breadth-first).
struct ReadyQueue {
    heap: std::collections::BinaryHeap<(u64, std::cmp::Reverse<usize>, NodeId)>,
    priority: Vec<u64>,
    position: Vec<usize>,
}

impl ReadyQueue {
    fn new(graph: &Graph, priority: Vec<u64>) -> ReadyQueue {
        let mut position = vec![0; graph.nodes.len()];
        for (i, &id) in graph.topo_order().iter().enumerate() {
            position[id] = i;
        }
        ReadyQueue { heap: Default::default(), priority, position }
    }
    fn push(&mut self, id: NodeId) {
        self.heap.push((self.priority[id], std::cmp::Reverse(self.position[id]), id));
    }
    fn pop(&mut self) -> Option<NodeId> {
        self.heap.pop().map(|(_, _, id)| id)
    }
}

fn done_out(result: &Option<NodeResult>) -> Option<Digest> {
    match result {
        Some(NodeResult::Done { out, .. }) => Some(*out),
        _ => None,
    }
}

/// Mark every transitive dependent of a failed node as skipped, naming the failure.
fn skip_dependents(
    graph: &Graph,
    plan: &Plan,
    failed: NodeId,
    dependents: &[Vec<NodeId>],
    results: &mut [Option<NodeResult>],
    observer: &dyn Observer,
) {
    let failed_name = &graph.nodes[failed].recipe.name;
    let mut stack: Vec<NodeId> = dependents[failed].clone();
    while let Some(d) = stack.pop() {
        if results[d].is_some() {
            continue;
        }
        let result = NodeResult::Skipped { reason: format!("dependency {failed_name} failed") };
        let name = graph.nodes[d].recipe.name.as_str();
        observer.event(Event::Finished { node: d, name, drv: &plan.drv_hashes[d], result: &result });
        results[d] = Some(result);
        stack.extend(dependents[d].iter().copied());
    }
}

/// Look a node up, and build it on a miss. `input_outs` are the out hashes of its closure.
fn realise(
    store: &Store,
    graph: &Graph,
    plan: &Plan,
    opts: &Options,
    observer: &dyn Observer,
    id: NodeId,
    input_outs: &[Digest],
) -> NodeResult {
    let started = Instant::now();
    let done = |out, how| NodeResult::Done { out, how, duration: started.elapsed(), peak_memory: None };
    let failed = |error: String| NodeResult::Failed { error, log: None, category: Category::System };
    let recipe = &graph.nodes[id].recipe;
    let drv = &plan.drvs[id];
    let drv_hash = plan.drv_hashes[id];
    let resolved = match drv.resolve(input_outs) {
        Ok(r) => r.hash(),
        Err(e) => return failed(e.to_string()),
    };

    let lookup = || -> Result<Option<(Digest, Realised)>, crate::store::StoreError> {
        if let Some(r) = store.realisation_by_drv(&drv_hash)? {
            return Ok(Some((r.out_hash, opts.found_how(id))));
        }
        if let Some(r) = store.realisation_by_resolved(&resolved)? {
            // Same inputs by content: record drv -> out so the next lookup is direct.
            store.add_realisation(&Realisation {
                drv_hash,
                resolved_key: resolved,
                out_hash: r.out_hash,
                name: recipe.name.clone(),
                origin: Origin::Cutoff,
                created_at: unix_now(),
                duration_ms: 0,
            })?;
            return Ok(Some((r.out_hash, Realised::Cutoff)));
        }
        Ok(None)
    };
    match lookup() {
        Ok(Some((out, how))) => return done(out, how),
        Ok(None) => {}
        Err(e) => return failed(e.to_string()),
    }

    // Miss: take the derivation's lock so that concurrent forge processes build it once.
    let _lock = match store.try_lock_derivation(&drv_hash) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            observer.event(Event::Waiting { node: id, name: &recipe.name });
            match store.lock_derivation(&drv_hash) {
                Ok(lock) => lock,
                Err(e) => return failed(e.to_string()),
            }
        }
        Err(e) => return failed(e.to_string()),
    };
    match lookup() {
        Ok(Some((out, how))) => return done(out, how),
        Ok(None) => {}
        Err(e) => return failed(e.to_string()),
    }

    let worker = rayon::current_thread_index().unwrap_or(0);
    observer.event(Event::Started { node: id, name: &recipe.name, drv: &drv_hash, worker });
    let layers = input_layers(store, graph, plan, id, input_outs);
    match build_one(store, recipe, drv, &drv_hash, &resolved, layers, opts, observer, id) {
        Ok((out, peak_memory)) => {
            // Which input outputs this output was built against (the divergence ledger's
            // "who depends on which output of a non-deterministic package").
            let inputs: Vec<(String, Digest, Digest)> = plan.closures[id]
                .iter()
                .zip(input_outs)
                .map(|(&i, out)| (graph.nodes[i].recipe.name.clone(), plan.drv_hashes[i], *out))
                .collect();
            match store.record_built_against(&drv_hash, &out, &inputs) {
                Ok(()) => NodeResult::Done { out, how: Realised::Built, duration: started.elapsed(), peak_memory },
                Err(e) => failed(e.to_string()),
            }
        }
        Err(BuildFailure { error, log, category, .. }) => NodeResult::Failed { error, log, category },
    }
}

/// The sandbox layers of node `id`: `drv.inputs[k]` is the input of node `closures[id][k]`,
/// with its placement, and its output is `input_outs[k]`.
pub(crate) fn input_layers(store: &Store, graph: &Graph, plan: &Plan, id: NodeId, input_outs: &[Digest]) -> Vec<Layer> {
    plan.closures[id]
        .iter()
        .zip(&plan.drvs[id].inputs)
        .zip(input_outs)
        .map(|((&i, input), out)| Layer {
            name: graph.nodes[i].recipe.name.clone(),
            path: store.object_path(out),
            at: input.at.clone(),
        })
        .collect()
}

pub(crate) struct BuildFailure {
    pub error: String,
    pub log: Option<PathBuf>,
    pub category: Category,
    /// The script exited with [`TRANSIENT_EXIT`].
    pub transient: bool,
}

impl BuildFailure {
    /// The build script itself failed.
    fn script(error: String, transient: bool) -> BuildFailure {
        BuildFailure { error, log: None, category: Category::Build, transient }
    }
}

impl<E: std::fmt::Display> From<E> for BuildFailure {
    fn from(e: E) -> Self {
        // Anything but the script's own failure: the store, the sandbox, the disk, a download.
        BuildFailure { error: e.to_string(), log: None, category: Category::System, transient: false }
    }
}

/// Build one derivation whose lock we hold; record the attempt and its log in the store.
#[allow(clippy::too_many_arguments)]
fn build_one(
    store: &Store,
    recipe: &Recipe,
    drv: &Derivation,
    drv_hash: &Digest,
    resolved: &Digest,
    layers: Vec<Layer>,
    opts: &Options,
    observer: &dyn Observer,
    id: NodeId,
) -> Result<(Digest, Option<u64>), BuildFailure> {
    store.put_derivation(drv_hash, &drv.name, &drv.version, &drv.canonical_bytes())?;
    check_disk(store, recipe)?;
    let record = store.begin_build(drv_hash, &recipe.name)?;
    let log = record.log_path.clone();
    let started = Instant::now();
    let mut peak_memory = None;
    let mut attempt = 0;
    let ran = loop {
        let result = run_in_scratch(store, recipe, drv, layers.clone(), opts, &Variation::default(), observer, id, &log);
        match result {
            Err(f) if f.transient && attempt < recipe.requirements.retries => {
                // Back off exponentially: delay, 2 x delay, 4 x delay...
                let delay = recipe.requirements.retry_delay.saturating_mul(1 << attempt.min(16));
                attempt += 1;
                let note = format!(
                    "\nforge: {} (transient: exit {TRANSIENT_EXIT}); retry {attempt} of {} in {delay}s\n",
                    f.error, recipe.requirements.retries
                );
                append_to_log(&log, &note);
                std::thread::sleep(Duration::from_secs(delay));
            }
            other => break other,
        }
    };
    let result = ran.and_then(|ran| {
        peak_memory = ran.peak_memory;
        let registration = Registration {
            drv_hash: *drv_hash,
            resolved_key: *resolved,
            name: recipe.name.clone(),
            origin: if matches!(drv.builder, Builder::Import { .. }) { Origin::Imported } else { Origin::Built },
            duration_ms: started.elapsed().as_millis() as u64,
        };
        Ok(store.register_output(&ran.out_dir, &registration)?)
    });
    let outcome = match &result {
        Ok(out) => BuildOutcome::Succeeded { out: *out },
        Err(f) => BuildOutcome::Failed { reason: f.error.clone() },
    };
    store.finish_build(&record, &outcome)?;
    result.map(|out| (out, peak_memory)).map_err(|f| BuildFailure { log: Some(log), ..f })
}

/// What [`run_in_scratch`] leaves: the scratch dir (removed on drop) and the output in it.
pub(crate) struct Ran {
    /// Held so that the scratch dir (and the output in it) lives as long as this.
    pub _scratch: crate::store::ScratchDir,
    pub out_dir: PathBuf,
    /// Peak memory of the build's largest process, in bytes (sandboxed builds only).
    pub peak_memory: Option<u64>,
}

/// Stage sources and run the builder in a scratch dir.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_in_scratch(
    store: &Store,
    recipe: &Recipe,
    drv: &Derivation,
    layers: Vec<Layer>,
    opts: &Options,
    variation: &Variation,
    observer: &dyn Observer,
    id: NodeId,
    log: &Path,
) -> Result<Ran, BuildFailure> {
    let scratch = store.scratch_dir(&recipe.name)?;
    let sources_dir = scratch.path().join("sources");
    std::fs::create_dir(&sources_dir)?;
    let staged = stage_sources(store, recipe, drv, &sources_dir, scratch.path(), observer, id)?;
    match &drv.builder {
        Builder::Import { unpack } => {
            let out = scratch.path().join("out");
            std::fs::create_dir(&out)?;
            let stats = import::import(&staged, *unpack, &out)?;
            std::fs::write(log, format!("imported {} source(s): {:?}\n", staged.len(), stats))?;
            Ok(Ran { _scratch: scratch, out_dir: out, peak_memory: None })
        }
        Builder::Script { shell, script } => {
            let mut env: BTreeMap<String, String> = drv.env.clone();
            env.insert("FORGE_JOBS".into(), variation.jobs.unwrap_or(opts.build_jobs).max(1).to_string());
            let mut argv = shell.clone();
            argv.push(script.clone());
            let sandbox_dir = scratch.path().join("sandbox");
            std::fs::create_dir(&sandbox_dir)?;
            let spec = SandboxSpec {
                helper_exe: opts.helper_exe.clone(),
                layers,
                sources: sources_dir,
                scratch: sandbox_dir.clone(),
                env,
                argv,
                timeout: recipe.requirements.timeout.map(Duration::from_secs),
                log: log.to_path_buf(),
                build_dir: variation.build_dir.clone(),
                limits: limits_of(&recipe.requirements, opts.max_silent),
                attach: None,
            };
            let outcome = sandbox::run(&spec)?;
            if outcome.exit != Exit::Success {
                if let Some(full) = DiskFull::diagnose(&outcome.log, scratch.path()) {
                    // Removing the failed build's files gives the space back: then the log
                    // can get what it missed, and the reason.
                    drop(scratch);
                    full.complete_log(log, &outcome.log);
                    return Err(BuildFailure { error: format!("{}: {full}", recipe.name), log: None, category: Category::System, transient: false });
                }
            }
            if outcome.exit != Exit::Success && opts.keep_failed && variation == &Variation::default() {
                let kept = store.keep_failed(&recipe.name, &drv.hash(), &sandbox_dir.join("build"), &outcome.out_dir)?;
                append_to_log(log, &format!("\nforge: kept this build's /build and $FORGE_OUT in {} (--keep-failed)\n", kept.display()));
                let failure = failure_of(recipe, outcome.exit);
                return Err(BuildFailure { error: format!("{}; its /build and $FORGE_OUT are kept in {}", failure.error, kept.display()), ..failure });
            }
            match outcome.exit {
                Exit::Success => Ok(Ran { _scratch: scratch, out_dir: outcome.out_dir, peak_memory: outcome.peak_memory }),
                other => Err(failure_of(recipe, other)),
            }
        }
    }
}

/// The failure a build's non-successful exit is.
fn failure_of(recipe: &Recipe, exit: Exit) -> BuildFailure {
    match exit {
        Exit::Success => unreachable!("a successful exit is not a failure"),
        Exit::Failed(code) => BuildFailure::script(format!("build script exited with status {code}"), code == TRANSIENT_EXIT),
        Exit::Signaled(sig) => BuildFailure::script(format!("build script killed by signal {sig}"), false),
        Exit::TimedOut => BuildFailure::script(
            format!("build exceeded its timeout of {}s ([requirements] timeout)", recipe.requirements.timeout.unwrap_or(0)),
            false,
        ),
        Exit::LimitExceeded(breach) => BuildFailure { error: format!("{}: {breach}", recipe.name), log: None, category: Category::System, transient: false },
    }
}

/// The sandbox limits of a build: the recipe's `[requirements]`, else the run's
/// `--max-silent-time` (silence only), else forge's defaults (docs/sandbox.md, "Limits").
pub(crate) fn limits_of(requirements: &crate::recipe::Requirements, max_silent: Option<Duration>) -> sandbox::Limits {
    let defaults = sandbox::Limits::default();
    sandbox::Limits {
        memory: requirements.memory.unwrap_or(defaults.memory),
        processes: requirements.processes.unwrap_or(defaults.processes),
        disk: requirements.disk.unwrap_or(defaults.disk),
        tmp: requirements.tmp.unwrap_or(defaults.tmp),
        max_silent: match requirements.max_silent_time {
            Some(0) => None,
            Some(seconds) => Some(Duration::from_secs(seconds)),
            None => max_silent,
        },
    }
}

/// A build that failed because the file system holding the store filled up.
struct DiskFull {
    /// The error of the log writer, when the log itself could not be written.
    errno: Option<i32>,
    mount_point: PathBuf,
    fs_type: String,
    free_bytes: u64,
}

/// Below this much free space after a failed build, the build is taken to have filled the
/// file system (what is left is the reserve a build cannot reach, or nothing).
const NEARLY_FULL_BYTES: u64 = 4 << 20;

impl DiskFull {
    fn diagnose(log: &sandbox::Pumped, scratch: &Path) -> Option<DiskFull> {
        let errno = log.write_error.as_ref().and_then(|(e, _)| e.raw_os_error());
        let log_full = matches!(errno, Some(libc::ENOSPC | libc::EDQUOT));
        let stat = nix::sys::statvfs::statvfs(scratch).ok()?;
        let free_bytes = (stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64);
        if !log_full && free_bytes >= NEARLY_FULL_BYTES {
            return None;
        }
        let (mount_point, fs_type) = mount_of(scratch).unwrap_or_else(|| (PathBuf::from("?"), "?".into()));
        Some(DiskFull { errno: errno.filter(|_| log_full), mount_point, fs_type, free_bytes })
    }

    /// Append what the log missed (its last bytes, kept in memory) and the diagnosis.
    fn complete_log(&self, log: &Path, pumped: &sandbox::Pumped) {
        let mut text = String::new();
        if let Some((_, written)) = &pumped.write_error {
            text.push_str(&format!("\n[forge: writing this log failed after {written} bytes; the last {} bytes of the output follow]\n", pumped.tail.len()));
            text.push_str(&String::from_utf8_lossy(&pumped.tail));
        }
        text.push_str(&format!("\n[forge: {self}]\n"));
        append_to_log(log, &text);
    }
}

impl std::fmt::Display for DiskFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let errno = self.errno.map_or("ENOSPC".to_string(), |e| format!("{}", nix::errno::Errno::from_raw(e)));
        write!(
            f,
            "No space left on device ({errno}): the {} file system at {} had {} bytes free when the build failed; free space there or move the store (`[requirements] disk` declares what a package needs)",
            self.fs_type,
            self.mount_point.display(),
            self.free_bytes
        )
    }
}

/// The mount point and file system type holding `path` (the longest matching mount in
/// /proc/self/mountinfo).
fn mount_of(path: &Path) -> Option<(PathBuf, String)> {
    let path = std::fs::canonicalize(path).ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = PathBuf::from(fields.get(4)?.replace("\\040", " "));
            let dash = fields.iter().position(|f| *f == "-")?;
            let fs_type = fields.get(dash + 1)?.to_string();
            path.starts_with(&mount_point).then_some((mount_point, fs_type))
        })
        .max_by_key(|(mount_point, _)| mount_point.as_os_str().len())
}

/// Make every source present and verified, and place it in `dest` under its filename.
pub(crate) fn stage_sources(
    store: &Store,
    recipe: &Recipe,
    drv: &Derivation,
    dest: &Path,
    scratch: &Path,
    observer: &dyn Observer,
    id: NodeId,
) -> Result<Vec<(String, PathBuf)>, BuildFailure> {
    let mut staged = Vec::new();
    for (src, planned) in recipe.sources.iter().zip(&drv.sources) {
        let target = dest.join(&src.filename);
        match &src.kind {
            SourceKind::File { path } => {
                let crate::hash::Checksum::Blake3(digest) = planned.checksum else {
                    return Err(format!("{}: planned checksum of a file source is not BLAKE3", src.at).into());
                };
                source::stage_local(path, &target, &digest)?;
            }
            SourceKind::Url { .. } | SourceKind::Deb { .. } => {
                let checksum = &planned.checksum;
                if !store.has_source(checksum) {
                    let download = scratch.join(format!("fetch-{}", src.filename));
                    let mut report = |bytes: u64, total: Option<u64>| {
                        observer.event(Event::Fetching { node: id, name: &recipe.name, file: &src.filename, bytes, total });
                    };
                    source::fetch(src, &download, &mut report)
                        .map_err(|e| format!("{} ({}): {e}", recipe.name, src.at))?;
                    store.add_source(&download, checksum)?;
                }
                link_or_copy(&store.source_path(checksum), &target)?;
            }
        }
        staged.push((src.filename.clone(), target));
    }
    Ok(staged)
}

fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::hard_link(from, to).or_else(|_| std::fs::copy(from, to).map(|_| ()))
}

/// Refuse to start a build whose `[requirements] disk` exceeds the store's free space.
fn check_disk(store: &Store, recipe: &Recipe) -> Result<(), BuildFailure> {
    let Some(need) = recipe.requirements.disk else { return Ok(()) };
    let stat = nix::sys::statvfs::statvfs(store.dir())?;
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    if free < need {
        return Err(format!(
            "{} needs {} MiB of free disk ([requirements] disk) but the store's file system has {} MiB",
            recipe.name,
            need >> 20,
            free >> 20
        )
        .into());
    }
    Ok(())
}

fn append_to_log(log: &Path, text: &str) {
    use std::io::Write;
    if let Ok(mut file) = std::fs::OpenOptions::new().append(true).create(true).open(log) {
        let _ = file.write_all(text.as_bytes());
    }
}

/// Physical memory, the budget for `[requirements] memory` of concurrent builds.
fn total_memory() -> u64 {
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if pages > 0 && page > 0 {
        pages as u64 * page as u64
    } else {
        u64::MAX
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::tests::{graph, recipe};

    #[test]
    fn priorities_are_the_longest_expected_chain_after_each_node() {
        // quick-1, quick-2 (1 s each, independent); chain-1 (3 s) <- chain-2 (3 s) <- top (1 s).
        let g = graph(vec![
            recipe("quick-1", &[], &[]),
            recipe("quick-2", &[], &[]),
            recipe("chain-1", &[], &[]),
            recipe("chain-2", &["chain-1"], &[]),
            recipe("top", &["chain-2"], &[]),
        ])
        .unwrap();
        let id = |n: &str| g.node_by_name(n).unwrap();
        let n = g.nodes.len();
        let mut dependents = vec![Vec::new(); n];
        for (i, node) in g.nodes.iter().enumerate() {
            for d in node.deps() {
                dependents[d].push(i);
            }
        }
        let mut expected = vec![1000; n];
        expected[id("chain-1")] = 3000;
        expected[id("chain-2")] = 3000;
        let needed = vec![true; n];
        let mut available = vec![false; n];
        let p = priorities(&g, &needed, &available, &dependents, &expected);
        assert_eq!((p[id("chain-1")], p[id("chain-2")], p[id("top")], p[id("quick-1")]), (7000, 4000, 1000, 1000));
        // The chain goes first, then ties fall back to topological order (by name).
        let mut queue = ReadyQueue::new(&g, p);
        for name in ["quick-1", "quick-2", "chain-1"] {
            queue.push(id(name));
        }
        let order: Vec<NodeId> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(order, [id("chain-1"), id("quick-1"), id("quick-2")]);
        // An output already in the store costs nothing; without expected times, all are equal.
        available[id("chain-2")] = true;
        assert_eq!(priorities(&g, &needed, &available, &dependents, &expected)[id("chain-1")], 4000);
        assert!(priorities(&g, &needed, &available, &dependents, &[]).iter().all(|&p| p == 0));
    }
}
