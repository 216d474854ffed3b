//! `forge key generate NAME`: an ed25519 key pair for signing what `forge push` uploads.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CliResult, Failure, EXIT_OK};
use crate::cache::SecretKey;

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Write NAME.secret (mode 0600) and NAME.public, and print the public key to trust
    Generate(GenerateArgs),
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// The key's name, written into every signature (e.g. ci-1, laptop)
    name: String,
    /// Where to write the key files [default: ~/.config/forge/keys]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn run(command: KeyCommand) -> CliResult {
    let KeyCommand::Generate(args) = command;
    let dir = match args.dir {
        Some(d) => d,
        None => crate::cache::Config::default_path()
            .and_then(|p| p.parent().map(|d| d.join("keys")))
            .ok_or_else(|| Failure::usage("no HOME to put keys in: pass --dir DIR"))?,
    };
    let key = SecretKey::generate(&args.name).map_err(Failure::usage)?;
    let (secret, public) = key.write_pair(&dir).map_err(Failure::failed)?;
    eprintln!("secret key: {} (keep it private; push with --key or secret-key-file in the config)", secret.display());
    eprintln!("public key: {} (add it to trusted-public-keys on the machines that substitute)", public.display());
    println!("{}", key.public().to_text());
    Ok(EXIT_OK)
}
