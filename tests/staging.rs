//! Dependency staging (`[deps]` entries `{ name, at }`) end to end, through the real
//! binary and sandbox: a dependency and its runtime closure placed under /sysroot, the
//! same dependency at / too, placement as part of the derivation, conflicts by full path.

mod common;

use common::*;

/// `rt` (a runtime dependency of `lib`), `lib`, and `host` (which also writes into
/// /sysroot, to provoke a conflict on demand), plus `consumer` with the given build deps.
fn write_packages(env: &TestEnv, consumer_deps: &str) -> std::path::PathBuf {
    env.write(
        "pkgs/rt.toml",
        r#"
[package]
name = "rt"
version = "1"
[deps]
build = ["seed"]
[build]
script = 'mkdir -p $FORGE_OUT/usr/share && echo runtime > $FORGE_OUT/usr/share/rt.txt'
"#,
    );
    env.write(
        "pkgs/lib.toml",
        r#"
[package]
name = "lib"
version = "1"
[deps]
build = ["seed"]
runtime = ["rt"]
[build]
script = 'mkdir -p $FORGE_OUT/usr/lib && echo target-lib > $FORGE_OUT/usr/lib/libfoo.txt'
"#,
    );
    env.write(
        "pkgs/host.toml",
        r#"
[package]
name = "host"
version = "1"
[deps]
build = ["seed"]
[build]
script = 'mkdir -p $FORGE_OUT/sysroot/usr/lib && echo host-lib > $FORGE_OUT/sysroot/usr/lib/libfoo.txt'
"#,
    );
    env.write(
        "pkgs/consumer.toml",
        &format!(
            r#"
[package]
name = "consumer"
version = "1"
[deps]
build = [{consumer_deps}]
[build]
script = '''
mkdir -p $FORGE_OUT/share
cat /sysroot/usr/lib/libfoo.txt /sysroot/usr/share/rt.txt > $FORGE_OUT/share/sysroot
for p in /usr/lib/libfoo.txt /usr/share/rt.txt; do
  if [ -e "$p" ]; then cat "$p"; else echo "no $p"; fi
done > $FORGE_OUT/share/root
'''
"#
        ),
    );
    env.write(
        "staging.toml",
        &format!("[set]\nname = \"staging\"\ninclude = [{}, \"pkgs/*.toml\"]\n", seed_includes()),
    )
}


fn drv_of(events: &[serde_json::Value], name: &str) -> String {
    event_of(events, name)["drv"].as_str().unwrap_or_else(|| panic!("{name} has no drv")).to_string()
}

#[test]
fn a_dependency_staged_at_sysroot_brings_its_runtime_closure_and_may_also_sit_at_root() {
    let env = TestEnv::with_seed_sources();
    let set = write_packages(&env, r#""seed", { name = "lib", at = "/sysroot" }"#);
    let set = set.to_str().unwrap();
    let (events, out) = env.build_json(&["-p", "consumer", set]);
    assert_exit(&out, 0);
    let share = env.store.join("objects").join(out_of(&events, "consumer")).join("share");
    // lib and its runtime dependency rt under /sysroot, nothing of them at /.
    assert_eq!(std::fs::read_to_string(share.join("sysroot")).unwrap(), "target-lib\nruntime\n");
    assert_eq!(
        std::fs::read_to_string(share.join("root")).unwrap(),
        "no /usr/lib/libfoo.txt\nno /usr/share/rt.txt\n"
    );
    let sysroot_only = drv_of(&events, "consumer");

    // The same package staged twice: at /sysroot and at /.
    write_packages(&env, r#""seed", { name = "lib", at = "/sysroot" }, "lib""#);
    let (events, out) = env.build_json(&["-p", "consumer", set]);
    assert_exit(&out, 0);
    assert_eq!(names_with(&events, "built"), ["consumer"], "only consumer's derivation changed");
    let share = env.store.join("objects").join(out_of(&events, "consumer")).join("share");
    assert_eq!(std::fs::read_to_string(share.join("sysroot")).unwrap(), "target-lib\nruntime\n");
    assert_eq!(std::fs::read_to_string(share.join("root")).unwrap(), "target-lib\nruntime\n");
    assert_ne!(drv_of(&events, "consumer"), sysroot_only);

    // The placement is recorded in the stored derivation, and only where it is not /.
    let store = forge::store::Store::open(&env.store).unwrap();
    let hash: forge::hash::Digest = drv_of(&events, "consumer").parse().unwrap();
    let drv = String::from_utf8(store.derivation(&hash).unwrap().expect("consumer's derivation is stored")).unwrap();
    assert!(drv.contains("{\"at\":\"/sysroot\",\"drv\":"), "{drv}");
    assert!(!drv.contains("\"at\":\"/\""), "{drv}");
}

#[test]
fn moving_the_staging_location_changes_the_derivation() {
    let env = TestEnv::with_seed_sources();
    let set = write_packages(&env, r#""seed", { name = "lib", at = "/sysroot" }"#);
    let show = |env: &TestEnv| {
        let out = env.forge(&["show", "--json", set.to_str().unwrap()]);
        assert_exit(&out, 0);
        let events = json_lines(&out.stdout);
        let drv = |name: &str| {
            events.iter().find(|e| e["name"] == name).and_then(|e| e["drv"].as_str()).unwrap_or_default().to_string()
        };
        (drv("consumer"), drv("lib"))
    };
    let (first, lib_first) = show(&env);
    write_packages(&env, r#""seed", { name = "lib", at = "/sysroot2" }"#);
    let (second, lib_second) = show(&env);
    assert_ne!(first, second);
    assert_eq!(lib_first, lib_second, "staging is the dependent's business, not the dependency's");
    assert_eq!(first.len(), 64);
}

#[test]
fn a_conflict_inside_a_staged_directory_names_the_full_path_and_both_layers() {
    let env = TestEnv::with_seed_sources();
    let set = write_packages(&env, r#""seed", "host", { name = "lib", at = "/sysroot" }"#);
    let (events, out) = env.build_json(&["-p", "consumer", set.to_str().unwrap()]);
    assert_exit(&out, 1);
    let failed = event_of(&events, "consumer");
    assert_eq!(failed["event"], "failed");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("layer conflict at /sysroot/usr/lib/libfoo.txt: \"host\" and \"lib (at /sysroot)\" both provide it"),
        "{error}"
    );
}

#[test]
fn invalid_staging_locations_are_recipe_errors() {
    let env = TestEnv::with_seed_sources();
    let cases = [
        (r#""seed", { name = "lib", at = "/proc/x" }"#, "consumer.toml:6:39: invalid staging location `at = \"/proc/x\"`: /proc is reserved"),
        (r#""seed", { name = "lib", where = "/x" }"#, "unknown field `where`, expected `name` or `at`"),
    ];
    for (deps, expected) in cases {
        let set = write_packages(&env, deps);
        let out = env.forge(&["build", set.to_str().unwrap()]);
        assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(err.contains(expected) && err.contains("consumer.toml:6:"), "{err}");
    }
}
