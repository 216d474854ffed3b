//! `forge push --to URL [FILE...]`: upload built outputs and signed realisations to a cache.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::fetch::human_bytes;
use super::{emit_json, load_and_plan, CliResult, Failure, GlobalArgs, EXIT_OK};
use crate::cache::{push, remote, SecretKey};
use crate::store::Realisation;

#[derive(Args, Debug)]
pub struct PushArgs {
    /// The cache: file:///path, /path, or http(s)://host/path (a server accepting PUT)
    #[arg(long, value_name = "URL")]
    to: String,
    /// Push the outputs of these recipes or sets and everything they depend on
    /// [default: everything built in this store]
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Only these packages (and their dependencies) out of FILEs
    #[arg(short, long = "package", value_name = "NAME")]
    packages: Vec<String>,
    #[command(flatten)]
    overlays: super::OverlayArgs,
    /// The secret key that signs the realisations [default: secret-key-file from the config]
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Bearer token for servers that require one (forge serve --token)
    #[arg(long, env = "FORGE_CACHE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Objects packed and uploaded at once
    #[arg(short, long, value_name = "N", default_value_t = 4)]
    jobs: usize,
    /// Print the report as one JSON object on stdout
    #[arg(long)]
    json: bool,
}

pub fn run(global: &GlobalArgs, args: PushArgs) -> CliResult {
    let key_file = match &args.key {
        Some(k) => k.clone(),
        None => global.config()?.secret_key_file.ok_or_else(|| {
            Failure::usage("pushing signs realisations: pass --key FILE or set secret-key-file in the config (forge key generate NAME makes one)")
        })?,
    };
    if args.files.is_empty() && !args.packages.is_empty() {
        return Err(Failure::usage("--package selects out of FILEs: name the recipe or set files too"));
    }
    let key = SecretKey::load(&key_file).map_err(Failure::usage)?;
    let remote = remote::open(&args.to, args.token.as_deref()).map_err(Failure::usage)?;
    let store = global.open_store()?;
    let items: Vec<Realisation> = if args.files.is_empty() {
        store.all_realisations()?
    } else {
        let planned = load_and_plan(&args.files, &args.packages, &args.overlays)?;
        let mut items = Vec::new();
        for (id, drv) in planned.plan.drv_hashes.iter().enumerate() {
            match store.realisation_by_drv(drv)? {
                Some(r) => items.push(r),
                None => eprintln!("forge: warning: {} is not built in this store; not pushed", planned.graph.nodes[id].recipe.name),
            }
        }
        items
    };
    let quiet = args.json;
    let progress = move |name: &str, out: &crate::hash::Digest, bytes: u64| {
        if !quiet {
            eprintln!("{name}: uploaded {} ({})", out.short(), human_bytes(bytes));
        }
    };
    let started = std::time::Instant::now();
    let report = push::push(&store, remote.as_ref(), &key, &items, args.jobs, &progress).map_err(Failure::failed)?;
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        emit_json(json!({
            "event": "push", "to": args.to, "realisations": items.len(),
            "realisations_uploaded": report.realisations_uploaded,
            "objects_uploaded": report.objects_uploaded, "objects_present": report.objects_present,
            "bytes_uploaded": report.bytes_uploaded, "blobs_uploaded": report.blobs_uploaded,
            "blobs_skipped": report.blobs_skipped, "blob_bytes_skipped": report.blob_bytes_skipped,
            "stale_uploads_removed": report.stale_uploads_removed,
            "failed": report.failed.iter().map(|(name, out, why)| json!({"name": name, "out": out.to_hex(), "error": why})).collect::<Vec<_>>(),
            "seconds": secs,
        }));
    } else {
        for (name, out, why) in &report.failed {
            eprintln!("forge: cannot push {name} ({}): {why}; its realisation was not pushed", out.short());
        }
        eprintln!(
            "pushed {} of {} realisations and {} objects ({}; {} already there, {} of big files already there) to {} in {secs:.1}s",
            report.realisations_uploaded,
            items.len(),
            report.objects_uploaded,
            human_bytes(report.bytes_uploaded),
            report.objects_present,
            human_bytes(report.blob_bytes_skipped),
            args.to
        );
    }
    Ok(if report.failed.is_empty() { EXIT_OK } else { super::EXIT_FAILED })
}
