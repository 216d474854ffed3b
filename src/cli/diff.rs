//! `forge diff A B`: what differs between two outputs, file by file, with unified diffs for
//! text and diffoscope (when installed) for the rest. `forge diff NAME --check` compares a
//! package's recorded output with the differing output its last `--check` kept.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Args;
use serde_json::json;

use super::{emit_json, CliResult, Failure, GlobalArgs, EXIT_FAILED, EXIT_OK};
use crate::diff::{self, Change, Entry};
use crate::hash::Digest;
use crate::store::Store;

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// Two outputs, each an out hash (or a unique prefix of at least 6 digits), a directory
    /// (e.g. a store path), or a package name (its newest output in the store); with --check,
    /// one package name
    #[arg(required = true, num_args = 1..=2, value_name = "OUTPUT")]
    outputs: Vec<String>,
    /// Compare package NAME's recorded output with the one its last `forge build --check` kept
    #[arg(long)]
    check: bool,
    /// One JSON object on stdout: both sides and every change (with text diffs)
    #[arg(long)]
    json: bool,
    /// Do not hand binary files over to diffoscope even when it is installed
    #[arg(long)]
    no_diffoscope: bool,
}

/// One side of the comparison.
struct Side {
    label: String,
    path: PathBuf,
}

pub fn run(global: &GlobalArgs, args: DiffArgs) -> CliResult {
    let store = global.open_store()?;
    let (a, b) = match (args.check, args.outputs.as_slice()) {
        (true, [name]) => check_pair(&store, name)?,
        (true, _) => return Err(Failure::usage("--check takes one package name: forge diff NAME --check")),
        (false, [a, b]) => (resolve(&store, a)?, resolve(&store, b)?),
        (false, _) => return Err(Failure::usage("give two outputs to compare (or one package name with --check)")),
    };
    let changes = diff::compare(&a.path, &b.path).map_err(Failure::failed)?;
    if args.json {
        let changes: Vec<serde_json::Value> = changes
            .iter()
            .map(|c| {
                let mut v = serde_json::to_value(c).expect("changes serialize");
                if let Some(text) = text_diff_of(c, &a, &b) {
                    v["diff"] = text.into();
                }
                v
            })
            .collect();
        emit_json(json!({"a": a.label, "b": b.label, "a_path": a.path, "b_path": b.path,
            "identical": changes.is_empty(), "changes": changes}));
    } else {
        print_changes(&changes, &a, &b, !args.no_diffoscope);
    }
    Ok(if changes.is_empty() { EXIT_OK } else { EXIT_FAILED })
}

/// NAME's newest recorded output, and the differing output `--check` kept for it.
fn check_pair(store: &Store, name: &str) -> Result<(Side, Side), Failure> {
    let recorded = by_name(store, name)?;
    let kept = store.root(&format!("check:{name}"))?;
    let other = kept.iter().find(|o| **o != recorded).ok_or_else(|| {
        Failure::usage(format!(
            "no differing --check output is kept for {name}: run `forge build FILE -p {name} --check` first \
             (a reproducible package keeps none)"
        ))
    })?;
    let side = |out: &Digest, what: &str| Side { label: format!("{name} {what} ({})", out.short()), path: store.object_path(out) };
    Ok((side(&recorded, "recorded"), side(other, "--check")))
}

fn by_name(store: &Store, name: &str) -> Result<Digest, Failure> {
    store.present_outs_by_name(name, 1)?.into_iter().next().ok_or_else(|| {
        Failure::usage(format!("no output of a package named {name:?} is in the store (build it first, or give an out hash)"))
    })
}

/// An out hash or prefix, a directory, or a package name.
fn resolve(store: &Store, what: &str) -> Result<Side, Failure> {
    let path = Path::new(what);
    if what.contains('/') || path.is_dir() {
        let meta = path.symlink_metadata().map_err(|e| Failure::usage(format!("{what}: {e}")))?;
        if !meta.is_dir() {
            return Err(Failure::usage(format!("{what} is not a directory (an output is a directory)")));
        }
        return Ok(Side { label: what.to_string(), path: path.to_path_buf() });
    }
    let is_hex = what.len() >= 6 && what.len() <= 64 && what.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex {
        let found = store.objects_with_prefix(&what.to_ascii_lowercase(), 2)?;
        match found.as_slice() {
            [out] => return Ok(Side { label: out.short(), path: store.object_path(out) }),
            [_, _, ..] => return Err(Failure::usage(format!("{what} is the prefix of more than one object; give more digits"))),
            [] => {} // perhaps a package named like hex
        }
    }
    let out = by_name(store, what).map_err(|_| {
        Failure::usage(format!("{what:?} is neither an object in the store, nor a directory, nor a package with an output here"))
    })?;
    Ok(Side { label: format!("{what} ({})", out.short()), path: store.object_path(&out) })
}

fn text_diff_of(change: &Change, a: &Side, b: &Side) -> Option<String> {
    let Change::Changed { path, what, .. } = change else { return None };
    if !what.contains(&"content") {
        return None;
    }
    diff::text_diff(&a.path.join(path), &b.path.join(path), &format!("a/{path}"), &format!("b/{path}"))
}

fn print_changes(changes: &[Change], a: &Side, b: &Side, diffoscope: bool) {
    println!("--- a: {} ({})", a.label, a.path.display());
    println!("+++ b: {} ({})", b.label, b.path.display());
    if changes.is_empty() {
        println!("identical: no file differs");
        return;
    }
    for change in changes {
        match change {
            Change::Added { path, entry } => println!("added    {path} ({})", describe(entry)),
            Change::Removed { path, entry } => println!("removed  {path} ({})", describe(entry)),
            Change::Changed { path, what, a: ea, b: eb } => {
                println!("changed  {path} ({}: {} -> {})", what.join(", "), describe(ea), describe(eb))
            }
        }
    }
    let installed = diffoscope && which("diffoscope").is_some();
    for change in changes {
        let Change::Changed { path, what, a: ea, b: eb } = change else { continue };
        if !what.contains(&"content") {
            continue;
        }
        println!();
        if let Some(text) = text_diff_of(change, a, b) {
            print!("{text}");
        } else if installed {
            println!("diffoscope a/{path} b/{path}:");
            // diffoscope exits 1 when the files differ, which they do: its status says nothing.
            let _ = Command::new("diffoscope").args(["--no-progress", "--text", "-"]).arg(a.path.join(path)).arg(b.path.join(path)).status();
        } else {
            println!("binary files a/{path} and b/{path} differ ({} -> {}); install diffoscope to see inside them", describe(ea), describe(eb));
        }
    }
}

fn describe(entry: &Entry) -> String {
    match entry {
        Entry::File { size, executable: true } => format!("executable, {size} bytes"),
        Entry::File { size, executable: false } => format!("{size} bytes"),
        Entry::Symlink { target } => format!("symlink to {target}"),
        Entry::Dir => "directory".into(),
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(program)).find(|p| p.is_file())
}
