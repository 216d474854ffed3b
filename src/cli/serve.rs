//! `forge serve --listen ADDR`: serve the store as a binary cache over HTTP.

use std::path::PathBuf;

use clap::Args;

use super::{CliResult, Failure, GlobalArgs, EXIT_OK};
use crate::cache::serve::{self, ServeOptions};
use crate::cache::SecretKey;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address and port to listen on (port 0 picks a free one)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Sign the store's realisations with this secret key (clients must trust its public key)
    /// [default: secret-key-file from the config]
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Accept uploads (PUT) from clients presenting this bearer token; without it the
    /// server is read-only
    #[arg(long, env = "FORGE_SERVE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Requests handled at once
    #[arg(long, value_name = "N", default_value_t = 8)]
    threads: usize,
}

pub fn run(global: &GlobalArgs, args: ServeArgs) -> CliResult {
    let key_file = match args.key {
        Some(k) => Some(k),
        None => global.config()?.secret_key_file,
    };
    let key = key_file.map(|f| SecretKey::load(&f)).transpose().map_err(Failure::usage)?;
    if key.is_none() {
        eprintln!("forge: warning: no signing key (--key): only realisations pushed to this server are served");
    }
    let store = global.open_store()?;
    let signer = key.as_ref().map(|k| k.public().to_text());
    let opts = ServeOptions { token: args.token, key, threads: args.threads };
    let writable = if opts.token.is_some() { "uploads with the token" } else { "read-only" };
    let ready = |addr: std::net::SocketAddr| {
        eprintln!("serving {} at http://{addr}/ ({writable})", store.dir().display());
        if let Some(s) = &signer {
            eprintln!("clients trust: {s}");
        }
    };
    let log = |line: String| eprintln!("{line}");
    serve::serve(&store, &args.listen, opts, ready, &log).map_err(Failure::failed)?;
    Ok(EXIT_OK)
}
