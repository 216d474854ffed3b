//! `forge status` (a build run, live from another shell, or the last one) and
//! `forge history NAME` (what happened to a package in past runs), from the runs recorded
//! in the store (docs/observability.md).

use clap::Args;
use serde::Serialize;
use serde_json::json;

use super::fetch::human_bytes;
use super::{emit_json, CliResult, Failure, GlobalArgs, EXIT_OK};
use crate::store::{now_ms, Run, RunNode, Store};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Which run (as `forge history` and `forge report` show them) [default: the newest]
    #[arg(long, value_name = "ID")]
    run: Option<i64>,
    /// One JSON document on stdout
    #[arg(long)]
    json: bool,
}

/// A run's state, in the shape of the build-status documents CI dashboards read.
#[derive(Debug, Serialize)]
pub struct BuildStatus {
    pub build_id: i64,
    /// `preparing` (loading, substituting), `building`, or `finished`.
    pub phase: &'static str,
    /// `RUNNING`, `PAUSED` (the forge process is stopped), `COMPLETED` or `ERROR`
    /// (failed, or the process is gone without finishing).
    pub status: &'static str,
    pub targets: String,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub current_packages: Vec<Current>,
    pub packages_completed: u64,
    pub packages_total: u64,
    /// Of the packages completed: realised / failed.
    pub success_rate: f64,
    pub error_rate: f64,
    /// Mean wall time of the packages built in this run.
    pub average_package_seconds: Option<f64>,
    /// Expected end, Unix ms: the remaining expected work (what the run expected of each
    /// queued or running package when it planned it: its median recorded build time, else its
    /// recipe's SBU hint times this machine's SBU) spread over the run's jobs.
    pub estimated_completion_ms: Option<i64>,
    /// That remaining work in SBU (when this store has built the SBU reference package).
    pub remaining_sbu: Option<f64>,
    /// 1 SBU on this machine: the reference package's median build time, seconds.
    pub sbu_seconds: Option<f64>,
    /// The phase of the packages running now (else of the next to run): the directory of
    /// their recipes, e.g. `ch6`.
    pub current_phase: Option<String>,
    /// Every phase of the run, in the order it started.
    pub phases: Vec<PhaseStatus>,
}

/// One phase of a run (the recipes of one directory: a chapter of the LFS book).
#[derive(Debug, Serialize)]
pub struct PhaseStatus {
    pub name: String,
    /// Packages of this phase the run has to build (not in the store when it started).
    pub to_build: u64,
    /// Of those, finished: built, failed or skipped.
    pub finished: u64,
    pub failed: u64,
    /// Packages of this phase found in the store (cached, substituted, not needed) so far.
    pub in_store: u64,
    /// Expected work left in this phase, seconds of one job.
    pub remaining_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct Current {
    pub name: String,
    pub worker: Option<u64>,
    pub elapsed_seconds: f64,
}

pub fn run(global: &GlobalArgs, args: StatusArgs) -> CliResult {
    let store = global.open_store()?;
    let run = store.run(args.run)?.ok_or_else(|| match args.run {
        Some(id) => Failure::usage(format!("no run {id} in this store")),
        None => Failure::usage("no build has run in this store yet"),
    })?;
    let nodes = store.run_nodes(run.id)?;
    let sbu_unit = store.median_build_time(global.config()?.sbu_reference())?.filter(|&u| u > 0);
    let status = build_status(&store, &run, &nodes, sbu_unit)?;
    if args.json {
        emit_json(serde_json::to_value(&status).expect("status serializes"));
        return Ok(EXIT_OK);
    }
    println!("build {} ({}): {} {}, {}", status.build_id, status.targets, status.status, status.phase, ago(status.started_at_ms));
    println!("{}/{} packages done", status.packages_completed, status.packages_total);
    if status.packages_completed > 0 {
        println!("success {:.0}%, errors {:.0}%", status.success_rate * 100.0, status.error_rate * 100.0);
    }
    if let Some(avg) = status.average_package_seconds {
        println!("average build {avg:.1}s");
    }
    if status.phases.len() > 1 || status.phases.iter().any(|p| !p.name.is_empty()) {
        for p in &status.phases {
            let mark = if status.current_phase.as_deref() == Some(p.name.as_str()) { "*" } else { " " };
            let mut line = match p.to_build {
                0 => format!("{mark} {:<12} nothing to build", p.name),
                n => format!("{mark} {:<12} {:>3}/{:<3} built", p.name, p.finished - p.failed, n),
            };
            if p.failed > 0 {
                line += &format!(", {} failed", p.failed);
            }
            if p.in_store > 0 {
                line += &format!(", {} in the store", p.in_store);
            }
            if p.finished < p.to_build && p.remaining_seconds > 0.0 {
                line += &format!(", about {} of work left", duration(p.remaining_seconds));
            }
            println!("{line}");
        }
    }
    for c in &status.current_packages {
        println!("  running {} for {} (worker {})", c.name, duration(c.elapsed_seconds), c.worker.unwrap_or(0));
    }
    if let Some(eta) = status.estimated_completion_ms.filter(|_| status.status == "RUNNING") {
        let left = ((eta - now_ms()).max(0) as f64) / 1000.0;
        let sbu = match (status.remaining_sbu, status.sbu_seconds) {
            (Some(r), Some(unit)) => format!(" ({r:.1} SBU left, 1 SBU = {} here)", duration(unit)),
            _ => String::new(),
        };
        println!("estimated completion in {}{sbu}", duration(left));
    }
    Ok(EXIT_OK)
}

/// 42s, 12min 5s, 3h 20min.
fn duration(secs: f64) -> String {
    let secs = secs.max(0.0).round() as u64;
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}min {}s", secs / 60, secs % 60),
        _ => format!("{}h {}min", secs / 3600, secs % 3600 / 60),
    }
}

fn ago(ms: i64) -> String {
    let secs = (now_ms() - ms).max(0) / 1000;
    match secs {
        0..=119 => format!("started {secs}s ago"),
        120..=7199 => format!("started {}min ago", secs / 60),
        _ => format!("started {}h ago", secs / 3600),
    }
}

/// `sbu_unit`: 1 SBU here in milliseconds, when known.
pub fn build_status(store: &Store, run: &Run, nodes: &[RunNode], sbu_unit: Option<u64>) -> Result<BuildStatus, Failure> {
    let finished = |n: &&RunNode| !matches!(n.result.as_str(), "queued" | "running");
    let done: Vec<&RunNode> = nodes.iter().filter(finished).collect();
    // A node the run's death interrupted did not succeed either.
    let failed = done.iter().filter(|n| matches!(n.result.as_str(), "failed" | "skipped" | "interrupted")).count();
    let now = now_ms();
    // A run recorded by another host (a shared store) cannot be looked up here: assume alive.
    let alive = if run.host == store.host() { process_state(run.pid) } else { Some(false) };
    let status = match (run.status.as_str(), alive) {
        ("running", Some(true)) => "PAUSED",
        ("running", Some(false)) => "RUNNING",
        ("running", None) | ("failed", _) => "ERROR",
        ("interrupted", _) => "INTERRUPTED",
        _ => "COMPLETED",
    };
    let phase = match (run.status.as_str(), nodes.iter().any(|n| n.result != "queued")) {
        ("running", false) => "preparing",
        ("running", true) => "building",
        _ => "finished",
    };
    let running: Vec<&RunNode> = nodes.iter().filter(|n| n.result == "running").collect();
    let built: Vec<i64> = nodes.iter().filter(|n| n.result == "built").filter_map(RunNode::duration_ms).collect();
    let average = (!built.is_empty()).then(|| built.iter().sum::<i64>() as f64 / built.len() as f64 / 1000.0);
    // Remaining work: queued packages' expected times, plus what running ones have left.
    let recorded = store.median_build_times()?;
    let fallback = average.map(|a| (a * 1000.0) as u64).unwrap_or(0);
    let left = |n: &RunNode| -> (u64, u64) {
        if !matches!(n.result.as_str(), "queued" | "running") {
            return (0, 0);
        }
        // What is known now beats what was known when the run planned: a recorded time, else
        // the recipe's SBU hint at the SBU learnt meanwhile (a new store's first run).
        let hinted = n.sbu_hint.zip(sbu_unit).map(|(sbu, unit)| (sbu * unit as f64) as u64);
        let expected = recorded.get(&n.name).copied().or(hinted).or(n.expected_ms).unwrap_or(fallback);
        (expected, n.started_ms.map(|s| (now - s).max(0) as u64).unwrap_or(0))
    };
    // The work of one job, spread over the run's jobs (what remaining_ms(work, jobs) is).
    let remaining_one_job = super::progress::remaining_ms(nodes.iter().map(left), 1);
    let estimate = (run.status == "running").then(|| now + (remaining_one_job / run.jobs.max(1)) as i64);
    let phases = phases_of(nodes, &left);
    let current_phase = running.first().copied().or_else(|| nodes.iter().find(|n| n.result == "queued")).and_then(|n| n.phase.clone());
    let completed = done.len() as u64;
    Ok(BuildStatus {
        build_id: run.id,
        phase,
        status,
        targets: run.targets.clone(),
        started_at_ms: run.started_ms,
        finished_at_ms: run.finished_ms,
        current_packages: running
            .iter()
            .map(|n| Current { name: n.name.clone(), worker: n.worker, elapsed_seconds: n.started_ms.map(|s| (now - s) as f64 / 1000.0).unwrap_or(0.0) })
            .collect(),
        packages_completed: completed,
        packages_total: run.total,
        success_rate: if completed == 0 { 0.0 } else { (completed as usize - failed) as f64 / completed as f64 },
        error_rate: if completed == 0 { 0.0 } else { failed as f64 / completed as f64 },
        average_package_seconds: average,
        estimated_completion_ms: estimate,
        remaining_sbu: sbu_unit.map(|unit| remaining_one_job as f64 / unit as f64),
        sbu_seconds: sbu_unit.map(|unit| unit as f64 / 1000.0),
        current_phase,
        phases,
    })
}

/// The run's nodes grouped by phase, phases in the order their first node started (those
/// with no started node last, by name). `left`: a node's (expected, elapsed) milliseconds.
fn phases_of(nodes: &[RunNode], left: &dyn Fn(&RunNode) -> (u64, u64)) -> Vec<PhaseStatus> {
    // Each phase with the start of its first node.
    let mut by_name: std::collections::HashMap<String, (Option<i64>, PhaseStatus)> = Default::default();
    for n in nodes {
        let name = n.phase.clone().unwrap_or_default();
        let (first_start, p) = by_name.entry(name.clone()).or_insert_with(|| {
            (None, PhaseStatus { name, to_build: 0, finished: 0, failed: 0, in_store: 0, remaining_seconds: 0.0 })
        });
        match n.result.as_str() {
            "queued" | "running" => p.to_build += 1,
            "built" => (p.to_build, p.finished) = (p.to_build + 1, p.finished + 1),
            "failed" | "skipped" | "interrupted" => (p.to_build, p.finished, p.failed) = (p.to_build + 1, p.finished + 1, p.failed + 1),
            _ => p.in_store += 1,
        }
        p.remaining_seconds += super::progress::remaining_ms([left(n)], 1) as f64 / 1000.0;
        if let Some(started) = n.started_ms {
            *first_start = Some(first_start.map_or(started, |s| s.min(started)));
        }
    }
    let mut phases: Vec<(Option<i64>, PhaseStatus)> = by_name.into_values().collect();
    phases.sort_by(|(a, p), (b, q)| (a.is_none(), a, &p.name).cmp(&(b.is_none(), b, &q.name)));
    phases.into_iter().map(|(_, p)| p).collect()
}

/// `Some(stopped)` for a live process, `None` for one that is gone.
fn process_state(pid: u32) -> Option<bool> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state is the field after the parenthesised command name.
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    match state {
        "Z" | "X" => None,
        "T" | "t" => Some(true),
        _ => Some(false),
    }
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// The package
    #[arg(value_name = "NAME")]
    name: String,
    /// How many runs back
    #[arg(short = 'n', long, default_value_t = 20)]
    limit: usize,
    /// One JSON object per run on stdout
    #[arg(long)]
    json: bool,
}

pub fn history(global: &GlobalArgs, args: HistoryArgs) -> CliResult {
    let store = global.open_store()?;
    let rows = store.node_history(&args.name, args.limit)?;
    let reference = global.config()?.sbu_reference().to_string();
    let unit = store.median_build_time(&reference)?.filter(|&u| u > 0);
    let sbu = |n: &RunNode| Some(n.duration_ms()? as f64 / unit? as f64);
    if rows.is_empty() {
        return Err(Failure::usage(format!("{} was in no recorded build run of this store", args.name)));
    }
    if !args.json {
        println!("{:<6} {:<17} {:<12} {:>9} {:>6} {:>10} {:>10}  {:<14} DRV", "RUN", "WHEN (UTC)", "RESULT", "SECONDS", "SBU", "PEAK MEM", "OUT SIZE", "OUT");
    }
    for (run_id, run_started, n) in &rows {
        if args.json {
            let mut v = serde_json::to_value(n).expect("node serializes");
            v["run"] = json!(run_id);
            v["run_started_ms"] = json!(run_started);
            v["seconds"] = json!(n.duration_ms().map(|d| d as f64 / 1000.0));
            v["sbu"] = json!(sbu(n));
            emit_json(v);
            continue;
        }
        let secs = n.duration_ms().map(|d| format!("{:.1}", d as f64 / 1000.0)).unwrap_or_else(|| "-".into());
        let mem = n.peak_memory.map(human_bytes).unwrap_or_else(|| "-".into());
        let size = n.out_size.map(human_bytes).unwrap_or_else(|| "-".into());
        let out = n.out_hash.map(|o| o.short()).unwrap_or_else(|| "-".into());
        let when = super::html::utc(run_started / 1000);
        let when = when.trim_end_matches(" UTC");
        let sbus = sbu(n).filter(|_| n.result == "built").map(|s| format!("{s:.2}")).unwrap_or_else(|| "-".into());
        println!("{:<6} {:<17} {:<12} {:>9} {:>6} {:>10} {:>10}  {:<14} {}", run_id, when, n.result, secs, sbus, mem, size, out, n.drv_hash.short());
    }
    if !args.json && unit.is_none() {
        println!("(SBU: no recorded build of {reference}, the reference package, in this store; set sbu-reference in the config)");
    }
    Ok(EXIT_OK)
}
