//! `forge shell NAME`: an interactive shell (or one command) in a sandbox exactly like
//! NAME's build: its inputs as `/` (each at its placement), its environment, its sources at
//! `$FORGE_SOURCES`, an empty `/build` and `$FORGE_OUT`; or, with `--failed`, the kept
//! `/build` and `$FORGE_OUT` of its last failed build (`forge build --keep-failed`), as
//! `bst shell --build` and `nix develop` do. Nothing it does is registered in the store
//! (docs/cli.md, "forge shell").

use std::path::PathBuf;

use crate::derivation::{Builder, Plan};
use crate::executor::{self, Event, Observer};
use crate::graph::{Graph, NodeId};
use crate::hash::Digest;
use crate::sandbox::{self, Attach, Exit, Kept, SandboxSpec};
use crate::store::{Store, StoreError};

/// What to run, and where.
pub struct ShellRequest {
    pub node: NodeId,
    /// The command; empty: an interactive shell (the recipe's shell, with `-i`).
    pub command: Vec<String>,
    /// Start in the kept failed build instead of an empty `/build`.
    pub failed: bool,
    /// The forge binary (the sandbox helper).
    pub helper_exe: PathBuf,
    /// `$FORGE_JOBS` in the session.
    pub build_jobs: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("{name} is imported from its sources, not built by a script: there is no build to enter")]
    Imported { name: String },
    #[error("{name}'s inputs are not all in this store ({}): build them first with `forge build FILE -p {}`", missing.join(", "), missing.join(" -p "))]
    MissingInputs { name: String, missing: Vec<String> },
    #[error("no kept failed build of {name} at its current derivation {drv} ({}){}", path.display(), others_hint(others))]
    NoKeptBuild { name: String, drv: String, path: PathBuf, others: Vec<PathBuf> },
    #[error("staging {name}'s sources: {error}")]
    Sources { name: String, error: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
    #[error("{0}")]
    Io(String),
}

fn others_hint(others: &[PathBuf]) -> String {
    match others.first() {
        None => "; run `forge build --keep-failed` to keep one".to_string(),
        Some(_) => format!(
            "; the recipe (or an input) changed since: kept failed builds of its other derivations are {} (newest first); build again with --keep-failed to keep one of this derivation",
            others.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Prints nothing: the session's terminal is the user's.
struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: Event<'_>) {}
}

/// Open the session and wait for it to end; returns how its command ended.
pub fn shell(store: &Store, graph: &Graph, plan: &Plan, request: &ShellRequest) -> Result<Exit, ShellError> {
    let id = request.node;
    let recipe = &graph.nodes[id].recipe;
    let drv = &plan.drvs[id];
    let Builder::Script { shell, .. } = &drv.builder else {
        return Err(ShellError::Imported { name: recipe.name.clone() });
    };
    let input_outs = input_outs(store, graph, plan, id)?;
    let resume = match request.failed {
        false => None,
        true => Some(kept_build(store, &recipe.name, &plan.drv_hashes[id])?),
    };
    let scratch = store.scratch_dir(&format!("shell-{}", recipe.name))?;
    let sources = scratch.path().join("sources");
    std::fs::create_dir(&sources).map_err(|e| ShellError::Io(format!("cannot create {}: {e}", sources.display())))?;
    executor::stage_sources(store, recipe, drv, &sources, scratch.path(), &Quiet, id)
        .map_err(|f| ShellError::Sources { name: recipe.name.clone(), error: f.error })?;
    let sandbox_dir = scratch.path().join("sandbox");
    std::fs::create_dir(&sandbox_dir).map_err(|e| ShellError::Io(format!("cannot create {}: {e}", sandbox_dir.display())))?;
    let mut env = drv.env.clone();
    env.insert("FORGE_JOBS".into(), request.build_jobs.max(1).to_string());
    let argv = if request.command.is_empty() {
        env.insert("PS1".into(), format!("[forge shell {}] \\w\\$ ", recipe.name));
        vec![shell[0].clone(), "-i".into()]
    } else {
        request.command.clone()
    };
    let spec = SandboxSpec {
        helper_exe: request.helper_exe.clone(),
        layers: executor::input_layers(store, graph, plan, id, &input_outs),
        sources,
        scratch: sandbox_dir,
        env,
        argv,
        timeout: None,
        log: scratch.path().join("session.log"),
        build_dir: None,
        limits: executor::limits_of(&recipe.requirements, None),
        attach: Some(Attach { resume }),
    };
    Ok(sandbox::run(&spec)?.exit)
}

/// The out hash of each input in node `id`'s closure (in `plan.closures[id]` order).
fn input_outs(store: &Store, graph: &Graph, plan: &Plan, id: NodeId) -> Result<Vec<Digest>, ShellError> {
    let mut outs = Vec::new();
    let mut missing = Vec::new();
    for &input in &plan.closures[id] {
        match store.realisation_by_drv(&plan.drv_hashes[input])? {
            Some(r) if store.object_path(&r.out_hash).is_dir() => outs.push(r.out_hash),
            _ => missing.push(graph.nodes[input].recipe.name.clone()),
        }
    }
    match missing.is_empty() {
        true => Ok(outs),
        false => Err(ShellError::MissingInputs { name: graph.nodes[id].recipe.name.clone(), missing }),
    }
}

fn kept_build(store: &Store, name: &str, drv: &Digest) -> Result<Kept, ShellError> {
    let path = store.kept_failed_path(name, drv);
    if !path.join("build").is_dir() {
        let others = store.kept_failed_of(name).into_iter().filter(|p| *p != path).collect();
        return Err(ShellError::NoKeptBuild { name: name.to_string(), drv: drv.short(), path, others });
    }
    Ok(Kept { build: path.join("build"), out: path.join("out") })
}
