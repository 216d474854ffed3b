//! Seeing the build: `forge why` (root cause and cascade, after gc and from the database),
//! `forge graph` and `forge why-depends`, `forge status` (live from another process, and
//! after), `forge history` with per-build metrics.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

/// `base` <- `mid` (build dep) <- `top` (build dep), `top` also runs with `rt`.
fn write_set(env: &TestEnv, base_script: &str) -> PathBuf {
    env.write(
        "pkgs/base.toml",
        &format!("[package]\nname = \"base\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\"]\n[env]\nLEVEL = \"1\"\n[build]\nscript = '''\n{base_script}\n'''\n"),
    );
    env.write(
        "pkgs/mid.toml",
        "[package]\nname = \"mid\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\", \"base\"]\n[build]\nscript = 'mkdir -p $FORGE_OUT && cat /base.txt > $FORGE_OUT/mid.txt'\n",
    );
    env.write(
        "pkgs/rt.toml",
        "[package]\nname = \"rt\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\"]\n[build]\nscript = 'mkdir -p $FORGE_OUT && echo rt > $FORGE_OUT/rt.txt'\n",
    );
    env.write(
        "pkgs/top.toml",
        "[package]\nname = \"top\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\", \"mid\"]\nruntime = [\"rt\"]\n[build]\nscript = 'mkdir -p $FORGE_OUT && cat /mid.txt > $FORGE_OUT/top.txt'\n",
    );
    env.write("set.toml", &format!("[set]\nname = \"obs\"\ninclude = [{}, \"pkgs/*.toml\"]\n", seed_includes()))
}

const BASE: &str = "mkdir -p $FORGE_OUT && echo base > $FORGE_OUT/base.txt";

fn why(env: &TestEnv, args: &[&str]) -> serde_json::Value {
    let out = env.forge(&[&["why", "--json"][..], args].concat());
    assert_exit(&out, 0);
    json_lines(&out.stdout).remove(0)
}

#[test]
fn why_names_the_root_cause_and_the_cascade_even_after_gc() {
    let env = TestEnv::with_seed_sources();
    let set = write_set(&env, BASE);
    let set = set.to_str().unwrap();
    assert_exit(&env.build_json(&[set]).1, 0);

    let e = why(&env, &["top", set]);
    assert_eq!(e["verdict"]["verdict"], "realised");
    assert_eq!(e["rebuilt"], false);

    // Change base's script and env: base is the root cause, mid and top the cascade.
    write_set(&env, "mkdir -p $FORGE_OUT && echo base v2 > $FORGE_OUT/base.txt");
    let text = std::fs::read_to_string(env.path("pkgs/base.toml")).unwrap().replace("LEVEL = \"1\"", "LEVEL = \"2\"");
    std::fs::write(env.path("pkgs/base.toml"), text).unwrap();
    // forge gc between sessions: the database still has the derivations.
    assert_exit(&env.forge(&["gc"]), 0);
    let e = why(&env, &["top", set]);
    assert_eq!(e["verdict"]["verdict"], "changed");
    assert_eq!(e["root_causes"], serde_json::json!(["base"]));
    assert!(e["own"].as_array().unwrap().is_empty(), "top itself did not change: {e}");
    let mid = &e["inputs"][0];
    assert_eq!(mid["name"], "mid");
    assert!(mid["own"].as_array().unwrap().is_empty());
    let base = &mid["inputs"][0];
    assert_eq!(base["name"], "base");
    let own = base["own"].as_array().unwrap();
    let fields: Vec<&str> = own.iter().map(|c| c["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["script", "env"]);
    assert!(own[0]["diff"].as_str().unwrap().contains("+mkdir -p $FORGE_OUT && echo base v2"));
    assert_eq!((own[1]["key"].as_str(), own[1]["from"].as_str(), own[1]["to"].as_str()), (Some("LEVEL"), Some("1"), Some("2")));
    let human = env.forge(&["why", "top", set]);
    let text = stdout(&human);
    assert!(text.contains("input mid changed (cascade)") && text.contains("input base changed (ROOT CAUSE)"), "{text}");
    assert!(text.contains("env LEVEL: \"1\" -> \"2\"") && text.contains("root cause: base"), "{text}");
    // rt did not change: not rebuilt.
    assert_eq!(why(&env, &["rt", set])["verdict"]["verdict"], "realised");

    // After the rebuild, why without FILE explains the newest realisation against the one before.
    assert_exit(&env.build_json(&[set]).1, 0);
    let e = why(&env, &["mid"]);
    assert_eq!(e["root_causes"], serde_json::json!(["base"]));
    // base changes again but gives the same output: once base is rebuilt, mid's new
    // derivation is not rebuilt (early cutoff), and why says so.
    let text = std::fs::read_to_string(env.path("pkgs/base.toml")).unwrap().replace("echo base v2", "echo  base  v2");
    std::fs::write(env.path("pkgs/base.toml"), text).unwrap();
    assert_exit(&env.build_json(&[set, "-p", "base"]).1, 0);
    let e = why(&env, &["mid", set]);
    assert_eq!(e["verdict"]["verdict"], "cutoff", "{e}");
    assert_eq!(e["rebuilt"], false);
    assert_exit(&env.forge(&["why", "nonexistent"]), 2);
}

#[test]
fn graph_and_why_depends() {
    let env = TestEnv::with_seed_sources();
    let set = write_set(&env, BASE);
    let set = set.to_str().unwrap();
    let dot = env.forge(&["graph", set]);
    assert_exit(&dot, 0);
    let dot = stdout(&dot);
    assert!(dot.starts_with("digraph forge {") && dot.contains("\"top\" -> \"mid\";") && dot.contains("\"top\" -> \"rt\" [style=dashed];"), "{dot}");
    let json = env.forge(&["graph", "--format", "json", set, "-p", "top"]);
    let nodes = json_lines(&json.stdout).remove(0)["nodes"].clone();
    let top = nodes.as_array().unwrap().iter().find(|n| n["name"] == "top").unwrap();
    assert_eq!(top["build"], serde_json::json!(["seed", "mid"]));
    assert_eq!(top["runtime"], serde_json::json!(["rt"]));

    let chain = env.forge(&["why-depends", "--json", "top", "base", set]);
    assert_exit(&chain, 0);
    let names: Vec<String> = json_lines(&chain.stdout)[0]["chain"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["top", "mid", "base"]);
    let text = stdout(&env.forge(&["why-depends", "top", "rt", set]));
    assert!(text.contains("top  --runtime-->") && text.contains("in the runtime closure"), "{text}");
    assert_exit(&env.forge(&["why-depends", "base", "top", set]), 2);
}

#[test]
fn status_is_live_from_another_process_and_history_keeps_metrics() {
    let env = TestEnv::with_seed_sources();
    let set = write_set(&env, "sleep 4; mkdir -p $FORGE_OUT && head -c 2000000 /dev/zero > $FORGE_OUT/base.bin && echo base > $FORGE_OUT/base.txt");
    let set = set.to_str().unwrap();
    assert_exit(&env.forge(&["status"]), 2); // no run yet
    let mut child = env.cmd().args(["build", set, "-j", "1"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    // Poll until the slow package is running, then look from here: another process.
    let deadline = Instant::now() + Duration::from_secs(60);
    let live = loop {
        let out = env.forge(&["status", "--json"]);
        let status = json_lines(&out.stdout).pop();
        if let Some(s) = status.filter(|s| s["current_packages"].as_array().is_some_and(|c| c.iter().any(|p| p["name"] == "base"))) {
            break s;
        }
        assert!(Instant::now() < deadline, "base never showed up as running");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((live["status"].as_str(), live["phase"].as_str()), (Some("RUNNING"), Some("building")));
    assert_eq!(live["packages_total"], 6);
    assert!(live["packages_completed"].as_u64().unwrap() < 6);
    assert!(child.wait().unwrap().success());
    let done = json_lines(&env.forge(&["status", "--json"]).stdout).remove(0);
    assert_eq!((done["status"].as_str(), done["phase"].as_str()), (Some("COMPLETED"), Some("finished")));
    assert_eq!((done["packages_completed"].as_u64(), done["success_rate"].as_f64()), (Some(6), Some(1.0)));

    // A second run expects base to take about as long as the first: the ETA uses it.
    let history = env.forge(&["history", "--json", "base"]);
    let rows = json_lines(&history.stdout);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["result"], "built");
    assert!(rows[0]["seconds"].as_f64().unwrap() >= 4.0, "{}", rows[0]);
    assert!(rows[0]["out_size"].as_u64().unwrap() >= 2_000_000);
    assert!(rows[0]["peak_memory"].as_u64().unwrap() > 0);
    assert_exit(&env.build_json(&[set]).1, 0);
    let rows = json_lines(&env.forge(&["history", "--json", "base"]).stdout);
    assert_eq!(rows.iter().map(|r| r["result"].as_str().unwrap()).collect::<Vec<_>>(), ["cached", "built"]);
    let text = stdout(&env.forge(&["history", "base"]));
    let runs = text.lines().filter(|l| l.starts_with(|c: char| c.is_ascii_digit())).count();
    assert!(runs == 2 && text.contains("MiB") && text.contains("no recorded build of binutils-pass1"), "{text}");
}

/// A long run in phases (the directories of its recipes: LFS's chapters): `forge status`
/// says which phase is running, what each has left, and the ETA from the recipes' SBU hints
/// times this machine's SBU (the reference package's recorded build time).
#[test]
fn status_shows_the_phase_and_an_eta_from_the_recipes_sbu() {
    let env = TestEnv::with_seed_sources();
    let config = env.write("forge.toml", "sbu-reference = \"unit\"\n");
    let config = config.to_str().unwrap();
    env.write("ch1/unit.toml", "[package]\nname = \"unit\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\"]\n[build]\nscript = 'sleep 1; mkdir -p $FORGE_OUT'\n");
    env.write(
        "ch2/long.toml",
        "[package]\nname = \"long\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\", \"unit\"]\n[requirements]\nsbu = 30\n[build]\nscript = 'sleep 5; mkdir -p $FORGE_OUT'\n",
    );
    env.write("ch2/after.toml", "[package]\nname = \"after\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\", \"long\"]\n[requirements]\nsbu = 2\n[build]\nscript = 'mkdir -p $FORGE_OUT'\n");
    let set = env.write("set.toml", &format!("[set]\nname = \"p\"\ninclude = [{}, \"ch1/*.toml\", \"ch2/*.toml\"]\n", seed_includes()));
    let set = set.to_str().unwrap();
    // One run in a new store: 1 SBU (unit's build time) is learnt during the run, before long
    // starts, so the plan could not use it but the status can.
    let mut child = env.cmd().args(["build", set, "-j", "1", "--config", config]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let live = loop {
        let out = env.forge(&["status", "--json", "--config", config]);
        if let Some(s) = json_lines(&out.stdout).pop().filter(|s| s["current_packages"].as_array().is_some_and(|c| c.iter().any(|p| p["name"] == "long"))) {
            break s;
        }
        assert!(Instant::now() < deadline, "long never showed up as running");
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = stdout(&env.forge(&["status", "--config", config]));
    assert!(child.wait().unwrap().success());
    let unit_ms = (json_lines(&env.forge(&["history", "--json", "unit"]).stdout)[0]["seconds"].as_f64().unwrap() * 1000.0).round();
    assert_eq!(live["current_phase"], "ch2");
    let phases: Vec<(&str, u64, u64, u64)> = live["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["to_build"].as_u64().unwrap(), p["finished"].as_u64().unwrap(), p["in_store"].as_u64().unwrap()))
        .collect();
    assert!(phases.contains(&("ch2", 2, 0, 0)), "{phases:?}");
    assert!(phases.contains(&("ch1", 1, 1, 0)), "unit was built first: {phases:?}");
    // long is expected to take 30 SBU and after 2: about 32 SBU are left while long runs.
    let left = live["remaining_sbu"].as_f64().unwrap();
    assert!((25.0..=32.5).contains(&left), "{left} SBU left");
    assert!((live["sbu_seconds"].as_f64().unwrap() * 1000.0 - unit_ms).abs() < 1.0);
    assert!(live["estimated_completion_ms"].as_i64().is_some());
    assert!(text.contains("* ch2") && text.contains("0/2   built") && text.contains("SBU left, 1 SBU = "), "{text}");
    // The run recorded each package's phase and hint; a second run plans with 1 SBU known:
    // fresh (never built, 2 SBU) is expected to take 2 x unit.
    let long = json_lines(&env.forge(&["history", "--json", "long"]).stdout).remove(0);
    assert_eq!((long["phase"].as_str(), long["sbu_hint"].as_f64()), (Some("ch2"), Some(30.0)));
    env.write("ch2/fresh.toml", "[package]\nname = \"fresh\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\"]\n[requirements]\nsbu = 2\n[build]\nscript = 'mkdir -p $FORGE_OUT'\n");
    assert_exit(&env.forge(&["build", set, "--config", config]), 0);
    let fresh = json_lines(&env.forge(&["history", "--json", "fresh"]).stdout).remove(0);
    let expected = fresh["expected_ms"].as_f64().unwrap();
    assert!((expected - 2.0 * unit_ms).abs() <= 2.0, "expected {expected} ms, 1 SBU = {unit_ms} ms");
}

#[test]
fn report_and_trace_show_the_timeline_critical_path_and_failures() {
    let env = TestEnv::with_seed_sources();
    let set = write_set(&env, "sleep 1; mkdir -p $FORGE_OUT && echo base > $FORGE_OUT/base.txt");
    env.write(
        "pkgs/broken.toml",
        "[package]\nname = \"broken\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\"]\n[build]\nscript = 'echo checking the widget; echo widget missing >&2; exit 3'\n",
    );
    let set = set.to_str().unwrap();
    let (html, trace) = (env.path("run.html"), env.path("run.json"));
    let out = env.forge(&["build", set, "-k", "--report", html.to_str().unwrap(), "--trace", trace.to_str().unwrap()]);
    assert_exit(&out, 1);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && !page.contains("<script"), "self-contained");
    assert!(page.contains("<h2>Timeline</h2>") && page.contains("worker 0") && page.contains("<title>base: built"), "timeline bars");
    assert!(page.contains("<h2>Critical path</h2>"));
    // The critical path is the base -> mid -> top chain (base sleeps a second).
    let critical = &page[page.find("<h2>Critical path</h2>").unwrap()..page.find("<h2>Slowest packages</h2>").unwrap()];
    let order: Vec<usize> = ["<td>base</td>", "<td>mid</td>", "<td>top</td>"].iter().map(|n| critical.find(n).expect(n)).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{critical}");
    assert!(page.contains("<h3>broken</h3>") && page.contains("widget missing"), "the failure with its log tail");

    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    let base = events.iter().find(|e| e["name"] == "base" && e["ph"] == "X").expect("a complete event for base");
    assert!(base["dur"].as_i64().unwrap() >= 1_000_000, "microseconds: {base}");
    assert!(events.iter().any(|e| e["name"] == "broken" && e["cat"] == "failed"));
    // forge report renders any recorded run again.
    let again = env.forge(&["report", env.path("again.html").to_str().unwrap()]);
    assert_exit(&again, 0);
    assert!(std::fs::read_to_string(env.path("again.html")).unwrap().contains("<title>base: built"));
}

#[test]
fn recorded_durations_start_the_critical_path_first() {
    let env = TestEnv::with_seed_sources();
    let write = |round: u32| {
        let recipe = |name: &str, secs: &str, deps: &str| {
            let text = format!(
                "[package]\nname = \"{name}\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\"{deps}]\n[env]\nROUND = \"{round}\"\n[build]\nscript = 'sleep {secs}; mkdir -p $FORGE_OUT && echo {name} > $FORGE_OUT/done'\n"
            );
            env.write(&format!("pkgs/{name}.toml"), &text);
        };
        recipe("z-chain-1", "0.6", "");
        recipe("z-chain-2", "0.6", ", \"z-chain-1\"");
        for i in 1..=3 {
            recipe(&format!("a-quick-{i}"), "0", "");
        }
        env.write("set.toml", &format!("[set]\nname = \"s\"\ninclude = [{}, \"pkgs/*.toml\"]\n", seed_includes()))
    };
    let first_started = |events: &[serde_json::Value]| -> String {
        events.iter().find(|e| e["event"] == "started" && e["name"] != "seed" && e["name"] != "busybox-static").unwrap()["name"].as_str().unwrap().to_string()
    };
    let set = write(0);
    let set = set.to_str().unwrap();
    let (events, out) = env.build_json(&[set, "-j", "1"]);
    assert_exit(&out, 0);
    // No recorded times yet: dependency order, ties by name.
    assert_eq!(first_started(&events), "a-quick-1");
    write(1);
    let (events, out) = env.build_json(&[set, "-j", "1", "--schedule", "topological"]);
    assert_exit(&out, 0);
    assert_eq!(first_started(&events), "a-quick-1");
    write(2);
    let (events, out) = env.build_json(&[set, "-j", "1"]);
    assert_exit(&out, 0);
    assert_eq!(first_started(&events), "z-chain-1", "the recorded 1.2 s chain goes first");

    // A package never built here, whose recipe says it takes 5 SBU, with z-chain-1 (0.6 s)
    // as the SBU reference: expected 3 s, so it goes first.
    let config = env.write("forge.toml", "sbu-reference = \"z-chain-1\"\n");
    env.write(
        "pkgs/b-hinted.toml",
        "[package]\nname = \"b-hinted\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\"]\n[build]\nscript = 'mkdir -p $FORGE_OUT'\n[requirements]\nsbu = 5\n",
    );
    write(3);
    let (events, out) = env.build_json(&[set, "-j", "1", "--config", config.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert_eq!(first_started(&events), "b-hinted", "5 SBU x 0.6 s beats the 1.2 s chain");
    let rows = json_lines(&env.forge(&["history", "--json", "z-chain-1", "--config", config.to_str().unwrap()]).stdout);
    let sbu = rows[0]["sbu"].as_f64().unwrap();
    assert!((0.5..2.0).contains(&sbu), "the reference takes about 1 SBU: {sbu}");
}

#[test]
fn failures_are_categorised_and_transient_ones_retried() {
    let env = TestEnv::with_seed_sources();
    let recipe = |name: &str, deps: &str, script: &str, requirements: &str| {
        env.write(
            &format!("pkgs/{name}.toml"),
            &format!("[package]\nname = \"{name}\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\"{deps}]\n[build]\nscript = '{script}'\n{requirements}"),
        );
    };
    recipe("fails", "", "echo compiling; exit 2", "");
    recipe("after", ", \"fails\"", "mkdir -p $FORGE_OUT", "");
    recipe("flappy", "", "echo mirror unreachable; exit 75", "[requirements]\nretries = 2\nretry-delay = \"0s\"\n");
    recipe("huge", "", "mkdir -p $FORGE_OUT", "[requirements]\ndisk = \"1000000T\"\n");
    let set = env.write("set.toml", &format!("[set]\nname = \"f\"\ninclude = [{}, \"pkgs/*.toml\"]\n", seed_includes()));
    let (events, out) = env.build_json(&[set.to_str().unwrap(), "-k"]);
    assert_exit(&out, 1);
    let category = |name: &str| with_event_named(&events, name)["category"].as_str().unwrap_or_default().to_string();
    assert_eq!(category("fails"), "build");
    assert_eq!(category("after"), "dependency");
    assert_eq!(category("huge"), "system");
    assert_eq!(category("flappy"), "build");
    // The transient failure was tried three times in all, backing off between tries.
    let log = stdout(&env.forge(&["log", "flappy"]));
    assert_eq!(log.matches("mirror unreachable").count(), 3, "{log}");
    assert!(log.contains("retry 1 of 2") && log.contains("retry 2 of 2"), "{log}");
    // A non-transient failure is not retried.
    assert_eq!(stdout(&env.forge(&["log", "fails"])).matches("compiling").count(), 1);
    let plain = env.forge(&["build", set.to_str().unwrap(), "-k", "-p", "fails"]);
    assert!(stderr(&plain).contains("error: fails failed (build failure): build script exited with status 2"), "{}", stderr(&plain));
}

fn with_event_named<'a>(events: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    events.iter().find(|e| e["name"] == name && (e["event"] == "failed" || e["event"] == "skipped")).unwrap_or_else(|| panic!("no failure event for {name}"))
}
