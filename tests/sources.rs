//! Sources through the real binary: `forge fetch`, `forge source add`, `forge prefetch` and
//! overlays, against a local HTTP server on 127.0.0.1 (never the internet).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::*;
use forge::hash::Checksum;
use forge::store::Store;

/// A tiny HTTP server: fixed routes (404 otherwise), recording every path requested.
struct Server {
    base: String,
    hits: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(routes: &[(&str, &[u8])]) -> Server {
        let routes: HashMap<String, Vec<u8>> = routes.iter().map(|(p, b)| (p.to_string(), b.to_vec())).collect();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let log = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                log.lock().unwrap().push(path.clone());
                let (status, body) = match routes.get(&path) {
                    Some(body) => ("200 OK", body.clone()),
                    None => ("404 Not Found", b"not found".to_vec()),
                };
                let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        Server { base, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().iter().filter(|p| *p == path).count()
    }
}

fn sha256(bytes: &[u8]) -> Checksum {
    Checksum::Sha256([0; 32]).compute_like(bytes)
}

fn md5(bytes: &[u8]) -> Checksum {
    Checksum::Md5([0; 16]).compute_like(bytes)
}

/// A recipe with the given `[[source]]` tables and a trivial build.
fn recipe(name: &str, sources: &str) -> String {
    format!("[package]\nname = \"{name}\"\nversion = \"1\"\n\n{sources}\n[build]\nscript = 'true'\n")
}

fn has_source(env: &TestEnv, c: &Checksum) -> bool {
    Store::open(&env.store).unwrap().has_source(c)
}

#[test]
fn fetch_stores_verified_sources_once_under_every_checksum() {
    let body = b"alpha source bytes".repeat(1000);
    let server = Server::start(&[("/alpha-1.tar.gz", &body)]);
    let env = TestEnv::empty();
    let sources = format!("[[source]]\nurl = \"{}\"\nsha256 = \"{}\"\n", server.url("/alpha-1.tar.gz"), sha256(&body).hex());
    let file = env.write("alpha.toml", &recipe("alpha", &sources));

    let out = env.forge(&["fetch", file.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("1 fetched"), "{}", stderr(&out));
    let blake3 = Checksum::Blake3(forge::hash::Digest::of(&body));
    for c in [sha256(&body), md5(&body), blake3] {
        assert!(has_source(&env, &c), "not stored under {c}");
    }
    let stored = Store::open(&env.store).unwrap().source_path(&sha256(&body));
    assert_eq!(std::fs::read(stored).unwrap(), body);

    // Present sources are not fetched again.
    let out = env.forge(&["fetch", file.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("0 fetched (0 B), 1 already present"), "{}", stderr(&out));
    assert_eq!(server.hits("/alpha-1.tar.gz"), 1);
}

#[test]
fn a_checksum_mismatch_names_recipe_url_checksums_and_the_remedy_and_others_still_land() {
    let good = b"good bytes";
    let server = Server::start(&[("/good.tar.gz", good), ("/bad.tar.gz", b"tampered")]);
    let env = TestEnv::empty();
    let sources = format!(
        "[[source]]\nurl = \"{}\"\nsha256 = \"{}\"\n\n[[source]]\nurl = \"{}\"\nsha256 = \"{}\"\n",
        server.url("/good.tar.gz"),
        sha256(good).hex(),
        server.url("/bad.tar.gz"),
        sha256(b"original").hex()
    );
    let file = env.write("pkg.toml", &recipe("pkg", &sources));
    let out = env.forge(&["fetch", "-j", "2", file.to_str().unwrap()]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    // The second [[source]] starts on line 9 of the recipe.
    assert!(err.contains(&format!("{}:9:1: package pkg: cannot fetch bad.tar.gz", file.display())), "{err}");
    assert!(err.contains(&server.url("/bad.tar.gz")), "{err}");
    assert!(err.contains(&format!("expected sha256:{}", sha256(b"original").hex())), "{err}");
    assert!(err.contains(&format!("actual   sha256:{}", sha256(b"tampered").hex())), "{err}");
    assert!(err.contains(&format!("forge prefetch --repin {} -p pkg", file.display())), "{err}");
    assert!(err.contains("1 fetched"), "{err}");
    assert!(has_source(&env, &sha256(good)));
    assert!(!has_source(&env, &sha256(b"tampered")), "a mismatching download must not be stored");
}

#[test]
fn a_missing_file_falls_back_to_the_mirrors() {
    let body = b"mirrored";
    let server = Server::start(&[("/mirror/m.tar.gz", body)]);
    let env = TestEnv::empty();
    let sources = format!(
        "[[source]]\nurl = \"{}\"\nmirrors = [\"{}\"]\nsha256 = \"{}\"\n",
        server.url("/gone/m.tar.gz"),
        server.url("/mirror/m.tar.gz"),
        sha256(body).hex()
    );
    let file = env.write("m.toml", &recipe("m", &sources));
    let out = env.forge(&["fetch", file.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert_eq!((server.hits("/gone/m.tar.gz"), server.hits("/mirror/m.tar.gz")), (1, 1));
    assert!(has_source(&env, &sha256(body)));
}

#[test]
fn source_add_satisfies_recipes_pinned_by_sha256_or_md5_for_an_offline_build() {
    let env = TestEnv::with_seed_sources();
    let (one, two) = (b"first local source\n".as_slice(), b"second local source\n".as_slice());
    env.write("downloads/sub/one.txt", std::str::from_utf8(one).unwrap());
    env.write("downloads/two.txt", std::str::from_utf8(two).unwrap());
    // Port 1 on loopback: nothing listens, so only the store can provide these.
    let script = "mkdir -p $FORGE_OUT/share && cat $FORGE_SOURCES/* > $FORGE_OUT/share/$FORGE_NAME";
    let offline = |name: &str, file: &str, pin: &str| {
        format!(
            "[package]\nname = \"{name}\"\nversion = \"1\"\n[[source]]\nurl = \"http://127.0.0.1:1/{file}\"\n{pin}\n\
             [deps]\nbuild = [\"seed\"]\n[build]\nscript = '{script}'\n"
        )
    };
    env.write("pkgs/one.toml", &offline("one", "one.txt", &format!("sha256 = \"{}\"", sha256(one).hex())));
    env.write("pkgs/two.toml", &offline("two", "two.txt", &format!("md5 = \"{}\"", md5(two).hex())));
    let set = env.write("all.toml", &format!("[set]\nname = \"all\"\ninclude = [{}, \"pkgs/*.toml\"]\n", seed_includes()));

    let out = env.forge(&["source", "add", env.path("downloads").to_str().unwrap()]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains(&format!("sha256:{}", sha256(one).hex())), "{}", stdout(&out));
    assert!(stderr(&out).contains("2 added, 0 already present"), "{}", stderr(&out));
    let again = env.forge(&["source", "add", env.path("downloads/two.txt").to_str().unwrap()]);
    assert!(stderr(&again).contains("0 added, 1 already present"), "{}", stderr(&again));

    let (events, out) = env.build_json(&[set.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert_eq!(names_with(&events, "built"), ["busybox-static", "one", "seed", "two"]);
    let share = |name: &str| env.store.join("objects").join(event_of(&events, name)["out"].as_str().unwrap()).join("share").join(name);
    assert_eq!(std::fs::read(share("one")).unwrap(), one);
    assert_eq!(std::fs::read(share("two")).unwrap(), two);
}

#[test]
fn prefetch_pins_sha256_in_place_keeping_comments() {
    let (old, new) = (b"published tarball".as_slice(), b"unpinned tarball".as_slice());
    let server = Server::start(&[("/old-1.tar.gz", old), ("/new-1.tar.gz", new)]);
    let env = TestEnv::empty();
    let text = format!(
        "# Package comment stays.\n[package]\nname = \"pf\"\nversion = \"1\"\n\n\
         [[source]]\nurl = \"{}\"\n# md5 from the book\nmd5 = \"{}\"\n\n\
         [[source]]\nurl = \"{}\" # no pin yet\n\n[build]\nscript = 'true'\n",
        server.url("/old-1.tar.gz"),
        md5(old).hex(),
        server.url("/new-1.tar.gz"),
    );
    let file = env.write("pf.toml", &text);
    // The loader refuses the unpinned source.
    assert_exit(&env.forge(&["show", file.to_str().unwrap()]), 2);

    let out = env.forge(&["prefetch", file.to_str().unwrap()]);
    assert_exit(&out, 0);
    let after = std::fs::read_to_string(&file).unwrap();
    let expected = text
        .replace(
            &format!("md5 = \"{}\"", md5(old).hex()),
            &format!("sha256 = \"{}\"  # verified against the published md5 {}", sha256(old).hex(), md5(old).hex()),
        )
        .replace(
            "# no pin yet\n",
            &format!(
                "# no pin yet\nsha256 = \"{}\"  # from the download, not a published checksum: compare it with the publisher's\n",
                sha256(new).hex()
            ),
        );
    assert_eq!(after, expected);
    assert!(has_source(&env, &sha256(old)) && has_source(&env, &sha256(new)));
    // Now it loads, and fetching needs nothing.
    let out = env.forge(&["fetch", file.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("0 fetched (0 B), 2 already present"), "{}", stderr(&out));
}

#[test]
fn prefetch_refuses_a_download_that_contradicts_the_published_md5() {
    let server = Server::start(&[("/x-1.tar.gz", b"changed upstream")]);
    let env = TestEnv::empty();
    let published = md5(b"what the book checked");
    let text = recipe("x", &format!("[[source]]\nurl = \"{}\"\nmd5 = \"{}\"\n", server.url("/x-1.tar.gz"), published.hex()));
    let file = env.write("x.toml", &text);
    let out = env.forge(&["prefetch", file.to_str().unwrap()]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains(&format!("expected {published}")), "{err}");
    assert!(err.contains(&format!("actual   {}", md5(b"changed upstream"))), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text, "the recipe must be left alone");
    assert!(!has_source(&env, &sha256(b"changed upstream")));

    // Explicitly accepting the new file re-pins it.
    let out = env.forge(&["prefetch", "--repin", file.to_str().unwrap()]);
    assert_exit(&out, 0);
    let after = std::fs::read_to_string(&file).unwrap();
    assert!(after.contains(&format!("sha256 = \"{}\"", sha256(b"changed upstream").hex())), "{after}");
    assert!(!after.contains("md5"), "{after}");
}

fn show_node(env: &TestEnv, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["show", "--json"];
    full.extend_from_slice(args);
    let out = env.forge(&full);
    assert_exit(&out, 0);
    json_lines(&out.stdout).into_iter().find(|e| e["name"] == "ov").expect("node ov")
}

#[test]
fn an_overlay_changes_version_sources_and_the_drv_hash() {
    let env = TestEnv::empty();
    let sources = format!("[[source]]\nurl = \"http://127.0.0.1:1/ov-1.0.tar.gz\"\nsha256 = \"{}\"\n", sha256(b"1.0").hex());
    let file = env.write("ov.toml", &recipe("ov", &sources));
    env.write("patches/fix.patch", "--- a\n+++ b\n");
    let overlay = env.write(
        "overlay.toml",
        &format!(
            "# a local fork\n[[override]]\npackage = \"ov\"\nversion = \"2.0\"\n\
             sources = [{{ url = \"http://127.0.0.1:1/ov-2.0.tar.gz\", sha256 = \"{}\" }}]\n",
            sha256(b"2.0").hex()
        ),
    );
    let (file, overlay) = (file.to_str().unwrap(), overlay.to_str().unwrap());
    let plain = show_node(&env, &[file]);
    let over = show_node(&env, &["--overlay", overlay, file]);
    assert_eq!((plain["version"].as_str(), over["version"].as_str()), (Some("1"), Some("2.0")));
    assert_ne!(plain["drv"], over["drv"]);

    // The overlay's sources are what fetch looks for.
    let out = env.forge(&["fetch", "--overlay", overlay, file]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("ov-2.0.tar.gz"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("ov-1.0.tar.gz"), "{}", stderr(&out));

    // Patches (relative to the overlay) are added sources: another derivation again.
    let patched = env.write("patched.toml", "[[override]]\npackage = \"ov\"\npatches = [{ file = \"patches/fix.patch\" }]\n");
    let with_patch = show_node(&env, &["--overlay", patched.to_str().unwrap(), file]);
    assert_ne!(with_patch["drv"], plain["drv"]);
    assert_eq!(with_patch["version"], "1");
}

#[test]
fn overlay_errors_are_usage_errors_with_positions() {
    let env = TestEnv::empty();
    let sources = format!("[[source]]\nurl = \"http://127.0.0.1:1/a.tar.gz\"\nsha256 = \"{}\"\n", sha256(b"a").hex());
    let file = env.write("a.toml", &recipe("a", &sources));
    let file = file.to_str().unwrap();

    let typo = env.write("typo.toml", "[[override]]\npackage = \"a\"\nverison = \"2\"\n");
    let out = env.forge(&["show", "--overlay", typo.to_str().unwrap(), file]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains(&format!("{}:3:1", typo.display())), "{}", stderr(&out));
    assert!(stderr(&out).contains("verison"), "{}", stderr(&out));

    let unknown = env.write("unknown.toml", "[[override]]\npackage = \"b\"\nversion = \"2\"\n");
    let out = env.forge(&["build", "--overlay", unknown.to_str().unwrap(), file]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains(&format!("{}:2:11: override of package \"b\", which none of the loaded recipes defines", unknown.display())),
        "{}",
        stderr(&out)
    );
}
