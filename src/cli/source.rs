//! `forge source add PATH...`: register local files in the store by content (sha256, md5 and
//! blake3), so any recipe pinning one of those checksums finds them without a download.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::fetch::human_bytes;
use super::{CliResult, Failure, GlobalArgs, EXIT_FAILED, EXIT_OK};
use crate::source;
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub enum SourceCommand {
    /// Register files (directories: every file below them) as sources, by content
    Add(AddArgs),
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// Files or directories (walked recursively)
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

pub fn run(global: &GlobalArgs, command: SourceCommand) -> CliResult {
    match command {
        SourceCommand::Add(args) => add(global, args),
    }
}

fn add(global: &GlobalArgs, args: AddArgs) -> CliResult {
    let store = global.open_store()?;
    let (mut added, mut present, mut failed) = (0, 0, 0);
    for path in &args.paths {
        let files = match files_under(path) {
            Ok(files) => files,
            Err(message) => {
                eprintln!("error: {message}");
                failed += 1;
                continue;
            }
        };
        for file in files {
            match add_one(&store, &file) {
                Ok(true) => added += 1,
                Ok(false) => present += 1,
                Err(failure) => {
                    eprintln!("error: {}", failure.message);
                    failed += 1;
                }
            }
        }
    }
    let mut summary = format!("{added} added, {present} already present");
    if failed > 0 {
        summary.push_str(&format!(", {failed} failed"));
    }
    eprintln!("{summary}");
    Ok(if failed > 0 { EXIT_FAILED } else { EXIT_OK })
}

/// Register one file; prints its checksums. `Ok(false)`: it was fully present already.
fn add_one(store: &Store, file: &Path) -> Result<bool, Failure> {
    let stored = source::store_by_content(store, file, None).map_err(Failure::failed)?;
    let ids = &stored.ids;
    let verb = if stored.added.is_empty() { "present" } else { "added  " };
    println!("{verb} {} ({}) sha256:{} md5:{}", file.display(), human_bytes(ids.size), ids.sha256.hex(), ids.md5.hex());
    Ok(!stored.added.is_empty())
}

/// `path` itself if it is a file, else every regular file below it (symlinks followed),
/// sorted so the output is stable.
fn files_under(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(path).follow_links(true).sort_by_file_name() {
        let entry = entry.map_err(|e| format!("cannot walk {}: {e}", path.display()))?;
        if entry.file_type().is_file() {
            files.push(entry.into_path());
        }
    }
    Ok(files)
}
