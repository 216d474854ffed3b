//! Bad input and faults, driven through the real `forge` binary: recipe errors (exit 2,
//! `FILE:LINE:COL`), a download whose checksum does not match, a failing build and its
//! dependents, a forge process killed mid-build, two forge processes on one store.
//! After every runtime fault the store must still verify clean.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_exit, event_of, json_lines, names_with, seed_includes, stderr, TestEnv};
use sha2::{Digest as _, Sha256};

// ---------------------------------------------------------------------------------------
// Helpers

/// A recipe running `script` in the sandbox on top of `seed` (and `deps`).
fn script_recipe(name: &str, deps: &[&str], script: &str) -> String {
    let mut build = vec!["\"seed\"".to_string()];
    build.extend(deps.iter().map(|d| format!("{d:?}")));
    format!(
        "[package]\nname = \"{name}\"\nversion = \"1\"\n\n[deps]\nbuild = [{}]\n\n[build]\nscript = '''\n{script}\n'''\n",
        build.join(", ")
    )
}

/// A recipe with no dependency at all (never built: used for load-time errors).
fn trivial_recipe(name: &str, deps: &[&str]) -> String {
    let deps: Vec<String> = deps.iter().map(|d| format!("{d:?}")).collect();
    format!(
        "[package]\nname = \"{name}\"\nversion = \"1\"\n\n[deps]\nbuild = [{}]\n\n[build]\nscript = \"true\"\n",
        deps.join(", ")
    )
}

/// Write `NAME.toml` for each recipe and a set `all.toml` including them and the seeds.
fn write_set(env: &TestEnv, recipes: &[(&str, String)]) -> PathBuf {
    let mut includes = vec![seed_includes()];
    for (name, text) in recipes {
        env.write(&format!("{name}.toml"), text);
        includes.push(format!("\"{name}.toml\""));
    }
    env.write("all.toml", &format!("[set]\nname = \"all\"\ninclude = [{}]\n", includes.join(", ")))
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest as _;
    md5::Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `forge verify --json` must exit 0 and report a clean store.
#[track_caller]
fn assert_store_clean(env: &TestEnv) -> serde_json::Value {
    let out = env.forge(&["verify", "--json"]);
    assert_exit(&out, 0);
    let report = json_lines(&out.stdout).pop().expect("verify prints a report");
    assert_eq!(report["clean"], true, "{report:#}");
    report
}

/// The single error line forge printed for a usage failure, minus the `forge: ` prefix.
#[track_caller]
fn usage_error(out: &Output) -> String {
    assert_exit(out, 2);
    let text = stderr(out);
    let line = text.lines().find(|l| l.starts_with("forge: ")).unwrap_or_else(|| panic!("no error line in {text:?}"));
    line.trim_start_matches("forge: ").to_string()
}

/// Node events (built/cached/failed/skipped) of one name across several event streams.
fn count_events(streams: &[&[serde_json::Value]], kind: &str, name: &str) -> usize {
    streams.iter().flat_map(|s| s.iter()).filter(|e| e["event"] == kind && e["name"] == name).count()
}

/// Every process whose command line contains `marker` (NULs read as spaces).
fn processes_with(marker: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(marker) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Poll `cond` until it holds or `limit` passes.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Wait for a child, killing it (and failing the test) if it outlives `limit`.
fn wait_with_deadline(mut child: Child, limit: Duration, what: &str) -> Output {
    let start = Instant::now();
    loop {
        match child.try_wait().expect("try_wait") {
            Some(_) => return child.wait_with_output().expect("collect output"),
            None if start.elapsed() > limit => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("collect output");
                panic!("{what} still running after {limit:?}\n--- stderr\n{}", stderr(&out));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Recipe errors: exit 2 before anything runs, FILE:LINE:COL in the message.

#[test]
fn toml_syntax_error_names_file_line_and_column() {
    let env = TestEnv::empty();
    // Line 3 is broken: a second value after the string.
    let file = env.write("broken.toml", "[package]\nname = \"a\"\nversion = \"1\" \"2\"\n[build]\nscript = \"true\"\n");
    let msg = usage_error(&env.forge(&["build", "broken.toml"]));
    let prefix = format!("{}:3:", path_str(&file));
    assert!(msg.starts_with(&prefix), "expected {prefix}COL: ..., got {msg:?}");
    let col: usize = msg[prefix.len()..].split(':').next().and_then(|c| c.parse().ok()).unwrap_or(0);
    assert!((15..=18).contains(&col), "column {col} should point past `version = \"1\"` in {msg:?}");
    assert!(
        !env.store.join("objects").exists() || std::fs::read_dir(env.store.join("objects")).unwrap().next().is_none()
    );
}

#[test]
fn unknown_key_names_the_key_and_where_it_is() {
    let env = TestEnv::empty();
    let file = env
        .write("typo.toml", "[package]\nname = \"a\"\n  nmae = \"b\"\nversion = \"1\"\n[build]\nscript = \"true\"\n");
    let msg = usage_error(&env.forge(&["build", "typo.toml"]));
    let expected = format!("{}:3:3: unknown field `nmae`", path_str(&file));
    assert!(msg.starts_with(&expected), "expected {expected:?}..., got {msg:?}");
    assert!(msg.contains("`name`"), "should suggest the valid keys: {msg:?}");
}

#[test]
fn unknown_dependency_names_it_and_where_it_is_written() {
    let env = TestEnv::empty();
    env.write("b.toml", &trivial_recipe("b", &[]));
    let file = env.write("a.toml", &trivial_recipe("a", &["b", "binutlis"]));
    let msg = usage_error(&env.forge(&["build", "a.toml", "b.toml"]));
    // `build = ["b", "binutlis"]` is line 6; the second name starts at column 15.
    let expected = format!("{}:6:15:", path_str(&file));
    assert!(msg.starts_with(&expected), "expected {expected:?}..., got {msg:?}");
    assert!(msg.contains("\"a\"") && msg.contains("\"binutlis\""), "{msg:?}");
}

#[test]
fn dependency_cycle_lists_every_member() {
    let env = TestEnv::empty();
    env.write("a.toml", &trivial_recipe("a", &["b"]));
    env.write("b.toml", &trivial_recipe("b", &["c"]));
    env.write("c.toml", &trivial_recipe("c", &["a"]));
    // d depends on the cycle but is not part of it.
    env.write("d.toml", &trivial_recipe("d", &["a"]));
    let out = env.forge(&["build", "d.toml", "c.toml", "b.toml", "a.toml"]);
    let msg = usage_error(&out);
    let rotations = ["a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c"];
    let cycle = rotations.iter().find(|r| msg.contains(&format!("dependency cycle: {r}")));
    assert!(cycle.is_some(), "cycle a -> b -> c not listed member by member: {msg:?}");
    assert!(!msg.contains("d ->") && !msg.contains("-> d"), "d is not in the cycle: {msg:?}");
    // The location is where the first member's dependency on the second is written.
    let first = &cycle.unwrap()[..1];
    let expected = format!("{}:6:10:", path_str(&env.path(&format!("{first}.toml"))));
    assert!(msg.starts_with(&expected), "expected {expected:?}..., got {msg:?}");
}

#[test]
fn duplicate_package_name_names_both_files() {
    let env = TestEnv::empty();
    let one = env.write("one/zlib.toml", &trivial_recipe("zlib", &[]));
    let two = env.write("two/zlib.toml", &trivial_recipe("zlib", &[]));
    let msg = usage_error(&env.forge(&["build", "one/zlib.toml", "two/zlib.toml"]));
    assert!(msg.contains("duplicate package name \"zlib\""), "{msg:?}");
    assert!(msg.contains(&format!("{}:2:8", path_str(&one))), "first definition missing: {msg:?}");
    assert!(msg.contains(&format!("{}:2:8", path_str(&two))), "second definition missing: {msg:?}");
}

#[test]
fn url_source_without_checksum_asks_to_pin_it() {
    let env = TestEnv::empty();
    let payload = env.write("payload.txt", "x\n");
    let file = env.write(
        "unpinned.toml",
        &format!(
            "[package]\nname = \"unpinned\"\nversion = \"1\"\n\n[[source]]\nurl = \"file://{}\"\n\n[import]\nunpack = false\n",
            path_str(&payload)
        ),
    );
    let msg = usage_error(&env.forge(&["build", "unpinned.toml"]));
    let expected = format!("{}:5:1: url source without a checksum: pin it with `sha256 = ", path_str(&file));
    assert!(msg.starts_with(&expected), "expected {expected:?}..., got {msg:?}");
}

// ---------------------------------------------------------------------------------------
// Sources: a checksum mismatch registers nothing; md5 alone warns but works.

/// An import of one `file://` URL, pinned with `checksum_line`.
fn url_import(name: &str, payload: &Path, checksum_line: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"1\"\n\n[[source]]\nurl = \"file://{}\"\n{checksum_line}\n\n[import]\nunpack = false\n",
        path_str(payload)
    )
}

/// Every regular file under `dir` whose content is exactly `bytes`.
fn files_holding(dir: &Path, bytes: &[u8]) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter(|e| std::fs::read(e.path()).is_ok_and(|c| c == bytes))
        .map(|e| e.path().to_path_buf())
        .collect()
}

#[test]
fn checksum_mismatch_shows_both_hashes_and_registers_nothing() {
    let env = TestEnv::empty();
    let bad_bytes = b"these bytes do not match their pin\n";
    let good_bytes = b"these bytes match their pin\n";
    let bad = env.write("payload-bad.txt", std::str::from_utf8(bad_bytes).unwrap());
    let good = env.write("payload-good.txt", std::str::from_utf8(good_bytes).unwrap());
    let pinned = sha256_hex(b"what the publisher released\n");
    let actual = sha256_hex(bad_bytes);
    env.write("bad.toml", &url_import("bad", &bad, &format!("sha256 = \"{pinned}\"")));
    env.write("good.toml", &url_import("good", &good, &format!("sha256 = \"{}\"", sha256_hex(good_bytes))));

    let out = env.forge(&["build", "--keep-going", "bad.toml", "good.toml"]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("bad failed"), "{err}");
    assert!(err.contains(&format!("expected sha256:{pinned}")), "expected hash missing:\n{err}");
    assert!(err.contains(&format!("actual   sha256:{actual}")), "actual hash missing:\n{err}");
    assert!(err.contains("payload-bad.txt"), "the file should be named:\n{err}");

    // Nothing of the bad download is kept, and the package is not realised.
    let leftovers = files_holding(&env.store, bad_bytes);
    assert!(leftovers.is_empty(), "the rejected download survives in the store: {leftovers:?}");
    let show = env.forge(&["show", "--json", "bad.toml", "good.toml"]);
    assert_exit(&show, 0);
    let nodes = json_lines(&show.stdout);
    assert_eq!(event_of(&nodes, "bad")["status"], "to build");
    assert_eq!(event_of(&nodes, "bad")["out"], serde_json::Value::Null);
    assert_eq!(event_of(&nodes, "good")["status"], "built");

    let report = assert_store_clean(&env);
    assert_eq!(report["checked_objects"], 1, "only `good` is registered: {report:#}");
}

#[test]
fn md5_only_warns_with_location_but_builds() {
    let env = TestEnv::empty();
    let bytes = b"an LFS tarball, pinned the LFS way\n";
    let payload = env.write("payload.txt", std::str::from_utf8(bytes).unwrap());
    let file = env.write("old.toml", &url_import("old", &payload, &format!("md5 = \"{}\"", md5_hex(bytes))));
    let out = env.forge(&["build", "old.toml"]);
    assert_exit(&out, 0);
    let err = stderr(&out);
    // The source pinned by md5 starts on line 5 (`[[source]]`).
    let warning = format!("warning: {}:5:1: md5 only, pin a sha256", path_str(&file));
    assert!(err.contains(&warning), "expected {warning:?} in:\n{err}");
    assert_eq!(files_holding(&env.store.join("objects"), bytes).len(), 1, "the source is the output");
    // Only the packages a build selects warn: `-p other` does not build `old`.
    let set = env.write("both.toml", "[set]\nname = \"both\"\ninclude = [\"old.toml\", \"other.toml\"]\n");
    env.write("other.toml", &url_import("other", &payload, &format!("sha256 = \"{}\"", sha256_hex(bytes))));
    let out = env.forge(&["build", path_str(&set), "-p", "other"]);
    assert_exit(&out, 0);
    assert!(!stderr(&out).contains("md5 only"), "{}", stderr(&out));

    // A wrong md5 is still caught.
    let wrong = env.write("wrong.toml", &url_import("wrong", &payload, &format!("md5 = \"{}\"", "0".repeat(32))));
    let out = env.forge(&["build", path_str(&wrong)]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains(&format!("actual   md5:{}", md5_hex(bytes))), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------
// A failing build.

#[test]
fn failed_build_logs_skips_dependents_and_keep_going_builds_the_rest() {
    let env = TestEnv::with_seed_sources();
    let set = write_set(
        &env,
        &[
            ("broken", script_recipe("broken", &[], "echo 'output-of-the-broken-build'\nexit 3")),
            ("needs-broken", script_recipe("needs-broken", &["broken"], "touch \"$FORGE_OUT/x\"")),
            ("after-broken", script_recipe("after-broken", &["needs-broken"], "touch \"$FORGE_OUT/x\"")),
            // `independent` only becomes ready after `step` is built; with -j1 `broken`
            // (ready at the same time as `step`) runs first, so without --keep-going
            // `independent` must never start.
            ("step", script_recipe("step", &[], "touch \"$FORGE_OUT/step\"")),
            ("independent", script_recipe("independent", &["step"], "touch \"$FORGE_OUT/ok\"")),
        ],
    );
    let set = path_str(&set);

    let (events, out) = env.build_json(&["-j", "1", set]);
    assert_exit(&out, 1);
    let failed = event_of(&events, "broken");
    assert_eq!(failed["event"], "failed", "{events:#?}");
    assert!(failed["error"].as_str().unwrap_or("").contains("status 3"), "{failed}");
    for dependent in ["needs-broken", "after-broken"] {
        let e = event_of(&events, dependent);
        assert_eq!(e["event"], "skipped", "{e}");
        assert!(e["reason"].as_str().unwrap_or("").contains("broken"), "the reason names the failure: {e}");
    }
    assert!(names_with(&events, "started").iter().all(|n| n != "independent"), "started after a failure: {events:#?}");
    assert!(names_with(&events, "built").iter().all(|n| n != "independent"));
    // ...but it is still reported, as skipped because the run stopped.
    let independent = event_of(&events, "independent");
    assert_eq!(independent["event"], "skipped", "{independent}");
    assert!(independent["reason"].as_str().unwrap_or("").contains("--keep-going"), "{independent}");
    let failed_at = events.iter().position(|e| e["event"] == "failed").expect("a failed event");
    let late: Vec<_> = events[failed_at..].iter().filter(|e| e["event"] == "started").collect();
    assert!(late.is_empty(), "builds started after the failure without --keep-going: {late:?}");
    let summary = events.last().expect("summary");
    assert_eq!((summary["event"].as_str(), summary["failed"].as_u64()), (Some("summary"), Some(1)), "{summary}");
    // Every one of the 7 nodes is accounted for, the ones never started as skipped.
    let accounted: u64 =
        ["built", "cached", "failed", "skipped"].iter().map(|k| summary[k].as_u64().unwrap_or(0)).sum();
    assert_eq!(accounted, 7, "{summary}");

    let log = env.forge(&["log", "broken"]);
    assert_exit(&log, 0);
    assert!(common::stdout(&log).contains("output-of-the-broken-build"), "{}", common::stdout(&log));

    // Human output says the same.
    let out = env.forge(&["build", "-j", "1", set]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("error: broken failed") && err.contains("output-of-the-broken-build"), "{err}");
    assert!(err.contains("skipped needs-broken: dependency broken failed"), "{err}");

    let (events, out) = env.build_json(&["-j", "1", "--keep-going", set]);
    assert_exit(&out, 1);
    assert_eq!(event_of(&events, "broken")["event"], "failed");
    assert_eq!(event_of(&events, "needs-broken")["event"], "skipped");
    assert_eq!(event_of(&events, "after-broken")["event"], "skipped");
    assert_eq!(event_of(&events, "independent")["event"], "built", "{events:#?}");
    assert_store_clean(&env);
}

// ---------------------------------------------------------------------------------------
// A forge process killed mid-build.

/// Sleeps forever when granted exactly 7 jobs. `$FORGE_JOBS` is deliberately not part of
/// the derivation, so a second run with another --build-jobs builds the *same* derivation.
/// The marker holds this test process's pid, so that concurrent runs of the suite on one
/// machine do not see each other's sleeps.
fn sleeper_script() -> (String, String) {
    let marker = format!("sleep 9{:08}", std::process::id());
    let script = format!("if [ \"$FORGE_JOBS\" = 7 ]; then {marker}; fi\necho done > \"$FORGE_OUT/done\"");
    (script, marker)
}

/// SIGKILL every process whose command line holds `marker` (cleanup after a failed check).
fn kill_marked(marker: &str) {
    for (pid, _) in processes_with(marker) {
        // SAFETY: kill(2) with a pid read from /proc; no memory is involved.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}

#[test]
fn killed_forge_leaves_a_store_the_next_build_completes() {
    let env = TestEnv::with_seed_sources();
    let (script, marker) = sleeper_script();
    let set = write_set(&env, &[("sleeper", script_recipe("sleeper", &[], &script))]);
    let set = path_str(&set);

    let mut child = env
        .cmd()
        .args(["build", "--json", "--build-jobs", "7", set])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn forge");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let started = loop {
        let Some(Ok(line)) = lines.next() else { break None };
        let event: serde_json::Value = serde_json::from_str(&line).expect("JSON event");
        if event["event"] == "started" && event["name"] == "sleeper" {
            break Some(event);
        }
    };
    assert!(started.is_some(), "forge never started sleeper");
    // The sandboxed script is running once its sleep shows up.
    let running = wait_until(Duration::from_secs(30), || !processes_with(&marker).is_empty());
    if !running {
        let _ = child.kill();
        panic!("the sandboxed `{marker}` never appeared");
    }

    child.kill().expect("SIGKILL forge");
    child.wait().expect("reap forge");
    drop(lines);

    let gone = wait_until(Duration::from_secs(10), || processes_with(&marker).is_empty());
    if !gone {
        let survivors = processes_with(&marker);
        kill_marked(&marker);
        panic!("sandbox processes survived their forge: {survivors:?}");
    }
    // A crash leaves nothing half-registered.
    assert_store_clean(&env);

    let next = env
        .cmd()
        .args(["build", "--json", "--build-jobs", "1", set])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn forge");
    let out = wait_with_deadline(next, Duration::from_secs(60), "the build after the kill");
    assert_exit(&out, 0);
    let events = json_lines(&out.stdout);
    assert_eq!(event_of(&events, "sleeper")["event"], "built", "{events:#?}");
    assert_eq!(event_of(&events, "sleeper")["drv"], started.unwrap()["drv"], "the same derivation is built again");
    assert_store_clean(&env);

    // The killed build's scratch directory was removed when the next forge opened the store
    // (its owner lock was free: docs/reliability.md); gc finds nothing stale, and what the
    // second build registered is kept.
    assert_eq!(std::fs::read_dir(env.store.join("tmp")).expect("tmp/").count(), 0);
    let gc = env.forge(&["gc"]);
    assert_exit(&gc, 0);
    assert!(common::stdout(&gc).contains("0 stale scratch dirs"), "{}", common::stdout(&gc));
    let (events, out) = env.build_json(&["--build-jobs", "1", set]);
    assert_exit(&out, 0);
    assert_eq!(event_of(&events, "sleeper")["event"], "cached", "{events:#?}");
    assert_store_clean(&env);
}

fn spawn_json_build(env: &TestEnv, set: &str) -> Child {
    env.cmd()
        .args(["build", "--json", "-j", "2", set])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn forge")
}

#[test]
fn two_forge_processes_on_one_store_build_each_derivation_once() {
    let env = TestEnv::with_seed_sources();
    let set = write_set(
        &env,
        &[
            ("left", script_recipe("left", &[], "sleep 0.3; echo left > \"$FORGE_OUT/left\"")),
            ("right", script_recipe("right", &[], "sleep 0.3; echo right > \"$FORGE_OUT/right\"")),
            ("top", script_recipe("top", &["left", "right"], "cat /left /right > \"$FORGE_OUT/both\"")),
        ],
    );
    let set = path_str(&set);
    let first = spawn_json_build(&env, set);
    let second = spawn_json_build(&env, set);
    let a = wait_with_deadline(first, Duration::from_secs(60), "first forge");
    let b = wait_with_deadline(second, Duration::from_secs(60), "second forge");
    assert_exit(&a, 0);
    assert_exit(&b, 0);
    let (ea, eb) = (json_lines(&a.stdout), json_lines(&b.stdout));
    for name in ["busybox-static", "seed", "left", "right", "top"] {
        let built = count_events(&[&ea, &eb], "built", name);
        assert_eq!(built, 1, "{name} built {built} times across both processes\n{ea:#?}\n{eb:#?}");
        let cached = count_events(&[&ea, &eb], "cached", name);
        assert_eq!(cached, 1, "the other process reports {name} cached\n{ea:#?}\n{eb:#?}");
        // Both agree on the output.
        let out_in = |events: &[serde_json::Value]| {
            events
                .iter()
                .find(|e| e["name"] == name && (e["event"] == "built" || e["event"] == "cached"))
                .map(|e| e["out"].clone())
        };
        assert_eq!(out_in(&ea), out_in(&eb), "{name}");
        assert!(out_in(&ea).is_some_and(|o| o.is_string()), "{name}");
    }
    assert_store_clean(&env);
}

#[test]
fn keep_failed_keeps_build_and_out_outside_gc_and_says_where() {
    let env = TestEnv::with_seed_sources();
    let script = "echo state > /build/half-done\necho partial > \"$FORGE_OUT/partial\"\nexit 3";
    let set = write_set(&env, &[("broken", script_recipe("broken", &[], script))]);
    let set = path_str(&set);

    // Without the flag nothing is kept.
    let out = env.forge(&["build", set]);
    assert_exit(&out, 1);
    assert!(!env.store.join("failed").exists());

    let out = env.forge(&["build", "--keep-failed", set]);
    assert_exit(&out, 1);
    let failed = env.store.join("failed");
    let kept: Vec<_> = std::fs::read_dir(&failed).expect("failed/").map(|e| e.unwrap().path()).collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let kept = &kept[0];
    assert!(kept.file_name().unwrap().to_str().unwrap().starts_with("broken-"), "{}", kept.display());
    assert!(stderr(&out).contains(&kept.display().to_string()), "the error says where:\n{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(kept.join("build/half-done")).unwrap(), "state\n");
    assert_eq!(std::fs::read_to_string(kept.join("out/partial")).unwrap(), "partial\n");
    let log = env.forge(&["log", "broken"]);
    assert!(common::stdout(&log).contains("--keep-failed"), "{}", common::stdout(&log));

    // gc leaves it; a second failure of the same derivation replaces it.
    assert_exit(&env.forge(&["gc"]), 0);
    assert!(kept.join("build/half-done").is_file());
    std::fs::write(kept.join("build/stale"), "x").unwrap();
    assert_exit(&env.forge(&["build", "--keep-failed", set]), 1);
    assert!(kept.join("build/half-done").is_file() && !kept.join("build/stale").exists());
    assert_store_clean(&env);
}
