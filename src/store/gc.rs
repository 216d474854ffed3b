//! Garbage collection: delete objects no root keeps, orphan object directories and stale
//! `tmp/` entries.
//!
//! gc takes the store lock exclusively and fails fast ([`StoreError::Busy`]) while any build
//! (or scratch directory, or registration) holds it shared: we prefer a clear "retry later"
//! to a gc that silently waits behind an hours-long build. Under the exclusive lock nothing
//! else is using `tmp/`, so every entry there is stale.
//!
//! Deleting an object: mark it absent in the database (committed), move its directory into
//! `tmp/` (atomic), then delete it. A crash in between leaves at worst an orphan directory,
//! which is never "present" and is re-verified before any reuse.

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;

use crate::hash::Digest;

use super::layout::{self, remove_tree, tree_size};
use super::{db, Store, StoreError};

/// What gc removed (or, with `dry_run`, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub dry_run: bool,
    pub removed_objects: Vec<RemovedObject>,
    /// Directories in `objects/` that were not registered (crash leftovers), not rooted.
    pub removed_orphans: Vec<PathBuf>,
    /// Entries of `tmp/` (scratch dirs of dead or finished processes).
    pub removed_tmp: Vec<PathBuf>,
    /// Objects kept because a root names them.
    pub kept_objects: usize,
    /// Bytes of regular files in everything removed.
    pub freed_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedObject {
    pub out: Digest,
    pub bytes: u64,
}

impl Store {
    /// Delete every object no root keeps, orphan object directories and stale tmp entries
    /// (with `dry_run`, only list them). Fails with [`StoreError::Busy`] while builds run.
    pub fn gc(&self, dry_run: bool) -> Result<GcReport, StoreError> {
        let _lock = self.exclusive_store_lock("garbage-collect")?;
        let rooted: HashSet<String> = self.db.read("read roots", db::rooted_hashes)?.into_iter().collect();
        let present = self.db.read("list objects", db::present_objects)?;
        let mut report = GcReport { dry_run, ..GcReport::default() };

        let mut registered = HashSet::new();
        for (hex, size) in present {
            let out = self.db.digest(&hex, "objects.out_hash")?;
            registered.insert(hex.clone());
            if rooted.contains(&hex) {
                report.kept_objects += 1;
                continue;
            }
            if !dry_run {
                self.db.write("mark object absent", |tx| db::mark_absent(tx, &out))?;
                self.evict(&self.object_path(&out))?;
            }
            let bytes = u64::try_from(size).unwrap_or(0);
            report.freed_bytes += bytes;
            report.removed_objects.push(RemovedObject { out, bytes });
        }

        for (name, path) in self.object_dir_entries()? {
            if registered.contains(&name) || rooted.contains(&name) {
                continue;
            }
            report.freed_bytes += tree_size(&path);
            if !dry_run {
                self.evict(&path)?;
            }
            report.removed_orphans.push(path);
        }

        for path in self.tmp_entries()? {
            report.freed_bytes += tree_size(&path);
            if !dry_run {
                remove_tree(&path)?;
            }
            report.removed_tmp.push(path);
        }
        Ok(report)
    }

    /// (file name, path) of every entry in `objects/`, sorted by name.
    pub(crate) fn object_dir_entries(&self) -> Result<Vec<(String, PathBuf)>, StoreError> {
        let dir = self.dir.join(layout::OBJECTS);
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(StoreError::io("read directory", &dir))? {
            let entry = entry.map_err(StoreError::io("read directory", &dir))?;
            out.push((entry.file_name().to_string_lossy().into_owned(), entry.path()));
        }
        out.sort();
        Ok(out)
    }

    fn tmp_entries(&self) -> Result<Vec<PathBuf>, StoreError> {
        let dir = self.tmp_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(StoreError::io("read directory", &dir))? {
            out.push(entry.map_err(StoreError::io("read directory", &dir))?.path());
        }
        out.sort();
        Ok(out)
    }
}
