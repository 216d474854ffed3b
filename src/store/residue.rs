//! What a killed forge leaves behind, and how the next one heals it (docs/reliability.md).
//!
//! Every process that creates scratch directories or records a run first takes an
//! exclusive lock on `locks/owner-TOKEN.lock` and keeps it until it exits; TOKEN (pid and
//! start time, unique per process) is in the name of each of its scratch directories
//! (`tmp/LABEL-TOKEN-N`) and in its runs' rows. The kernel drops the lock when the process
//! dies, however it dies. So on open, a store can tell exactly which residue is dead: a
//! scratch directory or a `running` run whose owner lock can be taken. Dead scratch
//! directories are removed, dead runs marked `interrupted` (their unfinished nodes too).
//!
//! Unlike the other lock files, an owner lock file is deleted once its residue is healed:
//! no live process ever opens it again (the token is never reused), so a second healer
//! that raced for it can only conclude the same thing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use rusqlite::params;

use super::layout::{self, remove_tree};
use super::lock::{FileLock, Mode};
use super::{Store, StoreError};

/// This process's token: `PIDxNANOS` (hex nanoseconds of the first use).
pub(crate) fn process_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        format!("{}x{nanos:x}", std::process::id())
    })
}

fn is_token(s: &str) -> bool {
    s.split_once('x')
        .is_some_and(|(pid, nanos)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && !nanos.is_empty() && nanos.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The token in a scratch directory's name `LABEL-TOKEN-N`, if it has one.
pub(crate) fn token_of_scratch(name: &str) -> Option<&str> {
    let mut parts = name.rsplitn(3, '-');
    let (n, token, _label) = (parts.next()?, parts.next()?, parts.next()?);
    (n.bytes().all(|b| b.is_ascii_digit()) && is_token(token)).then_some(token)
}

/// What [`Store::heal`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Healed {
    pub scratch_dirs: Vec<PathBuf>,
    pub interrupted_runs: Vec<i64>,
}

impl Store {
    fn owner_lock_path(&self, token: &str) -> PathBuf {
        self.dir.join(layout::LOCKS).join(format!("owner-{token}.lock"))
    }

    /// Take this process's owner lock in this store, once per process and store; held until
    /// the process exits.
    pub(crate) fn claim_owner(&self) -> Result<(), StoreError> {
        static HELD: OnceLock<Mutex<HashMap<PathBuf, FileLock>>> = OnceLock::new();
        let mut held = HELD.get_or_init(Default::default).lock().expect("owner locks");
        let path = self.owner_lock_path(process_token());
        if let std::collections::hash_map::Entry::Vacant(slot) = held.entry(path) {
            let path = slot.key().clone();
            let lock = FileLock::try_acquire(&path, Mode::Exclusive)?
                .ok_or_else(|| StoreError::Io { op: "lock", path, source: std::io::Error::other("another process holds this process's owner lock") })?;
            slot.insert(lock);
        }
        Ok(())
    }

    /// The owner lock of a dead process, held; `None` while `token`'s process lives.
    fn lock_if_dead(&self, token: &str) -> Result<Option<FileLock>, StoreError> {
        if token == process_token() {
            return Ok(None);
        }
        FileLock::try_acquire(&self.owner_lock_path(token), Mode::Exclusive)
    }

    /// Remove the scratch directories of dead processes and mark their runs `interrupted`.
    /// Skipped (nothing done) while gc holds the store exclusively: gc removes all of
    /// `tmp/` itself.
    pub fn heal(&self) -> Result<Healed, StoreError> {
        let mut healed = Healed::default();
        let Some(_store_lock) = FileLock::try_acquire(&self.lock_path("store.lock"), Mode::Shared)? else {
            return Ok(healed);
        };
        let mut dead: HashMap<String, FileLock> = HashMap::new();
        let mut is_dead = |store: &Store, token: &str| -> Result<bool, StoreError> {
            if dead.contains_key(token) {
                return Ok(true);
            }
            Ok(match store.lock_if_dead(token)? {
                Some(lock) => {
                    dead.insert(token.to_string(), lock);
                    true
                }
                None => false,
            })
        };
        let tmp = self.tmp_dir();
        for entry in std::fs::read_dir(&tmp).map_err(StoreError::io("read directory", &tmp))? {
            let entry = entry.map_err(StoreError::io("read directory", &tmp))?;
            let name = entry.file_name();
            let Some(token) = name.to_str().and_then(token_of_scratch) else { continue };
            if is_dead(self, token)? {
                remove_tree(&entry.path())?;
                healed.scratch_dirs.push(entry.path());
            }
        }
        let running: Vec<(i64, Option<String>, i64)> = self.db.read("find running runs", |c| {
            let mut stmt = c.prepare("SELECT id, owner, pid FROM runs WHERE status = 'running' AND host = ?1")?;
            let rows = stmt.query_map(params![self.host], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })?;
        for (id, owner, pid) in running {
            let gone = match owner.as_deref().filter(|t| is_token(t)) {
                Some(token) => is_dead(self, token)?,
                // Runs recorded before owners existed: the pid is all there is.
                None => !Path::new(&format!("/proc/{pid}")).exists(),
            };
            if gone {
                healed.interrupted_runs.push(id);
            }
        }
        if !healed.interrupted_runs.is_empty() {
            let now = super::runs::now_ms();
            self.db.write("mark interrupted runs", |tx| {
                for id in &healed.interrupted_runs {
                    tx.execute("UPDATE runs SET status = 'interrupted', finished_ms = COALESCE(finished_ms, ?2) WHERE id = ?1", params![id, now])?;
                    tx.execute(
                        "UPDATE run_nodes SET result = 'interrupted', finished_ms = COALESCE(finished_ms, ?2) WHERE run_id = ?1 AND result IN ('queued', 'running')",
                        params![id, now],
                    )?;
                }
                Ok(())
            })?;
        }
        for (_, lock) in dead {
            // Still holding it: see the module documentation.
            let _ = std::fs::remove_file(lock.path());
        }
        Ok(healed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_carry_the_owner_token() {
        assert_eq!(token_of_scratch("gcc-pass1-123x17f3a-4"), Some("123x17f3a"));
        assert_eq!(token_of_scratch("old-123-4"), None);
        assert_eq!(token_of_scratch("x-4"), None);
        assert!(is_token(process_token()));
    }
}
