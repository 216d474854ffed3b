//! Atomic registration of outputs (`objects/`) and sources (`sources/`).
//!
//! An output is normalized and hashed where it was built (under `tmp/`), renamed into
//! `objects/<out>` (one rename on one file system: the directory appears complete or not at
//! all), sealed read-only, synced to disk, and only then recorded in the database in one
//! transaction together with its realisation. A crash before the commit leaves an orphan
//! directory that is not "present"; the next registration of the same hash re-verifies it.

use std::fs;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use md5::Digest as _;

use crate::hash::{Checksum, Digest};
use crate::tree::{self, RootMode, TreeSummary};

use super::layout::{remove_tree, ScratchDir};
use super::lock::{FileLock, Mode};
use super::{db, now_secs, Realisation, Registration, Store, StoreError};

/// How an object directory came to be in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// `out_dir` was moved into `objects/`.
    Moved,
    /// An identical object was already there; `out_dir` is redundant.
    Reused,
}

impl Store {
    /// Normalize `out_dir`, hash it, move it atomically to `objects/<out>`, and in one
    /// transaction record the object and the realisation. If the object already exists (same
    /// content built before), drop `out_dir` and just record the realisation. Returns the out
    /// hash. `out_dir` should be inside a [`Store::scratch_dir`] (on another file system it is
    /// copied); it is consumed in every case. Never returns before the object is on disk.
    pub fn register_output(&self, out_dir: &Path, reg: &Registration) -> Result<Digest, StoreError> {
        self.register(out_dir, Some(reg), None)
    }

    /// Register `out_dir` as an object that no derivation is known to give here: a `--check`
    /// round's differing output, or a cache's disputed one fetched by `forge audit`, kept for
    /// inspection. With `expected`, the tree must hash to it (as in
    /// [`Store::register_expected`]). Otherwise like [`Store::register_output`].
    pub fn register_unclaimed(&self, out_dir: &Path, expected: Option<&Digest>) -> Result<Digest, StoreError> {
        self.register(out_dir, None, expected)
    }

    /// Like [`Store::register_output`], but the tree must hash to `expected` (a download
    /// checked against its signed out hash). On a mismatch nothing is registered, `out_dir`
    /// is deleted, and the error names both hashes.
    pub fn register_expected(&self, out_dir: &Path, reg: &Registration, expected: &Digest) -> Result<Digest, StoreError> {
        self.register(out_dir, Some(reg), Some(expected))
    }

    fn register(&self, out_dir: &Path, reg: Option<&Registration>, expected: Option<&Digest>) -> Result<Digest, StoreError> {
        let meta = fs::symlink_metadata(out_dir).map_err(StoreError::io("stat", out_dir))?;
        if !meta.is_dir() {
            return Err(StoreError::NotADirectory { path: out_dir.to_path_buf() });
        }
        let _store_lock = self.shared_store_lock()?;
        // The root stays writable until after the rename (see tree::RootMode).
        tree::normalize_with(out_dir, RootMode::KeepWritable)?;
        let summary = tree::hash_path(out_dir)?;
        let out = summary.digest;
        if let Some(expected) = expected.filter(|e| **e != out) {
            remove_tree(out_dir)?;
            let name = reg.map(|r| r.name.clone()).unwrap_or_default();
            return Err(StoreError::OutMismatch { name, expected: *expected, actual: out });
        }

        // One registration of a given out hash at a time, across threads and processes.
        let _out_lock = FileLock::acquire(&self.lock_path(&format!("out-{}.lock", out.to_hex())), Mode::Exclusive)?;
        let placement = self.place_object(out_dir, &summary)?;

        let realisation = reg.map(|reg| Realisation {
            drv_hash: reg.drv_hash,
            resolved_key: reg.resolved_key,
            out_hash: out,
            name: reg.name.clone(),
            origin: reg.origin,
            created_at: now_secs(),
            duration_ms: reg.duration_ms,
        });
        self.db.write("register output", |tx| {
            db::upsert_object(tx, &out, summary.files, summary.bytes, now_secs())?;
            match &realisation {
                Some(r) => db::insert_realisation(tx, r, &self.host),
                None => Ok(()),
            }
        })?;
        if let Some(evidence) = realisation.as_ref().and_then(|r| self.build_evidence(r)) {
            self.attest(&[evidence])?;
        }
        if placement == Placement::Reused {
            remove_tree(out_dir)?;
        }
        Ok(out)
    }

    /// Put the (normalized, hashed) tree `out_dir` at `objects/<out>` unless an identical
    /// object is already there. Called with the out-hash lock held.
    fn place_object(&self, out_dir: &Path, summary: &TreeSummary) -> Result<Placement, StoreError> {
        let out = summary.digest;
        let dest = self.object_path(&out);
        if self.has_object(&out)? {
            return Ok(Placement::Reused);
        }
        if fs::symlink_metadata(&dest).is_ok() {
            // An orphan: renamed into place by a registration that crashed before committing,
            // or left behind by an interrupted gc. Reuse it only if it still hashes right.
            if self.orphan_is_valid(&dest, &out) {
                tree::seal_root_dir(&dest)?;
                sync_fs(&dest)?;
                return Ok(Placement::Reused);
            }
            self.evict(&dest)?;
        }
        let source = self.same_fs_copy(out_dir, summary)?;
        let from = source.as_ref().map_or(out_dir, |s| s.path());
        fs::rename(from, &dest).map_err(StoreError::io("move output into", &dest))?;
        tree::seal_root_dir(&dest)?;
        sync_fs(&dest)?;
        Ok(if source.is_some() { Placement::Reused } else { Placement::Moved })
    }

    fn orphan_is_valid(&self, dest: &Path, out: &Digest) -> bool {
        let renormalized = tree::normalize_with(dest, RootMode::KeepWritable);
        renormalized.is_ok() && tree::hash_path(dest).is_ok_and(|s| s.digest == *out)
    }

    /// Move a bad object directory out of `objects/` (atomically) and delete it. The caller
    /// holds the store lock (shared or exclusive), so the grave takes none of its own.
    pub(crate) fn evict(&self, path: &Path) -> Result<(), StoreError> {
        let grave = { self.claim_owner()?; ScratchDir::create(&self.tmp_dir(), "evicted", super::residue::process_token(), None)? };
        make_dir_writable(path)?;
        // Renaming a directory onto an empty one replaces it.
        fs::rename(path, grave.path()).map_err(StoreError::io("move out of the store", path))?;
        drop(grave); // removes it
        Ok(())
    }

    /// `out_dir` is renamed into place if it is on the store's file system; otherwise it is
    /// copied into a scratch dir first, and the copy is checked to hash the same.
    fn same_fs_copy(&self, out_dir: &Path, summary: &TreeSummary) -> Result<Option<ScratchDir>, StoreError> {
        if same_device(out_dir, &self.tmp_dir())? {
            return Ok(None);
        }
        let scratch = self.scratch_dir("copy")?;
        let copy = scratch.path().join("out");
        copy_tree(out_dir, &copy)?;
        tree::normalize_with(&copy, RootMode::KeepWritable)?;
        let copied = tree::hash_path(&copy)?;
        if copied.digest != summary.digest {
            return Err(StoreError::Io {
                op: "copy",
                path: out_dir.to_path_buf(),
                source: io::Error::other(format!("the copy hashes to {}, not {}: was it modified meanwhile?", copied.digest, summary.digest)),
            });
        }
        // Move the copy up so the scratch dir itself is the tree to rename.
        let dir = self.scratch_dir("copied")?;
        fs::rename(&copy, dir.path()).map_err(StoreError::io("move", &copy))?;
        Ok(Some(dir))
    }

    // ---- sources -------------------------------------------------------------------------

    /// Verify `file` against `c` and move it (if it is inside `STORE/tmp`) or copy it (from
    /// anywhere else) into `sources/` read-only. A `blake3` checksum is a tree hash and may name
    /// a directory; `sha256` and `md5` need a regular file. Returns the final path.
    pub fn add_source(&self, file: &Path, c: &Checksum) -> Result<PathBuf, StoreError> {
        let _store_lock = self.shared_store_lock()?;
        let scratch = self.scratch_dir("source")?;
        let staged = if self.is_in_tmp(file)? {
            file.to_path_buf()
        } else {
            let copy = scratch.path().join("source");
            copy_tree(file, &copy)?;
            copy
        };
        // The staged copy is what gets verified, so what lands in sources/ is what was checked.
        let (actual, size) = checksum_like(&staged, c)?;
        if actual != *c {
            return Err(StoreError::ChecksumMismatch { path: file.to_path_buf(), expected: c.clone(), actual });
        }
        tree::normalize_with(&staged, RootMode::KeepWritable)?;
        let dest = self.source_path(c);
        match fs::rename(&staged, &dest) {
            Ok(()) => {}
            // A directory source added concurrently by someone else: theirs is as good.
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) || e.kind() == io::ErrorKind::AlreadyExists => {
                remove_tree(&staged)?;
            }
            Err(e) => return Err(StoreError::Io { op: "move source into", path: dest, source: e }),
        }
        if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
            tree::seal_root_dir(&dest)?;
        }
        sync_fs(&self.dir.join(super::layout::SOURCES))?;
        self.db.write("record source", |tx| {
            tx.execute(
                "INSERT OR IGNORE INTO sources (checksum, size, added_at) VALUES (?1, ?2, ?3)",
                rusqlite::params![c.to_string(), size as i64, now_secs()],
            )
            .map(drop)
        })?;
        Ok(dest)
    }

    fn is_in_tmp(&self, path: &Path) -> Result<bool, StoreError> {
        let tmp = fs::canonicalize(self.tmp_dir()).map_err(StoreError::io("resolve", &self.tmp_dir()))?;
        let parent = path.parent().unwrap_or(path);
        let parent = fs::canonicalize(parent).map_err(StoreError::io("resolve", parent))?;
        Ok(parent.starts_with(tmp))
    }
}

/// Compute a checksum of the same algorithm as `like` over `path`, and the size hashed.
/// Files are streamed, never read whole into memory.
pub(crate) fn checksum_like(path: &Path, like: &Checksum) -> Result<(Checksum, u64), StoreError> {
    if let Checksum::Blake3(_) = like {
        let s = tree::hash_path(path)?;
        return Ok((Checksum::Blake3(s.digest), s.bytes));
    }
    let meta = fs::symlink_metadata(path).map_err(StoreError::io("stat", path))?;
    if !meta.is_file() {
        return Err(StoreError::Io {
            op: "checksum",
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, format!("a {} source must be a regular file", like.algorithm())),
        });
    }
    let mut file = fs::File::open(path).map_err(StoreError::io("open", path))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    let mut sha = sha2::Sha256::new();
    let mut md5 = md5::Md5::new();
    loop {
        let n = file.read(&mut buf).map_err(StoreError::io("read", path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        match like {
            Checksum::Sha256(_) => sha.update(&buf[..n]),
            _ => md5.update(&buf[..n]),
        }
    }
    let sum = match like {
        Checksum::Sha256(_) => Checksum::Sha256(sha.finalize().into()),
        _ => Checksum::Md5(md5.finalize().into()),
    };
    Ok((sum, size))
}

/// Copy a file, symlink or directory tree (modes kept; normalization follows anyway).
fn copy_tree(from: &Path, to: &Path) -> Result<(), StoreError> {
    let meta = fs::symlink_metadata(from).map_err(StoreError::io("stat", from))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(from).map_err(StoreError::io("read symlink", from))?;
        std::os::unix::fs::symlink(target, to).map_err(StoreError::io("create symlink", to))
    } else if ft.is_file() {
        fs::copy(from, to).map(drop).map_err(StoreError::io("copy to", to))
    } else if ft.is_dir() {
        fs::create_dir(to).map_err(StoreError::io("create", to))?;
        for entry in fs::read_dir(from).map_err(StoreError::io("read directory", from))? {
            let entry = entry.map_err(StoreError::io("read directory", from))?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        // Let the tree module produce its usual error naming the special file.
        tree::hash_path(from).map(drop).map_err(StoreError::from)
    }
}

fn same_device(a: &Path, b: &Path) -> Result<bool, StoreError> {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).map_err(StoreError::io("stat", p));
    Ok(dev(a)? == dev(b)?)
}

fn make_dir_writable(path: &Path) -> Result<(), StoreError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::set_permissions(path, fs::Permissions::from_mode(0o755))
            .map_err(StoreError::io("make writable", path)),
        _ => Ok(()),
    }
}

/// Flush the file system holding `path`, so that an object is on disk before the database
/// row that declares it present (a power cut must not leave a row pointing at lost data).
fn sync_fs(path: &Path) -> Result<(), StoreError> {
    let f = fs::File::open(path).map_err(StoreError::io("open", path))?;
    // SAFETY: the descriptor is valid while `f` lives.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(StoreError::Io { op: "sync", path: path.to_path_buf(), source: io::Error::last_os_error() });
    }
    Ok(())
}
