//! `forge shell NAME [FILE...] [--failed] [-- COMMAND...]`: a shell in NAME's build sandbox
//! (the library operation is [`crate::shell`]).

use std::path::PathBuf;

use clap::Args;

use super::{CliResult, Failure, GlobalArgs, OverlayArgs};
use crate::sandbox::Exit;
use crate::shell::{ShellError, ShellRequest};

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  forge shell ncurses recipes/base.toml --overlay recipes/lfs-debian/book.toml --failed
  forge shell wordfreq recipes/demo.toml -- sh -c 'ls $FORGE_SOURCES'

The sandbox is the build's: NAME's inputs as /, its [env], its sources in $FORGE_SOURCES, a
writable /build (the start directory) and $FORGE_OUT. Nothing is registered in the store.
Inputs must be in the store (forge build FILE -p INPUT). The exit status is the command's.")]
pub struct ShellArgs {
    /// The package whose build sandbox to enter
    #[arg(value_name = "NAME")]
    name: String,
    /// Recipe or set files that have NAME [default: the files of the newest build run]
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    overlays: OverlayArgs,
    /// Start in NAME's kept failed build (forge build --keep-failed): its /build and
    /// $FORGE_OUT as the build left them; what the session changes in them stays
    #[arg(long)]
    failed: bool,
    /// Parallelism granted in the session ($FORGE_JOBS) [default: the number of CPUs]
    #[arg(long, value_name = "N")]
    build_jobs: Option<usize>,
    /// Run this instead of an interactive shell (after `--`)
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn run(global: &GlobalArgs, args: ShellArgs) -> CliResult {
    let store = global.open_store()?;
    let files = match args.files.is_empty() {
        false => args.files.clone(),
        true => newest_run_files(&store)?,
    };
    let planned = super::load_and_plan(&files, std::slice::from_ref(&args.name), &args.overlays)?;
    let node = planned.graph.node_by_name(&args.name).ok_or_else(|| Failure::usage(format!("no package {} in {}", args.name, describe(&files))))?;
    let request = ShellRequest {
        node,
        command: args.command,
        failed: args.failed,
        helper_exe: std::env::current_exe().map_err(|e| Failure::failed(format!("cannot locate the forge binary to run the sandbox: {e}")))?,
        build_jobs: args.build_jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
    };
    let exit = crate::shell::shell(&store, &planned.graph, &planned.plan, &request).map_err(|e| match e {
        ShellError::MissingInputs { .. } | ShellError::NoKeptBuild { .. } | ShellError::Imported { .. } => Failure::usage(e),
        other => Failure::failed(other),
    })?;
    Ok(match exit {
        Exit::Success => 0,
        Exit::Failed(code) => code,
        Exit::Signaled(signal) => 128 + signal,
        Exit::TimedOut => super::EXIT_FAILED,
        Exit::LimitExceeded(breach) => {
            eprintln!("forge: the session was ended: {breach}");
            super::EXIT_FAILED
        }
    })
}

/// The recipe files of the newest recorded build run (its targets up to the first `-p`).
fn newest_run_files(store: &crate::store::Store) -> Result<Vec<PathBuf>, Failure> {
    let run = store.run(None)?.ok_or_else(|| Failure::usage("name the recipe or set FILE that has the package (no build has run in this store yet)"))?;
    let files: Vec<PathBuf> = run.targets.split_whitespace().take_while(|w| *w != "-p").map(PathBuf::from).collect();
    if files.is_empty() {
        return Err(Failure::usage("name the recipe or set FILE that has the package"));
    }
    Ok(files)
}

fn describe(files: &[PathBuf]) -> String {
    files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
}
