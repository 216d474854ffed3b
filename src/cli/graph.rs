//! `forge graph FILE...`: the dependency graph as Graphviz dot or JSON, and
//! `forge why-depends A B FILE...`: the chain of dependencies from A to B.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::json;

use super::{emit_json, load_and_plan, CliResult, Failure, EXIT_OK};
use crate::graph::DepKind;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Dot,
    Json,
}

#[derive(Args, Debug)]
pub struct GraphArgs {
    #[command(flatten)]
    targets: super::Targets,
    /// dot (Graphviz: build dependencies solid, runtime dashed) or json
    #[arg(long, value_enum, default_value = "dot")]
    format: Format,
}

pub fn run(args: GraphArgs) -> CliResult {
    let planned = args.targets.plan()?;
    let (graph, plan) = (&planned.graph, &planned.plan);
    let name = |id: usize| graph.nodes[id].recipe.name.as_str();
    match args.format {
        Format::Dot => {
            println!("digraph forge {{\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];");
            for &id in graph.topo_order() {
                let r = &graph.nodes[id].recipe;
                println!("  {:?} [label={:?}];", r.name, format!("{}\n{}", r.name, r.version));
            }
            for &id in graph.topo_order() {
                let node = &graph.nodes[id];
                for &dep in &node.build_deps {
                    println!("  {:?} -> {:?};", name(id), name(dep));
                }
                for &dep in &node.runtime_deps {
                    println!("  {:?} -> {:?} [style=dashed];", name(id), name(dep));
                }
            }
            println!("}}");
        }
        Format::Json => {
            let nodes: Vec<serde_json::Value> = graph
                .topo_order()
                .iter()
                .map(|&id| {
                    let node = &graph.nodes[id];
                    json!({"name": node.recipe.name, "version": node.recipe.version, "drv": plan.drv_hashes[id].to_hex(),
                        "file": node.recipe.file.display().to_string(),
                        "build": node.build_deps.iter().map(|&d| name(d)).collect::<Vec<_>>(),
                        "runtime": node.runtime_deps.iter().map(|&d| name(d)).collect::<Vec<_>>()})
                })
                .collect();
            emit_json(json!({"nodes": nodes}));
        }
    }
    super::exit_without_freeing(planned);
    Ok(EXIT_OK)
}

#[derive(Args, Debug)]
pub struct WhyDependsArgs {
    /// The dependent package
    #[arg(value_name = "A")]
    from: String,
    /// The dependency
    #[arg(value_name = "B")]
    to: String,
    /// Recipe or set files holding both
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    overlays: super::OverlayArgs,
    /// The chain as JSON
    #[arg(long)]
    json: bool,
}

pub fn why_depends(args: WhyDependsArgs) -> CliResult {
    let planned = load_and_plan(&args.files, std::slice::from_ref(&args.from), &args.overlays)?;
    let graph = &planned.graph;
    let from = graph.node_by_name(&args.from).expect("restricted to it");
    let to = graph.node_by_name(&args.to).ok_or_else(|| {
        Failure::usage(format!("{} does not depend on {} at all (it is not in its dependency closure)", args.from, args.to))
    })?;
    let chain = graph.dependency_chain(from, to).expect("in the closure, so reachable");
    let steps: Vec<(&str, Option<DepKind>)> = chain.iter().map(|(id, kind)| (graph.nodes[*id].recipe.name.as_str(), *kind)).collect();
    if args.json {
        let chain: Vec<serde_json::Value> = steps.iter().map(|(n, k)| json!({"name": n, "depends_on_next": k})).collect();
        emit_json(json!({"from": args.from, "to": args.to, "chain": chain}));
    } else {
        for (i, (name, kind)) in steps.iter().enumerate() {
            let pad = "  ".repeat(i);
            match kind {
                Some(kind) => println!("{pad}{name}  --{}-->", match kind { DepKind::Build => "build", DepKind::Runtime => "runtime" }),
                None => println!("{pad}{name}"),
            }
        }
        let runtime_only = steps.iter().filter_map(|(_, k)| *k).all(|k| k == DepKind::Runtime);
        if runtime_only && steps.len() > 1 {
            println!("{} is in the runtime closure of {}: it is present wherever {} is used", args.to, args.from, args.from);
        }
    }
    super::exit_without_freeing(planned);
    Ok(EXIT_OK)
}
