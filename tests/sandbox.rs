//! Integration tests of the build sandbox: real runs of the forge binary as
//! the helper, with a layer made of the host's static busybox.
//!
//! Requires `/bin/busybox` (Debian package `busybox-static`) and a kernel that
//! allows user namespaces for the user running the tests.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use forge::sandbox::{self, Exit, Layer, SandboxError, SandboxOutcome, SandboxSpec};

const BUSYBOX: &str = "/bin/busybox";

/// A temporary directory with a busybox layer and a sources directory.
struct Fixture {
    tmp: tempfile::TempDir,
    layers: Vec<Layer>,
    sources: PathBuf,
    env: BTreeMap<String, String>,
    runs: AtomicUsize,
}

impl Fixture {
    fn new() -> Fixture {
        assert!(
            Path::new(BUSYBOX).is_file(),
            "{BUSYBOX} is missing: install the Debian package busybox-static (apt-get install -y busybox-static)"
        );
        let tmp = tempfile::tempdir().unwrap();
        let layer = busybox_layer(&tmp.path().join("busybox-layer"));
        let sources = tmp.path().join("sources");
        fs::create_dir(&sources).unwrap();
        fs::write(sources.join("hello.txt"), "hello from the sources\n").unwrap();
        let env = BTreeMap::from([
            ("PATH".to_string(), "/bin".to_string()),
            ("HOME".to_string(), "/homeless".to_string()),
            ("FORGE_JOBS".to_string(), "2".to_string()),
        ]);
        Fixture { tmp, layers: vec![layer], sources, env, runs: AtomicUsize::new(0) }
    }

    fn spec(&self, script: &str) -> SandboxSpec {
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        let scratch = self.tmp.path().join(format!("scratch-{n}"));
        fs::create_dir(&scratch).unwrap();
        SandboxSpec {
            helper_exe: PathBuf::from(env!("CARGO_BIN_EXE_forge")),
            layers: self.layers.clone(),
            sources: self.sources.clone(),
            scratch,
            env: self.env.clone(),
            argv: vec!["/bin/sh".into(), "-e".into(), "-c".into(), script.into()],
            timeout: Some(Duration::from_secs(60)),
            log: self.tmp.path().join(format!("log-{n}")),
            build_dir: None,
            limits: sandbox::Limits::default(),
            attach: None,
        }
    }

    /// Runs `script` and returns the outcome and the build log.
    fn run(&self, script: &str) -> (SandboxOutcome, String) {
        let spec = self.spec(script);
        let outcome = sandbox::run(&spec).unwrap_or_else(|e| panic!("sandbox setup failed: {e}"));
        let log = fs::read_to_string(&spec.log).unwrap_or_default();
        (outcome, log)
    }

    /// Runs `script`, requires success, and returns the log.
    fn run_ok(&self, script: &str) -> String {
        let (outcome, log) = self.run(script);
        assert_eq!(outcome.exit, Exit::Success, "script failed; log:\n{log}");
        log
    }
}

/// `dir/bin/busybox` plus one symlink per applet, like a seed store object.
fn busybox_layer(dir: &Path) -> Layer {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    if fs::hard_link(BUSYBOX, bin.join("busybox")).is_err() {
        fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
    }
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            symlink("busybox", bin.join(applet)).unwrap();
        }
    }
    Layer::at_root("busybox", dir)
}

fn layer_with(dir: &Path, name: &str, files: &[(&str, &str)]) -> Layer {
    let path = dir.join(name);
    for (rel, contents) in files {
        let file = path.join(rel);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(file, contents).unwrap();
    }
    fs::create_dir_all(&path).unwrap();
    Layer::at_root(name, path)
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("forge-sandbox-test-{tag}-{}-{nanos}", std::process::id())
}

/// True if any host process has exactly this command line.
fn host_process_with_cmdline(argv: &[&str]) -> bool {
    let wanted: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        fs::read(entry.path().join("cmdline")).map(|c| c == wanted).unwrap_or(false)
    })
}

#[test]
fn probe_succeeds() {
    sandbox::probe(Path::new(env!("CARGO_BIN_EXE_forge"))).unwrap();
}

#[test]
fn host_files_are_invisible() {
    let fx = Fixture::new();
    let name = unique("marker");
    let tmp_marker = std::env::temp_dir().join(&name);
    fs::write(&tmp_marker, "host").unwrap();
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()));
    let home_marker = home.join(&name);
    let home_written = fs::write(&home_marker, "host").is_ok();
    let script = format!(
        "test ! -e /tmp/{name}; test ! -e {home}/{name}; test ! -e /root/{name}; \
         test ! -e /etc/hostname; test ! -e /etc/passwd; test ! -e /usr; test ! -e /homeless; \
         ls -A / | tr '\\n' ' '",
        home = home.display()
    );
    let log = fx.run_ok(&script);
    let _ = fs::remove_file(&tmp_marker);
    if home_written {
        let _ = fs::remove_file(&home_marker);
    }
    // Exactly the layer's directory plus the mount points.
    assert_eq!(log.trim(), "bin build dev forge proc tmp");
}

#[test]
fn loopback_is_up_and_host_loopback_unreachable() {
    let fx = Fixture::new();
    let host_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host_listener.local_addr().unwrap().port();
    // Sanity: the host listener accepts connections from outside the sandbox.
    std::net::TcpStream::connect(("127.0.0.1", host_port)).unwrap();
    let script = format!(
        "if echo x | nc -w 2 127.0.0.1 {host_port} 2>/tmp/err; then echo HOST-REACHABLE; else echo \"host: $(cat /tmp/err)\"; fi\n\
         mkdir /tmp/www && echo ping-inside > /tmp/www/index.html\n\
         httpd -f -p 127.0.0.1:7777 -h /tmp/www &\n\
         for i in $(seq 50); do wget -q -O - http://127.0.0.1:7777/ 2>/dev/null && break; sleep 0.1; done\n\
         kill %1\n\
         ip -o link | cut -d: -f2 | tr -d ' \\n'; echo"
    );
    let log = fx.run_ok(&script);
    // Refused, not timed out: nothing listens on that port in the sandbox's own loopback.
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["host: nc: can't connect to remote host (127.0.0.1): Connection refused", "ping-inside", "lo"],
        "log:\n{log}"
    );
}

#[test]
fn environment_is_exactly_the_given_map() {
    let fx = Fixture::new();
    std::env::set_var("FORGE_SANDBOX_TEST_LEAK", "leaked");
    let mut spec = fx.spec("env | sort");
    spec.env.insert("WITH_SPACES".into(), "a b  c".into());
    let outcome = sandbox::run(&spec).unwrap();
    let log = fs::read_to_string(&spec.log).unwrap();
    assert_eq!(outcome.exit, Exit::Success, "{log}");
    // What busybox sh adds on its own: PWD and SHLVL.
    let mut expected: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    expected.push("PWD=/build".into());
    expected.push("SHLVL=1".into());
    expected.sort();
    assert_eq!(log.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn identity_hostname_pid_and_proc() {
    let fx = Fixture::new();
    let log = fx.run_ok(
        "hostname; echo $$; id -u; id -g; pwd\n\
         ls /proc | grep '^[0-9]' | sort -n | head -2 | tr '\\n' ' '; echo\n\
         readlink /proc/self/fd/0",
    );
    assert_eq!(log.lines().collect::<Vec<_>>(), ["forge", "2", "0", "0", "/build", "1 2 ", "/dev/null"], "{log}");
}

#[test]
fn dev_holds_exactly_the_promised_nodes() {
    let fx = Fixture::new();
    let log = fx.run_ok(
        "ls /dev | tr '\\n' ' '; echo\n\
         echo discarded > /dev/null\n\
         head -c 4 /dev/zero | od -An -tx1 | tr -d ' '\n\
         head -c 16 /dev/urandom | wc -c\n\
         if echo x > /dev/full; then echo full-accepted; else echo full-refused; fi\n\
         ls /dev/fd/ | head -1\n\
         echo shm > /dev/shm/x && cat /dev/shm/x",
    );
    let lines: Vec<&str> = log.lines().collect();
    let nodes = lines[0].trim();
    assert!(
        nodes == "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero"
            || nodes == "fd full null random shm stderr stdin stdout tty urandom zero",
        "unexpected /dev: {nodes}"
    );
    assert_eq!(&lines[1..3], ["00000000", "16"], "{log}");
    assert!(log.contains("full-refused"), "{log}");
    assert_eq!(lines.last(), Some(&"shm"), "{log}");
}

#[test]
fn sources_and_root_are_read_only_build_tmp_out_writable() {
    let fx = Fixture::new();
    let store_file = fx.layers[0].path.join("share/data.txt");
    fs::create_dir_all(store_file.parent().unwrap()).unwrap();
    fs::write(&store_file, "store object\n").unwrap();
    let log = fx.run_ok(
        "cat /forge/sources/hello.txt\n\
         if touch /forge/sources/new 2>/dev/null; then echo SOURCES-WRITABLE; else echo sources-ro; fi\n\
         if touch /bin/new 2>/dev/null; then echo ROOT-WRITABLE; else echo root-ro; fi\n\
         if echo x 2>/dev/null >> /share/data.txt; then echo STORE-WRITABLE; else echo store-ro; fi\n\
         if mount -o remount,rw / 2>/dev/null; then echo REMOUNTED; else echo remount-refused; fi\n\
         if mount -o remount,rw,bind / 2>/dev/null; then echo REMOUNTED; else echo remount-refused; fi\n\
         if echo x 2>/dev/null >> /share/data.txt; then echo STORE-WRITABLE; else echo store-ro; fi\n\
         if umount -l /forge/sources 2>/dev/null; then echo UNMOUNTED; else echo umount-refused; fi\n\
         test -z \"$(ls -A /tmp)\" && echo tmp-empty\n\
         grep -E ' / | /forge/sources ' /proc/self/mounts | cut -d' ' -f2,4 | cut -d, -f1-3 | sort\n\
         echo t > /tmp/t && echo b > /build/b && echo built > /forge/out/result && echo writable",
    );
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["hello from the sources", "sources-ro", "root-ro", "store-ro", "remount-refused", "remount-refused", "store-ro", "umount-refused", "tmp-empty", "/ ro,nosuid,nodev", "/forge/sources ro,nosuid,nodev", "writable"],
        "{log}"
    );
    assert_eq!(fs::read_to_string(&store_file).unwrap(), "store object\n");
    assert!(!fx.sources.join("new").exists());
}

#[test]
fn output_appears_in_out_dir() {
    let fx = Fixture::new();
    let spec = fx.spec("mkdir -p $FORGE_JOBS/x; echo payload > /forge/out/file; mkdir /forge/out/sub; ln -s file /forge/out/sub/link");
    let outcome = sandbox::run(&spec).unwrap();
    assert_eq!(outcome.exit, Exit::Success);
    assert_eq!(outcome.out_dir, fs::canonicalize(&spec.scratch).unwrap().join("out"));
    assert_eq!(fs::read_to_string(outcome.out_dir.join("file")).unwrap(), "payload\n");
    assert_eq!(fs::read_link(outcome.out_dir.join("sub/link")).unwrap(), PathBuf::from("file"));
    assert!(outcome.duration > Duration::ZERO);
}

#[test]
fn stdout_and_stderr_go_to_the_log_appended() {
    let fx = Fixture::new();
    let spec = fx.spec("echo to-stdout; echo to-stderr >&2");
    fs::write(&spec.log, "earlier\n").unwrap();
    sandbox::run(&spec).unwrap();
    assert_eq!(fs::read_to_string(&spec.log).unwrap(), "earlier\nto-stdout\nto-stderr\n");
}

#[test]
fn failing_and_signaled_builds_are_outcomes_not_errors() {
    let fx = Fixture::new();
    assert_eq!(fx.run("echo before; exit 3").0.exit, Exit::Failed(3));
    assert_eq!(fx.run("false").0.exit, Exit::Failed(1));
    assert_eq!(fx.run("kill -9 $$").0.exit, Exit::Signaled(9));
}

#[test]
fn timeout_kills_the_build_and_its_children() {
    let fx = Fixture::new();
    let marker = (std::process::id() % 50_000 + 10_000).to_string();
    let mut spec = fx.spec(&format!("sleep {marker} & sleep {marker}"));
    spec.timeout = Some(Duration::from_millis(500));
    let started = Instant::now();
    let outcome = sandbox::run(&spec).unwrap();
    assert_eq!(outcome.exit, Exit::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(!host_process_with_cmdline(&["sleep", &marker]), "a sleep {marker} survived the timeout");
}

#[test]
fn background_processes_die_when_the_build_exits() {
    let fx = Fixture::new();
    let marker = (std::process::id() % 50_000 + 60_000).to_string();
    // The orphan is reparented to the sandbox's pid 1, which must also reap it.
    fx.run_ok(&format!("sleep {marker} & (sleep 0 &) ; echo started"));
    assert!(!host_process_with_cmdline(&["sleep", &marker]), "a background sleep {marker} survived the build");
}

/// Polls until `condition` holds or `limit` passes; returns whether it held.
fn eventually(limit: Duration, condition: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

const PARENT_MARKER_VAR: &str = "FORGE_SANDBOX_TEST_PARENT_MARKER";

#[test]
fn build_dies_with_the_forge_process() {
    let marker = (std::process::id() % 50_000 + 110_000).to_string();
    // A separate "forge" process (this test binary running the helper test
    // below) starts a long build and is then killed with SIGKILL.
    let mut parent = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sandbox_parent_for_death_test", "--ignored", "--nocapture"])
        .env(PARENT_MARKER_VAR, &marker)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = eventually(Duration::from_secs(20), || host_process_with_cmdline(&["sleep", &marker]));
    parent.kill().unwrap();
    parent.wait().unwrap();
    assert!(started, "the build in the child forge process never started");
    assert!(
        eventually(Duration::from_secs(5), || !host_process_with_cmdline(&["sleep", &marker])),
        "the build outlived the forge process that started it"
    );
}

/// Not a test on its own: the "forge process" that `build_dies_with_the_forge_process` kills.
#[test]
#[ignore = "started by build_dies_with_the_forge_process"]
fn sandbox_parent_for_death_test() {
    let marker = std::env::var(PARENT_MARKER_VAR).expect("run only by build_dies_with_the_forge_process");
    let fx = Fixture::new();
    let mut spec = fx.spec(&format!("sleep {marker}"));
    spec.timeout = Some(Duration::from_secs(30));
    let outcome = sandbox::run(&spec);
    panic!("the parent should have been killed while the build ran, got {outcome:?}");
}

#[test]
fn no_signal_is_ignored_or_blocked() {
    // forge ignores SIGPIPE (Rust runtime) and whoever started the tests may
    // ignore more; none of it may reach the build.
    let fx = Fixture::new();
    let log = fx.run_ok("yes | head -n 2; grep -E '^Sig(Ign|Blk)' /proc/$$/status");
    // Busybox ash ignores SIGQUIT (bit 2) itself, whatever it inherits; SIGPIPE
    // (bit 12) and glibc's reserved signals 32/33 must not be ignored.
    assert_eq!(log.lines().collect::<Vec<_>>(), ["y", "y", "SigBlk:\t0000000000000000", "SigIgn:\t0000000000000004"], "{log}");
}

#[test]
fn the_build_keeps_the_niceness_forge_runs_at() {
    // The build runs in a session of its own, hence in a new autogroup, whose nice value
    // would start at 0 and undo `nice forge build`.
    if fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled").map_or(true, |s| s.trim() != "1") {
        eprintln!("skipped: this kernel does not group processes by session (sched_autogroup_enabled)");
        return;
    }
    let f = Fixture::new();
    let wrapper = f.tmp.path().join("nice-forge");
    fs::write(&wrapper, format!("#!/bin/sh\nexec nice -n 7 {} \"$@\"\n", env!("CARGO_BIN_EXE_forge"))).unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec = f.spec("cat /proc/self/autogroup");
    spec.helper_exe = wrapper;
    let outcome = sandbox::run(&spec).unwrap_or_else(|e| panic!("sandbox setup failed: {e}"));
    let log = fs::read_to_string(&spec.log).unwrap_or_default();
    assert_eq!(outcome.exit, Exit::Success, "log:\n{log}");
    // SAFETY: reads this process's nice value. `nice -n 7` adds to it, up to 19.
    let expected = (unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) } + 7).min(19);
    assert!(log.contains(&format!(" nice {expected}")), "the build's autogroup is not niced like forge ({expected}): {log}");
}

#[test]
fn layer_conflicts_name_both_layers() {
    let fx = Fixture::new();
    let a = layer_with(fx.tmp.path(), "pkg-a", &[("etc/conf", "a")]);
    let b = layer_with(fx.tmp.path(), "pkg-b", &[("etc/conf", "b")]);
    let mut spec = fx.spec("true");
    spec.layers.extend([a, b]);
    let err = sandbox::run(&spec).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, SandboxError::LayerConflict { .. }), "{err:?}");
    assert!(message.contains("/etc/conf") && message.contains("pkg-a") && message.contains("pkg-b"), "{message}");
}

#[test]
fn identical_duplicate_files_across_layers_are_fine() {
    let fx = Fixture::new();
    let a = layer_with(fx.tmp.path(), "pkg-a", &[("etc/conf", "same"), ("etc/a", "a")]);
    let b = layer_with(fx.tmp.path(), "pkg-b", &[("etc/conf", "same"), ("etc/b", "b")]);
    let mut spec = fx.spec("cat /etc/conf /etc/a /etc/b");
    spec.layers.extend([a, b]);
    let outcome = sandbox::run(&spec).unwrap();
    assert_eq!(outcome.exit, Exit::Success);
    assert_eq!(fs::read_to_string(&spec.log).unwrap(), "sameab");
}

#[test]
fn setup_errors_are_errors_not_build_failures() {
    let fx = Fixture::new();
    let mut spec = fx.spec("true");
    spec.layers.push(Layer::at_root("ghost", fx.tmp.path().join("no-such-object")));
    match sandbox::run(&spec) {
        Err(SandboxError::LayerMissing { name, .. }) => assert_eq!(name, "ghost"),
        other => panic!("expected LayerMissing, got {other:?}"),
    }
    let mut spec = fx.spec("true");
    spec.argv = vec!["/bin/no-such-shell".into()];
    match sandbox::run(&spec) {
        Err(SandboxError::Exec { program, detail }) => {
            assert_eq!(program, "/bin/no-such-shell");
            assert!(detail.contains("ENOENT"), "{detail}");
        }
        other => panic!("expected Exec, got {other:?}"),
    }
    let mut spec = fx.spec("true");
    spec.helper_exe = fx.tmp.path().join("no-such-forge");
    assert!(matches!(sandbox::run(&spec), Err(SandboxError::HelperSpawn { .. })));
}

/// A kernel that refuses namespaces: the helper runs inside a user namespace
/// whose user.max_user_namespaces is 0 (a per-namespace sysctl), so its
/// unshare fails as it would on a locked-down host.
#[test]
fn kernel_refusal_is_unsupported_with_an_explanation() {
    let fx = Fixture::new();
    let unshare = ["/usr/bin/unshare", "/bin/unshare"].into_iter().find(|p| Path::new(p).exists());
    let unshare = unshare.expect("util-linux unshare is needed to simulate a kernel that refuses namespaces");
    let wrapper = fx.tmp.path().join("forge-without-userns");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {unshare} -Ur /bin/sh -c 'echo 0 > /proc/sys/user/max_user_namespaces && exec \"$0\" \"$@\"' {} \"$@\"\n",
            env!("CARGO_BIN_EXE_forge")
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec = fx.spec("echo SHOULD-NOT-RUN");
    spec.helper_exe = wrapper.clone();
    match sandbox::run(&spec) {
        Err(SandboxError::Unsupported { reason }) => {
            assert!(reason.starts_with("unshare(user, mount, pid, net, uts, ipc) failed with ENOSPC"), "{reason}");
            assert!(reason.contains("namespace limit is exhausted"), "{reason}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    assert!(!fs::read_to_string(&spec.log).unwrap_or_default().contains("SHOULD-NOT-RUN"));
    match sandbox::probe(&wrapper) {
        Err(SandboxError::Unsupported { .. }) => {}
        other => panic!("probe: expected Unsupported, got {other:?}"),
    }
}

#[test]
fn program_is_found_through_the_given_path() {
    let fx = Fixture::new();
    let mut spec = fx.spec("");
    spec.argv = vec!["echo".into(), "found".into()];
    let outcome = sandbox::run(&spec).unwrap();
    assert_eq!(outcome.exit, Exit::Success);
    assert_eq!(fs::read_to_string(&spec.log).unwrap(), "found\n");
}

#[test]
fn build_dir_is_the_scratch_build_dir_and_writable_files_are_ours() {
    let fx = Fixture::new();
    let spec = fx.spec("echo kept > kept.txt; chmod 600 kept.txt");
    let outcome = sandbox::run(&spec).unwrap();
    assert_eq!(outcome.exit, Exit::Success);
    let kept = spec.scratch.join("build/kept.txt");
    assert_eq!(fs::read_to_string(&kept).unwrap(), "kept\n");
    let meta = fs::metadata(&kept).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    use std::os::unix::fs::MetadataExt;
    if nix::unistd::geteuid().is_root() {
        // Root's build runs as a block of unprivileged host ids (docs/sandbox.md).
        let first = forge::sandbox::ids::FIRST_ID;
        assert!(meta.uid() >= first && meta.uid() < first + forge::sandbox::ids::SLOTS * forge::sandbox::ids::BLOCK, "{}", meta.uid());
        assert_eq!(meta.gid(), meta.uid());
    } else {
        // Root inside maps to the caller outside.
        assert_eq!(meta.uid(), nix::unistd::getuid().as_raw());
    }
    // Whoever wrote it, the output is handed back to the caller.
    let spec = fx.spec("cd /forge/out; echo out > file; mkdir dir; ln -s ../file dir/link; chown 7:9 file 2>/dev/null || true");
    let outcome = sandbox::run(&spec).unwrap();
    assert_eq!(outcome.exit, Exit::Success, "{}", fs::read_to_string(&spec.log).unwrap_or_default());
    for rel in ["", "file", "dir", "dir/link"] {
        let meta = fs::symlink_metadata(outcome.out_dir.join(rel)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw()), "{rel}");
    }
}

#[test]
fn a_varied_build_dir_is_the_cwd_and_build_points_to_it() {
    let fx = Fixture::new();
    let mut spec = fx.spec("pwd -P; readlink /build; cd /build && pwd -P; echo x > /build/through-link; ls /build-check-2");
    spec.build_dir = Some("/build-check-2".into());
    let outcome = sandbox::run(&spec).unwrap();
    let log = fs::read_to_string(&spec.log).unwrap();
    assert_eq!(outcome.exit, Exit::Success, "{log}");
    assert_eq!(log.lines().collect::<Vec<_>>(), ["/build-check-2", "/build-check-2", "/build-check-2", "through-link"]);
    assert!(spec.scratch.join("build/through-link").is_file());
}

/// Prints the median wall time of a trivial build; `cargo test --test sandbox -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_trivial_build() {
    let fx = Fixture::new();
    let mut times: Vec<Duration> = (0..20)
        .map(|_| {
            let spec = fx.spec("true");
            let started = Instant::now();
            let outcome = sandbox::run(&spec).unwrap();
            let elapsed = started.elapsed();
            assert_eq!(outcome.exit, Exit::Success);
            elapsed
        })
        .collect();
    times.sort();
    println!(
        "trivial sandboxed build: median {:?}, min {:?}, max {:?} over {} runs",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        times.len()
    );
}

/// Host pids whose command line is exactly `argv`.
fn host_pids_with_cmdline(argv: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|entry| fs::read(entry.path().join("cmdline")).map(|c| c == wanted).unwrap_or(false))
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect()
}

/// The host's view of a process's real, effective, saved and fs uid.
fn host_uids(pid: u32) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("Uid:");
    line.split_whitespace().skip(1).filter_map(|n| n.parse().ok()).collect()
}

/// Issue 13, defect 1: as root, the sandbox's root was host root and /proc was writable,
/// so a build could set host sysctls (kernel.core_pattern: code execution as host root).
#[test]
fn a_build_cannot_write_kernel_settings_and_sees_masked_proc_files_empty() {
    let fx = Fixture::new();
    let burst = "/proc/sys/kernel/printk_ratelimit_burst";
    let host_burst = fs::read_to_string(burst).unwrap();
    let host_core_pattern = fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let script = r#"
        echo 11 > /proc/sys/kernel/printk_ratelimit_burst && echo "WROTE burst"
        echo '|/build/evil %p' > /proc/sys/kernel/core_pattern && echo "WROTE core_pattern"
        echo 3 > /proc/sys/vm/drop_caches && echo "WROTE drop_caches"
        echo h > /proc/sysrq-trigger && echo "WROTE sysrq"
        tried=0
        for f in $(find /proc/sys -type f); do
            tried=$((tried + 1))
            value=$(head -c 256 "$f" 2>/dev/null) || value=
            if (printf '%s\n' "$value" > "$f") 2>/dev/null; then echo "WROTE $f"; fi
        done
        echo "tried $tried"
        for f in kcore keys timer_list sched_debug; do
            [ -e /proc/$f ] && echo "masked $f $(wc -c < /proc/$f)"
        done
        true
    "#;
    let log = fx.run_ok(script);
    assert!(!log.contains("WROTE"), "a write under /proc succeeded:\n{log}");
    let tried: usize = log.lines().find_map(|l| l.strip_prefix("tried ")).unwrap().trim().parse().unwrap();
    assert!(tried > 100, "only {tried} files under /proc/sys were tried:\n{log}");
    for name in ["kcore", "keys", "timer_list", "sched_debug"] {
        if Path::new("/proc").join(name).exists() {
            assert!(log.contains(&format!("masked {name} 0\n")), "/proc/{name} is not empty inside:\n{log}");
        }
    }
    assert_eq!(fs::read_to_string(burst).unwrap(), host_burst, "the host's printk_ratelimit_burst changed");
    assert_eq!(fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(), host_core_pattern);
}

/// Issue 13, defect 1 (a): root's build is root only inside; on the host it runs as an
/// unprivileged id of its own block, and two builds at once get different blocks.
#[test]
fn roots_build_runs_as_an_unprivileged_host_id() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: only forge running as root maps the sandbox to a block of host ids");
        return;
    }
    let fx = Fixture::new();
    let markers = [0, 1].map(|i| (std::process::id() % 40_000 * 2 + i + 170_000).to_string());
    let specs: Vec<_> = markers.iter().map(|m| fx.spec(&format!("id -u; cat /proc/self/uid_map; touch f; chown 1000:1000 f; echo owner $(stat -c %u:%g f); exec sleep {m}"))).collect();
    std::thread::scope(|scope| {
        let runs: Vec<_> = specs
            .iter()
            .map(|spec| {
                let mut spec = spec.clone();
                spec.timeout = Some(Duration::from_secs(4));
                scope.spawn(move || sandbox::run(&spec).unwrap())
            })
            .collect();
        let mut uids = Vec::new();
        for marker in &markers {
            assert!(eventually(Duration::from_secs(20), || !host_pids_with_cmdline(&["sleep", marker]).is_empty()));
            let pid = host_pids_with_cmdline(&["sleep", marker])[0];
            let ids = host_uids(pid);
            assert_eq!(ids.len(), 4, "{ids:?}");
            assert!(ids.iter().all(|&id| id >= forge::sandbox::ids::FIRST_ID), "the build runs as host uid {ids:?}");
            uids.push(ids[0]);
        }
        assert_ne!(uids[0], uids[1], "two concurrent builds share host ids");
        for run in runs {
            assert_eq!(run.join().unwrap().exit, Exit::TimedOut);
        }
    });
    let log = fs::read_to_string(&specs[0].log).unwrap();
    assert!(log.starts_with("0\n"), "{log}");
    let map: Vec<&str> = log.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert_eq!(map, ["0", "0", &forge::sandbox::ids::BLOCK.to_string()], "the build cannot use the block's ids:\n{log}");
    assert!(log.contains("owner 1000:1000\n"), "chown inside the build failed:\n{log}");
}
