//! Tests of recipe and set loading: one per error kind, plus sets.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

const SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, text).unwrap();
    path
}

fn recipe_text(name: &str, deps: &str) -> String {
    format!("[package]\nname = \"{name}\"\nversion = \"1.0\"\n\n[deps]\nbuild = [{deps}]\n\n[build]\nscript = \"true\"\n")
}

/// Load one file expected to fail; return the error lines (paths made relative).
fn errors_of(dir: &Path, file: &Path) -> Vec<String> {
    let err = load(&[file.to_path_buf()]).expect_err("load must fail");
    let root = format!("{}/", dir.canonicalize().unwrap().display());
    err.to_string().lines().map(|l| l.replace(&root, "")).collect()
}

fn load_one(text: &str) -> Result<Loaded, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "r.toml", text);
    load(&[file]).map_err(|_| errors_of(dir.path(), &dir.path().join("r.toml")))
}

#[test]
fn loads_a_full_recipe() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "files/fix.patch", "patch");
    let file = write(
        dir.path(),
        "pkg.toml",
        &format!(
            r#"[package]
name = "binutils-pass1"
version = "2.43.1"
description = "Cross binutils"

[[source]]
url = "https://example.org/gnu/binutils-2.43.1.tar.xz?x=1"
mirrors = ["https://mirror.example.org/binutils-2.43.1.tar.xz"]
sha256 = "{SHA}"

[[source]]
file = "files/fix.patch"

[[source]]
deb = "busybox-static=1:1.35.0-4+b3"
md5 = "0123456789abcdef0123456789abcdef"

[deps]
build = ["seed"]
runtime = ["zlib"]

[env]
LFS_TGT = "x86_64-lfs-linux-gnu"

[build]
script = "make"
shell = ["/bin/bash", "-c"]

[requirements]
memory = "1.5G"
disk = 1048576
processes = 64
tmp = "256M"
max-silent-time = "10m"
timeout = "2h"
retries = 3
retry-delay = "1m"
sbu = 2
"#
        ),
    );
    let loaded = load(std::slice::from_ref(&file)).unwrap();
    let r = &loaded.recipes[0];
    assert_eq!(r.name, "binutils-pass1");
    assert_eq!(r.file, file.canonicalize().unwrap());
    assert_eq!((r.name_at.line, r.name_at.column), (2, 8));
    assert_eq!(r.description.as_deref(), Some("Cross binutils"));
    let names: Vec<_> = r.sources.iter().map(|s| s.filename.as_str()).collect();
    assert_eq!(names, ["binutils-2.43.1.tar.xz", "fix.patch", "busybox-static_1%3a1.35.0-4+b3_amd64.deb"]);
    assert_eq!(r.sources[0].checksum.as_ref().unwrap().to_string(), format!("sha256:{SHA}"));
    assert_eq!(r.sources[1].checksum, None);
    assert_eq!(
        r.sources[1].kind,
        SourceKind::File { path: dir.path().canonicalize().unwrap().join("files/fix.patch") }
    );
    assert_eq!(
        r.sources[2].kind,
        SourceKind::Deb { package: "busybox-static".into(), version: "1:1.35.0-4+b3".into() }
    );
    assert_eq!(r.build_deps[0].name, "seed");
    assert_eq!((r.build_deps[0].at.line, r.build_deps[0].at.column), (19, 10));
    assert_eq!(r.runtime_deps[0].name, "zlib");
    assert_eq!(r.env["LFS_TGT"], "x86_64-lfs-linux-gnu");
    assert_eq!(r.action, Action::Build { script: "make".into(), shell: vec!["/bin/bash".into(), "-c".into()] });
    assert_eq!(r.requirements, Requirements { memory: Some(3 << 29), disk: Some(1 << 20), processes: Some(64), tmp: Some(256 << 20), max_silent_time: Some(600), timeout: Some(7200), retries: 3, retry_delay: 60, sbu: Some(2.0) });
    let warnings = loaded.warnings();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].ends_with("pkg.toml:14:1: md5 only, pin a sha256 (`forge prefetch` computes it)"), "{}", warnings[0]);
    assert_eq!(loaded.targets.len(), 1);
    assert_eq!(loaded.targets[0].packages, ["binutils-pass1"]);
    assert!(!loaded.targets[0].is_set);
}

#[test]
fn defaults_shell_and_unpack() {
    let loaded = load_one(&recipe_text("a", "")).unwrap();
    let shell: Vec<String> = DEFAULT_SHELL.iter().map(|s| s.to_string()).collect();
    assert_eq!(loaded.recipes[0].action, Action::Build { script: "true".into(), shell });
    let loaded = load_one("[package]\nname = \"a\"\nversion = \"1\"\n[import]\n").unwrap();
    assert_eq!(loaded.recipes[0].action, Action::Import { unpack: true });
}

#[test]
fn syntax_error_has_line_and_column() {
    let errors = load_one("[package]\nname = \"a\"\nversion = 1.0.0\n").unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("r.toml:3:"), "{errors:?}");
}

#[test]
fn unknown_key_has_line_and_column() {
    let errors = load_one("[package]\nname = \"a\"\nversion = \"1\"\n\n[build]\nscript = \"x\"\n  scirpt = \"y\"\n").unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("r.toml:7:3: unknown field `scirpt`"), "{errors:?}");
}

#[test]
fn unknown_top_level_table_is_an_error() {
    let errors = load_one(&format!("{}\n[pakage]\nx = 1\n", recipe_text("a", ""))).unwrap_err();
    assert!(errors[0].starts_with("r.toml:11:2: unknown field `pakage`"), "{errors:?}");
}

#[test]
fn missing_required_keys_are_named() {
    let errors = load_one("[package]\nname = \"a\"\n[build]\nscript = \"x\"\n").unwrap_err();
    assert!(errors[0].contains("missing field `version`"), "{errors:?}");
    let errors = load_one("[package]\nname = \"a\"\nversion = \"1\"\n[build]\nshell = [\"sh\"]\n").unwrap_err();
    assert!(errors[0].contains("missing field `script`"), "{errors:?}");
}

#[test]
fn every_semantic_problem_of_a_file_is_reported() {
    let text = r#"[package]
name = "-bad"
version = "1"

[env]
FORGE_OUT = "/x"
"1X" = "y"

[requirements]
memory = "4Q"
timeout = "soon"
"#;
    let errors = load_one(text).unwrap_err();
    assert_eq!(
        errors,
        [
            "r.toml:2:8: invalid package name \"-bad\": names match [a-zA-Z0-9][a-zA-Z0-9+._-]*",
            "r.toml:7:1: invalid environment variable name \"1X\"",
            "r.toml:6:1: \"FORGE_OUT\": FORGE_* variables are reserved for forge",
            "r.toml:1:1: a recipe needs a [build] or an [import] table",
            "r.toml:10:10: invalid size \"4Q\" for `memory`: use bytes or a number with K, M, G or T (powers of 1024), e.g. \"512M\", \"1.5G\"",
            "r.toml:11:11: invalid `timeout` \"soon\": use seconds or a number with s, m, h or d, e.g. \"90s\", \"30m\", \"2h\"",
        ]
    );
}

#[test]
fn retries_are_bounded() {
    let errors = load_one(&format!("{}[requirements]\nretries = 50\n", recipe_text("a", ""))).unwrap_err();
    assert_eq!(errors, ["r.toml:11:11: invalid `retries` 50: a number of retries from 0 to 10"]);
    let errors = load_one(&format!("{}[requirements]\nsbu = -1.5\n", recipe_text("a", ""))).unwrap_err();
    assert_eq!(errors, ["r.toml:11:7: invalid `sbu` -1.5: a positive number of SBU, e.g. 0.5 or 12"]);
    let r = load_one(&recipe_text("a", "")).unwrap();
    assert_eq!((r.recipes[0].requirements.retries, r.recipes[0].requirements.retry_delay), (0, 10));
}

#[test]
fn negative_size_is_rejected() {
    let errors = load_one(&format!("{}[requirements]\ndisk = -5\n", recipe_text("a", ""))).unwrap_err();
    assert!(errors[0].starts_with("r.toml:11:8: invalid size -5 for `disk`"), "{errors:?}");
}

#[test]
fn build_and_import_together_is_an_error() {
    let errors = load_one(&format!("{}[import]\n", recipe_text("a", ""))).unwrap_err();
    assert_eq!(errors, ["r.toml:10:1: a recipe has either [build] or [import], not both"]);
}

#[test]
fn empty_shell_is_an_error() {
    let errors = load_one("[package]\nname = \"a\"\nversion = \"1\"\n[build]\nscript = \"x\"\nshell = []\n").unwrap_err();
    assert_eq!(errors, ["r.toml:6:9: `shell` must not be empty"]);
}

fn with_source(source: &str) -> String {
    format!("{}\n[[source]]\n{source}\n", recipe_text("a", ""))
}

#[test]
fn url_source_without_checksum_tells_how_to_pin() {
    let errors = load_one(&with_source("url = \"https://h/a.tar\"")).unwrap_err();
    assert_eq!(
        errors,
        ["r.toml:11:1: url source without a checksum: pin it with `sha256 = \"...\"` (`forge prefetch` computes it)"]
    );
    let errors = load_one(&with_source("deb = \"hello=2.10-3\"")).unwrap_err();
    assert!(errors[0].contains("deb source without a checksum"), "{errors:?}");
}

#[test]
fn source_kind_must_be_exactly_one() {
    let errors = load_one(&with_source(&format!("sha256 = \"{SHA}\""))).unwrap_err();
    assert_eq!(errors, ["r.toml:11:1: a [[source]] needs exactly one of `url`, `file`, `deb` (found: none)"]);
    let errors = load_one(&with_source(&format!("url = \"https://h/a\"\ndeb = \"a=1\"\nsha256 = \"{SHA}\""))).unwrap_err();
    assert!(errors[0].ends_with("(found: url, deb)"), "{errors:?}");
}

#[test]
fn checksum_problems() {
    let two = format!("url = \"https://h/a\"\nsha256 = \"{SHA}\"\nmd5 = \"0123456789abcdef0123456789abcdef\"");
    assert_eq!(load_one(&with_source(&two)).unwrap_err(), ["r.toml:14:7: more than one checksum (sha256, md5): give exactly one"]);
    let short = "url = \"https://h/a\"\nsha256 = \"abc\"";
    let errors = load_one(&with_source(short)).unwrap_err();
    assert!(errors[0].starts_with("r.toml:13:10: bad `sha256` value: invalid digest \"abc\""), "{errors:?}");
}

#[test]
fn file_sources_must_exist_and_take_no_checksum() {
    let errors = load_one(&with_source("file = \"nope.patch\"")).unwrap_err();
    assert!(errors[0].starts_with("r.toml:12:8: `file` source ") && errors[0].ends_with("nope.patch does not exist"), "{errors:?}");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.patch", "x");
    let file = write(dir.path(), "r.toml", &with_source(&format!("file = \"p.patch\"\nsha256 = \"{SHA}\"")));
    assert_eq!(
        errors_of(dir.path(), &file),
        ["r.toml:13:10: `file` sources take no `sha256`: their BLAKE3 tree hash is computed from the file"]
    );
}

#[test]
fn duplicate_source_filenames_are_an_error() {
    let text = format!(
        "{}\n[[source]]\nurl = \"https://h/a.tar\"\nsha256 = \"{SHA}\"\n[[source]]\nurl = \"https://other/x/a.tar\"\nsha256 = \"{SHA}\"\n",
        recipe_text("a", "")
    );
    let errors = load_one(&text).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("r.toml:14:1: two sources named \"a.tar\" in $FORGE_SOURCES (the first at "), "{errors:?}");
    assert!(errors[0].ends_with("r.toml:11:1): set `name` on one"), "{errors:?}");
}

#[test]
fn source_names_and_mirrors_are_checked() {
    let errors = load_one(&with_source(&format!("url = \"https://h/\"\nsha256 = \"{SHA}\""))).unwrap_err();
    assert_eq!(errors, ["r.toml:11:1: cannot derive a file name for this source: set `name`"]);
    let errors = load_one(&with_source(&format!("url = \"https://h/a\"\nname = \"../x\"\nsha256 = \"{SHA}\""))).unwrap_err();
    assert!(errors[0].starts_with("r.toml:13:8: source `name` \"../x\""), "{errors:?}");
    let errors = load_one(&with_source(&format!("deb = \"ab=1\"\nmirrors = [\"x\"]\nsha256 = \"{SHA}\""))).unwrap_err();
    assert_eq!(errors, ["r.toml:13:11: `mirrors` only goes with `url`"]);
    let errors = load_one(&with_source(&format!("deb = \"hello\"\nsha256 = \"{SHA}\""))).unwrap_err();
    assert!(errors[0].starts_with("r.toml:12:7: `deb` must be \"package=version\""), "{errors:?}");
}

#[test]
fn recipe_and_set_in_one_file_is_an_error() {
    let errors = load_one(&format!("{}[set]\nname = \"s\"\n", recipe_text("a", ""))).unwrap_err();
    assert_eq!(errors, ["r.toml:1:1: a file is either a recipe ([package]) or a set ([set]), not both"]);
    let errors = load_one("[deps]\nbuild = []\n").unwrap_err();
    assert_eq!(errors, ["r.toml:1:1: neither a recipe (no [package] table) nor a set (no [set] table)"]);
    let errors = load_one("[set]\nname = \"s\"\n[env]\nA = \"b\"\n").unwrap_err();
    assert_eq!(errors, ["r.toml:3:1: a set file holds only [set]; [env] belongs in a recipe"]);
}

#[test]
fn missing_command_line_file_names_the_path() {
    let err = load(&[PathBuf::from("/nonexistent/forge/x.toml")]).unwrap_err();
    assert!(err.to_string().starts_with("/nonexistent/forge/x.toml: cannot read: "), "{err}");
    assert!(matches!(err.problems[0].kind, ProblemKind::Read(_)));
}

#[test]
fn errors_of_all_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.toml", "[package]\nname = \"a\"\n");
    let b = write(dir.path(), "b.toml", "[package\n");
    let err = load(&[a, b]).unwrap_err();
    assert_eq!(err.problems.len(), 2, "{err}");
    assert!(err.problems[0].file.ends_with("a.toml") && err.problems[1].file.ends_with("b.toml"));
}

#[test]
fn sets_expand_globs_nested_sets_and_absolute_paths() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "packages/base/zz.toml", &recipe_text("zz", ""));
    write(d, "packages/base/aa.toml", &recipe_text("aa", ""));
    write(d, "packages/base/notes.txt", "not matched by *.toml");
    write(d, "tool.toml", &recipe_text("tool", ""));
    let abs = write(d, "elsewhere/abs.toml", &recipe_text("abs", ""));
    write(d, "sets/toolchain.toml", "[set]\nname = \"toolchain\"\ninclude = [\"../tool.toml\"]\n");
    let base = write(
        d,
        "base.toml",
        &format!(
            "[set]\nname = \"base\"\ndescription = \"d\"\ninclude = [\"sets/toolchain.toml\", \"packages/base/*.toml\", \"{}\", \"tool.toml\"]\n",
            abs.display()
        ),
    );
    let loaded = load(&[base.clone(), d.join("packages/base/aa.toml")]).unwrap();
    assert_eq!(loaded.targets.len(), 2);
    let target = &loaded.targets[0];
    assert!(target.is_set);
    assert_eq!(target.name, "base");
    assert_eq!(target.file, base.canonicalize().unwrap());
    assert_eq!(target.packages, ["tool", "aa", "zz", "abs"]);
    assert_eq!(loaded.targets[1].packages, ["aa"]);
    let recipes: Vec<_> = loaded.recipes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(recipes, ["tool", "aa", "zz", "abs"], "each file once, in load order");
}

#[test]
fn glob_matching_nothing_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let set = write(dir.path(), "s.toml", "[set]\nname = \"s\"\ninclude = [\n  \"packages/*.toml\",\n  \"missing.toml\",\n  \"[x\",\n]\n");
    let errors = errors_of(dir.path(), &set);
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!(errors[0], "s.toml:4:3: include pattern \"packages/*.toml\" matches no file");
    assert_eq!(errors[1], "s.toml:5:3: included file missing.toml does not exist");
    assert!(errors[2].starts_with("s.toml:6:3: invalid include pattern \"[x\": "), "{errors:?}");
}

#[test]
fn include_cycles_are_reported_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.toml", "[set]\nname = \"a\"\ninclude = [\"b.toml\", \"r.toml\"]\n");
    write(dir.path(), "b.toml", "[set]\nname = \"b\"\ninclude = [\"a.toml\"]\n");
    write(dir.path(), "r.toml", &recipe_text("r", ""));
    let errors = errors_of(dir.path(), &dir.path().join("a.toml"));
    assert_eq!(errors, ["b.toml:3:12: include cycle: a.toml -> b.toml -> a.toml"]);
}

#[test]
fn diamond_includes_load_each_recipe_once() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "r.toml", &recipe_text("r", ""));
    write(dir.path(), "x.toml", "[set]\nname = \"x\"\ninclude = [\"r.toml\"]\n");
    write(dir.path(), "y.toml", "[set]\nname = \"y\"\ninclude = [\"r.toml\", \"x.toml\"]\n");
    let top = write(dir.path(), "top.toml", "[set]\nname = \"top\"\ninclude = [\"x.toml\", \"y.toml\"]\n");
    let loaded = load(&[top]).unwrap();
    assert_eq!(loaded.recipes.len(), 1);
    assert_eq!(loaded.targets[0].packages, ["r"]);
}

#[test]
fn unknown_keys_inside_sources_deps_and_sets_are_errors() {
    let errors = load_one(&with_source(&format!("url = \"https://h/a\"\nsha265 = \"{SHA}\""))).unwrap_err();
    assert!(errors[0].starts_with("r.toml:13:1: unknown field `sha265`"), "{errors:?}");
    let errors = load_one("[package]\nname = \"a\"\nversion = \"1\"\n[deps]\nbuld = []\n[import]\n").unwrap_err();
    assert!(errors[0].starts_with("r.toml:5:1: unknown field `buld`"), "{errors:?}");
    let errors = load_one("[set]\nname = \"s\"\nincludes = []\n").unwrap_err();
    assert!(errors[0].starts_with("r.toml:3:1: unknown field `includes`"), "{errors:?}");
}

#[test]
fn wrong_value_types_are_errors_with_positions() {
    let errors = load_one(&format!("{}[env]\nN = 3\n", recipe_text("a", ""))).unwrap_err();
    assert!(errors[0].starts_with("r.toml:11:5: invalid type: integer `3`, expected a string"), "{errors:?}");
}

#[test]
fn deps_take_names_or_tables_with_a_staging_location() {
    let deps = r#""seed", { name = "glibc", at = "/lfs" }, { name = "glibc" }, {name="zlib",at="/sysroot/usr"}"#;
    let loaded = load_one(&recipe_text("a", deps)).unwrap();
    let got: Vec<(&str, &str, (usize, usize))> = loaded.recipes[0]
        .build_deps
        .iter()
        .map(|d| (d.name.as_str(), d.staged_at.to_str().unwrap(), (d.at.line, d.at.column)))
        .collect();
    assert_eq!(
        got,
        [
            ("seed", "/", (6, 10)),
            ("glibc", "/lfs", (6, 18)),
            ("glibc", "/", (6, 51)),
            ("zlib", "/sysroot/usr", (6, 71)),
        ]
    );
}

#[test]
fn bad_staging_locations_are_errors_at_the_value() {
    let errors = load_one(&recipe_text("a", r#"{ name = "glibc", at = "lfs" }, { name = "x", at = "/tmp/x" }"#)).unwrap_err();
    assert_eq!(
        errors,
        [
            "r.toml:6:33: invalid staging location `at = \"lfs\"`: must be an absolute path (start with '/')",
            "r.toml:6:61: invalid staging location `at = \"/tmp/x\"`: /tmp is reserved by the sandbox (reserved: /build /forge /tmp /dev /proc /homeless)",
        ]
    );
    let errors = load_one(&recipe_text("a", r#"{ name = "glibc", at = "/lfs/../etc" }"#)).unwrap_err();
    assert_eq!(errors, ["r.toml:6:33: invalid staging location `at = \"/lfs/../etc\"`: must be normalized: no '.' or '..' segments"]);
}

#[test]
fn dep_tables_reject_unknown_keys_and_need_a_name() {
    let errors = load_one(&recipe_text("a", r#"{ name = "glibc", path = "/lfs" }"#)).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("r.toml:6:"), "{errors:?}");
    assert!(errors[0].contains("unknown field `path`, expected `name` or `at`"), "{errors:?}");
    let errors = load_one(&recipe_text("a", r#"{ at = "/lfs" }"#)).unwrap_err();
    assert!(errors[0].starts_with("r.toml:6:") && errors[0].contains("missing field `name`"), "{errors:?}");
    let errors = load_one(&recipe_text("a", r#"{ name = "-bad", at = "/lfs" }"#)).unwrap_err();
    assert_eq!(errors, ["r.toml:6:19: invalid dependency name \"-bad\": names match [a-zA-Z0-9][a-zA-Z0-9+._-]*"]);
    let errors = load_one(&recipe_text("a", "3")).unwrap_err();
    assert!(errors[0].contains("a package name or a table"), "{errors:?}");
}

#[test]
fn limits_too_small_or_out_of_range_are_rejected() {
    let errors = load_one(&format!("{}[requirements]\ntmp = 0\nmemory = \"512K\"\nprocesses = 0\n", recipe_text("a", ""))).unwrap_err();
    assert_eq!(
        errors,
        [
            "r.toml:12:10: `memory` \"512K\" is too small to build anything: use at least \"1M\"",
            "r.toml:11:7: `tmp` 0 is too small to build anything: use at least \"1M\"",
            "r.toml:13:13: invalid `processes` 0: a number of processes from 1 to 4194304",
        ]
    );
    let r = load_one(&format!("{}[requirements]\nmax-silent-time = 0\n", recipe_text("a", ""))).unwrap();
    assert_eq!(r.recipes[0].requirements.max_silent_time, Some(0));
}
