//! Tests of the store API against real temporary stores.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Barrier};

use tempfile::TempDir;

use super::*;
use crate::tree;

fn new_store() -> (TempDir, Store) {
    let tmp = TempDir::new().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    (tmp, store)
}

fn d(s: &str) -> Digest {
    Digest::of(s.as_bytes())
}

/// A scratch dir holding `out/` with the given files (path, contents, mode).
fn output(store: &Store, files: &[(&str, &str, u32)]) -> (ScratchDir, PathBuf) {
    let scratch = store.scratch_dir("test").unwrap();
    let out = scratch.path().join("out");
    fs::create_dir(&out).unwrap();
    for (path, contents, mode) in files {
        let p = out.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, contents).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
    }
    (scratch, out)
}

/// Build an output in a scratch dir, register it and drop the scratch dir (as the executor
/// does; a live scratch dir holds the store lock shared and so keeps gc away).
fn register(store: &Store, files: &[(&str, &str, u32)], drv: &str, name: &str) -> Digest {
    let (_scratch, out_dir) = output(store, files);
    store.register_output(&out_dir, &reg(drv, name)).unwrap()
}

fn reg(drv: &str, name: &str) -> Registration {
    Registration { drv_hash: d(drv), resolved_key: d(&format!("{drv}-resolved")), name: name.into(), origin: Origin::Built, duration_ms: 42 }
}

const HELLO: &[(&str, &str, u32)] = &[("bin/hello", "#!/bin/sh\necho hello\n", 0o755), ("share/doc", "docs", 0o644)];

fn count(store: &Store, sql: &str) -> i64 {
    store.db.read("count", |c| c.query_row(sql, [], |r| r.get(0))).unwrap()
}

fn object_dirs(store: &Store) -> Vec<String> {
    store.object_dir_entries().unwrap().into_iter().map(|(n, _)| n).collect()
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
}

#[test]
fn open_creates_the_layout_and_reopens() {
    let (tmp, store) = new_store();
    let dir = tmp.path().join("store");
    assert_eq!(fs::read_to_string(dir.join("VERSION")).unwrap(), "forge-store-v1\n");
    for sub in ["objects", "sources", "logs", "tmp", "locks", "db.sqlite"] {
        assert!(dir.join(sub).exists(), "{sub} missing");
    }
    assert_eq!(store.dir(), dir);
    drop(store);
    Store::open(&dir).unwrap();
}

#[test]
fn open_refuses_unknown_versions_and_foreign_dirs() {
    let (tmp, store) = new_store();
    fs::write(store.dir().join("VERSION"), "forge-store-v9\n").unwrap();
    let err = Store::open(store.dir()).unwrap_err();
    assert!(matches!(&err, StoreError::UnknownVersion { found, .. } if found == "forge-store-v9"), "{err}");
    assert!(err.to_string().contains("forge-store-v9") && err.to_string().contains("forge-store-v1"));

    let foreign = tmp.path().join("home");
    fs::create_dir(&foreign).unwrap();
    fs::write(foreign.join("notes.txt"), "mine").unwrap();
    assert!(matches!(Store::open(&foreign), Err(StoreError::NotAStore { .. })));
    assert!(!foreign.join("VERSION").exists(), "a foreign directory must not be turned into a store");
}

#[test]
fn derivations_round_trip_and_conflicts_are_refused() {
    let (_tmp, store) = new_store();
    let h = d("drv");
    assert_eq!(store.derivation(&h).unwrap(), None);
    store.put_derivation(&h, "hello", "1.0", b"canonical").unwrap();
    store.put_derivation(&h, "hello", "1.0", b"canonical").unwrap();
    assert_eq!(store.derivation(&h).unwrap().as_deref(), Some(&b"canonical"[..]));
    let err = store.put_derivation(&h, "hello", "1.0", b"other").unwrap_err();
    assert!(matches!(err, StoreError::DerivationConflict { .. }));
    assert!(err.to_string().contains(&h.to_hex()));
}

#[test]
fn register_output_moves_a_read_only_normalized_object_into_place() {
    let (_tmp, store) = new_store();
    let (_scratch, out_dir) = output(&store, HELLO);
    let expected = {
        let copy = TempDir::new().unwrap();
        fs::create_dir_all(copy.path().join("bin")).unwrap();
        fs::create_dir_all(copy.path().join("share")).unwrap();
        fs::write(copy.path().join("bin/hello"), "#!/bin/sh\necho hello\n").unwrap();
        fs::set_permissions(copy.path().join("bin/hello"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(copy.path().join("share/doc"), "docs").unwrap();
        tree::hash_path(copy.path()).unwrap().digest
    };

    let out = store.register_output(&out_dir, &reg("drv1", "hello")).unwrap();
    assert_eq!(out, expected);
    assert!(!out_dir.exists(), "the output dir is moved, not copied");
    assert!(store.has_object(&out).unwrap());
    let obj = store.object_path(&out);
    assert_eq!(obj, store.dir().join("objects").join(out.to_hex()));
    for entry in walkdir::WalkDir::new(&obj) {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        assert_eq!(meta.mode() & 0o222, 0, "{} is writable", entry.path().display());
        assert_eq!(meta.mtime(), 1, "{} mtime", entry.path().display());
    }
    assert_eq!(fs::metadata(&obj).unwrap().mode() & 0o777, 0o555);
    assert_eq!(fs::metadata(obj.join("bin/hello")).unwrap().mode() & 0o777, 0o555);
    assert_eq!(fs::metadata(obj.join("share/doc")).unwrap().mode() & 0o777, 0o444);
    assert_eq!(tree::hash_path(&obj).unwrap().digest, out);

    let r = store.realisation_by_drv(&d("drv1")).unwrap().unwrap();
    assert_eq!((r.out_hash, r.name.as_str(), r.origin, r.duration_ms), (out, "hello", Origin::Built, 42));
    assert_eq!(store.realisation_by_resolved(&d("drv1-resolved")).unwrap(), Some(r));
    assert_eq!(store.realisation_by_drv(&d("other")).unwrap(), None);
    let (files, size): (i64, i64) = store
        .db
        .read("t", |c| c.query_row("SELECT files, size FROM objects", [], |r| Ok((r.get(0)?, r.get(1)?))))
        .unwrap();
    assert_eq!((files, size), (2, 21 + 4));
}

#[test]
fn same_content_twice_is_one_object_and_two_realisations() {
    let (_tmp, store) = new_store();
    let (_a, out_a) = output(&store, HELLO);
    let (_b, out_b) = output(&store, HELLO);
    let first = store.register_output(&out_a, &reg("drv-a", "a")).unwrap();
    let second = store.register_output(&out_b, &reg("drv-b", "b")).unwrap();
    assert_eq!(first, second);
    assert!(!out_b.exists(), "a redundant output is dropped");
    assert_eq!(object_dirs(&store), vec![first.to_hex()]);
    assert_eq!(count(&store, "SELECT count(*) FROM realisations"), 2);
    assert_eq!(store.realisation_by_drv(&d("drv-b")).unwrap().unwrap().out_hash, first);
}

#[test]
fn latest_realisation_wins_and_absent_objects_are_skipped() {
    let (_tmp, store) = new_store();
    let one = register(&store, &[("f", "one", 0o644)], "drv", "p");
    let two = register(&store, &[("f", "two", 0o644)], "drv", "p");
    assert_eq!(store.realisation_by_drv(&d("drv")).unwrap().unwrap().out_hash, two);

    // Remove the newer object through gc (root only the older one): the older one is found.
    store.set_root("keep", &[one]).unwrap();
    store.gc(false).unwrap();
    assert!(!store.has_object(&two).unwrap());
    assert_eq!(store.realisation_by_drv(&d("drv")).unwrap().unwrap().out_hash, one);
    assert_eq!(count(&store, "SELECT count(*) FROM realisations"), 2, "gc keeps history");
}

#[test]
fn add_realisation_records_cutoffs_for_present_objects_only() {
    let (_tmp, store) = new_store();
    let (_s, out_dir) = output(&store, HELLO);
    let out = store.register_output(&out_dir, &reg("drv1", "hello")).unwrap();
    let cutoff = Realisation {
        drv_hash: d("drv2"),
        resolved_key: d("drv1-resolved"),
        out_hash: out,
        name: "hello".into(),
        origin: Origin::Cutoff,
        created_at: now_secs(),
        duration_ms: 0,
    };
    store.add_realisation(&cutoff).unwrap();
    assert_eq!(store.realisation_by_drv(&d("drv2")).unwrap(), Some(cutoff.clone()));

    let missing = Realisation { out_hash: d("nothing"), ..cutoff };
    let err = store.add_realisation(&missing).unwrap_err();
    assert!(matches!(err, StoreError::ObjectNotPresent { .. }));
    assert!(err.to_string().contains(&d("nothing").to_hex()));
}

#[test]
fn register_output_rejects_files_and_special_files() {
    let (_tmp, store) = new_store();
    let scratch = store.scratch_dir("t").unwrap();
    let file = scratch.path().join("f");
    fs::write(&file, "x").unwrap();
    assert!(matches!(store.register_output(&file, &reg("d", "n")), Err(StoreError::NotADirectory { .. })));

    let out = scratch.path().join("out");
    fs::create_dir(&out).unwrap();
    nix::unistd::mkfifo(&out.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let err = store.register_output(&out, &reg("d", "n")).unwrap_err();
    assert!(matches!(err, StoreError::Tree(tree::TreeError::SpecialFile { .. })), "{err}");
    assert!(object_dirs(&store).is_empty());
}

#[test]
fn output_on_another_file_system_is_copied_in() {
    let shm = Path::new("/dev/shm");
    let (_tmp, store) = new_store();
    let elsewhere = TempDir::new_in(shm).unwrap();
    let out_dir = elsewhere.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    fs::write(out_dir.join("f"), "far away").unwrap();
    let expected = tree::hash_path(&out_dir).unwrap().digest;
    assert_ne!(fs::metadata(shm).unwrap().dev(), fs::metadata(store.dir()).unwrap().dev());

    let out = store.register_output(&out_dir, &reg("d", "far")).unwrap();
    assert_eq!(out, expected);
    assert!(store.has_object(&out).unwrap());
    assert_eq!(fs::read_to_string(store.object_path(&out).join("f")).unwrap(), "far away");
}

/// A crash between the rename into objects/ and the database commit, plus a half-written
/// scratch dir: the store stays valid and the next registration works.
#[test]
fn crash_leftovers_are_not_present_and_registration_recovers() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open(&dir).unwrap();
    let (scratch, out_dir) = output(&store, HELLO);
    tree::normalize_with(&out_dir, tree::RootMode::KeepWritable).unwrap();
    let out = tree::hash_path(&out_dir).unwrap().digest;
    fs::rename(&out_dir, store.object_path(&out)).unwrap(); // ... and the process dies here
    let half = scratch.keep();
    fs::write(half.join("partial.o"), "half").unwrap();
    drop(store);

    let store = Store::open(&dir).unwrap();
    assert!(!store.has_object(&out).unwrap(), "an uncommitted object is not present");
    let report = store.verify(false).unwrap();
    assert_eq!(report.orphans, vec![store.object_path(&out)]);

    assert_eq!(register(&store, HELLO, "drv", "hello"), out);
    assert!(store.has_object(&out).unwrap());
    assert_eq!(fs::metadata(store.object_path(&out)).unwrap().mode() & 0o777, 0o555, "reused orphan is sealed");
    assert!(store.verify(false).unwrap().is_clean());

    let gc = store.gc(false).unwrap();
    assert!(gc.removed_tmp.contains(&half), "{gc:?}");
    assert!(!half.exists());
}

#[test]
fn a_corrupt_orphan_is_replaced_by_the_next_registration() {
    let (_tmp, store) = new_store();
    let (_s, out_dir) = output(&store, HELLO);
    let out = tree::hash_path(&out_dir).unwrap().digest;
    let orphan = store.object_path(&out);
    fs::create_dir(&orphan).unwrap();
    fs::write(orphan.join("garbage"), "not the output").unwrap();

    assert_eq!(store.register_output(&out_dir, &reg("drv", "hello")).unwrap(), out);
    assert!(!orphan.join("garbage").exists());
    assert_eq!(tree::hash_path(&orphan).unwrap().digest, out);
    assert!(store.verify(false).unwrap().is_clean());
}

#[test]
fn concurrent_registrations_of_one_output_end_with_one_object() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    Store::open(&dir).unwrap();
    let n = 6;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (dir, barrier) = (dir.clone(), barrier.clone());
            std::thread::spawn(move || {
                // One Store per thread: its own connection and lock descriptors, like a process.
                let store = Store::open(&dir).unwrap();
                let (_s, out_dir) = output(&store, HELLO);
                barrier.wait();
                store.register_output(&out_dir, &reg(&format!("drv{i}"), "hello")).unwrap()
            })
        })
        .collect();
    let outs: Vec<Digest> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(outs.windows(2).all(|w| w[0] == w[1]));
    let store = Store::open(&dir).unwrap();
    assert_eq!(object_dirs(&store), vec![outs[0].to_hex()]);
    assert_eq!(count(&store, "SELECT count(*) FROM objects"), 1);
    assert_eq!(count(&store, "SELECT count(*) FROM realisations"), n as i64);
    assert!(store.verify(false).unwrap().is_clean());
}

#[test]
fn shared_store_across_threads() {
    let (_tmp, store) = new_store();
    let store = Arc::new(store);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                let contents = format!("thread {i}");
                let (_s, out_dir) = output(&store, &[("f", &contents, 0o644)]);
                store.register_output(&out_dir, &reg(&format!("drv{i}"), "t")).unwrap()
            })
        })
        .collect();
    for h in handles {
        assert!(store.has_object(&h.join().unwrap()).unwrap());
    }
    assert_eq!(object_dirs(&store).len(), 4);
}

#[test]
fn verify_detects_and_repairs_a_flipped_byte() {
    let (_tmp, store) = new_store();
    let out = register(&store, HELLO, "drv", "hello");
    assert!(store.verify(false).unwrap().is_clean());

    let file = store.object_path(&out).join("share/doc");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(&file).unwrap();
    bytes[0] ^= 1;
    fs::write(&file, bytes).unwrap();

    let report = store.verify(false).unwrap();
    assert_eq!(report.checked_objects, 1);
    assert_eq!(report.corrupt.len(), 1);
    let bad = &report.corrupt[0];
    assert_eq!(bad.expected, out);
    assert_eq!(bad.actual, Some(tree::hash_path(&store.object_path(&out)).unwrap().digest));
    assert_ne!(bad.actual, Some(out));
    assert!(store.has_object(&out).unwrap(), "verify without repair changes nothing");

    let repaired = store.verify(true).unwrap();
    assert_eq!(repaired.corrupt.len(), 1);
    assert!(!store.object_path(&out).exists());
    assert!(!store.has_object(&out).unwrap());
    assert_eq!(store.realisation_by_drv(&d("drv")).unwrap(), None, "the next build must rebuild it");
    assert!(store.verify(false).unwrap().is_clean());

    assert_eq!(register(&store, HELLO, "drv", "hello"), out);
    assert!(store.has_object(&out).unwrap());
}

#[test]
fn verify_reports_missing_objects_and_repair_marks_them_absent() {
    let (_tmp, store) = new_store();
    let out = register(&store, HELLO, "drv", "hello");
    layout::remove_tree(&store.object_path(&out)).unwrap();
    assert!(!store.has_object(&out).unwrap());
    assert_eq!(store.verify(false).unwrap().missing, vec![out]);
    assert_eq!(store.verify(true).unwrap().missing, vec![out]);
    assert_eq!(count(&store, "SELECT present FROM objects"), 0);
    assert!(store.verify(false).unwrap().is_clean());
}

#[test]
fn gc_keeps_rooted_objects_and_removes_the_rest() {
    let (_tmp, store) = new_store();
    let kept = register(&store, &[("f", "kept", 0o644)], "a", "a");
    let dropped = register(&store, &[("f", "dropped", 0o644)], "b", "b");
    store.set_root("profile", &[kept]).unwrap();
    let stale = store.scratch_dir("stale").unwrap().keep();

    let dry = store.gc(true).unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.removed_objects, vec![RemovedObject { out: dropped, bytes: 7 }]);
    assert_eq!(dry.kept_objects, 1);
    assert!(store.has_object(&dropped).unwrap() && stale.exists(), "dry run removes nothing");

    let report = store.gc(false).unwrap();
    assert_eq!(report.removed_objects, dry.removed_objects);
    assert_eq!(report.removed_tmp, vec![stale.clone()]);
    assert!(store.has_object(&kept).unwrap());
    assert!(!store.has_object(&dropped).unwrap());
    assert!(!store.object_path(&dropped).exists() && !stale.exists());
    assert_eq!(count(&store, "SELECT count(*) FROM realisations"), 2);

    // Replacing the root's set un-roots `kept`.
    store.set_root("profile", &[]).unwrap();
    assert_eq!(store.root("profile").unwrap(), vec![]);
    assert_eq!(store.gc(false).unwrap().removed_objects.len(), 1);
    assert!(object_dirs(&store).is_empty());
}

#[test]
fn gc_removes_unrooted_orphans() {
    let (_tmp, store) = new_store();
    let orphan = store.object_path(&d("orphan"));
    fs::create_dir(&orphan).unwrap();
    fs::write(orphan.join("x"), "x").unwrap();
    fs::set_permissions(&orphan, fs::Permissions::from_mode(0o555)).unwrap();
    let report = store.gc(false).unwrap();
    assert_eq!(report.removed_orphans, vec![orphan.clone()]);
    assert!(!orphan.exists());
}

#[test]
fn gc_and_repair_fail_fast_while_builds_hold_the_store_lock() {
    let (_tmp, store) = new_store();
    let build = store.build_lock().unwrap();
    let err = store.gc(false).unwrap_err();
    assert!(matches!(err, StoreError::Busy { .. }), "{err}");
    assert!(err.to_string().contains("store.lock"));
    assert!(matches!(store.verify(true), Err(StoreError::Busy { .. })));
    assert!(store.verify(false).is_ok(), "read-only verify runs alongside builds");
    drop(build);

    let scratch = store.scratch_dir("busy").unwrap();
    assert!(matches!(store.gc(false), Err(StoreError::Busy { .. })), "a live scratch dir blocks gc");
    drop(scratch);
    store.gc(false).unwrap();
}

#[test]
fn derivation_locks_exclude_other_holders() {
    let (_tmp, store) = new_store();
    let store = Arc::new(store);
    let h = d("drv");
    let held = store.lock_derivation(&h).unwrap();
    assert_eq!(held.drv_hash(), &h);
    assert!(store.try_lock_derivation(&h).unwrap().is_none());
    assert!(store.try_lock_derivation(&d("other")).unwrap().is_some());

    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = {
        let store = store.clone();
        std::thread::spawn(move || {
            let _lock = store.lock_derivation(&h).unwrap();
            tx.send(()).unwrap();
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(rx.try_recv().is_err(), "the blocking lock must wait for the holder");
    drop(held);
    rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    waiter.join().unwrap();
    assert!(store.try_lock_derivation(&h).unwrap().is_some());
}

#[test]
fn builds_are_recorded_and_latest_log_finds_the_newest() {
    let (_tmp, store) = new_store();
    assert_eq!(store.latest_log("gcc").unwrap(), None);
    let first = store.begin_build(&d("drv1"), "gcc").unwrap();
    assert_eq!(first.log_path, store.dir().join(format!("logs/{}-gcc.log", first.id)));
    fs::write(&first.log_path, "first").unwrap();
    store.finish_build(&first, &BuildOutcome::Failed { reason: "exit status 2".into() }).unwrap();
    let second = store.begin_build(&d("drv2"), "gcc").unwrap();
    assert!(second.id > first.id);
    store.finish_build(&second, &BuildOutcome::Succeeded { out: d("out") }).unwrap();
    store.begin_build(&d("drv3"), "other/../name").unwrap();

    assert_eq!(store.latest_log("gcc").unwrap(), Some(second.log_path.clone()));
    fs::remove_file(&second.log_path).unwrap();
    assert_eq!(store.latest_log("gcc").unwrap(), Some(first.log_path.clone()));
    let (status, reason): (String, String) = store
        .db
        .read("t", |c| c.query_row("SELECT status, reason FROM builds WHERE id = ?1", [first.id], |r| Ok((r.get(0)?, r.get(1)?))))
        .unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("failed", "exit status 2"));
    assert_eq!(count(&store, "SELECT count(*) FROM builds WHERE status = 'succeeded' AND finished_at IS NOT NULL"), 1);
    assert!(fs::read_dir(store.dir().join("logs")).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains('/')));
}

fn sha256_of(bytes: &[u8]) -> Checksum {
    Checksum::Sha256([0; 32]).compute_like(bytes)
}

#[test]
fn add_source_copies_outside_files_and_verifies_them() {
    let (tmp, store) = new_store();
    let file = tmp.path().join("hello-1.0.tar");
    fs::write(&file, "tarball").unwrap();
    let c = sha256_of(b"tarball");
    assert!(!store.has_source(&c));

    let path = store.add_source(&file, &c).unwrap();
    assert_eq!(path, store.dir().join(format!("sources/sha256-{}", c.hex())));
    assert_eq!(store.source_path(&c), path);
    assert!(store.has_source(&c));
    assert!(file.exists(), "a file outside the store is copied, not moved");
    assert_eq!(fs::read(&path).unwrap(), b"tarball");
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o444);
    assert_eq!(count(&store, "SELECT count(*) FROM sources"), 1);

    let wrong = sha256_of(b"something else");
    let err = store.add_source(&file, &wrong).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::ChecksumMismatch { .. }));
    assert!(msg.contains(&wrong.to_string()) && msg.contains(&c.to_string()) && msg.contains("hello-1.0.tar"), "{msg}");
    assert!(!store.has_source(&wrong));
}

#[test]
fn add_source_moves_files_from_tmp_and_handles_md5_and_tree_sources() {
    let (tmp, store) = new_store();
    let scratch = store.scratch_dir("download").unwrap();
    let dl = scratch.path().join("dl");
    fs::write(&dl, "downloaded").unwrap();
    let md5 = Checksum::Md5([0; 16]).compute_like(b"downloaded");
    let path = store.add_source(&dl, &md5).unwrap();
    assert!(!dl.exists(), "a file in the store's tmp/ is moved");
    assert_eq!(fs::read(path).unwrap(), b"downloaded");

    let dir = tmp.path().join("files");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("fix.patch"), "--- a\n+++ b\n").unwrap();
    let tree_sum = Checksum::Blake3(tree::hash_path(&dir).unwrap().digest);
    let path = store.add_source(&dir, &tree_sum).unwrap();
    assert_eq!(tree::hash_path(&path).unwrap().digest, tree::hash_path(&dir).unwrap().digest);
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o555);

    let not_a_file = store.add_source(&dir, &sha256_of(b"x")).unwrap_err();
    assert!(not_a_file.to_string().contains("regular file"), "{not_a_file}");
    assert!(store.verify(false).unwrap().is_clean());
    assert_eq!(store.verify(false).unwrap().checked_sources, 2);
}

#[test]
fn verify_detects_a_corrupt_source() {
    let (tmp, store) = new_store();
    let file = tmp.path().join("src");
    fs::write(&file, "source").unwrap();
    let c = sha256_of(b"source");
    let path = store.add_source(&file, &c).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&path, "sourcf").unwrap();
    let report = store.verify(false).unwrap();
    assert_eq!(report.corrupt_sources.len(), 1);
    assert_eq!(report.corrupt_sources[0].expected, Some(c.clone()));
    assert_eq!(report.corrupt_sources[0].actual, Some(sha256_of(b"sourcf")));
    store.verify(true).unwrap();
    assert!(!store.has_source(&c));
}

/// Child side of `kill_9_during_registrations_leaves_a_valid_store`: register outputs in a
/// loop until killed. Runs only when that test re-executes the test binary.
#[test]
#[ignore = "helper process for kill_9_during_registrations_leaves_a_valid_store"]
fn crash_child_registers_forever() {
    let Some(dir) = std::env::var_os("FORGE_STORE_CRASH_CHILD") else { return };
    let store = Store::open(Path::new(&dir)).unwrap();
    for i in 0.. {
        let scratch = store.scratch_dir("child").unwrap();
        let out = scratch.path().join("out");
        for j in 0..200 {
            let p = out.join(format!("d{}/f{j}", j % 7));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, format!("output {i} file {j}").repeat(50)).unwrap();
        }
        store.register_output(&out, &reg(&format!("drv{i}"), "crashy")).unwrap();
    }
}

/// kill -9 a process at arbitrary instants while it registers outputs: afterwards every
/// present object is complete and valid, and leftovers are only orphans and tmp entries.
#[test]
fn kill_9_during_registrations_leaves_a_valid_store() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    Store::open(&dir).unwrap();
    for delay_ms in [150, 260, 370, 480] {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "store::tests::crash_child_registers_forever", "--ignored", "--nocapture", "--test-threads=1"])
            .env("FORGE_STORE_CRASH_CHILD", &dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let store = Store::open(&dir).unwrap();
        let report = store.verify(false).unwrap();
        assert!(report.corrupt.is_empty() && report.missing.is_empty(), "after kill at {delay_ms} ms: {report:?}");
        for (hex, _) in store.db.read("t", db::present_objects).unwrap() {
            let out: Digest = hex.parse().unwrap();
            assert_eq!(fs::metadata(store.object_path(&out)).unwrap().mode() & 0o777, 0o555);
        }
        // Registering again works whatever state the kill left, and cleaning up leaves it clean.
        register(&store, HELLO, &format!("after-{delay_ms}"), "hello");
        store.gc(false).unwrap();
        assert!(store.verify(false).unwrap().is_clean());
    }
    let store = Store::open(&dir).unwrap();
    assert!(count(&store, "SELECT count(*) FROM realisations WHERE name = 'crashy'") > 0, "the child never registered anything");
}
