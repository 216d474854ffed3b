//! Reproducibility audits: `forge build --check` catches a recipe whose output embeds random
//! bytes and the build path, `forge diff` names the files, reproducible recipes pass;
//! `forge audit` against caches built by other stores reports matches and a validly signed
//! mismatch; `--require-agreement` substitutes only what enough trusted keys agree on, and
//! disagreements are kept in the divergence ledger.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// `flaky` writes random bytes and the physical build path into its output; `steady` is
/// reproducible; `user` is built against `flaky`.
fn write_set(env: &TestEnv) -> PathBuf {
    env.write(
        "pkgs/flaky.toml",
        r#"
[package]
name = "flaky"
version = "1"
[deps]
build = ["seed"]
[build]
script = '''
mkdir -p $FORGE_OUT/share
echo "stable line" > $FORGE_OUT/share/stable.txt
printf 'line one\nbuilt in %s\nline three\n' "$(pwd -P)" > $FORGE_OUT/share/where.txt
head -c 32 /dev/urandom > $FORGE_OUT/share/noise.bin
'''
"#,
    );
    env.write(
        "pkgs/steady.toml",
        r#"
[package]
name = "steady"
version = "1"
[deps]
build = ["seed"]
[build]
script = 'mkdir -p $FORGE_OUT && echo same every time > $FORGE_OUT/same.txt'
"#,
    );
    env.write(
        "pkgs/user.toml",
        r#"
[package]
name = "user"
version = "1"
[deps]
build = ["seed", "flaky"]
[build]
script = 'mkdir -p $FORGE_OUT && cat /share/stable.txt > $FORGE_OUT/copy.txt'
"#,
    );
    env.write("set.toml", &format!("[set]\nname = \"r\"\ninclude = [{}, \"pkgs/*.toml\"]\n", seed_includes()))
}

fn built_env() -> (TestEnv, PathBuf, Vec<serde_json::Value>) {
    let env = TestEnv::with_seed_sources();
    let set = write_set(&env);
    let (events, out) = env.build_json(&[set.to_str().unwrap()]);
    assert_exit(&out, 0);
    (env, set, events)
}

fn with_event<'a>(events: &'a [serde_json::Value], kind: &str, name: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["event"] == kind && e["name"] == name).collect()
}

#[test]
fn check_catches_a_non_reproducible_recipe_and_diff_names_the_files() {
    let (env, set, first) = built_env();
    let set = set.to_str().unwrap();
    let recorded = out_of(&first, "flaky");

    let (events, out) = env.build_json(&[set, "--check", "--rounds", "2", "-p", "flaky", "-p", "steady"]);
    assert_exit(&out, 1);
    let flaky = with_event(&events, "check", "flaky");
    assert_eq!(flaky[0]["verdict"], "not-reproducible", "{}", stderr(&out));
    assert_eq!(flaky[0]["recorded"], recorded.as_str());
    assert_eq!(flaky[0]["differing"].as_array().unwrap().len(), 2, "each round differs: random bytes");
    assert_eq!(with_event(&events, "check", "steady")[0]["verdict"], "reproducible");
    // Round 1 and round 2 vary the build path and the jobs, differently.
    let rounds = with_event(&events, "check-round", "steady");
    let variations: Vec<&str> = rounds.iter().map(|r| r["variation"].as_str().unwrap()).collect();
    assert_eq!(variations.len(), 2);
    assert!(variations[0].starts_with("build dir /build-check-1, FORGE_JOBS=1"), "{variations:?}");
    assert!(variations[1].starts_with("build dir /build-check-2, FORGE_JOBS="), "{variations:?}");
    assert!(rounds.iter().all(|r| r["same"] == true));
    let summary = events.iter().find(|e| e["event"] == "check-summary").unwrap();
    assert_eq!((summary["reproducible"].as_u64(), summary["not_reproducible"].as_u64()), (Some(1), Some(1)));
    // The recorded realisation is untouched: the next build is cached with the same out.
    let (again, out) = env.build_json(&[set, "-p", "flaky"]);
    assert_exit(&out, 0);
    assert_eq!(out_of(&again, "flaky"), recorded);

    // forge diff names the differing files; the build path shows in a text diff.
    let diff = env.forge(&["diff", "--json", "flaky", "--check"]);
    assert_exit(&diff, 1);
    let report = &json_lines(&diff.stdout)[0];
    let changes = report["changes"].as_array().unwrap();
    let paths: Vec<&str> = changes.iter().map(|c| c["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["share/noise.bin", "share/where.txt"]);
    let where_diff = changes[1]["diff"].as_str().unwrap();
    assert!(where_diff.contains("-built in /build\n") && where_diff.contains("+built in /build-check-"), "{where_diff}");
    let human = env.forge(&["diff", "flaky", "--check", "--no-diffoscope"]);
    assert!(stdout(&human).contains("changed  share/noise.bin (content"), "{}", stdout(&human));
    assert!(stdout(&human).contains("binary files a/share/noise.bin and b/share/noise.bin differ"));

    // A reproducible package keeps nothing to compare; identical trees exit 0.
    assert_exit(&env.forge(&["diff", "steady", "--check"]), 2);
    let steady = out_of(&first, "steady");
    assert_exit(&env.forge(&["diff", &steady[..10], "steady"]), 0);

    // Without build-path variation, where.txt no longer differs: only the random bytes do.
    let (events, out) = env.build_json(&[set, "--check", "-p", "flaky", "--vary", "jobs"]);
    assert_exit(&out, 1);
    assert_eq!(with_event(&events, "check-round", "flaky")[0]["variation"], "FORGE_JOBS=1");
    let diff = env.forge(&["diff", "--json", "flaky", "--check"]);
    let paths: Vec<String> = json_lines(&diff.stdout)[0]["changes"].as_array().unwrap().iter().map(|c| c["path"].as_str().unwrap().to_string()).collect();
    assert_eq!(paths, ["share/noise.bin"]);
    assert_exit(&env.forge(&["build", set, "--check", "--vary", "time"]), 2);
}

#[test]
fn diffoscope_gets_binary_files_when_installed() {
    let (env, set, _) = built_env();
    let (_, out) = env.build_json(&[set.to_str().unwrap(), "--check", "-p", "flaky", "--vary", "none"]);
    assert_exit(&out, 1);
    let diff = env.forge(&["diff", "flaky", "--check"]);
    let text = stdout(&diff);
    if which_diffoscope() {
        assert!(text.contains("diffoscope a/share/noise.bin b/share/noise.bin:") && text.contains("00000000:"), "{text}");
    } else {
        assert!(text.contains("install diffoscope"), "{text}");
    }
}

fn which_diffoscope() -> bool {
    std::env::var("PATH").unwrap_or_default().split(':').any(|d| Path::new(d).join("diffoscope").is_file())
}


fn push(env: &TestEnv, set: &Path, key: &Path, url: &str) {
    let out = env.forge(&["push", "--to", url, "--key", key.to_str().unwrap(), set.to_str().unwrap()]);
    assert_exit(&out, 0);
}

fn audit(env: &TestEnv, set: &Path, urls: &[&str], keys: &[&str], extra: &[&str]) -> (Vec<serde_json::Value>, std::process::Output) {
    let mut args = vec!["audit", "--json", set.to_str().unwrap()];
    for url in urls {
        args.extend(["--against", url]);
    }
    for key in keys {
        args.extend(["--trusted-key", key]);
    }
    args.extend_from_slice(extra);
    let out = env.forge(&args);
    (json_lines(&out.stdout), out)
}

fn verdict<'a>(events: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    &with_event(events, "audit", name)[0]["verdict"]
}

#[test]
fn audit_reports_matches_and_a_validly_signed_mismatch() {
    // Machine A builds and pushes to its cache; machine B builds the same set itself.
    let (a, set, a_events) = built_env();
    let (key_a, public_a) = keygen(&a, "machine-a");
    let cache_a = format!("file://{}", a.path("cache-a").display());
    push(&a, &set, &key_a, &cache_a);
    let (b, _, b_events) = built_env();

    let (events, out) = audit(&b, &set, &[&cache_a], &[&public_a], &["--report", b.path("audit.html").to_str().unwrap()]);
    assert_exit(&out, 1); // flaky differs: random bytes
    for name in ["seed", "steady", "busybox-static"] {
        assert_eq!(verdict(&events, name), "match", "{name}: {}", stderr(&out));
    }
    assert_eq!(verdict(&events, "flaky"), "mismatch");
    let flaky = with_event(&events, "audit", "flaky")[0];
    assert_eq!(flaky["nondeterministic"], true);
    assert_eq!(flaky["caches"][0]["signed"][0][0], out_of(&a_events, "flaky").as_str());
    assert_eq!(flaky["caches"][0]["signed"][0][1], "machine-a");
    // The disputed output was fetched and checked: forge diff compares the two.
    let fetched = flaky["fetched"][0].as_str().unwrap();
    assert_eq!(fetched, out_of(&a_events, "flaky"));
    let diff = b.forge(&["diff", "--json", &out_of(&b_events, "flaky"), fetched]);
    let changes = json_lines(&diff.stdout)[0]["changes"].clone();
    assert!(changes.as_array().unwrap().iter().any(|c| c["path"] == "share/noise.bin"), "{changes}");
    // `user` was built against B's flaky: the ledger says so.
    let used_by = flaky["used_by"].as_array().unwrap();
    let b_flaky = used_by.iter().find(|u| u["out"] == out_of(&b_events, "flaky").as_str()).unwrap();
    assert_eq!(b_flaky["dependents"][0]["name"], "user");
    let summary = events.iter().find(|e| e["event"] == "summary").unwrap();
    assert_eq!((summary["mismatch"].as_u64(), summary["nondeterministic"].as_u64()), (Some(1), Some(1)));

    // The HTML report is self-contained and names the verdicts.
    let html = std::fs::read_to_string(b.path("audit.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("b-mismatch") && html.contains("id=\"diff-flaky\""));
    assert!(html.contains("share/noise.bin") && !html.contains("<script") && !html.contains("src=\"http"));

    // The same audit restricted to reproducible packages passes.
    let (events, out) = audit(&b, &set, &[&cache_a], &[&public_a], &["-p", "steady"]);
    assert_exit(&out, 0);
    assert_eq!(verdict(&events, "steady"), "match");
    // A key not trusted: nothing to compare, unknown.
    let (_, other_key) = keygen(&b, "stranger");
    let (events, out) = audit(&b, &set, &[&cache_a], &[&other_key], &["-p", "steady"]);
    assert_exit(&out, 0);
    assert_eq!(verdict(&events, "steady"), "unknown-remote");
}

#[test]
fn require_agreement_substitutes_only_what_enough_keys_sign_and_keeps_disagreements() {
    // Two machines with their own keys push to one cache.
    let (a, set, a_events) = built_env();
    let (b, _, b_events) = built_env();
    let (key_a, public_a) = keygen(&a, "machine-a");
    let (key_b, public_b) = keygen(&b, "machine-b");
    let cache = format!("file://{}", a.path("shared-cache").display());
    push(&a, &set, &key_a, &cache);
    push(&b, &set, &key_b, &cache);

    // Machine C trusts both and wants two signatures on the same out hash.
    let c = TestEnv::with_seed_sources();
    let setp = set.to_str().unwrap();
    let (events, out) =
        c.build_json(&[setp, "--substituter", &cache, "--trusted-key", &public_a, "--trusted-key", &public_b, "--require-agreement", "2"]);
    assert_exit(&out, 0);
    let err = stderr(&out);
    for name in ["seed", "steady", "busybox-static"] {
        assert_eq!(with_event(&events, "substituted", name).len(), 1, "{name}: {err}");
        assert_eq!(out_of(&events, name), out_of(&a_events, name));
    }
    // flaky: the keys disagree, so it is built here (and user after it).
    assert_eq!(with_event(&events, "built", "flaky").len(), 1, "{err}");
    assert!(err.contains("trusted keys disagree") && err.contains("fewer than 2 trusted keys agree"), "{err}");
    // The disagreement is on record: flaky is non-deterministic, with both signed outputs.
    let (audited, _) = audit(&c, &set, &[], &[], &["-p", "flaky"]);
    let flaky = with_event(&audited, "audit", "flaky")[0];
    assert_eq!(flaky["nondeterministic"], true);
    let outs: Vec<&str> = flaky["history"].as_array().unwrap().iter().map(|h| h["out_hash"].as_str().unwrap()).collect();
    for expected in [out_of(&a_events, "flaky"), out_of(&b_events, "flaky")] {
        assert!(outs.contains(&expected.as_str()), "{outs:?}");
    }
    let shown = json_lines(&c.forge(&["show", "--json", setp]).stdout);
    let marked: Vec<&str> = shown.iter().filter(|n| n["nondeterministic"] == true).map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(marked, ["flaky"]);

    // Requiring agreement with a single trusted key substitutes nothing.
    let d = TestEnv::with_seed_sources();
    let (events, out) = d.build_json(&[setp, "--substituter", &cache, "--trusted-key", &public_a, "--require-agreement", "2", "-p", "steady"]);
    assert_exit(&out, 0);
    assert_eq!(with_event(&events, "substituted", "steady").len(), 0, "{}", stderr(&out));
    assert_eq!(with_event(&events, "built", "steady").len(), 1);
}
