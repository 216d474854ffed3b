//! `forge build FILE...`: plan, then realise every node (or, with `--dry-run`, say what
//! would be built and why).

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::progress::{self, Mode};
use super::{emit_json, load_and_plan, CliResult, Failure, GlobalArgs, EXIT_FAILED, EXIT_OK};
use crate::executor::{self, NodeResult, Options, Status};

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Recipe or set files to build
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Build only these packages (and what they depend on) out of FILEs
    #[arg(short, long = "package", value_name = "NAME")]
    packages: Vec<String>,
    #[command(flatten)]
    overlays: super::OverlayArgs,
    /// Number of builds to run at once [default: number of CPUs]
    #[arg(short, long, value_name = "N")]
    jobs: Option<usize>,
    /// Parallelism each build is granted as $FORGE_JOBS [default: number of CPUs]
    #[arg(long, value_name = "N")]
    build_jobs: Option<usize>,
    /// After a failure, keep building everything that does not depend on it
    #[arg(short, long)]
    keep_going: bool,
    /// Show what would be built and why, without building anything
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Print one JSON event per line on stdout instead of human-readable progress
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    substitute: super::substitute::SubstituteArgs,
}

pub fn run(global: &GlobalArgs, args: BuildArgs) -> CliResult {
    let planned = load_and_plan(&args.files, &args.packages, &args.overlays)?;
    let store = global.open_store()?;
    let (graph, plan) = (&planned.graph, &planned.plan);

    if args.dry_run {
        return dry_run(&store, &planned, args.json);
    }

    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let substituted = match args.substitute.resolve(global)? {
        Some(sub) => {
            let offers = super::substitute::needed_offers(&store, &planned, &sub)?;
            // Downloads wait on the network as much as on the CPU: a few more than the cores.
            super::substitute::fetch_all(&store, &sub, &offers, cpus.max(4), args.json)
        }
        None => Default::default(),
    };
    let helper_exe = std::env::current_exe()
        .map_err(|e| Failure::failed(format!("cannot locate the forge binary to run the sandbox: {e}")))?;
    let opts = Options {
        jobs: args.jobs.unwrap_or(cpus).max(1),
        keep_going: args.keep_going,
        helper_exe,
        build_jobs: args.build_jobs.unwrap_or(cpus).max(1),
        substituted,
    };
    let mode = if args.json { Mode::Json } else { progress::detect_mode() };
    let observer = progress::Reporter::new(mode, graph.nodes.len());
    let report = executor::build(&store, graph, plan, &opts, &observer)?;
    observer.finish();

    record_roots(&store, graph, &report, &args.packages)?;

    let counts = progress::Counts::of(&report);
    if args.json {
        let mut summary = serde_json::to_value(counts).expect("counts serialize");
        summary["event"] = "summary".into();
        emit_json(summary);
    } else {
        progress::print_summary(graph, &report, counts);
    }
    let code = if counts.failed > 0 || counts.skipped > 0 { EXIT_FAILED } else { EXIT_OK };
    super::exit_without_freeing(planned);
    Ok(code)
}

/// Each fully built target becomes a gc root holding the outputs of its whole closure
/// (`set:NAME` / `package:NAME`), build inputs that were not needed this time excepted.
/// With `--package`, only the named packages become roots, so that a partial build never
/// shrinks a set's root.
fn record_roots(
    store: &crate::store::Store,
    graph: &crate::graph::Graph,
    report: &executor::Report,
    packages: &[String],
) -> Result<(), Failure> {
    let mut roots: Vec<(String, Vec<String>)> = Vec::new();
    if packages.is_empty() {
        for target in &graph.targets {
            let kind = if target.is_set { "set" } else { "package" };
            roots.push((format!("{kind}:{}", target.name), target.packages.clone()));
        }
    } else {
        roots.extend(packages.iter().map(|p| (format!("package:{p}"), vec![p.clone()])));
    }
    for (root, members) in roots {
        let outs: Option<Vec<_>> = graph
            .closure_of(&members)
            .iter()
            .filter(|&&n| !matches!(report.results[n], NodeResult::NotNeeded))
            .map(|&n| report.out(n))
            .collect();
        if let Some(outs) = outs {
            store.set_root(&root, &outs)?;
        }
    }
    Ok(())
}

fn dry_run(store: &crate::store::Store, planned: &super::Planned, json: bool) -> CliResult {
    let (graph, plan) = (&planned.graph, &planned.plan);
    let status = executor::assess(store, graph, plan, &Default::default())?;
    let (mut to_build, mut not_needed) = (0, 0);
    for &n in graph.topo_order() {
        let recipe = &graph.nodes[n].recipe;
        let drv = plan.drv_hashes[n].to_hex();
        let (state, out, reason) = match &status[n] {
            Status::Realised(out) => ("cached", Some(out.to_hex()), None),
            Status::Cutoff(out) => ("cached", Some(out.to_hex()), Some("inputs unchanged in content")),
            Status::ToBuild(why) => {
                to_build += 1;
                ("to build", None, Some(why.as_str()))
            }
            Status::NotNeeded => {
                not_needed += 1;
                ("not needed", None, Some("only a build input of outputs already in the store"))
            }
        };
        if json {
            emit_json(json!({"event": "plan", "name": recipe.name, "version": recipe.version,
                "drv": drv, "out": out, "status": state, "reason": reason}));
        } else if let Status::ToBuild(why) = &status[n] {
            println!("would build {} {} ({}): {why}", recipe.name, recipe.version, &drv[..12]);
        }
    }
    if json {
        emit_json(json!({"event": "summary", "to_build": to_build, "not_needed": not_needed,
            "cached": graph.nodes.len() - to_build - not_needed}));
    } else {
        let mut summary = format!("{to_build} to build, {} already in the store", graph.nodes.len() - to_build - not_needed);
        if not_needed > 0 {
            summary.push_str(&format!(", {not_needed} not needed (build inputs of outputs already here)"));
        }
        println!("{summary}");
    }
    Ok(EXIT_OK)
}
