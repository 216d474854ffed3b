//! Checks on the LFS/BLFS recipe tree (recipes/toolchain.toml, base.toml,
//! desktop.toml and recipes/packages/**) that need neither the network nor the
//! executor. Most read the files as plain TOML (independent of the loader, so
//! that a loader bug cannot hide a tree bug); `forge show --json` then runs the
//! real loader and resolver over each set.
//!
//! What is checked: every recipe has the v1 shape and a pinned checksum on every
//! download; every dependency resolves; the three sets include every recipe and
//! are closed under dependencies; every package of the book's data file
//! (chapters 5-8) is built by a recipe with the book's version and MD5; no
//! sandbox root stages a temporary and a final build of one package at the
//! same place; the cross stage stages its sysroot at /lfs and nothing later
//! uses `at`; `forge show` resolves every set to exactly the files it includes
//! and refuses the unpinned recipes; the Debian overlay of the proof build
//! (recipes/lfs-debian/overlay.toml) applies, pins every tarball by sha256, and
//! the chapter 5-6 scripts let it swap versions.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use toml::Value;

/// Where the chapter 5-6 target sysroot is staged (the book's $LFS).
const SYSROOT: &str = "/lfs";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn recipes_dir() -> PathBuf {
    repo().join("recipes")
}

fn load(path: &Path) -> toml::Table {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rel(path: &Path) -> String {
    path.strip_prefix(repo()).unwrap_or(path).display().to_string()
}

/// One dependency edge: the package name and where it is staged.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Dep {
    name: String,
    at: String,
}

#[derive(Debug)]
struct Recipe {
    path: PathBuf,
    table: toml::Table,
    name: String,
    version: String,
    build: Vec<Dep>,
    runtime: Vec<Dep>,
}

impl Recipe {
    fn read(path: &Path) -> Recipe {
        let table = load(path);
        let package = table
            .get("package")
            .and_then(Value::as_table)
            .unwrap_or_else(|| panic!("{}: no [package] table", rel(path)));
        let field = |key: &str| {
            package
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{}: [package] {key} missing or not a string", rel(path)))
                .to_string()
        };
        let deps = table.get("deps").and_then(Value::as_table);
        let list = |key: &str| deps.map(|d| dep_list(path, d.get(key))).unwrap_or_default();
        Recipe {
            path: path.to_path_buf(),
            name: field("name"),
            version: field("version"),
            build: list("build"),
            runtime: list("runtime"),
            table,
        }
    }

    fn sources(&self) -> Vec<&toml::Table> {
        self.table
            .get("source")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|s| s.as_table().expect("[[source]] is a table")).collect())
            .unwrap_or_default()
    }

    fn script(&self) -> Option<&str> {
        self.table.get("build").and_then(|b| b.get("script")).and_then(Value::as_str)
    }

    fn is_unpinned(&self) -> bool {
        self.path.starts_with(recipes_dir().join("packages/unpinned"))
    }
}

fn dep_list(path: &Path, value: Option<&Value>) -> Vec<Dep> {
    let Some(value) = value else { return Vec::new() };
    let array = value.as_array().unwrap_or_else(|| panic!("{}: deps must be arrays", rel(path)));
    array
        .iter()
        .map(|entry| match entry {
            Value::String(name) => Dep { name: name.clone(), at: "/".into() },
            Value::Table(t) => {
                for key in t.keys() {
                    assert!(key == "name" || key == "at", "{}: unknown key `{key}` in a dependency", rel(path));
                }
                let get = |k: &str| t.get(k).and_then(Value::as_str).map(str::to_string);
                let name = get("name").unwrap_or_else(|| panic!("{}: dependency table without name", rel(path)));
                Dep { name, at: get("at").unwrap_or_else(|| "/".into()) }
            }
            other => panic!("{}: dependency {other} is neither a name nor a table", rel(path)),
        })
        .collect()
}

fn toml_files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.expect("readable recipe tree").into_path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// Every recipe of the tree plus the seeds in toolchain/, by name.
fn all_recipes() -> BTreeMap<String, Recipe> {
    let mut files = toml_files_under(&recipes_dir().join("packages"));
    files.extend(toml_files_under(&repo().join("toolchain")));
    let mut by_name = BTreeMap::new();
    for file in files {
        let recipe = Recipe::read(&file);
        if let Some(other) = by_name.insert(recipe.name.clone(), recipe) {
            panic!("duplicate package name {:?}: {} and {}", other.name, rel(&other.path), rel(&file));
        }
    }
    by_name
}

fn tree_recipes(all: &BTreeMap<String, Recipe>) -> impl Iterator<Item = &Recipe> {
    let packages = recipes_dir().join("packages");
    all.values().filter(move |r| r.path.starts_with(&packages))
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

// ---------------------------------------------------------------- sets

/// The recipe files a set includes, transitively, following the documented
/// rules: relative paths, sorted globs, nested sets, each file once.
fn set_files(set: &Path, seen_sets: &mut BTreeSet<PathBuf>, out: &mut BTreeSet<PathBuf>) {
    let set = set.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", set.display()));
    if !seen_sets.insert(set.clone()) {
        return;
    }
    let table = load(&set);
    let body = table.get("set").and_then(Value::as_table).unwrap_or_else(|| panic!("{}: no [set]", rel(&set)));
    let base = set.parent().expect("a set file has a directory");
    let includes = body.get("include").and_then(Value::as_array).expect("[set] include");
    for entry in includes {
        let pattern = base.join(entry.as_str().expect("include entries are strings"));
        let mut matches: Vec<PathBuf> = glob::glob(&pattern.to_string_lossy())
            .expect("valid glob")
            .map(|m| m.expect("readable glob match"))
            .filter(|p| p.is_file())
            .collect();
        matches.sort();
        assert!(!matches.is_empty(), "{}: include {} matches no file", rel(&set), pattern.display());
        for file in matches {
            if load(&file).contains_key("set") {
                set_files(&file, seen_sets, out);
            } else {
                out.insert(file.canonicalize().expect("an included file exists"));
            }
        }
    }
}

fn set_packages(set: &str, all: &BTreeMap<String, Recipe>) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    set_files(&recipes_dir().join(set), &mut BTreeSet::new(), &mut files);
    let by_path: BTreeMap<PathBuf, &str> = all
        .values()
        .map(|r| (r.path.canonicalize().expect("recipe exists"), r.name.as_str()))
        .collect();
    files
        .iter()
        .map(|f| by_path.get(f).unwrap_or_else(|| panic!("{set} includes {}, not a known recipe", f.display())).to_string())
        .collect()
}

// ---------------------------------------------------------------- staging

/// `at` of a runtime dependency composes with the place its dependent is staged.
fn join_at(outer: &str, inner: &str) -> String {
    match (outer, inner) {
        ("/", inner) => inner.to_string(),
        (outer, "/") => outer.to_string(),
        (outer, inner) => format!("{outer}{inner}"),
    }
}

/// (name, at) pairs in the sandbox root of `recipe`: its build and runtime
/// deps, each with its runtime closure staged at the same place.
fn sandbox_closure(recipe: &Recipe, all: &BTreeMap<String, Recipe>) -> BTreeSet<Dep> {
    let mut staged = BTreeSet::new();
    let mut todo: Vec<Dep> = recipe.build.iter().chain(&recipe.runtime).cloned().collect();
    while let Some(dep) = todo.pop() {
        if !staged.insert(dep.clone()) {
            continue;
        }
        if let Some(r) = all.get(&dep.name) {
            todo.extend(r.runtime.iter().map(|d| Dep { name: d.name.clone(), at: join_at(&dep.at, &d.at) }));
        }
    }
    staged
}

/// The package a recipe is a build of: temporary, pass and final builds of one
/// package share a role (libstdcxx is GCC's library, built on its own in 5.6).
fn role(name: &str) -> &str {
    if name == "libstdcxx" {
        return "gcc";
    }
    ["-final", "-pass1", "-pass2"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name)
}

// ---------------------------------------------------------------- the book's data

struct BookPackage {
    package: String,
    version: String,
    url: String,
    md5: String,
    note: String,
}

fn book_packages() -> Vec<BookPackage> {
    let path = repo().join("data/lfs-12.3-packages.tsv");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header line").split('\t').collect();
    assert_eq!(header, ["package", "version", "url", "md5", "sbu", "note"], "TSV columns changed");
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            let col = |i: usize| cols.get(i).copied().unwrap_or("").to_string();
            BookPackage { package: col(0), version: col(1), url: col(2), md5: col(3), note: col(5) }
        })
        .collect()
}

/// The file name the book downloads: from the URL, or for the Python modules
/// with a blank URL, the "source distribution NAME from ..." note.
fn book_file_name(p: &BookPackage) -> String {
    if let Some(name) = p.url.rsplit('/').next().filter(|n| !n.is_empty()) {
        return name.to_string();
    }
    p.note
        .strip_prefix("source distribution ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{}: neither a URL nor a source distribution note", p.package))
        .to_string()
}

fn url_file_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

// ================================================================ tests

#[test]
fn every_recipe_has_the_v1_shape_and_pinned_downloads() {
    let all = all_recipes();
    let mut checked = 0;
    for recipe in tree_recipes(&all) {
        let what = rel(&recipe.path);
        for key in recipe.table.keys() {
            assert!(
                ["package", "source", "deps", "env", "build", "import", "requirements"].contains(&key.as_str()),
                "{what}: unknown top-level key `{key}`"
            );
        }
        assert!(!recipe.version.is_empty(), "{what}: empty version");
        assert_eq!(
            recipe.table.contains_key("build"),
            !recipe.table.contains_key("import"),
            "{what}: needs exactly one of [build] and [import]"
        );
        for source in recipe.sources() {
            let kinds = ["url", "file", "deb"].iter().filter(|k| source.contains_key(**k)).count();
            assert_eq!(kinds, 1, "{what}: a source needs exactly one of url, file, deb");
            let sums: Vec<&str> = ["sha256", "md5", "blake3"].into_iter().filter(|k| source.contains_key(*k)).collect();
            if let Some(file) = source.get("file").and_then(Value::as_str) {
                assert!(sums.is_empty(), "{what}: file sources take no checksum");
                assert!(recipe.path.parent().unwrap().join(file).exists(), "{what}: file source {file} missing");
                continue;
            }
            if recipe.is_unpinned() {
                assert!(sums.is_empty(), "{what}: pinned now: move it out of packages/unpinned/");
                continue;
            }
            assert_eq!(sums.len(), 1, "{what}: a download needs exactly one checksum, has {sums:?}");
            let value = source[sums[0]].as_str().expect("checksums are strings");
            let len = if sums[0] == "md5" { 32 } else { 64 };
            assert!(is_hex(value, len), "{what}: {} {value:?} is not {len} lowercase hex digits", sums[0]);
        }
        checked += 1;
    }
    assert!(checked > 150, "only {checked} recipes found: is the tree there?");
}

#[test]
fn build_scripts_follow_the_shared_conventions() {
    let all = all_recipes();
    for recipe in tree_recipes(&all) {
        let what = rel(&recipe.path);
        let uses_lib = recipe
            .sources()
            .iter()
            .any(|s| s.get("file").and_then(Value::as_str).is_some_and(|f| f.ends_with("lib/lfs.sh")));
        let Some(script) = recipe.script() else {
            assert!(!uses_lib, "{what}: an import does not run lfs.sh");
            continue;
        };
        if uses_lib {
            assert!(
                script.starts_with(". \"$FORGE_SOURCES/lfs.sh\"\n"),
                "{what}: a script that lists lfs.sh must source it first"
            );
            let file = recipe.sources().iter().find_map(|s| s.get("file").and_then(Value::as_str)).unwrap();
            let resolved = recipe.path.parent().unwrap().join(file).canonicalize().unwrap();
            assert_eq!(resolved, recipes_dir().join("lib/lfs.sh").canonicalize().unwrap(), "{what}");
        }
        // lfs.sh's functions need bash; only the seed-built skeletons may use /bin/sh.
        let shell = recipe.table["build"].get("shell").and_then(Value::as_array);
        if uses_lib {
            assert_eq!(shell.and_then(|s| s[0].as_str()), Some("/bin/bash"), "{what}: run lfs.sh with bash");
        }
        for forbidden in ["deb.debian.org", "pypi.org", "pythonhosted.org", "snapshot.debian.org"] {
            assert!(!fs::read_to_string(&recipe.path).unwrap().contains(forbidden), "{what} names {forbidden}");
        }
    }
}

#[test]
fn every_dependency_resolves_and_at_is_absolute() {
    let all = all_recipes();
    for recipe in tree_recipes(&all) {
        for dep in recipe.build.iter().chain(&recipe.runtime) {
            assert!(
                all.contains_key(&dep.name),
                "{}: depends on {:?}, which no recipe defines",
                rel(&recipe.path),
                dep.name
            );
            assert!(
                dep.at.starts_with('/') && !dep.at.split('/').any(|c| c == ".." || c == "."),
                "{}: at = {:?} must be an absolute, normalized path",
                rel(&recipe.path),
                dep.at
            );
        }
    }
}

#[test]
fn sets_include_every_recipe_and_are_closed_under_dependencies() {
    let all = all_recipes();
    let toolchain = set_packages("toolchain.toml", &all);
    let base = set_packages("base.toml", &all);
    let desktop = set_packages("desktop.toml", &all);
    assert!(toolchain.is_subset(&base) && base.is_subset(&desktop), "toolchain ⊂ base ⊂ desktop");
    for name in ["binutils-pass1", "gcc-pass1", "linux-headers", "glibc", "libstdcxx", "gcc-pass2", "util-linux"] {
        assert!(toolchain.contains(name), "toolchain.toml lacks {name}");
    }
    for name in ["glibc-final", "gcc", "sysvinit", "linux", "lfs-config", "lfs-system"] {
        assert!(base.contains(name) && !toolchain.contains(name), "{name} belongs to base.toml only");
    }
    for recipe in tree_recipes(&all) {
        if recipe.is_unpinned() {
            assert!(!desktop.contains(&recipe.name), "{}: unpinned recipes stay out of the sets", recipe.name);
        } else {
            assert!(desktop.contains(&recipe.name), "{} is in no set", rel(&recipe.path));
        }
    }
    for (set, members) in [("toolchain", &toolchain), ("base", &base), ("desktop", &desktop)] {
        for name in members {
            for dep in all[name].build.iter().chain(&all[name].runtime) {
                assert!(
                    members.contains(&dep.name),
                    "{set}: {name} depends on {}, which the set does not include",
                    dep.name
                );
            }
        }
    }
}

#[test]
fn every_book_package_of_chapters_5_to_8_has_a_recipe_with_its_version_and_md5() {
    let all = all_recipes();
    let mut covered = 0;
    for book in book_packages() {
        let file = book_file_name(&book);
        let hits: Vec<(&Recipe, usize)> = tree_recipes(&all)
            .flat_map(|r| r.sources().into_iter().enumerate().map(move |(i, s)| (r, i, s)))
            .filter(|(_, _, s)| s.get("url").and_then(Value::as_str).is_some_and(|u| url_file_name(u) == file))
            .filter(|(_, _, s)| s.get("name").is_none())
            .map(|(r, i, s)| {
                let md5 = s.get("md5").and_then(Value::as_str).unwrap_or("");
                assert_eq!(md5, book.md5, "{}: {file} must carry the book's md5", rel(&r.path));
                (r, i)
            })
            .collect();
        assert!(!hits.is_empty(), "no recipe downloads {file} ({} {})", book.package, book.version);
        if book.md5.is_empty() {
            assert!(hits.iter().all(|(r, _)| r.is_unpinned()), "{file} has no published md5: keep it unpinned");
        }
        // Where the file is a recipe's main source, the recipe has the book's version.
        for (recipe, index) in &hits {
            if *index == 0 {
                assert_eq!(recipe.version, book.version, "{}: version of {file}", rel(&recipe.path));
            }
        }
        covered += 1;
    }
    assert!(covered >= 85, "only {covered} rows of the book's data checked");
}

#[test]
fn no_sandbox_stages_two_builds_of_one_package_at_one_place() {
    let all = all_recipes();
    for recipe in tree_recipes(&all) {
        let mut by_place: BTreeMap<(String, &str), &str> = BTreeMap::new();
        for dep in sandbox_closure(recipe, &all) {
            let Some(known) = all.get(&dep.name) else { continue };
            let key = (dep.at.clone(), role(&known.name));
            if let Some(other) = by_place.insert(key, known.name.as_str()) {
                // The book's $LFS/tools: the cross compiler (pass 1, no libstdc++ of its own)
                // and libstdc++ 5.6, whose headers go into that compiler's tools/ tree.
                let pair = [other, known.name.as_str()];
                if pair.contains(&"gcc-pass1") && pair.contains(&"libstdcxx") {
                    continue;
                }
                assert_eq!(
                    other,
                    known.name,
                    "{}: {} and {} both staged at {}: their files collide",
                    rel(&recipe.path),
                    other,
                    known.name,
                    dep.at
                );
            }
        }
    }
}

#[test]
fn the_cross_stage_builds_against_the_sysroot_and_later_stages_use_slash() {
    let all = all_recipes();
    for recipe in tree_recipes(&all) {
        let dir = recipe.path.parent().unwrap().file_name().unwrap().to_string_lossy().to_string();
        let staged = sandbox_closure(recipe, &all);
        let placed: BTreeSet<&str> = staged.iter().map(|d| d.at.as_str()).collect();
        match dir.as_str() {
            "ch5" | "ch6" => {
                assert!(placed.iter().all(|at| *at == "/" || *at == SYSROOT), "{}: {placed:?}", recipe.name);
                let env = recipe.table.get("env").and_then(Value::as_table).expect("cross recipes set [env]");
                assert_eq!(env.get("LFS").and_then(Value::as_str), Some(SYSROOT), "{}: LFS", recipe.name);
                assert_eq!(
                    env.get("LFS_TGT").and_then(Value::as_str),
                    Some("x86_64-lfs-linux-gnu"),
                    "{}: LFS_TGT",
                    recipe.name
                );
                // Target-side packages never see the host's libraries as their own:
                // whatever target package they use comes from the sysroot.
                for target in ["glibc", "linux-headers", "libstdcxx", "ncurses"] {
                    assert!(
                        !staged.contains(&Dep { name: target.into(), at: "/".into() }),
                        "{}: {target} must be staged at {SYSROOT}, not at /",
                        recipe.name
                    );
                }
            }
            _ => {
                assert_eq!(placed.into_iter().collect::<Vec<_>>(), vec!["/"], "{}: stages at / only", recipe.name);
                for host in ["lfs-host", "bootstrap-toolchain", "binutils-pass1", "gcc-pass1"] {
                    assert!(
                        !staged.iter().any(|d| d.name == host),
                        "{}: the chroot stage and later must not see {host}",
                        recipe.name
                    );
                }
            }
        }
    }
    // The sysroot glibc of chapter 6 brings its headers and the layout along.
    let bash = sandbox_closure(&all["bash"], &all);
    for name in ["glibc", "linux-headers", "lfs-layout", "ncurses"] {
        assert!(bash.contains(&Dep { name: name.into(), at: SYSROOT.into() }), "bash sees {name} at {SYSROOT}");
    }
}

#[test]
fn desktop_sources_carry_debians_published_sha256_and_orig_name() {
    let all = all_recipes();
    let blfs = recipes_dir().join("packages/blfs");
    let mut count = 0;
    for recipe in tree_recipes(&all).filter(|r| r.path.starts_with(&blfs)) {
        let download = &recipe.sources()[0];
        let what = rel(&recipe.path);
        assert!(download.get("md5").is_none() && download.contains_key("sha256"), "{what}: sha256 pin");
        let name = download.get("name").and_then(Value::as_str).unwrap_or_else(|| panic!("{what}: name"));
        assert!(name.contains(".orig.tar.") || name.ends_with(".tar.gz"), "{what}: Debian file name {name}");
        let text = fs::read_to_string(&recipe.path).unwrap();
        assert!(text.contains("bookworm Sources index"), "{what}: say where the sha256 was published");
        assert!(recipe.build.iter().any(|d| d.name == "lfs-system"), "{what}: builds on lfs-system");
        count += 1;
    }
    assert!(count >= 30, "only {count} desktop recipes");
    for name in ["xorg-server", "twm", "xterm", "libX11", "fontconfig", "pixman", "font-util", "xkeyboard-config"] {
        assert!(all.contains_key(name), "the desktop needs {name}");
    }
}

// ---------------------------------------------------------------- the real loader

/// `forge show --json FILE` with a throwaway store, returning the output.
fn forge_show_json(file: &Path) -> std::process::Output {
    let scratch = tempfile::tempdir().expect("tempdir");
    std::process::Command::new(env!("CARGO_BIN_EXE_forge"))
        .args(["show", "--json"])
        .arg(file)
        .env("FORGE_STORE", scratch.path().join("store"))
        .env("HOME", scratch.path())
        .output()
        .expect("run forge show")
}

#[test]
fn forge_show_resolves_each_set_to_exactly_the_files_it_includes() {
    let all = all_recipes();
    let mut desktop_files = BTreeSet::new();
    for set in ["toolchain.toml", "base.toml", "desktop.toml"] {
        let out = forge_show_json(&recipes_dir().join(set));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "forge show {set} failed:\n{stderr}");
        let nodes: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{set}: not JSON: {l:?}: {e}")))
            .collect();
        let mut shown = BTreeSet::new();
        let mut names = BTreeSet::new();
        for node in &nodes {
            assert_eq!(node["event"], "node", "{set}: {node}");
            assert!(node["drv"].as_str().is_some_and(|d| is_hex(d, 64)), "{set}: no drv hash in {node}");
            let file = PathBuf::from(node["file"].as_str().unwrap_or_else(|| panic!("{set}: no file in {node}")));
            shown.insert(file.canonicalize().unwrap_or_else(|e| panic!("{set}: {}: {e}", file.display())));
            names.insert(node["name"].as_str().expect("a name").to_string());
        }
        let mut included = BTreeSet::new();
        set_files(&recipes_dir().join(set), &mut BTreeSet::new(), &mut included);
        assert_eq!(shown, included, "{set}: forge show lists other files than the set includes");
        assert_eq!(names, set_packages(set, &all), "{set}: package names");
        assert_eq!(nodes.len(), included.len(), "{set}: one node per file");
        if set == "desktop.toml" {
            desktop_files = shown;
        }
    }
    // Every recipe file of the tree is resolved by the loader, except the unpinned ones.
    for recipe in tree_recipes(&all).filter(|r| !r.is_unpinned()) {
        assert!(desktop_files.contains(&recipe.path.canonicalize().unwrap()), "{} in no set", rel(&recipe.path));
    }
}

#[test]
fn forge_refuses_to_load_an_unpinned_recipe_and_says_to_pin_it() {
    let unpinned = toml_files_under(&recipes_dir().join("packages/unpinned"));
    assert!(
        unpinned.iter().any(|f| f.ends_with("lfs-bootscripts.toml")),
        "lfs-bootscripts has no published checksum here and must stay unpinned"
    );
    for file in unpinned {
        let out = forge_show_json(&file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: must not load\n{stderr}", rel(&file));
        assert!(out.stdout.is_empty(), "{}: nothing resolved", rel(&file));
        let refusal = stderr
            .lines()
            .find(|l| l.contains("url source without a checksum"))
            .unwrap_or_else(|| panic!("{}: no checksum refusal in\n{stderr}", rel(&file)));
        assert!(refusal.contains(&file.display().to_string()), "{}: name the file: {refusal}", rel(&file));
        assert!(refusal.contains("pin it") && refusal.contains("forge prefetch"), "{refusal}");
    }
}

#[test]
fn every_url_source_is_pinned_by_sha256_or_the_books_md5() {
    let all = all_recipes();
    let book_md5: BTreeMap<String, String> = book_packages()
        .into_iter()
        .filter(|p| !p.md5.is_empty())
        .map(|p| (book_file_name(&p), p.md5))
        .collect();
    let (mut sha256, mut md5) = (0, 0);
    for recipe in tree_recipes(&all).filter(|r| !r.is_unpinned()) {
        for source in recipe.sources() {
            let Some(url) = source.get("url").and_then(Value::as_str) else { continue };
            let what = format!("{}: {url}", rel(&recipe.path));
            if let Some(sum) = source.get("sha256").and_then(Value::as_str) {
                assert!(is_hex(sum, 64), "{what}: sha256 {sum:?}");
                sha256 += 1;
            } else if let Some(sum) = source.get("md5").and_then(Value::as_str) {
                let file = source.get("name").and_then(Value::as_str).unwrap_or_else(|| url_file_name(url));
                assert_eq!(book_md5.get(file).map(String::as_str), Some(sum), "{what}: an md5 pin must be the book's");
                md5 += 1;
            } else {
                panic!("{what}: not pinned by sha256 or the book's md5");
            }
        }
    }
    // `forge prefetch` turns md5 pins into sha256 ones, so only the total is stable.
    assert!(sha256 + md5 >= 150, "{sha256} sha256 and {md5} md5 pins: is the tree there?");
}

#[test]
fn the_debian_overlays_apply_to_the_toolchain_and_pin_every_tarball_by_sha256() {
    // overlay.toml: bookworm's versions; book.toml: the book's, from trixie (docs/lfs.md).
    for name in ["overlay.toml", "book.toml"] {
        check_debian_overlay(&recipes_dir().join("lfs-debian").join(name));
    }
}

fn check_debian_overlay(overlay_file: &Path) {
    let overlay = load(overlay_file);
    let overrides = overlay.get("override").and_then(Value::as_array).expect("[[override]] tables");
    let mut versions = BTreeMap::new();
    for over in overrides {
        let package = over["package"].as_str().expect("package").to_string();
        for source in over.get("sources").and_then(Value::as_array).into_iter().flatten() {
            let source = source.as_table().expect("inline table");
            if source.contains_key("url") {
                let sha = source.get("sha256").and_then(Value::as_str);
                assert!(sha.is_some_and(|s| is_hex(s, 64)), "overlay {package}: {source:?} needs the tarball's own sha256");
            }
        }
        if let Some(version) = over.get("version").and_then(Value::as_str) {
            versions.insert(package, version.to_string());
        }
    }

    let scratch = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_forge"))
        .args(["show", "--json"])
        .arg(recipes_dir().join("base.toml"))
        .arg("--overlay")
        .arg(overlay_file)
        .env("FORGE_STORE", scratch.path().join("store"))
        .env("HOME", scratch.path())
        .output()
        .expect("run forge show");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "forge show --overlay failed:\n{stderr}");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let node: serde_json::Value = serde_json::from_str(line).expect("JSON");
        if let Some(version) = node["name"].as_str().and_then(|n| versions.remove(n)) {
            assert_eq!(node["version"], version.as_str(), "{node}");
        }
    }
    assert!(versions.is_empty(), "overridden packages missing from forge show: {versions:?}");
    // A replaced source does not warn; none of the overlay's own sources is md5-only.
    for recipe in ["binutils-pass1", "gcc-pass1", "gcc-pass2", "glibc", "ncurses"] {
        assert!(!stderr.contains(&format!("/{recipe}.toml:")), "warning about a replaced source of {recipe}:\n{stderr}");
    }
}

#[test]
fn lfs_scripts_name_their_tarball_by_forge_version_so_overlays_can_swap_it() {
    for dir in ["ch5", "ch6", "ch7", "ch8"] {
        for path in toml_files_under(&recipes_dir().join("packages").join(dir)) {
            let recipe = Recipe::read(&path);
            let script = recipe.table["build"]["script"].as_str().expect("a build script");
            for line in script.lines().filter(|l| l.trim_start().starts_with("lfs_unpack")) {
                assert!(line.contains("$FORGE_VERSION"), "{}: `{line}` names a fixed version", rel(&path));
            }
        }
    }
}

#[test]
fn lfs_recipes_carry_the_books_sbu_figures() {
    // scripts/lfs-sbu.py --check: exit 1 and the recipe's name if one differs from the book's table.
    let dirs: Vec<PathBuf> = ["ch5", "ch6", "ch7", "ch8", "ch10"].iter().map(|d| recipes_dir().join("packages").join(d)).collect();
    let out = std::process::Command::new("python3")
        .arg(recipes_dir().join("../scripts/lfs-sbu.py"))
        .arg("--check")
        .args(&dirs)
        .output()
        .expect("python3 runs scripts/lfs-sbu.py");
    assert!(out.status.success(), "recipes whose sbu is not the book's (run scripts/lfs-sbu.py):\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_test_switch_names_exactly_the_recipes_with_a_test_step() {
    // recipes/lfs-debian/tests.toml turns on every recipe's `LFS_TESTS` step, and only those.
    let overlay = load(&recipes_dir().join("lfs-debian/tests.toml"));
    let switched: std::collections::BTreeSet<String> = overlay["override"]
        .as_array()
        .expect("[[override]] tables")
        .iter()
        .map(|o| {
            assert_eq!(o["env"]["LFS_TESTS"].as_str(), Some("1"), "{o}");
            o["package"].as_str().unwrap().to_string()
        })
        .collect();
    let mut with_tests = std::collections::BTreeSet::new();
    for path in toml_files_under(&recipes_dir().join("packages")) {
        let recipe = Recipe::read(&path);
        let script = recipe.table.get("build").and_then(|b| b.get("script")).and_then(Value::as_str).unwrap_or_default();
        if script.contains("LFS_TESTS") {
            let env = recipe.table.get("env").and_then(|e| e.get("LFS_TESTS"));
            assert!(env.is_none(), "{}: test suites are off unless the switch is given", rel(&path));
            with_tests.insert(recipe.table["package"]["name"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(switched, with_tests);
    assert!(with_tests.len() > 50, "{with_tests:?}");
}
