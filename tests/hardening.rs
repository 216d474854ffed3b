//! Issue 13's defects, one regression test each, where the defect shows at the command line
//! (sandbox, archive and walker defects are tested in tests/sandbox.rs and the unit tests of
//! src/cache/archive.rs and src/fswalk.rs).

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Runs forge with a deadline: a command that hangs is a failure, not a stuck test run.
fn forge_within(env: &TestEnv, args: &[&str], limit: Duration) -> std::process::Output {
    let mut child = env
        .cmd()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start forge");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("forge {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

/// Defect 6: `include = ["/dev/zero"]` made `forge show` read forever, a fifo blocked it.
#[test]
fn a_set_including_a_device_a_fifo_or_a_huge_file_is_a_clear_error() {
    let env = TestEnv::empty();
    let fifo = env.path("pipe.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let huge = env.path("huge.toml");
    std::fs::write(&huge, "#".repeat(2 << 20)).unwrap();
    for (include, says) in [
        ("/dev/zero", "is a character device"),
        (fifo.to_str().unwrap(), "is a fifo"),
        (huge.to_str().unwrap(), "2097152 bytes; recipes, sets and overlays are at most 1048576"),
    ] {
        let set = env.write("set.toml", &format!("[set]\nname = \"s\"\ninclude = [{include:?}]\n"));
        let out = forge_within(&env, &["show", set.to_str().unwrap()], Duration::from_secs(20));
        assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(err.contains(include) && err.contains(says), "{include}: {err}");
    }
    // Named on the command line, too.
    let out = forge_within(&env, &["show", "/dev/zero"], Duration::from_secs(20));
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("is a character device"), "{}", stderr(&out));
}
