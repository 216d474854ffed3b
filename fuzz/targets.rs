//! The fuzz targets' bodies: each takes arbitrary bytes to one of forge's readers of
//! untrusted input and must return (an `Err` is fine) without panicking, hanging or writing
//! outside its scratch directory. Shared by `fuzz/fuzz_targets/*.rs` (libFuzzer, nightly) and
//! `tests/fuzz_corpus.rs` (every corpus file, on stable, in `cargo test`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use forge::cache::archive::{Declared, Unpacker};
use forge::cache::format::ObjectInfo;
use forge::cache::keys::{PublicKey, Trust};
use forge::hash::Digest;

/// The key that signed the realisations in the corpus (fuzz/fuzz-corpus.secret): trusted by
/// the realisation target only, so that mutations of a valid document reach the signature check.
const CORPUS_KEY: &str = "fuzz-corpus:pbG5NQEFk8z5a6VA7Hu3QyZApu8pFgoLF7Zb5Fo9m1M=";

/// A scratch directory per process, with a few recipes a fuzzed set can include.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // One directory per process, named by its pid; those of dead processes are removed
        // here, so repeated runs do not pile up (a static is never dropped).
        let tmp = std::env::temp_dir();
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("forge-fuzz-").and_then(|p| p.parse::<u32>().ok()) {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    make_writable(&entry.path());
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = tmp.join(format!("forge-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let recipe = |name: &str, deps: &str| {
            format!("[package]\nname = \"{name}\"\nversion = \"1\"\n\n[deps]\nbuild = [{deps}]\n\n[build]\nscript = \"true\"\n")
        };
        std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
        std::fs::write(dir.join("a.toml"), recipe("a", "")).expect("write");
        std::fs::write(dir.join("b.toml"), recipe("b", "\"a\"")).expect("write");
        std::fs::write(dir.join("sub/c.toml"), recipe("c", "\"a\", \"b\"")).expect("write");
        std::fs::write(dir.join("sub/inner.toml"), "[set]\nname = \"inner\"\ninclude = [\"c.toml\"]\n").expect("write");
        dir
    })
}

/// A file of this process's own (targets may run in parallel threads in the replay test).
fn write_input(name: &str, data: &[u8]) -> PathBuf {
    let id = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let path = scratch().join(format!("{name}-{id}.toml"));
    std::fs::write(&path, data).expect("write fuzz input");
    path
}

/// Load, resolve and hash: what `forge show FILE` does before touching a store.
fn load_resolve_plan(path: &Path) {
    if let Ok(loaded) = forge::recipe::load(&[path.to_path_buf()]) {
        if let Ok(graph) = forge::graph::Graph::resolve(loaded) {
            let _ = forge::derivation::plan(&graph);
        }
    }
}

/// A recipe file (TOML, docs/recipes.md) through the loader, the graph and the derivations.
pub fn recipe(data: &[u8]) {
    load_resolve_plan(&write_input("recipe", data));
}

/// A set file beside a.toml, b.toml and sub/ (so includes and globs find something).
pub fn set(data: &[u8]) {
    load_resolve_plan(&write_input("set", data));
}

/// A cache's object info (docs/cache-format.md), as substitution parses it.
pub fn object_info(data: &[u8]) {
    let out = Digest::of(b"fuzz");
    if let Ok(info) = ObjectInfo::parse(data, &out) {
        let _ = Declared::of(&info);
    }
    // And any out hash it names, so the fuzzer need not guess ours.
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Some(named) = value["out"].as_str().and_then(|h| h.parse::<Digest>().ok()) {
            if let Ok(info) = ObjectInfo::parse(data, &named) {
                let _ = Declared::of(&info);
            }
        }
    }
}

/// A signed realisation (docs/cache-format.md), checked against the corpus key.
pub fn realisation(data: &[u8]) {
    static TRUST: OnceLock<Trust> = OnceLock::new();
    let trust = TRUST.get_or_init(|| Trust::new([PublicKey::parse(CORPUS_KEY).expect("corpus key")]));
    let drv = serde_json::from_slice::<serde_json::Value>(data)
        .ok()
        .and_then(|v| v["drv"].as_str().and_then(|h| h.parse::<Digest>().ok()))
        .unwrap_or_else(|| Digest::of(b"fuzz"));
    let _ = forge::cache::substitute::check_realisation(data, &drv, trust);
}

/// A tar stream (the fuzz input, compressed here so that the fuzzer works on tar structure)
/// through the unpacker, with declared sizes of 1 MiB in 64 files.
pub fn archive(data: &[u8]) {
    let Ok(compressed) = zstd::encode_all(data, 1) else { return };
    let dir = tempfile::Builder::new().prefix("unpack-").tempdir_in(scratch()).expect("unpack dir");
    let declared = Declared { archive_bytes: compressed.len() as u64, files: 64, file_bytes: 1 << 20 };
    let root = dir.path().join("out");
    let mut unpacker = Unpacker::new(&root, declared).expect("unpack root");
    let _ = unpacker.archive(&compressed[..], "fuzz input");
    // Whatever it left is inside `root` and removable (read-only dirs included).
    make_writable(&root);
}

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if entry.file_type().is_dir() {
            let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o755));
        }
    }
}
