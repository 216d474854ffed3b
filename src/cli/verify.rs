//! `forge verify [--repair]`: re-hash every store object and source, report what changed.

use clap::Args;
use serde_json::json;

use super::{emit_json, CliResult, GlobalArgs, EXIT_FAILED, EXIT_OK};

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Remove corrupt objects and sources (they are rebuilt or fetched again when next needed)
    #[arg(long)]
    repair: bool,
    /// Print the report as one JSON object on stdout
    #[arg(long)]
    json: bool,
}

pub fn run(global: &GlobalArgs, args: VerifyArgs) -> CliResult {
    let store = global.open_store()?;
    let report = store.verify(args.repair)?;
    let verb = if report.repaired { "removed" } else { "found" };
    if args.json {
        emit_json(json!({
            "event": "verify",
            "checked_objects": report.checked_objects,
            "checked_sources": report.checked_sources,
            "corrupt": report.corrupt.iter().map(|c| json!({
                "expected": c.expected.to_hex(),
                "actual": c.actual.map(|a| a.to_hex()),
                "problem": c.problem,
            })).collect::<Vec<_>>(),
            "missing": report.missing.iter().map(|d| d.to_hex()).collect::<Vec<_>>(),
            "orphans": report.orphans.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "corrupt_sources": report.corrupt_sources.iter().map(|s| s.path.display().to_string()).collect::<Vec<_>>(),
            "repaired": report.repaired,
            "clean": report.is_clean(),
        }));
    } else {
        for c in &report.corrupt {
            match (&c.actual, &c.problem) {
                (Some(actual), _) => println!("corrupt object {} (content now hashes to {actual}): {verb}", c.expected),
                (None, Some(problem)) => println!("corrupt object {}: {problem}: {verb}", c.expected),
                (None, None) => println!("corrupt object {}: {verb}", c.expected),
            }
        }
        for d in &report.missing {
            println!("missing object {d}: recorded as present but its directory is gone");
        }
        for p in &report.orphans {
            println!("orphan {} (no database record): {verb}", p.display());
        }
        for s in &report.corrupt_sources {
            let expected = s.expected.as_ref().map(|c| c.to_string()).unwrap_or_else(|| "?".into());
            let actual = s.actual.as_ref().map(|c| c.to_string()).unwrap_or_else(|| "unreadable".into());
            println!("corrupt source {}: expected {expected}, got {actual}: {verb}", s.path.display());
        }
        println!(
            "checked {} objects and {} sources: {}",
            report.checked_objects,
            report.checked_sources,
            if report.is_clean() {
                "all intact".to_string()
            } else if report.repaired {
                "problems repaired; affected packages are rebuilt on the next build".to_string()
            } else {
                "problems found; run `forge verify --repair` to remove the damaged entries".to_string()
            }
        );
    }
    Ok(if report.is_clean() || report.repaired { EXIT_OK } else { EXIT_FAILED })
}
