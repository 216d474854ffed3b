//! `forge gc [--dry-run]`: delete objects that no root keeps.

use clap::Args;
use serde_json::json;

use super::{emit_json, CliResult, GlobalArgs, EXIT_OK};

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Only list what would be deleted
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Print the report as one JSON object on stdout
    #[arg(long)]
    json: bool,
}

pub fn run(global: &GlobalArgs, args: GcArgs) -> CliResult {
    let store = global.open_store()?;
    let report = store.gc(args.dry_run)?;
    if args.json {
        emit_json(json!({
            "event": "gc",
            "dry_run": report.dry_run,
            "removed_objects": report.removed_objects.iter().map(|o| o.out.to_hex()).collect::<Vec<_>>(),
            "removed_orphans": report.removed_orphans.len(),
            "removed_tmp": report.removed_tmp.len(),
            "kept_objects": report.kept_objects,
            "freed_bytes": report.freed_bytes,
        }));
        return Ok(EXIT_OK);
    }
    let verb = if report.dry_run { "would delete" } else { "deleted" };
    for o in &report.removed_objects {
        println!("{verb} object {} ({} KiB)", o.out, o.bytes >> 10);
    }
    for p in report.removed_orphans.iter().chain(&report.removed_tmp) {
        println!("{verb} {}", p.display());
    }
    println!(
        "{verb} {} objects, {} orphans, {} stale scratch dirs ({:.1} MiB); kept {} objects held by roots",
        report.removed_objects.len(),
        report.removed_orphans.len(),
        report.removed_tmp.len(),
        report.freed_bytes as f64 / (1 << 20) as f64,
        report.kept_objects
    );
    Ok(EXIT_OK)
}
