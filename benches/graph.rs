//! Planning and no-op rebuilds of generated graphs (issue 2, figure 1).
//!
//! For each size (`FORGE_BENCH_NODES`, default `1000,10000`):
//! 1. library plan of the realistic [`gen::Kind::Build`] graph: `recipe::load` +
//!    `Graph::resolve` + `derivation::plan`, each phase timed, median of `FORGE_BENCH_RUNS`;
//! 2. the real binary on the same graph and an empty store: `forge show`, `forge build -n`;
//! 3. the [`gen::Kind::Import`] graph (same DAG shape) realised once with `forge build -j 2`,
//!    then the no-op rebuild `forge build` (everything cached) and `forge show`, timed.
//!
//! Run: `benches/run.sh` (everything) or `cargo bench --bench graph`. With `FORGE_BENCH_KEEP`
//! set, the generated recipes and stores are kept (for profiling `forge` on them).

#[path = "support/gen.rs"]
mod gen;
#[path = "support/measure.rs"]
mod measure;

use std::path::Path;
use std::time::{Duration, Instant};

use forge::graph::Graph;
use measure::{figure, forge, median, timed};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<usize> = std::env::var("FORGE_BENCH_NODES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let runs = measure::runs();
    println!("graph bench: {runs} runs per figure, rayon threads {}", rayon::current_num_threads());
    for nodes in sizes {
        let tmp = tempfile::Builder::new().prefix("forge-bench-graph-").tempdir_in(measure::scratch_parent())?;
        plan_figures(tmp.path(), nodes, runs)?;
        noop_figures(tmp.path(), nodes, runs)?;
        if std::env::var_os("FORGE_BENCH_KEEP").is_some() {
            println!("kept {} (FORGE_BENCH_KEEP)", tmp.keep().display());
        }
    }
    Ok(())
}

/// Phase times of one library plan, in seconds: (load, resolve, plan).
fn plan_once(set: &Path, expect_nodes: usize) -> (f64, f64, f64) {
    let t0 = Instant::now();
    let loaded = forge::recipe::load(&[set.to_path_buf()]).expect("generated recipes load");
    let t1 = Instant::now();
    let graph = Graph::resolve(loaded).expect("generated graph resolves");
    let t2 = Instant::now();
    let plan = forge::derivation::plan(&graph).expect("generated graph plans");
    let t3 = Instant::now();
    assert_eq!(plan.drv_hashes.len(), expect_nodes);
    (secs(t1 - t0), secs(t2 - t1), secs(t3 - t2))
}

fn plan_figures(dir: &Path, nodes: usize, runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let g = gen::write_graph(&dir.join("build"), nodes, gen::Kind::Build, &measure::repo())?;
    let total_nodes = nodes + 2; // + busybox-static and seed
    println!(
        "\n== {nodes} nodes (Build kind): {} layers, {} dependency edges ({} runtime) + 1 on seed each",
        g.layers, g.edges, g.runtime_edges
    );
    plan_once(&g.set, total_nodes); // warm the page cache
    let (mut load, mut resolve, mut plan, mut total) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let (l, r, p) = plan_once(&g.set, total_nodes);
        load.push(l);
        resolve.push(r);
        plan.push(p);
        total.push(l + r + p);
    }
    let closure_sizes = {
        let graph = Graph::resolve(forge::recipe::load(std::slice::from_ref(&g.set))?)?;
        let sizes: Vec<f64> = (0..graph.nodes.len()).map(|id| graph.input_closure(id).len() as f64).collect();
        (measure::median(&sizes), measure::min_max(&sizes).1)
    };
    println!("input closure size: median {:.0}, max {:.0}", closure_sizes.0, closure_sizes.1);
    println!(
        "library plan: load {:.3} s + resolve {:.3} s + plan {:.3} s = {:.3} s (median total; min {:.3}, max {:.3})",
        median(&load),
        median(&resolve),
        median(&plan),
        median(&total),
        measure::min_max(&total).0,
        measure::min_max(&total).1
    );
    let target = (nodes == 10_000).then_some((median(&total), 0.2, "< 0.2 s"));
    figure(&format!("plan, library, {nodes} nodes"), format!("{:.3} s", median(&total)), target);

    let store = dir.join("store-empty");
    let show = time_cli(runs, || forge(&store, &["show", path_str(&g.set)]));
    let dry = time_cli(runs, || forge(&store, &["build", "--dry-run", path_str(&g.set)]));
    println!("forge show (empty store): median {show:.3} s; forge build --dry-run: median {dry:.3} s");
    figure(&format!("forge show, {nodes} nodes, end to end"), format!("{show:.3} s"), None);
    figure(&format!("forge build --dry-run, {nodes} nodes, end to end"), format!("{dry:.3} s"), None);
    Ok(())
}

fn noop_figures(dir: &Path, nodes: usize, runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let g = gen::write_graph(&dir.join("import"), nodes, gen::Kind::Import, &measure::repo())?;
    let store = dir.join("store-import");
    let set = path_str(&g.set);
    println!("-- {nodes} nodes (Import kind, same DAG shape): realising once with -j 2");
    let (first, output) = timed(forge(&store, &["build", "--json", "-j", "2", set]));
    let built = measure::events(&output).iter().filter(|e| e["event"] == "built").count();
    assert_eq!(built, nodes, "the first build realises every node");
    println!("first build: {nodes} imports in {:.1} s ({:.0} nodes/s)", secs(first), nodes as f64 / secs(first));

    let mut noop = Vec::new();
    for _ in 0..runs {
        let (t, output) = timed(forge(&store, &["build", "--json", set]));
        let summary = measure::events(&output).into_iter().find(|e| e["event"] == "summary").expect("summary event");
        assert_eq!((summary["built"].as_u64(), summary["cached"].as_u64()), (Some(0), Some(nodes as u64)));
        noop.push(secs(t));
    }
    let lib_plan = median(&(0..runs).map(|_| {
        let (l, r, p) = plan_once(&g.set, nodes);
        l + r + p
    }).collect::<Vec<_>>());
    let show = time_cli(runs, || forge(&store, &["show", set]));
    let noop_median = median(&noop);
    println!(
        "no-op forge build: median {noop_median:.3} s (min {:.3}, max {:.3}); of which library plan ~{lib_plan:.3} s; forge show: {show:.3} s",
        measure::min_max(&noop).0,
        measure::min_max(&noop).1
    );
    let target = (nodes == 10_000).then_some((noop_median, 1.0, "< 1 s"));
    figure(&format!("no-op forge build, {nodes} nodes"), format!("{noop_median:.3} s"), target);
    figure(&format!("first build of {nodes} imports, -j 2"), format!("{:.1} s", secs(first)), None);
    Ok(())
}

/// Median wall time of `runs` runs of the command `make` builds (after one warm-up run).
fn time_cli(runs: usize, make: impl Fn() -> std::process::Command) -> f64 {
    timed(make());
    median(&(0..runs).map(|_| secs(timed(make()).0)).collect::<Vec<_>>())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("scratch paths are UTF-8")
}
