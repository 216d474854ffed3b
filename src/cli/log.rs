//! `forge log NAME`: print the log of the latest build of a package.

use clap::Args;

use super::{CliResult, Failure, GlobalArgs, EXIT_OK};

#[derive(Args, Debug)]
pub struct LogArgs {
    /// Package name (as in `[package] name`)
    name: String,
}

pub fn run(global: &GlobalArgs, args: LogArgs) -> CliResult {
    let store = global.open_store()?;
    let Some(path) = store.latest_log(&args.name)? else {
        return Err(Failure::failed(format!(
            "no build of package {} is recorded in store {} (only built packages have logs; cached ones were built earlier or elsewhere)",
            args.name,
            store.dir().display()
        )));
    };
    let log = std::fs::read(&path)
        .map_err(|e| Failure::failed(format!("cannot read log {}: {e}", path.display())))?;
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(&log);
    Ok(EXIT_OK)
}
