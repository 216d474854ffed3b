//! Hostile caches: an honest cache of one workload, then one tampered copy per variant, each
//! offered to a fresh store that trusts the honest signer. A safe outcome: the build succeeds,
//! every out hash is the honest one, the store verifies clean, its disk use stays near the
//! honest run's, and nothing appears outside the store.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::run::{self, Forge, Rng, Workload};
use crate::Figures;

/// What a variant may exceed the honest substitution's disk use by.
const DISK_SLACK: u64 = 64 << 20;
/// Bombs: far more than the object declares, far less than the machine's disk.
const BOMB: u64 = 2 << 30;

pub struct Honest {
    work: PathBuf,
    base: PathBuf,
    cache: PathBuf,
    set: String,
    public: String,
    expected: BTreeMap<String, String>,
    drv: BTreeMap<String, String>,
    peak: u64,
}

impl Honest {
    /// Build one workload, push it (with the seeds) to a cache of its own, and measure what an
    /// honest substitution of it costs in disk.
    pub fn prepare(forge: &Forge, work: &Path, base: &Path, key: &Path, public: &str, rng: &mut Rng) -> Result<Honest, String> {
        let store = work.join("hostile-builder");
        forge.add_sources_from(base, &store)?;
        let w = Workload::write(work, rng.salt())?;
        let out = forge.run_ok(&store, &["build", "--json", &w.set_str()])?;
        let expected = run::outs(&out.stdout);
        let drv = run::json_lines(&out.stdout)
            .into_iter()
            .filter_map(|e| Some((e["name"].as_str()?.to_string(), e["drv"].as_str()?.to_string())))
            .collect();
        let cache = work.join("hostile-honest");
        forge.run_ok(&store, &["push", "--json", "--to", &format!("file://{}", cache.display()), "--key", &key.to_string_lossy()])?;
        let mut honest = Honest { work: work.to_path_buf(), base: base.to_path_buf(), cache, set: w.set_str(), public: public.to_string(), expected, drv, peak: 0 };
        let (out, peak) = honest.substitute(forge, &honest.cache.clone(), public, "honest")?;
        let substituted = run::summary(&out)["substituted"].as_u64().unwrap_or(0);
        if !out.status.success() || run::outs(&out.stdout) != honest.expected || substituted != honest.expected.len() as u64 {
            return Err(format!("the honest cache did not substitute everything ({substituted} of {}): {}", honest.expected.len(), run::stderr_tail(&out)));
        }
        honest.peak = peak;
        Ok(honest)
    }

    /// A fresh store builds the workload from `cache`; returns forge's output and the store's
    /// peak disk use, sampled while it ran.
    fn substitute(&self, forge: &Forge, cache: &Path, trusted: &str, tag: &str) -> Result<(std::process::Output, u64), String> {
        let store = self.client_store(tag);
        let _ = fs::remove_dir_all(&store);
        forge.add_sources_from(&self.base, &store)?;
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let sampler = {
            let (stop, peak, store) = (stop.clone(), peak.clone(), store.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(run::disk_use(&store), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let args = ["build", "--json", &self.set, "--substituter", &format!("file://{}", cache.display()), "--trusted-key", trusted];
        let out = forge.run_args(&store, &args.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        stop.store(true, Ordering::Relaxed);
        sampler.join().map_err(|_| "disk sampler panicked")?;
        Ok((out?, peak.load(Ordering::Relaxed)))
    }

    fn client_store(&self, tag: &str) -> PathBuf {
        self.work.join(format!("hostile-client-{tag}"))
    }
}

/// The tampered copy of the honest cache a variant works on.
struct Copy<'a> {
    root: PathBuf,
    honest: &'a Honest,
    /// A file name that must never appear on the host (escape attempts write it).
    escape: String,
}

impl Copy<'_> {
    fn out(&self, name: &str) -> &str {
        &self.honest.expected[name]
    }
    fn info_path(&self, name: &str) -> PathBuf {
        self.root.join(format!("objects/{}.json", self.out(name)))
    }
    fn info(&self, name: &str) -> Result<Value, String> {
        serde_json::from_slice(&fs::read(self.info_path(name)).map_err(|e| e.to_string())?).map_err(|e| e.to_string())
    }
    fn set_info(&self, name: &str, info: &Value) -> Result<(), String> {
        fs::write(self.info_path(name), serde_json::to_vec(info).map_err(|e| e.to_string())?).map_err(|e| e.to_string())
    }
    fn edit_info(&self, name: &str, edit: impl FnOnce(&mut Value)) -> Result<(), String> {
        let mut info = self.info(name)?;
        edit(&mut info);
        self.set_info(name, &info)
    }
    fn archive(&self, name: &str) -> Result<PathBuf, String> {
        let info = self.info(name)?;
        Ok(self.root.join(format!("archives/{}.tar.zst", info["archive"]["blake3"].as_str().ok_or("no archive")?)))
    }
    fn blob(&self, name: &str) -> Result<PathBuf, String> {
        let info = self.info(name)?;
        Ok(self.root.join(format!("blobs/{}.zst", info["blobs"][0]["blake3"].as_str().ok_or("no blob")?)))
    }
    fn realisation(&self, name: &str) -> Result<PathBuf, String> {
        let dir = self.root.join(format!("realisations/{}", self.honest.drv[name]));
        let first = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?.next().ok_or("no realisation")?;
        Ok(first.map_err(|e| e.to_string())?.path())
    }

    /// Re-pack `name`'s archive with its entries and then `extra` ones, store it under its
    /// new hash and point the object info at it: the tampering a cache operator can do, since
    /// object infos are unsigned.
    fn rewrite_archive(&self, name: &str, extra: Vec<Raw>) -> Result<(), String> {
        let old = fs::read(self.archive(name)?).map_err(|e| e.to_string())?;
        let plain = zstd::decode_all(&old[..]).map_err(|e| e.to_string())?;
        let mut builder = tar::Builder::new(Vec::new());
        let mut reader = tar::Archive::new(&plain[..]);
        for entry in reader.entries().map_err(|e| e.to_string())? {
            let mut entry = entry.map_err(|e| e.to_string())?;
            let header = entry.header().clone();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(|e| e.to_string())?;
            builder.append(&header, &data[..]).map_err(|e| e.to_string())?;
        }
        for raw in extra {
            let mut header = tar::Header::new_gnu();
            header.as_old_mut().name[..raw.name.len()].copy_from_slice(raw.name.as_bytes());
            if let Some(link) = raw.link {
                header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            header.set_entry_type(raw.kind);
            header.set_mode(0o444);
            header.set_size(raw.size);
            header.set_device_major(1).ok();
            header.set_device_minor(3).ok();
            header.set_cksum();
            builder.append(&header, io::repeat(raw.fill).take(raw.size)).map_err(|e| e.to_string())?;
        }
        let tar = builder.into_inner().map_err(|e| e.to_string())?;
        let compressed = zstd::encode_all(&tar[..], 1).map_err(|e| e.to_string())?;
        let hash = blake3::hash(&compressed).to_hex().to_string();
        fs::write(self.root.join(format!("archives/{hash}.tar.zst")), &compressed).map_err(|e| e.to_string())?;
        self.edit_info(name, |info| {
            info["archive"]["blake3"] = hash.into();
            info["archive"]["size"] = (compressed.len() as u64).into();
        })
    }
}

/// A tar entry written with raw name bytes (the tar crate refuses `..` through its API).
struct Raw {
    name: String,
    link: Option<String>,
    kind: tar::EntryType,
    size: u64,
    fill: u8,
}

fn raw(name: &str, kind: tar::EntryType) -> Raw {
    Raw { name: name.to_string(), link: None, kind, size: 0, fill: 0 }
}

fn file_raw(name: &str, size: u64) -> Raw {
    Raw { size, fill: b'x', ..raw(name, tar::EntryType::Regular) }
}

fn flip_byte(path: &Path) -> Result<(), String> {
    let mut bytes = fs::read(path).map_err(|e| e.to_string())?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    write_over(path, &bytes)
}

fn write_over(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let _ = fs::remove_file(path); // cache files are read-only
    fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn truncate_half(path: &Path) -> Result<(), String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    write_over(path, &bytes[..bytes.len() / 2])
}

fn zstd_of_zeros(size: u64) -> Result<Vec<u8>, String> {
    let mut encoder = zstd::Encoder::new(Vec::new(), 1).map_err(|e| e.to_string())?;
    io::copy(&mut io::repeat(0).take(size), &mut encoder).map_err(|e| e.to_string())?;
    encoder.finish().map_err(|e| e.to_string())
}

fn remove(path: &Path) -> Result<(), String> {
    fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

type Tamper = fn(&Copy) -> Result<(), String>;

/// (what the variant does, whether the client trusts only another key, the tampering).
const VARIANTS: &[(&str, bool, Tamper)] = &[
    ("archive: one byte flipped", false, |c| flip_byte(&c.archive("a")?)),
    ("archive: truncated to half", false, |c| truncate_half(&c.archive("a")?)),
    ("archive: empty", false, |c| write_over(&c.archive("a")?, b"")),
    ("archive: another object's archive under its name", false, |c| {
        let other = fs::read(c.archive("b")?).map_err(|e| e.to_string())?;
        write_over(&c.archive("a")?, &other)
    }),
    ("archive: missing", false, |c| remove(&c.archive("a")?)),
    ("archive: compressed size understated", false, |c| c.edit_info("a", |i| i["archive"]["size"] = 100.into())),
    ("archive: an extra file (info re-pointed)", false, |c| c.rewrite_archive("a", vec![file_raw("extra", 10)])),
    ("archive: entry ../../ESCAPE", false, |c| c.rewrite_archive("a", vec![file_raw(&format!("../../{}", c.escape), 10)])),
    ("archive: absolute entry /tmp/ESCAPE", false, |c| c.rewrite_archive("a", vec![file_raw(&format!("/tmp/{}", c.escape), 10)])),
    ("archive: symlink to /tmp, then a file through it", false, |c| {
        let link = Raw { link: Some("/tmp".into()), ..raw("zz-link", tar::EntryType::Symlink) };
        c.rewrite_archive("a", vec![link, file_raw(&format!("zz-link/{}", c.escape), 10)])
    }),
    ("archive: hard link to /etc/passwd", false, |c| {
        c.rewrite_archive("a", vec![Raw { link: Some("/etc/passwd".into()), ..raw("zz-passwd", tar::EntryType::Link) }])
    }),
    ("archive: character device 1,3", false, |c| c.rewrite_archive("a", vec![raw("zz-null", tar::EntryType::Char)])),
    ("archive: fifo", false, |c| c.rewrite_archive("a", vec![raw("zz-fifo", tar::EntryType::Fifo)])),
    ("archive: an entry twice", false, |c| c.rewrite_archive("a", vec![file_raw("a-1", 5)])),
    ("archive: 2 GiB entry of zeros (200 KB compressed)", false, |c| {
        c.rewrite_archive("a", vec![Raw { fill: 0, ..file_raw("zz-zeros", BOMB) }])
    }),
    ("blob: one byte flipped", false, |c| flip_byte(&c.blob("a")?)),
    ("blob: truncated to half", false, |c| truncate_half(&c.blob("a")?)),
    ("blob: 2 GiB of zeros under its name", false, |c| write_over(&c.blob("a")?, &zstd_of_zeros(BOMB)?)),
    ("blob: another valid stream of the same length", false, |c| {
        let size = c.info("a")?["blobs"][0]["size"].as_u64().ok_or("no blob size")?;
        let other = zstd::encode_all(&vec![b'z'; size as usize][..], 1).map_err(|e| e.to_string())?;
        write_over(&c.blob("a")?, &other)
    }),
    ("blob: missing", false, |c| remove(&c.blob("a")?)),
    ("object info: total size understated", false, |c| c.edit_info("a", |i| i["size"] = 10.into())),
    ("object info: file count understated", false, |c| c.edit_info("a", |i| i["files"] = 1.into())),
    ("object info: blob size understated", false, |c| c.edit_info("a", |i| i["blobs"][0]["size"] = 10.into())),
    ("object info: blob size 1 TiB", false, |c| c.edit_info("a", |i| i["blobs"][0]["size"] = (1u64 << 40).into())),
    ("object info: blob path ../../ESCAPE", false, |c| {
        let escape = format!("../../{}", c.escape);
        c.edit_info("a", |i| i["blobs"][0]["path"] = escape.into())
    }),
    ("object info: blob path /tmp/ESCAPE", false, |c| {
        let escape = format!("/tmp/{}", c.escape);
        c.edit_info("a", |i| i["blobs"][0]["path"] = escape.into())
    }),
    ("object info: unknown compression", false, |c| c.edit_info("a", |i| i["compression"] = "gzip".into())),
    ("object info: describes another object", false, |c| {
        let other = c.out("b").to_string();
        c.edit_info("a", |i| i["out"] = other.into())
    }),
    ("object info: not JSON", false, |c| write_over(&c.info_path("a"), b"{\"format\": \"forge-object-v1\", ")),
    ("object info: 64 MiB of whitespace", false, |c| write_over(&c.info_path("a"), &vec![b' '; 64 << 20])),
    ("object info: missing", false, |c| remove(&c.info_path("a"))),
    ("realisation: signature altered", false, |c| {
        let path = c.realisation("a")?;
        let mut doc: Value = serde_json::from_slice(&fs::read(&path).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        let sig = doc["signature"].as_str().ok_or("no signature")?.to_string();
        let flipped = if sig.starts_with('A') { sig.replacen('A', "B", 1) } else { format!("A{}", &sig[1..]) };
        doc["signature"] = flipped.into();
        write_over(&path, &serde_json::to_vec(&doc).map_err(|e| e.to_string())?)
    }),
    ("realisation: claims another object's out hash", false, |c| {
        let path = c.realisation("a")?;
        let text = fs::read_to_string(&path).map_err(|e| e.to_string())?;
        write_over(&path, text.replace(c.out("a"), c.out("b")).as_bytes())
    }),
    ("realisation: another package's name", false, |c| {
        let path = c.realisation("a")?;
        let text = fs::read_to_string(&path).map_err(|e| e.to_string())?;
        write_over(&path, text.replace("\"name\":\"a\"", "\"name\":\"b\"").replace("\"name\": \"a\"", "\"name\": \"b\"").as_bytes())
    }),
    ("realisation: b's, filed under a's derivation", false, |c| {
        let other = fs::read(c.realisation("b")?).map_err(|e| e.to_string())?;
        write_over(&c.realisation("a")?, &other)
    }),
    ("realisation: not JSON", false, |c| write_over(&c.realisation("a")?, b"\x00\x01 not json")),
    ("realisation: 64 MiB file", false, |c| write_over(&c.realisation("a")?, &vec![b'['; 64 << 20])),
    ("realisation: signed by a key the client does not trust", true, |_| Ok(())),
    ("cache: unknown format", false, |c| write_over(&c.root.join("forge-cache.json"), br#"{"format": "forge-cache-v9"}"#)),
];

/// Every variant once; updates the hostile figures.
pub fn run_all(verbose: bool, f: &mut Figures, forge: &Forge, honest: &Honest, untrusted: &str, round: usize) -> Result<(), String> {
    for (i, (what, untrusted_key, tamper)) in VARIANTS.iter().enumerate() {
        let tag = format!("r{round}-v{i}");
        let root = honest.work.join(format!("hostile-cache-{tag}"));
        copy_tree(&honest.cache, &root)?;
        let copy = Copy { root: root.clone(), honest, escape: format!("forge-soak-escape-{}-{tag}", std::process::id()) };
        tamper(&copy).map_err(|e| format!("preparing variant {what:?}: {e}"))?;
        let trusted = if *untrusted_key { untrusted } else { honest.public.as_str() };
        let (out, peak) = honest.substitute(forge, &root, trusted, &tag)?;
        f.hostile_variants += 1;
        let store = honest.client_store(&tag);

        let mut unsafe_because = Vec::new();
        if !out.status.success() {
            unsafe_because.push(format!("the build failed ({}): {}", out.status, run::stderr_tail(&out)));
        }
        let outs = run::outs(&out.stdout);
        if outs != honest.expected {
            unsafe_because.push(format!("out hashes differ from the honest ones: {outs:?}"));
        }
        let verify = forge.json(&store, &["verify", "--json"])?;
        if verify["clean"] != true {
            unsafe_because.push(format!("the store does not verify: {verify}"));
        }
        if run::half_registered(&store)? > 0 {
            unsafe_because.push("half-registered realisations".into());
        }
        let over = peak.saturating_sub(honest.peak);
        f.hostile_peak_over = f.hostile_peak_over.max(over);
        if over > DISK_SLACK {
            unsafe_because.push(format!("the store grew to {} ({} over the honest run)", forge::units::human_bytes(peak), forge::units::human_bytes(over)));
        }
        let escaped = escapes(&copy.escape, &store);
        if !escaped.is_empty() {
            unsafe_because.push(format!("files written outside the store: {escaped:?}"));
        }
        let a_event = run::json_lines(&out.stdout).into_iter().find(|e| e["name"] == "a" && e["out"].is_string());
        let refused = a_event.as_ref().is_some_and(|e| e["event"] == "built");
        if refused {
            f.hostile_refused += 1;
        }
        if verbose {
            let how = a_event.map(|e| e["event"].as_str().unwrap_or("?").to_string()).unwrap_or_else(|| "no event".into());
            println!("  hostile {what}: a {how}, peak {} {}", forge::units::human_bytes(peak), if unsafe_because.is_empty() { "safe" } else { "UNSAFE" });
        }
        if !unsafe_because.is_empty() {
            f.hostile_unsafe += 1;
            f.problem(format!("hostile cache variant {what:?}: {}", unsafe_because.join("; ")));
        }
        let _ = fs::remove_dir_all(&root);
        let _ = fs::remove_dir_all(&store);
    }
    Ok(())
}

/// Where a file named `name` exists: /tmp and anywhere in the client's store (`..` from an
/// unpack directory lands there).
fn escapes(name: &str, work: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = walkdir::WalkDir::new(work)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(name))
        .map(|e| e.path().to_path_buf())
        .collect();
    let tmp = Path::new("/tmp").join(name);
    if tmp.symlink_metadata().is_ok() {
        found.push(tmp);
    }
    found
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    let _ = fs::remove_dir_all(to);
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.map_err(|e| e.to_string())?;
        let dest = to.join(entry.path().strip_prefix(from).expect("walkdir stays under its root"));
        if entry.file_type().is_dir() {
            fs::create_dir_all(&dest).map_err(|e| e.to_string())?;
        } else {
            fs::copy(entry.path(), &dest).map_err(|e| format!("{}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}
