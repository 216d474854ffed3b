//! End-to-end builds through the real binary and the real sandbox: the demo, caching,
//! invalidation with early cutoff, isolation seen from inside builds, JSON events,
//! dry runs, logs, gc and verify.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;

use common::*;

/// A set `chain` with the seed and packages a -> b -> c (c depends on b, b on a) and an
/// independent d. Each writes a file derived from its inputs, so content flows down.
/// a is only a *build* dependency of b, so c's sandbox holds b but not a.
fn write_chain(env: &TestEnv, b_script: &str) -> std::path::PathBuf {
    env.write(
        "pkgs/a.toml",
        r#"
[package]
name = "a"
version = "1"
[deps]
build = ["seed"]
[build]
script = 'mkdir -p $FORGE_OUT/share && echo alpha > $FORGE_OUT/share/a.txt'
"#,
    );
    env.write(
        "pkgs/b.toml",
        &format!(
            r#"
[package]
name = "b"
version = "1"
[deps]
build = ["seed", "a"]
[build]
script = '''
{b_script}
'''
"#
        ),
    );
    env.write(
        "pkgs/c.toml",
        r#"
[package]
name = "c"
version = "1"
[deps]
build = ["seed", "b"]
[build]
script = 'mkdir -p $FORGE_OUT/share && cat /share/b.txt > $FORGE_OUT/share/c.txt; test ! -e /share/a.txt'
"#,
    );
    env.write(
        "pkgs/d.toml",
        r#"
[package]
name = "d"
version = "1"
[deps]
build = ["seed"]
[build]
script = 'mkdir -p $FORGE_OUT/share && echo delta > $FORGE_OUT/share/d.txt'
"#,
    );
    env.write(
        "chain.toml",
        &format!("[set]\nname = \"chain\"\ninclude = [{}, \"pkgs/*.toml\"]\n", seed_includes()),
    )
}

const B_ORIGINAL: &str = "mkdir -p $FORGE_OUT/share && { echo beta; cat /share/a.txt; } > $FORGE_OUT/share/b.txt";


#[test]
fn chain_builds_then_rebuilds_nothing() {
    let env = TestEnv::with_seed_sources();
    let set = write_chain(&env, B_ORIGINAL);
    let set = set.to_str().unwrap();

    let (events, out) = env.build_json(&[set]);
    assert_exit(&out, 0);
    assert_eq!(names_with(&events, "built"), ["a", "b", "busybox-static", "c", "d", "seed"]);
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!((summary["built"].as_u64(), summary["failed"].as_u64()), (Some(6), Some(0)));
    for e in events.iter().filter(|e| e["event"] == "built") {
        assert_eq!(e["drv"].as_str().unwrap().len(), 64, "{e}");
        assert_eq!(e["out"].as_str().unwrap().len(), 64, "{e}");
    }

    // c's output holds what b and a produced, read through its sandbox root.
    let c_out = env.store.join("objects").join(out_of(&events, "c"));
    assert_eq!(std::fs::read_to_string(c_out.join("share/c.txt")).unwrap(), "beta\nalpha\n");

    // A repeated build builds nothing.
    let (again, out) = env.build_json(&[set]);
    assert_exit(&out, 0);
    assert!(names_with(&again, "built").is_empty(), "{again:#?}");
    assert_eq!(names_with(&again, "cached").len(), 6);
    for name in ["a", "b", "c", "d"] {
        assert_eq!(out_of(&again, name), out_of(&events, name));
    }
}

#[test]
fn changed_recipe_rebuilds_it_and_only_dependents_whose_inputs_changed() {
    let env = TestEnv::with_seed_sources();
    let set = write_chain(&env, B_ORIGINAL);
    let set = set.to_str().unwrap();
    let (first, out) = env.build_json(&[set]);
    assert_exit(&out, 0);

    // 1. b's script changes and so does its output: b and its dependent c rebuild;
    //    a, d and the seeds are untouched.
    write_chain(&env, &B_ORIGINAL.replace("echo beta", "echo BETA"));
    let (dry, out) = env.build_json(&["--dry-run", set]);
    assert_exit(&out, 0);
    let to_build: Vec<&str> = dry
        .iter()
        .filter(|e| e["status"] == "to build")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(to_build, ["b", "c"], "{dry:#?}");
    let c_reason = dry.iter().find(|e| e["name"] == "c").unwrap()["reason"].as_str().unwrap();
    assert!(c_reason.contains("input b"), "{c_reason}");

    let (second, out) = env.build_json(&[set]);
    assert_exit(&out, 0);
    assert_eq!(names_with(&second, "built"), ["b", "c"]);
    assert_ne!(out_of(&second, "b"), out_of(&first, "b"));
    assert_eq!(out_of(&second, "a"), out_of(&first, "a"));

    // 2. b's script changes but its output does not (a comment): b rebuilds, produces the
    //    same out hash, and c is not rebuilt (early cutoff through the resolved key).
    write_chain(&env, &format!("# a comment changes the derivation, not the output\n{}", B_ORIGINAL.replace("echo beta", "echo BETA")));
    let (third, out) = env.build_json(&[set]);
    assert_exit(&out, 0);
    assert_eq!(names_with(&third, "built"), ["b"], "{third:#?}");
    assert_eq!(out_of(&third, "b"), out_of(&second, "b"));
    let c = event_of(&third, "c");
    assert_eq!(c["event"], "cached");
    assert_eq!(c["cutoff"], true, "{c}");
    assert_eq!(out_of(&third, "c"), out_of(&second, "c"));

    // And the cutoff is remembered: the next run finds c by its drv hash directly.
    let (fourth, _) = env.build_json(&[set]);
    assert!(names_with(&fourth, "built").is_empty());
    assert_eq!(event_of(&fourth, "c")["cutoff"], false);
}

/// One package whose script inspects the sandbox and records what it sees.
fn probe_recipe(env: &TestEnv, name: &str, extra_env: &str, script: &str) -> std::path::PathBuf {
    env.write(
        &format!("probe/{name}.toml"),
        &format!(
            "[package]\nname = \"{name}\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\"]\n[env]\n{extra_env}\n[build]\nscript = '''\n{script}\n'''\n"
        ),
    );
    env.write(
        &format!("{name}-set.toml"),
        &format!("[set]\nname = \"{name}-set\"\ninclude = [{}, \"probe/{name}.toml\"]\n", seed_includes()),
    )
}

fn built_output(env: &TestEnv, set: &std::path::Path, name: &str) -> std::path::PathBuf {
    let (events, out) = env.build_json(&[set.to_str().unwrap()]);
    assert_exit(&out, 0);
    env.store.join("objects").join(out_of(&events, name))
}

#[test]
fn sandbox_hides_host_files_and_the_callers_environment() {
    let env = TestEnv::with_seed_sources();
    let marker = env.write("host-marker", "secret");
    let set = probe_recipe(
        &env,
        "isolation",
        &format!("MARKER = {:?}", marker.to_str().unwrap()),
        r#"mkdir -p $FORGE_OUT/share
ls -a / | sort > $FORGE_OUT/share/root
env | sort > $FORGE_OUT/share/env
hostname > $FORGE_OUT/share/hostname
for p in "$MARKER" /etc/passwd /etc/hostname /root /home /var /usr/bin/cargo; do
  if [ -e "$p" ]; then echo "$p" >> $FORGE_OUT/share/visible; fi
done
touch $FORGE_OUT/share/visible"#,
    );
    // Something the caller exports must not leak into the build.
    let (events, out) = {
        let out = env.cmd().args(["build", "--json", set.to_str().unwrap()]).env("LEAKY_SECRET", "1").output().unwrap();
        (json_lines(&out.stdout), out)
    };
    assert_exit(&out, 0);
    let share = env.store.join("objects").join(out_of(&events, "isolation")).join("share");

    assert_eq!(std::fs::read_to_string(share.join("visible")).unwrap(), "", "host paths visible inside");
    let root: Vec<String> = std::fs::read_to_string(share.join("root")).unwrap().lines().map(String::from).collect();
    assert_eq!(root, [".", "..", "bin", "build", "dev", "forge", "proc", "tmp", "usr"]);
    assert_eq!(std::fs::read_to_string(share.join("hostname")).unwrap(), "forge\n");

    let vars: BTreeMap<String, String> = std::fs::read_to_string(share.join("env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let names: Vec<&str> = vars.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "FORGE_JOBS", "FORGE_NAME", "FORGE_OUT", "FORGE_SOURCES", "FORGE_VERSION", "HOME", "LC_ALL", "MARKER",
            "PATH", "PWD", "SHLVL", "SOURCE_DATE_EPOCH", "TZ"
        ]
    );
    assert_eq!(vars["HOME"], "/homeless");
    assert_eq!(vars["TZ"], "UTC");
    assert_eq!(vars["PWD"], "/build");
    assert_eq!(vars["FORGE_OUT"], "/forge/out");
}

#[test]
fn sandbox_cannot_reach_host_loopback_services() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let env = TestEnv::with_seed_sources();
    let set = probe_recipe(
        &env,
        "network",
        &format!("PORT = \"{port}\""),
        r#"mkdir -p $FORGE_OUT/share
if echo hello | nc -w 2 127.0.0.1 $PORT; then echo reachable; else echo unreachable; fi > $FORGE_OUT/share/host-port
# The sandbox's own loopback works: a listener inside answers.
(echo pong | nc -l -p 7777 >/dev/null &) ; sleep 0.3
nc -w 2 127.0.0.1 7777 </dev/null > $FORGE_OUT/share/own-port || true"#,
    );
    let share = built_output(&env, &set, "network").join("share");
    assert_eq!(std::fs::read_to_string(share.join("host-port")).unwrap(), "unreachable\n");
    assert_eq!(std::fs::read_to_string(share.join("own-port")).unwrap(), "pong\n");
    assert!(listener.accept().is_err(), "the host listener received a connection from the sandbox");
}

#[test]
fn demo_builds_identically_in_two_stores() {
    let demo = repo().join("recipes/demo.toml");
    let demo = demo.to_str().unwrap();
    let mut outs = Vec::new();
    let mut stores = Vec::new(); // both stores stay on disk until the comparison
    for _ in 0..2 {
        let env = TestEnv::with_toolchain_sources();
        let (events, out) = env.build_json(&["-j", "2", demo]);
        assert_exit(&out, 0);
        let built = names_with(&events, "built");
        assert_eq!(built, ["bootstrap-toolchain", "busybox-static", "libtally", "seed", "tally-report", "wordfreq"]);
        let report = env.store.join("objects").join(out_of(&events, "tally-report"));
        let text = std::fs::read_to_string(report.join("usr/share/doc/tally-report/report.txt")).unwrap();
        assert!(text.contains("tally_"), "the report lists the library's symbols:\n{text}");
        let mut by_name: Vec<(String, String)> =
            built.iter().map(|n| (n.clone(), out_of(&events, n))).collect();
        by_name.sort();
        outs.push(by_name);
        stores.push(env);
    }
    assert_eq!(outs[0], outs[1], "out hashes differ between two stores");
    // And within one store, rebuilt in another build directory with other parallelism.
    let (events, out) = stores[0].build_json(&[demo, "--check", "-p", "libtally", "-p", "wordfreq", "-p", "tally-report"]);
    assert_exit(&out, 0);
    let summary = events.iter().find(|e| e["event"] == "check-summary").expect("check summary");
    assert_eq!((summary["reproducible"].as_u64(), summary["checked"].as_u64()), (Some(3), Some(3)), "{}", stderr(&out));
}

#[test]
fn show_log_gc_and_verify() {
    let env = TestEnv::with_seed_sources();
    let set = write_chain(&env, B_ORIGINAL);
    let set = set.to_str().unwrap();

    // Before building: everything "to build", no out hash.
    let shown = json_lines(&env.forge(&["show", "--json", set]).stdout);
    assert_eq!(shown.len(), 6);
    assert!(shown.iter().all(|n| n["status"] == "to build" && n["out"].is_null()), "{shown:#?}");

    let (first, out) = env.build_json(&[set]);
    assert_exit(&out, 0);
    let shown = json_lines(&env.forge(&["show", "--json", set]).stdout);
    for node in &shown {
        let name = node["name"].as_str().unwrap();
        assert_eq!(node["status"], "built");
        assert_eq!(node["out"].as_str().unwrap(), out_of(&first, name));
        assert_eq!(node["drv"], event_of(&first, name)["drv"]);
    }

    // The log of b's build is kept in the store.
    let b_log = env.forge(&["log", "b"]);
    assert_exit(&b_log, 0);
    let missing = env.forge(&["log", "no-such-package"]);
    assert_exit(&missing, 1);
    assert!(stderr(&missing).contains("no-such-package"));

    // Rebuild b differently: its old output (and c's) are no longer held by the set's root.
    write_chain(&env, &B_ORIGINAL.replace("echo beta", "echo gamma"));
    let (second, out) = env.build_json(&[set]);
    assert_exit(&out, 0);
    let old_b = out_of(&first, "b");
    let dry = env.forge(&["gc", "--dry-run"]);
    assert_exit(&dry, 0);
    assert!(stdout(&dry).contains(&old_b), "{}", stdout(&dry));
    assert!(env.store.join("objects").join(&old_b).exists(), "dry run deleted something");
    let gc = env.forge(&["gc"]);
    assert_exit(&gc, 0);
    assert!(!env.store.join("objects").join(&old_b).exists());
    for name in ["a", "b", "c", "d", "seed"] {
        assert!(env.store.join("objects").join(out_of(&second, name)).exists(), "gc removed rooted {name}");
    }
    assert_exit(&env.forge(&["verify"]), 0);

    // Corrupt one file of d's output: verify names the object and fails; repair removes
    // it, and the next build rebuilds d alone.
    let d_out = out_of(&second, "d");
    let file = env.store.join("objects").join(&d_out).join("share/d.txt");
    make_writable(&file);
    std::fs::write(&file, "tampered\n").unwrap();
    let verify = env.forge(&["verify"]);
    assert_exit(&verify, 1);
    assert!(stdout(&verify).contains(&d_out), "{}", stdout(&verify));
    assert_exit(&env.forge(&["verify", "--repair"]), 0);
    assert_exit(&env.forge(&["verify"]), 0);
    let (third, out) = env.build_json(&[set]);
    assert_exit(&out, 0);
    assert_eq!(names_with(&third, "built"), ["d"]);
    assert_eq!(out_of(&third, "d"), d_out);
}

fn make_writable(file: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    for dir in file.ancestors().skip(1).take(3) {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn jobs_flag_bounds_concurrent_builds() {
    let env = TestEnv::with_seed_sources();
    for name in ["p1", "p2", "p3"] {
        env.write(
            &format!("par/{name}.toml"),
            &format!("[package]\nname = \"{name}\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\"]\n[build]\nscript = 'sleep 1; echo {name} > $FORGE_OUT/{name}'\n"),
        );
    }
    let set = env.write("par.toml", &format!("[set]\nname = \"par\"\ninclude = [{}, \"par/*.toml\"]\n", seed_includes()));
    // Realise the seeds first so only p1..p3 are in flight below.
    assert_exit(&env.forge(&["build", "-p", "seed", set.to_str().unwrap()]), 0);

    // Most builds in flight at once, from the order of started/finished events.
    let peak = |events: &[serde_json::Value]| {
        let (mut now, mut peak) = (0i32, 0i32);
        for e in events {
            match e["event"].as_str() {
                Some("started") => now += 1,
                Some("built") | Some("failed") => now -= 1,
                _ => {}
            }
            peak = peak.max(now);
        }
        peak
    };
    let (serial, out) = env.build_json(&["-j", "1", set.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert_eq!(names_with(&serial, "built"), ["p1", "p2", "p3"]);
    assert_eq!(peak(&serial), 1, "{serial:#?}");

    // Change every script (same output) so all three rebuild, now two at a time.
    for name in ["p1", "p2", "p3"] {
        env.write(
            &format!("par/{name}.toml"),
            &format!("[package]\nname = \"{name}\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\"]\n[build]\nscript = 'sleep 1; true; echo {name} > $FORGE_OUT/{name}'\n"),
        );
    }
    let (parallel, out) = env.build_json(&["-j", "2", set.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert_eq!(names_with(&parallel, "built"), ["p1", "p2", "p3"]);
    assert_eq!(peak(&parallel), 2, "{parallel:#?}");
}
