//! `forge show FILE...`: each node's name, version, drv hash, out hash and status.


use clap::Args;
use serde_json::json;

use super::{emit_json, CliResult, GlobalArgs, EXIT_OK};
use crate::executor::{self, Status};

#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    targets: super::Targets,
    /// One JSON object per node on stdout
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    substitute: super::substitute::SubstituteArgs,
}

pub fn run(global: &GlobalArgs, args: ShowArgs) -> CliResult {
    let planned = args.targets.plan()?;
    let store = global.open_store()?;
    let (graph, plan) = (&planned.graph, &planned.plan);
    let substitutable: std::collections::HashMap<usize, crate::hash::Digest> = match args.substitute.resolve(global)? {
        Some(sub) => super::substitute::offers(&store, &planned, &sub)?.into_iter().map(|(id, o)| (id, o.doc.out)).collect(),
        None => Default::default(),
    };
    let status = executor::assess(&store, graph, plan, &substitutable.keys().copied().collect())?;
    if !args.json {
        println!("{:<28} {:<14} {:<14} {:<14} STATUS", "NAME", "VERSION", "DRV", "OUT");
    }
    for &n in graph.topo_order() {
        let recipe = &graph.nodes[n].recipe;
        let (state, out) = match &status[n] {
            Status::Realised(out) | Status::Cutoff(out) => ("built", Some(*out)),
            Status::ToBuild(_) => match substitutable.get(&n) {
                Some(out) => ("substitutable", Some(*out)),
                None => ("to build", None),
            },
            Status::NotNeeded => ("not needed", None),
        };
        let nondeterministic = store.is_nondeterministic(&plan.drv_hashes[n])?;
        if args.json {
            emit_json(json!({
                "event": "node", "name": recipe.name, "version": recipe.version,
                "drv": plan.drv_hashes[n].to_hex(), "out": out.map(|o| o.to_hex()),
                "status": state, "file": recipe.file.display().to_string(), "nondeterministic": nondeterministic,
            }));
        } else {
            let out = out.map(|o| o.short()).unwrap_or_else(|| "-".into());
            let mark = if nondeterministic { " (non-deterministic: forge audit)" } else { "" };
            println!("{:<28} {:<14} {:<14} {:<14} {state}{mark}", recipe.name, recipe.version, plan.drv_hashes[n].short(), out);
        }
    }
    super::exit_without_freeing(planned);
    Ok(EXIT_OK)
}
