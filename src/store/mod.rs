//! The store: content-addressed objects, sources, derivations, logs, SQLite metadata.
//! Owner of the store layout (`forge-store-v1`) and of `store-schema.sql`.
//!
//! Files (docs/store-format.md describes the formats for users):
//! - `layout.rs`: directory layout, `VERSION`, the location rule, scratch dirs;
//! - `db.rs`: SQLite connection, migrations, queries;
//! - `lock.rs`: flock-based inter-process locks;
//! - `register.rs`: atomic registration of outputs and sources;
//! - `gc.rs`, `verify.rs`: garbage collection and integrity checking/repair.
//!
//! Invariants: an object directory `objects/<out>` is *present* only when the database says so
//! (`objects.present = 1`) and the directory exists; a directory without that row is an orphan
//! (a crash between rename and commit, or an interrupted gc) and is re-verified before reuse.
//! Registered objects are read-only. Realisation rows are history and are never deleted.

mod audit;
mod db;
mod error;
mod gc;
mod layout;
mod lock;
mod register;
mod residue;
mod runs;
mod verify;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::OptionalExtension;

use crate::hash::{Checksum, Digest};

pub use audit::{Attestation, Dependent, Evidence, Source};
pub use error::StoreError;
pub use runs::{now_ms, Run, RunId, RunNode};
pub use gc::{GcReport, RemovedObject};
pub use layout::{default_store_dir, ScratchDir, STORE_FORMAT};
pub use lock::{DrvLock, StoreLock};
pub use verify::{CorruptObject, CorruptSource, VerifyReport};

use db::{Db, RealisationKey};
use lock::{FileLock, Mode};

/// How an object came to satisfy a derivation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Built here in the sandbox.
    Built,
    /// Imported from outside (bootstrap seeds).
    Imported,
    /// Downloaded from a binary cache and verified.
    Substituted,
    /// Satisfied through its resolved key: an input was rebuilt to the same content (early cutoff).
    Cutoff,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Built => "built",
            Origin::Imported => "imported",
            Origin::Substituted => "substituted",
            Origin::Cutoff => "cutoff",
        }
    }

    pub fn parse(s: &str) -> Option<Origin> {
        [Origin::Built, Origin::Imported, Origin::Substituted, Origin::Cutoff]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// A recorded fact: this derivation (and this resolved key) produced this output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Realisation {
    pub drv_hash: Digest,
    pub resolved_key: Digest,
    pub out_hash: Digest,
    pub name: String,
    pub origin: Origin,
    /// Unix seconds.
    pub created_at: i64,
    pub duration_ms: u64,
}

/// What [`Store::register_output`] records next to the new object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub drv_hash: Digest,
    pub resolved_key: Digest,
    pub name: String,
    pub origin: Origin,
    pub duration_ms: u64,
}

/// A build attempt in progress; the executor writes its log to `log_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRecord {
    pub id: i64,
    pub drv_hash: Digest,
    pub name: String,
    pub log_path: PathBuf,
    /// Unix seconds.
    pub started_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildOutcome {
    Succeeded { out: Digest },
    Failed { reason: String },
}

/// A canonical derivation to store, by drv hash.
pub struct StoredDerivation<'a> {
    pub drv_hash: Digest,
    pub name: &'a str,
    pub version: &'a str,
    pub canonical: Vec<u8>,
}

/// An open store. `Send + Sync`: share one between threads (the connection is behind a mutex).
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    db: Db,
    /// Recorded in realisations, so a shared history says which machine built what.
    host: String,
}

impl Store {
    /// Open the store in `dir`, creating the layout and database if `dir` is missing or empty,
    /// and migrating an older database. A store with another `VERSION` is refused.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        layout::init_or_check(dir)?;
        let db = Db::open(&dir.join(layout::DB_FILE))?;
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".to_string());
        let store = Store { dir: dir.to_path_buf(), db, host };
        // What killed processes left: removed or marked before anyone looks (docs/reliability.md).
        store.heal()?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn object_path(&self, out: &Digest) -> PathBuf {
        self.dir.join(layout::OBJECTS).join(out.to_hex())
    }

    /// True when `out` is registered as present and its directory exists.
    pub fn has_object(&self, out: &Digest) -> Result<bool, StoreError> {
        let registered = self.db.read("look up object", |c| db::object_present(c, out))?;
        Ok(registered && self.object_dir_exists(out))
    }

    /// Present objects whose out hash starts with `prefix` (lowercase hex), at most `limit`.
    pub fn objects_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<Digest>, StoreError> {
        let hexes: Vec<String> = self.db.read("look up objects by prefix", |c| {
            let mut stmt = c.prepare_cached(
                "SELECT out_hash FROM objects WHERE present = 1 AND substr(out_hash, 1, length(?1)) = ?1 ORDER BY out_hash LIMIT ?2",
            )?;
            let rows = stmt.query_map(rusqlite::params![prefix, limit as i64], |r| r.get(0))?;
            rows.collect()
        })?;
        hexes.iter().map(|h| self.db.digest(h, "out_hash")).collect()
    }

    fn object_dir_exists(&self, out: &Digest) -> bool {
        fs::symlink_metadata(self.object_path(out)).is_ok_and(|m| m.is_dir())
    }

    // ---- derivations ---------------------------------------------------------------------

    /// Store a canonical derivation. Storing the same one again is a no-op; the same hash with
    /// different bytes is [`StoreError::DerivationConflict`].
    pub fn put_derivation(&self, drv_hash: &Digest, name: &str, version: &str, canonical: &[u8]) -> Result<(), StoreError> {
        let existing = self.db.write("store derivation", |tx| {
            let existing: Option<Vec<u8>> = tx
                .query_row("SELECT canonical FROM derivations WHERE drv_hash = ?1", [drv_hash.to_hex()], |r| r.get(0))
                .optional()?;
            if existing.is_none() {
                tx.execute(
                    "INSERT INTO derivations (drv_hash, name, version, canonical, added_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    rusqlite::params![drv_hash.to_hex(), name, version, canonical, now_secs()],
                )?;
            }
            Ok(existing)
        })?;
        match existing {
            Some(bytes) if bytes != canonical => {
                Err(StoreError::DerivationConflict { drv_hash: *drv_hash, name: name.to_string() })
            }
            _ => Ok(()),
        }
    }

    /// Store many derivations in one transaction, skipping those already stored (a run stores
    /// its whole plan, so that `forge why` can compare against any of them later). Unlike
    /// [`Store::put_derivation`] it does not re-read stored bytes: a drv hash is the BLAKE3 of
    /// the canonical bytes, and the build of a derivation checks them again.
    pub fn put_derivations(&self, drvs: &[StoredDerivation]) -> Result<(), StoreError> {
        self.db.write("store derivations", |tx| {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO derivations (drv_hash, name, version, canonical, added_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let now = now_secs();
            for d in drvs {
                insert.execute(rusqlite::params![d.drv_hash.to_hex(), d.name, d.version, d.canonical, now])?;
            }
            Ok(())
        })
    }

    pub fn derivation(&self, drv_hash: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.read("read derivation", |c| {
            c.query_row("SELECT canonical FROM derivations WHERE drv_hash = ?1", [drv_hash.to_hex()], |r| r.get(0))
                .optional()
        })
    }

    // ---- realisations --------------------------------------------------------------------

    /// Latest realisation of `drv_hash` whose object is present.
    pub fn realisation_by_drv(&self, drv_hash: &Digest) -> Result<Option<Realisation>, StoreError> {
        self.latest_realisation(RealisationKey::Drv, drv_hash)
    }

    /// Latest realisation recorded under resolved key `key` whose object is present.
    pub fn realisation_by_resolved(&self, key: &Digest) -> Result<Option<Realisation>, StoreError> {
        self.latest_realisation(RealisationKey::Resolved, key)
    }

    /// The newest realisation of any derivation of package `name`, whether or not its
    /// object is still present (for explaining why something must be built).
    pub fn latest_realisation_by_name(&self, name: &str) -> Result<Option<Realisation>, StoreError> {
        let raw = self.db.read("look up realisation by name", |c| db::latest_realisation_by_name(c, name))?;
        raw.map(|r| self.parse_realisation(r)).transpose()
    }

    /// Realisations of package `name`, present or not, newest first (at most 1,000).
    pub fn realisations_by_name(&self, name: &str) -> Result<Vec<Realisation>, StoreError> {
        let raw = self.db.read("look up realisations by name", |c| db::realisations_by_name(c, name, 1000))?;
        raw.into_iter().map(|r| self.parse_realisation(r)).collect()
    }

    fn latest_realisation(&self, column: RealisationKey, key: &Digest) -> Result<Option<Realisation>, StoreError> {
        let rows = self.db.read("look up realisation", |c| db::realisations_with_present_object(c, column, key))?;
        for raw in rows {
            let r = self.parse_realisation(raw)?;
            // The row says present; a directory deleted behind our back does not count.
            if self.object_dir_exists(&r.out_hash) {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    fn parse_realisation(&self, raw: db::RawRealisation) -> Result<Realisation, StoreError> {
        Ok(Realisation {
            drv_hash: self.db.digest(&raw.drv_hash, "drv_hash")?,
            resolved_key: self.db.digest(&raw.resolved_key, "resolved_key")?,
            out_hash: self.db.digest(&raw.out_hash, "out_hash")?,
            origin: Origin::parse(&raw.origin)
                .ok_or_else(|| self.db.corrupt(format!("unknown realisation origin {:?}", raw.origin)))?,
            name: raw.name,
            created_at: raw.created_at,
            duration_ms: u64::try_from(raw.duration_ms).unwrap_or(0),
        })
    }

    /// Record drv -> out for a node satisfied through its resolved key (early cutoff) or any
    /// other way that adds no new object. The object must be present. `created_at` is stored as
    /// given (use [`now_secs`]).
    pub fn add_realisation(&self, r: &Realisation) -> Result<(), StoreError> {
        let missing = || StoreError::ObjectNotPresent { out: r.out_hash, name: r.name.clone() };
        if !self.object_dir_exists(&r.out_hash) {
            return Err(missing());
        }
        let recorded = self.db.write("record realisation", |tx| {
            if !db::object_present(tx, &r.out_hash)? {
                return Ok(false);
            }
            db::insert_realisation(tx, r, &self.host)?;
            Ok(true)
        })?;
        if recorded { Ok(()) } else { Err(missing()) }
    }

    /// The newest realisation of every derivation whose object is present.
    pub fn all_realisations(&self) -> Result<Vec<Realisation>, StoreError> {
        let rows = self.db.read("list realisations", db::all_realisations_with_present_object)?;
        rows.into_iter().map(|r| self.parse_realisation(r)).collect()
    }

    /// Present objects that once realised package `name`, newest first (at most `limit`):
    /// where a substitution looks for big files it already has.
    pub fn present_outs_by_name(&self, name: &str, limit: usize) -> Result<Vec<Digest>, StoreError> {
        let hexes = self.db.read("look up objects by name", |c| db::present_outs_by_name(c, name, limit))?;
        hexes.iter().map(|h| self.db.digest(h, "out_hash")).collect()
    }

    // ---- substituters' negative answers --------------------------------------------------

    /// Did `cache` say it has no realisation of `drv` less than `ttl` seconds ago?
    pub fn recent_cache_miss(&self, cache: &str, drv: &Digest, ttl: u64) -> Result<bool, StoreError> {
        let checked: Option<i64> = self.db.read("read cache misses", |c| {
            c.query_row(
                "SELECT checked_at FROM cache_misses WHERE cache = ?1 AND drv_hash = ?2",
                rusqlite::params![cache, drv.to_hex()],
                |r| r.get(0),
            )
            .optional()
        })?;
        Ok(checked.is_some_and(|t| now_secs().saturating_sub(t) < ttl as i64))
    }

    /// Remember that `cache` has no realisation of these derivations (now).
    pub fn record_cache_misses(&self, cache: &str, drvs: &[Digest]) -> Result<(), StoreError> {
        let now = now_secs();
        self.db.write("record cache misses", |tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO cache_misses (cache, drv_hash, checked_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (cache, drv_hash) DO UPDATE SET checked_at = excluded.checked_at",
            )?;
            for drv in drvs {
                stmt.execute(rusqlite::params![cache, drv.to_hex(), now])?;
            }
            Ok(())
        })
    }

    // ---- scratch space and locks ---------------------------------------------------------

    /// A fresh scratch directory under `STORE/tmp` (same file system as `objects/`), removed
    /// on drop. It holds the store lock shared while it exists, so gc never removes it.
    pub fn scratch_dir(&self, label: &str) -> Result<ScratchDir, StoreError> {
        let lock = self.shared_store_lock()?;
        self.claim_owner()?;
        ScratchDir::create(&self.tmp_dir(), label, residue::process_token(), Some(lock))
    }

    /// Keep a failed build's `/build` and `$FORGE_OUT` as `failed/NAME-DRV12/{build,out}`
    /// (replacing an earlier failure of the same derivation), moved out of its scratch dir
    /// so that neither the scratch dir's removal nor gc touches them: they stay until the
    /// user deletes them (docs/cli.md, `--keep-failed`).
    pub fn keep_failed(&self, name: &str, drv: &crate::hash::Digest, build: &Path, out: &Path) -> Result<PathBuf, StoreError> {
        let failed = self.dir.join(layout::FAILED);
        std::fs::create_dir_all(&failed).map_err(StoreError::io("create", &failed))?;
        let kept = self.kept_failed_path(name, drv);
        layout::remove_tree(&kept)?;
        std::fs::create_dir(&kept).map_err(StoreError::io("create", &kept))?;
        for (from, to) in [(build, "build"), (out, "out")] {
            if from.symlink_metadata().is_ok() {
                let dest = kept.join(to);
                std::fs::rename(from, &dest).map_err(StoreError::io("move", &dest))?;
            }
        }
        Ok(kept)
    }

    /// Where [`Store::keep_failed`] keeps a failed build of `name` at derivation `drv`.
    pub fn kept_failed_path(&self, name: &str, drv: &crate::hash::Digest) -> PathBuf {
        self.dir.join(layout::FAILED).join(format!("{}-{}", layout::sanitize(name), drv.short()))
    }

    /// Every kept failed build of `name` (any derivation), newest first.
    pub fn kept_failed_of(&self, name: &str) -> Vec<PathBuf> {
        let prefix = format!("{}-", layout::sanitize(name));
        let Ok(entries) = std::fs::read_dir(self.dir.join(layout::FAILED)) else { return Vec::new() };
        let mut kept: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| e.file_name().to_str().and_then(|n| n.strip_prefix(&prefix)).is_some_and(|rest| rest.len() == 12 && rest.bytes().all(|b| b.is_ascii_hexdigit())))
            .map(|e| (e.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH), e.path()))
            .collect();
        kept.sort_by_key(|k| std::cmp::Reverse(k.0));
        kept.into_iter().map(|(_, p)| p).collect()
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.dir.join(layout::TMP)
    }

    pub(crate) fn lock_path(&self, name: &str) -> PathBuf {
        self.dir.join(layout::LOCKS).join(name)
    }

    fn drv_lock_path(&self, drv_hash: &Digest) -> PathBuf {
        self.lock_path(&format!("drv-{}.lock", drv_hash.to_hex()))
    }

    /// Block until this process holds the exclusive lock on `drv_hash`.
    pub fn lock_derivation(&self, drv_hash: &Digest) -> Result<DrvLock, StoreError> {
        let lock = FileLock::acquire(&self.drv_lock_path(drv_hash), Mode::Exclusive)?;
        Ok(DrvLock { drv_hash: *drv_hash, _lock: lock })
    }

    /// The exclusive lock on `drv_hash`, or `None` if another holder has it.
    pub fn try_lock_derivation(&self, drv_hash: &Digest) -> Result<Option<DrvLock>, StoreError> {
        Ok(FileLock::try_acquire(&self.drv_lock_path(drv_hash), Mode::Exclusive)?
            .map(|lock| DrvLock { drv_hash: *drv_hash, _lock: lock }))
    }

    /// The store lock, shared: every build process holds it for its whole run so that gc
    /// (which needs it exclusive) cannot delete objects it has looked up. Waits for a running gc.
    pub fn build_lock(&self) -> Result<StoreLock, StoreError> {
        Ok(StoreLock { lock: self.shared_store_lock()? })
    }

    fn shared_store_lock(&self) -> Result<FileLock, StoreError> {
        FileLock::acquire(&self.lock_path("store.lock"), Mode::Shared)
    }

    /// The store lock, exclusive, or [`StoreError::Busy`] at once if builds hold it.
    fn exclusive_store_lock(&self, op: &'static str) -> Result<FileLock, StoreError> {
        let path = self.lock_path("store.lock");
        FileLock::try_acquire(&path, Mode::Exclusive)?.ok_or(StoreError::Busy { op, lock: path })
    }

    // ---- sources -------------------------------------------------------------------------

    /// `sources/<algo>-<hex>`.
    pub fn source_path(&self, c: &Checksum) -> PathBuf {
        self.dir.join(layout::SOURCES).join(format!("{}-{}", c.algorithm(), c.hex()))
    }

    pub fn has_source(&self, c: &Checksum) -> bool {
        fs::symlink_metadata(self.source_path(c)).is_ok()
    }

    // ---- roots ---------------------------------------------------------------------------

    /// Make `outs` the complete set of objects root `name` keeps alive (empty removes the root).
    pub fn set_root(&self, name: &str, outs: &[Digest]) -> Result<(), StoreError> {
        self.db.write("set root", |tx| db::set_root(tx, name, outs, now_secs()))
    }

    /// The out hashes root `name` keeps, sorted.
    pub fn root(&self, name: &str) -> Result<Vec<Digest>, StoreError> {
        let hexes: Vec<String> = self.db.read("read root", |c| {
            let mut stmt = c.prepare("SELECT out_hash FROM roots WHERE name = ?1 ORDER BY out_hash")?;
            let rows = stmt.query_map([name], |r| r.get(0))?;
            rows.collect()
        })?;
        hexes.iter().map(|h| self.db.digest(h, "roots.out_hash")).collect()
    }

    // ---- builds and logs -----------------------------------------------------------------

    /// Record the start of a build and allocate its log path `logs/<id>-<name>.log` (the file
    /// is created empty, so `forge log` finds it as soon as the build starts).
    pub fn begin_build(&self, drv_hash: &Digest, name: &str) -> Result<BuildRecord, StoreError> {
        let started_at = now_secs();
        let (id, relative) = self.db.write("record build start", |tx| {
            tx.execute(
                "INSERT INTO builds (drv_hash, name, started_at, status, log_path) VALUES (?1, ?2, ?3, 'running', '')",
                rusqlite::params![drv_hash.to_hex(), name, started_at],
            )?;
            let id = tx.last_insert_rowid();
            let relative = format!("{}/{id}-{}.log", layout::LOGS, layout::sanitize(name));
            tx.execute("UPDATE builds SET log_path = ?1 WHERE id = ?2", rusqlite::params![relative, id])?;
            Ok((id, relative))
        })?;
        let log_path = self.dir.join(relative);
        fs::File::create(&log_path).map_err(StoreError::io("create log", &log_path))?;
        Ok(BuildRecord { id, drv_hash: *drv_hash, name: name.to_string(), log_path, started_at })
    }

    pub fn finish_build(&self, rec: &BuildRecord, outcome: &BuildOutcome) -> Result<(), StoreError> {
        let (status, out, reason) = match outcome {
            BuildOutcome::Succeeded { out } => ("succeeded", Some(out.to_hex()), None),
            BuildOutcome::Failed { reason } => ("failed", None, Some(reason.as_str())),
        };
        self.db.write("record build end", |tx| {
            tx.execute(
                "UPDATE builds SET finished_at = ?1, status = ?2, out_hash = ?3, reason = ?4 WHERE id = ?5",
                rusqlite::params![now_secs(), status, out, reason, rec.id],
            )
            .map(drop)
        })
    }

    /// The log of the newest build of package `name` whose log file still exists.
    pub fn latest_log(&self, name: &str) -> Result<Option<PathBuf>, StoreError> {
        let logs: Vec<String> = self.db.read("look up logs", |c| {
            let mut stmt = c.prepare("SELECT log_path FROM builds WHERE name = ?1 ORDER BY id DESC")?;
            let rows = stmt.query_map([name], |r| r.get(0))?;
            rows.collect()
        })?;
        Ok(logs.into_iter().map(|l| self.dir.join(l)).find(|p| p.is_file()))
    }
}

/// The current time in Unix seconds (0 if the clock is before 1970).
pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests;
