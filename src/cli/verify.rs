//! `forge verify [--repair]`: re-hash every store object and source, report what changed;
//! `forge verify --cache DIR [--repair]`: check a directory cache the same way.

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
    /// Verify this binary cache (a directory: file:///path or /path) instead of the store;
    /// with --repair, corrupt objects are re-uploaded from the store and bad realisations deleted
    #[arg(long, value_name = "URL")]
    cache: Option<String>,
    /// Also check signatures by this key, NAME:BASE64 (repeatable; added to the config's)
    #[arg(long = "trusted-key", value_name = "KEY")]
    trusted_keys: Vec<String>,
}

pub fn run(global: &GlobalArgs, args: VerifyArgs) -> CliResult {
    if let Some(url) = &args.cache {
        return verify_cache(global, url, &args);
    }
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

fn verify_cache(global: &GlobalArgs, url: &str, args: &VerifyArgs) -> CliResult {
    use crate::cache::verify;
    let dir = url.strip_prefix("file://").unwrap_or(url);
    if !dir.starts_with('/') {
        return Err(super::Failure::usage(format!(
            "--cache {url}: only a directory cache (file:///path) can be listed and verified; run forge verify on the machine that holds it"
        )));
    }
    let trust = super::substitute::trust(&args.trusted_keys, &global.config()?)?;
    let store = global.open_store()?;
    let report = verify::verify(std::path::Path::new(dir), &store, &trust, args.repair).map_err(super::Failure::failed)?;
    if args.json {
        emit_json(json!({
            "event": "verify-cache", "cache": url,
            "objects_checked": report.objects_checked, "realisations_checked": report.realisations_checked,
            "problems": report.problems.iter().map(|(p, why)| json!({"path": p, "problem": why})).collect::<Vec<_>>(),
            "unverified_signers": report.unverified_signers,
            "repaired": report.repaired.iter().map(|d| d.to_hex()).collect::<Vec<_>>(),
            "unrepaired": report.unrepaired.iter().map(|d| d.to_hex()).collect::<Vec<_>>(),
            "removed": report.removed,
            "stale_uploads_removed": report.stale_uploads_removed,
            "clean": report.is_clean(),
        }));
    } else {
        for (path, why) in &report.problems {
            println!("corrupt {path}: {why}");
        }
        for d in &report.repaired {
            println!("repaired object {d} from the local store");
        }
        for d in &report.unrepaired {
            println!("cannot repair object {d}: not in the local store (substitute it from a good cache first, then verify --repair again)");
        }
        for r in &report.removed {
            println!("deleted {r}");
        }
        if report.stale_uploads_removed > 0 {
            println!("deleted {} partial uploads left by killed pushers", report.stale_uploads_removed);
        }
        if report.unverified_signers > 0 {
            println!("{} realisations are signed by keys not trusted here: signatures not checked", report.unverified_signers);
        }
        println!(
            "checked {} objects and {} realisations in {url}: {}",
            report.objects_checked,
            report.realisations_checked,
            if report.is_clean() { "all intact" } else if args.repair { "repaired what the store could" } else { "problems found; --repair fixes them from the local store" }
        );
    }
    let ok = report.is_clean() || (args.repair && report.fully_repaired());
    Ok(if ok { EXIT_OK } else { EXIT_FAILED })
}
