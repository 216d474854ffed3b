//! Binary caches between two stores standing for two machines: push from one, substitute
//! in the other with zero local builds and identical out hashes, over file://, a real nginx
//! with WebDAV on loopback, and `forge serve`. Tampered archives, forged or untrusted
//! signatures and a cache that is down never break a build and never register anything.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;

/// A set with the seed and two packages: `big` (a file large enough to travel as a blob, an
/// executable, a symlink, nested dirs) and `small`, which depends on it.
fn write_set(env: &TestEnv) -> PathBuf {
    env.write(
        "pkgs/big.toml",
        r#"
[package]
name = "big"
version = "1"
[deps]
build = ["seed"]
[build]
script = '''
mkdir -p $FORGE_OUT/lib/deep/er $FORGE_OUT/bin
i=0; while [ $i -lt 40000 ]; do echo "line $i of a file big enough to be a blob"; i=$((i+1)); done > $FORGE_OUT/lib/big.dat
echo small > $FORGE_OUT/lib/deep/er/small.txt
printf '#!/bin/sh\necho hi\n' > $FORGE_OUT/bin/say-hi && chmod +x $FORGE_OUT/bin/say-hi
ln -s ../lib/big.dat $FORGE_OUT/bin/big-link
'''
"#,
    );
    env.write(
        "pkgs/small.toml",
        r#"
[package]
name = "small"
version = "1"
[deps]
build = ["seed", "big"]
[build]
script = 'mkdir -p $FORGE_OUT && wc -l < /lib/big.dat > $FORGE_OUT/count'
"#,
    );
    env.write("set.toml", &format!("[set]\nname = \"s\"\ninclude = [{}, \"pkgs/*.toml\"]\n", seed_includes()))
}

/// A machine: the set built in a fresh store; returns (env, set file, name -> out).
fn machine_a() -> (TestEnv, PathBuf, Vec<(String, String)>) {
    let env = TestEnv::with_seed_sources();
    let set = write_set(&env);
    let (events, out) = env.build_json(&[set.to_str().unwrap()]);
    assert_exit(&out, 0);
    (env, set, outs(&events))
}

fn outs(events: &[serde_json::Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["out"].is_string())
        .map(|e| (e["name"].as_str().unwrap().to_string(), e["out"].as_str().unwrap().to_string()))
        .collect();
    v.sort();
    v
}


fn push(env: &TestEnv, key: &Path, to: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["push", "--json", "--to", to, "--key", key.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = env.forge(&args);
    assert_exit(&out, 0);
    json_lines(&out.stdout).pop().expect("push report")
}

fn substitute_build(env: &TestEnv, set: &Path, url: &str, trusted: &str) -> (Vec<serde_json::Value>, std::process::Output) {
    env.build_json(&[set.to_str().unwrap(), "--substituter", url, "--trusted-key", trusted])
}

fn summary(events: &[serde_json::Value]) -> &serde_json::Value {
    events.iter().find(|e| e["event"] == "summary").expect("summary event")
}

/// Machine B: a fresh, empty store (no sources at all) that substitutes everything.
#[track_caller]
fn assert_all_substituted(url: &str, set: &Path, trusted: &str, expected: &[(String, String)]) -> TestEnv {
    let b = TestEnv::empty();
    let (events, out) = substitute_build(&b, set, url, trusted);
    assert_exit(&out, 0);
    let s = summary(&events);
    assert_eq!((s["built"].as_u64(), s["substituted"].as_u64()), (Some(0), Some(expected.len() as u64)), "{}", stderr(&out));
    assert_eq!(outs(&events), expected, "identical out hashes on both machines");
    let verify = b.forge(&["verify"]);
    assert_exit(&verify, 0);
    b
}

#[test]
fn file_cache_moves_everything_once_and_substitutes_with_zero_builds() {
    let (a, set, expected) = machine_a();
    let (key, public) = keygen(&a, "ci-1");
    let cache = a.path("cache");
    let url = format!("file://{}", cache.display());

    let first = push(&a, &key, &url, &[]);
    assert_eq!(first["objects_uploaded"], expected.len());
    assert!(cache.join(format!("blobs/{}.zst", big_dat_hash(&a, &expected))).is_file(), "big.dat travels as a blob: {first}");
    let again = push(&a, &key, &url, &[]);
    assert_eq!((again["objects_uploaded"].as_u64(), again["realisations_uploaded"].as_u64()), (Some(0), Some(0)), "{again}");

    // `forge show` on machine B marks the nodes substitutable before anything is fetched.
    let b = TestEnv::empty();
    let show = b.forge(&["show", "--json", set.to_str().unwrap(), "--substituter", &url, "--trusted-key", &public]);
    assert_exit(&show, 0);
    let statuses: Vec<String> = json_lines(&show.stdout).iter().map(|n| n["status"].as_str().unwrap().to_string()).collect();
    assert!(statuses.iter().all(|s| s == "substitutable"), "{statuses:?}");

    let b = assert_all_substituted(&url, &set, &public, &expected);
    // Everything is local now: nothing is asked (an unreachable substituter is not noticed).
    let (events, out) = substitute_build(&b, &set, "http://127.0.0.1:9/", &public);
    assert_exit(&out, 0);
    assert_eq!(summary(&events)["cached"], expected.len());
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[test]
fn substituting_a_package_does_not_fetch_its_build_only_inputs() {
    let (a, set, expected) = machine_a();
    let (key, public) = keygen(&a, "ci-1");
    let url = format!("file://{}", a.path("cache").display());
    push(&a, &key, &url, &[]);

    // `small` only builds with `big` and the seed: having small's output, B needs neither.
    let b = TestEnv::empty();
    let small = [set.to_str().unwrap(), "--package", "small", "--substituter", &url, "--trusted-key", &public];
    let show = b.forge(&[&["show", "--json"][..], &small].concat());
    assert_exit(&show, 0);
    let statuses: Vec<(String, String)> =
        json_lines(&show.stdout).iter().map(|n| (n["name"].as_str().unwrap().into(), n["status"].as_str().unwrap().into())).collect();
    assert!(statuses.contains(&("small".into(), "substitutable".into())), "{statuses:?}");
    assert!(statuses.iter().filter(|(n, _)| n != "small").all(|(_, s)| s == "not needed"), "{statuses:?}");

    let (events, out) = b.build_json(&small);
    assert_exit(&out, 0);
    let s = summary(&events);
    let others = (expected.len() - 1) as u64;
    assert_eq!((s["built"].as_u64(), s["substituted"].as_u64(), s["not_needed"].as_u64()), (Some(0), Some(1), Some(others)), "{}", stderr(&out));
    assert_eq!(outs(&events), expected.iter().filter(|(n, _)| n == "small").cloned().collect::<Vec<_>>());
    let big_dat = big_dat_hash(&a, &expected);
    assert!(walk(&b.store).iter().all(|p| !p.ends_with("big.dat")), "big's output ({big_dat}) was fetched");

    // Later runs agree: small is in the store, its build inputs still are not needed.
    let again = b.build_json(&[set.to_str().unwrap(), "--package", "small", "--no-substitute"]);
    assert_exit(&again.1, 0);
    assert_eq!((summary(&again.0)["cached"].as_u64(), summary(&again.0)["not_needed"].as_u64()), (Some(1), Some(others)));
}

#[test]
fn nginx_webdav_cache_round_trip() {
    let (a, set, expected) = machine_a();
    let (key, public) = keygen(&a, "ci-1");
    let nginx = Nginx::start(&a.path("nginx"));
    let pushed = push(&a, &key, &nginx.url, &["--jobs", "3"]);
    assert_eq!(pushed["objects_uploaded"], expected.len());
    assert_all_substituted(&nginx.url, &set, &public, &expected);
}

#[test]
fn forge_serve_signs_the_store_and_accepts_uploads_only_with_its_token() {
    let (a, set, expected) = machine_a();
    let (key, public) = keygen(&a, "server");
    let server = Serve::start(&a, &["--key", key.to_str().unwrap(), "--token", "s3cret"]);
    assert_all_substituted(&server.url, &set, &public, &expected);

    // A second machine pushes its own signed realisations to the server.
    let (c, _, _) = machine_a();
    let (key_c, public_c) = keygen(&c, "laptop");
    let refused = c.forge(&["push", "--to", &server.url, "--key", key_c.to_str().unwrap()]);
    assert_exit(&refused, 1);
    assert!(stderr(&refused).contains("401"), "{}", stderr(&refused));
    let pushed = push(&c, &key_c, &server.url, &["--token", "s3cret"]);
    assert_eq!(pushed["realisations_uploaded"], expected.len());
    assert_all_substituted(&server.url, &set, &public_c, &expected);
}

#[test]
fn tampered_archives_forged_and_untrusted_signatures_are_refused() {
    let (a, set, expected) = machine_a();
    let (key, public) = keygen(&a, "ci-1");
    let (_, other_public) = keygen(&a, "ci-2");
    let cache = a.path("cache");
    let url = format!("file://{}", cache.display());
    push(&a, &key, &url, &[]);

    // Untrusted: signed by ci-1, but B trusts only ci-2.
    let b = TestEnv::with_seed_sources();
    let (events, out) = substitute_build(&b, &set, &url, &other_public);
    assert_exit(&out, 0);
    assert_eq!(summary(&events)["substituted"], 0);
    assert_eq!(outs(&events), expected, "built locally instead");

    // Tampered blob: B refuses it, builds big locally, registers nothing bad.
    let blob = cache.join(format!("blobs/{}.zst", big_dat_hash(&a, &expected)));
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    write_over(&blob, &bytes);
    let b = TestEnv::with_seed_sources();
    let (events, out) = substitute_build(&b, &set, &url, &public);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("cannot substitute big"), "{}", stderr(&out));
    assert_eq!(event_of(&events, "big")["event"], "built");
    assert_eq!(outs(&events), expected);
    assert_exit(&b.forge(&["verify"]), 0);

    // Forged: the realisation of `small` now claims another out hash; its signature fails.
    let small_drv = drv_of(&events, "small");
    let doc_path = cache.join(format!("realisations/{small_drv}/ci-1.json"));
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let big_out = &expected.iter().find(|(n, _)| n == "big").unwrap().1;
    let small_out = &expected.iter().find(|(n, _)| n == "small").unwrap().1;
    write_over(&doc_path, doc.replace(small_out.as_str(), big_out).as_bytes());
    let b = TestEnv::with_seed_sources();
    let (events, out) = substitute_build(&b, &set, &url, &public);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("does not match its content"), "{}", stderr(&out));
    assert_eq!(event_of(&events, "small")["event"], "built");
    assert_eq!(outs(&events), expected);
}

#[test]
fn verify_finds_corrupt_cache_entries_and_repairs_them_from_the_store() {
    let (a, _set, expected) = machine_a();
    let (key, public) = keygen(&a, "ci-1");
    let cache = a.path("cache");
    let url = format!("file://{}", cache.display());
    push(&a, &key, &url, &[]);
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "--json", "--cache", &url, "--trusted-key", &public];
        args.extend_from_slice(extra);
        let out = a.forge(&args);
        (json_lines(&out.stdout).pop().expect("report"), out)
    };
    let (clean, out) = verify(&[]);
    assert_exit(&out, 0);
    assert_eq!((clean["objects_checked"].as_u64(), clean["clean"].as_bool()), (Some(expected.len() as u64), Some(true)));

    let blob = cache.join(format!("blobs/{}.zst", big_dat_hash(&a, &expected)));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes.truncate(bytes.len() / 2);
    write_over(&blob, &bytes);
    let some_realisation = walk(&cache.join("realisations"))[0].clone();
    let doc = std::fs::read_to_string(&some_realisation).unwrap();
    write_over(&some_realisation, doc.replace("\"name\": \"", "\"name\": \"x").as_bytes());

    let (broken, out) = verify(&[]);
    assert_exit(&out, 1);
    assert_eq!(broken["problems"].as_array().unwrap().len(), 2, "{broken}");
    let (repaired, out) = verify(&["--repair"]);
    assert_exit(&out, 0);
    assert_eq!(repaired["repaired"].as_array().unwrap().len(), 1, "{repaired}");
    assert_eq!(repaired["removed"].as_array().unwrap().len(), 1, "{repaired}");
    let (again, out) = verify(&[]);
    assert_exit(&out, 0);
    assert_eq!(again["clean"], true);
}

#[test]
fn an_output_already_in_the_store_is_not_downloaded_again() {
    let (a, set, expected) = machine_a();
    let (key, public) = keygen(&a, "ci-1");
    let cache = a.path("cache");
    let url = format!("file://{}", cache.display());
    push(&a, &key, &url, &[]);
    // Machine B built the same `big` from a recipe that differs only in a comment: another drv
    // hash, the same out hash.
    let b = TestEnv::with_seed_sources();
    let set_b = write_set(&b);
    let recipe = std::fs::read_to_string(b.path("pkgs/big.toml")).unwrap();
    std::fs::write(b.path("pkgs/big.toml"), recipe.replace("mkdir -p", "# same output\nmkdir -p")).unwrap();
    assert_exit(&b.build_json(&[set_b.to_str().unwrap(), "-p", "big"]).1, 0);
    // Without the cache's copy of big's files, only the fact can be substituted.
    let big_out = &expected.iter().find(|(n, _)| n == "big").unwrap().1;
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.join(format!("objects/{big_out}.json"))).unwrap()).unwrap();
    std::fs::remove_file(cache.join(format!("archives/{}.tar.zst", info["archive"]["blake3"].as_str().unwrap()))).unwrap();
    std::fs::remove_file(cache.join(format!("blobs/{}.zst", big_dat_hash(&a, &expected)))).unwrap();
    let (events, out) = substitute_build(&b, &set, &url, &public);
    assert_exit(&out, 0);
    assert_eq!(event_of(&events, "big")["event"], "substituted", "{}", stderr(&out));
    assert_eq!(summary(&events)["built"], 0);
    assert_eq!(outs(&events), expected);
}

#[test]
fn a_cache_that_is_down_or_answers_garbage_means_a_local_build() {
    let (_a, set, expected) = machine_a();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let garbage = TestEnv::empty();
    std::fs::create_dir_all(garbage.path("cache")).unwrap();
    std::fs::write(garbage.path("cache/forge-cache.json"), "{not json").unwrap();
    let public = keygen(&garbage, "k").1;
    for url in [format!("http://{closed}/"), format!("file://{}", garbage.path("cache").display())] {
        let b = TestEnv::with_seed_sources();
        let (events, out) = substitute_build(&b, &set, &url, &public);
        assert_exit(&out, 0);
        assert!(stderr(&out).contains(&format!("substituter {url} skipped")), "{}", stderr(&out));
        assert_eq!(outs(&events), expected);
    }
}

#[test]
fn negative_answers_are_remembered_until_refresh() {
    let (a, set, _) = machine_a();
    let (key, public) = keygen(&a, "ci-1");
    let url = format!("file://{}", a.path("cache").display());
    push(&a, &key, &url, &[set.to_str().unwrap(), "--package", "seed"]);
    let b = TestEnv::empty();
    let status = |extra: &[&str]| -> Vec<(String, String)> {
        let mut args = vec!["show", "--json", set.to_str().unwrap(), "--substituter", &url, "--trusted-key", &public];
        args.extend_from_slice(extra);
        let out = b.forge(&args);
        assert_exit(&out, 0);
        let mut v: Vec<_> = json_lines(&out.stdout)
            .iter()
            .map(|n| (n["name"].as_str().unwrap().to_string(), n["status"].as_str().unwrap().to_string()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(status(&[])[0], ("big".to_string(), "to build".to_string()));
    push(&a, &key, &url, &[]);
    assert_eq!(status(&[])[0].1, "to build", "the miss is remembered for negative-ttl");
    assert_eq!(status(&["--refresh"])[0].1, "substitutable");
}

#[test]
fn two_machines_pushing_to_one_cache_at_once() {
    let (a, set, expected) = machine_a();
    let (c, _, _) = machine_a();
    let (key_a, public_a) = keygen(&a, "a");
    let (key_c, public_c) = keygen(&c, "c");
    let url = format!("file://{}", a.path("cache").display());
    std::thread::scope(|s| {
        let pa = s.spawn(|| push(&a, &key_a, &url, &["--jobs", "2"]));
        let pc = s.spawn(|| push(&c, &key_c, &url, &["--jobs", "2"]));
        pa.join().unwrap();
        pc.join().unwrap();
    });
    assert_all_substituted(&url, &set, &public_a, &expected);
    assert_all_substituted(&url, &set, &public_c, &expected);
    let leftovers = walk(&a.path("cache")).into_iter().filter(|p| p.to_string_lossy().contains(".tmp-")).count();
    assert_eq!(leftovers, 0);
}

// ---- helpers ----------------------------------------------------------------------------

fn drv_of(events: &[serde_json::Value], name: &str) -> String {
    event_of(events, name)["drv"].as_str().unwrap().to_string()
}

/// The content hash of big's lib/big.dat in env's store: the name of its blob.
fn big_dat_hash(env: &TestEnv, outs: &[(String, String)]) -> String {
    let big = &outs.iter().find(|(n, _)| n == "big").expect("big built").1;
    let file = env.store.join("objects").join(big).join("lib/big.dat");
    forge::cache::archive::hash_file(&file).expect("hash big.dat").to_hex()
}

fn write_over(path: &Path, bytes: &[u8]) {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, bytes).unwrap();
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// nginx serving a directory with WebDAV PUT on loopback, as teams serve Bazel caches.
struct Nginx {
    child: Child,
    url: String,
}

impl Nginx {
    fn start(prefix: &Path) -> Nginx {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| Path::new(p).exists()).expect(
            "nginx is needed for this test: apt-get install nginx-light (.ci/run installs it)",
        );
        let root = prefix.join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(prefix.join("tmp")).unwrap();
        let port = free_port();
        let conf = prefix.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                r#"
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {p}/tmp;
    proxy_temp_path {p}/tmp; fastcgi_temp_path {p}/tmp; uwsgi_temp_path {p}/tmp; scgi_temp_path {p}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        client_max_body_size 0;
        dav_methods PUT;
        create_full_put_path on;
        dav_access user:rw group:r all:r;
    }}
}}
"#,
                p = prefix.display(),
                root = root.display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .args(["-p", prefix.to_str().unwrap(), "-c", conf.to_str().unwrap(), "-g", "daemon off; master_process off; user root;"])
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        wait_for_port(port);
        Nginx { child, url: format!("http://127.0.0.1:{port}/") }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `forge serve` on a free port.
fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("nothing listens on port {port}");
}
