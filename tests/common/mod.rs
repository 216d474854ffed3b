//! Shared support for the integration tests: a temporary store per test, the real
//! `forge` binary, and a source cache so that the seeds' Debian packages are fetched
//! once per machine (under target/), not once per test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use forge::hash::Checksum;
use forge::store::Store;

pub fn forge_bin() -> &'static str {
    env!("CARGO_BIN_EXE_forge")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory with its own store.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
}

impl TestEnv {
    /// An empty store (nothing fetched).
    pub fn empty() -> TestEnv {
        let dir = tempfile::Builder::new().prefix("forge-it-").tempdir().expect("tempdir");
        let store = dir.path().join("store");
        TestEnv { dir, store }
    }

    /// A store holding the busybox seed's source (.deb), so building `seed` needs no network.
    pub fn with_seed_sources() -> TestEnv {
        let env = TestEnv::empty();
        env.import_sources(seed_cache());
        env
    }

    /// A store holding every source of the seeds and the bootstrap toolchain.
    pub fn with_toolchain_sources() -> TestEnv {
        let env = TestEnv::empty();
        env.import_sources(toolchain_cache());
        env
    }

    /// Put the seed's sources into this env's store (for a store made by hand, e.g. on a
    /// small file system).
    pub fn import_seed_sources(&self) {
        self.import_sources(seed_cache());
    }

    fn import_sources(&self, cache_store: &Path) {
        let store = Store::open(&self.store).expect("open test store");
        for entry in std::fs::read_dir(cache_store.join("sources")).expect("read cache sources") {
            let path = entry.expect("dir entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).expect("utf-8 name").to_string();
            let Some((algo, hex)) = name.split_once('-') else { continue };
            let checksum = Checksum::parse(algo, hex).expect("cache source named ALGO-HEX");
            store.add_source(&path, &checksum).expect("import cached source");
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Write a file under the test dir (parents created) and return its path.
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, content).expect("write");
        path
    }

    /// A command running the real binary against this store, with a clean environment.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(forge_bin());
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("FORGE_STORE", &self.store)
            .current_dir(self.dir.path());
        cmd
    }

    pub fn forge(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run forge")
    }

    /// `forge build --json ARGS`, returning the parsed events and the output.
    pub fn build_json(&self, args: &[&str]) -> (Vec<serde_json::Value>, Output) {
        let mut full = vec!["build", "--json"];
        full.extend_from_slice(args);
        let out = self.forge(&full);
        (json_lines(&out.stdout), out)
    }
}

pub fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// Names of the nodes that have an event of this kind ("built", "cached", "failed", ...).
pub fn names_with(events: &[serde_json::Value], kind: &str) -> Vec<String> {
    let mut names: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == kind)
        .map(|e| e["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

/// The node event (built/cached/failed/skipped) of one package.
pub fn event_of<'a>(events: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    events
        .iter()
        .find(|e| e["name"] == name && e["event"] != "started")
        .unwrap_or_else(|| panic!("no event for {name} in {events:#?}"))
}

/// `forge key generate NAME` in env's dir; returns (secret key path, public key text).
pub fn keygen(env: &TestEnv, name: &str) -> (PathBuf, String) {
    let out = env.forge(&["key", "generate", name, "--dir", "keys"]);
    assert_exit(&out, 0);
    (env.path(&format!("keys/{name}.secret")), stdout(&out).trim().to_string())
}

/// The out hash in the first event about `name`.
pub fn out_of(events: &[serde_json::Value], name: &str) -> String {
    event_of(events, name)["out"].as_str().unwrap_or_else(|| panic!("{name} has no out: {events:#?}")).to_string()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Assert an exit status, showing the output when it differs.
#[track_caller]
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
        stdout(out),
        stderr(out)
    );
}

/// Absolute paths of the seed recipes, for sets written by tests.
pub fn seed_includes() -> String {
    let t = repo().join("toolchain");
    format!("{:?}, {:?}", t.join("busybox-static.toml"), t.join("seed.toml"))
}

pub fn toolchain_includes() -> String {
    format!("{:?}", repo().join("toolchain").join("*.toml"))
}

/// A store under target/ in which the seeds' sources were fetched once (forge's own
/// locks make concurrent test processes safe here).
fn cache_store(what: &str, files: &[PathBuf]) -> PathBuf {
    let dir = repo().join("target").join("forge-test-cache").join(what);
    let out = Command::new(forge_bin())
        .arg("build")
        .arg("--store")
        .arg(&dir)
        .args(files)
        .output()
        .expect("run forge to fill the test source cache");
    assert!(
        out.status.success(),
        "filling the source cache {} failed (needs apt-get download to work):\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

pub fn seed_cache() -> &'static Path {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    CACHE.get_or_init(|| {
        let t = repo().join("toolchain");
        cache_store("seed", &[t.join("busybox-static.toml"), t.join("seed.toml")])
    })
}

pub fn toolchain_cache() -> &'static Path {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    CACHE.get_or_init(|| cache_store("toolchain", &[repo().join("recipes").join("demo.toml")]))
}

/// `forge serve` on a free loopback port, killed on drop.
pub struct Serve {
    pub child: std::process::Child,
    pub url: String,
}

impl Serve {
    pub fn start(env: &TestEnv, args: &[&str]) -> Serve {
        use std::io::BufRead;
        let mut child = env
            .cmd()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start forge serve");
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("forge serve exited early").unwrap();
            if let Some(rest) = line.split(" at ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Serve { child, url }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
