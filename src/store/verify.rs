//! Integrity check and repair: re-hash every present object and every source, find missing
//! objects and orphan directories.
//!
//! Without repair, verify only reads and holds the store lock shared (builds may run). With
//! repair it needs the lock exclusively (fails fast like gc): corrupt objects are moved out and
//! deleted and, like missing ones, marked absent, so the next build rebuilds them; orphan
//! directories and corrupt sources are deleted (sources are downloaded again on demand).

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;

use crate::hash::{Checksum, Digest};
use crate::tree;

use super::layout::{self, remove_tree};
use super::lock::FileLock;
use super::register::checksum_like;
use super::{db, Store, StoreError};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub repaired: bool,
    pub checked_objects: usize,
    pub checked_sources: usize,
    pub corrupt: Vec<CorruptObject>,
    /// Registered as present, but the directory is gone.
    pub missing: Vec<Digest>,
    /// Directories in `objects/` with no present registration.
    pub orphans: Vec<PathBuf>,
    pub corrupt_sources: Vec<CorruptSource>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty() && self.orphans.is_empty() && self.corrupt_sources.is_empty()
    }
}

/// An object whose content no longer hashes to its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptObject {
    pub expected: Digest,
    /// `None` when the tree could not be hashed at all (see `problem`).
    pub actual: Option<Digest>,
    pub problem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptSource {
    pub path: PathBuf,
    /// `None` when the file name is not `<algo>-<hex>` (nothing forge would have written).
    pub expected: Option<Checksum>,
    /// `None` when the file could not be read or its name is not `<algo>-<hex>`.
    pub actual: Option<Checksum>,
}

impl Store {
    /// Re-hash every present object and source; report corrupt, missing and orphan entries.
    /// With `repair`, also fix them (see the module docs).
    pub fn verify(&self, repair: bool) -> Result<VerifyReport, StoreError> {
        let _lock: FileLock =
            if repair { self.exclusive_store_lock("repair the store")? } else { self.shared_store_lock()? };
        let mut report = VerifyReport { repaired: repair, ..VerifyReport::default() };
        let present = self.db.read("list objects", db::present_objects)?;
        let mut registered = HashSet::new();
        for (hex, _) in present {
            let out = self.db.digest(&hex, "objects.out_hash")?;
            registered.insert(hex);
            report.checked_objects += 1;
            self.verify_object(&out, repair, &mut report)?;
        }
        self.find_orphans(&registered, repair, &mut report)?;
        self.verify_sources(repair, &mut report)?;
        Ok(report)
    }

    fn verify_object(&self, out: &Digest, repair: bool, report: &mut VerifyReport) -> Result<(), StoreError> {
        let path = self.object_path(out);
        if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            report.missing.push(*out);
            if repair {
                self.db.write("mark object absent", |tx| db::mark_absent(tx, out))?;
            }
            return Ok(());
        }
        let corrupt = match tree::hash_path(&path) {
            Ok(s) if s.digest == *out => return Ok(()),
            Ok(s) => CorruptObject { expected: *out, actual: Some(s.digest), problem: None },
            Err(e) => CorruptObject { expected: *out, actual: None, problem: Some(e.to_string()) },
        };
        report.corrupt.push(corrupt);
        if repair {
            self.db.write("mark object absent", |tx| db::mark_absent(tx, out))?;
            self.evict(&path)?;
        }
        Ok(())
    }

    fn find_orphans(&self, registered: &HashSet<String>, repair: bool, report: &mut VerifyReport) -> Result<(), StoreError> {
        let candidates: Vec<_> =
            self.object_dir_entries()?.into_iter().filter(|(name, _)| !registered.contains(name)).collect();
        for (name, path) in candidates {
            // Without the exclusive lock a registration may have committed since we listed the
            // objects: ask again before calling it an orphan.
            let now_present = match name.parse::<Digest>() {
                Ok(d) => self.db.read("look up object", |c| db::object_present(c, &d))?,
                Err(_) => false,
            };
            if now_present {
                continue;
            }
            if repair {
                self.evict(&path)?;
            }
            report.orphans.push(path);
        }
        Ok(())
    }

    fn verify_sources(&self, repair: bool, report: &mut VerifyReport) -> Result<(), StoreError> {
        let dir = self.dir.join(layout::SOURCES);
        let mut entries = Vec::new();
        for entry in fs::read_dir(&dir).map_err(StoreError::io("read directory", &dir))? {
            entries.push(entry.map_err(StoreError::io("read directory", &dir))?);
        }
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            report.checked_sources += 1;
            let Some(expected) = parse_source_name(&name) else {
                // Not ours (e.g. a leftover of an interrupted copy): unverifiable, report it.
                report.corrupt_sources.push(CorruptSource { path: path.clone(), expected: None, actual: None });
                if repair {
                    remove_tree(&path)?;
                }
                continue;
            };
            let actual = checksum_like(&path, &expected).ok().map(|(c, _)| c);
            if actual.as_ref() != Some(&expected) {
                report.corrupt_sources.push(CorruptSource { path: path.clone(), expected: Some(expected), actual });
                if repair {
                    remove_tree(&path)?;
                }
            }
        }
        Ok(())
    }
}

/// `sha256-<hex>` -> the checksum it names.
fn parse_source_name(name: &str) -> Option<Checksum> {
    let (algo, hex) = name.split_once('-')?;
    if !matches!(algo, "sha256" | "md5" | "blake3") {
        return None;
    }
    Checksum::parse(algo, hex).ok()
}
