//! `forge audit FILE... --against URL...`: every node's local out hash against the caches'
//! trusted realisations (like `guix challenge`): a table, `--json`, a summary, and with
//! `--report FILE.html` a self-contained page with per-package history and diffs.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::{emit_json, CliResult, Failure, GlobalArgs, EXIT_FAILED, EXIT_OK};
use crate::audit::{self, PackageAudit, Verdict};
use crate::cache::remote;

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    targets: super::Targets,
    /// Compare with this cache (repeatable) [default: the config's substituters]
    #[arg(long = "against", value_name = "URL")]
    against: Vec<String>,
    /// Trust realisations signed by this key, NAME:BASE64 (repeatable; added to the config's)
    #[arg(long = "trusted-key", value_name = "KEY")]
    trusted_keys: Vec<String>,
    /// One JSON object per package on stdout, then a summary
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML report (summary, verdicts, history, diffs) here
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// Do not download the caches' disputed outputs (they are what `forge diff` and the report compare)
    #[arg(long)]
    no_fetch: bool,
}

pub fn run(global: &GlobalArgs, args: AuditArgs) -> CliResult {
    let planned = args.targets.plan()?;
    let store = global.open_store()?;
    let config = global.config()?;
    let urls: Vec<&String> = if args.against.is_empty() { config.substituters.iter().collect() } else { args.against.iter().collect() };
    if urls.is_empty() {
        eprintln!("forge: warning: no cache to compare with (--against URL, or substituters in the config): only this store's own evidence is shown");
    }
    let trust = super::substitute::trust(&args.trusted_keys, &config)?;
    if trust.is_empty() && !urls.is_empty() {
        return Err(Failure::usage("no trusted key: give --trusted-key NAME:BASE64 (or trusted-public-keys in the config); only signed realisations are compared"));
    }
    let caches = urls.iter().map(|u| remote::open(u, None)).collect::<Result<Vec<_>, _>>().map_err(Failure::usage)?;
    let mut warn = |w: String| eprintln!("forge: warning: {w}");
    let audits = audit::audit(&store, &planned.graph, &planned.plan, &caches, &trust, !args.no_fetch, &mut warn)?;

    let count = |v: Verdict| audits.iter().filter(|a| a.verdict() == v).count();
    let (matched, mismatched) = (count(Verdict::Match), count(Verdict::Mismatch));
    let unknown = audits.len() - matched - mismatched;
    let nondeterministic = audits.iter().filter(|a| a.nondeterministic()).count();
    if args.json {
        for a in &audits {
            let mut v = serde_json::to_value(a).expect("audit serializes");
            v["event"] = "audit".into();
            v["verdict"] = serde_json::to_value(a.verdict()).expect("verdict serializes");
            v["nondeterministic"] = a.nondeterministic().into();
            emit_json(v);
        }
        emit_json(json!({"event": "summary", "packages": audits.len(), "match": matched, "mismatch": mismatched,
            "unknown": unknown, "nondeterministic": nondeterministic}));
    } else {
        print_table(&audits, &urls);
        println!(
            "\n{} packages: {matched} match, {mismatched} mismatch, {unknown} unknown; {nondeterministic} ever produced more than one output",
            audits.len()
        );
    }
    if let Some(path) = &args.report {
        let html = super::audit_report::render(&store, &audits, &urls);
        std::fs::write(path, html).map_err(|e| Failure::failed(format!("cannot write {}: {e}", path.display())))?;
        if !args.json {
            println!("report: {}", path.display());
        }
    }
    super::exit_without_freeing(planned);
    Ok(if mismatched > 0 { EXIT_FAILED } else { EXIT_OK })
}

fn print_table(audits: &[PackageAudit], urls: &[&String]) {
    for (i, url) in urls.iter().enumerate() {
        println!("cache {}: {url}", i + 1);
    }
    let mut header = format!("{:<28} {:<14}", "PACKAGE", "LOCAL");
    for i in 0..urls.len() {
        header.push_str(&format!(" {:<28}", format!("CACHE {}", i + 1)));
    }
    println!("{header}");
    for a in audits {
        let local = a.local.map(|o| o.short()).unwrap_or_else(|| "-".into());
        let mut line = format!("{:<28} {:<14}", a.name, local);
        for answer in &a.caches {
            let cell = match answer.verdict {
                Verdict::Mismatch => {
                    let other = answer.signed.iter().find(|(o, _)| Some(*o) != a.local);
                    let (out, key) = other.map(|(o, k)| (o.short(), k.as_str())).unwrap_or_default();
                    format!("MISMATCH {out} ({key})")
                }
                v => v.as_str().to_string(),
            };
            line.push_str(&format!(" {cell:<28}"));
        }
        if a.nondeterministic() {
            line.push_str("  non-deterministic");
        }
        println!("{}", line.trim_end());
    }
    for a in audits.iter().filter(|a| !a.used_by.is_empty()) {
        let uses: Vec<String> = a
            .used_by
            .iter()
            .map(|u| {
                let names: Vec<&str> = u.dependents.iter().map(|d| d.name.as_str()).collect();
                let names = if names.is_empty() { "nothing here".to_string() } else { names.join(", ") };
                format!("{} (built against it: {names})", u.out.short())
            })
            .collect();
        println!("{}: non-deterministic, outputs seen: {}", a.name, uses.join("; "));
    }
    for a in audits.iter().filter(|a| !a.fetched.is_empty()) {
        for out in &a.fetched {
            println!("{}: see what differs: forge diff {} {}", a.name, a.local.map(|o| o.short()).unwrap_or_default(), out.short());
        }
    }
}
