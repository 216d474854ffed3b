//! Checks on the bootstrap seeds (toolchain/) and the demo recipes (recipes/demo/)
//! that need no executor: every recipe is well-formed TOML of the v1 shape, every
//! dependency resolves inside the demo set, every pin looks like a real pin; and
//! the busybox seed really downloads with `source::fetch`, verifies against its
//! pin, and imports to an executable `bin/busybox`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use forge::hash::Checksum;
use forge::recipe::{Location, Source, SourceKind};
use toml::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load(path: &Path) -> toml::Table {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn recipe_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["toolchain", "recipes/demo"] {
        for entry in fs::read_dir(repo().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn keys(table: &toml::Table) -> BTreeSet<&str> {
    table.keys().map(String::as_str).collect()
}

fn assert_only(table: &toml::Table, allowed: &[&str], what: &str) {
    for key in keys(table) {
        assert!(allowed.contains(&key), "{what}: unknown key `{key}`");
    }
}

fn str_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().expect("a list of strings").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Check one recipe's shape (DESIGN.md §2 plus the source/import keys) and return
/// its name and the dependency names it uses.
fn check_recipe(path: &Path) -> (String, Vec<String>) {
    let what = path.display().to_string();
    let recipe = load(path);
    assert_only(
        &recipe,
        &[
            "package",
            "source",
            "deps",
            "env",
            "build",
            "import",
            "requirements",
        ],
        &what,
    );
    let package = recipe["package"]
        .as_table()
        .unwrap_or_else(|| panic!("{what}: [package]"));
    assert_only(package, &["name", "version", "description"], &what);
    let name = package["name"].as_str().unwrap().to_string();
    assert!(
        package["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{what}: version"
    );

    let has_build = recipe.contains_key("build");
    assert!(
        has_build != recipe.contains_key("import"),
        "{what}: exactly one of [build] or [import]"
    );
    if let Some(build) = recipe.get("build").and_then(Value::as_table) {
        assert_only(build, &["script", "shell"], &what);
        assert!(
            build["script"]
                .as_str()
                .is_some_and(|s| !s.trim().is_empty()),
            "{what}: script"
        );
    }
    if let Some(import) = recipe.get("import").and_then(Value::as_table) {
        assert_only(import, &["unpack"], &what);
    }

    for source in recipe
        .get("source")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        check_source(path, source.as_table().unwrap());
    }
    let mut deps = Vec::new();
    if let Some(table) = recipe.get("deps").and_then(Value::as_table) {
        assert_only(table, &["build", "runtime"], &what);
        deps.extend(str_list(table.get("build")));
        deps.extend(str_list(table.get("runtime")));
    }
    (name, deps)
}

fn check_source(recipe: &Path, source: &toml::Table) {
    let what = format!("{} source {source:?}", recipe.display());
    assert_only(
        source,
        &[
            "url", "mirrors", "file", "deb", "name", "sha256", "blake3", "md5",
        ],
        &what,
    );
    let kinds: Vec<&str> = ["url", "file", "deb"]
        .into_iter()
        .filter(|k| source.contains_key(*k))
        .collect();
    assert_eq!(kinds.len(), 1, "{what}: exactly one of url, file, deb");
    match kinds[0] {
        "file" => {
            assert!(
                !source.contains_key("sha256"),
                "{what}: file sources are hashed by content"
            );
            let rel = source["file"].as_str().unwrap();
            let target = recipe.parent().unwrap().join(rel);
            assert!(
                target.exists(),
                "{what}: {} does not exist",
                target.display()
            );
        }
        "deb" => {
            let (package, version) = source["deb"]
                .as_str()
                .unwrap()
                .split_once('=')
                .expect("package=version");
            assert!(!package.is_empty() && !version.is_empty(), "{what}");
            let sha = source
                .get("sha256")
                .and_then(Value::as_str)
                .unwrap_or_default();
            assert!(
                is_hex(sha, 64),
                "{what}: a deb is pinned by the index's sha256"
            );
        }
        _ => {
            let pinned = ["sha256", "blake3", "md5"]
                .iter()
                .any(|k| source.contains_key(*k));
            assert!(pinned, "{what}: a url source needs a checksum");
        }
    }
}

/// Expand the demo set's includes the way DESIGN.md §2 says (relative, globs).
fn demo_set_members() -> Vec<PathBuf> {
    let set_file = repo().join("recipes/demo.toml");
    let set = load(&set_file);
    assert_eq!(keys(&set), BTreeSet::from(["set"]));
    let set = set["set"].as_table().unwrap();
    assert_only(set, &["name", "include"], "recipes/demo.toml");
    assert_eq!(set["name"].as_str(), Some("demo"));
    let mut members = Vec::new();
    for pattern in str_list(set.get("include")) {
        let full = set_file.parent().unwrap().join(&pattern);
        let matched: Vec<PathBuf> = glob::glob(full.to_str().unwrap())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(!matched.is_empty(), "include {pattern:?} matches nothing");
        members.extend(matched);
    }
    members
}

#[test]
fn every_recipe_has_the_v1_shape_and_the_demo_set_resolves() {
    let mut names = BTreeMap::new();
    let mut uses = Vec::new();
    for path in demo_set_members() {
        let (name, deps) = check_recipe(&path);
        assert!(
            names.insert(name.clone(), path.clone()).is_none(),
            "duplicate package {name}"
        );
        uses.extend(deps.into_iter().map(|dep| (name.clone(), dep)));
    }
    // The set covers every recipe file of toolchain/ and recipes/demo/.
    let expected: BTreeSet<PathBuf> = recipe_files().into_iter().collect();
    let covered: BTreeSet<PathBuf> = names.values().map(|p| p.canonicalize().unwrap()).collect();
    let expected: BTreeSet<PathBuf> = expected.iter().map(|p| p.canonicalize().unwrap()).collect();
    assert_eq!(covered, expected);
    for (user, dep) in uses {
        assert!(
            names.contains_key(&dep),
            "{user} depends on {dep}, which the demo set does not define"
        );
    }
    for name in [
        "busybox-static",
        "seed",
        "bootstrap-toolchain",
        "libtally",
        "wordfreq",
        "tally-report",
    ] {
        assert!(names.contains_key(name), "missing package {name}");
    }
}

#[test]
fn the_toolchain_pins_each_package_once_and_names_arch_all_debs() {
    let recipe = load(&repo().join("toolchain/bootstrap-toolchain.toml"));
    let sources = recipe["source"].as_array().unwrap();
    let mut packages = BTreeSet::new();
    for source in sources.iter().filter_map(|s| s.get("deb")) {
        let (package, version) = source.as_str().unwrap().split_once('=').unwrap();
        assert!(
            packages.insert(package.to_string()),
            "{package} pinned twice"
        );
        assert!(!version.contains(' '), "{package}: version {version:?}");
    }
    for needed in [
        "gcc-12",
        "cpp-12",
        "g++-12",
        "binutils",
        "make",
        "libc6",
        "libc6-dev",
        "linux-libc-dev",
    ] {
        assert!(packages.contains(needed), "toolchain lacks {needed}");
    }
    // Arch-independent packages download as *_all.deb; the name must say so.
    let tirpc = sources
        .iter()
        .find(|s| {
            s.get("deb")
                .and_then(Value::as_str)
                .is_some_and(|d| d.starts_with("libtirpc-common="))
        })
        .unwrap();
    assert!(tirpc["name"].as_str().unwrap().ends_with("_all.deb"));
    assert_eq!(
        recipe["deps"]["runtime"].as_array().unwrap(),
        &vec![Value::from("seed")]
    );
}

#[test]
fn alternatives_overlay_holds_relative_symlinks_only() {
    let dir = repo().join("toolchain/alternatives");
    let expected = [
        ("usr/bin/cc", "gcc"),
        ("usr/bin/c++", "g++"),
        ("usr/bin/c89", "c89-gcc"),
        ("usr/bin/c99", "c99-gcc"),
        ("lib/cpp", "../usr/bin/cpp"),
    ];
    for (link, target) in expected {
        assert_eq!(
            fs::read_link(dir.join(link)).unwrap(),
            PathBuf::from(target),
            "{link}"
        );
    }
    let files = walkdir::WalkDir::new(&dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| !e.file_type().is_dir())
        .count();
    assert_eq!(
        files,
        expected.len(),
        "unexpected entries in {}",
        dir.display()
    );
}

fn has_apt() -> bool {
    Command::new("apt-get")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The busybox pin, read from the recipe (the same bytes forge would fetch).
fn busybox_source() -> Source {
    let recipe = load(&repo().join("toolchain/busybox-static.toml"));
    let source = &recipe["source"].as_array().unwrap()[0];
    let (package, version) = source["deb"].as_str().unwrap().split_once('=').unwrap();
    Source {
        kind: SourceKind::Deb {
            package: package.to_string(),
            version: version.to_string(),
        },
        filename: format!("{package}_{}_amd64.deb", version.replace(':', "%3a")),
        checksum: Some(Checksum::parse("sha256", source["sha256"].as_str().unwrap()).unwrap()),
        at: Location {
            file: "toolchain/busybox-static.toml".into(),
            line: 1,
            column: 1,
        },
    }
}

#[test]
fn busybox_seed_downloads_verifies_and_imports() {
    if !has_apt() {
        eprintln!("skipped: deb sources need apt-get, which this host lacks");
        return;
    }
    let source = busybox_source();
    let dir = tempfile::tempdir().unwrap();
    let deb = dir.path().join(&source.filename);
    let mut last = (0, None);
    forge::source::fetch(&source, &deb, &mut |done, total| last = (done, total)).unwrap();
    let size = fs::metadata(&deb).unwrap().len();
    assert_eq!(last, (size, Some(size)));
    forge::source::verify_file(&deb, source.checksum.as_ref().unwrap()).unwrap();

    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let stats = forge::import::import(&[(source.filename.clone(), deb)], true, &out).unwrap();
    assert!(stats.files >= 2 && stats.skipped_special == 0, "{stats:?}");
    let busybox = out.join("bin/busybox");
    // It is static, so it runs here as it will in the sandbox.
    let echo = Command::new(&busybox)
        .args(["echo", "seed ok"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&echo.stdout), "seed ok\n");
    let applets = Command::new(&busybox).arg("--list").output().unwrap();
    let applets = String::from_utf8_lossy(&applets.stdout);
    for needed in ["sh", "cp", "ln", "tar", "gzip", "xz", "sed", "awk", "wget"] {
        assert!(
            applets.lines().any(|a| a == needed),
            "busybox lacks {needed}"
        );
    }
}

#[test]
fn a_deb_version_gone_from_the_archive_says_how_to_update() {
    if !has_apt() {
        eprintln!("skipped: deb sources need apt-get, which this host lacks");
        return;
    }
    let mut source = busybox_source();
    source.kind = SourceKind::Deb {
        package: "busybox-static".into(),
        version: "0.0.0-forge-test".into(),
    };
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("x.deb");
    let err = forge::source::fetch(&source, &dest, &mut |_, _| {}).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, forge::source::SourceError::DebUnavailable { .. }),
        "{message}"
    );
    assert!(
        message.contains("apt-cache show busybox-static"),
        "{message}"
    );
    assert!(!dest.exists());
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "scratch directory left behind"
    );
}
