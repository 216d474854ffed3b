//! `forge shell NAME [FILE] [--failed] [-- COMMAND]`: a session in a sandbox exactly like
//! NAME's build (inputs as `/`, its env, its sources), or in its kept failed build.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::*;

/// `lib` (a built input), `app` (needs lib; a file source, an env var; fails after writing
/// its build state when FAIL=1 is in its env).
fn write_set(env: &TestEnv, fail: bool) -> String {
    env.write(
        "lib.toml",
        "[package]\nname = \"lib\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\"]\n[build]\nscript = 'mkdir -p $FORGE_OUT/share && echo from-lib > $FORGE_OUT/share/lib.txt'\n",
    );
    env.write("notes.txt", "source notes\n");
    env.write(
        "app.toml",
        &format!(
            "[package]\nname = \"app\"\nversion = \"1\"\n[[source]]\nfile = \"notes.txt\"\n[deps]\nbuild = [\"seed\", \"lib\"]\n[env]\nGREETING = \"hello\"\nFAIL = \"{}\"\n[build]\nscript = '''\necho half-way > /build/state.txt\necho partial > $FORGE_OUT/partial\nif [ \"$FAIL\" = 1 ]; then exit 4; fi\n'''\n",
            if fail { 1 } else { 0 }
        ),
    );
    let set = env.write("set.toml", &format!("[set]\nname = \"s\"\ninclude = [{}, \"lib.toml\", \"app.toml\"]\n", seed_includes()));
    set.to_str().unwrap().to_string()
}

#[test]
fn a_command_runs_in_the_build_sandbox_and_nothing_is_registered() {
    let env = TestEnv::with_seed_sources();
    let set = write_set(&env, false);
    // Its input is not built yet: the error names it and the command that builds it.
    let out = env.forge(&["shell", "app", &set, "--", "true"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("lib") && stderr(&out).contains("forge build FILE -p"), "{}", stderr(&out));

    assert_exit(&env.forge(&["build", &set, "-p", "lib"]), 0);
    let script = "pwd; cat /share/lib.txt; cat $FORGE_SOURCES/notes.txt; echo $GREETING; echo out=$FORGE_OUT; ls -A /build | wc -l; exit 9";
    let out = env.forge(&["shell", "app", &set, "--", "/bin/sh", "-c", script]);
    assert_exit(&out, 9);
    assert_eq!(stdout(&out), "/build\nfrom-lib\nsource notes\nhello\nout=/forge/out\n0\n");
    // The session built nothing: app is still not in the store.
    let show = stdout(&env.forge(&["show", &set]));
    let app = show.lines().find(|l| l.starts_with("app ")).unwrap();
    assert!(!app.contains("built"), "{app}");
    // An unknown package is a usage error.
    assert_exit(&env.forge(&["shell", "nope", &set, "--", "true"]), 2);
}

#[test]
fn an_interactive_shell_reads_the_terminal_and_its_exit_status_is_forges() {
    let env = TestEnv::with_seed_sources();
    let set = write_set(&env, false);
    assert_exit(&env.forge(&["build", &set, "-p", "lib"]), 0);
    // No command: the recipe's shell, interactive, on forge's own stdin.
    let mut child = env.cmd().args(["shell", "app", &set]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"echo typed-$GREETING; cat /share/lib.txt; exit 3\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 3);
    assert!(stdout(&out).contains("typed-hello\nfrom-lib\n"), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
}

#[test]
fn failed_enters_the_kept_build_and_keeps_what_the_session_changed() {
    let env = TestEnv::with_seed_sources();
    let set = write_set(&env, true);
    assert_exit(&env.forge(&["build", &set, "-p", "lib"]), 0);
    // Nothing kept yet: the error says how to keep one.
    let out = env.forge(&["shell", "app", &set, "--failed", "--", "true"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("--keep-failed"), "{}", stderr(&out));

    assert_exit(&env.forge(&["build", &set, "--keep-failed"]), 1);
    let out = env.forge(&["shell", "app", &set, "--failed", "--", "/bin/sh", "-c", "cat state.txt $FORGE_OUT/partial; echo fixed > fix.txt"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "half-way\npartial\n");
    let kept: Vec<_> = std::fs::read_dir(env.store.join("failed")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(std::fs::read_to_string(kept[0].join("build/fix.txt")).unwrap(), "fixed\n", "the session's change stays");
    assert!(kept[0].join("build/state.txt").is_file() && kept[0].join("out/partial").is_file());
    // Kept files belong to the store's owner again (as root: not to the build's ids).
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(kept[0].join("build/fix.txt")).unwrap());
    assert_eq!(owner, nix_uid());

    // The recipe changed since: the kept build is of another derivation, and the error says so.
    write_set(&env, true);
    let text = std::fs::read_to_string(env.path("app.toml")).unwrap().replace("hello", "bye");
    std::fs::write(env.path("app.toml"), text).unwrap();
    let out = env.forge(&["shell", "app", &set, "--failed", "--", "true"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains(&kept[0].display().to_string()), "{}", stderr(&out));
}

fn nix_uid() -> u32 {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() }
}
