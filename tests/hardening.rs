//! Issue 13's defects, one regression test each, where the defect shows at the command line
//! (sandbox, archive and walker defects are tested in tests/sandbox.rs and the unit tests of
//! src/cache/archive.rs and src/fswalk.rs).

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Runs forge with a deadline: a command that hangs is a failure, not a stuck test run.
fn forge_within(env: &TestEnv, args: &[&str], limit: Duration) -> std::process::Output {
    let child = env
        .cmd()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start forge");
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    // The pipes are drained while waiting (a full pipe would stall forge itself).
    std::thread::spawn(move || done.send(child.wait_with_output().expect("collect output")));
    let started = Instant::now();
    finished.recv_timeout(limit).unwrap_or_else(|_| {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        panic!("forge {args:?} still running after {:?}", started.elapsed())
    })
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

/// One raw HTTP/1.1 request; returns the status code.
fn raw_request(url: &str, request: &str) -> u16 {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to forge serve");
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&answer);
    head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("no status in {head:?}"))
}

fn put(url: &str, path: &str, headers: &str, body: &[u8]) -> u16 {
    let mut request = format!("PUT /{path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sesame\r\n{headers}Connection: close\r\n\r\n");
    request.push_str(&String::from_utf8_lossy(body));
    raw_request(url, &request)
}

/// Defect 8: a PUT with `Content-Length: -1` or an overflowing length got 200 and stored an
/// empty file; a body not matching its name was stored too.
#[test]
fn forge_serve_refuses_malformed_uploads_and_stores_nothing() {
    let env = TestEnv::empty();
    let serve = Serve::start(&env, &["--token", "sesame"]);
    let content = b"archive bytes";
    let name = forge::hash::Digest::of(content).to_hex();
    let path = format!("archives/{name}.tar.zst");
    let cases: [(&str, &[u8], u16); 6] = [
        ("Content-Length: -1\r\n", content, 400),
        ("Content-Length: 99999999999999999999999\r\n", content, 413),
        ("Content-Length: 13\r\nContent-Length: 12\r\n", content, 400),
        ("", content, 411),
        ("Content-Length: 5\r\n", b"wrong", 400),
        ("Content-Length: 13\r\n", b"other content", 400),
    ];
    for (headers, body, status) in cases {
        assert_eq!(put(&serve.url, &path, headers, body), status, "{headers:?}");
    }
    let cached = env.store.join("cache").join(&path);
    assert!(!cached.exists(), "a refused upload was stored");
    // An object info filed under another object's name, a realisation under another drv.
    let other = forge::hash::Digest::of(b"x").to_hex();
    let info = format!("{{\"format\":\"forge-object-v1\",\"out\":\"{name}\",\"files\":0,\"size\":0,\"compression\":\"zstd\",\"archive\":{{\"blake3\":\"{name}\",\"size\":1}},\"blobs\":[]}}");
    assert_eq!(put(&serve.url, &format!("objects/{other}.json"), &format!("Content-Length: {}\r\n", info.len()), info.as_bytes()), 400);
    assert_eq!(put(&serve.url, &format!("objects/{name}.json"), &format!("Content-Length: {}\r\n", info.len()), info.as_bytes()), 200);
    // The well-formed upload goes through, byte for byte.
    assert_eq!(put(&serve.url, &path, "Content-Length: 13\r\n", content), 200);
    assert_eq!(std::fs::read(&cached).unwrap(), content);
}

/// Defect 9: 100,000 unknown dependencies on one line took seconds (each column counted
/// from the line's start, a did-you-mean scan per name). Now linear: well under the bound
/// even in a debug build, with suggestions only for the first ones.
#[test]
fn many_unknown_dependencies_are_reported_in_linear_time() {
    let env = TestEnv::empty();
    let deps: Vec<String> = (0..100_000).map(|i| format!("\"x{i}\"")).collect();
    let line = format!("build = [{}]", deps.join(","));
    let column = line.find("\"x99999\"").unwrap() + 1;
    let recipe = env.write(
        "many.toml",
        &format!("[package]\nname = \"x\"\nversion = \"1\"\n[deps]\n{line}\n[build]\nscript = \"true\"\n"),
    );
    let out = forge_within(&env, &["show", recipe.to_str().unwrap()], Duration::from_secs(15));
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert_eq!(err.matches("which no loaded recipe defines").count(), 100_000);
    let last = format!("many.toml:5:{column}: package \"x\" depends on \"x99999\"");
    assert!(err.contains(&last), "{last} not in {}", &err[err.len() - 300..]);
    let suggested = err.matches("did you mean").count();
    assert!(suggested > 0 && suggested <= 100, "{suggested} suggestions");
}

/// A set with the seed and one package whose build sleeps until killed.
fn sleeper_set(env: &TestEnv, marker: &str) -> std::path::PathBuf {
    env.write(
        "pkgs/sleeper.toml",
        &format!("[package]\nname = \"sleeper\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\"]\n[build]\nscript = 'mkdir -p $FORGE_OUT; sleep {marker}'\n"),
    );
    env.write("set.toml", &format!("[set]\nname = \"s\"\ninclude = [{}, \"pkgs/*.toml\"]\n", seed_includes()))
}

fn host_has_process(argv: &[&str]) -> bool {
    let wanted: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted))
}

/// Defect 7: after kill -9 a run stayed `running` for ever and its scratch directory stayed
/// in STORE/tmp until gc. The next forge to open the store heals both.
#[test]
fn a_killed_build_is_marked_interrupted_and_its_scratch_removed() {
    let env = TestEnv::with_seed_sources();
    let marker = (std::process::id() % 40_000 + 210_000).to_string();
    let set = sleeper_set(&env, &marker);
    let mut forge = env.cmd().args(["build", set.to_str().unwrap()]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    while !host_has_process(&["sleep", &marker]) {
        assert!(started.elapsed() < Duration::from_secs(60), "the build never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let tmp = env.store.join("tmp");
    assert!(std::fs::read_dir(&tmp).unwrap().count() > 0, "the running build has a scratch directory");
    forge.kill().unwrap();
    forge.wait().unwrap();
    // What an earlier forge (before owner tokens) left is not ours to judge: it stays for gc.
    std::fs::create_dir(tmp.join("legacy-1-0")).unwrap();

    let history = env.forge(&["history", "sleeper"]);
    assert_exit(&history, 0);
    let text = stdout(&history);
    assert!(text.contains("interrupted") && !text.contains("running"), "{text}");
    let left: Vec<String> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left, ["legacy-1-0"], "scratch directories of the dead process are still there");
    let status = json_lines(&env.forge(&["status", "--json"]).stdout).remove(0);
    assert_eq!(status["status"], "INTERRUPTED");
    // The interrupted package is no success (it was reported as 100% successful).
    assert!(status["error_rate"].as_f64().unwrap() > 0.0, "{status}");
    // Nothing of the killed build is half-registered: verify is clean and the build resumes.
    assert_exit(&env.forge(&["verify"]), 0);
}

/// Defect 7: `.tmp-*` partial uploads of a killed pusher stayed in a file:// cache for ever.
#[test]
fn push_and_verify_remove_stale_partial_uploads_only() {
    let env = TestEnv::with_seed_sources();
    let seed_set = env.write("seed-set.toml", &format!("[set]\nname = \"s\"\ninclude = [{}]\n", seed_includes()));
    assert_exit(&env.forge(&["build", seed_set.to_str().unwrap()]), 0);
    let (key, public) = keygen(&env, "ci-1");
    let cache = env.path("cache");
    let url = format!("file://{}", cache.display());
    assert_exit(&env.forge(&["push", "--to", &url, "--key", key.to_str().unwrap()]), 0);
    let stale = cache.join("archives/.tmp-999-1");
    let fresh = cache.join("archives/.tmp-999-2");
    std::fs::write(&stale, b"half an archive").unwrap();
    std::fs::write(&fresh, b"an upload in progress").unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let two_hours_ago = nix::sys::time::TimeSpec::new(now - 7200, 0);
    nix::sys::stat::utimensat(None, &stale, &two_hours_ago, &two_hours_ago, nix::sys::stat::UtimensatFlags::NoFollowSymlink).unwrap();
    let out = env.forge(&["push", "--json", "--to", &url, "--key", key.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("\"stale_uploads_removed\":1"), "{}", stdout(&out));
    assert!(!stale.exists() && fresh.exists());
    std::fs::write(&stale, b"again").unwrap();
    nix::sys::stat::utimensat(None, &stale, &two_hours_ago, &two_hours_ago, nix::sys::stat::UtimensatFlags::NoFollowSymlink).unwrap();
    let out = env.forge(&["verify", "--cache", cache.to_str().unwrap(), "--trusted-key", &public]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("deleted 1 partial uploads"), "{}", stdout(&out));
    assert!(!stale.exists() && fresh.exists());
}

/// A tmpfs mounted for a test, unmounted on drop.
struct SmallFs(std::path::PathBuf);

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Defect 5: a build that filled the disk ended with "the sandbox helper ended (exit status:
/// 125) without reporting", an empty log and no word of ENOSPC.
#[test]
fn a_build_that_fills_the_disk_says_so_and_keeps_its_log() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting a small file system for the store needs root");
        return;
    }
    let env = TestEnv::empty();
    std::fs::create_dir_all(&env.store).unwrap();
    nix::mount::mount(Some("tmpfs"), &env.store, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=48m")).unwrap();
    let _fs = SmallFs(env.store.clone());
    env.import_seed_sources();
    env.write(
        "pkgs/filler.toml",
        "[package]\nname = \"filler\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\"]\n[build]\nscript = '''\necho before-the-fill\ndd if=/dev/zero of=/build/fill bs=1M count=200\necho never-printed\n'''\n",
    );
    let set = env.write("set.toml", &format!("[set]\nname = \"s\"\ninclude = [{}, \"pkgs/*.toml\"]\n", seed_includes()));
    let (events, out) = env.build_json(&[set.to_str().unwrap()]);
    assert_exit(&out, 1);
    let failed = event_of(&events, "filler");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("No space left on device (ENOSPC)") && error.contains("tmpfs file system at"), "{failed}");
    assert_eq!(failed["category"], "system", "{failed}");
    let log = stdout(&env.forge(&["log", "filler"]));
    assert!(log.contains("before-the-fill"), "{log}");
    assert!(log.contains("No space left on device"), "{log}");
    assert!(!log.contains("never-printed"));
}

/// Defect 4: a big file (blob-sized) whose name is not UTF-8 made `forge push` exit 1 with
/// no realisation uploaded for any object. It now travels in the archive; and one object
/// that cannot be packed costs only its own realisation.
#[test]
fn push_handles_non_utf8_big_files_and_isolates_a_broken_object() {
    let a = TestEnv::with_seed_sources();
    a.write(
        "pkgs/odd.toml",
        "[package]\nname = \"odd\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\"]\n[build]\nscript = '''\nmkdir -p $FORGE_OUT\nhead -c 300000 /dev/urandom > \"$FORGE_OUT/caf$(printf '\\351')\"\necho small > \"$FORGE_OUT/na$(printf '\\377')ve\"\n'''\n",
    );
    a.write("pkgs/plain.toml", "[package]\nname = \"plain\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\"]\n[build]\nscript = 'mkdir -p $FORGE_OUT && echo plain > $FORGE_OUT/file'\n");
    let set = a.write("set.toml", &format!("[set]\nname = \"s\"\ninclude = [{}, \"pkgs/*.toml\"]\n", seed_includes()));
    let (events, out) = a.build_json(&[set.to_str().unwrap()]);
    assert_exit(&out, 0);
    let odd_out = out_of(&events, "odd");
    let (key, public) = keygen(&a, "ci-1");
    let cache = a.path("cache");
    let url = format!("file://{}", cache.display());
    let pushed = a.forge(&["push", "--json", "--to", &url, "--key", key.to_str().unwrap(), set.to_str().unwrap()]);
    assert_exit(&pushed, 0);

    // Another machine substitutes the odd package, bit for bit.
    let b = TestEnv::with_seed_sources();
    let (events, out) = b.build_json(&["--substituter", &url, "--trusted-key", &public, set.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert_eq!(event_of(&events, "odd")["event"], "substituted", "{}", stderr(&out));
    assert_eq!(out_of(&events, "odd"), odd_out);

    // A store object that cannot be packed (a fifo where a file was): push reports it,
    // exits 1, and still pushes the other realisations.
    let c = TestEnv::with_seed_sources();
    let (events, out) = c.build_json(&[set.to_str().unwrap()]);
    assert_exit(&out, 0);
    let broken = c.store.join("objects").join(out_of(&events, "plain")).join("file");
    std::fs::remove_file(&broken).unwrap();
    nix::unistd::mkfifo(&broken, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let (key_c, _) = keygen(&c, "ci-2");
    let cache_c = c.path("cache");
    let url_c = format!("file://{}", cache_c.display());
    let pushed = c.forge(&["push", "--json", "--to", &url_c, "--key", key_c.to_str().unwrap(), set.to_str().unwrap()]);
    assert_exit(&pushed, 1);
    let report = json_lines(&pushed.stdout).pop().unwrap();
    assert_eq!(report["failed"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["failed"][0]["name"], "plain");
    assert!(report["realisations_uploaded"].as_u64().unwrap() >= 2, "{report}");
    let realisations = walk_files(&cache_c.join("realisations"));
    assert_eq!(realisations.len() as u64, report["realisations_uploaded"].as_u64().unwrap());
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    walkdir::WalkDir::new(dir).into_iter().flatten().filter(|e| e.file_type().is_file()).map(|e| e.path().to_path_buf()).collect()
}

/// Defect 3: an output deeper than PATH_MAX (30 directories of 200-character names, made with
/// relative mkdir/cd) failed with "File name too long", left its scratch directory, and every
/// later `forge gc` exited 1. Now it is refused by name, and nothing stays behind.
#[test]
fn an_output_deeper_than_path_max_is_refused_cleanly_and_gc_stays_green() {
    let env = TestEnv::with_seed_sources();
    env.write(
        "pkgs/deep.toml",
        "[package]\nname = \"deep\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\"]\n[build]\nscript = '''\nmkdir -p $FORGE_OUT && cd $FORGE_OUT\nn=$(printf '%0200d' 0)\nmkdir d && echo bottom > d/leaf\n# Nested from the bottom up by renames, so that no single call needs a long path.\nfor i in $(seq 30); do mkdir t && mv d t/$n && mv t d; done\n'''\n",
    );
    let set = env.write("set.toml", &format!("[set]\nname = \"s\"\ninclude = [{}, \"pkgs/*.toml\"]\n", seed_includes()));
    let (events, out) = env.build_json(&[set.to_str().unwrap()]);
    assert_exit(&out, 1);
    let failed = event_of(&events, "deep");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("longer than 3072 bytes"), "{failed}\n{}", stdout(&env.forge(&["log", "deep"])));
    let tmp = env.store.join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
    let gc = env.forge(&["gc"]);
    assert_exit(&gc, 0);
    assert_exit(&env.forge(&["verify"]), 0);
}

/// The recipe of a package built from the seed, with `requirements` as its [requirements].
fn limited(name: &str, requirements: &str, script: &str) -> String {
    format!("[package]\nname = \"{name}\"\nversion = \"1\"\n[deps]\nbuild = [\"seed\"]\n[build]\nscript = '''\n{script}\n'''\n[requirements]\n{requirements}\n")
}

/// "Limits builds did not have": a build could start 3,000 processes, touch 3 GiB of memory
/// and fill /tmp (half the RAM) and /build. Each limit now ends the build, named, with its
/// value and the use, as a system failure; the cgroups are gone afterwards.
#[test]
fn each_limit_ends_a_build_and_says_which() {
    let env = TestEnv::with_seed_sources();
    env.write("pkgs/memory-hog.toml", &limited("memory-hog", "memory = \"64M\"", "echo start\ndd if=/dev/zero of=/dev/null bs=200M count=1\necho survived"));
    env.write("pkgs/fork-bomb.toml", &limited("fork-bomb", "processes = 50", "for i in $(seq 100); do sleep 30 & done\nwait"));
    env.write("pkgs/disk-hog.toml", &limited("disk-hog", "disk = \"32M\"", "dd if=/dev/zero of=/build/big bs=1M count=64\nsleep 60"));
    env.write("pkgs/silent.toml", &limited("silent", "max-silent-time = \"2s\"", "echo one line\nsleep 60"));
    env.write("pkgs/tmp-hog.toml", &limited("tmp-hog", "tmp = \"8M\"", "dd if=/dev/zero of=/tmp/big bs=1M count=16"));
    env.write(
        "pkgs/within.toml",
        &limited("within", "memory = \"256M\"", "grep -E ' /tmp | /dev/shm ' /proc/mounts > $FORGE_OUT/mounts\ncat /proc/self/cgroup > $FORGE_OUT/cgroup\nsleep 3\necho done"),
    );
    let set = env.write("set.toml", &format!("[set]\nname = \"s\"\ninclude = [{}, \"pkgs/*.toml\"]\n", seed_includes()));
    let started = Instant::now();
    let out = forge_within(&env, &["build", "-v", "-k", "--json", "-j", "6", set.to_str().unwrap()], Duration::from_secs(120));
    assert_exit(&out, 1);
    // Every build that sleeps 30 s or more was ended early, and all ran at once.
    assert!(started.elapsed() < Duration::from_secs(45), "{:?}", started.elapsed());
    let events = json_lines(&out.stdout);
    let verbose = stderr(&out);
    for event in events.iter().filter(|e| e["event"] == "failed") {
        eprintln!("{}: {}", event["name"], event["error"]);
    }
    let cgroups = verbose.contains("memory by a cgroup") && verbose.contains("processes by a cgroup");
    let system_failure = |name: &str, words: &[&str]| {
        let failed = event_of(&events, name);
        assert_eq!(failed["event"], "failed", "{failed}");
        let error = failed["error"].as_str().unwrap_or_default();
        assert_eq!(failed["category"], "system", "{failed}");
        for word in words {
            assert!(error.contains(word), "{name}: {word:?} missing from {error}");
        }
    };
    system_failure("disk-hog", &["disk-hog: the build used 64.", "over its limit of 32.0 MiB ([requirements] disk)"]);
    system_failure("silent", &["printed nothing for 2s", "max-silent-time"]);
    if cgroups {
        system_failure("memory-hog", &["memory limit of 64.0 MiB", "killed a process"]);
        system_failure("fork-bomb", &["limit of 50 processes", "a fork was refused"]);
    } else {
        eprintln!("no cgroups here ({verbose}): memory and processes are rlimits, whose breach is a plain failure");
        assert_eq!(event_of(&events, "memory-hog")["event"], "failed");
        assert_eq!(event_of(&events, "fork-bomb")["event"], "failed");
    }
    // /tmp is a tmpfs of the declared size: writing past it fails the script itself.
    assert_eq!(event_of(&events, "tmp-hog")["event"], "failed");
    assert!(stdout(&env.forge(&["log", "tmp-hog"])).contains("No space left on device"));
    // A build within its limits sees the default /tmp size and runs in cgroups that are
    // removed once it ends.
    assert_eq!(event_of(&events, "within")["event"], "built", "{:?}", event_of(&events, "within"));
    let out_dir = env.store.join("objects").join(out_of(&events, "within"));
    let mounts = std::fs::read_to_string(out_dir.join("mounts")).unwrap();
    assert!(mounts.lines().all(|l| l.contains("size=1048576k")) && mounts.lines().count() == 2, "{mounts}");
    if cgroups {
        let inside = std::fs::read_to_string(out_dir.join("cgroup")).unwrap();
        let mut seen = 0;
        for line in inside.lines() {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next(), fields.next().unwrap_or(""), fields.next().unwrap_or(""));
            if !path.contains("forge-build-") {
                continue;
            }
            seen += 1;
            let mount = if controllers.is_empty() { "/sys/fs/cgroup/unified".to_string() } else { format!("/sys/fs/cgroup/{controllers}") };
            let dir = std::path::Path::new(&mount).join(path.trim_start_matches('/'));
            let v2 = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
            assert!(!dir.exists() && !v2.exists(), "{} still exists after the build", dir.display());
        }
        assert!(seen >= 1, "the build ran in no forge cgroup: {inside}");
    }
}

fn has_apt() -> bool {
    std::process::Command::new("apt-get").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// A real .deb (busybox-static's, from the test source cache) and its sha256.
fn a_real_deb() -> (std::path::PathBuf, String) {
    let sources = seed_cache().join("sources");
    let entry = std::fs::read_dir(&sources).unwrap().flatten().find(|e| e.file_name().to_string_lossy().starts_with("sha256-")).expect("the seed's .deb");
    let name = entry.file_name().to_string_lossy().into_owned();
    (entry.path(), name.trim_start_matches("sha256-").to_string())
}

/// An import of the deb `forge-gone=1.0`, a version no archive has (as a seed's pin once the
/// archive has moved on); its sha256 is that of the real .deb the test offers in its place.
fn gone_seed(env: &TestEnv, sha256: &str) -> std::path::PathBuf {
    env.write("gone.toml", &format!("[package]\nname = \"gone\"\nversion = \"1.0\"\n[import]\nunpack = true\n[[source]]\ndeb = \"forge-gone=1.0\"\nsha256 = \"{sha256}\"\n"))
}

/// "The seeds must survive the archive moving on": a seed whose version is gone from the
/// archive is still built from apt's cache, from a `forge source add`ed copy, or substituted
/// from a trusted cache; with none of them, the error says so and names the re-pin command.
#[test]
fn a_seed_gone_from_the_archive_comes_from_apt_cache_a_registered_copy_or_a_cache() {
    if !has_apt() {
        eprintln!("skipped: deb sources need apt");
        return;
    }
    let (deb, sha256) = a_real_deb();
    let build = |env: &TestEnv, recipe: &std::path::Path, apt_config: &std::path::Path, extra: &[&str]| {
        let out = env.cmd().env("APT_CONFIG", apt_config).args(["build", "--json"]).arg(recipe).args(extra).output().unwrap();
        (json_lines(&out.stdout), out)
    };
    // apt's cache, where APT_CONFIG says it is.
    let a = TestEnv::empty();
    let archives = a.path("apt-archives");
    std::fs::create_dir_all(&archives).unwrap();
    let apt_config = a.write("apt.conf", &format!("Dir::Cache::archives \"{}/\";\n", archives.display()));
    std::fs::copy(&deb, archives.join("forge-gone_1.0_amd64.deb")).unwrap();
    let recipe = gone_seed(&a, &sha256);
    let (events, out) = build(&a, &recipe, &apt_config, &[]);
    assert_exit(&out, 0);
    let built = out_of(&events, "gone");

    // Nowhere: the error says where forge looked and what to run.
    let b = TestEnv::empty();
    let empty_config = b.write("apt.conf", &format!("Dir::Cache::archives \"{}/\";\n", b.path("none").display()));
    let recipe_b = gone_seed(&b, &sha256);
    let (events, out) = build(&b, &recipe_b, &empty_config, &[]);
    assert_exit(&out, 1);
    let error = event_of(&events, "gone")["error"].as_str().unwrap_or_default().to_string();
    for words in ["nothing has the bytes of forge-gone=1.0", "forge source add", "apt's cache", "substituter", "forge prefetch --update-debs"] {
        assert!(error.contains(words), "{words:?} missing: {error}");
    }
    // A registered copy.
    assert_exit(&b.forge(&["source", "add", deb.to_str().unwrap()]), 0);
    let (events, out) = build(&b, &recipe_b, &empty_config, &[]);
    assert_exit(&out, 0);
    assert_eq!(out_of(&events, "gone"), built);

    // A trusted binary cache holding the seed's output: nothing needs the .deb then.
    let (key, public) = keygen(&a, "team");
    let cache = format!("file://{}", a.path("cache").display());
    assert_exit(&a.forge(&["push", "--to", &cache, "--key", key.to_str().unwrap()]), 0);
    let c = TestEnv::empty();
    let recipe_c = gone_seed(&c, &sha256);
    let (events, out) = build(&c, &recipe_c, &empty_config, &["--substituter", &cache, "--trusted-key", &public]);
    assert_exit(&out, 0);
    assert_eq!(event_of(&events, "gone")["event"], "substituted", "{}", stderr(&out));
    assert_eq!(out_of(&events, "gone"), built);
}

/// The documented re-pin command: every deb source moves to the index's candidate version and
/// SHA256; the rest of the file, comments and layout included, stays byte for byte; a second
/// run changes nothing.
#[test]
fn prefetch_update_debs_repins_to_the_index_and_keeps_the_file_as_it_was() {
    if !has_apt() {
        eprintln!("skipped: needs apt's index");
        return;
    }
    let apt = |args: &[&str]| stdout(&std::process::Command::new("apt-cache").args(args).env("LC_ALL", "C").output().unwrap());
    let candidate = apt(&["policy", "busybox-static"]).lines().find_map(|l| l.trim().strip_prefix("Candidate: ").map(str::to_string)).expect("a candidate");
    let published = apt(&["show", &format!("busybox-static={candidate}")]).lines().find_map(|l| l.strip_prefix("SHA256: ").map(str::to_string)).unwrap();
    let env = TestEnv::empty();
    // The old pin is deliberately stale: a version and checksum the re-pin must replace.
    let before = "# A seed, pinned long ago.\n[package]\nname   = \"old-seed\"   # aligned on purpose\nversion = \"1\"\n\n[import]\nunpack = true\n\n# the only source\n[[source]]\ndeb = \"busybox-static=1:0.0-forge-stale\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n";
    let file = env.write("old.toml", before);
    let out = env.forge(&["prefetch", "--update-debs", file.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains(&format!("old-seed: busybox-static 1:0.0-forge-stale -> {candidate}")), "{}", stdout(&out));
    let after = std::fs::read_to_string(&file).unwrap();
    let expected = before
        .replace("1:0.0-forge-stale", &candidate)
        .replace("0000000000000000000000000000000000000000000000000000000000000000", &published);
    assert_eq!(after, expected);
    let again = env.forge(&["prefetch", "--update-debs", file.to_str().unwrap()]);
    assert_exit(&again, 0);
    assert!(stderr(&again).contains("0 deb source(s) re-pinned, 1 still in the index as pinned"), "{}", stderr(&again));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), expected);
    // A pin the index still lists stays, though it is not the candidate: a deliberate choice
    // (a point release's version rather than a security update's) survives; --latest moves it.
    // Versions the index lists with a SHA256 (an installed version may be listed without one).
    let versions = |package: &str| {
        apt(&["show", package])
            .split("\n\n")
            .filter(|stanza| stanza.lines().any(|l| l.starts_with("SHA256: ")))
            .filter_map(|stanza| stanza.lines().find_map(|l| l.strip_prefix("Version: ")).map(str::to_string))
            .collect::<Vec<_>>()
    };
    let sha_of = |package: &str, version: &str| apt(&["show", &format!("{package}={version}")]).lines().find_map(|l| l.strip_prefix("SHA256: ").map(str::to_string)).unwrap();
    let policy_candidate = |package: &str| apt(&["policy", package]).lines().find_map(|l| l.trim().strip_prefix("Candidate: ").map(str::to_string)).unwrap_or_default();
    // Packages of the toolchain that a point release and its updates often list twice.
    let listed_twice = ["linux-libc-dev", "libc6", "zlib1g", "libzstd1", "patch", "tzdata"].into_iter().find_map(|package| {
        let newest = policy_candidate(package);
        versions(package).into_iter().find(|v| *v != newest).map(|older| (package, older, newest))
    });
    match listed_twice {
        Some((package, older, newest)) => {
            let recipe = |version: &str| format!("[package]\nname = \"two\"\nversion = \"1\"\n[import]\nunpack = true\n[[source]]\ndeb = \"{package}={version}\"\nsha256 = \"{}\"\n", sha_of(package, version));
            let file = env.write("two.toml", &recipe(&older));
            assert_exit(&env.forge(&["prefetch", "--update-debs", file.to_str().unwrap()]), 0);
            assert_eq!(std::fs::read_to_string(&file).unwrap(), recipe(&older));
            assert_exit(&env.forge(&["prefetch", "--update-debs", "--latest", file.to_str().unwrap()]), 0);
            assert_eq!(std::fs::read_to_string(&file).unwrap(), recipe(&newest));
        }
        None => eprintln!("no package listed at two versions in this index: the keep-a-listed-pin case is not exercised"),
    }
}
