//! `forge build FILE...`: plan, then realise every node (or, with `--dry-run`, say what
//! would be built and why).

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::progress::{self, Mode};
use super::{emit_json, CliResult, Failure, GlobalArgs, EXIT_FAILED, EXIT_OK};
use crate::check::{self, CheckEvent, CheckPlan, NodeCheck, Verdict};
use crate::executor::{self, NodeResult, Options, Report, Status};
use crate::graph::NodeId;

#[derive(Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    targets: super::Targets,
    /// Number of builds to run at once [default: number of CPUs]
    #[arg(short, long, value_name = "N")]
    jobs: Option<usize>,
    /// Parallelism each build is granted as $FORGE_JOBS [default: number of CPUs]
    #[arg(long, value_name = "N")]
    build_jobs: Option<usize>,
    /// After a failure, keep building everything that does not depend on it
    #[arg(short, long)]
    keep_going: bool,
    /// Keep a failed build's /build and $FORGE_OUT in STORE/failed/NAME-DRV/ (the error says
    /// where; gc never removes them, delete them yourself); a later failure of the same
    /// derivation replaces them
    #[arg(long)]
    keep_failed: bool,
    /// Show what would be built and why, without building anything
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Print one JSON event per line on stdout instead of human-readable progress
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    substitute: super::substitute::SubstituteArgs,
    /// Rebuild the packages asked for (a set's packages, or the --package names) once they
    /// are realised, ignoring every cache, and compare the out hashes with the recorded ones;
    /// exit 1 if any differs (the differing output is kept: forge diff NAME --check)
    #[arg(long)]
    check: bool,
    /// With --check: rebuilds per package
    #[arg(long, value_name = "N", default_value_t = 1, requires = "check", value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// With --check: what rounds vary that must not matter: all, none, or a list of
    /// build-path (the working directory is /build-check-N) and jobs ($FORGE_JOBS 1, then twice the usual)
    #[arg(long, value_name = "LIST", default_value = "all", requires = "check")]
    vary: String,
    /// Which ready package starts first: critical-path (the longest expected chain of work
    /// after it, from recorded build times) or topological (dependency order, ties by name)
    #[arg(long, value_enum, default_value = "critical-path")]
    schedule: Schedule,
    /// End a build that prints nothing for this long, unless its recipe says otherwise
    /// ([requirements] max-silent-time): seconds or a number with s, m, h or d; 0: never
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_silence)]
    max_silent_time: std::time::Duration,
    /// Also say how the build limits are enforced on this machine (cgroup v2, v1 or rlimits)
    #[arg(short, long)]
    verbose: bool,
    /// After the build, write its timeline as an HTML page (see forge report)
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// After the build, write it as a Chrome trace (chrome://tracing, ui.perfetto.dev)
    #[arg(long, value_name = "FILE.json")]
    trace: Option<PathBuf>,
}

pub fn run(global: &GlobalArgs, args: BuildArgs) -> CliResult {
    let check_plan = match args.check {
        true => {
            let vary = check::parse_vary(&args.vary).map_err(|e| Failure::usage(format!("--vary: {e}")))?;
            Some(CheckPlan { rounds: args.rounds as usize, vary })
        }
        false => None,
    };
    let planned = args.targets.plan()?;
    let store = global.open_store()?;
    let (graph, plan) = (&planned.graph, &planned.plan);

    if args.dry_run {
        return dry_run(&store, &planned, args.json);
    }

    if args.verbose {
        eprintln!("{}", crate::sandbox::describe_enforcement());
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let jobs = args.jobs.unwrap_or(cpus).max(1);
    // Recorded from here, so that `forge status` shows the run while it substitutes.
    let run = store.begin_run(&describe_targets(&args), graph.nodes.len(), jobs)?;
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
    let expected = expected_times(&store, graph, global.config()?.sbu_reference())?;
    let opts = Options {
        jobs,
        keep_going: args.keep_going,
        keep_failed: args.keep_failed,
        helper_exe,
        build_jobs: args.build_jobs.unwrap_or(cpus).max(1),
        substituted,
        to_check: if args.check { graph.wanted().into_iter().collect() } else { Default::default() },
        expected_ms: match args.schedule {
            Schedule::CriticalPath => expected.clone(),
            Schedule::Topological => Vec::new(),
        },
        max_silent: Some(args.max_silent_time).filter(|d| !d.is_zero()),
    };
    let mode = if args.json { Mode::Json } else { progress::detect_mode() };
    let observer = progress::Reporter::new(mode, graph.nodes.len());
    observer.expect(expected.clone(), opts.jobs);
    let recorder = super::record::Recorder::new(&store, run, graph, plan, &expected, &observer);
    let report = executor::build(&store, graph, plan, &opts, &recorder)?;
    recorder.flush();
    observer.finish();

    record_roots(&store, graph, &report, &args.targets.packages)?;

    let counts = progress::Counts::of(&report);
    if args.json {
        let mut summary = serde_json::to_value(counts).expect("counts serialize");
        summary["event"] = "summary".into();
        emit_json(summary);
    } else {
        progress::print_summary(graph, &report, counts);
    }
    let mut code = if counts.failed > 0 || counts.skipped > 0 { EXIT_FAILED } else { EXIT_OK };
    if let Some(plan) = &check_plan {
        if !run_checks(&store, &planned, &opts, &report, plan, &observer, args.json)? {
            code = EXIT_FAILED;
        }
    }
    store.finish_run(run, code == EXIT_OK)?;
    if args.report.is_some() || args.trace.is_some() {
        super::report::write(&store, Some(run), args.report.as_deref(), args.trace.as_deref())?;
    }
    super::exit_without_freeing(planned);
    Ok(code)
}

fn parse_silence(text: &str) -> Result<std::time::Duration, String> {
    crate::recipe::parse_duration(text)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is not a duration: use seconds or a number with s, m, h or d, e.g. \"90s\", \"30m\", \"2h\"; 0 never ends a silent build"))
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Schedule {
    CriticalPath,
    Topological,
}

/// Each node's expected build time: the median of its last five recorded builds; else its
/// recipe's `sbu` hint times this machine's SBU (the reference package's median build time);
/// else the mean of those known (0 when none is).
fn expected_times(store: &crate::store::Store, graph: &crate::graph::Graph, sbu_reference: &str) -> Result<Vec<u64>, Failure> {
    let recorded = store.median_build_times()?;
    let unit = recorded.get(sbu_reference).copied();
    let known: Vec<Option<u64>> = graph
        .nodes
        .iter()
        .map(|node| {
            let hinted = node.recipe.requirements.sbu.zip(unit).map(|(sbu, unit)| (sbu * unit as f64) as u64);
            recorded.get(&node.recipe.name).copied().or(hinted)
        })
        .collect();
    let values: Vec<u64> = known.iter().flatten().copied().collect();
    let fallback = if values.is_empty() { 0 } else { values.iter().sum::<u64>() / values.len() as u64 };
    Ok(known.into_iter().map(|t| t.unwrap_or(fallback)).collect())
}

/// What a run was asked for, as the user typed it: files, then `-p` names.
fn describe_targets(args: &BuildArgs) -> String {
    let files = args.targets.files.iter().map(|f| f.display().to_string());
    let packages = args.targets.packages.iter().map(|p| format!("-p {p}"));
    files.chain(packages).collect::<Vec<_>>().join(" ")
}

/// `--check`: rebuild every wanted node that is realised, report each round and a verdict.
/// Returns whether every checked node was reproducible.
fn run_checks(
    store: &crate::store::Store,
    planned: &super::Planned,
    opts: &Options,
    report: &Report,
    plan: &CheckPlan,
    observer: &progress::Reporter,
    json: bool,
) -> Result<bool, Failure> {
    let (graph, drv_plan) = (&planned.graph, &planned.plan);
    // A node is checked once it and its whole input closure have out hashes.
    let nodes: Vec<(NodeId, crate::hash::Digest, Vec<crate::hash::Digest>)> = graph
        .wanted()
        .into_iter()
        .filter_map(|id| {
            let inputs: Option<Vec<_>> = drv_plan.closures[id].iter().map(|&i| report.out(i)).collect();
            Some((id, report.out(id)?, inputs?))
        })
        .collect();
    if !json {
        let rounds = if plan.rounds == 1 { "1 round".to_string() } else { format!("{} rounds", plan.rounds) };
        eprintln!("checking {} packages, {rounds} each, ignoring every cache", nodes.len());
    }
    let print = |event: CheckEvent| match event {
        CheckEvent::RoundStarted { name, round, rounds, variation } if !json => {
            eprintln!("checking {name}, round {round}/{rounds} ({variation})")
        }
        CheckEvent::RoundStarted { .. } => {}
        CheckEvent::RoundDone { check, round } => print_round(check, round, json),
    };
    let checks = check::check_all(store, graph, drv_plan, opts, &nodes, plan, observer, &print)?;
    let count = |v: Verdict| checks.iter().filter(|c| c.verdict() == v).count();
    let (good, bad, failed) = (count(Verdict::Reproducible), count(Verdict::NotReproducible), count(Verdict::Failed));
    if json {
        for c in &checks {
            let differing: Vec<String> = c.differing().map(|d| d.to_hex()).collect();
            emit_json(json!({"event": "check", "name": c.name, "drv": c.drv.to_hex(), "recorded": c.recorded.to_hex(),
                "verdict": c.verdict(), "rounds": c.rounds.len(), "differing": differing}));
        }
        emit_json(json!({"event": "check-summary", "checked": checks.len(), "reproducible": good,
            "not_reproducible": bad, "failed": failed}));
    } else {
        for c in checks.iter().filter(|c| c.verdict() == Verdict::NotReproducible) {
            eprintln!("NOT REPRODUCIBLE: {} (recorded {}); see what differs: forge diff {} --check", c.name, c.recorded.short(), c.name);
        }
        eprintln!("checked {}: {good} reproducible, {bad} not reproducible, {failed} could not be rebuilt", checks.len());
    }
    Ok(bad == 0 && failed == 0)
}

fn print_round(check: &NodeCheck, round: &check::Round, json: bool) {
    if json {
        emit_json(json!({"event": "check-round", "name": check.name, "drv": check.drv.to_hex(), "round": round.round,
            "variation": round.variation, "recorded": check.recorded.to_hex(),
            "out": round.out.as_ref().ok().map(|o| o.to_hex()), "error": round.out.as_ref().err(),
            "same": round.out.as_ref().ok() == Some(&check.recorded),
            "log": round.log.as_ref().map(|l| l.display().to_string())}));
        return;
    }
    let name = &check.name;
    match &round.out {
        Ok(out) if *out == check.recorded => eprintln!("{name}: round {}: same out hash {}", round.round, out.short()),
        Ok(out) => eprintln!("{name}: round {}: DIFFERENT out hash {} (recorded {}), kept", round.round, out.short(), check.recorded.short()),
        Err(e) => eprintln!("{name}: round {}: the rebuild failed: {e}", round.round),
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_silence_default_in_help_is_the_sandbox_default() {
        assert_eq!(super::parse_silence("1h"), Ok(crate::sandbox::DEFAULT_MAX_SILENT));
        assert!(super::parse_silence("soon").unwrap_err().contains("0 never ends"));
    }
}
