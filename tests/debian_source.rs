//! The real-source path, fast: GNU hello 2.10 from Debian's source archive.
//! `apt-get source --download-only hello` fetches Debian's orig tarball, `forge source
//! add` registers it by content, and recipes/examples/hello.toml (pinned to GNU's
//! upstream URL by sha256: the same bytes) builds in the sandbox on the bootstrap
//! toolchain without downloading anything; a second recipe runs the installed program.
//!
//! Needs apt with deb-src entries: if `apt-get source` finds none, the test enables
//! them with scripts/debian-sources.sh (root; .ci/run does it before the tests).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use forge::hash::Checksum;
use forge::store::Store;

/// bookworm's hello, by version: where newer suites' deb-src are enabled too (trixie, for
/// LFS), `hello` alone would pick theirs, whose Debian tarball this mirror may lack.
const HELLO: &str = "hello=2.10-3";
const ORIG: &str = "hello_2.10.orig.tar.gz";
const ORIG_SHA256: &str = "31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b";

fn apt_get_source_hello(dir: &Path) -> std::process::Output {
    Command::new("apt-get")
        .args(["source", "--download-only", "-qq", HELLO])
        .current_dir(dir)
        .output()
        .expect("run apt-get source")
}

/// Debian's hello source package, downloaded into `dir`.
fn download_debian_hello(dir: &Path) {
    if apt_get_source_hello(dir).status.success() {
        return;
    }
    // No deb-src entries yet: derive them from the machine's apt sources.
    let script = repo().join("scripts/debian-sources.sh");
    let enable = Command::new("sh").arg(&script).arg(HELLO).output().expect("run debian-sources.sh");
    assert!(enable.status.success(), "{} failed:\n{}", script.display(), stderr(&enable));
    let retry = apt_get_source_hello(dir);
    assert!(retry.status.success(), "apt-get source hello failed:\n{}", stderr(&retry));
}

#[test]
fn gnu_hello_builds_from_debians_source_archive_and_runs_in_the_sandbox() {
    let env = TestEnv::with_toolchain_sources();
    let debian = env.path("debian");
    std::fs::create_dir_all(&debian).unwrap();
    download_debian_hello(&debian);

    // Registered by content: the upstream pin is satisfied by Debian's file.
    let orig = debian.join(ORIG);
    let out = env.forge(&["source", "add", orig.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains(&format!("sha256:{ORIG_SHA256}")), "{}", stdout(&out));
    let sha = Checksum::parse("sha256", ORIG_SHA256).unwrap();
    assert!(Store::open(&env.store).unwrap().has_source(&sha), "source add did not store {ORIG}");

    let examples = repo().join("recipes/examples");
    let check = env.write(
        "hello-check.toml",
        r#"[package]
name = "hello-check"
version = "1"

[deps]
build = ["hello"]

[build]
script = '''
mkdir -p "$FORGE_OUT/share"
hello > "$FORGE_OUT/share/greeting"
'''
"#,
    );
    let set = env.write(
        "set.toml",
        &format!(
            "[set]\nname = \"hello-ci\"\ninclude = [{}, {:?}, {:?}, {:?}]\n",
            toolchain_includes(),
            examples.join("hello-src.toml"),
            examples.join("hello.toml"),
            check
        ),
    );

    // Everything is present: nothing to download (the toolchain .debs are cached too).
    let out = env.forge(&["fetch", set.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("0 fetched (0 B)"), "{}", stderr(&out));

    let started = std::time::Instant::now();
    let (events, out) = env.build_json(&[set.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert_eq!(event_of(&events, "hello")["event"], "built", "{events:#?}");

    let objects = env.store.join("objects");
    let hello = objects.join(event_of(&events, "hello")["out"].as_str().unwrap());
    let binary = hello.join("usr/bin/hello");
    let meta = std::fs::metadata(&binary).unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
    assert!(meta.is_file() && std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0);
    assert!(hello.join("usr/share/man/man1/hello.1").is_file(), "make install installs the manual page");

    let check_out = objects.join(event_of(&events, "hello-check")["out"].as_str().unwrap());
    let greeting = std::fs::read_to_string(check_out.join("share/greeting")).unwrap();
    assert_eq!(greeting, "Hello, world!\n");
    eprintln!("hello: built and run in {:.1?}", started.elapsed());
}

/// The partial-mirror path: `--orig-only` fetches just the orig tarball, by its pool path,
/// checked by apt-helper against the SHA256 of the signed Sources index (no .dsc needed).
#[test]
fn orig_tarball_comes_by_pool_path_verified_against_the_signed_index() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: scripts/debian-sources.sh runs apt-get update, which needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("debian");
    let script = repo().join("scripts/debian-sources.sh");
    let out = Command::new("sh").arg(&script).args(["--orig-only", "--dest"]).arg(&dest).arg(HELLO).output().expect("run debian-sources.sh");
    assert!(out.status.success(), "{} --orig-only hello failed:\n{}", script.display(), stderr(&out));
    let mut names: Vec<String> = std::fs::read_dir(&dest).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, vec![ORIG.to_string()], "only the orig tarball, no .dsc or Debian tarball");
    let bytes = std::fs::read(dest.join(ORIG)).unwrap();
    assert_eq!(Checksum::parse("sha256", ORIG_SHA256).unwrap().compute_like(&bytes).hex(), ORIG_SHA256);
    assert!(stdout(&out).contains(&format!("{ORIG_SHA256}  {ORIG}")), "prints the sha256 to pin:\n{}", stdout(&out));
    assert!(stdout(&out).contains("verified against the signed Sources index"), "{}", stdout(&out));

    // A file that does not match the index is replaced, not trusted.
    std::fs::write(dest.join(ORIG), b"not hello").unwrap();
    let again = Command::new("sh").arg(&script).args(["--orig-only", "--dest"]).arg(&dest).arg(HELLO).output().unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(std::fs::read(dest.join(ORIG)).unwrap(), bytes);
}
